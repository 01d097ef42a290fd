"""A worker unit whose state is in PostgreSQL: ordered after network-online.target (its
state drop-in says so, and ``oj systemd uninstall`` takes that drop-in away again); started
while the database is down, it is active and says it waits (no exit, no restart, no start
limit) and runs the pending item once the database is back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import require
from pgserver import RUN_AS, PrivatePostgres
from systemd_plugin import OJ, sandbox_oj

from ojd import unitcontrol

RUNBOOK = """
    queue "q" {
      vars = ["n"]
    }

    worker "storewait" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "200ms"
    }

    pipeline "p" {
      vars = ["item"]
      step "s" {
        run = "echo ${var.item.n} >> DIR/ran.txt"
      }
    }
    """
UNIT = "oj-worker@project:storewait.service"  # worker storewait of the project in ./project


class PausablePostgres(PrivatePostgres):
    """A private server that can be shut down and started again on the same data."""

    def _serve(self) -> None:
        log = open(os.path.join(self.dir, "server.log"), "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [f"{self.bin}/postgres", "-D", self.data, "-c", "listen_addresses=", "-k",
             self.dir, "-c", "max_connections=200", "-c", "shared_buffers=32MB", "-c",
             "fsync=off", "-c", "full_page_writes=off"], user=RUN_AS, cwd=self.dir,
            stdout=log, stderr=log)
        log.close()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # a fast shutdown: sessions are ended
        self.proc.wait(timeout=60)

    def resume(self) -> None:
        self._serve()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(self.dir, ".s.PGSQL.5432")):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_text()
            time.sleep(0.05)


@pytest.fixture
def database():
    from pgserver import have_driver, server_bin

    # justified: skipped only outside CI (require fails in CI, where run.sh installs these)
    require(server_bin() is not None, "PostgreSQL is not installed (apt install postgresql)")
    require(have_driver(), "libpq is not installed (apt install libpq5)")
    # seen at the same path by the machine and the sandbox (whose /tmp is private)
    base = Path(tempfile.mkdtemp(prefix="oj-pg-wait-", dir="/var/lib"))
    base.chmod(0o755)
    server = PausablePostgres(base=str(base)).start()
    try:
        yield base, server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_worker_unit_started_while_its_database_is_down_waits_and_runs_the_item_after(
        make_sandbox, database):
    base, server = database
    url = server.new_database()
    state = base / "state"
    state.mkdir()
    (state / "oj.conf").write_text(f"state_url = {url}\n")
    project = base / "project"
    (project / ".oj" / "runbooks").mkdir(parents=True)
    (project / ".oj" / "runbooks" / "w.hcl").write_text(
        textwrap.dedent(RUNBOOK).replace("DIR", str(project)))
    sb = make_sandbox()
    sb.boot()
    assert "oj-worker@.service" in sb.run([OJ, "systemd", "install"]).stdout

    def oj(*args: str, check: bool = True):
        return sandbox_oj(sb, state, *args, cwd=project, check=check)

    def prop(name: str) -> str:
        return sb.unit_property(UNIT, name)

    # the unit of a remote state waits for the network
    oj("worker", "start", "storewait")
    dropin = Path(f"/etc/systemd/system/{UNIT}.d/{unitcontrol.STATE_DROPIN}")
    text = sb.run(["cat", str(dropin)]).stdout
    assert text == unitcontrol.state_text("worker", str(state), remote=True), text
    assert "network-online.target" in prop("After").split()
    assert "network-online.target" in prop("Wants").split()

    # started while the database is down: active, saying why; no exit, no restart
    oj("worker", "stop", "storewait")
    item = oj("queue", "push", "q", "--var", "n=1").stdout.strip()
    server.pause()
    started = sb.run(["systemctl", "start", UNIT], check=False)
    sb.wait_for(lambda: prop("ActiveState") == "failed" or "waiting for the state database"
                in prop("StatusText"), 30, "the unit to say it waits for its database")
    assert started.returncode == 0, started.stderr
    assert prop("ActiveState") == "active", sb.journal(UNIT)
    assert prop("StatusText").startswith("storewait: waiting for the state database: ")
    assert prop("StatusText").endswith("; retrying")
    sb.wait_for(lambda: "waiting for the state database" in sb.journal(UNIT), 30,
                "the journal to say why")
    pid = prop("MainPID")

    server.resume()
    sb.wait_for(lambda: json.loads(oj("queue", "show", item, "-o", "json").stdout)["status"]
                == "completed", 30, "the item to complete once the database is back")
    assert (project / "ran.txt").read_text() == "1\n"
    assert prop("NRestarts") == "0" and prop("MainPID") == pid  # the same process all along
    assert prop("StatusText").startswith("storewait: ")
    assert "waiting" not in prop("StatusText")
    journal = sb.journal(UNIT)
    assert journal.count("waiting for the state database") == 1, journal
    assert "the state database answers again; starting" in journal

    # uninstall takes the drop-in with it
    oj("worker", "stop", "storewait")
    removed = oj("systemd", "uninstall").stdout
    assert str(dropin) in removed, removed
    assert sb.run(["test", "-e", str(dropin)], check=False).returncode != 0


class RecordingSystemd:
    def __init__(self, user: bool = False) -> None:
        self.user = user
        self.reloads = 0

    def daemon_reload(self) -> None:
        self.reloads += 1


@pytest.mark.parametrize("kind", ["worker", "cron"])
def test_the_state_dropin_orders_a_unit_after_the_network_only_for_a_remote_state(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    units = tmp_path / "units"
    monkeypatch.setattr(unitcontrol, "unit_dir", lambda systemd: str(units))
    monkeypatch.delenv("OJ_STATE_URL", raising=False)
    state = tmp_path / "state"
    state.mkdir()
    unit = f"oj-{kind}@tidy.service"
    dropin = units / f"{unit}.d" / unitcontrol.STATE_DROPIN

    def bind(user: bool = False) -> str | None:
        unitcontrol.bind_state_dir(RecordingSystemd(user), kind, "tidy", unit, str(state))
        return dropin.read_text() if dropin.exists() else None

    # a WAL state: the state dir only, and nothing at all for the default one
    monkeypatch.setenv("OJ_STATE_DIR", str(state))
    assert bind() == unitcontrol.state_text(kind, str(state))
    assert "network" not in bind()
    monkeypatch.delenv("OJ_STATE_DIR")
    assert bind() is None
    # a database: after the network, in the system manager (a user manager has no
    # network-online.target)
    (state / "oj.conf").write_text("state_url = postgresql://oj@db.example/oj\n")
    assert bind() == ("# written by oj " + kind + " start: its state is in a database across "
                      "the network\n[Unit]\nWants=network-online.target\n"
                      "After=network-online.target\n")
    assert bind(user=True) is None
    monkeypatch.setenv("OJ_STATE_DIR", str(state))
    text = bind()
    assert text is not None and text.startswith(unitcontrol.state_text(kind, str(state)))
    assert text.endswith("After=network-online.target\n")
    assert bind(user=True) == unitcontrol.state_text(kind, str(state))
    monkeypatch.setenv("OJ_STATE_URL", "postgresql://oj@db.example/oj")  # the same as oj.conf
    assert bind() == text
