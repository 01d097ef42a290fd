"""Nothing of a job outlives it: what its steps leave running (in the step's process group
or out of it, with setsid) is stopped when the job ends, and a cancel returns only once
nothing of the job runs, whatever ignores SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import Project, wait_until


def running(pid: int) -> bool:
    """Neither gone nor a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_what_a_finished_jobs_steps_left_running_is_stopped(project: Project):
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "leave" {
            run     = <<-SHELL
              setsid sleep 600 > /dev/null 2>&1 < /dev/null &
              echo $! >> left.pid
              sleep 600 > /dev/null 2>&1 &
              echo $! >> left.pid
            SHELL
            on_done = { step = "after" }
          }
          step "after" {
            run = "true"
          }
        }
        """)
    left = project.root / "left.pid"
    try:
        project.oj("run", "go")
        assert len(pids_in(left)) == 2
        wait_until(lambda: not any(running(p) for p in pids_in(left)),
                   "what the step left to be stopped once the job ended")
    finally:
        kill_all(pids_in(left))


def test_a_cancel_returns_when_nothing_of_the_job_runs_even_what_ignores_sigterm(
        project: Project):
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "stubborn" {
            run = <<-SHELL
              for i in $(seq 20); do
                setsid bash -c 'trap "" TERM; while :; do sleep 0.2; done' \
                  > /dev/null 2>&1 < /dev/null &
                echo $! >> stubborn.pid
              done
              sleep 600
            SHELL
          }
        }
        """)
    stubborn = project.root / "stubborn.pid"
    try:
        job_id = project.oj("run", "--detach", "go").stdout.strip()
        wait_until(lambda: len(pids_in(stubborn)) == 20, "the step to start its processes")
        project.oj("job", "cancel", job_id)
        alive = [p for p in pids_in(stubborn) if running(p)]
        assert alive == [], f"{len(alive)} processes of the cancelled job still run"
        assert project.json("job", "show", job_id)["status"] == "cancelled"
    finally:
        kill_all(pids_in(stubborn))
