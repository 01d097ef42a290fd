"""`oj worker start --all | stop --all | resize` and `oj queue push --start` with workers as
real units, in the private systemd of tests/sandbox.py."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from sandbox import Sandbox
from test_systemd_workers import UnitProject

# each job writes "start N", then waits for the file go-N (or go-all) and writes "end N"
RUNBOOK = r"""
    queue "jobs" {
      type     = "persisted"
      vars     = ["n", "mode"]
      defaults = { mode = "ok" }
    }
    queue "other" {
      type     = "persisted"
      vars     = ["n", "mode"]
      defaults = { mode = "ok" }
    }
    worker "FIRST" {
      source      = { queue = "jobs" }
      handler     = { pipeline = "work" }
      concurrency = 1
      poll        = "60s"
    }
    worker "SECOND" {
      source  = { queue = "other" }
      handler = { pipeline = "work" }
      poll    = "60s"
    }
    pipeline "work" {
      vars = ["item"]
      step "wait" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> "${invoke.dir}/ran.txt"
          while [ ! -e "${invoke.dir}/go-${var.item.n}" ] && [ ! -e "${invoke.dir}/go-all" ]; do
            sleep 0.05
          done
          echo "end ${var.item.n}" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


@pytest.fixture
def pair(installed: Sandbox, sandbox_dir: Path):
    """A project with two unit workers: ``p.worker`` (queue "jobs") and ``p.second``."""
    name = "c" + uuid.uuid4().hex[:8]
    p = UnitProject(installed, sandbox_dir / "project", name)
    p.second = name + "-2"  # type: ignore[attr-defined]
    (p.root / ".oj" / "runbooks" / "work.hcl").write_text(textwrap.dedent(
        RUNBOOK.replace("FIRST", p.worker).replace("SECOND", p.second)))
    yield p
    (p.root / "go-all").touch()
    p.oj("worker", "stop", "--all", "--cancel", check=False)
    for worker in (p.worker, p.second):
        unit = f"oj-worker@project:{worker}.service"
        installed.systemctl("stop", unit, check=False)
        installed.systemctl("reset-failed", unit, check=False)
        # its state dir's drop-in goes with it: other tests count the drop-ins they find
        installed.run(["rm", "-rf", f"/etc/systemd/system/{unit}.d"])
    installed.systemctl("daemon-reload")


def state_of(p: UnitProject, worker: str) -> str:
    return p.sb.unit_property(f"oj-worker@project:{worker}.service", "ActiveState")


def started_jobs(p: UnitProject) -> list[str]:
    return sorted(line.split()[1] for line in p.ran() if line.startswith("start "))


def test_start_all_and_stop_all_start_and_stop_every_unit_of_the_project(pair):
    p = pair
    first, second = sorted((p.worker, p.second))
    proc = p.oj("worker", "start", "--all")
    assert proc.stdout.splitlines() == [f"Worker '{first}' started",
                                        f"Worker '{second}' started"]
    assert state_of(p, first) == state_of(p, second) == "active"
    woken = len(p.events("worker:woken"))
    proc = p.oj("worker", "start", "--all")
    assert proc.stdout.splitlines() == [f"Worker '{n}' was already running; woken"
                                        for n in (first, second)]
    assert len(p.events("worker:woken")) == woken + 2
    proc = p.oj("worker", "stop", "--all")
    assert proc.stdout.splitlines() == [f"Worker '{n}' stopped (inactive)"
                                        for n in (first, second)]
    assert state_of(p, first) == state_of(p, second) == "inactive"


def test_resize_of_a_unit_worker_fills_its_slots_shows_in_its_status_and_outlives_a_restart(
        pair):
    p = pair
    p.oj("worker", "start", p.worker)
    for n in (1, 2, 3):
        p.push(n)
    p.wait_for(lambda: started_jobs(p) == ["1"], "the first job to start")
    assert p.prop("StatusText").startswith(f"{p.worker}: 1/1 running"), p.prop("StatusText")
    p.oj("worker", "resize", p.worker, "3")
    # the fallback poll is 60 s away: the resize's wake fills the new slots
    p.wait_for(lambda: started_jobs(p) == ["1", "2", "3"], "the new slots to fill",
               timeout=15)
    p.wait_for(lambda: p.prop("StatusText").startswith(f"{p.worker}: 3/3 running"),
               "the status to show the new concurrency")
    before = p.prop("MainPID")
    p.oj("worker", "restart", p.worker)
    p.wait_for(lambda: p.prop("MainPID") not in ("0", before), "the worker to be restarted")
    p.wait_for(lambda: p.prop("StatusText").startswith(f"{p.worker}: 3/3 running"),
               "the restarted worker to keep to the resized concurrency")
    [row] = [r for r in json.loads(p.oj("worker", "list", "-o", "json").stdout)
             if r["name"] == p.worker]
    assert (row["active"], row["concurrency"], row["runbook_concurrency"]) == (3, 3, 1)
    [line] = [ln for ln in p.oj("worker", "list").stdout.splitlines()
              if ln.startswith(p.worker + " ")]
    assert " 3/3 (resized) " in line, line
    (p.root / "go-all").touch()
    p.wait_for(lambda: p.prop("StatusText").startswith(f"{p.worker}: 0/3 running"),
               "the jobs to end")


def test_push_start_starts_the_stopped_worker_of_the_queue_and_it_takes_the_item(pair):
    p = pair
    proc = p.oj("queue", "push", "jobs", json.dumps({"n": "1"}), "--start")
    assert len(proc.stdout.split()) == 1  # the item's id alone
    assert proc.stderr == f"oj: worker '{p.worker}' started\n"
    assert state_of(p, p.worker) == "active"
    assert state_of(p, p.second) == "inactive"  # it takes from another queue
    p.wait_for(lambda: started_jobs(p) == ["1"], "the started worker to take the item")


def test_prune_keeps_a_running_unit_worker_the_runbook_dropped_and_removes_it_once_stopped(
        pair):
    p = pair
    p.oj("worker", "start", p.worker)
    rb = p.root / ".oj" / "runbooks" / "work.hcl"
    text = rb.read_text()
    start = text.index(f'worker "{p.worker}"')
    rb.write_text(text[:start] + text[text.index(f'worker "{p.second}"'):])
    proc = p.oj("worker", "prune")
    assert proc.stdout.startswith("nothing to prune")
    assert proc.stderr == (f"oj: kept worker '{p.worker}': its project's runbook no longer "
                           f"defines it, but it runs (PID {p.prop('MainPID')}); stop it first\n")
    p.oj("worker", "stop", p.worker)
    proc = p.oj("worker", "prune")
    assert proc.stdout == (f"removed worker '{p.worker}' of {p.root}: its project's runbook "
                           "no longer defines it\n")
    assert [r["name"] for r in json.loads(p.oj("worker", "list", "-o", "json").stdout)] == []
