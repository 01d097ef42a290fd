"""User scope: a normal user's workers run under their own user manager (user@UID.service),
with units in ~/.config/systemd/user and state in ~/.local/state/oj."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import own_sandbox

BIN = os.path.dirname(sys.executable)
OJ = os.path.join(BIN, "oj")

RUNBOOK = r"""
    queue "jobs" {
      vars = ["n"]
    }

    worker "mine" {
      source  = { queue = "jobs" }
      handler = { pipeline = "work" }
      poll    = "60s"
    }

    pipeline "work" {
      vars = ["item"]
      step "work" {
        run = "echo done ${var.item.n} $(id -un) >> ${invoke.dir}/ran.txt"
      }
    }
    """


pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def users_sandbox() -> Iterator[Sandbox]:
    """A sandbox of its own with two sandbox-only users, alice lingering (her manager runs
    from boot)."""
    with own_sandbox(users=("ojalice", "ojbob")) as sb:
        sb.run(["loginctl", "enable-linger", "ojalice"])
        sb.wait_for(lambda: sb.systemctl("is-active", "user@61001.service", check=False)
                    == "active", timeout=20, what="alice's user manager")
        yield sb


def user_project(sb: Sandbox, user: str) -> Path:
    pw = sb.passwd(user)
    project = Path(pw.pw_dir) / "project"
    (project / ".oj" / "runbooks").mkdir(parents=True, exist_ok=True)
    (project / ".oj" / "runbooks" / "work.hcl").write_text(textwrap.dedent(RUNBOOK))
    for path in (project, project / ".oj", project / ".oj" / "runbooks",
                 project / ".oj" / "runbooks" / "work.hcl"):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return project


def as_user(sb: Sandbox, user: str, *args: str, check: bool = True, **env: str):
    project = Path(sb.passwd(user).pw_dir) / "project"
    proc = sb.run([OJ, *args], user=user, cwd=str(project), check=False,
                  env={"PATH": f"{BIN}:/usr/bin:/bin", **env})
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"{user}: oj {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def alice_worker(users_sandbox: Sandbox) -> tuple[Sandbox, Path, str, str]:
    """alice's units installed and her worker 'mine' started, once for the module: the
    sandbox, her project, and what install and start printed."""
    sb = users_sandbox
    project = user_project(sb, "ojalice")
    installed = as_user(sb, "ojalice", "systemd", "install").stdout
    started = as_user(sb, "ojalice", "worker", "start", "mine").stdout
    return sb, project, installed, started


def test_user_worker_runs_under_the_user_manager(alice_worker):
    sb, project, installed, started = alice_worker
    home = Path(sb.passwd("ojalice").pw_dir)
    assert str(home / ".config" / "systemd" / "user" / "oj-worker@.service") in installed
    target = (home / ".config/systemd/user/oj-workers.target").read_text()
    assert "WantedBy=default.target" in target

    assert started == "Worker 'mine' started\n"
    as_user(sb, "ojalice", "queue", "push", "jobs", '{"n": "1"}')
    sb.wait_for(lambda: (project / "ran.txt").exists(), timeout=20, what="the job to run")
    assert (project / "ran.txt").read_text() == "done 1 ojalice\n"
    # its job ran in a scope of alice's manager, not in the worker's unit
    [job] = json.loads(as_user(sb, "ojalice", "job", "list", "-o", "json").stdout)
    assert job["process"]["unit"] == f"oj-job-{job['id']}.scope", job["process"]

    # the unit lives in alice's manager, not in the system one
    pid = sb.systemctl("show", "-P", "MainPID", "oj-worker@project:mine.service", user="ojalice")
    cgroup = sb.run(["cat", f"/proc/{pid}/cgroup"]).stdout
    assert "user@61001.service" in cgroup and "oj-worker@project:mine.service" in cgroup
    assert sb.systemctl("is-active", "oj-worker@project:mine.service", check=False) == "inactive"
    owner = sb.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout.strip()
    assert owner == "61001"

    # state in the user's XDG state dir, private to her
    state = home / ".local" / "state" / "oj"
    assert (state / "wal").is_dir() and (state.stat().st_mode & 0o777) == 0o700
    rows = json.loads(as_user(sb, "ojalice", "worker", "list", "-o", "json").stdout)
    assert [(r["name"], r["active_state"], r["main_pid"]) for r in rows] == [
        ("mine", "active", int(pid))]


def test_another_user_can_neither_see_nor_signal_the_worker(alice_worker):
    sb = alice_worker[0]
    alice_state = Path(sb.passwd("ojalice").pw_dir) / ".local" / "state" / "oj"
    pid = sb.systemctl("show", "-P", "MainPID", "oj-worker@project:mine.service", user="ojalice")
    assert pid not in ("", "0")
    user_project(sb, "ojbob")
    proc = as_user(sb, "ojbob", "worker", "list", "-o", "json", "--all", check=False,
                   OJ_STATE_DIR=str(alice_state))
    assert proc.returncode != 0 and "permission denied" in proc.stderr.lower()
    kill = sb.run(["kill", "-USR1", pid], user="ojbob", check=False)
    assert kill.returncode != 0
    # bob's own listing has no workers at all
    out = as_user(sb, "ojbob", "worker", "list", check=False, XDG_RUNTIME_DIR="/nonexistent")
    assert "no workers" in out.stdout


def test_enable_as_a_lingering_user_needs_no_login(alice_worker):
    sb = alice_worker[0]
    proc = as_user(sb, "ojalice", "worker", "enable", "mine")
    assert proc.stdout == "Worker 'mine' enabled\n"
    assert "linger" not in proc.stderr
    assert sb.systemctl("is-enabled", "oj-worker@project:mine.service", user="ojalice") == "enabled"


CRON = r"""
    cron "tick" {
      interval = "2s"
      run      = "echo tick $(id -un) >> ${invoke.dir}/ticks.txt"
    }
    """


def test_user_cron_ticks_in_the_user_manager(users_sandbox: Sandbox):
    sb = users_sandbox
    project = user_project(sb, "ojalice")
    pw = sb.passwd("ojalice")
    cron = project / ".oj" / "runbooks" / "cron.hcl"
    cron.write_text(textwrap.dedent(CRON))
    os.chown(cron, pw.pw_uid, pw.pw_gid)
    as_user(sb, "ojalice", "systemd", "install")
    try:
        assert as_user(sb, "ojalice", "cron", "start", "tick").stdout == \
            "Cron 'tick' started (every 2s)\n"
        ticks = project / "ticks.txt"
        sb.wait_for(lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 2,
                    timeout=20, what="two ticks")
        assert set(ticks.read_text().splitlines()) == {"tick ojalice"}
        assert sb.systemctl("is-active", "oj-cron@project:tick.timer", user="ojalice") == "active"
        assert sb.systemctl("is-active", "oj-cron@project:tick.timer", check=False) == "inactive"
        # its jobs ran in scopes of alice's manager
        jobs = json.loads(as_user(sb, "ojalice", "job", "list", "-o", "json").stdout)
        units = {j["process"]["unit"] for j in jobs if j["name"] == "tick"}
        assert units and all(u.startswith("oj-job-") for u in units)
        [row] = json.loads(as_user(sb, "ojalice", "cron", "list", "-o", "json").stdout)
        assert (row["active_state"], row["last_outcome"] in ("done", "running")) == (
            "active", True)
    finally:
        as_user(sb, "ojalice", "cron", "stop", "tick", check=False)
