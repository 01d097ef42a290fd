"""Keeping queues in order, the operator's queue commands: an overview of queues, drain,
prune, and settling by hand an active item whose job is gone (an item's own life, push to
retry, is ``ojd.queues``). Each change is one decision under the WAL lock and one append."""

from __future__ import annotations

import time

from ojd.errors import OjError, UsageError, quoted
from ojd.events import job_finished, queue_completed, queue_dropped, queue_failed, queue_pruned
from ojd.state import LIVE_JOB_STATES
from ojd.unitnames import short

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ojd.runbook.model import Runbook
    from ojd.state import State
    from ojd.store import Store

PRUNABLE = ("completed", "dead")
# what `oj queue drain` drops: everything a worker would still take (as `oj worker list`
# counts PENDING): pending items and failed ones waiting for their retry
DRAINABLE = ("pending", "failed")


def overview(state: State, runbook: Runbook | None, project: str | None) -> list[dict]:
    """One row per queue: counts by status and the workers that take from it. Inside a project
    (``runbook`` given) its runbook's queues, plus any the state still holds items of; outside
    one (or without a runbook) the queues the state knows of, from items and recorded
    workers."""
    rows: dict[tuple[str, str], dict] = {}

    def row(p: str, name: str) -> dict:
        r = rows.get((p, name))
        if r is None:
            r = rows[(p, name)] = {"project": p, "name": name, "type": None, "pending": 0,
                                   "failed": 0, "active": 0, "completed": 0, "dead": 0,
                                   "workers": [], "paused": (p, name) in state.paused}
        return r

    if runbook is not None and project is not None:
        for q in runbook.queues.values():
            row(project, q.name)["type"] = q.type
        for w in sorted(runbook.workers.values(), key=lambda w: w.name):
            if w.queue in runbook.queues:
                row(project, w.queue)["workers"].append(w.name)
    else:
        for w in sorted(state.workers.values(), key=lambda w: w["name"]):
            if w.get("project") and w.get("queue") and project in (None, w["project"]):
                # the row names the project: its workers by their runbook names
                row(w["project"], w["queue"])["workers"].append(short(w["name"]))
    for item in state.items.values():
        if project is not None and item["project"] != project:
            continue
        r = row(item["project"], item["queue"])
        r[item["status"]] += 1
        if r["type"] is None and runbook is None:
            r["type"] = "persisted"  # only persisted queues have items in the state
    for r in rows.values():  # waiting to be taken (pending or failed), as the state keeps it
        r["pending"] = state.waiting_count(r["project"], r["name"])
    return sorted(rows.values(), key=lambda r: (r["project"], r["name"]))


def known_queue(runbook: Runbook, project: str, name: str, state: Callable[[], State]
                ) -> None:
    """A persisted queue of the runbook, or one the state still has items of (removed from
    the runbook since); else a usage error with the closest name. ``state`` is read only
    for a name the runbook does not have."""
    from ojd.queues import unknown_queue  # lazy: oj status loads this module for overview()

    if name in runbook.queues:
        if runbook.queues[name].type != "persisted":
            raise UsageError(f"queue {quoted(name)} is external: its items live in its list "
                             "command, not in oj's state")
        return
    recorded = {i["queue"] for i in state().items.values() if i["project"] == project}
    if name not in recorded:
        raise unknown_queue(name, set(runbook.queues) | recorded)


def drain(store: Store, project: str, queue: str, dry_run: bool = False) -> list[dict]:
    """Drop every item of ``queue`` still waiting to be taken, in one append. Active items
    stay with their jobs. Returns the items dropped (or that would be)."""
    def waiting(state: State) -> list[dict]:
        return sorted((i for i in state.queue_items(project, queue)
                       if i["status"] in DRAINABLE), key=lambda i: i["seq"])

    if dry_run:
        return waiting(store.refresh())
    with store.transaction() as tx:
        items = waiting(tx.state)
        if items:
            tx.append(*(queue_dropped(id=i["id"]) for i in items))
        return items


def prunable(state: State, project: str | None, queue: str | None, now: float,
             age: float | None) -> list[dict]:
    """Completed and dead items settled at least ``age`` seconds ago (any age: None)."""
    return sorted((i for i in state.queue_items(project, queue)
                   if i["status"] in PRUNABLE
                   and (age is None or now - (i["updated_at"] or 0.0) >= age)),
                  key=lambda i: i["seq"])


def prune(store: Store, project: str | None, queue: str | None, now: float,
          age: float | None, dry_run: bool = False) -> list[dict]:
    if dry_run:
        return prunable(store.refresh(), project, queue, now, age)
    with store.transaction() as tx:
        items = prunable(tx.state, project, queue, now, age)
        if items:
            tx.append(queue_pruned(ids=[i["id"] for i in items]))
        return items


def settle(store: Store, runbook: Runbook | None, project: str | None, prefix: str,
           outcome: str) -> tuple[dict, dict, str]:
    """``oj queue done|fail ID``: settle an active item whose job is gone (finished,
    no longer recorded, or its process dead). A job left recorded as running is ended
    (cancelled) in the same append, so that no worker resumes it on a settled item.
    ``fail`` follows the queue's retry policy, as a failed job would. Returns the item as it
    was, the event that settled it and what became of its job."""
    # lazy: the job runners cost oj status, which loads this module for overview()
    from ojd.queues import failure_event, find_item
    from ojd.runners.jobprocess import alive

    command = f"oj queue {'done' if outcome == 'done' else 'fail'}"
    with store.transaction() as tx:
        item = find_item(store, prefix, project)
        if item["status"] != "active":
            raise OjError(f"item {item['id']} is {item['status']}; only an active item (taken "
                          f"by a job that is gone) can be settled with '{command}'")
        job = tx.state.jobs.get(item.get("job") or "")
        events: list[dict] = []
        ended = None
        if job is None:
            fate = f"job {item.get('job') or '-'} is no longer recorded"
        elif job["status"] == "waiting":
            raise OjError(f"item {item['id']}: its job {job['id']} waits for an answer; "
                          f"answer it with 'oj job resume {job['id']} -m ...' or cancel it "
                          f"with 'oj job cancel {job['id']}'")
        elif job["status"] in LIVE_JOB_STATES:
            running = next((p for p in (job.get("process"), job.get("step_proc"))
                            if alive(p)), None)
            if running is not None:
                raise OjError(f"item {item['id']}: its job {job['id']} is still running "
                              f"(process {running['pid']}); let it finish, or cancel it "
                              f"with 'oj job cancel {job['id']}'")
            fate = f"job {job['id']} had no live process; recorded it cancelled"
            ended = job
            events.append(job_finished(
                id=job["id"], outcome="cancelled",
                error=f"its process was gone; its item settled by '{command}'"))
        else:
            fate = f"job {job['id']} is {job['status']}"
        if outcome == "done":
            events.append(queue_completed(id=item["id"]))
        else:
            error = f"marked failed by '{command}' ({fate})"
            queue = runbook.queues.get(item["queue"]) if runbook is not None else None
            events.append(failure_event(queue, item, error, time.time()) if queue is not None
                          else queue_failed(id=item["id"], error=error, dead=True,
                                            retry_at=None))
        tx.append(*events)
    if ended is not None:
        from ojd.runners.control import stop  # lazy: as above, off oj status

        stop(ended)  # nothing of it runs: this ends an agent's tmux session, if it left one
    return item, events[-1], fate
