"""Retention: how long a queue's completed and dead items and its worker's finished jobs (with
their logs and workspaces) are kept, applied by the worker itself as part of its polls (at
most once a minute), so that no separate cron is needed.

The policy is ``retain = { done, dead, jobs }`` of the worker, over its queue's, over the
state dir's ``oj.conf`` defaults (``retain_done``...), kind by kind; a kind none of them sets
is kept as before (the fold's own caps). The removal is the existing prunes': items by
``queue:pruned``, jobs by ``ojd.prune``'s plan, restricted to this worker's jobs."""

from __future__ import annotations

from ojd.events import queue_pruned
from ojd.prune import carry_out_job_prune, delete_set_aside, ended_at, is_finished, plan_job_prune
from ojd.state import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.runbook.model import Queue, Worker
    from ojd.store import Store

RETAIN_EVERY = 60.0  # seconds between a worker's retention passes
_STATUS_KIND = {"completed": "done", "dead": "dead"}


def policy(defaults: dict[str, float], queue: Queue, worker: Worker) -> dict[str, float]:
    return {**defaults, **queue.retain, **worker.retain}


def expired_items(state: State, project: str, queue: str, now: float,
                  retain: dict[str, float]) -> list[dict]:
    """The queue's completed and dead items settled longer ago than their kind is kept."""
    out = []
    for item in state.queue_items(project, queue):
        keep = retain.get(_STATUS_KIND.get(item["status"], ""))
        if keep is not None and now - (item["updated_at"] or 0.0) >= keep:
            out.append(item)
    return sorted(out, key=lambda i: i["seq"])


def expired_jobs(state: State, project: str, worker: str, now: float,
                 retain: dict[str, float]) -> bool:
    keep = retain.get("jobs")
    return keep is not None and any(
        j.get("worker") == worker and j["project"] == project and is_finished(j)
        and now - ended_at(j) >= keep for j in state.jobs.values())


def apply(store: Store, project: str, queue: str, worker: str, retain: dict[str, float],
          now: float) -> tuple[int, int, list[str]]:
    """Remove what the policy no longer keeps: (items removed, jobs removed, problems).
    Looked at first without the log's lock: most passes find nothing to write."""
    with store.lock:
        state = store.state
        if not expired_items(state, project, queue, now, retain) and \
                not expired_jobs(state, project, worker, now, retain):
            return 0, 0, []
    aside: list[str] = []
    problems: list[str] = []
    with store.transaction() as tx:
        items = expired_items(tx.state, project, queue, now, retain)
        if items:
            tx.append(queue_pruned(ids=[i["id"] for i in items]))
        jobs = 0
        if "jobs" in retain:
            plan = plan_job_prune(tx.state, store.root, now, retain["jobs"], project,
                                  worker=worker)
            aside, problems = carry_out_job_prune(tx, store.root, plan)
            jobs = len(plan.jobs)
    return len(items), jobs, problems + delete_set_aside(store.root, aside)
