"""The page's data: what ``oj status`` gathers (``ojd.status.gather``: workers, jobs,
queues, crons per project), with what only the page shows: each queue's waiting and dead
items, its rates (``history``), each running job's log tail, and a job's own page."""

from __future__ import annotations

import os
import threading

from ojd import paths, status
from ojd.web.history import EventHistory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store import Store
    from ojd.store.log import Reader
    from ojd.systemd import Systemd

ITEMS_SHOWN = 8  # waiting items per queue (the next to be taken), and as many dead ones
TAIL_LINES = 8  # a running job's log lines on the dashboard
TAIL_BYTES = 4096
JOB_LOG_BYTES = 256 * 1024  # a job page's log: its end
RATE_MINUTES = 5


class Recorded:
    """The events behind ``EventHistory``: read once from the oldest record the log still
    holds, then as they are appended (the store's state resolves the items that
    ``queue:*`` events name to their queue)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.history = EventHistory()
        self._reader: Reader | None = None
        self._lock = threading.Lock()

    def catch_up(self, now: float) -> EventHistory:
        with self._lock:
            if self._reader is None:
                kept = self.store.log.snapshot_positions()
                self._reader = self.store.log.reader(
                    after=max(self.history.pos, kept[0] if kept else 0))
            try:
                records = self._reader.read_new()
            except Exception:  # compacted under the reader: on from where it is now
                self._reader = None
                records = []
            items = self.store.state.items
            for rec in records:
                ev = rec.event
                item = items.get(ev.get("id", "")) if ev.get("type", "").startswith(
                    "queue:") else None
                self.history.add(rec.pos, ev,
                                 (item["project"], item["queue"]) if item else None)
            self.history.forget_before(now)
            return self.history


def log_tail(root: str, job_id: str, limit: int) -> str | None:
    """The end of a job's log (at most ``limit`` bytes, from a line start); None when it
    has none on this host."""
    try:
        with open(paths.job_log(root, job_id), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return None
    if size > limit and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return data.decode(errors="replace")


def dashboard(store: Store, history: EventHistory, systemd: Systemd | None, now: float
              ) -> dict:
    """The whole page as data, every project of the state dir."""
    state = store.state
    report = status.gather(store, status.projects_of(store), None, systemd, now,
                           lambda job: None)
    rates = history.rates(now, RATE_MINUTES)
    waiting: dict[tuple[str, str], list[dict]] = {}
    dead: dict[tuple[str, str], list[dict]] = {}
    for item in sorted(state.items.values(), key=lambda i: i["seq"]):
        key = (item["project"], item["queue"])
        if item["status"] in ("pending", "failed"):
            waiting.setdefault(key, []).append(item)
        elif item["status"] == "dead":
            dead.setdefault(key, []).append(item)
    for section in report["projects"]:
        p = section["project"]
        for q in section["queues"]:
            key = (p, q["name"])
            q["rates"] = rates.get(key, {"taken": 0, "completed": 0, "failed": 0})
            q["waiting_items"] = waiting.get(key, [])[:ITEMS_SHOWN]
            q["dead_items"] = dead.get(key, [])[-ITEMS_SHOWN:]
        for j in section["jobs"]["running"]:
            tail = log_tail(store.root, j["id"], TAIL_BYTES)
            j["tail"] = None if tail is None else "\n".join(tail.splitlines()[-TAIL_LINES:])
        for j in section["jobs"]["waiting"]:
            j["answer"] = f"oj job resume {j['id']} -m '...'"
            d = state.decisions.get(j.get("decision") or "")
            j["decision"] = d if d is not None and d["status"] == "open" else None
    report["rate_minutes"] = RATE_MINUTES
    return report


def job_page(store: Store, history: EventHistory, job_id: str) -> dict | None:
    """A job, its recorded events (those the log still holds) and the end of its log."""
    job = store.state.jobs.get(job_id)
    if job is None:
        return None
    item = store.state.items.get(job.get("item") or "")
    mine = sorted((d for d in store.state.decisions.values() if d["job"] == job_id),
                  key=lambda d: d["created_at"])
    return {"job": job, "item": item, "events": history.job_events(job_id),
            "decisions": mine, "log": log_tail(store.root, job_id, JOB_LOG_BYTES)}
