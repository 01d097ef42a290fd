"""Resolving a decision: decided in one transaction, so of two resolves (two hosts at once)
one is recorded and the other refused; then what it does outside the log (a cancel stops the
job's processes). The rest is the job's runner's: it reads the resolution from the state
and types the message, ends the step or starts the agent again (``ojd.agents.step``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ojd.decisions import CANCEL, choose, who_resolved
from ojd.errors import OjError, quoted
from ojd.events import decision_resolved
from ojd.identity import host_name, user_name
from ojd.runners.control import cancel_events, stop
from ojd.store import Store


@dataclass(frozen=True)
class Resolved:
    decision: dict  # as it was before the resolve
    job: dict
    action: str
    text: str


def find_decision(state, prefix: str) -> dict:
    matches = state.find(state.decisions, prefix)
    if not matches:
        raise OjError(f"no decision with id {quoted(prefix)}; see 'oj decision list'")
    if len(matches) > 1:
        raise OjError(f"decision id {quoted(prefix)} is ambiguous; give more characters")
    return matches[0]


def refusal(d: dict) -> str:
    """Why a decision that is not open cannot be resolved, in one line."""
    if d["status"] == "resolved":
        chose = f"option {d['option']}" if d.get("option") else "a message"
        return (f"decision {d['id']} was already resolved by {who_resolved(d)} ({chose}); "
                "nothing to do")
    return f"decision {d['id']} is closed: job {d['job']} no longer waits on it"


def resolve(store: Store, decision_id: str, number: int | None, message: str | None,
            *, by: str | None = None, host: str | None = None) -> Resolved:
    """Record option ``number`` (or the ``message`` alone) for an open decision, and act:
    a cancel ends the job in the same append and stops it; anything else makes the job
    run on, its runner doing the rest."""
    with store.transaction() as tx:
        d = find_decision(tx.state, decision_id)
        if d["status"] != "open":
            raise OjError(refusal(d))
        job = tx.state.jobs.get(d["job"])
        if job is None or job.get("decision") != d["id"]:
            raise OjError(f"decision {d['id']}: job {d['job']} no longer waits on it")
        action, text = choose(d, number, message)
        events = [decision_resolved(id=d["id"], option=number, message=message,
                                    by=by or user_name(), host=host or host_name())]
        if action == CANCEL:
            why = f"cancelled by decision {d['id']}" + (f": {message}" if message else "")
            events += cancel_events(store, tx.state, job, why)
        tx.append(*events)
    if action == CANCEL:
        stop(job)
    return Resolved(d, job, action, text)
