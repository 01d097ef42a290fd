"""An approval step: the job waits for a person to approve or reject before it goes on.

The step runs nothing. It records an ``approval`` decision (options approve / reject) in
the same append as the job's wait, then waits in the job process until the decision is
resolved (``oj decision resolve``, the dashboard) or the job is cancelled. Approve ends the
step as done (``on_done`` routes); reject fails it (``on_fail`` routes) with who rejected
and their message in the job log. A runner that takes the job over (a worker restart, a
resume) waits on the decision already recorded, or acts on one resolved meanwhile.
"""

from __future__ import annotations

import os
from typing import Any

from ojd import decisions
from ojd.notify import one_line
from ojd.runbook.model import Pipeline
from ojd.runbook.template import TemplateError, render_text
from ojd.state import LIVE_JOB_STATES

ANSWER_POLL = 0.5  # seconds between looks at the state while the job waits
REJECTED_EXIT = 1  # a rejected approval's exit status, for routing and the job's error

Outcome = tuple[int | None, str | None]  # (exit status, why); None: stopped from outside


def run_approval_step(runner, job: dict, pipeline: Pipeline, step: str, ctx: dict[str, Any],
                      log) -> Outcome:
    """Ask (or go on waiting), then the step's outcome: 0 approved, REJECTED_EXIT rejected,
    (None, None) when the runner stops or the job ends meanwhile (it stays resumable)."""
    job_id = job["id"]
    made = _decision_of(runner.store.state, job_id, step)
    resumed = (job["step"] == step and job["step_status"] == "running" and made is not None
               and (made["status"] == "open" or job.get("pending_action") is not None))
    if resumed:
        log.write(f"==> approval {made['id']} recorded before: waiting on it\n".encode())
    else:
        try:
            question = render_text(pipeline.steps[step].approve or "", ctx,
                                   env=runner._env(job))
        except TemplateError as e:
            runner._started(job_id, step)
            why = one_line(str(e))
            log.write(f"{why}\n".encode())
            return 2, why
        runner._started(job_id, step)
        made = _ask(runner, job_id, job["project"], step, question, log)
    while True:
        now = runner.store.refresh().jobs.get(job_id)
        if now is None or now["status"] not in LIVE_JOB_STATES:
            return None, None  # cancelled: the cancel ended the job
        action = now.get("pending_action")
        if now["status"] == "running" and action in (decisions.DONE, decisions.REJECT):
            return _outcome(runner, job_id, made["id"], action, now.get("pending_answer"),
                            log)
        if now["status"] == "running" and now.get("pending_answer") is not None:
            # answered without an option (an older record): ask again, plainly
            log.write(b"==> an answer is not an approval: asking again\n")
            made = _ask(runner, job_id, job["project"], step, made["reason"], log)
            continue
        if runner.stopping.wait(ANSWER_POLL):
            return None, None


def _ask(runner, job_id: str, project: str, step: str, question: str, log) -> dict:
    """Record the decision and the job's wait in one append, say so, announce it."""
    events = decisions.waiting_events(id=os.urandom(4).hex(), job=job_id, project=project,
                                      source="approval", step=step, agent=None,
                                      reason=question)
    runner._durably(job_id, runner._record, job_id, *events)
    made = events[0]
    log.write(f"==> waiting for approval: {one_line(question)} (decision {made['id']}: "
              f"oj decision resolve {made['id']} 1 to approve, 2 [-m WHY] to reject)\n"
              .encode())
    runner.progress(job_id, "step", f"{step} waiting for approval (decision {made['id']})")
    runner.announce_decision(runner.store.state.jobs[job_id], made)
    return runner.store.state.decisions.get(made["id"]) or made


def _outcome(runner, job_id: str, decision_id: str, action: str, message: str | None,
             log) -> Outcome:
    d = runner.store.state.decisions.get(decision_id) or {}
    who = decisions.who_resolved(d) if d else "a person"
    if action == decisions.DONE:
        log.write(f"==> approved by {who} (decision {decision_id})\n".encode())
        return 0, None
    why = f"rejected by {who}" + (f": {one_line(message)}" if message else "")
    log.write(f"==> {why} (decision {decision_id})\n".encode())
    runner.progress(job_id, "step_failed", why)
    return REJECTED_EXIT, why


def _decision_of(state, job_id: str, step: str) -> dict | None:
    """The newest decision of the job at ``step``."""
    mine = [d for d in state.decisions.values() if d["job"] == job_id and d["step"] == step]
    return max(mine, key=lambda d: d["created_at"]) if mine else None
