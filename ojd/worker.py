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

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from ojd import bashrun, identity, queues, wake
from ojd.duration import format_duration
from ojd.errors import LockTimeout, OjError, StoreUnavailable
from ojd.notify import Log, Notifier, one_line
from ojd.runbook.model import Runbook, Worker
from ojd.runbook.template import TemplateError, render_shell
from ojd.runners import jobprocess
from ojd.runners.jobprocess import MAX_RESUMES, JobProcess
from ojd.runners.jobs import (
    DISK_FULL,
    RENEW_RETRY,
    fail_job,
    job_created_event,
    terminate_group,
)
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store

STATUS_EVERY = 1.0  # seconds between STATUS= updates while jobs run
CLOCK_SKEW_WARN = 1.0  # seconds off the shared database's clock that a worker warns of
# A worker refused by its check (ojd.trust) exits EX_CONFIG: RestartPreventExitStatus=78
EXIT_REFUSED = 78
# A starting worker tries its store again after this long, doubling up to STORE_RETRY_MAX
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 5.0
# What libpq says of a connection refused for good (its own words, in the StoreUnavailable
# it became): a bad URL or option, a refused password or login, a database or role that does
# not exist. No wait mends those: the start fails at once, as it always did.
_REFUSED_FOR_GOOD = ("invalid ", "authentication failed", "no pg_hba.conf entry",
                     "does not exist", "password", 'missing "="', "unrecognized",
                     "not permitted to log in", "permission denied")
T = TypeVar("T")


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


def outage(error: BaseException) -> str | None:
    """Why ``error`` is the store being away for a while: its database down or out of reach,
    the state lock held past OJ_LOCK_TIMEOUT, a full state disk (what a job's step end waits
    out too, ``ojd.runners.jobs``); None for an error no wait mends (a bad URL, a refused
    password, a corrupt WAL)."""
    if isinstance(error, OSError):
        return describe(error) if error.errno in DISK_FULL else None
    if isinstance(error, LockTimeout):
        return str(error)
    if isinstance(error, StoreUnavailable):
        said = str(error.__context__ or error)  # libpq's words, before oj's prefix
        return None if any(w in said for w in _REFUSED_FOR_GOOD) else str(error)
    return None


class Stopped(Exception):
    """A stop (SIGTERM, Ctrl-C) while a start waited for its store."""


class StoreWait:
    """A starting worker's wait for its store (``outage``): each step of the start is tried
    again after 0.5 s, then 1, 2, 4 and every 5 s, until it works, fails for good (raised
    as before) or the worker is stopped (``stopped()``, with a byte in ``wake_fd``: Stopped).
    Meanwhile the manager hears why (READY=1 with the STATUS=, so that neither
    TimeoutStartSec= nor a waiting `systemctl start` fails on an outage, and the unit is
    not restarted into its start limit) and the watchdog is fed; the log says the reason
    once (again when it changes) and when the store is back. A wake retries at once."""

    def __init__(self, store: Store, name: str, log: Log, notifier: Notifier, wake_fd: int,
                 stopped: Callable[[], bool]) -> None:
        self.store = store
        self.name = name
        self.log = log
        self.notifier = notifier
        self.wake_fd = wake_fd
        self.stopped = stopped
        self.told: str | None = None
        self.readied = False

    def __call__(self, step: Callable[[], T]) -> T:
        delay = STORE_RETRY_FIRST
        while True:
            try:
                result = step()
            except Exception as e:
                why = outage(e)
                if why is None:
                    raise
            else:
                if self.told is not None:
                    self.told = None
                    self.log.info(f"{self._what()} answers again; starting")
                return result
            self._waiting(why)
            self._pause(delay)
            delay = min(delay * 2, STORE_RETRY_MAX)

    def _what(self) -> str:
        return "the state database" if self.store.shared else "the state dir"

    def _waiting(self, why: str) -> None:
        if why != self.told:
            self.told = why
            self.log.warning(f"waiting for {self._what()}: {why}; retrying")
        shown = why.removeprefix("state database ") if self.store.shared else why
        status = f"{self.name}: waiting for {self._what()}: {shown}; retrying"
        if self.readied:
            self.notifier.status(status)
        else:  # "active" with this status, rather than a start that times out or fails
            self.readied = True
            self.notifier.ready(status)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopped():
            self.notifier.watchdog()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            interval = self.notifier.watchdog_interval
            if select.select([self.wake_fd], [], [], left if interval is None
                             else min(left, interval))[0]:
                try:
                    while os.read(self.wake_fd, 4096):
                        pass
                except BlockingIOError:
                    pass
                if not self.stopped():
                    return  # a wake (a push, `systemctl reload`): try now
        self._give_up()

    def _give_up(self) -> None:
        """Stopped while waiting: nothing was taken, and nothing can be recorded (the store
        is away); jobs it already watched go on in their own processes."""
        self.notifier.stopping(f"{self.name}: stopping; {self._what()} never answered")
        self.log.info("stopped before the state answered")
        raise Stopped


class StartSignals:
    """Signals of a worker before its loop takes them over (``WorkerLoop.install_signals``):
    SIGTERM and Ctrl-C stop a wait for the store (``signum`` says which), SIGUSR1 (a wake)
    only retries it instead of killing the process, as its default would."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, self._received)

    def _received(self, signum: int, _frame) -> None:
        if signum != signal.SIGUSR1 and self.signum is None:
            self.signum = signum
        try:
            os.write(self.wake_w, b"w")
        except OSError:
            pass  # full of wakes already (or closed: the worker is on its way out)

    def stopped(self) -> bool:
        return self.signum is not None

    def exit_code(self) -> int:
        return 130 if self.signum == signal.SIGINT else 0

    def close(self) -> None:
        """Stop listening: the handlers still ours (no loop took over) are set back, SIGUSR1
        to ignored (a wake now must not kill the worker on its way out)."""
        for signum, then in ((signal.SIGTERM, signal.SIG_DFL),
                             (signal.SIGINT, signal.default_int_handler),
                             (signal.SIGUSR1, signal.SIG_IGN)):
            if signal.getsignal(signum) == self._received:
                signal.signal(signum, then)
        os.close(self.wake_r)
        os.close(self.wake_w)


def external_key(entry: dict) -> str:
    """An external item's identity: its ``id`` when it has one, else its data."""
    ident = entry.get("id")
    if isinstance(ident, (str, int)) and not isinstance(ident, bool):
        return f"id:{ident}"
    return "data:" + queues.item_key(entry)


class WorkerLoop:
    def __init__(self, store: Store, runbook: Runbook, project: str, worker: Worker, *,
                 log: Log | None = None, notifier: Notifier | None = None,
                 until_idle: bool = False, check: Callable[[], None] | None = None,
                 manager=None) -> None:
        self.store = store
        self.runbook = runbook
        self.project = project
        self.worker = worker
        self.queue = runbook.queues[worker.queue]
        self.log = log or Log(f"worker {worker.name}")
        self.notifier = notifier or Notifier()
        self.until_idle = until_idle
        self.manager = manager  # the systemd manager job scopes go to (None: sessions)
        self.check = check  # raises OjError when the worker must take nothing more
        self.refused: str | None = None
        self.owner = owner_id(worker.name)
        # the runbook's, or the override of 'oj worker resize' read from the state each poll
        self.concurrency = worker.concurrency
        self.procs: dict[str, JobProcess] = {}  # job id -> its process, running
        self._ready: jobprocess.Ready | None = None  # a job process waiting for an item
        self._pidfds: dict[int, str] = {}  # pidfd -> job id: readable when the job ends
        # a runner's "free" pipe -> job id: readable when the runner has ended the job and
        # waits for another; freed runners are given the next items of the same poll
        self._frees: dict[int, str] = {}
        self._free: list[JobProcess] = []
        # job id -> how often its process ended with the job still live (a crash loop)
        self._deaths: dict[str, int] = {}
        self.last_poll: float | None = None
        self.polls = 0
        self._poll_error: str | None = None  # the last poll failure, said once
        self._stop = False
        self._stop_signal: int | None = None
        # the problem with the runbook on disk while the loaded one keeps running
        self.runbook_error: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # commits by other processes, on any host (a shared store): None with the WAL
        self._listener = None
        self._listen_error: str | None = None
        # since when the store has answered without a break (monotonic): leases are expired
        # only after a renewal had its chance since (see _expiry_wait)
        self._reachable_since = time.monotonic()

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
        """Stop dispatching; running jobs go on in their own processes."""
        if not self._stop:
            self._stop = True
            self._stop_signal = signum
        self.wake()

    def _next_lease_end(self) -> float | None:
        """When the next lease this worker may expire runs out (or becomes expirable)."""
        if not self.lease or self.queue.type == "external":
            return None
        with self.store.lock:
            end = self.store.state.next_lease_end(self.project, self.queue.name,
                                                  unless=self._runs_here)
        return None if end is None else max(end, time.time() + self._expiry_wait())

    def _runs_here(self, item: dict) -> bool:
        """Whether the item's job runs in a live process on this host: its lease is renewed
        by that process as soon as the store answers it, and never expired from here."""
        proc = (self.store.state.jobs.get(item.get("job") or "") or {}).get("process")
        return jobprocess.alive(proc)

    def _expiry_wait(self) -> float:
        """How long before leases may be expired: a job's process renews its lease a second
        after its store answers again (the worker may have been cut off too, or the database
        restarted), so an outage as long as a lease ends with the renewal, not the expiry."""
        assert self.lease
        grace = self.lease / 3 + 2 * RENEW_RETRY
        return max(0.0, self._reachable_since + grace - time.monotonic())

    def _store_failed(self) -> None:
        self._reachable_since = time.monotonic()

    def _listen(self) -> None:
        """Wait on the store's change listener too, when it has one; one that cannot be had
        (or breaks) is said once, and the fallback poll carries on until a poll gets one."""
        if self._listener is not None:
            return
        try:
            self._listener = self.store.change_listener()
        except OjError as e:
            self._store_failed()
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
            self._store_failed()
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

    # -- the loop -----------------------------------------------------------------------

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
            if self._reap():
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
            if retry_at is not None:  # a cooldown ends before the fallback poll
                timeout = min(timeout, max(0.0, retry_at - time.time()) + 0.01)
            lease_end = self._next_lease_end()
            if lease_end is not None:  # a lease runs out before the fallback poll
                timeout = min(timeout, max(0.0, lease_end - time.time()) + 0.05)
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, self.notifier.watchdog_interval)
            poll_at = time.monotonic() + timeout
            if self.procs:
                timeout = min(timeout, STATUS_EVERY)
            fds = [self._wake_r, *self._pidfds, *self._frees]
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
        wait(lambda: self.store.append({
            "type": "worker:started", "name": self.worker.name,
            "invocation": os.environ.get("INVOCATION_ID"), "pid": os.getpid(),
            "host": identity.host_name()}))
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
            self._store_failed()
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
            self._store_failed()
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
            self._release_free()

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
        wake.mark_poll(self.store.root, self.worker.name)
        self.reload_runbook()
        self.store.refresh()
        self._follow_resize()
        if self.lease:
            self._expire_leases()
        self._adopt(refresh=False)  # read just above
        free = self.concurrency - len(self.procs)
        if free <= 0:
            return
        if self.queue.type == "external":
            self._poll_external(free)
            return
        # an item another process (or host) took between the look and the take is a lost
        # race, not the end of the queue: look again, with the state that take caught up to
        tries = free * 4
        skip: set[str] = set()
        while free > 0 and tries > 0:
            with self.store.lock:  # a look before forking: most polls find nothing
                item = self.store.state.next_takeable(self.project, self.queue.name,
                                                      time.time(), skip)
                if item is None:
                    return
                job = self.store.state.jobs.get(item.get("job") or "")
            if job is not None and job["status"] in LIVE_JOB_STATES and job["id"] in self.procs:
                # its job still runs here (stuck past its lease): a later poll sees it
                # settled; the items behind it are not held up
                skip.add(item["id"])
                continue
            tries -= 1
            if job is not None and job["status"] in LIVE_JOB_STATES:
                free -= self._take_over(item["id"], job["id"])
            else:
                free -= self._start_new(self._take)

    @property
    def lease(self) -> float | None:
        """Items are leased only in a shared store: one host's worker alone (the WAL
        directory) adopts or resumes its own jobs instead."""
        return self.worker.lease if self.store.shared else None

    def _take(self, tx, job_id: str) -> list[dict]:
        """The take of the oldest takeable item by a new job (in the job process's append)."""
        skip: set[str] = set()
        while True:
            item = tx.state.next_takeable(self.project, self.queue.name, time.time(), skip)
            if item is None or job_id in tx.state.jobs:
                raise jobprocess.NothingToRun()
            live = tx.state.jobs.get(item.get("job") or "")
            if live is None or live["status"] not in LIVE_JOB_STATES:
                break
            skip.add(item["id"])  # its job goes on (_take_over's): the next one is ours
        job = job_created_event(tx, self.store.root, self.runbook, self.project,
                                self.worker.pipeline, self._vars_for(item["data"]),
                                self.project, item=item["id"], worker=self.worker.name,
                                owner=self.owner, job_id=job_id)
        return [job, queues.take_event(item, self.owner, job_id, self.lease)]

    def _expire_leases(self) -> None:
        """Items whose job's process (on any host) stopped renewing their lease go back to
        pending, the attempt not counted; their jobs are resumed by the next take."""
        if self._expiry_wait() > 0:
            return
        now = time.time()
        with self.store.lock:
            if not self.store.state.expired_leases(self.project, self.queue.name, now,
                                                   unless=self._runs_here):
                return
        with self.store.transaction() as tx:
            for item in tx.state.expired_leases(self.project, self.queue.name, now,
                                                unless=self._runs_here):
                proc = (tx.state.jobs.get(item["job"]) or {}).get("process") or {}
                self.log.warning(
                    f"item {item['id']}: the lease of job {item['job']} (process "
                    f"{proc.get('pid')} on {proc.get('host') or '?'}) expired "
                    f"{now - item['lease_until']:.0f}s ago; back to pending, its job to be "
                    "resumed here or on another host")
                tx.append({"type": "queue:lease_expired", "id": item["id"], "job": item["job"]})

    def _take_over(self, item_id: str, job_id: str) -> bool:
        """Take an item whose job lost its lease and resume that job from its step, in the
        append that records the new process; False when another host was faster."""
        def decide(tx) -> list[dict]:
            item = tx.state.items.get(item_id)
            job = tx.state.jobs.get(job_id)
            if item is None or item["status"] != "pending" or item.get("job") != job_id \
                    or job is None or job["status"] not in LIVE_JOB_STATES:
                raise jobprocess.NothingToRun()
            return [{"type": "job:resumed", "id": job_id, "by": self.owner},
                    queues.take_event(item, self.owner, job_id, self.lease)]

        self.log.info(f"resuming job {job_id} (item {item_id}) after its lease expired")
        try:
            proc = jobprocess.spawn(self.store, self.runbook, job_id, owner=self.owner,
                                    manager=self.manager, warn=self.log.warning,
                                    decide=decide)
        except jobprocess.NothingToRun:
            return False
        self._watch(proc)
        return True

    def _start_new(self, make: Callable) -> bool:
        """Start a job process (the ready one, else a new one) for a job that
        ``make(tx, job_id)`` creates in the same append as the process's record; False
        when there was nothing to create."""
        ready, self._ready = self._ready, None
        if ready is None:
            ready = self._reuse() or self._prepare()
        try:
            proc = jobprocess.give(self.store, ready, owner=self.owner,
                                   decide=lambda tx: make(tx, ready.job_id), sync=False)
        except jobprocess.NothingToRun:
            self._ready = ready  # for the next item
            return False
        self._watch(proc)
        return True

    def _prepare(self) -> jobprocess.Ready:
        with self.store.lock:
            job_id = queues.new_id(self.store.state.jobs)
        return jobprocess.prepare(self.store, self.runbook, job_id, manager=self.manager,
                                  warn=self.log.warning, name=self.worker.pipeline,
                                  reusable=True)

    def _reuse(self) -> jobprocess.Ready | None:
        """A runner that ended its job, made ready for a new one (no fork, no imports, its
        pages its own already); None when there is none."""
        while self._free:
            proc = self._free.pop()
            if proc.runbook is not self.runbook \
                    or not jobprocess.alive({"pid": proc.pid, "start": proc.start}):
                jobprocess.discard(proc)
                continue
            with self.store.lock:
                job_id = queues.new_id(self.store.state.jobs)
            try:
                return jobprocess.again(proc, job_id, manager=self.manager,
                                        warn=self.log.warning, name=self.worker.pipeline)
            except Exception as e:  # it is gone: a fork does instead
                self.log.warning(f"could not reuse job process {proc.pid}: {describe(e)}")
        return None

    def _release_free(self) -> None:
        """Free runners that found no item end: a ready process waits in a fresh fork."""
        while self._free:
            jobprocess.discard(self._free.pop())

    def _keep_ready(self) -> None:
        """While a slot is free, one job process waits ready for the next item."""
        if self._ready is not None or self._stop or self.refused or self.until_idle \
                or len(self.procs) >= self.concurrency:
            return
        try:
            self._ready = self._reuse() or self._prepare()
        except Exception as e:  # the next item forks its own
            self.log.warning(f"could not prepare a job process: {describe(e)}")

    def _drop_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            jobprocess.discard(ready)

    def reload_runbook(self) -> None:
        """Load the runbook again when its files changed (the model is cached by content
        hash, so an unchanged one costs reading the files). New jobs use the new one; an
        invalid one is reported and the loaded one kept."""
        from ojd import paths
        from ojd import project as projects
        from ojd.errors import quoted

        try:
            runbook = projects.load_if_changed(self.project, paths.cache_dir(self.store.root),
                                               self.runbook.digest)
            if runbook is None:
                self._runbook_problem(None)
                return
            worker = runbook.workers.get(self.worker.name)
            if worker is None:
                raise OjError(f"the runbook no longer defines worker {quoted(self.worker.name)}")
            from ojd import worker_control

            # pushes follow it
            worker_control.record(self.store, runbook, self.project, worker.name)
        except OjError as e:
            self._runbook_problem(str(e))
            return
        except OSError as e:
            self._runbook_problem(f"cannot read the runbook: {e}")
            return
        self.runbook, self.worker = runbook, worker
        self.queue = runbook.queues[worker.queue]
        self._drop_ready()  # it holds the previous runbook
        self._runbook_problem(None)
        self._remember_runbook()
        self.log.info(f"runbook reloaded: queue {quoted(self.queue.name)}, pipeline "
                      f"{quoted(worker.pipeline)}, concurrency {worker.concurrency}")

    def _follow_resize(self, quiet: bool = False) -> None:
        """Keep to the concurrency recorded for this worker (``oj worker resize``), else
        the runbook's. Fewer slots stop nothing: running jobs finish, and no new one starts
        until fewer run."""
        with self.store.lock:
            recorded = self.store.state.workers.get(self.worker.name) or {}
        resized = recorded.get("resized") if recorded.get("project") == self.project else None
        concurrency = resized or self.worker.concurrency
        if concurrency != self.concurrency:
            self.concurrency = concurrency
            if not quiet:
                self.log.info(f"concurrency now {self._concurrency_text()}")
            if len(self.procs) >= concurrency:
                self._drop_ready()  # no slot is free for the job process it holds

    def _concurrency_text(self) -> str:
        if self.concurrency == self.worker.concurrency:
            return str(self.concurrency)
        return f"{self.concurrency} (resized; the runbook says {self.worker.concurrency})"

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
        if self.procs:
            return False
        with self.store.lock:
            return not any(i["status"] in ("pending", "active", "failed")
                           for i in self.store.state.queue_items(self.project, self.queue.name))

    def _vars_for(self, data: dict) -> dict:
        pipeline = self.runbook.pipelines[self.worker.pipeline]
        return {pipeline.vars[0]: data}

    def _poll_external(self, free: int) -> None:
        assert self.queue.list_cmd and self.queue.take_cmd
        proc = self._external("list", self.queue.list_cmd)
        if proc is None:
            return
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
            taken = self._external("take", take)
            if taken is None or taken.returncode != 0:
                continue  # somebody else claimed it
            def create(tx, job_id: str, entry: dict = entry) -> list[dict]:
                if job_id in tx.state.jobs:
                    raise jobprocess.NothingToRun()
                return [job_created_event(tx, self.store.root, self.runbook, self.project,
                                          self.worker.pipeline, self._vars_for(entry),
                                          self.project, worker=self.worker.name,
                                          owner=self.owner, job_id=job_id)]

            self._start_new(create)
            in_flight.add(key)
            free -= 1

    def _external(self, what: str, script: str) -> subprocess.CompletedProcess | None:
        """Run an external queue's list or take command for at most the queue's timeout,
        feeding the watchdog meanwhile (a hung command must neither block the loop for ever
        nor get the worker killed as hung); None, said, when it ran past it."""
        with bashrun.Script(script) as s:
            proc = subprocess.Popen(s.argv, pass_fds=s.fds, cwd=self.project, text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + self.queue.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                out, err = proc.communicate(timeout=max(0.0, min(1.0, left)))
                return subprocess.CompletedProcess(s.argv, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                self.notifier.watchdog()
                if left > 1.0 and not self._stop:
                    continue
            terminate_group(proc.pid, proc)
            proc.communicate()
            if not self._stop:  # a stop asked for ends it without a word
                self.log.error(f"queue '{self.queue.name}' {what} command ran past its "
                               f"timeout ({format_duration(self.queue.timeout)}) and was "
                               f"stopped: {one_line(script.strip())[:200]}")
            return None

    def _external_in_flight(self) -> set[str]:
        """Keys of the external items this worker's running jobs work on (resumed ones too:
        the item is the job's pipeline var)."""
        var = self.runbook.pipelines[self.worker.pipeline].vars[0]
        with self.store.lock:
            jobs = self.store.state.jobs
            return {external_key(jobs[j]["vars"].get(var) or {})
                    for j in self.procs if j in jobs}

    def _recover(self) -> None:
        """Take over the jobs a previous incarnation of this worker left: adopt those whose
        process still runs, resume the others where they stand."""
        self._adopt()  # it reads the state afresh

    def _adopt(self, refresh: bool = True) -> None:
        if refresh:  # a job that just ended must not look orphaned
            self.store.refresh()
        with self.store.lock:
            mine = [j for j in self.store.state.jobs.values()
                    if j["status"] in LIVE_JOB_STATES and j["worker"] == self.worker.name
                    and j["project"] == self.project and j["id"] not in self.procs]
        orphans = []
        for job in mine:
            proc = job.get("process")
            if identity.elsewhere(proc):
                continue  # another host's: its lease, not this host, says when it is lost
            if proc is None and self.lease and self._lease_lost(job):
                continue  # its item is pending again: the take resumes it
            if jobprocess.alive(proc):  # running anyway: it takes its slot
                self.log.info(f"job {job['id']} runs in process {proc['pid']}"
                              + (f" ({proc['unit']})" if proc.get("unit") else "")
                              + ": watching it")
                self._watch(JobProcess(job["id"], proc["pid"], proc["start"],
                                       proc.get("unit"), child=False))
            else:
                orphans.append(job)
        for job in orphans:  # resumed into free slots only; the rest at a later poll
            if self._stop or len(self.procs) >= self.concurrency:
                break
            if self._deaths.get(job["id"], 0) > MAX_RESUMES:
                self._fail_job(job["id"], f"its process ended {MAX_RESUMES + 1} times "
                               "without finishing it")
                continue
            self.log.info(f"resuming job {job['id']} (item {job['item']}) at step "
                          f"'{job.get('next') or job['step'] or 'first'}'")
            self._start(job["id"], job.get("process"))

    def _lease_lost(self, job: dict) -> bool:
        with self.store.lock:
            item = self.store.state.items.get(job.get("item") or "")
        return item is not None and item["status"] == "pending" and item.get("job") == job["id"]

    def _start(self, job_id: str, replaces: dict | None) -> None:
        try:
            proc = jobprocess.spawn(self.store, self.runbook, job_id, owner=self.owner,
                                    manager=self.manager, warn=self.log.warning,
                                    replaces=replaces)
        except jobprocess.TakenOver as e:  # someone else resumed it: watched at next poll
            self.log.info(str(e))
            return
        except Exception as e:
            self.log.error(f"job {job_id} could not start: {describe(e)}")
            self._fail_job(job_id, f"oj could not start it: {describe(e)}")
            return
        self._watch(proc)

    def _watch(self, proc: JobProcess) -> None:
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            fd = None
        if fd is not None and proc.start and \
                jobprocess.proc_start_time(proc.pid) != proc.start and not proc.child:
            os.close(fd)  # the pid is another process's now
            fd = None
        self.procs[proc.job_id] = proc
        if fd is None:
            self._ended(proc.job_id)
            return
        self._pidfds[fd] = proc.job_id
        if proc.free is not None:
            self._frees[proc.free] = proc.job_id

    def _reap(self) -> bool:
        """Free the slots of jobs that ended: their runner said "free", or their process
        is gone (its pidfd is readable). Whether any did."""
        if not self._pidfds:
            return False
        ready = select.select([*self._frees, *self._pidfds], [], [], 0)[0]
        for fd in ready:
            if fd in self._frees:
                self._freed(fd)
        for fd in ready:
            if fd in self._pidfds:
                job_id = self._pidfds.pop(fd)
                os.close(fd)
                self._ended(job_id)
        return bool(ready)

    def _freed(self, fd: int) -> None:
        job_id = self._frees.pop(fd)
        proc = self.procs.get(job_id)
        try:
            said = os.read(fd, 64)
        except OSError:
            said = b""
        if proc is None or said != b"free\n":
            return  # it died: its pidfd says so
        for pidfd, of in list(self._pidfds.items()):
            if of == job_id:
                del self._pidfds[pidfd]
                os.close(pidfd)
        self._ended(job_id, exited=False)
        self._free.append(proc)

    def _ended(self, job_id: str, exited: bool = True) -> None:
        proc = self.procs.pop(job_id, None)
        code = None
        if proc is not None and exited:
            for fd in (proc.w, proc.free):  # a runner's pipes
                if fd is not None:
                    self._frees.pop(fd, None)
                    os.close(fd)
        if proc is not None and proc.child and exited:
            try:
                code = os.waitstatus_to_exitcode(os.waitpid(proc.pid, 0)[1])
            except ChildProcessError:
                pass
        # a state out of reach: the job's end is seen by a later poll, no death counted
        seen = self._refresh()
        job = self.store.state.jobs.get(job_id) or {}
        status = job.get("status", "gone")
        if not seen:
            pass
        elif status in LIVE_JOB_STATES:
            self._deaths[job_id] = self._deaths.get(job_id, 0) + 1
        else:
            self._deaths.pop(job_id, None)
        item = job.get("item")
        how = f" (process exit {code})" if code not in (None, 0) else ""
        self.log.info(f"job {job_id} {status}" + (f" (item {item})" if item else "") + how)
        # a job still live without its process: resumed by the _adopt of the next poll

    def _interrupt_jobs(self, grace: float = 10.0) -> None:
        """Jobs that share this worker's unit (no unit of their own: a --run-as worker) would
        get only SIGKILL once the worker is gone (KillMode=mixed): SIGTERM them now, so each
        stops its step and stays resumable at it."""
        self.log.info(f"{len(self.procs)} job(s) run in this unit: interrupting them; they "
                      "resume at their step when the worker starts again")
        for proc in self.procs.values():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while self.procs and time.monotonic() < deadline:
            for job_id, proc in list(self.procs.items()):
                if not jobprocess.alive({"pid": proc.pid, "start": proc.start}):
                    self.procs.pop(job_id)
                    if proc.child:
                        try:
                            os.waitpid(proc.pid, os.WNOHANG)
                        except ChildProcessError:
                            pass
            time.sleep(0.05)

    def _fail_job(self, job_id: str, error: str) -> None:
        try:
            fail_job(self.store, self.runbook, job_id, error)
        except Exception as e:
            self.log.error(f"job {job_id}: its failure could not be recorded ({describe(e)})")

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
        self._drop_ready()
        self._release_free()
        if running and shares_unit:
            self._interrupt_jobs()
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        # running jobs' runners find no worker to say "free" to when they end, and exit
        for proc in self.procs.values():
            for fd in (proc.w, proc.free):
                if fd is not None:
                    os.close(fd)
        self._frees.clear()
        try:
            self.store.append({"type": "worker:stopped", "name": self.worker.name,
                               "invocation": os.environ.get("INVOCATION_ID"),
                               "host": identity.host_name()})
        except OSError as e:
            self.log.error(f"could not record the stop ({describe(e)})")
        self.log.info("stopped")

    # -- status -------------------------------------------------------------------------

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
