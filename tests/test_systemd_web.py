"""oj-web.socket in a real systemd: nothing runs until a browser connects; the request
starts oj-web.service, which serves the page of its state dir (and refuses an action
without the token), then exits after its idle time while the socket listens on."""

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
    queue "jobs" {
      type = "persisted"
      vars = ["n"]
    }
    """

# a request from inside the sandbox: status, then the body
FETCH = textwrap.dedent("""
    import sys, urllib.error, urllib.request
    req = urllib.request.Request(sys.argv[1], method=sys.argv[2],
                                 data=b"{}" if sys.argv[2] == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            print(resp.status)
            sys.stdout.write(resp.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code)
        sys.stdout.write(e.read().decode())
    """)
DROPINS = ("/etc/systemd/system/oj-web.socket.d", "/etc/systemd/system/oj-web.service.d")


def free_port() -> int:
    # the sandbox shares the host's network: a port no one else holds now
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def write(sb: Sandbox, path: str, text: str) -> None:
    sb.run(["sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path}'], input=text)


@pytest.fixture
def web_socket(installed: Sandbox, sandbox_dir: Path):
    """oj-web.socket on a free port, its service reading a state dir of the test's own and
    idle after 2 s (drop-ins, as an operator would write them)."""
    port = free_port()
    state = sandbox_dir / "state"
    write(installed, f"{DROPINS[0]}/test.conf",
          f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    write(installed, f"{DROPINS[1]}/test.conf",
          f"[Service]\nEnvironment=OJ_IDLE_TIMEOUT=2s\nEnvironment=OJ_STATE_DIR={state}\n")
    installed.systemctl("daemon-reload")
    installed.systemctl("start", "oj-web.socket")
    yield installed, port, state
    installed.systemctl("stop", "oj-web.socket", "oj-web.service", check=False)
    installed.run(["rm", "-rf", *DROPINS])
    installed.systemctl("daemon-reload")


def fetch(sb: Sandbox, port: int, path: str, method: str = "GET") -> tuple[int, str]:
    out = sb.run([sys.executable, "-c", FETCH, f"http://127.0.0.1:{port}{path}", method],
                 timeout=60).stdout
    status, body = out.split("\n", 1)
    return int(status), body


def test_a_request_starts_the_service_which_answers_then_exits_when_idle(web_socket,
                                                                        sandbox_dir: Path):
    sb, port, state = web_socket
    project = sandbox_dir / "project"
    (project / ".oj" / "runbooks").mkdir(parents=True)
    (project / ".oj" / "runbooks" / "q.hcl").write_text(textwrap.dedent(RUNBOOK))
    item = sandbox_oj(sb, state, "queue", "push", "jobs", json.dumps({"n": "<b>1</b>"}),
                      cwd=project).stdout.strip()
    assert sb.unit_property("oj-web.socket", "ActiveState") == "active"
    assert sb.unit_property("oj-web.service", "ActiveState") == "inactive"

    status, body = fetch(sb, port, "/")
    assert status == 200
    assert f'data-item="{item}"' in body and "&lt;b&gt;1&lt;/b&gt;" in body
    started = int(sb.unit_property("oj-web.service", "ExecMainStartTimestampMonotonic"))
    assert started > 0
    # an action through the unit: no web_token in its state dir's oj.conf, so refused
    status, body = fetch(sb, port, f"/api/items/{item}/retry", "POST")
    assert status == 403 and "web_token" in json.loads(body)["message"]

    # no connection for 2 s: the service exits cleanly, and the socket stays
    sb.wait_for(lambda: sb.unit_property("oj-web.service", "ActiveState") == "inactive",
                timeout=30, what="oj-web.service to exit when idle")
    assert sb.unit_property("oj-web.service", "Result") == "success"
    assert sb.unit_property("oj-web.socket", "ActiveState") == "active"

    # the next request starts it again, and it shows what was pushed meanwhile
    second = sandbox_oj(sb, state, "queue", "push", "jobs", json.dumps({"n": 2}),
                        cwd=project).stdout.strip()
    status, body = fetch(sb, port, "/")
    assert status == 200 and f'data-item="{second}"' in body
    assert int(sb.unit_property("oj-web.service", "ExecMainStartTimestampMonotonic")) > started
