"""on_cancel: `oj job cancel` runs the cleanup step of the step the job was in (else of
its job) before it returns, bounded in time, its outcome in the job's history."""

from __future__ import annotations

from conftest import Project, wait_until

RUNBOOK = """
command "slow" {
  args = "<tag>"
  run  = { job = "slow" }
}

job "slow" {
  vars      = ["tag"]
  on_cancel = { step = "cleanup" }

  step "work" {
    run     = "touch started-${var.tag}; sleep 60"
    on_done = { step = "cleanup" }
  }

  step "other" {
    run = "true"
  }

  step "cleanup" {
    run = "echo cleaning ${var.tag}; touch cleaned-${var.tag}"
  }

  step "stuck" {
    run     = "sleep 60"
    timeout = "1s"
  }
}
"""


def start(project: Project, tag: str) -> dict:
    project.oj("run", "--detach", "slow", tag)
    wait_until(lambda: (project.root / f"started-{tag}").exists(), "the step to start")
    [job] = [j for j in project.json("job", "list") if j["vars"]["tag"] == tag]
    return job


def test_cancel_runs_the_jobs_cleanup_step_and_records_it(project: Project):
    project.write("slow.hcl", RUNBOOK)
    job = start(project, "a")
    project.oj("job", "cancel", job["id"])
    assert (project.root / "cleaned-a").exists()  # done before `oj job cancel` returned
    shown = project.json("job", "show", job["id"])
    assert shown["status"] == "cancelled"
    assert [(h["step"], h["exit"]) for h in shown["history"]] == [("work", None),
                                                                  ("cleanup", 0)]
    log = project.oj("job", "logs", job["id"]).stdout
    assert "==> cleanup step cleanup\ncleaning a\n==> cleanup step cleanup: ok" in log


def test_a_steps_own_on_cancel_comes_before_the_jobs(project: Project):
    text = RUNBOOK.replace('    on_done = { step = "cleanup" }\n',
                           '    on_done   = { step = "cleanup" }\n'
                           '    on_cancel = { step = "other" }\n')
    project.write("slow.hcl", text)
    job = start(project, "b")
    project.oj("job", "cancel", job["id"])
    assert not (project.root / "cleaned-b").exists()
    history = project.json("job", "show", job["id"])["history"]
    assert [(h["step"], h["exit"]) for h in history] == [("work", None), ("other", 0)]


def test_a_cleanup_step_past_its_timeout_is_stopped_and_says_so(project: Project):
    project.write("slow.hcl", RUNBOOK.replace('on_cancel = { step = "cleanup" }',
                                              'on_cancel = { step = "stuck" }'))
    job = start(project, "c")
    project.oj("job", "cancel", job["id"])
    history = project.json("job", "show", job["id"])["history"]
    assert [(h["step"], h["exit"]) for h in history] == [("work", None), ("stuck", 124)]
    assert "oj: cleanup step stuck ran past 1s; stopped" in \
        project.oj("job", "logs", job["id"]).stdout


def test_a_job_without_on_cancel_is_cancelled_as_before(project: Project):
    project.write("slow.hcl", RUNBOOK.replace('  on_cancel = { step = "cleanup" }\n', ""))
    job = start(project, "d")
    project.oj("job", "cancel", job["id"])
    history = project.json("job", "show", job["id"])["history"]
    assert [h["step"] for h in history] == ["work"]


def test_on_cancel_naming_a_missing_step_is_an_error_at_its_line(project: Project):
    project.write("slow.hcl", RUNBOOK.replace('on_cancel = { step = "cleanup" }',
                                              'on_cancel = { step = "cleanpu" }'))
    out = project.oj("runbook", "check", check=False)
    assert out.returncode != 0
    assert "slow.hcl:9: job 'slow' on_cancel step 'cleanpu' is not defined; did you mean " \
           "'cleanup'?" in out.stdout + out.stderr


WORKER = """
queue "q" {
  vars = ["n"]
}

worker "w" {
  source = { queue = "q" }
  run    = { job = "slow" }
  poll   = "1h"
}

job "slow" {
  vars      = ["item"]
  on_cancel = { step = "cleanup" }

  step "work" { run = "touch ${invoke.dir}/started; sleep 60" }

  step "cleanup" { run = "touch ${invoke.dir}/cleaned-${var.item.n}" }
}
"""


def test_worker_stop_cancel_runs_the_cleanup_step_of_each_job(project: Project, tmp_path):
    import json

    from test_foreground import Foreground, without_systemd

    project.write("w.hcl", WORKER)
    worker = Foreground(project, "w")
    worker.wait_for("ready: queue 'q'")
    project.oj("queue", "push", "q", json.dumps({"n": "7"}))
    wait_until(lambda: (project.root / "started").exists(), "the job to start")
    proc = without_systemd(project, tmp_path, "worker", "stop", "w", "--cancel")
    assert proc.returncode == 0, proc.stderr
    assert worker.wait(timeout=10) == 0
    assert (project.root / "cleaned-7").exists()
    [job] = project.json("job", "list")
    assert [(h["step"], h["exit"]) for h in job["history"]] == [("work", None), ("cleanup", 0)]
    assert [i["status"] for i in project.items("q")] == ["pending"]
