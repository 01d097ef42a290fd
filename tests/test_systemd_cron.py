"""Crons as systemd timers in a real systemd: ticks on an interval, ticks skipped while a
job of the cron runs, `oj cron once|stop`, and across a power-off: a calendar tick missed
while the machine was off runs once at boot (Persistent=true) for an enabled cron, while a
stopped, not enabled one stays stopped."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import OJ, sandbox_oj

pytestmark = pytest.mark.systemd

RUNBOOK = """
    pipeline "work" {
      step "work" {
        run = <<-SHELL
          echo "start $OJ_JOB" >> "${invoke.dir}/ran.txt"
          echo "working on $OJ_JOB"
          for _ in $(seq 600); do [ -e "${invoke.dir}/hold" ] || break; sleep 0.1; done
          echo "done $OJ_JOB" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }

    cron "NAME" {
      interval    = "2s"
      run         = { pipeline = "work" }
      concurrency = 1
    }
    """


class CronProject:
    """A project with one cron, NAME, ticking every 2 s in the sandbox. Its job runs while
    the file `hold` is there (a minute at most: nothing outlives a failed test)."""

    def __init__(self, sb: Sandbox, root: Path, name: str, runbook: str = RUNBOOK) -> None:
        self.sb = sb
        self.root = root
        self.state = root / "state"
        self.name = name
        self.full = f"{root.name}:{name}"  # its project's name, then its own
        self.timer = f"oj-cron@{self.full}.timer"
        (root / ".oj" / "runbooks").mkdir(parents=True)
        (root / ".oj" / "runbooks" / "cron.hcl").write_text(
            textwrap.dedent(runbook).replace("NAME", name))

    def oj(self, *args: str, check: bool = True):
        return sandbox_oj(self.sb, self.state, *args, cwd=self.root, check=check)

    def ran(self, what: str = "") -> list[str]:
        path = self.root / "ran.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return [x for x in lines if x.startswith(what)]

    def row(self) -> dict:
        [row] = [r for r in json.loads(self.oj("cron", "list", "-o", "json").stdout)
                 if r["name"] == self.name]
        return row

    def events(self, kind: str) -> list[dict]:
        from ojd.store.wal import WalDirectory

        wal = WalDirectory(self.state / "wal", on_problem=lambda p: None)
        return [r.event for r in wal.records() if r.event.get("type") == kind]


@pytest.fixture
def cron_project(installed: Sandbox, sandbox_dir: Path):
    p = CronProject(installed, sandbox_dir / "project", "c" + uuid.uuid4().hex[:8])
    yield p
    (p.root / "hold").unlink(missing_ok=True)
    p.oj("cron", "stop", p.name, check=False)
    # its drop-ins go with it: other tests count the drop-ins they find
    installed.run(["rm", "-rf", f"/etc/systemd/system/{p.timer}.d",
                   f"/etc/systemd/system/oj-cron@{p.full}.service.d"])
    installed.systemctl("daemon-reload")


def test_an_interval_cron_runs_its_pipeline_on_every_tick_until_stopped(cron_project):
    p = cron_project
    assert p.oj("cron", "start", p.name).stdout == f"Cron '{p.name}' started (every 2s)\n"
    assert p.sb.systemctl("is-active", p.timer) == "active"
    p.sb.wait_for(lambda: len(p.ran("done")) >= 3, timeout=60, what="three ticks' jobs")
    # ticks come from the timer, one oneshot service run each, not from a loop of oj's
    timers = p.sb.systemctl("list-timers", "--all", "--no-pager", p.timer)
    assert f"oj-cron@{p.full}.service" in timers
    before = time.time()
    row = p.row()
    after = time.time()
    assert (row["active_state"], row["schedule"], row["enabled"]) == ("active", "every 2s",
                                                                      False)
    # the next tick as of when the listing ran, some time in [before, after]: within one
    # interval of it (a tick that load made late may be due already)
    assert before - 2.5 < row["next_run"] <= after + 2.5, (before, after, row)
    assert row["last_outcome"] in ("done", "running") and row["ticks"] >= 3
    status = json.loads(p.oj("status", "-o", "json").stdout)
    [shown] = status["projects"][0]["crons"]
    assert shown["name"] == p.name and shown["next_run"] is not None

    assert p.oj("cron", "stop", p.name).stdout.startswith(f"Cron '{p.name}' stopped (inactive)")
    p.sb.wait_for(lambda: p.row()["running"] == 0, timeout=10, what="the last job to end")
    # systemd has the timer stopped, with no next tick: nothing but `once` starts a job now
    assert p.sb.systemctl("is-active", p.timer, check=False) == "inactive"
    assert p.row()["next_run"] is None
    ticks = len(p.events("cron:tick"))

    # once: a tick now, without the timer
    out = p.oj("cron", "once", p.name).stdout
    assert out.startswith(f"Cron '{p.name}' started job ")
    job = out.split()[-1]
    p.sb.wait_for(lambda: f"done {job}" in p.ran("done"), timeout=30, what="once's job")
    assert p.sb.systemctl("is-active", p.timer, check=False) == "inactive"
    assert len(p.events("cron:tick")) == ticks + 1  # once's tick, and no timer's


def test_ticks_while_the_crons_job_runs_are_skipped_and_recorded(cron_project):
    p = cron_project
    (p.root / "hold").touch()  # the job runs until the hold goes: ticks come meanwhile
    p.oj("cron", "start", p.name)
    p.sb.wait_for(lambda: len(p.events("cron:skipped")) >= 2, timeout=45,
                  what="two skipped ticks")
    assert len(p.ran("start")) == 1 and p.ran("done") == []  # one job at a time
    assert all(e["running"] == 1 for e in p.events("cron:skipped"))
    row = p.row()
    assert (row["last_outcome"], row["running"]) == ("skipped", 1)
    once = p.oj("cron", "once", p.name).stdout
    assert once == f"Cron '{p.name}' skipped: 1 of its job(s) still running (concurrency 1)\n"
    logs = p.oj("cron", "logs", p.name, "-n", "200").stdout
    assert "skipped: 1 of its job(s) still running" in logs
    assert f"working on {p.events('cron:tick')[0]['job']}" in logs  # the job's own output


def test_a_changed_schedule_reaches_a_running_timer_at_the_next_start(cron_project):
    p = cron_project
    p.oj("cron", "start", p.name)
    hcl = p.root / ".oj" / "runbooks" / "cron.hcl"
    hcl.write_text(hcl.read_text().replace('interval    = "2s"', 'interval    = "1h"'))
    out = p.oj("cron", "start", p.name).stdout
    assert out == f"Cron '{p.name}' was running; restarted with its new schedule (every 1h)\n"
    assert time.time() + 3500 < p.row()["next_run"] < time.time() + 3700
    assert p.oj("cron", "start", p.name).stdout == \
        f"Cron '{p.name}' was already running (every 1h)\n"


def test_bad_input_to_the_installed_cron_commands(cron_project):
    p = cron_project
    proc = p.oj("cron", "start", p.name[:-1], check=False)
    assert proc.returncode == 2
    assert f"unknown cron '{p.name[:-1]}' (did you mean '{p.name}'?); this project " \
        f"defines: {p.name}" in proc.stderr
    hcl = p.root / ".oj" / "runbooks" / "cron.hcl"
    hcl.write_text(hcl.read_text().replace('interval    = "2s"', 'schedule    = "*/5:00"'))
    proc = p.oj("cron", "start", p.name, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(".oj/runbooks/cron.hcl:14: cron '")
    assert "a repetition starts from a number, not *; write 0/5" in proc.stderr
    assert p.sb.systemctl("is-active", p.timer, check=False) == "inactive"


CALENDAR = """
    cron "NAME" {
      schedule = "WHEN"
      run      = "echo ran $(date +%s) >> ${invoke.dir}/ran-NAME.txt"
    }
    """


def test_a_calendar_tick_missed_while_off_runs_at_boot_for_an_enabled_cron_only(
        make_sandbox):
    sb: Sandbox = make_sandbox()
    sb.boot()
    root = sb.root / "shared" / "project"
    sb.run([OJ, "systemd", "install"])
    # a tick once a day, a few seconds from now (UTC): one that is missed while the machine
    # is off can only run by the catch-up at boot
    target = int(time.time()) + 20
    when = time.strftime("*-*-* %H:%M:%S UTC", time.gmtime(target))
    text = "".join(CALENDAR.replace("NAME", n) for n in ("on", "off"))
    p = CronProject(sb, root, "on", text.replace("WHEN", when))
    p.oj("cron", "start", "on")
    assert p.oj("cron", "enable", "on").stdout == "Cron 'on' enabled\n"
    p.oj("cron", "start", "off")
    p.oj("cron", "stop", "off")
    assert sb.systemctl("is-enabled", "oj-cron@project:on.timer") == "enabled"
    sb.poweroff()
    while time.time() < target + 2:
        time.sleep(0.2)
    assert not (root / "ran-on.txt").exists()  # the tick's time passed while off
    sb.boot()
    sb.wait_for(lambda: (root / "ran-on.txt").exists(), timeout=20,
                what="the missed tick to run at boot")
    assert sb.systemctl("is-active", "oj-cron@project:on.timer") == "active"
    assert sb.systemctl("is-active", "oj-cron@project:off.timer", check=False) == "inactive"
    rows = {r["name"]: r for r in json.loads(p.oj("cron", "list", "-o", "json").stdout)}
    assert rows["on"]["enabled"] is True and rows["off"]["enabled"] is False
    # caught up once; the next is tomorrow's
    assert rows["on"]["next_run"] > time.time() + 23 * 3600
    sb.wait_for(lambda: p.row()["last_outcome"] == "done", timeout=10, what="the job to end")
    assert len((root / "ran-on.txt").read_text().splitlines()) == 1
    assert not (root / "ran-off.txt").exists()


def test_uninstall_removes_the_drop_ins_a_cron_start_wrote_for_its_state_dir(cron_project):
    p = cron_project
    p.oj("cron", "start", p.name)
    p.oj("cron", "stop", p.name)
    units = "/etc/systemd/system"
    schedule = f"{units}/oj-cron@{p.full}.timer.d/50-oj-schedule.conf"
    state = f"{units}/oj-cron@{p.full}.service.d/50-oj-state.conf"
    assert "OnUnitActiveSec=2000000us" in p.sb.run(["cat", schedule]).stdout
    assert str(p.state) in p.sb.run(["cat", state]).stdout
    try:
        proc = p.oj("systemd", "uninstall")
        removed = proc.stdout.splitlines()
        assert f"removed {schedule}" in removed and f"removed {state}" in removed
        assert p.sb.run(["test", "-e", schedule], check=False).returncode == 1
    finally:
        p.sb.run([OJ, "systemd", "install"])


def test_a_tick_that_cannot_run_shows_as_failed_in_the_listing(cron_project):
    p = cron_project
    p.oj("cron", "start", p.name)
    hcl = p.root / ".oj" / "runbooks" / "cron.hcl"
    hcl.write_text(hcl.read_text().split("cron ")[0])  # the cron is gone from the runbook

    def row() -> dict:
        rows = json.loads(p.oj("cron", "list", "--all", "-o", "json").stdout)
        return next(r for r in rows if r["name"] == p.name)

    p.sb.wait_for(lambda: row()["tick_failed"], timeout=15, what="a tick to fail")
    assert f"project {p.root} defines no cron '{p.name}'" in p.oj(
        "cron", "logs", p.name).stdout
    line = next(x for x in p.oj("cron", "list", "--all").stdout.splitlines()
                if x.startswith(p.name))
    assert f"tick failed (oj cron logs {p.name})" in line


def test_the_tick_service_has_no_start_limit(cron_project):
    # a 1s interval or `oj cron once` in a loop starts it more than the default 5 times
    # in 10s; the cron's concurrency, not a start limit, guards against overlap
    p = cron_project
    p.oj("cron", "once", p.name)
    shown = p.sb.systemctl("show", "-p", "StartLimitIntervalUSec",
                           f"oj-cron@{p.full}.service")
    assert shown.strip() == "StartLimitIntervalUSec=0"


def test_a_tick_whose_job_gets_no_scope_starts_none_and_fails(cron_project):
    p = cron_project
    # the tick's service cannot reach the manager over D-Bus: no scope for its job
    dropin = f"/etc/systemd/system/oj-cron@{p.full}.service.d/60-no-unix-sockets.conf"
    p.sb.run(["mkdir", "-p", str(Path(dropin).parent)])
    p.sb.run(["sh", "-c", "printf '[Service]\\nRestrictAddressFamilies=\\n"
              f"RestrictAddressFamilies=AF_INET\\n' > {dropin}"])
    p.sb.systemctl("daemon-reload")
    proc = p.oj("cron", "once", p.name, check=False)
    assert proc.returncode == 1
    assert "without starting a job" in proc.stderr
    logs = p.oj("cron", "logs", p.name).stdout
    assert "started no job: the manager made no scope for job" in logs
    assert "a job left in this tick's service would be killed when the tick ends" in logs
    assert p.events("job:created") == [] and p.events("cron:tick") == []
    # the tick's service has ended: nothing of it is left to run the pipeline later
    p.sb.wait_for(lambda: p.sb.systemctl("is-active", f"oj-cron@{p.full}.service",
                                         check=False) in ("inactive", "failed"),
                  timeout=30, what="the tick's service to end")
    assert p.ran() == []
