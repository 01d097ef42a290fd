"""The worker loop: take items from a queue, run the handler pipeline, settle the items.

Runs inside ``oj-worker@NAME.service`` or in the foreground (``ojd worker NAME
--foreground``). Signal handlers only record and wake the loop through a self-pipe; the loop
acts. A wake that arrives during a poll leaves a byte in the pipe, so it causes another poll:
no wake-up is lost.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable

from ojd import bashrun, queues
from ojd.errors import OjError
from ojd.jobs import JobRunner, Stalled, job_created_event
from ojd.notify import Log, Notifier
from ojd.runbook import Runbook, Worker
from ojd.state import State
from ojd.store import Store
from ojd.template import TemplateError, render_shell

DRAIN_GRACE = 60.0  # seconds running steps get to finish on SIGTERM
# A worker refused by its check (ojd.trust) exits EX_CONFIG: RestartPreventExitStatus=78
EXIT_REFUSED = 78


def owner_id(worker: str) -> str:
    """Who holds a lease: the unit's invocation (new on every restart), else this process."""
    invocation = os.environ.get("INVOCATION_ID")
    if invocation:
        return f"{worker}/{invocation}"
    return f"{worker}/pid-{os.getpid()}-{time.monotonic_ns()}"


def describe(error: BaseException) -> str:
    """One line for a log: an OSError's text and file, anything else as its repr."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    if isinstance(error, OjError):
        return str(error)
    return repr(error)


def external_key(entry: dict) -> str:
    """An external item's identity: its ``id`` when it has one, else its data."""
    ident = entry.get("id")
    if isinstance(ident, (str, int)) and not isinstance(ident, bool):
        return f"id:{ident}"
    return "data:" + queues.item_key(entry)


class WorkerLoop:
    def __init__(self, store: Store, runbook: Runbook, project: str, worker: Worker, *,
                 log: Log | None = None, notifier: Notifier | None = None,
                 drain_grace: float = DRAIN_GRACE, until_idle: bool = False,
                 check: Callable[[], None] | None = None) -> None:
        self.store = store
        self.runbook = runbook
        self.project = project
        self.worker = worker
        self.queue = runbook.queues[worker.queue]
        self.log = log or Log(f"worker {worker.name}")
        self.notifier = notifier or Notifier()
        self.drain_grace = drain_grace
        self.until_idle = until_idle
        self.check = check  # raises OjError when the worker must take nothing more
        self.refused: str | None = None
        self.owner = owner_id(worker.name)
        self.runner = JobRunner(store, runbook, progress=self._progress, settle=self._settle)
        self.threads: dict[str, threading.Thread] = {}  # job id -> thread
        self.job_items: dict[str, str | None] = {}  # job id -> item id
        # job threads report here before waking the loop: a thread that is still alive
        # when the loop wakes must not hold its slot (that wake would be lost)
        self._finished: deque[str] = deque()
        self.last_poll: float | None = None
        self.polls = 0
        self._poll_error: str | None = None  # the last poll failure, said once
        self._stop = False
        self._stop_signal: int | None = None
        # the problem with the runbook on disk while the loaded one keeps running
        self.runbook_error: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- signals and wake-ups -----------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGUSR1, lambda *_: self.wake())
        signal.signal(signal.SIGTERM, lambda signum, _: self.request_stop(signum))
        signal.signal(signal.SIGINT, lambda signum, _: self.request_stop(signum))

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass  # the pipe is full of wakes already: one poll answers them all

    def request_stop(self, signum: int | None = None) -> None:
        """The first request drains; a second one (Ctrl-C again) ends the drain at once."""
        if self._stop:
            self.runner.hurry()
        else:
            self._stop = True
            self._stop_signal = signum
        self.wake()

    def _drain_wakes(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        self.store.load()
        self._remember_runbook()
        self.store.append({"type": "worker:started", "name": self.worker.name,
                           "invocation": os.environ.get("INVOCATION_ID"), "pid": os.getpid()})
        self._recover()
        self.notifier.ready(self.status_line())
        self.log.info(f"ready: queue '{self.queue.name}', pipeline '{self.worker.pipeline}', "
                      f"concurrency {self.worker.concurrency}")
        next_poll = 0.0
        while not self._stop:
            self._drain_wakes()
            self._reap()
            try:
                self.poll()
            except Exception as e:  # keep the loop (and its drain on stop) alive
                # said once per distinct failure (a full disk fails every poll until freed)
                why = describe(e)
                if why != self._poll_error:
                    self._poll_error = why
                    self.log.error(f"poll failed: {why}; retrying at each poll")
            else:
                if self._poll_error is not None:
                    self._poll_error = None
                    self.log.info("polls work again")
            if self.until_idle and self._idle():
                self.log.info("queue drained; exiting (--until-idle)")
                break
            next_poll = time.monotonic() + self.worker.poll
            self.notifier.status(self.status_line())
            self.notifier.watchdog()
            timeout = max(0.0, next_poll - time.monotonic())
            retry_at = self._next_retry() if len(self.threads) < self.worker.concurrency else None
            if retry_at is not None:  # a cooldown ends before the fallback poll
                timeout = min(timeout, max(0.0, retry_at - time.time()) + 0.01)
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, self.notifier.watchdog_interval)
            select.select([self._wake_r], [], [], timeout)
        self._shutdown()
        if self.refused:
            return EXIT_REFUSED
        # Ctrl-C is an interruption (130, as a shell reports it); SIGTERM is the clean stop
        # the unit expects
        return 130 if self._stop_signal == signal.SIGINT else 0

    def poll(self) -> None:
        """Fill free slots with work. Called on start, wake, job end and the fallback timer."""
        if self.check is not None and self.refused is None:
            try:
                self.check()
            except OjError as e:  # drain what runs (loaded when it was fine), then exit
                self.refused = str(e)
                self.log.error(self.refused)
                self.notifier.status(f"{self.worker.name}: refused: {self.refused}")
                self.request_stop()
        if self.refused is not None:
            return
        self.last_poll = time.time()
        self.polls += 1
        self.reload_runbook()
        free = self.worker.concurrency - len(self.threads)
        if free <= 0:
            return
        if self.queue.type == "external":
            self._poll_external(free)
            return
        for _ in range(free):
            with self.store.transaction() as tx:
                item = tx.state.next_takeable(self.project, self.queue.name, time.time())
                if item is None:
                    return
                job = job_created_event(tx, self.store.root, self.runbook, self.project,
                                        self.worker.pipeline, self._vars_for(item["data"]),
                                        self.project, item=item["id"],
                                        worker=self.worker.name, owner=self.owner)
                # one append, one fsync: the take and its job are durable together
                tx.append(job, queues.take_event(item, self.owner, job["id"]))
            self._start(job["id"], item["id"])

    def reload_runbook(self) -> None:
        """Load the runbook again when its files changed (the model is cached by content
        hash, so an unchanged one costs reading the files). New jobs use the new one; an
        invalid one is reported and the loaded one kept."""
        from ojd import paths
        from ojd import project as projects
        from ojd.errors import OjError, quoted

        try:
            runbook = projects.load(self.project, paths.cache_dir(self.store.root))
            if runbook.digest == self.runbook.digest:
                self._runbook_problem(None)
                return
            worker = runbook.workers.get(self.worker.name)
            if worker is None:
                raise OjError(f"the runbook no longer defines worker {quoted(self.worker.name)}")
            from ojd import workers

            workers.record(self.store, runbook, self.project, worker.name)  # pushes follow it
        except OjError as e:
            self._runbook_problem(str(e))
            return
        except OSError as e:
            self._runbook_problem(f"cannot read the runbook: {e}")
            return
        self.runbook, self.worker = runbook, worker
        self.queue = runbook.queues[worker.queue]
        self.runner.runbook = runbook
        self._runbook_problem(None)
        self._remember_runbook()
        self.log.info(f"runbook reloaded: queue {quoted(self.queue.name)}, pipeline "
                      f"{quoted(worker.pipeline)}, concurrency {worker.concurrency}")

    def _remember_runbook(self) -> None:
        """The queues of the runbook this worker runs, for pushes while the files on disk
        are broken (``ojd.lastgood``)."""
        from ojd import lastgood, paths
        from ojd import project as projects

        lastgood.remember(self.project, paths.cache_dir(self.store.root),
                          projects.index_of(self.runbook))

    def _runbook_problem(self, problem: str | None) -> None:
        if problem is not None and problem != self.runbook_error:
            for line in problem.splitlines():
                self.log.error(line)
            self.log.error("runbook not reloaded: keeping the previous one; "
                           "'oj runbook check' lists the problems")
        self.runbook_error = problem

    def _next_retry(self) -> float | None:
        """When the earliest failed item of this queue may be taken again."""
        with self.store.lock:
            return self.store.state.next_retry(self.project, self.queue.name)

    def _idle(self) -> bool:
        if self.threads:
            return False
        with self.store.lock:
            return not any(i["status"] in ("pending", "active", "failed")
                           for i in self.store.state.queue_items(self.project, self.queue.name))

    def _vars_for(self, data: dict) -> dict:
        pipeline = self.runbook.pipelines[self.worker.pipeline]
        return {pipeline.vars[0]: data}

    def _poll_external(self, free: int) -> None:
        assert self.queue.list_cmd and self.queue.take_cmd
        proc = subprocess.run(["bash", "-c", self.queue.list_cmd], cwd=self.project,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        try:
            listed = json.loads(proc.stdout) if proc.returncode == 0 else None
        except json.JSONDecodeError:
            listed = None
        if not isinstance(listed, list):
            self.log.error(f"queue '{self.queue.name}' list command must print a JSON array "
                           f"(exit {proc.returncode}): {self.queue.list_cmd.strip()}")
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
                self.log.error(f"queue '{self.queue.name}' item skipped: {e}")
                continue
            try:
                take = render_shell(self.queue.take_cmd, {"item": entry})
            except TemplateError as e:
                self.log.error(f"queue '{self.queue.name}' take: {e}")
                continue
            taken = bashrun.run(take, cwd=self.project, stdin=subprocess.DEVNULL,
                                capture_output=True)
            if taken.returncode != 0:
                continue  # somebody else claimed it
            with self.store.transaction() as tx:
                job = job_created_event(tx, self.store.root, self.runbook, self.project,
                                        self.worker.pipeline, self._vars_for(entry),
                                        self.project, worker=self.worker.name,
                                        owner=self.owner)
                tx.append(job)
            self._start(job["id"], None)
            in_flight.add(key)
            free -= 1

    def _external_in_flight(self) -> set[str]:
        """Keys of the external items this worker's running jobs work on (resumed ones too:
        the item is the job's pipeline var)."""
        var = self.runbook.pipelines[self.worker.pipeline].vars[0]
        with self.store.lock:
            jobs = self.store.state.jobs
            return {external_key(jobs[j]["vars"].get(var) or {})
                    for j in list(self.threads) if j in jobs}

    def _recover(self) -> None:
        """Resume jobs a previous incarnation of this worker left mid-way (crash, kill -9)."""
        state = self.store.refresh()
        orphans = [j for j in state.jobs.values()
                   if j["worker"] == self.worker.name and j["project"] == self.project
                   and j["status"] == "running" and j["owner"] != self.owner]
        for job in orphans:
            self.store.append({"type": "job:resumed", "id": job["id"], "by": self.owner})
            self.log.info(f"resuming job {job['id']} (item {job['item']}) left by "
                          f"{job['owner']}")
            self._start(job["id"], job["item"])

    def _start(self, job_id: str, item_id: str | None) -> None:
        self.job_items[job_id] = item_id
        thread = threading.Thread(target=self._run_job, args=(job_id,), name=f"job-{job_id}",
                                  daemon=True)
        self.threads[job_id] = thread
        thread.start()

    def _run_job(self, job_id: str) -> None:
        try:
            outcome = self.runner.run(job_id)
        except Stalled as e:
            self.log.error(f"job {job_id} stopped while waiting to record its progress ({e}); "
                           "it resumes where it stands when the worker starts again")
            outcome = "interrupted"
        except Exception as e:  # a bug or an unusable file must not leave the item active
            why = describe(e)
            self.log.error(f"job {job_id} failed: {why}")
            try:
                outcome = self.runner.fail(job_id, f"oj could not run it: {why}")
            except Exception as again:
                self.log.error(f"job {job_id}: its failure could not be recorded either "
                               f"({describe(again)}); it resumes when the worker starts again")
                outcome = "interrupted"
        item_id = self.job_items.get(job_id)
        self.log.info(f"job {job_id} {outcome}" + (f" (item {item_id})" if item_id else ""))
        self._finished.append(job_id)
        self.wake()  # a finished job frees a slot: poll now

    def _settle(self, state: State, job_id: str, outcome: str, error: str | None
                ) -> list[dict]:
        """The item's end, appended with the job's: completed, or failed/dead per retry."""
        job = state.jobs.get(job_id) or {}
        item = state.items.get(job.get("item") or "")
        if item is None or item["status"] != "active":
            return []
        if outcome == "done":
            return [{"type": "queue:completed", "id": item["id"]}]
        # the item's own queue: a reloaded runbook may have moved the worker to another
        queue = self.runbook.queues.get(item["queue"], self.queue)
        return [queues.failure_event(queue, item, error or "job failed", time.time())]

    def _reap(self) -> None:
        while self._finished:
            job_id = self._finished.popleft()
            thread = self.threads.pop(job_id, None)
            if thread is not None:
                thread.join()
            self.job_items.pop(job_id, None)

    def _shutdown(self) -> None:
        """SIGTERM: take nothing new, let steps finish within the grace, then stop them and
        put the items of jobs stopped mid-step back to pending. A job stopped between steps
        keeps its item: the worker's next start resumes it at its next step."""
        running = len(self.threads)
        why = f"refused: {self.refused}; " if self.refused else ""
        self.notifier.stopping(f"{self.worker.name}: {why}stopping, draining {running} job(s)")
        again = "; Ctrl-C again stops them now" if running and not self.notifier.enabled \
            else ""
        self.log.info(f"stopping: draining {running} job(s), grace "
                      f"{self.drain_grace:.0f}s{again}")
        self.runner.stop(self.drain_grace)
        deadline = time.monotonic() + 10  # one bound for all: TimeoutStopSec is finite
        for thread in list(self.threads.values()):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        state = self.store.refresh()
        events = []
        for job_id, item_id in self.job_items.items():
            job = state.jobs.get(job_id)
            if job is None or job["status"] != "running":
                continue
            if job["step"] is not None and job["step_status"] != "running" and job.get("next"):
                self.log.info(f"job {job_id} stopped after step '{job['step']}'; it resumes "
                              f"at step '{job['next']}' when the worker starts again")
                continue
            events.append({"type": "job:finished", "id": job_id, "outcome": "cancelled",
                           "error": "worker stopped"})
            if item_id is not None:
                events.append({"type": "queue:released", "id": item_id})
        events.append({"type": "worker:stopped", "name": self.worker.name,
                       "invocation": os.environ.get("INVOCATION_ID")})
        try:
            self.store.append(*events)
        except OSError as e:
            self.log.error(f"could not record the stop ({describe(e)}); its jobs resume when "
                           "the worker starts again")
        self.log.info("stopped")

    # -- status -------------------------------------------------------------------------

    def _progress(self, job_id: str, what: str, detail: str) -> None:
        if what == "step":
            self.log.info(f"job {job_id} step {detail}")
            if detail.endswith("started"):
                self.notifier.status(self.status_line())
        elif what == "notify":
            self.log.info(f"job {job_id}: {detail}")
        elif what == "stalled":
            self.log.error(f"job {job_id}: {detail}")
        elif what == "unstalled":
            self.log.info(f"job {job_id}: {detail}")

    def status_line(self) -> str:
        with self.store.lock:
            return self._status_line()

    def _status_line(self) -> str:
        state = self.store.state
        w = self.worker
        running = [state.jobs[j] for j in list(self.threads) if j in state.jobs]
        parts = [f"{w.name}: {len(running)}/{w.concurrency} running"]
        if running:
            jobs = ", ".join(f"job {j['id'][:4]} step {j['step'] or '-'}" for j in running[:3])
            parts[0] += f" ({jobs})"
        if self.queue.type == "persisted":
            pending = state.waiting_count(self.project, self.queue.name)
            parts.append(f"{pending} pending")
        if self.last_poll is not None:
            parts.append(f"last poll {max(0, round(time.time() - self.last_poll))}s ago")
        if self.runbook_error:
            parts.append(f"runbook not reloaded: {self.runbook_error.splitlines()[0]}")
        return ", ".join(parts)
