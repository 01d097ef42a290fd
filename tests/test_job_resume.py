"""`oj run` jobs outlive `oj run`; a job whose runner died resumes without rerunning its step."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import OJ, Project, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    command "slow" {
      args = ""
      run  = { pipeline = "slow" }
    }

    pipeline "slow" {
      step "first" {
        run     = "echo first >> ${invoke.dir}/ran.txt"
        on_done = { step = "second" }
      }
      step "second" {
        run = <<-SHELL
          echo second >> ${invoke.dir}/ran.txt
          while [ ! -e ${invoke.dir}/go ]; do sleep 0.05; done
          echo finished >> ${invoke.dir}/ran.txt
        SHELL
      }
    }
    """


def wait_for_line(path, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never came"
        time.sleep(0.05)


def test_a_killed_oj_run_leaves_its_job_running_to_its_end(project: Project):
    project.write("slow.hcl", RUNBOOK)
    proc = subprocess.Popen([OJ, "run", "slow"], cwd=project.root, env=project.env(),
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ran = project.root / "ran.txt"
    wait_for_line(ran, "second")
    subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])  # oj and its session
    proc.wait()
    [job] = project.json("job", "list")
    assert (job["status"], job["step"]) == ("running", "second")
    (project.root / "go").touch()
    wait_for_line(ran, "finished")
    deadline = time.monotonic() + 30
    while project.json("job", "show", job["id"])["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ran.read_text().splitlines() == ["first", "second", "finished"]


def test_a_resumed_job_waits_for_the_step_its_killed_runner_left_and_never_reruns_it(
        project: Project):
    project.write("slow.hcl", RUNBOOK)
    job_id = project.oj("run", "--detach", "slow").stdout.strip()
    ran = project.root / "ran.txt"
    wait_for_line(ran, "second")
    job = project.json("job", "show", job_id)
    os.kill(job["process"]["pid"], signal.SIGKILL)  # the job's runner, not its step
    stat = Path(f"/proc/{job['process']['pid']}/stat")
    deadline = time.monotonic() + 30
    while stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    resume = subprocess.Popen([OJ, "job", "resume", job_id], cwd=project.root,
                              env=project.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        # the resumed runner has looked at the step and chosen to wait for it
        wait_until(lambda: "second still running (process" in project.oj(
            "job", "logs", job_id).stdout, "the resumed runner to find its step", timeout=60)
        assert ran.read_text().splitlines() == ["first", "second"]  # not started again
    finally:
        (project.root / "go").touch()
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    assert ran.read_text().splitlines() == ["first", "second", "finished"]
    assert "still running" in out and f"job {job_id} done" in err


def test_resume_refuses_finished_jobs_and_live_ones(project: Project):
    project.write("slow.hcl", RUNBOOK)
    (project.root / "go").touch()
    project.oj("run", "slow")
    [job] = project.json("job", "list")
    proc = project.oj("job", "resume", job["id"], check=False)
    assert proc.returncode == 1 and "is done; nothing to resume" in proc.stderr
    (project.root / "go").unlink()
    second = project.oj("run", "--detach", "slow").stdout.strip()
    wait_for_line(project.root / "ran.txt", "second")
    proc = project.oj("job", "resume", second, check=False)
    assert proc.returncode == 1 and "is still running" in proc.stderr
    project.oj("job", "cancel", second)
    assert project.json("job", "show", second)["status"] == "cancelled"
