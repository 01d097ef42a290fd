"""A worker that starts while its store is away (the database down, the state disk full)
waits for it, active and saying why, instead of exiting into its unit's start limit (or
exit 78, which the unit never restarts); an error no wait mends still ends the start at
once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OJ, OJD, Project, require, wait_until

# ojd workers as processes, started here rather than through the fixtures
pytestmark = pytest.mark.end_to_end

RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "200ms"
    }

    pipeline "p" {
      vars = ["item"]
      step "s" {
        run = "echo ${var.item.n} >> '${invoke.dir}/ran.txt'"
      }
    }
    """


@pytest.fixture
def short() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths (the notify socket, PostgreSQL's
    through a symlink) must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="oj-wait-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Manager:
    """The manager's end of a worker's notify socket (``NOTIFY_SOCKET``): what it heard."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def heard(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.messages

    def count(self, line: str) -> int:
        return sum(m.splitlines().count(line) for m in self.heard())

    def close(self) -> None:
        self.sock.close()


def start_worker(p: Project, log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                env=p.env(**env), stdout=out, stderr=subprocess.STDOUT)


def waiting_ready(manager: Manager) -> bool:
    """READY=1 with a status saying the worker waits for its database."""
    return any("READY=1" in m.splitlines() and "STATUS=w: waiting for the state database: "
               in m for m in manager.heard())


def test_a_worker_started_while_its_database_is_away_waits_and_runs_the_item_once_back(
        postgres, tmp_path: Path, short: Path):
    url = postgres.new_database()
    link = short / "pg"  # the server's socket directory, there or not: the database up or down
    link.symlink_to(postgres.dir)
    p = Project(tmp_path / "project", tmp_path / "state",
                url=url.replace(f"host={postgres.dir}", f"host={link}"))
    p.write("w.hcl", RUNBOOK)
    item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
    link.unlink()
    manager = Manager(short / "notify")
    log = tmp_path / "worker.log"
    worker = start_worker(p, log, NOTIFY_SOCKET=manager.path, WATCHDOG_USEC="1000000")
    try:
        # active (READY=1) rather than a failed start, its status saying why
        wait_until(lambda: worker.poll() is not None or waiting_ready(manager),
                   "the worker to say it waits for its database")
        assert worker.poll() is None, log.read_text()
        # it keeps waiting, feeding the watchdog (every half WATCHDOG_USEC), retrying
        wait_until(lambda: worker.poll() is not None or manager.count("WATCHDOG=1") >= 5,
                   "watchdog pings while waiting")
        assert worker.poll() is None, log.read_text()
        assert not any("running" in m for m in manager.heard())  # not started meanwhile
        link.symlink_to(postgres.dir)  # the database is back
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete once the database is back", timeout=30)
        assert any("STATUS=w: 0/1 running" in m for m in manager.heard())
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        manager.close()
    text = log.read_text()
    assert worker.returncode == 0, text
    assert (p.root / "ran.txt").read_text() == "1\n"
    assert "Traceback" not in text
    # said once, however many retries; and when it is over
    waiting = [line for line in text.splitlines() if "waiting for the state database" in line]
    assert len(waiting) == 1, text
    assert "cannot be reached" in waiting[0] and waiting[0].endswith("; retrying"), text
    assert "the state database answers again; starting" in text


def test_a_worker_waiting_for_its_database_stops_at_once_when_told(tmp_path: Path,
                                                                     short: Path):
    from pgserver import have_driver

    # justified: skipped only outside CI (require fails in CI, where run.sh installs libpq)
    require(have_driver(), "libpq is not installed (apt install libpq5)")
    p = Project(tmp_path / "project", tmp_path / "state",
                url=f"postgresql:///oj?host={short}/nowhere&user=oj")
    p.write("w.hcl", RUNBOOK)
    manager = Manager(short / "notify")
    log = tmp_path / "worker.log"
    for signum, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        worker = start_worker(p, log, NOTIFY_SOCKET=manager.path)
        try:
            wait_until(lambda w=worker: w.poll() is not None or waiting_ready(manager),
                       "the worker to say it waits for its database")
            assert worker.poll() is None, log.read_text()
            worker.send_signal(signal.SIGUSR1)  # a wake retries; it does not kill
            worker.send_signal(signum)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        text = log.read_text()
        assert worker.returncode == code, text
        assert "Traceback" not in text and "stopped before the state answered" in text, text
        assert any(m.startswith("STOPPING=1") for m in manager.heard())
        manager.messages.clear()


@pytest.mark.parametrize("fault", ["an unknown URL parameter", "a role that does not exist"])
def test_a_start_no_wait_can_mend_still_fails_at_once(fault: str, postgres, tmp_path: Path):
    url = postgres.new_database()
    url = url + "&bogus=1" if fault.startswith("an unknown") else url.replace(
        "user=oj", "user=nobody_here")
    p = Project(tmp_path / "project", tmp_path / "state", url=url)
    p.write("w.hcl", RUNBOOK)
    proc = subprocess.run([OJD, "worker", "w", "--foreground"], cwd=p.root, env=p.env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        "ojd: state database "), proc.stderr
    assert "waiting" not in proc.stderr


# Runs inside its own mount namespace: the state dir is a 3 MiB tmpfs the test fills.
FULL_DISK_DRIVER = r"""
import json, os, signal, subprocess, sys, time
oj, ojd, project, state, out = sys.argv[1:6]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", state], check=True)
env = dict(os.environ, OJ_STATE_DIR=state)
def run(*args):
    return subprocess.run([oj, *args], cwd=project, env=env, capture_output=True, text=True)
item = run("queue", "push", "q", "--var", "n=1").stdout.strip()
filler = os.open(os.path.join(state, "filler"), os.O_WRONLY | os.O_CREAT)
for chunk in (65536, 4096, 1):  # fill the disk to the last byte
    try:
        while True:
            os.write(filler, b"\0" * chunk)
    except OSError:
        pass
os.close(filler)
log_path = os.path.join(out, "worker.log")
with open(log_path, "w") as log:
    worker = subprocess.Popen([ojd, "worker", "w", "--foreground"], cwd=project, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
deadline = time.monotonic() + 30
while worker.poll() is None and "waiting for the state dir" not in open(log_path).read():
    assert time.monotonic() < deadline, "the worker neither waited nor exited"
    time.sleep(0.05)
early = worker.poll()
status = None
if early is None:
    os.unlink(os.path.join(state, "filler"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads(run("queue", "show", item, "-o", "json").stdout)["status"]
        if status == "completed":
            break
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
worker.wait(timeout=60)
json.dump({"exited_early": early, "status": status, "rc": worker.returncode}, sys.stdout)
"""


def test_a_worker_started_on_a_full_state_disk_waits_for_space(tmp_path: Path):
    # justified: a non-root developer run skips; CI runs as root (require fails there)
    require(os.geteuid() == 0, "mounts a small tmpfs in its own mount namespace: needs root")
    p = Project(tmp_path / "project", tmp_path / "state")
    p.write("w.hcl", RUNBOOK)
    state = tmp_path / "small-state"
    state.mkdir()
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", FULL_DISK_DRIVER,
         OJ, OJD, str(p.root), str(state), str(tmp_path)],
        capture_output=True, text=True, timeout=180)
    log = (tmp_path / "worker.log").read_text()
    assert proc.returncode == 0, proc.stderr + log
    result = json.loads(proc.stdout)
    assert result == {"exited_early": None, "status": "completed", "rc": 0}, log
    assert (p.root / "ran.txt").read_text() == "1\n"
    assert "Traceback" not in log
    waiting = [line for line in log.splitlines() if "waiting for the state dir" in line]
    assert waiting and all("No space left on device" in line for line in waiting), log
    assert "the state dir answers again; starting" in log
