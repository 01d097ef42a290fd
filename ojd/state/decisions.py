"""The decisions' part of the fold: ``decision:*`` events (pure, like all of ``ojd.state``).

A decision is ``open`` until it is resolved, or ``closed`` when its job stops waiting on it
otherwise (cancelled, answered without it). Resolving it sets its job running again with
what the job's runner does next (``pending_action``, ``pending_answer``); a cancel comes
with the job's own ``job:finished`` in the same append.
"""

from __future__ import annotations

from ojd.decisions import CANCEL, choose
from ojd.errors import OjError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.events import Event

# decisions no longer open that the state keeps (the newest), as the history of who chose
KEEP_CLOSED_DECISIONS = 500


class DecisionFold:
    """``State``'s decisions: a mixin, its slots are ``State``'s."""

    __slots__ = ()
    jobs: dict[str, dict]
    decisions: dict[str, dict]

    def _decision_created(self, ev: Event) -> None:
        self.decisions[ev["id"]] = {
            "id": ev["id"], "job": ev["job"], "project": ev.get("p"),
            "source": ev["source"], "step": ev.get("step"), "agent": ev.get("agent"),
            "reason": ev.get("reason") or "", "screen": ev.get("screen") or [],
            "options": ev.get("options") or [], "status": "open",
            "created_at": ev["ts"], "resolved_at": None, "option": None, "message": None,
            "by": None, "host": None,
        }
        job = self.jobs.get(ev["job"])
        if job is not None:
            job["decision"] = ev["id"]

    def _decision_resolved(self, ev: Event) -> None:
        d = self.decisions.get(ev["id"])
        if d is None or d["status"] != "open":
            return  # a second resolve is refused before it is written; a late one is moot
        d.update(status="resolved", resolved_at=ev["ts"], option=ev.get("option"),
                 message=ev.get("message"), by=ev.get("by"), host=ev.get("host"))
        job = self.jobs.get(d["job"])
        if job is None or job.get("decision") != d["id"]:
            self._trim_decisions()
            return
        job["decision"] = None
        try:
            action, text = choose(d, ev.get("option"), ev.get("message"))
        except OjError:  # checked when it was written; an odd record changes no job
            action, text = None, ""
        if action not in (None, CANCEL) and job["status"] == "waiting":
            job.update(status="running", waiting_reason=None, pending_answer=text,
                       pending_action=action, updated_at=ev["ts"])
        self._trim_decisions()

    def _close_decision_of(self, job: dict, ts: float) -> None:
        """The job stopped waiting without its decision (it ended, or was answered by an
        older path): the decision is moot."""
        d = self.decisions.get(job.get("decision") or "")
        job["decision"] = None
        if d is not None and d["status"] == "open":
            d.update(status="closed", resolved_at=ts)
            self._trim_decisions()

    def _trim_decisions(self) -> None:
        closed = [d for d in self.decisions.values() if d["status"] != "open"]
        if len(closed) > KEEP_CLOSED_DECISIONS + 100:  # trimmed in batches, not per event
            closed.sort(key=lambda d: d["resolved_at"] or d["created_at"])
            for d in closed[: len(closed) - KEEP_CLOSED_DECISIONS]:
                del self.decisions[d["id"]]

    def open_decisions(self, project: str | None = None) -> list[dict]:
        """Open decisions, oldest first (of ``project`` only, when given)."""
        found = [d for d in self.decisions.values() if d["status"] == "open"
                 and (project is None or d["project"] == project)]
        return sorted(found, key=lambda d: d["created_at"])
