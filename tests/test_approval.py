"""An approval step (`approve = "..."`): the job waits on an `approval` decision; option 1
goes on to on_done, option 2 routes on_fail with the message in the job log; under `oj run`
and under a foreground worker, whose restart waits on the same decision."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import OJ, Project, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = """
command "deploy" {
  args = "<branch>"
  run  = { pipeline = "deploy" }
}

queue "deploys" {
  vars = ["branch"]
}

worker "deployer" {
  source  = { queue = "deploys" }
  handler = { pipeline = "queued" }
}

pipeline "queued" {
  vars = ["item"]

  step "ship" {
    approve = "Deploy ${var.item.branch}?"
    on_done = { step = "release" }
  }

  step "release" {
    run = "echo released ${var.item.branch} >> ${invoke.dir}/out.txt"
  }
}

pipeline "deploy" {
  vars = ["branch"]
  notify {
    exec = "cat >> HOOK; echo >> HOOK"
  }

  step "build" {
    run     = "echo built >> ${invoke.dir}/out.txt"
    on_done = { step = "ship" }
  }

  step "ship" {
    approve = "Deploy ${var.branch} to production?"
    on_done = { step = "release" }
    on_fail = { step = "rollback" }
  }

  step "release" {
    run = "echo released ${var.branch} >> ${invoke.dir}/out.txt"
  }

  step "rollback" {
    run = "echo rolled back >> ${invoke.dir}/out.txt"
  }
}
"""


@pytest.fixture
def p(project: Project) -> Project:
    project.write("deploy.hcl", RUNBOOK.replace("HOOK", str(project.root / "hook.jsonl")))
    return project


def out(p: Project) -> list[str]:
    path = p.root / "out.txt"
    return path.read_text().splitlines() if path.exists() else []


def open_decision(p: Project) -> dict:
    found: list[dict] = []

    def one_open() -> bool:
        found[:] = p.json("decision", "list")  # type: ignore[assignment]
        return len(found) == 1
    wait_until(one_open, "an open approval decision")
    return found[0]


def start_run(p: Project, branch: str) -> subprocess.Popen[str]:
    return subprocess.Popen([OJ, "run", "deploy", branch], cwd=p.root, env=p.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_approving_under_oj_run_goes_on_to_on_done_and_a_second_resolve_is_refused(p):
    run = start_run(p, "v1.2")
    try:
        d = open_decision(p)
        assert (d["source"], d["step"], d["agent"]) == ("approval", "ship", None)
        assert d["reason"] == "Deploy v1.2 to production?"
        shown = p.oj("decision", "show", d["id"]).stdout
        assert "1. Approve" in shown and "2. Reject" in shown
        (job,) = p.json("job", "list")
        assert (job["status"], job["decision"]) == ("waiting", d["id"])
        assert out(p) == ["built"]  # nothing past the approval yet
        hook = p.root / "hook.jsonl"
        wait_until(hook.exists, "the decision at the runbook's exec hook")
        sent = [json.loads(line) for line in hook.read_text().splitlines()]
        assert [(e["kind"], e["decision"]["id"], e["decision"]["source"]) for e in sent] \
            == [("decision", d["id"], "approval")]
        said = p.oj("decision", "resolve", d["id"], "1").stdout
        assert said.startswith(f"decision {d['id']} resolved: job {job['id']} runs on, "
                               "approved")
        assert run.wait(timeout=30) == 0, run.stderr.read()  # type: ignore[union-attr]
    finally:
        run.kill()
    assert out(p) == ["built", "released v1.2"]
    again = p.oj("decision", "resolve", d["id"], "2", check=False)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "already resolved by" in again.stderr
    (event,) = p.events("decision:resolved")
    assert (event["id"], event["option"]) == (d["id"], 1)


def test_rejecting_routes_on_fail_with_who_and_why_in_the_job_log(p):
    run = start_run(p, "v2")
    try:
        d = open_decision(p)
        said = p.oj("decision", "resolve", d["id"], "2", "-m", "not on a Friday").stdout
        assert "runs on, its step fails (rejected)" in said
        run.wait(timeout=30)
    finally:
        run.kill()
    assert out(p) == ["built", "rolled back"]
    (job,) = p.json("job", "list")
    log = p.oj("job", "logs", job["id"]).stdout
    assert "rejected by root@" in log and ": not on a Friday" in log


def test_a_message_alone_does_not_resolve_an_approval(p):
    run = start_run(p, "v3")
    try:
        d = open_decision(p)
        bad = p.oj("decision", "resolve", d["id"], "-m", "ship it", check=False)
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1
        assert "choose an option" in bad.stderr
        (job,) = p.json("job", "list")
        resumed = p.oj("job", "resume", job["id"], "-m", "ship it", check=False)
        assert resumed.returncode == 1 and "choose an option" in resumed.stderr
        assert p.json("decision", "show", d["id"])["status"] == "open"  # type: ignore[index]
        p.oj("job", "cancel", job["id"])
        assert run.wait(timeout=30) != 0
    finally:
        run.kill()
    assert out(p) == ["built"]
    assert p.json("decision", "show", d["id"])["status"] == "closed"  # type: ignore[index]


def test_a_worker_restarted_while_the_job_waits_waits_on_the_same_decision(p):
    worker = p.ojd("worker", "deployer", "--foreground")
    try:
        p.oj("queue", "push", "deploys", "--var", "branch=main")
        d = open_decision(p)
        assert d["reason"] == "Deploy main?"
        worker.kill()
        worker.wait()
        # the job process outlives its worker; end it too, as a reboot would
        (job,) = p.json("job", "list")
        pid = (job.get("process") or {}).get("pid")
        assert pid, job
        subprocess.run(["kill", "-9", str(pid)], check=False)
        worker = p.ojd("worker", "deployer", "--foreground")
        wait_until(lambda: "recorded before: waiting on it" in
                   p.oj("job", "logs", job["id"]).stdout, "the restarted job waiting again")
        assert [x["id"] for x in p.json("decision", "list")] == [d["id"]]  # type: ignore[union-attr]
        p.oj("decision", "resolve", d["id"][:4], "1")
        wait_until(lambda: out(p) == ["released main"], "the release after "
                   f"approval: {out(p)}, {p.oj('job', 'logs', job['id']).stdout}")
    finally:
        worker.kill()
        worker.wait()
    assert json.loads(p.oj("job", "list", "-o", "json").stdout)[0]["status"] == "done"


def test_runbook_check_names_a_bad_approval_step_at_its_line(p):
    p.write("bad.hcl", """
        pipeline "bad" {
          vars = ["branch"]
          step "ship" {
            approve = "Deploy ${var.brnach}?"
          }
          step "both" {
            run     = "true"
            approve = "Really?"
          }
          step "neither" {
            on_done = { step = "ship" }
          }
        }
        """)
    proc = p.oj("runbook", "check", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    text = proc.stdout + proc.stderr
    assert "bad.hcl:5:" in text and "${var.brnach}" in text and "'branch'" in text
    assert "bad.hcl:8:" in text and "has both 'run' and 'approve'" in text
    assert "bad.hcl:11:" in text and "needs 'run' (a script or an agent) or 'approve'" in text
