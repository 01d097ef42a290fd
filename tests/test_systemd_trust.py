"""Whose code a system worker runs, with real units and sandbox-only test users: root refuses
a project a user could change, ``--run-as USER`` runs the worker as that user, and a running
worker refuses a runbook that became someone else's at its next load."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import OJ, own_sandbox, sandbox_oj

from ojd.unitnames import name_of_directory

OJ_GID = 61900  # group oj, as the Debian package's sysusers.d entry creates it

RUNBOOK = r"""
    queue "jobs" {
      vars = ["n"]
    }

    worker "WORKER" {
      source  = { queue = "jobs" }
      handler = { pipeline = "work" }
      poll    = "60s"
    }

    pipeline "work" {
      vars = ["item"]
      step "work" {
        run = "echo done ${var.item.n} $(id -u) >> ${invoke.dir}/ran.txt"
      }
    }
    """

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    """A sandbox of its own with two sandbox-only users and an oj group, units installed."""
    with own_sandbox(users=("ojtrust", "ojother")) as sb:
        # /etc/group inside is a bind of this file: the group appears at once
        with open(sb.root / "etc-users" / "group", "a") as f:
            f.write(f"oj:x:{OJ_GID}:\n")
        sb.run([OJ, "systemd", "install"])
        yield sb


class Project:
    def __init__(self, sb: Sandbox, root: Path, owner: str | None = None) -> None:
        self.sb = sb
        self.root = root
        self.worker = "t" + uuid.uuid4().hex[:8]
        # the project is named after its directory
        self.full = f"{name_of_directory(root.name)}:{self.worker}"
        self.unit = f"oj-worker@{self.full}.service"
        self.state = sb.root / "state"  # shared by the tests, like /var/lib/oj
        self.runbook = root / ".oj" / "runbooks" / "work.hcl"
        self.runbook.parent.mkdir(parents=True)
        self.runbook.write_text(textwrap.dedent(RUNBOOK.replace("WORKER", self.worker)))
        if owner is not None:
            pw = sb.passwd(owner)
            for path in (root, root / ".oj", self.runbook.parent, self.runbook):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def oj(self, *args: str, check: bool = True):
        return sandbox_oj(self.sb, self.state, *args, cwd=self.root, check=check)

    def prop(self, name: str) -> str:
        return self.sb.unit_property(self.unit, name)

    def ran(self) -> list[str]:
        path = self.root / "ran.txt"
        return path.read_text().splitlines() if path.exists() else []

    def statuses(self) -> list[str]:
        listing = self.oj("queue", "list", "--items", "-o", "json").stdout
        return [i["status"] for i in json.loads(listing)]

    def dropins(self) -> Path:
        return Path(f"/etc/systemd/system/{self.unit}.d")

    def stop(self) -> None:
        self.sb.systemctl("stop", self.unit, check=False)
        self.sb.systemctl("reset-failed", self.unit, check=False)


@pytest.fixture
def project(sb: Sandbox) -> Iterator[Callable[..., Project]]:
    """Makes the test's projects; their workers are stopped when it ends, pass or fail."""
    made: list[Project] = []

    def make(root: Path, owner: str | None = None) -> Project:
        made.append(Project(sb, root, owner=owner))
        return made[-1]

    yield make
    for p in made:
        p.stop()


def home(sb: Sandbox, user: str) -> Path:
    return Path(sb.passwd(user).pw_dir)


def test_root_start_refuses_a_project_whose_runbook_a_user_can_change(sb: Sandbox, project):
    p = project(sb.root / "projects" / "refused")
    uid = sb.passwd("ojtrust").pw_uid
    os.chown(p.runbook, uid, uid)
    proc = p.oj("worker", "start", p.worker, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"oj: refusing to run worker '{p.worker}' as root: {p.runbook} is writable by "
        "ojtrust (its owner), who could make it run their code as root; run it as ojtrust: "
        f"'oj worker start --run-as ojtrust {p.worker}', or in ojtrust's own manager "
        f"('loginctl enable-linger ojtrust', then 'oj worker start {p.worker}' as ojtrust), "
        f"or make {p.runbook} writable by root alone\n")
    # nothing started, recorded, or written for the unit
    assert p.prop("ActiveState") == "inactive" and p.prop("NRestarts") == "0"
    assert sb.run(["test", "-e", str(p.dropins())], check=False).returncode != 0
    rows = json.loads(p.oj("worker", "list", "--all", "-o", "json").stdout)
    assert p.worker not in [r["name"] for r in rows]
    # the same project with its runbook root's again starts
    os.chown(p.runbook, 0, 0)
    p.oj("worker", "start", p.worker)
    assert p.prop("ActiveState") == "active"


def test_run_as_runs_the_system_worker_as_that_user_and_drains_the_queue(sb: Sandbox, project):
    p = project(home(sb, "ojtrust") / "project", owner="ojtrust")
    uid = sb.passwd("ojtrust").pw_uid
    p.oj("queue", "push", "jobs", '{"n": "1"}')
    assert p.oj("worker", "start", "--run-as", "ojtrust", p.worker).stdout == \
        f"Worker '{p.worker}' started\n"
    assert p.prop("User") == "ojtrust"
    assert sb.run(["stat", "-c", "%u", f"/proc/{p.prop('MainPID')}"]).stdout.strip() == str(uid)
    sb.wait_for(lambda: p.ran() == [f"done 1 {uid}"], timeout=20, what="the first item")

    # root's CLI and the worker share the state dir through group oj: a segment and a
    # snapshot root creates are the worker's to append to and read
    p.oj("state", "compact")
    wal = p.state / "wal"
    for f in wal.iterdir():
        st = f.stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (OJ_GID, 0o660), f
    assert stat.S_IMODE(wal.stat().st_mode) == 0o2770
    p.oj("queue", "push", "jobs", '{"n": "2"}')
    sb.wait_for(lambda: len(p.ran()) == 2, timeout=20, what="the second item")
    assert p.ran()[1] == f"done 2 {uid}"
    sb.wait_for(lambda: p.statuses() == ["completed", "completed"], timeout=10,
                what="both items completed")

    # it stays that user's worker: a plain start (a wake) is not refused
    p.oj("worker", "start", p.worker)
    assert p.prop("User") == "ojtrust" and p.prop("ActiveState") == "active"

    # ...but the check is relative to that user: another user's runbook is refused
    other = sb.passwd("ojother").pw_uid
    os.chown(p.runbook, other, other)
    proc = p.oj("worker", "start", p.worker, check=False)
    assert proc.returncode == 1
    assert f"refusing to run worker '{p.worker}' as ojtrust: {p.runbook} is writable by " \
        "ojother (its owner)" in proc.stderr


def test_a_runbook_changed_to_another_users_is_refused_at_the_next_load(sb: Sandbox, project):
    p = project(sb.root / "projects" / "changed")
    p.oj("worker", "start", p.worker)
    p.oj("queue", "push", "jobs", '{"n": "1"}')
    sb.wait_for(lambda: p.ran() == ["done 1 0"], timeout=20, what="the first item")

    os.chown(p.runbook, sb.passwd("ojother").pw_uid, -1)
    p.oj("queue", "push", "jobs", '{"n": "2"}')  # wakes the worker: it loads, and refuses
    sb.wait_for(lambda: p.prop("ActiveState") == "failed", timeout=20,
                what="the worker to refuse and exit")
    assert p.prop("ExecMainStatus") == "78" and p.prop("NRestarts") == "0"
    refusal = (f"refusing to run worker '{p.worker}' as root: {p.runbook} is writable by "
               "ojother (its owner)")
    assert refusal in sb.journal(p.unit)
    assert refusal in p.prop("StatusText")
    assert p.ran() == ["done 1 0"] and p.statuses() == ["completed", "pending"]
    # a restart by hand is refused the same way, before anything starts
    proc = p.oj("worker", "start", p.worker, check=False)
    assert proc.returncode == 1 and refusal in proc.stderr
    assert p.prop("ActiveState") == "failed"


def test_run_as_holds_until_run_as_root_and_a_running_worker_restarts_as_its_new_user(
        sb: Sandbox, project):
    p = project(sb.root / "projects" / "switch")  # root's: fine for root and for a user
    p.oj("worker", "start", p.worker)
    assert p.prop("User") == "" and p.prop("ExecMainPID") != "0"
    uid = sb.passwd("ojtrust").pw_uid

    def main_uid() -> str:
        return sb.run(["stat", "-c", "%u", f"/proc/{p.prop('MainPID')}"]).stdout.strip()

    assert main_uid() == "0"
    p.oj("worker", "start", "--run-as", "ojtrust", p.worker)
    assert p.prop("User") == "ojtrust" and main_uid() == str(uid)
    before = p.prop("MainPID")
    p.oj("worker", "restart", p.worker)  # the drop-in holds
    assert p.prop("MainPID") != before and main_uid() == str(uid)
    (p.root / "ran.txt").touch()
    os.chown(p.root / "ran.txt", uid, uid)  # the step, as ojtrust, writes here
    p.oj("queue", "push", "jobs", '{"n": "1"}')
    sb.wait_for(lambda: p.ran() == [f"done 1 {uid}"], timeout=20, what="the item")
    p.oj("worker", "start", "--run-as", "root", p.worker)
    assert p.prop("User") == "" and main_uid() == "0"
    assert sb.run(["test", "-e", str(p.dropins() / "40-oj-run-as.conf")],
                  check=False).returncode != 0


def test_start_enable_run_as_restarts_a_running_worker_as_its_new_user(sb: Sandbox, project):
    p = project(sb.root / "projects" / "enable-switch")
    p.oj("worker", "start", p.worker)
    uid = sb.passwd("ojtrust").pw_uid

    def main_uid() -> str:
        return sb.run(["stat", "-c", "%u", f"/proc/{p.prop('MainPID')}"]).stdout.strip()

    assert main_uid() == "0"
    # --enable writes the run-as drop-in first: the start still sees the user changed
    assert p.oj("worker", "start", "--enable", "--run-as", "ojtrust", p.worker).stdout == \
        f"Worker '{p.worker}' restarted to run as its new user\n"
    assert p.prop("User") == "ojtrust" and main_uid() == str(uid)
    assert p.prop("UnitFileState") == "enabled"
    lock = p.state / "workers" / f"{p.full}.lock"
    assert lock.read_text().split()[0] == p.prop("MainPID")  # its lock file is its pid file
    # a lock file the user may only read (root's) still serves it: flock needs no write, and
    # pushes wake a unit's worker through the unit's main PID
    assert lock.stat().st_uid == 0
    os.chmod(lock, 0o640)
    before = p.prop("MainPID")
    p.oj("worker", "restart", p.worker)
    assert p.prop("MainPID") != before
    assert main_uid() == str(uid) and p.prop("ActiveState") == "active"
    (p.root / "ran.txt").touch()
    os.chown(p.root / "ran.txt", uid, uid)  # the step, as ojtrust, writes here
    p.oj("queue", "push", "jobs", '{"n": "1"}')
    sb.wait_for(lambda: p.ran() == [f"done 1 {uid}"], timeout=20, what="the item")
    # the same again changes nothing: a wake
    assert p.oj("worker", "start", "--enable", "--run-as", "ojtrust", p.worker).stdout == \
        f"Worker '{p.worker}' was already running; woken\n"
    p.oj("worker", "disable", p.worker)
    p.oj("worker", "start", "--run-as", "root", p.worker)
    assert main_uid() == "0"


def test_a_script_the_runbook_runs_is_checked_at_start_and_at_each_load(sb: Sandbox, project):
    p = project(sb.root / "projects" / "script")
    p.runbook.write_text(p.runbook.read_text().replace(
        "echo done ${var.item.n} $(id -u) >> ${invoke.dir}/ran.txt",
        "bash scripts/deploy.sh ${var.item.n}"))
    script = p.root / "scripts" / "deploy.sh"
    script.parent.mkdir()
    script.write_text('echo "done $1 $(id -u)" >> ran.txt\n')
    other = sb.passwd("ojother").pw_uid
    os.chown(script, other, -1)  # the runbook is root's, the code it runs is not
    proc = p.oj("worker", "start", p.worker, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"oj: refusing to run worker '{p.worker}' as root: {script} is writable by ojother "
        "(its owner), who could make it run their code as root; run it as ojother: "), \
        proc.stderr
    assert p.prop("ActiveState") == "inactive"
    rows = json.loads(p.oj("worker", "list", "--all", "-o", "json").stdout)
    assert p.worker not in [r["name"] for r in rows]

    os.chown(script, 0, -1)
    p.oj("worker", "start", p.worker)
    p.oj("queue", "push", "jobs", '{"n": "1"}')
    sb.wait_for(lambda: p.ran() == ["done 1 0"], timeout=20, what="the first item")
    os.chown(script, other, -1)  # given away while the worker runs: its next load refuses
    p.oj("queue", "push", "jobs", '{"n": "2"}')
    sb.wait_for(lambda: p.prop("ActiveState") == "failed", timeout=20,
                what="the worker to refuse and exit")
    assert p.prop("ExecMainStatus") == "78" and p.prop("NRestarts") == "0"
    assert (f"refusing to run worker '{p.worker}' as root: {script} is writable by ojother "
            "(its owner)") in sb.journal(p.unit)
    assert p.ran() == ["done 1 0"] and p.statuses() == ["completed", "pending"]
