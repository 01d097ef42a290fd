"""Workers as real units: `oj worker start` against the private systemd of tests/sandbox.py.

Every oj and ojd process here runs inside the sandbox (its systemd is PID 1 there); projects
and state dirs live under the sandbox root, at the same path on both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import sandbox_oj

BIN = os.path.dirname(sys.executable)
OJ = os.path.join(BIN, "oj")

RUNBOOK = r"""
    queue "jobs" {
      type     = "persisted"
      vars     = ["n", "mode"]
      defaults = { mode = "ok" }
    }

    worker "WORKER" {
      source      = { queue = "jobs" }
      handler     = { pipeline = "work" }
      concurrency = 1
      poll        = "60s"
    }

    pipeline "work" {
      vars = ["item"]
      step "work" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> "${invoke.dir}/ran.txt"
          case ${var.item.mode} in
            slow) sleep 3 ;;
            hang) sleep 600 ;;
            start-other) oj worker start OTHER ;;
          esac
          echo "done ${var.item.n}" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


class UnitProject:
    """A project whose worker runs as oj-worker@PROJECT:NAME.service in the sandbox (the
    project is named after its directory)."""

    def __init__(self, sandbox: Sandbox, root: Path, worker: str) -> None:
        self.sb = sandbox
        self.root = root
        self.state = root / "st%a te"  # a % and a space: the drop-in must quote them
        self.worker = worker
        self.unit = f"oj-worker@{root.name}:{worker}.service"
        (root / ".oj" / "runbooks").mkdir(parents=True)
        text = RUNBOOK.replace("WORKER", worker).replace("OTHER", "none")
        (root / ".oj" / "runbooks" / "work.hcl").write_text(textwrap.dedent(text))

    def oj(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sandbox_oj(self.sb, self.state, *args, cwd=self.root, check=check)

    def push(self, n: int | str, mode: str = "ok") -> str:
        return self.oj("queue", "push", "jobs", json.dumps({"n": str(n), "mode": mode})
                       ).stdout.strip()

    def prop(self, name: str) -> str:
        return self.sb.unit_property(self.unit, name)

    def items(self) -> list[dict]:
        return json.loads(self.oj("queue", "list", "--items", "-o", "json").stdout)

    def ran(self) -> list[str]:
        path = self.root / "ran.txt"
        return path.read_text().splitlines() if path.exists() else []

    def events(self, kind: str) -> list[dict]:
        """Events of one type, read from the WAL on the host side."""
        from ojd.store.wal import WalDirectory

        wal = WalDirectory(self.state / "wal", on_problem=lambda p: None)
        return [r.event for r in wal.records() if r.event.get("type") == kind]

    def dropin(self, text: str) -> None:
        """An extra drop-in for this worker's unit (shorter watchdog, shorter drain...)."""
        directory = f"/etc/systemd/system/{self.unit}.d"
        self.sb.run(["mkdir", "-p", directory])
        self.sb.run(["sh", "-c", f"cat > {directory}/90-test.conf"], input=text)
        self.sb.systemctl("daemon-reload")

    def wait_for(self, predicate, what: str, timeout: float = 30) -> None:
        self.sb.wait_for(predicate, timeout=timeout, what=what)


@pytest.fixture
def unit_project(installed: Sandbox, sandbox_dir: Path):
    name = "w" + uuid.uuid4().hex[:8]
    project = UnitProject(installed, sandbox_dir / "project", name)
    yield project
    project.oj("worker", "stop", "--cancel", project.worker, check=False)
    installed.systemctl("stop", project.unit, check=False)
    installed.systemctl("reset-failed", project.unit, check=False)
    # its state dir's drop-in goes with it: other tests count the drop-ins they find
    installed.run(["rm", "-rf", f"/etc/systemd/system/{project.unit}.d"])
    installed.systemctl("daemon-reload")


def test_installed_template_passes_systemd_analyze_verify(installed: Sandbox):
    proc = installed.run(["systemd-analyze", "verify", "oj-worker@probe.service",
                          "oj-workers.target"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_fresh_start_starts_the_unit_and_reports_ready(unit_project: UnitProject):
    out = unit_project.oj("worker", "start", unit_project.worker).stdout
    assert out == f"Worker '{unit_project.worker}' started\n"
    assert unit_project.prop("ActiveState") == "active"
    assert unit_project.prop("SubState") == "running"
    assert unit_project.prop("StatusText").startswith(f"{unit_project.worker}: 0/1 running")


def push_without_wake(p: UnitProject, n: str) -> None:
    """Queue an item without the push's own wake-up: then only another wake can make the
    worker poll before its 60 s fallback."""
    p.sb.run([sys.executable, "-c", textwrap.dedent(f"""
        from ojd import project, queues
        from ojd.store import Store
        rb = project.load({str(p.root)!r})
        queues.push(Store({str(p.state)!r}), {str(p.root)!r}, rb.queues["jobs"], {{"n": {n!r},
                    "mode": "ok"}})
        """)])


def test_start_on_a_running_worker_wakes_it_instead_of_starting_again(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    pid, restarts = p.prop("MainPID"), p.prop("NRestarts")
    push_without_wake(p, "q")
    out = p.oj("worker", "start", p.worker).stdout
    assert out == f"Worker '{p.worker}' was already running; woken\n"
    p.wait_for(lambda: "done q" in p.ran(), "the woken worker to run the item", timeout=20)
    assert (p.prop("MainPID"), p.prop("NRestarts")) == (pid, restarts)
    assert len(p.events("worker:woken")) == 1
    assert len(p.events("worker:started")) == 1  # no second start


def test_systemctl_reload_wakes_the_worker(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    pid = p.prop("MainPID")
    push_without_wake(p, "r")
    p.sb.systemctl("reload", p.unit)
    p.wait_for(lambda: "done r" in p.ran(), "the reloaded worker to run the item", timeout=20)
    assert p.prop("MainPID") == pid and p.prop("ActiveState") == "active"


def test_start_on_a_stopped_worker_starts_it_again(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    first = p.prop("MainPID")
    p.oj("worker", "stop", p.worker)
    assert p.prop("ActiveState") == "inactive"
    p.oj("worker", "start", p.worker)
    assert p.prop("ActiveState") == "active" and p.prop("MainPID") != first
    assert len(p.events("worker:started")) == 2


def test_double_start_then_list_shows_one_entry(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.oj("worker", "start", p.worker)
    rows = json.loads(p.oj("worker", "list", "-o", "json").stdout)
    assert [r["name"] for r in rows] == [p.worker]
    row = rows[0]
    assert (row["active_state"], row["sub_state"], row["queue"], row["concurrency"]) == (
        "active", "running", "jobs", 1)
    assert row["main_pid"] == int(p.prop("MainPID"))
    assert row["unit"] == p.unit and row["project"] == str(p.root)
    assert {"active", "pending"} <= set(row)


def test_stop_then_start_back_to_back_leaves_it_running(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.sb.systemctl("stop", "--no-block", p.unit)  # a stop still in progress
    p.oj("worker", "start", p.worker)
    p.wait_for(lambda: p.prop("ActiveState") == "active", "the worker to run again")
    assert p.prop("SubState") == "running"


def test_second_project_with_the_same_worker_name_runs_its_own_and_leaves_the_first(
        unit_project, sandbox_dir):
    p = unit_project
    p.oj("worker", "start", p.worker)
    pid = p.prop("MainPID")
    other = UnitProject(p.sb, sandbox_dir / "other", p.worker)
    other.state = p.state  # the same state directory: each project's names are its own
    try:
        assert other.oj("worker", "start", p.worker).stdout == f"Worker '{p.worker}' started\n"
        assert other.unit != p.unit and other.prop("ActiveState") == "active"
        assert p.prop("MainPID") == pid
        assert sorted((e["name"], e["p"]) for e in p.events("worker:recorded")) == sorted(
            [(f"project:{p.worker}", str(p.root)), (f"other:{p.worker}", str(other.root))])
    finally:
        other.oj("worker", "stop", p.worker, check=False)
        p.sb.run(["rm", "-rf", f"/etc/systemd/system/{other.unit}.d"])


def test_twenty_concurrent_starts_leave_one_unit_with_one_main_pid(unit_project):
    p = unit_project
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: p.oj("worker", "start", p.worker, check=False),
                                range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results]
    said = [r.stdout for r in results]
    # one start (the rest join it while it activates) or a wake once it runs
    assert set(said) <= {f"Worker '{p.worker}' started\n",
                         f"Worker '{p.worker}' was already running; woken\n"}, said
    assert said.count(f"Worker '{p.worker}' was already running; woken\n") == len(
        p.events("worker:woken"))
    assert p.prop("ActiveState") == "active"
    pid = int(p.prop("MainPID"))
    assert p.prop("NRestarts") == "0"
    cgroup_pids = p.sb.run(["systemctl", "show", "-P", "ControlGroup", p.unit]).stdout.strip()
    # the unit's processes, from the unified hierarchy or systemd's own (a v1 host)
    listed = [p.sb.run(["cat", f"{base}{cgroup_pids}/cgroup.procs"], check=False)
              for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")]
    [procs] = [r.stdout.split() for r in listed if r.returncode == 0][:1]
    assert procs == [str(pid)]  # only ojd itself: its jobs run in units of their own
    assert len(p.events("worker:recorded")) == 1
    assert len(p.events("worker:started")) == 1


def test_push_to_a_running_worker_starts_the_job_before_the_fallback_poll(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.push(1)
    # the fallback poll is 60 s: the job can only start this soon because the push woke it
    p.wait_for(lambda: "done 1" in p.ran(), "the pushed item to run", timeout=20)
    assert [i["status"] for i in p.items()] == ["completed"]


def test_push_when_the_worker_is_not_running_still_queues_and_says_so(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.oj("worker", "stop", p.worker)
    proc = p.oj("queue", "push", "jobs", '{"n": "x"}')
    assert "no worker was woken" in proc.stderr
    assert [i["status"] for i in p.items()] == ["pending"]
    [row] = json.loads(p.oj("worker", "list", "-o", "json").stdout)
    assert (row["active_state"], row["pending"], row["active"]) == ("inactive", 1, 0)


def test_kill_9_during_a_step_restarts_the_worker_which_adopts_the_running_job(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.push(1, mode="slow")
    p.wait_for(lambda: "start 1" in p.ran(), "the step to start")
    pid = p.prop("MainPID")
    p.sb.systemctl("kill", "--signal=KILL", "--kill-whom=main", p.unit)
    p.wait_for(lambda: p.prop("NRestarts") == "1" and p.prop("ActiveState") == "active",
               "systemd to restart the worker")
    assert p.prop("MainPID") != pid
    p.wait_for(lambda: "done 1" in p.ran(), "the item to complete", timeout=40)
    items = p.items()
    assert [(i["status"], i["attempts"]) for i in items] == [("completed", 1)]
    assert p.ran().count("start 1") == 1 and p.ran().count("done 1") == 1
    assert p.events("job:resumed") == []  # its process ran on: watched, not resumed
    assert "watching it" in p.sb.journal(p.unit)


def test_hung_loop_is_restarted_by_the_watchdog(unit_project):
    p = unit_project
    p.dropin("[Service]\nWatchdogSec=2s\n")
    p.oj("worker", "start", p.worker)
    pid = p.prop("MainPID")
    p.sb.run(["kill", "-STOP", pid])  # the loop stops answering
    p.wait_for(lambda: p.prop("NRestarts") == "1" and p.prop("ActiveState") == "active",
               "the watchdog to restart the worker", timeout=30)
    assert p.prop("MainPID") != pid


def test_systemctl_stop_is_prompt_and_leaves_the_running_job_to_its_end(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.push(1, mode="slow")
    p.wait_for(lambda: "start 1" in p.ran(), "the step to start")
    p.sb.systemctl("stop", p.unit)
    assert p.prop("ActiveState") == "inactive"
    assert "1 job(s) keep running in their own processes" in p.sb.journal(p.unit)
    p.wait_for(lambda: p.items()[0]["status"] == "completed", "the item to complete")
    assert p.ran() == ["start 1", "done 1"]


def test_systemctl_status_shows_what_the_worker_and_its_job_are_doing(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.push(1, mode="hang")
    p.wait_for(lambda: "start 1" in p.ran(), "the step to start")
    p.wait_for(lambda: "step work)" in p.prop("StatusText"), "the status to show the step")
    status = p.sb.systemctl("status", p.unit, check=False)
    assert f'Status: "{p.worker}: 1/1 running (job ' in status
    assert "step work)" in status and "0 pending" in status
    [job] = json.loads(p.oj("job", "list", "-o", "json").stdout)
    scope = p.sb.systemctl("status", f"oj-job-{job['id']}.scope", check=False)
    assert "sleep 600" in scope  # the step runs in its job's unit, not the worker's
    assert "sleep 600" not in status


def test_a_step_can_start_another_worker(unit_project):
    p = unit_project
    other = "o" + uuid.uuid4().hex[:8]
    runbook = p.root / ".oj" / "runbooks" / "work.hcl"
    runbook.write_text(runbook.read_text().replace("oj worker start none",
                                                   f"oj worker start {other}"))
    (p.root / ".oj" / "runbooks" / "other.hcl").write_text(textwrap.dedent(f"""
        queue "others" {{
          vars = ["n", "mode"]
        }}
        worker "{other}" {{
          source  = {{ queue = "others" }}
          handler = {{ pipeline = "work" }}
        }}
        """))
    try:
        p.oj("worker", "start", p.worker)
        p.push(1, mode="start-other")
        p.wait_for(lambda: "done 1" in p.ran(), "the step to finish")
        assert p.sb.unit_property(f"oj-worker@project:{other}.service", "ActiveState") == "active"
    finally:
        p.sb.systemctl("stop", f"oj-worker@project:{other}.service", check=False)


def test_unknown_worker_is_an_error_naming_the_defined_ones(unit_project):
    proc = unit_project.oj("worker", "start", "nope", check=False)
    assert proc.returncode == 2
    assert f"unknown worker 'nope'; this project defines: {unit_project.worker}" in proc.stderr


def test_invalid_runbook_starts_and_signals_nothing(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    pid = p.prop("MainPID")
    (p.root / ".oj" / "runbooks" / "broken.hcl").write_text('worker "x" {\n  bogus = 1\n}\n')
    proc = p.oj("worker", "start", p.worker, check=False)
    assert proc.returncode == 1 and "broken.hcl:2:" in proc.stderr
    assert p.prop("MainPID") == pid and p.events("worker:woken") == []


def test_worker_whose_project_lost_it_fails_without_a_restart_loop(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    p.oj("worker", "stop", p.worker)
    runbook = p.root / ".oj" / "runbooks" / "work.hcl"
    runbook.write_text(runbook.read_text().replace(f'worker "{p.worker}"', 'worker "renamed"'))
    p.sb.systemctl("start", p.unit, check=False)
    p.wait_for(lambda: p.prop("ActiveState") == "failed", "the unit to fail")
    assert p.prop("NRestarts") == "0"  # RestartPreventExitStatus: no loop
    assert "defines no worker" in p.sb.journal(p.unit)
    # the runbook mended, `oj worker start` resets the failed unit and starts it
    runbook.write_text(runbook.read_text().replace('worker "renamed"', f'worker "{p.worker}"'))
    assert "started" in p.oj("worker", "start", p.worker).stdout
    assert (p.prop("ActiveState"), p.prop("SubState")) == ("active", "running")


def test_worker_logs_and_list_when_systemd_is_unreachable(unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    logs = p.oj("worker", "logs", p.worker, "-n", "20").stdout
    assert "ready: queue 'jobs'" in logs
    # listing from the host: no manager at the host's /run/systemd/private
    env = dict(os.environ, OJ_STATE_DIR=str(p.state))
    proc = subprocess.run([OJ, "worker", "list", "-o", "json"], cwd=p.root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "systemd cannot be reached" in proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["name"], r["active_state"]) for r in rows] == [(p.worker, None)]


def test_an_invalid_runbook_shows_in_the_status_while_the_worker_keeps_the_previous_one(
        unit_project):
    p = unit_project
    p.oj("worker", "start", p.worker)
    broken = p.root / ".oj" / "runbooks" / "zz.hcl"
    broken.write_text('pipeline "other" {\n  step "s" { run = bare }\n}\n')
    p.sb.systemctl("reload", p.unit)  # a poll now: it reads the runbook again
    p.wait_for(lambda: "runbook not reloaded: .oj/runbooks/zz.hcl:2:" in p.prop("StatusText"),
               "the status to show the runbook error")
    assert p.prop("ActiveState") == "active"
    proc = p.oj("queue", "push", "jobs", '{"n": "1"}')
    assert "queue 'jobs' is unchanged since the last valid runbook" in proc.stderr
    p.wait_for(lambda: "done 1" in p.ran(), "the item to run with the previous runbook")
    assert ".oj/runbooks/zz.hcl:2:" in p.sb.journal(p.unit)
    broken.unlink()
    p.sb.systemctl("reload", p.unit)
    p.wait_for(lambda: "runbook" not in p.prop("StatusText"), "the status to clear")
