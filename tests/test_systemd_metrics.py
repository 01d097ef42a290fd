"""oj-metrics.socket in a real systemd: nothing runs until a scrape connects; the scrape
starts oj-metrics.service, which answers from the state dir and exits after its idle time,
while the socket listens on and starts it again at the next scrape."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import sandbox_oj

pytestmark = pytest.mark.systemd

RUNBOOK = """
    queue "merges" {
      type = "persisted"
      vars = ["n"]
    }
    """

# a scrape from inside the sandbox: status, Content-Type, then the body
SCRAPE = textwrap.dedent("""
    import sys, urllib.request
    req = urllib.request.Request(sys.argv[1], headers={"Accept": sys.argv[2]})
    with urllib.request.urlopen(req, timeout=20) as resp:
        print(resp.status)
        print(resp.headers["Content-Type"])
        sys.stdout.write(resp.read().decode())
    """)
DROPINS = ("/etc/systemd/system/oj-metrics.socket.d", "/etc/systemd/system/oj-metrics.service.d")


def free_port() -> int:
    # the sandbox shares the host's network: a port no one else holds now
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def write(sb: Sandbox, path: str, text: str) -> None:
    sb.run(["sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path}'], input=text)


@pytest.fixture
def metrics_socket(installed: Sandbox, sandbox_dir: Path):
    """oj-metrics.socket on a free port, its service reading a state dir of the test's own
    and idle after 2 s (both drop-ins, as an operator would write them)."""
    port = free_port()
    state = sandbox_dir / "state"
    write(installed, f"{DROPINS[0]}/test.conf", f"[Socket]\nListenStream=\n"
                                                f"ListenStream=127.0.0.1:{port}\n")
    write(installed, f"{DROPINS[1]}/test.conf", f"[Service]\nEnvironment=OJ_IDLE_TIMEOUT=2s\n"
                                                f"Environment=OJ_STATE_DIR={state}\n")
    installed.systemctl("daemon-reload")
    installed.systemctl("start", "oj-metrics.socket")
    yield installed, port, state
    installed.systemctl("stop", "oj-metrics.socket", "oj-metrics.service", check=False)
    installed.run(["rm", "-rf", *DROPINS])
    installed.systemctl("daemon-reload")


def scrape(sb: Sandbox, port: int, accept: str) -> tuple[str, str, str]:
    out = sb.run([sys.executable, "-c", SCRAPE, f"http://127.0.0.1:{port}/metrics", accept],
                 timeout=60).stdout
    status, kind, body = out.split("\n", 2)
    return status, kind, body


def pending(body: str) -> float:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    [value] = [s.value for fam in text_string_to_metric_families(body) for s in fam.samples
               if s.name == "oj_queue_items" and s.labels["status"] == "pending"]
    return value


def test_a_scrape_starts_the_service_which_answers_then_exits_when_idle(metrics_socket,
                                                                        sandbox_dir: Path):
    sb, port, state = metrics_socket
    project = sandbox_dir / "project"
    (project / ".oj" / "runbooks").mkdir(parents=True)
    (project / ".oj" / "runbooks" / "q.hcl").write_text(textwrap.dedent(RUNBOOK))
    sandbox_oj(sb, state, "queue", "push", "merges", json.dumps({"n": 1}), cwd=project)
    assert sb.unit_property("oj-metrics.socket", "ActiveState") == "active"
    assert sb.unit_property("oj-metrics.service", "ActiveState") == "inactive"

    status, kind, body = scrape(sb, port, "application/openmetrics-text; version=1.0.0")
    assert (status, kind) == ("200", "application/openmetrics-text; version=1.0.0; "
                                     "charset=utf-8")
    assert pending(body) == 1
    started = int(sb.unit_property("oj-metrics.service", "ExecMainStartTimestampMonotonic"))
    assert started > 0
    # no request for 2 s: the service exits cleanly, and the socket stays
    sb.wait_for(lambda: sb.unit_property("oj-metrics.service", "ActiveState") == "inactive",
                timeout=30, what="oj-metrics.service to exit when idle")
    assert sb.unit_property("oj-metrics.service", "Result") == "success"
    assert sb.unit_property("oj-metrics.socket", "ActiveState") == "active"

    # the next scrape starts it again, and sees what was pushed meanwhile
    sandbox_oj(sb, state, "queue", "push", "merges", json.dumps({"n": 2}), cwd=project)
    status, kind, body = scrape(sb, port, "text/plain")
    assert (status, kind) == ("200", "text/plain; version=0.0.4; charset=utf-8")
    assert "oj_queue_items{" in body and "# EOF" not in body
    again = int(sb.unit_property("oj-metrics.service", "ExecMainStartTimestampMonotonic"))
    assert again > started
    status, _, body = scrape(sb, port, "application/openmetrics-text")
    assert pending(body) == 2
