"""``oj queue push --wait``: follow one item until it settles, through the jobs a worker
takes it into (a failed attempt waiting for its retry is not the end), and the exit status
its outcome gives. ``progress`` is the pure reading of the state; ``wait`` polls it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from ojd.runners import control
from ojd.state.statuses import LIVE_JOB_STATES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.state import State
    from ojd.store import Store

# the exit status of a settled item; a job's own outcomes keep `oj run`'s numbers
EXIT = {"completed": 0, "dead": 1, "cancelled": 4, "dropped": 4}


class Progress(NamedTuple):
    phase: str  # "pending", "running", "retrying", or settled: a key of EXIT
    job: str | None  # the item's current (or last) job
    error: str | None


def progress(state: State, item_id: str) -> Progress:
    """Where an item is now. A dead item whose job was cancelled is "cancelled"; an item
    no longer there was dropped (or pruned)."""
    item = state.items.get(item_id)
    if item is None:
        return Progress("dropped", None, None)
    job_id, error = item.get("job"), item.get("error")
    status = item["status"]
    if status == "dead":
        job = state.jobs.get(job_id or "") or {}
        return Progress("cancelled" if job.get("status") == "cancelled" else "dead", job_id,
                        error)
    if status == "failed":
        return Progress("retrying", job_id, error)
    if status == "active":
        job = state.jobs.get(job_id or "") or {}
        # the job has ended and the item's settling is on its way: not a new wait
        return Progress("running" if job.get("status") in LIVE_JOB_STATES or not job
                        else "settling", job_id, error)
    return Progress(status, job_id, error)  # "pending" or "completed"


def wait(store: Store, item_id: str, say: Callable[[str], None],
         write: Callable[[bytes], None] | None = None, interval: float = 0.05) -> Progress:
    """Until the item settles; ``say`` each change once (taken into a job, failed and
    waiting for its retry), ``write`` the log of each job it goes into (once per job, as it
    grows) when given."""
    seen_job, seen_phase = None, None
    while True:
        now = progress(store.refresh(), item_id)
        if now.job is not None and now.job != seen_job:
            seen_job = now.job  # a job may have come and gone between two looks
            say(f"item {item_id} is in job {now.job}")
            if write is not None:
                control.follow(store, now.job, write)
                interval = 0.05
                continue  # what the item became meanwhile
        if now.phase == "dropped" and seen_job is not None:
            # a completed item pruned before this look: its job says how it ended
            job = store.state.jobs.get(seen_job) or {}
            if job.get("status") == "done":
                now = Progress("completed", seen_job, None)
        if now.phase in EXIT:
            return now
        if now.phase != seen_phase and now.phase == "retrying":
            say(f"job {now.job} failed ({now.error or 'no reason given'}); the item waits "
                "for its retry")
        seen_phase = now.phase
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)  # quick for a short job, light for a long wait
