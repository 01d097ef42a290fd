"""Two hosts, one queue: two private systemd sandboxes (each its own host name, manager and
``oj-worker@project:merge.service``) share one PostgreSQL server on the machine. A push on one runs
on the other; items drained by both run once each; a host frozen past its lease (worker and
job stopped) loses its item to the other and, woken, has its late writes refused; a host
powered off mid-step loses its item to the other after the lease, and the item completes
once."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import require
from sandbox import Sandbox
from systemd_plugin import OJ, sandbox_oj

pytestmark = pytest.mark.systemd

RUNBOOK = """
    queue "q" {
      vars = ["n"]
    }

    worker "merge" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      concurrency = 4
      poll        = "200ms"
      lease       = "10s"
    }

    pipeline "p" {
      vars = ["item"]
      step "s" {
        run = <<-SHELL
          echo "${var.item.n} $(hostname) start" >> DIR/ran.txt
          case "${var.item.n}" in
            block|freeze) until [ -e "DIR/go-${var.item.n}" ]; do sleep 0.1; done ;;
          esac
          echo "${var.item.n} $(hostname) end" >> DIR/ran.txt
        SHELL
      }
    }
    """


class Host:
    def __init__(self, sb: Sandbox, name: str, base: Path, url: str) -> None:
        self.sb = sb
        self.name = name
        self.state = base / f"state-{name}"
        self.state.mkdir()
        (self.state / "oj.conf").write_text(f"state_url = {url}\n")
        self.project = base / "project"
        sb.run(["hostname", name])
        assert "oj-worker@.service" in sb.run([OJ, "systemd", "install"]).stdout

    def oj(self, *args: str, check: bool = True):
        return sandbox_oj(self.sb, self.state, *args, cwd=self.project, check=check)


@pytest.fixture
def two_hosts(make_sandbox):
    from pgserver import PrivatePostgres, have_driver, server_bin

    # justified: skipped only outside CI (require fails in CI, where run.sh installs these)
    require(server_bin() is not None, "PostgreSQL is not installed (apt install postgresql)")
    require(have_driver(), "libpq is not installed (apt install libpq5)")
    # seen at the same path by the machine and both sandboxes (their /tmp is private)
    base = Path(tempfile.mkdtemp(prefix="oj-pg-hosts-", dir="/var/lib"))
    sandboxes: list[Sandbox] = []
    server = None
    try:
        base.chmod(0o755)
        server = PrivatePostgres(base=str(base)).start()
        url = server.new_database()
        project = base / "project"
        (project / ".oj" / "runbooks").mkdir(parents=True)
        (project / ".oj" / "runbooks" / "w.hcl").write_text(
            textwrap.dedent(RUNBOOK).replace("DIR", str(project)))
        sandboxes += [make_sandbox(), make_sandbox()]
        for sb in sandboxes:
            sb.boot()
        hosts = [Host(sb, name, base, url) for sb, name in zip(
            sandboxes, ("oj-host-a", "oj-host-b"), strict=True)]
        yield hosts, server, url
    finally:
        # hosts first (their workers and steps use the server and write under base), then
        # the server, then base: a failed test leaves nothing of it on the machine
        try:
            for sb in sandboxes:
                sb.poweroff()
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(base)


def ran(project: Path) -> list[list[str]]:
    path = project / "ran.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def events(url: str, kind: str) -> list[dict]:
    from ojd.store.postgres import PgLog

    return [r.event for r in PgLog(url).records() if r.event.get("type") == kind]


def wait(pred, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_sandbox_hosts_share_one_queue_and_a_powered_off_host_loses_its_item_once(
        two_hosts):
    (a, b), _server, url = two_hosts
    project = a.project
    # a push on a wakes b's idle worker: a runs no worker yet
    b.oj("worker", "start", "merge")
    item = a.oj("queue", "push", "q", "--var", "n=first").stdout.strip()
    wait(lambda: ["first", "oj-host-b", "end"] in ran(project), "b to run a's push", 20)
    assert b.sb.unit_property("oj-worker@project:merge.service", "ActiveState") == "active"

    # both drain one queue: every item runs once
    a.oj("worker", "start", "merge")
    count = 2000
    a.oj("queue", "push", "q", "--var", "n=warm")
    script = textwrap.dedent(f"""
        from ojd import project, queues
        from ojd.store import Store
        store = Store(); store.load()
        q = project.load({str(project)!r}).queues["q"]
        for i in range({count}):
            queues.push(store, {str(project)!r}, q, {{"n": str(i)}})
        """)
    # minutes on a loaded machine, while both hosts drain: a deadline, not a pace
    a.sb.run([sys.executable, "-c", script], env={"OJ_STATE_DIR": str(a.state)},
             timeout=900)
    done = lambda: sum(1 for r in ran(project) if r[2] == "end" and r[0].isdigit())  # noqa: E731
    wait(lambda: done() >= count, f"{count} items to run", timeout=900)
    ends = [r for r in ran(project) if r[2] == "end" and r[0].isdigit()]
    assert sorted(int(r[0]) for r in ends) == list(range(count))  # 0 lost, 0 run twice
    by_host = {h: sum(1 for r in ends if r[1] == h) for h in ("oj-host-a", "oj-host-b")}
    assert all(by_host.values()), by_host  # both hosts took a share
    taken = [e["id"] for e in events(url, "queue:taken")]
    assert len(taken) == len(set(taken))
    rows = json.loads(a.oj("worker", "list", "-o", "json").stdout)
    assert {r["host"] for r in rows} == {"oj-host-a", "oj-host-b"}

    # a host frozen past its lease: the other finishes the item; the frozen one, woken,
    # can record nothing more for it (its late settle is refused, and said in its journal)
    frozen_item = a.oj("queue", "push", "q", "--var", "n=freeze").stdout.strip()
    wait(lambda: any(r[0] == "freeze" for r in ran(project)), "the freezing step to start")
    owner = next(r[1] for r in ran(project) if r[0] == "freeze")
    frozen, other = (a, b) if owner == "oj-host-a" else (b, a)
    job_id = next(e["job"] for e in events(url, "queue:taken") if e["id"] == frozen_item)
    scope = next(e["unit"] for e in events(url, "job:process") if e["id"] == job_id)
    assert scope and scope.startswith(f"oj-job-{job_id}")
    for unit in ("oj-worker@project:merge.service", scope):
        frozen.sb.systemctl("kill", "--signal=SIGSTOP", unit)
    (project / "go-freeze").touch()
    wait(lambda: ["freeze", other.name, "end"] in ran(project),
         "the other host to finish the frozen host's item", timeout=60)
    (project / "go-freeze").unlink()  # the frozen step, woken, would wait on
    for unit in (scope, "oj-worker@project:merge.service"):
        frozen.sb.systemctl("kill", "--signal=SIGCONT", unit)
    wait(lambda: "stopped: " in frozen.sb.journal(scope), "the late job process to give up")
    journal = frozen.sb.journal(scope)
    assert f"lease of item {frozen_item} lost" in journal, journal
    assert ["freeze", frozen.name, "end"] not in ran(project)
    assert [e["id"] for e in events(url, "queue:completed")].count(frozen_item) == 1
    assert [e["id"] for e in events(url, "job:finished")].count(job_id) == 1
    assert frozen.sb.unit_property("oj-worker@project:merge.service", "ActiveState") == "active"

    # a host powered off mid-step: the other finishes its item after the lease, once
    blocked = a.oj("queue", "push", "q", "--var", "n=block").stdout.strip()
    wait(lambda: any(r[0] == "block" for r in ran(project)), "the blocking step to start")
    owner = next(r[1] for r in ran(project) if r[0] == "block")
    dead, survivor = (a, b) if owner == "oj-host-a" else (b, a)
    dead.sb.kill()
    (project / "go-block").touch()
    wait(lambda: survivor.oj("queue", "show", blocked, "-o", "json").stdout and json.loads(
        survivor.oj("queue", "show", blocked, "-o", "json").stdout)["status"] == "completed",
        "the survivor to complete the blocked item", timeout=60)
    lines = [r for r in ran(project) if r[0] == "block"]
    assert lines[0] == ["block", dead.name, "start"]
    assert ["block", survivor.name, "end"] in lines
    assert ["block", dead.name, "end"] not in lines
    assert [e["id"] for e in events(url, "queue:completed")].count(blocked) == 1
    assert [e["id"] for e in events(url, "queue:lease_expired")] == [frozen_item, blocked]
    shown = json.loads(survivor.oj("queue", "show", blocked, "-o", "json").stdout)
    assert shown["attempts"] == 1
    assert item not in [e["id"] for e in events(url, "queue:lease_expired")]
