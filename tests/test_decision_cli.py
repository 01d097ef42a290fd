"""`oj decision list|show|resolve|review`, and decisions in `oj status` and `oj job list`:
the CLI over decisions recorded as a waiting agent step records them."""

from __future__ import annotations

import json

import pytest
from conftest import Project

from ojd import decisions
from ojd.events import agent_started, job_created, job_step_started
from ojd.store import Store

pytestmark = pytest.mark.both_stores

RUNBOOK = """
pipeline "fix" {
  step "work" { run = "true" }
}
"""


def wait_on(p: Project, job: str, decision: str, source: str = "idle") -> None:
    """Job ``job`` at an agent step, waiting on ``decision``; no process: its runner is
    gone, as after a reboot."""
    store = Store(str(p.state), url=p.url or "")
    with store.transaction() as tx:
        tx.append(job_created(id=job, project=str(p.root), pipeline="fix", name=f"fix {job}",
                              vars={}, cwd=str(p.root), workspace=None, invoke=str(p.root),
                              item=None, worker=None, by=None),
                  job_step_started(id=job, step="work"),
                  agent_started(id=job, step="work", visit=1, agent="coder",
                                socket="/nowhere", session="s", start=0))
        tx.append(*decisions.waiting_events(
            id=decision, job=job, project=str(p.root), source=source, step="work",
            agent="coder", reason=f"agent 'coder' is {source}",
            screen="$ make test\nFAILED tests/test_x.py::test_y\n"))


@pytest.fixture
def p(project: Project) -> Project:
    project.write("fix.hcl", RUNBOOK)
    return project


def test_list_and_show_give_the_context_and_numbered_options(p: Project):
    wait_on(p, "aaaa0001", "dd000001")
    out = p.oj("decision", "list").stdout
    assert "dd000001" in out and "aaaa0001" in out and "idle" in out
    shown = p.oj("decision", "show", "dd00").stdout
    assert "FAILED tests/test_x.py::test_y" in shown
    assert "1. Nudge it" in shown and "2. Mark the step done" in shown
    assert "3. Cancel the job" in shown
    (row,) = p.json("decision", "list")
    assert (row["id"], row["status"], row["source"]) == ("dd000001", "open", "idle")


def test_status_and_job_list_show_the_open_decision(p: Project):
    wait_on(p, "aaaa0001", "dd000001")
    status = p.oj("status").stdout
    assert "1 open decision (oj decision review)" in status
    assert "Decisions" in status and "dd000001" in status
    listing = p.oj("job", "list").stdout
    assert "waiting: decision dd000001" in listing
    (job,) = p.json("job", "list")
    assert job["decision"] == "dd000001"


def test_resolve_records_who_and_a_second_resolve_is_refused_in_one_line(p: Project):
    wait_on(p, "aaaa0001", "dd000001")
    out = p.oj("decision", "resolve", "dd000001", "1", "-m", "try again").stdout
    assert out.startswith("decision dd000001 resolved: job aaaa0001 runs on, the message "
                          "goes to its agent; its runner is gone: oj job resume aaaa0001")
    shown = p.json("decision", "show", "dd000001")
    assert (shown["status"], shown["option"], shown["message"]) == \
        ("resolved", 1, "try again")
    assert shown["by"] == "root" and shown["host"]
    again = p.oj("decision", "resolve", "dd000001", "2", check=False)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "was already resolved by root@" in again.stderr
    assert p.json("job", "show", "aaaa0001")["status"] == "running"
    assert p.json("decision", "list") == []
    assert [d["id"] for d in p.json("decision", "list", "--all")] == ["dd000001"]


def test_resolve_with_cancel_cancels_the_job(p: Project):
    wait_on(p, "aaaa0001", "dd000001", source="dead")
    out = p.oj("decision", "resolve", "dd000001", "3").stdout
    assert out.strip() == "decision dd000001 resolved: job aaaa0001 cancelled"
    assert p.json("job", "show", "aaaa0001")["status"] == "cancelled"


def test_a_bad_choice_is_one_line_and_changes_nothing(p: Project):
    wait_on(p, "aaaa0001", "dd000001", source="escalation")
    proc = p.oj("decision", "resolve", "dd000001", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("oj: decision dd000001: option 1 (Resume with a message (-m)) "
                           "needs a message: oj decision resolve dd000001 1 -m ...\n")
    missing = p.oj("decision", "resolve", "nope", "1", check=False)
    assert (missing.returncode, missing.stderr) == \
        (1, "oj: no decision with id 'nope'; see 'oj decision list'\n")
    assert p.json("decision", "show", "dd000001")["status"] == "open"


def test_review_walks_the_open_decisions_with_answers_piped_in(p: Project):
    wait_on(p, "aaaa0001", "dd000001")
    wait_on(p, "aaaa0002", "dd000002", source="gate")
    wait_on(p, "aaaa0003", "dd000003", source="dead")
    # first: a bad answer, then option 1 with a message; second: skipped; third: option 3
    proc = p.oj("decision", "review", input="x\n1\nplease finish\ns\n3\n\n")
    out = proc.stdout
    assert "[1/3] decision dd000001 (idle)" in out
    assert "x: give a number, s or q" in out
    assert "decision dd000001 resolved: job aaaa0001 runs on" in out
    assert "[3/3] decision dd000003 (dead)" in out
    assert "decision dd000003 resolved: job aaaa0003 cancelled" in out
    assert out.rstrip().endswith("reviewed: 2 resolved, 1 skipped")
    assert [d["id"] for d in p.json("decision", "list")] == ["dd000002"]
    d1 = p.json("decision", "show", "dd000001")
    assert (d1["option"], d1["message"]) == (1, "please finish")
    # q stops at once
    quit_ = p.oj("decision", "review", input="q\n").stdout
    assert quit_.rstrip().endswith("reviewed: 0 resolved, 0 skipped")
    assert json.loads(p.oj("decision", "list", "-o", "json").stdout)[0]["status"] == "open"
