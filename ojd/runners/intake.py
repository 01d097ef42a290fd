"""A worker's intake: taking items into free slots, each by a new job created in the append
that records its process; an item whose job lost its lease is taken with that job, resumed.
An external queue's items come from its list command and are claimed by its take command."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from ojd import bashrun, queues
from ojd.duration import format_duration
from ojd.errors import OjError
from ojd.events import job_resumed
from ojd.notify import Log, Notifier, one_line
from ojd.runbook.template import TemplateError, render_shell
from ojd.runners import jobprocess
from ojd.runners.assignment import Assignment
from ojd.runners.jobrecords import job_created_event
from ojd.runners.pool import ProcessPool
from ojd.runners.stepprocess import terminate_group
from ojd.state import LIVE_JOB_STATES, State
from ojd.state.limits import live_jobs_of
from ojd.store import Store


def external_key(entry: dict) -> str:
    """An external item's identity: its ``id`` when it has one, else its data."""
    ident = entry.get("id")
    if isinstance(ident, (str, int)) and not isinstance(ident, bool):
        return f"id:{ident}"
    return "data:" + queues.item_key(entry)


def over_global_concurrency(state: State, work: Assignment) -> bool:
    """Whether the worker's ``global_concurrency`` jobs already run, on any host."""
    limit = work.worker.global_concurrency
    return limit is not None and live_jobs_of(state.jobs, work.project,
                                              work.worker.name) >= limit


def held_back(state: State, work: Assignment, now: float) -> bool:
    """Whether a new take must wait: a rate's window is full, or the worker's jobs across
    hosts are at its global_concurrency. Asked on the caught-up state inside the take's
    transaction, after the item is chosen by its own order."""
    return over_global_concurrency(state, work) or \
        state.rate_opening(work.windows, now) is not None


class Intake:
    def __init__(self, store: Store, work: Assignment, pool: ProcessPool, log: Log,
                 notifier: Notifier, stopping: Callable[[], bool]) -> None:
        self.store = store
        self.work = work
        self.pool = pool
        self.log = log
        self.notifier = notifier
        self.stopping = stopping  # a stop was asked for: a hung command ends at once

    def take(self, free: int) -> None:
        """Fill up to ``free`` slots with items of the worker's queue."""
        queue = self.work.queue
        if queue.type == "external":
            self._poll_external(free)
            return
        procs = self.pool.procs
        # an item another process (or host) took between the look and the take is a lost
        # race, not the end of the queue: look again, with the state that take caught up to
        tries = free * 4
        skip: set[str] = set()
        while free > 0 and tries > 0:
            with self.store.lock:  # a look before forking: most polls find nothing
                if held_back(self.store.state, self.work, time.time()):
                    return  # the worker sleeps until the window opens (rate_opening)
                item = self.store.state.next_takeable(self.work.project, queue.name,
                                                      time.time(), skip)
                if item is None:
                    return
                job = self.store.state.jobs.get(item.get("job") or "")
            if job is not None and job["status"] in LIVE_JOB_STATES and job["id"] in procs:
                # its job still runs here (stuck past its lease): a later poll sees it
                # settled; the items behind it are not held up
                skip.add(item["id"])
                continue
            tries -= 1
            if job is not None and job["status"] in LIVE_JOB_STATES:
                free -= self._take_over(item["id"], job["id"])
            else:
                free -= self.pool.start_new(self._take)

    def _take(self, tx, job_id: str) -> list[dict]:
        """The take of the oldest takeable item by a new job (in the job process's append)."""
        work = self.work
        skip: set[str] = set()
        while True:
            item = tx.state.next_takeable(work.project, work.queue.name, time.time(), skip)
            if item is None or job_id in tx.state.jobs:
                raise jobprocess.NothingToRun()
            live = tx.state.jobs.get(item.get("job") or "")
            if live is None or live["status"] not in LIVE_JOB_STATES:
                break
            skip.add(item["id"])  # its job goes on (_take_over's): the next one is ours
        if held_back(tx.state, work, time.time()):
            raise jobprocess.NothingToRun()  # another host took the last place meanwhile
        job = job_created_event(tx, self.store.root, work.runbook, work.project,
                                work.worker.pipeline, work.vars_for(item["data"]),
                                work.project, item=item["id"], worker=work.worker.name,
                                owner=work.owner, job_id=job_id)
        return [job, queues.take_event(item, work.owner, job_id, work.lease, work.windows)]

    def rate_opening(self) -> float | None:
        """When a rate that holds this worker's takes back lets the next one through; None
        when none does, or nothing waits to be taken."""
        windows = self.work.windows
        if not windows:
            return None
        with self.store.lock:
            state = self.store.state
            if not state.waiting_count(self.work.project, self.work.queue.name):
                return None
            return state.rate_opening(windows, time.time())

    def _take_over(self, item_id: str, job_id: str) -> bool:
        """Take an item whose job lost its lease and resume that job from its step, in the
        append that records the new process; False when another host was faster."""
        owner, lease = self.work.owner, self.work.lease

        def decide(tx) -> list[dict]:
            item = tx.state.items.get(item_id)
            job = tx.state.jobs.get(job_id)
            if item is None or item["status"] != "pending" or item.get("job") != job_id \
                    or job is None or job["status"] not in LIVE_JOB_STATES:
                raise jobprocess.NothingToRun()
            return [job_resumed(id=job_id, by=owner),
                    queues.take_event(item, owner, job_id, lease)]

        self.log.info(f"resuming job {job_id} (item {item_id}) after its lease expired")
        try:
            proc = jobprocess.spawn(self.store, self.work.runbook, job_id, owner=owner,
                                    manager=self.pool.manager, warn=self.log.warning,
                                    decide=decide)
        except jobprocess.NothingToRun:
            return False
        self.pool.watch(proc)
        return True

    # -- external queues ----------------------------------------------------------------

    def _poll_external(self, free: int) -> None:
        queue = self.work.queue
        assert queue.list_cmd and queue.take_cmd
        proc = self._external("list", queue.list_cmd)
        if proc is None:
            return
        try:
            listed = json.loads(proc.stdout) if proc.returncode == 0 else None
        except json.JSONDecodeError:
            listed = None
        if not isinstance(listed, list):
            self.log.error(f"queue '{queue.name}' list command must print a JSON array "
                           f"(exit {proc.returncode}): {queue.list_cmd.strip()}")
            return
        in_flight = self._external_in_flight()
        for entry in listed:
            if free <= 0:
                break
            if not isinstance(entry, dict):
                continue
            key = external_key(entry)
            if key in in_flight:
                continue  # listed again while its job runs: one job per item at a time
            try:
                queues.check_item_bounds(entry)
            except OjError as e:
                self.log.error(f"queue '{queue.name}' item skipped: {e}")
                continue
            try:
                take = render_shell(queue.take_cmd, {"item": entry})
            except TemplateError as e:
                self.log.error(f"queue '{queue.name}' take: {e}")
                continue
            taken = self._external("take", take)
            if taken is None or taken.returncode != 0:
                continue  # somebody else claimed it
            def create(tx, job_id: str, entry: dict = entry) -> list[dict]:
                if job_id in tx.state.jobs:
                    raise jobprocess.NothingToRun()
                work = self.work
                return [job_created_event(tx, self.store.root, work.runbook, work.project,
                                          work.worker.pipeline, work.vars_for(entry),
                                          work.project, worker=work.worker.name,
                                          owner=work.owner, job_id=job_id)]

            self.pool.start_new(create)
            in_flight.add(key)
            free -= 1

    def _external(self, what: str, script: str) -> subprocess.CompletedProcess | None:
        """Run an external queue's list or take command for at most the queue's timeout,
        feeding the watchdog meanwhile (a hung command must neither block the loop for ever
        nor get the worker killed as hung); None, said, when it ran past it."""
        queue = self.work.queue
        with bashrun.Script(script) as s:
            proc = subprocess.Popen(s.argv, pass_fds=s.fds, cwd=self.work.project, text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + queue.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                out, err = proc.communicate(timeout=max(0.0, min(1.0, left)))
                return subprocess.CompletedProcess(s.argv, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                self.notifier.watchdog()
                if left > 1.0 and not self.stopping():
                    continue
            terminate_group(proc.pid, proc)
            proc.communicate()
            if not self.stopping():  # a stop asked for ends it without a word
                self.log.error(f"queue '{queue.name}' {what} command ran past its "
                               f"timeout ({format_duration(queue.timeout)}) and was "
                               f"stopped: {one_line(script.strip())[:200]}")
            return None

    def _external_in_flight(self) -> set[str]:
        """Keys of the external items this worker's running jobs work on (resumed ones too:
        the item is the job's pipeline var)."""
        var = self.work.runbook.pipelines[self.work.worker.pipeline].vars[0]
        with self.store.lock:
            jobs = self.store.state.jobs
            return {external_key(jobs[j]["vars"].get(var) or {})
                    for j in self.pool.procs if j in jobs}
