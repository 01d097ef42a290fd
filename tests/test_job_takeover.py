"""Who runs a job: one process at a time, whoever resumes it and however often."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import OJ, OJD, Project, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    command "slow" {
      args = ""
      run  = { pipeline = "slow" }
    }

    pipeline "slow" {
      step "one" {
        run = <<-SHELL
          echo "start $$" >> ${invoke.dir}/ran.txt
          until [ -e ${invoke.dir}/go ]; do sleep 0.05; done
          echo "end $$" >> ${invoke.dir}/ran.txt
        SHELL
      }
    }

    command "signals" {
      args = ""
      run  = { pipeline = "signals" }
    }

    pipeline "signals" {
      step "show" {
        run = "grep SigIgn /proc/self/status"
      }
    }

    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source      = { queue = "q" }
      handler     = { pipeline = "flaky" }
      concurrency = 1
      poll        = "1h"
    }

    pipeline "flaky" {
      vars = ["item"]
      step "work" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> ${invoke.dir}/ran.txt
          sleep 0.3
          echo "end ${var.item.n}" >> ${invoke.dir}/ran.txt
          [ -e ${invoke.dir}/fixed ]
        SHELL
      }
    }
    """


def ran(project: Project) -> list[str]:
    path = project.root / "ran.txt"
    return path.read_text().splitlines() if path.exists() else []


def kill_and_reap(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)
    stat = Path(f"/proc/{pid}/stat")
    wait_until(lambda: not stat.exists() or
               stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z", "the process to die")


def test_two_resumes_at_once_start_one_runner_and_the_step_runs_once(project: Project):
    project.write("rb.hcl", RUNBOOK)
    job_id = project.oj("run", "--detach", "slow").stdout.strip()
    wait_until(lambda: len(ran(project)) == 1, "the step to start")
    kill_and_reap(project.json("job", "show", job_id)["process"]["pid"])
    resumes = [subprocess.Popen([OJ, "job", "resume", "--detach", job_id], cwd=project.root,
                                env=project.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=30), p.stderr.read()) for p in resumes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results  # one started a runner, the other was told
    refused = [err for code, err in results if code == 1][0]
    # the loser is told either way, in one line: whichever check it reached first
    assert re.fullmatch(rf"oj: job {job_id} (was resumed meanwhile|is still running) "
                        r"\(process \d+\)\n", refused), refused
    (project.root / "go").touch()
    assert project.oj("job", "wait", "--timeout", "20s", job_id).returncode == 0
    lines = ran(project)
    assert len(lines) == 2 and lines[0].startswith("start") and lines[1].startswith("end")


def test_steps_start_with_the_default_sigint_and_sighup(project: Project):
    project.write("rb.hcl", RUNBOOK)
    out = project.oj("run", "signals").stdout
    [line] = [ln for ln in out.splitlines() if ln.startswith("SigIgn:")]
    ignored = int(line.split()[1], 16)
    assert ignored & (1 << (signal.SIGINT - 1)) == 0 and \
        ignored & (1 << (signal.SIGHUP - 1)) == 0, line


def test_resumed_jobs_of_a_worker_take_turns_within_its_concurrency(project: Project):
    project.write("rb.hcl", RUNBOOK)
    for n in range(3):
        project.oj("queue", "push", "q", json.dumps({"n": str(n)}))
    first = project.ojd("worker", "w", "--foreground", "--until-idle")
    first.communicate(timeout=60)
    failed = [i["job"] for i in project.items()]  # each dead item's last job
    assert [i["status"] for i in project.items()] == ["dead"] * 3
    (project.root / "ran.txt").unlink()
    (project.root / "fixed").touch()
    worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=project.root,
                              env=project.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # started (after the first, --until-idle one): each resume below wakes it
        wait_until(lambda: len(project.events("worker:started")) == 2, "the worker to start")
        for job_id in failed:
            project.oj("job", "resume", job_id)
        wait_until(lambda: ran(project).count("end 0") + ran(project).count("end 1")
                   + ran(project).count("end 2") == 3, "the three jobs to run", timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=10)
    running = peak = 0
    for line in ran(project):  # concurrency 1: never two at once
        running += 1 if line.startswith("start") else -1
        peak = max(peak, running)
    assert peak == 1, ran(project)
