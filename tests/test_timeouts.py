"""Time limits: a step's, an agent step's, a whole job's (or oj.conf's default for every job),
and an external queue's list and take commands. Past one, what runs is stopped and the step
fails as timed out; a step's timeout is routed by on_fail like any failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import OJD, Project, wait_until


def test_a_step_past_its_timeout_is_stopped_and_its_failure_routed_by_on_fail(
        project: Project):
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "slow" {
            run     = "echo $$ > ${invoke.dir}/slow.pid; sleep 600"
            timeout = "1s"
            on_fail = { step = "cleanup" }
          }
          step "cleanup" {
            run = "echo cleaned >> ${invoke.dir}/ran.txt"
          }
        }
        """)
    project.oj("run", "go")  # the failure was handled: the job is done
    [job] = project.json("job", "list")
    assert job["status"] == "done"
    assert [(h["step"], h["exit"]) for h in job["history"]] == [("slow", 124), ("cleanup", 0)]
    assert (project.root / "ran.txt").read_text() == "cleaned\n"
    slow = int((project.root / "slow.pid").read_text())
    assert not Path(f"/proc/{slow}").exists()
    log = project.oj("job", "logs", job["id"]).stdout
    assert "timeout: stopped after its timeout (1s)" in log


def test_a_job_past_its_timeout_fails_as_timed_out_without_running_on(project: Project):
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          timeout = "2s"
          step "first" {
            run     = "true"
            on_done = { step = "slow" }
          }
          step "slow" {
            run     = "sleep 600"
            on_fail = { step = "after" }
          }
          step "after" {
            run = "echo after >> ${invoke.dir}/ran.txt"
          }
        }
        """)
    proc = project.oj("run", "go", check=False)
    assert proc.returncode != 0
    [job] = project.json("job", "list")
    assert job["status"] == "failed"
    assert job["error"] == "timeout: it ran past the job's timeout (2s)"
    assert [(h["step"], h["exit"]) for h in job["history"]] == [("first", 0), ("slow", 124)]
    assert not (project.root / "ran.txt").exists()


def test_oj_conf_job_timeout_limits_every_job_without_a_timeout_of_its_own(
        project: Project):
    project.state.mkdir(parents=True, exist_ok=True)
    (project.state / "oj.conf").write_text("job_timeout = 1s\n")
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "slow" {
            run = "sleep 600"
          }
        }
        """)
    assert project.oj("run", "go", check=False).returncode != 0
    [job] = project.json("job", "list")
    assert job["error"] == "timeout: it ran past the job's timeout (1s)"


def test_a_bad_job_timeout_in_oj_conf_fails_the_job_naming_the_line(project: Project):
    project.state.mkdir(parents=True, exist_ok=True)
    (project.state / "oj.conf").write_text("# limits\njob_timeout = soon\n")
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "one" {
            run = "true"
          }
        }
        """)
    assert project.oj("run", "go", check=False).returncode != 0
    [job] = project.json("job", "list")
    assert f"{project.state / 'oj.conf'}:2: job_timeout: invalid duration" in job["error"]


def test_timeouts_that_are_not_durations_or_on_a_persisted_queue_are_refused(
        project: Project):
    project.write("t.hcl", r"""
        queue "q" {
          timeout = "5s"
        }
        pipeline "p" {
          step "one" {
            run     = "true"
            timeout = "soon"
          }
        }
        """)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode != 0
    assert "t.hcl:3: 'timeout' belongs to external queues" in proc.stderr + proc.stdout
    assert "t.hcl:8: step 'one' timeout: invalid duration 'soon'" in proc.stderr + proc.stdout


def test_an_external_list_command_past_its_timeout_is_stopped_and_polled_again(
        project: Project, tmp_path: Path):
    project.write("t.hcl", r"""
        queue "ext" {
          type    = "external"
          list    = "echo listed >> listed.txt; sleep 600"
          take    = "true"
          timeout = "1s"
        }
        worker "w" {
          source  = { queue = "ext" }
          handler = { pipeline = "p" }
          poll    = "200ms"
        }
        pipeline "p" {
          vars = ["item"]
          step "one" {
            run = "true"
          }
        }
        """)
    listed = project.root / "listed.txt"
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=project.root,
                                  env=project.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: listed.exists() and len(listed.read_text().splitlines()) >= 2,
                   "the list command to run again after its timeout", timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    text = (tmp_path / "worker.log").read_text()
    assert "queue 'ext' list command ran past its timeout (1s) and was stopped" in text
    assert worker.returncode == 0


def test_a_step_that_outlived_its_killed_runner_is_still_stopped_at_its_timeout(
        project: Project):
    """The resumed job waits for the step its killed process left, within the step's
    timeout counted from the step's start."""
    import os
    import signal

    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "slow" {
            run     = "echo $$ > ${invoke.dir}/slow.pid; sleep 600"
            timeout = "4s"
          }
        }
        """)
    job_id = project.oj("run", "--detach", "go").stdout.strip()
    pid_file = project.root / "slow.pid"
    wait_until(pid_file.exists, "the step to start")
    runner = project.json("job", "show", job_id)["process"]["pid"]
    os.kill(runner, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{runner}").exists()
               or Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
               "the job's process to die")
    assert project.oj("job", "resume", job_id, check=False, timeout=60).returncode != 0
    job = project.json("job", "show", job_id)
    assert job["status"] == "failed"
    assert [(h["step"], h["exit"]) for h in job["history"]] == [("slow", 124)]
    step = int(pid_file.read_text())
    assert not Path(f"/proc/{step}").exists()


def test_a_worker_told_to_stop_does_not_wait_out_a_hung_list_command(
        project: Project, tmp_path: Path):
    project.write("t.hcl", r"""
        queue "ext" {
          type = "external"
          list = "touch listing; sleep 600"
          take = "true"
        }
        worker "w" {
          source  = { queue = "ext" }
          handler = { pipeline = "p" }
        }
        pipeline "p" {
          vars = ["item"]
          step "one" {
            run = "true"
          }
        }
        """)
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=project.root,
                                  env=project.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until((project.root / "listing").exists, "the list command to run")
        worker.terminate()
        assert worker.wait(timeout=20) == 0  # not the list's 60 s timeout
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert "ran past its timeout" not in (tmp_path / "worker.log").read_text()
