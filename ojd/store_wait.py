"""A starting worker's wait for its store: a database down or out of reach, the state lock
held too long or a full state disk is waited out (``StoreWait``) instead of ending the
worker into its unit's start limit, and the signals that end that wait (``StartSignals``).
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from ojd.errors import LockTimeout, StoreUnavailable, describe
from ojd.notify import Log, Notifier
from ojd.runners.jobs import DISK_FULL
from ojd.store import Store

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
