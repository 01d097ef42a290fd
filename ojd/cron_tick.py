"""One tick of a cron: the body of ``oj-cron@NAME.service`` (``ojd cron NAME``).

A tick records itself and starts the cron's job in a process of its own (its own scope
under systemd, as ``oj run`` starts one), then exits without waiting for it: the service
is a oneshot that ends in milliseconds, so a long job never holds the timer, and the
next tick can see it still running and count it against the cron's ``concurrency``. A
tick that finds ``concurrency`` jobs of its cron running starts none and records
``cron:skipped``.
"""

from __future__ import annotations

import os

from ojd.crons import full_name, running_jobs
from ojd.errors import OjError
from ojd.events import cron_skipped, cron_tick
from ojd.identity import elsewhere
from ojd.queues import new_id
from ojd.runners import jobprocess
from ojd.runners.jobprocess import NothingToRun
from ojd.runners.jobs import fail_job, job_created_event

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.notify import Log
    from ojd.runbook.model import Cron, Runbook
    from ojd.store import Store


# why a tick under a manager starts no job without a scope of its own
IN_TICK = ("a job left in this tick's service would be killed when the tick ends; the "
           "next tick tries again")


class TickFailed(OjError):
    """The tick started nothing it should have: its service fails, its journal says why."""


class Skipped(NothingToRun):
    def __init__(self, running: int) -> None:
        super().__init__(running)
        self.running = running


def owner(name: str) -> str:
    """Who started a cron's jobs: this tick (a unit's invocation, else this process)."""
    return f"cron/{name}/{os.environ.get('INVOCATION_ID') or f'pid-{os.getpid()}'}"


def tick(store: Store, runbook: Runbook, root: str, cron: Cron, *, manager, log: Log
         ) -> str | None:
    """Start a job of ``cron`` unless ``concurrency`` of them run. Returns the new job's id,
    or None when the tick was skipped. Jobs of the cron whose process is gone (a power
    cut, a kill) are resumed first, at the step they were in, and count as running."""
    who = owner(cron.name)
    full = full_name(root, cron.name)  # its record's name
    for job in running_jobs(store.refresh(), root, cron.name):
        proc = job.get("process")
        # another host's process can be neither seen nor signalled from here: it is not
        # gone (with no item, no lease says when it is lost: 'oj job cancel' does)
        if job["status"] == "running" and not elsewhere(proc) \
                and not jobprocess.alive(proc):
            if job.get("resumes", 0) >= jobprocess.MAX_RESUMES:
                # as a worker does: its step may be what kills it
                error = (f"its process ended {jobprocess.MAX_RESUMES + 1} times without "
                         "finishing it")
                if fail_job(store, runbook, job["id"], error, process=proc):
                    log.error(f"failed job {job['id']}: {error}")
                continue
            try:
                jobprocess.spawn(store, runbook, job["id"], owner=who, manager=manager,
                                 quiet=True, replaces=proc, warn=log.warning,
                                 scope_required=True)
                log.info(f"resumed job {job['id']}: its process was gone")
            except jobprocess.NoScope as e:
                raise TickFailed(f"job {job['id']} not resumed: {e}; {IN_TICK}") from None
            except OjError as e:  # resumed by another meanwhile, or ended
                log.info(f"job {job['id']} not resumed: {e}")
    state = store.refresh()
    job_id = new_id(state.jobs)

    def decide(tx) -> list[dict]:
        running = len(running_jobs(tx.state, root, cron.name))
        if running >= cron.concurrency:
            raise Skipped(running)
        return [cron_tick(name=full, job=job_id),
                job_created_event(tx, store.root, runbook, root, cron.pipeline, {}, root,
                                  owner=who, name=cron.name, job_id=job_id, cron=cron.name)]

    running = len(running_jobs(state, root, cron.name))
    if running < cron.concurrency:  # else no fork and no scope for a job that cannot start
        try:
            proc = jobprocess.spawn(store, runbook, job_id, owner=who, manager=manager,
                                    quiet=True, decide=decide, name=cron.name,
                                    warn=log.warning, scope_required=True)
        except Skipped as e:
            running = e.running
        except jobprocess.NoScope as e:
            raise TickFailed(f"started no job: {e}; {IN_TICK}") from None
        else:
            if proc.unit is not None:
                jobprocess.wait_in_scope(proc.unit, pid=proc.pid, timeout=5.0)
            log.info(f"started job {job_id} ({cron.pipeline})")
            return job_id
    store.append(cron_skipped(name=full, running=running))
    log.info(f"skipped: {running} of its job(s) still running (concurrency "
             f"{cron.concurrency})")
    return None
