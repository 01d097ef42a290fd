"""An `oj run` job killed mid-step resumes from that step with `oj job resume`."""

from __future__ import annotations

import signal
import subprocess
import time

from conftest import OJ, Project

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
          if [ ! -e ${invoke.dir}/go ]; then sleep 600; fi
          echo finished >> ${invoke.dir}/ran.txt
        SHELL
      }
    }
    """


def test_killed_run_resumes_from_the_interrupted_step(project: Project):
    project.write("slow.hcl", RUNBOOK)
    proc = subprocess.Popen([OJ, "run", "slow"], cwd=project.root, env=project.env(),
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ran = project.root / "ran.txt"
    deadline = time.monotonic() + 20
    while "second" not in (ran.read_text() if ran.exists() else ""):
        assert time.monotonic() < deadline, "the second step never started"
        time.sleep(0.05)
    subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])  # oj and its step, no clean-up
    proc.wait()
    [job] = project.json("job", "list")
    assert (job["status"], job["step"]) == ("running", "second")
    (project.root / "go").touch()
    project.oj("job", "resume", job["id"][:5])
    assert ran.read_text().splitlines() == ["first", "second", "second", "finished"]
    assert project.json("job", "show", job["id"])["status"] == "done"


def test_resume_refuses_finished_jobs_and_live_ones(project: Project):
    project.write("slow.hcl", RUNBOOK)
    (project.root / "go").touch()
    project.oj("run", "slow")
    [job] = project.json("job", "list")
    proc = project.oj("job", "resume", job["id"], check=False)
    assert proc.returncode == 1 and "is done; only an interrupted job can resume" in proc.stderr
    (project.root / "go").unlink()
    live = subprocess.Popen([OJ, "run", "slow"], cwd=project.root, env=project.env(),
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while len(project.json("job", "list")) < 2 or \
                project.json("job", "list")[1]["step"] != "second":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = project.json("job", "list")[1]
        proc = project.oj("job", "resume", second["id"], check=False)
        assert proc.returncode == 1 and "is still running" in proc.stderr
    finally:
        live.send_signal(signal.SIGINT)
        live.wait(timeout=20)
