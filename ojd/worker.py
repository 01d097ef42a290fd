"""The worker loop: take items from a queue, run the handler pipeline, settle the items.

Runs inside ``oj-worker@NAME.service`` or in the foreground (``ojd worker NAME
--foreground``). Signal handlers only record and wake the loop through a self-pipe; the loop
acts. A wake that arrives during a poll leaves a byte in the pipe, so it causes another poll:
no wake-up is lost.

Each job runs in a process of its own (``ojd.runners.jobprocess``), in its own transient
unit under systemd: the worker dispatches and watches (a pidfd per job process), so a
restart of the worker neither stops nor repeats work. A worker that starts adopts the job
processes of its jobs that still run and counts them against its concurrency; a job whose
process is gone is resumed where it stands.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable

from ojd import conf, identity, lastgood, paths, retention, wake, worker_control
from ojd import project as projects
from ojd.errors import OjError, describe, quoted
from ojd.events import worker_runbook, worker_started, worker_stopped
from ojd.notify import Log, Notifier
from ojd.runbook.model import Queue, Runbook, Worker
from ojd.runners.assignment import Assignment
from ojd.runners.intake import Intake
from ojd.runners.jobprocess import JobProcess
from ojd.runners.leases import Leases
from ojd.runners.pool import ProcessPool
from ojd.store import Store
from ojd.store_wait import Stopped, StoreWait

STATUS_EVERY = 1.0  # seconds between STATUS= updates while jobs run
CLOCK_SKEW_WARN = 1.0  # seconds off the shared database's clock that a worker warns of
# A worker refused by its check (ojd.trust) exits EX_CONFIG: RestartPreventExitStatus=78
EXIT_REFUSED = 78


def owner_id(worker: str) -> str:
    """Who holds a lease: the unit's invocation (new on every restart), else this process."""
    invocation = os.environ.get("INVOCATION_ID")
    if invocation:
        return f"{worker}/{invocation}"
    return f"{worker}/pid-{os.getpid()}-{time.monotonic_ns()}"


class WorkerLoop:
    """A worker's loop, of named parts that share what it runs (``Assignment``, which a
    runbook reload updates): the process pool of its jobs (``ojd.runners.pool``), its
    intake of items (``ojd.runners.intake``) and its side of leases
    (``ojd.runners.leases``). The loop waits for wake-ups, polls, follows the runbook and
    the recorded concurrency, and reports its status."""

    def __init__(self, store: Store, runbook: Runbook, project: str, worker: Worker, *,
                 log: Log | None = None, notifier: Notifier | None = None,
                 until_idle: bool = False, check: Callable[[], None] | None = None,
                 manager=None) -> None:
        self.store = store
        self.project = project
        self.log = log or Log(f"worker {worker.name}")
        self.notifier = notifier or Notifier()
        self.until_idle = until_idle
        self.manager = manager  # the systemd manager job scopes go to (None: sessions)
        self.check = check  # raises OjError when the worker must take nothing more
        self.refused: str | None = None
        self.owner = owner_id(worker.name)
        # its record's, lock's and unit's name: PROJECT:NAME
        self.full_name = projects.full_name(project, worker.name)
        self.work = Assignment(runbook, worker, project, self.owner, store.shared)
        # the runbook's, or the override of 'oj worker resize' read from the state each poll
        self.concurrency = worker.concurrency
        self.pool = ProcessPool(store, self.work, self.log, manager=manager,
                                refresh=self._refresh)
        self.intake = Intake(store, self.work, self.pool, self.log, self.notifier,
                             lambda: self._stop)
        self.leases = Leases(store, self.work, self.log)
        self.last_poll: float | None = None
        self.polls = 0
        self._retain_at = 0.0  # monotonic time of the next retention pass (ojd.retention)
        self._poll_error: str | None = None  # the last poll failure, said once
        self._stop = False
        self._stop_signal: int | None = None
        # the problem with the runbook on disk while the loaded one keeps running
        self.runbook_error: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # commits by other processes, on any host (a shared store): None with the WAL
        self._listener = None
        self._listen_error: str | None = None

    @property
    def runbook(self) -> Runbook:
        return self.work.runbook

    @property
    def worker(self) -> Worker:
        return self.work.worker

    @property
    def queue(self) -> Queue:
        return self.work.queue

    @property
    def procs(self) -> dict[str, JobProcess]:
        """The jobs running in the processes this worker watches."""
        return self.pool.procs

    # -- signals and wake-ups --------------------------------------------------------

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
        """Stop dispatching; running jobs go on in their own processes."""
        if not self._stop:
            self._stop = True
            self._stop_signal = signum
        self.wake()

    def _listen(self) -> None:
        """Wait on the store's change listener too, when it has one; one that cannot be had
        (or breaks) is said once, and the fallback poll carries on until a poll gets one."""
        if self._listener is not None:
            return
        try:
            self._listener = self.store.change_listener()
        except OjError as e:
            self.leases.store_failed()
            if str(e) != self._listen_error:
                self._listen_error = str(e)
                self.log.warning(f"{e}; pushes from other hosts wait for the poll")
            return
        if self._listener is not None and self._listen_error is not None:
            self._listen_error = None
            self.log.info("listening to the state again")

    def _listener_woke(self) -> bool:
        """Whether what the listener received asks for a poll (a commit that may bring work)."""
        assert self._listener is not None
        try:
            return self._listener.drain() > 0
        except OjError as e:
            self.leases.store_failed()
            self._listen_error = str(e)
            self.log.warning(f"{e}; polling until it is back")
            self._close_listener()
            return True

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:
                pass
            self._listener = None

    def _drain_wakes(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # -- the loop --------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._start_up()
        except Stopped:
            return self._stopped_starting()
        self._listen()
        self.notifier.ready(self.status_line())
        self.log.info(f"ready: queue '{self.queue.name}', pipeline '{self.worker.pipeline}', "
                      f"concurrency {self._concurrency_text()}")
        next_poll = 0.0
        poll_due = True
        while not self._stop:
            self._drain_wakes()
            # a job that ended after the select (which woke for something else) frees its
            # slot now: that is a poll's reason too, or its slot would idle until the next
            if self.pool.reap():
                poll_due = True
            if poll_due:
                # listening first: a commit between the poll's read and a LISTEN after it
                # would wake nobody until the fallback poll
                self._listen()
                self._poll_once()
                next_poll = time.monotonic() + self.worker.poll
            if self.until_idle and self._idle():
                self.log.info("queue drained; exiting (--until-idle)")
                break
            if self.procs:  # their steps move on in other processes: show where they are
                self._refresh()
            self.notifier.status(self.status_line())
            self.notifier.watchdog()
            timeout = max(0.0, next_poll - time.monotonic())
            retry_at = self._next_retry() if len(self.procs) < self.concurrency else None
            if retry_at is not None:  # a cooldown ends (an item falls due) before the poll
                timeout = min(timeout, max(0.0, retry_at - time.time()) + 0.01)
            opening = self.intake.rate_opening() if len(self.procs) < self.concurrency \
                else None
            if opening is not None:  # a rate holds takes back until then: no busy polling
                timeout = min(timeout, max(0.0, opening - time.time()) + 0.01)
            lease_end = self.leases.next_end()
            if lease_end is not None:  # a lease runs out before the fallback poll
                timeout = min(timeout, max(0.0, lease_end - time.time()) + 0.05)
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, self.notifier.watchdog_interval)
            poll_at = time.monotonic() + timeout
            if self.procs:
                timeout = min(timeout, STATUS_EVERY)
            fds = [self._wake_r, *self.pool.fds()]
            if self._listener is not None:
                fds.append(self._listener)
            woken = select.select(fds, [], [], timeout)[0]
            listener = self._listener
            if listener is not None and listener in woken and not self._listener_woke():
                woken.remove(listener)  # commits that bring no work
            # a wake, a job's end, the fallback poll or a cooldown's end polls; the status
            # tick alone does not
            poll_due = bool(woken) or time.monotonic() >= poll_at - 0.005
        self._close_listener()
        self._shutdown()
        # a wake now means nothing, and Python's exit restores SIGUSR1's default (death)
        # before the process is gone: a push in that moment must not kill it
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if self.refused:
            return EXIT_REFUSED
        return self._stop_code()

    def _start_up(self) -> None:
        """What a start does before its first poll, each step waiting out its store being
        away (``StoreWait``) instead of ending the worker into its unit's start limit."""
        wait = StoreWait(self.store, self.worker.name, self.log, self.notifier, self._wake_r,
                         lambda: self._stop)
        wait(self.store.load)
        self._follow_resize(quiet=True)  # the ready line says it
        self._remember_runbook()
        wait(lambda: self.store.append(worker_started(
            name=self.full_name, invocation=os.environ.get("INVOCATION_ID"),
            pid=os.getpid(), host=identity.host_name())))
        self._check_clock()
        wait(self._recover)

    def _stopped_starting(self) -> int:
        """Stopped while its start waited for the store (``StoreWait`` said so)."""
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # as after the loop (see run)
        return self._stop_code()

    def _stop_code(self) -> int:
        # Ctrl-C is an interruption (130, as a shell reports it); SIGTERM is the clean stop
        # the unit expects
        return 130 if self._stop_signal == signal.SIGINT else 0

    def _check_clock(self) -> None:
        """Say so when this host's clock is off the shared database's: a lease runs out by
        the clock of the host that looks, so a host ahead expires others' leases early (and
        their items run twice) and one behind holds a dead host's items too long."""
        if not self.store.shared:
            return
        try:
            offset = -self.store.log.clock_offset()
        except Exception:  # a database out of reach: the poll says so
            return
        if abs(offset) >= CLOCK_SKEW_WARN:
            self.log.warning(
                f"this host's clock is {offset:+.1f}s off the state database's; leases "
                f"({self.worker.lease:g}s) need every host's clock to agree well within a "
                "lease: keep the hosts in time (systemd-timesyncd, chrony)")

    def _refresh(self) -> bool:
        """Read what other processes appended; a database out of reach is said once (as a
        failed poll is) and the loop goes on: its jobs stall until it is back."""
        try:
            self.store.refresh()
        except Exception as e:
            self.leases.store_failed()
            why = describe(e)
            if why != self._poll_error:
                self._poll_error = why
                self.log.error(f"cannot read the state: {why}; retrying at each poll")
            return False
        return True

    def _poll_once(self) -> None:
        try:
            self.poll()
            self._keep_ready()
        except Exception as e:  # keep the loop alive
            self.leases.store_failed()
            # said once per distinct failure (a full disk fails every poll until freed)
            why = describe(e)
            if why != self._poll_error:
                self._poll_error = why
                self.log.error(f"poll failed: {why}; retrying at each poll")
        else:
            if self._poll_error is not None:
                self._poll_error = None
                self.log.info("polls work again")
        finally:
            self.pool.release_free()

    def poll(self) -> None:
        """Fill free slots with work. Called on start, wake, job end and the fallback timer."""
        if self.check is not None and self.refused is None:
            try:
                self.check()
            except OjError as e:  # take nothing more and exit; running jobs go on
                self.refused = str(e)
                self.log.error(self.refused)
                self.notifier.status(f"{self.worker.name}: refused: {self.refused}")
                self.request_stop()
        if self.refused is not None:
            return
        self.last_poll = time.time()
        self.polls += 1
        wake.mark_poll(self.store.root, self.full_name)
        self.reload_runbook()
        self.store.refresh()
        self._follow_resize()
        if self.work.lease:
            self.leases.expire()
        self._adopt(refresh=False)  # read just above
        free = self.concurrency - len(self.procs)
        if free > 0:
            self.intake.take(free)
        self._retain()

    def _retain(self) -> None:
        """Apply the retention policy (ojd.retention) at most once per RETAIN_EVERY."""
        if time.monotonic() < self._retain_at:
            return
        self._retain_at = time.monotonic() + retention.RETAIN_EVERY
        try:
            keep = retention.policy(conf.retention(self.store.root), self.queue, self.worker)
        except OjError as e:
            self.log.error(f"retention: {e}")
            return
        if not keep:
            return
        items, jobs, problems = retention.apply(self.store, self.project, self.queue.name,
                                                self.worker.name, keep, time.time())
        if items or jobs:
            self.log.info(f"retention: removed {items} item(s) and {jobs} job(s)")
        for problem in problems:
            self.log.warning(f"retention: {problem}")

    def _keep_ready(self) -> None:
        """While a slot is free, one job process waits ready for the next item."""
        if self._stop or self.refused or self.until_idle:
            return
        self.pool.keep_ready(self.concurrency)

    def _recover(self) -> None:
        """Take over the jobs a previous incarnation of this worker left: adopt those whose
        process still runs, resume the others where they stand."""
        self._adopt()  # it reads the state afresh

    def _adopt(self, refresh: bool = True) -> None:
        if refresh:  # a job that just ended must not look orphaned
            self.store.refresh()
        self.pool.adopt(self.concurrency, self._stop, self.leases.lost)

    def _next_retry(self) -> float | None:
        """When the earliest failed item of this queue may be taken again, or its earliest
        delayed item falls due: the loop sleeps no longer (nor polls before, for them)."""
        with self.store.lock:
            state = self.store.state
            times = [t for t in (state.next_retry(self.project, self.queue.name),
                                 state.next_due(self.project, self.queue.name))
                     if t is not None]
        return min(times) if times else None

    def _idle(self) -> bool:
        if self.procs:
            return False
        with self.store.lock:
            return not any(i["status"] in ("pending", "active", "failed")
                           for i in self.store.state.queue_items(self.project, self.queue.name))

    def _shutdown(self) -> None:
        """SIGTERM: take nothing new and exit. Running jobs go on in their own processes
        and settle their items; the next start of the worker watches them again."""
        running = len(self.procs)
        why = f"refused: {self.refused}; " if self.refused else ""
        self.notifier.stopping(f"{self.worker.name}: {why}stopping; {running} job(s) keep "
                               "running")
        shares_unit = self.manager is None and bool(os.environ.get("INVOCATION_ID"))
        if running and not shares_unit:
            self.log.info(f"stopping: {running} job(s) keep running in their own processes "
                          f"({', '.join(sorted(self.procs))}); 'oj job list' follows them")
        self.pool.close(interrupt=bool(running) and shares_unit)
        try:
            self.store.append(worker_stopped(name=self.full_name,
                                             invocation=os.environ.get("INVOCATION_ID"),
                                             host=identity.host_name()))
        except OSError as e:
            self.log.error(f"could not record the stop ({describe(e)})")
        self.log.info("stopped")

    # -- the runbook and its concurrency ---------------------------------------------

    def reload_runbook(self) -> None:
        """Load the runbook again when its files changed (the model is cached by content
        hash, so an unchanged one costs reading the files). New jobs use the new one; an
        invalid one is reported and the loaded one kept."""
        try:
            runbook = projects.load_if_changed(self.project, paths.cache_dir(self.store.root),
                                               self.runbook.digest)
            if runbook is None:
                self._runbook_problem(None)
                return
            worker = runbook.workers.get(self.worker.name)
            if worker is None:
                raise OjError(f"the runbook no longer defines worker {quoted(self.worker.name)}")
            # pushes follow it
            worker_control.record(self.store, runbook, self.project, worker.name)
        except OjError as e:
            self._runbook_problem(str(e))
            return
        except OSError as e:
            self._runbook_problem(f"cannot read the runbook: {e}")
            return
        self.work.runbook, self.work.worker = runbook, worker
        self.pool.drop_ready()  # it holds the previous runbook
        self._runbook_problem(None)
        self._remember_runbook()
        self.log.info(f"runbook reloaded: queue {quoted(self.queue.name)}, pipeline "
                      f"{quoted(worker.pipeline)}, concurrency {worker.concurrency}")

    def _follow_resize(self, quiet: bool = False) -> None:
        """Keep to the concurrency recorded for this worker (``oj worker resize``), else
        the runbook's. Fewer slots stop nothing: running jobs finish, and no new one starts
        until fewer run."""
        with self.store.lock:
            recorded = self.store.state.workers.get(self.full_name) or {}
        resized = recorded.get("resized") if recorded.get("project") == self.project else None
        concurrency = resized or self.worker.concurrency
        if concurrency != self.concurrency:
            self.concurrency = concurrency
            if not quiet:
                self.log.info(f"concurrency now {self._concurrency_text()}")
            if len(self.procs) >= concurrency:
                self.pool.drop_ready()  # no slot is free for the job process it holds

    def _concurrency_text(self) -> str:
        if self.concurrency == self.worker.concurrency:
            return str(self.concurrency)
        return f"{self.concurrency} (resized; the runbook says {self.worker.concurrency})"

    def _remember_runbook(self) -> None:
        """The queues of the runbook this worker runs, for pushes while the files on disk
        are broken (``ojd.lastgood``)."""
        lastgood.remember(self.project, paths.cache_dir(self.store.root),
                          projects.index_of(self.runbook))

    def _runbook_problem(self, problem: str | None) -> None:
        if problem == self.runbook_error:
            return
        if problem is not None:
            for line in problem.splitlines():
                self.log.error(line)
            self.log.error("runbook not reloaded: keeping the previous one; "
                           "'oj runbook check' lists the problems")
        # recorded when it changes, so 'oj worker list' and 'oj status' show it too; a
        # failed record is tried again at the next poll
        self.store.append(worker_runbook(name=self.full_name, problem=problem))
        self.runbook_error = problem

    # -- status ----------------------------------------------------------------------

    def status_line(self) -> str:
        with self.store.lock:
            return self._status_line()

    def _status_line(self) -> str:
        state = self.store.state
        w = self.worker
        running = [state.jobs[j] for j in self.procs if j in state.jobs]
        parts = [f"{w.name}: {len(running)}/{self.concurrency} running"]
        if running:
            jobs = ", ".join(f"job {j['id'][:4]} " + ("waiting for an answer"
                                                      if j["status"] == "waiting"
                                                      else f"step {j['step'] or '-'}")
                             for j in running[:3])
            parts[0] += f" ({jobs})"
        if self.queue.type == "persisted":
            pending = state.waiting_count(self.project, self.queue.name)
            parts.append(f"{pending} pending")
        if self.last_poll is not None:
            parts.append(f"last poll {max(0, round(time.time() - self.last_poll))}s ago")
        if self.runbook_error:
            parts.append(f"runbook not reloaded: {self.runbook_error.splitlines()[0]}")
        return ", ".join(parts)
