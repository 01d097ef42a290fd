"""Jobs in units of their own: worker restarts, kills and stops against the private systemd
of tests/sandbox.py never stop or repeat a running step."""

from __future__ import annotations

import json
import signal
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import SANDBOX_PATH
from test_systemd_workers import OJ, UnitProject

RUNBOOK = r"""
    queue "jobs" {
      type     = "persisted"
      vars     = ["n", "mode"]
      defaults = { mode = "ok" }
    }

    worker "WORKER" {
      source      = { queue = "jobs" }
      handler     = { pipeline = "work" }
      concurrency = 2
      poll        = "60s"
    }

    pipeline "work" {
      vars = ["item"]
      step "first" {
        run = <<-SHELL
          echo "start first ${var.item.n}" >> "${invoke.dir}/ran.txt"
          while [ ! -e "${invoke.dir}/go" ]; do sleep 0.05; done
          echo "end first ${var.item.n}" >> "${invoke.dir}/ran.txt"
        SHELL
        on_done = { step = "second" }
      }
      step "second" {
        run = <<-SHELL
          echo "SECOND ${var.item.n}" >> "${invoke.dir}/ran.txt"
          echo "SAYS ${var.item.n}"
        SHELL
      }
    }

    command "slow" {
      args = "<n>"
      run  = { pipeline = "alone" }
    }

    command "failing" {
      run = { pipeline = "failing" }
    }

    pipeline "failing" {
      step "boom" { run = "echo about to fail; exit 5" }
    }

    command "stubborn" {
      run = { pipeline = "stubborn" }
    }

    pipeline "stubborn" {
      step "leave" {
        run = <<-SHELL
          for i in 1 2 3 4 5 6 7 8 9 10; do
            setsid bash -c 'trap "" TERM; exec -a oj-stubborn sleep 600' \
              > /dev/null 2>&1 < /dev/null &
          done
          sleep 600
        SHELL
      }
    }

    pipeline "alone" {
      vars = ["n"]
      step "one" {
        run = <<-SHELL
          echo "one says ${var.n}"
          echo "start one ${var.n}" >> "${invoke.dir}/ran.txt"
          while [ ! -e "${invoke.dir}/go" ]; do sleep 0.05; done
          echo "end one ${var.n}" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


@pytest.fixture
def jobs_project(installed: Sandbox, sandbox_dir: Path):
    name = "j" + uuid.uuid4().hex[:8]
    p = UnitProject(installed, sandbox_dir / "project", name)
    (p.root / ".oj" / "runbooks" / "work.hcl").write_text(
        textwrap.dedent(RUNBOOK.replace("WORKER", name)))
    yield p
    (p.root / "go").touch()
    p.oj("worker", "stop", "--cancel", p.worker, check=False)
    installed.systemctl("reset-failed", p.unit, check=False)
    # its state dir's drop-in goes with it: other tests count the drop-ins they find
    installed.run(["rm", "-rf", f"/etc/systemd/system/{p.unit}.d"])
    installed.systemctl("daemon-reload")


def jobs(p: UnitProject) -> list[dict]:
    return json.loads(p.oj("job", "list", "-o", "json").stdout)


def two_running_steps(p: UnitProject) -> None:
    p.oj("worker", "start", p.worker)
    p.push(1)
    p.push(2)
    p.wait_for(lambda: sorted(p.ran()) == ["start first 1", "start first 2"],
               "both first steps to start")


def finish_and_check(p: UnitProject) -> None:
    (p.root / "go").touch()
    p.wait_for(lambda: [i["status"] for i in p.items()] == ["completed", "completed"],
               "both items to complete", timeout=30)
    ran = p.ran()
    for n in ("1", "2"):  # each step once, the second after the first
        assert ran.count(f"start first {n}") == 1, ran
        assert ran.count(f"end first {n}") == 1, ran
        assert ran.count(f"SECOND {n}") == 1, ran
        assert ran.index(f"end first {n}") < ran.index(f"SECOND {n}"), ran
    assert [j["status"] for j in jobs(p)] == ["done", "done"]


def test_a_kill_9_of_the_worker_leaves_its_steps_running_and_the_restarted_worker_carries_on(
        jobs_project: UnitProject):
    p = jobs_project
    two_running_steps(p)
    pid = int(p.prop("MainPID"))
    p.sb.run(["kill", "-9", str(pid)])
    p.wait_for(lambda: p.prop("MainPID") not in ("0", str(pid))
               and p.prop("ActiveState") == "active", "the worker to be restarted")
    # the restarted worker has looked at both jobs and adopted them, slots taken
    p.wait_for(lambda: p.prop("StatusText").startswith(f"{p.worker}: 2/2 running"),
               "the restarted worker to adopt both jobs")
    assert sorted(p.ran()) == ["start first 1", "start first 2"]  # nothing started twice
    finish_and_check(p)


@pytest.mark.parametrize("how", ["oj worker restart", "systemctl try-restart"])
def test_a_restart_after_a_runbook_edit_neither_kills_nor_repeats_running_steps(
        jobs_project: UnitProject, how: str):
    p = jobs_project
    two_running_steps(p)
    rb = p.root / ".oj" / "runbooks" / "work.hcl"
    # running jobs keep the runbook they started with: their second step still says SECOND
    rb.write_text(rb.read_text().replace('echo "SECOND', 'echo "EDITED'))
    before = p.prop("MainPID")
    if how == "oj worker restart":
        p.oj("worker", "restart", p.worker)
    else:
        p.sb.systemctl("try-restart", p.unit)
    p.wait_for(lambda: p.prop("MainPID") not in ("0", before)
               and p.prop("ActiveState") == "active", "the worker to be restarted")
    units = p.sb.systemctl("list-units", "--type=scope", "--no-legend", "oj-job-*")
    assert units.count("oj-job-") == 2, units
    finish_and_check(p)


def test_a_job_unit_shows_its_step_and_has_its_output_in_the_journal(
        jobs_project: UnitProject):
    p = jobs_project
    job_id = p.oj("run", "--detach", "slow", "x").stdout.strip()
    p.wait_for(lambda: "start one x" in p.ran(), "the step to start")
    status = p.sb.systemctl("status", f"oj-job-{job_id}.scope", check=False)
    assert f"oj-step:{job_id}:one" in status, status
    (p.root / "go").touch()
    p.wait_for(lambda: jobs(p)[0]["status"] == "done", "the job to end")
    journal = p.sb.journal(f"oj-job-{job_id}.scope")
    assert "one says x" in journal, journal


def test_a_job_process_is_named_for_its_job_and_step_and_its_wrapper_line_is_short(
        jobs_project: UnitProject):
    p = jobs_project
    job_id = p.oj("run", "--detach", "slow", "y").stdout.strip()
    p.wait_for(lambda: "start one y" in p.ran(), "the step to start")
    job = json.loads(p.oj("job", "show", job_id, "-o", "json").stdout)

    def args(pid: int) -> list[str]:
        raw = p.sb.run(["cat", f"/proc/{pid}/cmdline"]).stdout
        return [a for a in raw.split("\0") if a]

    assert args(job["process"]["pid"]) == [f"ojd job {job_id} alone/one"]
    comm = p.sb.run(["cat", f"/proc/{job['process']['pid']}/comm"]).stdout.strip()
    assert comm == f"oj-job-{job_id}"[:15]
    # the step's wrapper: its job and step, and neither the wrapper's code nor the script
    pids = p.sb.run(["pgrep", "-f", f"oj-step:{job_id}:one"]).stdout.split()
    wrapper = args(int(pids[0]))
    line = " ".join(wrapper)
    [status] = [a for a in wrapper if a.endswith(f"/steps/{job_id}.1")]
    assert f"oj-step:{job_id}:one" in line and len(line) - len(status) < 100, line
    assert "read -r" not in line and "start one" not in line, line
    (p.root / "go").touch()
    p.wait_for(lambda: jobs(p)[0]["status"] == "done", "the job to end")


def test_a_failed_step_and_job_are_warnings_in_the_journal_and_their_output_is_not(
        jobs_project: UnitProject):
    p = jobs_project
    assert p.oj("run", "failing", check=False).returncode == 1
    [job] = jobs(p)
    unit = f"oj-job-{job['id']}.scope"
    warnings = p.sb.run(["journalctl", "--no-pager", "-o", "cat", "-p", "warning", "-u",
                         unit]).stdout
    assert "boom failed (exit 5)" in warnings, warnings
    assert "failed: step 'boom' failed (exit 5)" in warnings, warnings
    assert "about to fail" not in warnings  # the step's output stays at its own level
    assert "about to fail" in p.sb.journal(unit)


def test_a_backlog_reuses_job_processes_and_each_job_keeps_its_own_unit_and_journal(
        jobs_project: UnitProject):
    p = jobs_project
    (p.root / "go").touch()  # first steps pass at once
    for n in range(1, 9):
        p.push(n)
    p.oj("worker", "start", p.worker)
    p.wait_for(lambda: [i["status"] for i in p.items()] == ["completed"] * 8,
               "eight items to complete", timeout=60)
    procs = {e["id"]: e for e in p.events("job:process")}
    assert len(procs) == 8
    # two slots: a process runs one job after another, never one fork per job
    pids = [e["pid"] for e in procs.values()]
    assert len(set(pids)) <= 4, pids  # a process per slot, with room for a reuse that fails
    # yet every job had a unit of its own, with its own steps' output in its journal
    assert len({e["unit"] for e in procs.values()}) == 8
    by_pid: dict[int, list[str]] = {}
    for job_id, e in procs.items():
        assert e["unit"] == f"oj-job-{job_id}.scope"
        by_pid.setdefault(e["pid"], []).append(job_id)
    reused = next(ids for ids in by_pid.values() if len(ids) > 1)
    n_of = {j["id"]: j["vars"]["item"]["n"] for j in jobs(p)}
    for job_id in reused:
        journal = p.sb.journal(f"oj-job-{job_id}.scope")
        assert "first ok in" in journal, journal  # its job process's own lines
        assert f"SAYS {n_of[job_id]}" in journal, journal
        others = [n_of[o] for o in reused if o != job_id]
        assert all(f"SAYS {n}" not in journal for n in others), journal


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL])
def test_an_oj_run_killed_leaves_its_job_running_to_completion(
        jobs_project: UnitProject, sig: signal.Signals):
    p = jobs_project
    proc = p.sb.popen([OJ, "run", "slow", "y"], cwd=str(p.root),
                      env={"OJ_STATE_DIR": str(p.state), "PATH": SANDBOX_PATH})
    p.wait_for(lambda: "start one y" in p.ran(), "the step to start")
    # the oldest process of that command line is `oj run` (its job process is a fork)
    pid = p.sb.run(["pgrep", "-o", "-f", "oj run slow y"]).stdout.strip()
    p.sb.run(["kill", f"-{sig.value}", pid])
    proc.wait(timeout=10)
    job_id = jobs(p)[0]["id"]
    assert jobs(p)[0]["status"] == "running"
    waiting = p.sb.popen([OJ, "job", "wait", "--timeout", "60s", job_id], cwd=str(p.root),
                         env={"OJ_STATE_DIR": str(p.state), "PATH": SANDBOX_PATH})
    (p.root / "go").touch()
    assert waiting.wait(timeout=60) == 0  # done
    assert p.ran() == ["start one y", "end one y"]


def test_oj_worker_stop_leaves_a_running_job_to_finish_and_settle_its_item(
        jobs_project: UnitProject):
    p = jobs_project
    p.oj("worker", "start", p.worker)
    p.push(1)
    p.wait_for(lambda: p.ran() == ["start first 1"], "the step to start")
    out = p.oj("worker", "stop", p.worker).stdout
    assert "1 job(s) keep running" in out, out
    assert p.prop("ActiveState") == "inactive"
    (p.root / "go").touch()
    p.wait_for(lambda: [i["status"] for i in p.items()] == ["completed"], "the item to complete")
    assert p.ran() == ["start first 1", "end first 1", "SECOND 1"]
    # with no worker to take another job, its process ends and its scope goes
    [job] = jobs(p)
    p.wait_for(lambda: p.sb.systemctl("is-active", job["process"]["unit"], check=False).strip()
               != "active", "the job's scope to go")


def test_oj_worker_stop_cancel_stops_running_jobs_and_returns_their_items_to_pending(
        jobs_project: UnitProject):
    p = jobs_project
    two_running_steps(p)
    out = p.oj("worker", "stop", "--cancel", p.worker).stdout
    assert "2 job(s) cancelled" in out, out
    items = p.items()
    assert [i["status"] for i in items] == ["pending", "pending"]
    assert [i["attempts"] for i in items] == [0, 0]
    assert [j["status"] for j in jobs(p)] == ["cancelled", "cancelled"]
    units = p.sb.systemctl("list-units", "--type=scope", "--no-legend", "oj-job-*")
    assert "oj-job-" not in units, units  # no step's process is left to go on
    (p.root / "go").touch()
    assert sorted(p.ran()) == ["start first 1", "start first 2"]  # stopped, not finished


def test_oj_job_cancel_of_a_worker_job_kills_its_step_and_makes_its_item_dead(
        jobs_project: UnitProject):
    p = jobs_project
    p.oj("worker", "start", p.worker)
    p.push(1)
    p.wait_for(lambda: p.ran() == ["start first 1"], "the step to start")
    job_id = jobs(p)[0]["id"]
    out = p.oj("job", "cancel", job_id).stdout
    assert out.startswith(f"job {job_id} cancelled"), out
    item = p.items()[0]
    assert (item["status"], item["error"]) == ("dead", "cancelled")
    (p.root / "go").touch()
    p.push(2)  # the slot is free at once
    p.wait_for(lambda: "SECOND 2" in p.ran(), "the next item to run")
    # item 2 ran to its end past the same `go`: the cancelled step had that chance too
    assert [x for x in p.ran() if x.endswith(" 1")] == ["start first 1"]


def test_oj_job_cancel_of_an_oj_run_job_makes_oj_run_exit_4(jobs_project: UnitProject):
    p = jobs_project
    proc = p.sb.popen([OJ, "run", "slow", "z"], cwd=str(p.root),
                      env={"OJ_STATE_DIR": str(p.state), "PATH": SANDBOX_PATH})
    p.wait_for(lambda: "start one z" in p.ran(), "the step to start")
    p.oj("job", "cancel", jobs(p)[0]["id"])
    assert proc.wait(timeout=10) == 4


def test_a_cancel_returns_once_the_jobs_scope_is_gone_with_what_ignores_sigterm(
        jobs_project: UnitProject):
    """The job's scope stops with a 5 s TimeoutStopSec= (not the manager's 90 s): what
    left the step's group and ignores SIGTERM is killed, and the cancel waits for it."""
    p = jobs_project

    def stubborn() -> int:
        found = p.sb.run(["pgrep", "-f", "^oj-stubborn"], check=False).stdout.split()
        return len(found)

    job_id = p.oj("run", "--detach", "stubborn").stdout.strip()
    p.wait_for(lambda: stubborn() == 10, "the step to start its processes")
    unit = jobs(p)[0]["process"]["unit"]
    assert p.sb.unit_property(unit, "TimeoutStopUSec") == "5s"
    started = time.monotonic()
    p.oj("job", "cancel", job_id)
    assert stubborn() == 0
    assert time.monotonic() - started < 60
    assert p.sb.systemctl("is-active", unit, check=False) != "active"
