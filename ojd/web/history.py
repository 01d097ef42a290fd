"""What the page shows from the recorded events rather than from the folded state: each
queue's takes and completions over the last minutes (its rates) and each job's own events
(its page's history). Pure: records come in, counts and lists go out; the server feeds it
what the log holds (from its oldest kept snapshot on) and then what is appended."""

from __future__ import annotations

from collections import deque

RATE_WINDOW = 15 * 60.0  # seconds of takes and completions kept for the rates
JOB_EVENTS_KEPT = 200  # per job: the newest ones
JOBS_KEPT = 2000  # jobs whose events are kept (the state keeps 500 finished ones)
_ITEM_EVENTS = {"queue:taken": "taken", "queue:completed": "completed",
                "queue:failed": "failed"}


class EventHistory:
    def __init__(self) -> None:
        # (ts, what, project, queue), oldest first
        self._settled: deque[tuple[float, str, str, str]] = deque()
        self._jobs: dict[str, deque[dict]] = {}
        self.pos = 0

    def add(self, pos: int, event: dict, item_queue: tuple[str, str] | None) -> None:
        """One record; ``item_queue``: (project, queue) of the item a ``queue:*`` event
        names, as the state knows it (None when it does not)."""
        self.pos = max(self.pos, pos)
        kind = event.get("type", "")
        what = _ITEM_EVENTS.get(kind)
        if what is not None and item_queue is not None:
            self._settled.append((event.get("ts") or 0.0, what, *item_queue))
        job = event.get("job") if kind.startswith("queue:") else (
            event.get("id") if kind.startswith(("job:", "agent:")) else None)
        if isinstance(job, str):
            kept = self._jobs.get(job)
            if kept is None:
                if len(self._jobs) >= JOBS_KEPT:  # the oldest job seen goes
                    self._jobs.pop(next(iter(self._jobs)))
                kept = self._jobs[job] = deque(maxlen=JOB_EVENTS_KEPT)
            kept.append({"pos": pos, **event})

    def forget_before(self, now: float) -> None:
        while self._settled and self._settled[0][0] < now - RATE_WINDOW:
            self._settled.popleft()

    def rates(self, now: float, minutes: float = 5.0) -> dict[tuple[str, str], dict]:
        """Per (project, queue): takes, completions and failures in the last ``minutes``."""
        since = now - minutes * 60.0
        out: dict[tuple[str, str], dict] = {}
        for ts, what, project, queue in reversed(self._settled):
            if ts < since:
                break
            row = out.setdefault((project, queue), {"taken": 0, "completed": 0, "failed": 0})
            row[what] += 1
        return out

    def job_events(self, job_id: str) -> list[dict]:
        return list(self._jobs.get(job_id, ()))
