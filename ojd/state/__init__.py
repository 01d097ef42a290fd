"""oj's state as a pure fold of its log's events: ``State.apply(event)``.

No I/O here. Events are plain dicts (the log stores them as JSON), each made by its
constructor in ``ojd/events.py``, which lists every type and its fields. Items, jobs and
workers are plain dicts too, so a snapshot is just ``State.to_dict()``.

The fold is in parts: queue items (``items.py``), jobs and their agents (``jobs.py``), and
here workers, crons and the state's own record of lost positions, with the table that maps
each event type to its handler.

Lost positions are not events: the store notes them (``note_lost``) when the log skips
positions that no snapshot covers, so that every later snapshot still names them.
"""

from __future__ import annotations

from collections import deque

from ojd import events
from ojd.events import Event
from ojd.state.decisions import DecisionFold
from ojd.state.items import KEEP_COMPLETED_PER_QUEUE, ItemFold
from ojd.state.jobs import KEEP_FINISHED_JOBS, JobFold
from ojd.state.limits import LimitFold, windows_from_dict, windows_to_dict
from ojd.state.stats import StatsFold
from ojd.state.statuses import FINISHED_JOB_STATES, LIVE_ITEM_STATES, LIVE_JOB_STATES

__all__ = ["FINISHED_JOB_STATES", "HANDLERS", "KEEP_COMPLETED_PER_QUEUE", "KEEP_FINISHED_JOBS",
           "LIVE_ITEM_STATES", "LIVE_JOB_STATES", "Event", "State", "concurrency_of"]


class State(ItemFold, JobFold, DecisionFold, StatsFold, LimitFold):
    """Everything oj knows, rebuilt from events. ``pos`` is the last applied log position."""

    __slots__ = ("pos", "items", "live_keys", "completed", "jobs", "finished_jobs", "workers",
                 "crons", "waiting", "_ready", "_cooling", "_delayed", "paused", "lost", "stats",
                 "take_windows", "decisions")

    def __init__(self) -> None:
        self.pos = 0
        self.items: dict[str, dict] = {}
        # (project, queue, key) -> id of the live item holding that data (push dedup)
        self.live_keys: dict[tuple[str, str, str], str] = {}
        self.completed: dict[tuple[str, str], deque[str]] = {}
        self.jobs: dict[str, dict] = {}
        self.finished_jobs: deque[str] = deque()
        self.workers: dict[str, dict] = {}
        self.crons: dict[str, dict] = {}
        # Derived indexes, so a take and a pending count do not scan every item:
        # (project, queue) -> ids of its pending and failed items
        self.waiting: dict[tuple[str, str], set[str]] = {}
        # heaps with lazy deletion: (-priority, seq, id) of pending items; (retry_at, seq,
        # id) of failed
        self._ready: dict[tuple[str, str], list[tuple]] = {}
        self._cooling: dict[tuple[str, str], list[tuple]] = {}
        # (due, seq, id) of pending items not yet due (a delayed push)
        self._delayed: dict[tuple[str, str], list[tuple]] = {}
        # (project, queue) of the paused queues (oj queue pause): none of their items is taken
        self.paused: set[tuple[str, str]] = set()
        # [first, last, acknowledged] of position ranges the fold never saw (see note_lost)
        self.lost: list[list] = []
        # running totals for oj metrics (ojd/state/stats.py), kept in snapshots
        self.stats: dict = {}
        # the last takes of each rate-limited queue or worker (ojd/state/limits.py)
        self.take_windows: dict[str, deque[float]] = {}
        # decisions a person makes or made for waiting jobs (ojd/state/decisions.py)
        self.decisions: dict[str, dict] = {}

    # -- the fold -----------------------------------------------------------------------

    def apply(self, event: Event, pos: int | None = None) -> None:
        if pos is not None:
            self.pos = pos
        kind = event.get("type", "")
        count = COUNTERS.get(kind)
        if count is not None:  # before the handler: it sees the item and job as they were
            count(self, event)
        handler = HANDLERS.get(kind)
        if handler is not None:  # unknown types come from newer versions: skip, keep going
            handler(self, event)
        track = LIMITS.get(kind)
        if track is not None:
            track(self, event)

    def _worker_recorded(self, ev: Event) -> None:
        w = self.workers.setdefault(ev["name"], {"name": ev["name"], "invocation": None,
                                                 "pid": None, "started_at": None,
                                                 "woken_at": None, "stopped_at": None})
        w.update(project=ev["p"], runbook=ev.get("runbook"), queue=ev.get("queue"),
                 pipeline=ev.get("pipeline"), concurrency=ev.get("concurrency", 1),
                 recorded_at=ev["ts"])

    def _worker_started(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            # a worker starts only with a valid runbook: no reload problem of a previous run
            w.update(invocation=ev.get("invocation"), pid=ev.get("pid"), started_at=ev["ts"],
                     host=ev.get("host"), runbook_problem=None)
            if ev.get("host"):  # a shared store: the same worker may run on several hosts
                w.setdefault("hosts", {})[ev["host"]] = {
                    "invocation": ev.get("invocation"), "pid": ev.get("pid"),
                    "started_at": ev["ts"], "stopped_at": None}

    def _worker_woken(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["woken_at"] = ev["ts"]

    def _worker_stopped(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["stopped_at"] = ev["ts"]
            w["runbook_problem"] = None  # what a stopped worker runs no more
            instance = w.get("hosts", {}).get(ev.get("host") or "")
            if instance is not None and instance["invocation"] == ev.get("invocation"):
                instance["stopped_at"] = ev["ts"]

    def _worker_resized(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["resized"] = ev.get("concurrency")

    def _worker_runbook(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["runbook_problem"] = ev.get("problem")

    def _worker_pruned(self, ev: Event) -> None:
        for name in ev.get("names", ()):
            self.workers.pop(name, None)

    def _worker_renamed(self, ev: Event) -> None:
        w = self.workers.pop(ev["name"], None)
        if w is not None and ev["to"] not in self.workers:
            w.update(name=ev["to"], was=ev["name"])
            self.workers[ev["to"]] = w

    def _cron_renamed(self, ev: Event) -> None:
        c = self.crons.pop(ev["name"], None)
        if c is not None and ev["to"] not in self.crons:
            c.update(name=ev["to"], was=ev["name"])
            self.crons[ev["to"]] = c

    def _cron_recorded(self, ev: Event) -> None:
        c = self.crons.setdefault(ev["name"], {"name": ev["name"], "last_tick": None,
                                               "last_job": None, "last_skipped": None,
                                               "ticks": 0, "skipped": 0})
        c.update(project=ev["p"], runbook=ev.get("runbook"), recorded_at=ev["ts"])

    def _cron_tick(self, ev: Event) -> None:
        c = self.crons.get(ev["name"])
        if c is not None:
            c.update(last_tick=ev["ts"], last_job=ev.get("job"), ticks=c["ticks"] + 1)

    def _cron_skipped(self, ev: Event) -> None:
        c = self.crons.get(ev["name"])
        if c is not None:
            c.update(last_skipped=ev["ts"], skipped=c["skipped"] + 1,
                     last_running=ev.get("running"))

    def _loss_acknowledged(self, ev: Event) -> None:
        for span in self.lost:
            if span[1] <= ev["upto"]:
                span[2] = True

    def note_lost(self, first: int, last: int) -> None:
        """Positions first..last are gone from the log and no snapshot holds them."""
        if self.lost and self.lost[-1][1] >= first:
            return  # already noted (a reload re-read the same gap)
        self.lost.append([first, last, False])

    def unacknowledged_loss(self) -> list[tuple[int, int]]:
        return [(first, last) for first, last, acked in self.lost if not acked]

    def _repaired(self, ev: Event) -> None:
        """A repair wrote snapshots; the event only marks it in the log (it gives the second
        of the two snapshots a position of its own), so the state does not change."""

    # -- queries (pure) -----------------------------------------------------------------

    def find(self, table: dict[str, dict], prefix: str) -> list[dict]:
        """Entries whose id starts with ``prefix`` (ids are short; prefixes are accepted)."""
        if not prefix:
            return []
        exact = table.get(prefix)
        if exact is not None:
            return [exact]
        return [v for k, v in table.items() if k.startswith(prefix)]

    # -- snapshots ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "pos": self.pos,
            "items": self.items,
            "completed": [[p, q, list(ids)] for (p, q), ids in self.completed.items()],
            "jobs": self.jobs,
            "finished_jobs": list(self.finished_jobs),
            "workers": self.workers,
            "crons": self.crons,
            "lost": self.lost,
            "stats": self.stats,
            "paused": sorted([p, q] for p, q in self.paused),
            "take_windows": windows_to_dict(self.take_windows),
            "decisions": self.decisions,
        }

    @classmethod
    def from_dict(cls, data: dict) -> State:
        state = cls()
        state.pos = data.get("pos", 0)
        state.items = data.get("items", {})
        state.completed = {(p, q): deque(ids) for p, q, ids in data.get("completed", [])}
        state.jobs = data.get("jobs", {})
        state.finished_jobs = deque(data.get("finished_jobs", []))
        state.workers = data.get("workers", {})
        state.crons = data.get("crons", {})
        state.lost = data.get("lost", [])
        state.paused = {(p, q) for p, q in data.get("paused", [])}
        state.stats = data.get("stats", {})  # none in a snapshot of an older oj: from zero
        state.take_windows = windows_from_dict(data.get("take_windows", []))
        state.decisions = data.get("decisions", {})
        for item in sorted(state.items.values(), key=lambda i: i["seq"]):
            state._index(item)
            if item["key"] and item["status"] in LIVE_ITEM_STATES:
                state.live_keys[(item["project"], item["queue"], item["key"])] = item["id"]
        return state


def concurrency_of(worker: dict) -> int:
    """How many jobs a recorded worker runs at once: its override (``oj worker resize``)
    when one is recorded, else its runbook's."""
    return worker.get("resized") or worker.get("concurrency") or 1


# each event type (``ojd.events``) and what folds it
HANDLERS = {
    events.QUEUE_PUSHED: State._queue_pushed,
    events.QUEUE_TAKEN: State._queue_taken,
    events.QUEUE_COMPLETED: State._queue_completed,
    events.QUEUE_FAILED: State._queue_failed,
    events.QUEUE_RELEASED: State._queue_released,
    events.QUEUE_LEASE_RENEWED: State._queue_lease_renewed,
    events.QUEUE_LEASE_EXPIRED: State._queue_lease_expired,
    events.QUEUE_DROPPED: State._queue_dropped,
    events.QUEUE_RETRIED: State._queue_retried,
    events.QUEUE_PRUNED: State._queue_pruned,
    events.QUEUE_PAUSED: State._queue_paused,
    events.QUEUE_RESUMED: State._queue_resumed,
    events.JOB_CREATED: State._job_created,
    events.JOB_STEP_STARTED: State._job_step_started,
    events.JOB_STEP_FINISHED: State._job_step_finished,
    events.JOB_LOCALS: State._job_locals,
    events.JOB_FINISHED: State._job_finished,
    events.JOB_RESUMED: State._job_resumed,
    events.JOB_PROCESS: State._job_process,
    events.JOB_REOPENED: State._job_reopened,
    events.JOB_PRUNED: State._job_pruned,
    events.JOB_WAITING: State._job_waiting,
    events.JOB_ANSWERED: State._job_answered,
    events.JOB_DISMISSED: State._job_dismissed,
    events.AGENT_STARTED: State._agent_started,
    events.AGENT_DELIVERED: State._agent_delivered,
    events.DECISION_CREATED: State._decision_created,
    events.DECISION_RESOLVED: State._decision_resolved,
    events.AGENT_SUSPENDED: State._agent_suspended,
    events.WORKER_RECORDED: State._worker_recorded,
    events.WORKER_STARTED: State._worker_started,
    events.WORKER_WOKEN: State._worker_woken,
    events.WORKER_STOPPED: State._worker_stopped,
    events.WORKER_RESIZED: State._worker_resized,
    events.WORKER_RUNBOOK: State._worker_runbook,
    events.WORKER_PRUNED: State._worker_pruned,
    events.WORKER_RENAMED: State._worker_renamed,
    events.CRON_RECORDED: State._cron_recorded,
    events.CRON_TICK: State._cron_tick,
    events.CRON_SKIPPED: State._cron_skipped,
    events.CRON_RENAMED: State._cron_renamed,
    events.STATE_LOSS_ACKNOWLEDGED: State._loss_acknowledged,
    events.STATE_REPAIRED: State._repaired,
}

# the take windows of rates (ojd/state/limits.py), applied after HANDLERS'
LIMITS = {
    events.QUEUE_TAKEN: State._window_take,
}

# the event types the running totals count (ojd/state/stats.py), applied before HANDLERS'
COUNTERS = {
    events.QUEUE_TAKEN: State._count_taken,
    events.QUEUE_COMPLETED: State._count_completed,
    events.QUEUE_FAILED: State._count_failed,
    events.JOB_STEP_STARTED: State._count_step_started,
    events.JOB_STEP_FINISHED: State._count_step_finished,
}
