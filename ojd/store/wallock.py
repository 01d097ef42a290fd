"""The WAL directory's lock: ``flock`` on its ``lock`` file, exclusive for appends and shared
for a reader's re-check of a damaged tail, with a bounded, fair wait.

Here rather than in ojd.store.wal because waiting is its own problem: a holder may be stopped or
hung (SIGSTOP, a dead NFS server), so a wait names the holder after a second and gives up at
OJ_LOCK_TIMEOUT; and a wait given up on must never disturb a lock the process takes later.
``WalLock`` is the whole of it: the directory (ojd.store.wal) holds one and hands it the
per-process open of its lock file; nothing here knows the directory's other parts.
Imported by every CLI call through ojd.store.wal: builtins, fcntl and ojd.errors (which the
CLI has loaded already) only at import time.
"""

from __future__ import annotations

import fcntl
import os
import sys
from _thread import RLock, allocate_lock, start_new_thread

from ojd.errors import LockTimeout, UsageError, escaped
from ojd.store.walsegments import EXCLUSIVE, SHARED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _flock(fd: int, path: str, op: int) -> int:
    """flock ``fd``, waiting as long as OJ_LOCK_TIMEOUT (default 30 s) allows; returns the fd
    that holds the lock: ``fd``, or another open of the same file when it had to wait.

    A stopped or hung holder (SIGSTOP, a dead NFS server) would otherwise block every push
    forever without a word: after a second the wait says who holds the lock, and at the
    bound it gives up with an error naming them. The wait is a blocking flock in a helper
    thread (polling with LOCK_NB would lose the lock to busy writers for seconds) on an open
    file description of its own: a wait given up on may still get the lock later, and must
    then neither keep it nor release one that ``fd`` took meanwhile."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    limit = lock_timeout()
    own = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # flock needs no write access
    got = allocate_lock()
    got.acquire()
    guard = allocate_lock()
    outcome: list[object] = []  # "cancelled" from the caller, or the flock's result

    def wait_for_it() -> None:
        try:
            fcntl.flock(own, op)
            result: object = True
        except OSError as e:
            result = e
        with guard:
            if outcome:  # the caller gave up meanwhile: the lock and the fd are ours to drop
                os.close(own)
                return
            outcome.append(result)
        got.release()

    start_new_thread(wait_for_it, ())
    if not got.acquire(timeout=min(1.0, limit)):
        print(f"oj: waiting for the state lock {path}, held by {lock_holders(fd)}",
              file=sys.stderr)
        if not got.acquire(timeout=max(0.0, limit - 1.0)):
            with guard:
                if not outcome:
                    outcome.append("cancelled")
                    raise LockTimeout(f"the state lock {path} is still held by "
                                      f"{lock_holders(fd)} after {limit:g}s; resume or stop "
                                      "that process (or raise OJ_LOCK_TIMEOUT)")
    if isinstance(outcome[0], OSError):
        os.close(own)
        raise outcome[0]
    return own


def lock_timeout() -> float:
    text = os.environ.get("OJ_LOCK_TIMEOUT", "30")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UsageError(f"OJ_LOCK_TIMEOUT={text!r} is not a number of seconds; e.g. 30")
    return value


def lock_holders(fd: int) -> str:
    """Who holds a flock on the file of ``fd``, from /proc/locks: "PID 123 (ojd worker w)"."""
    st = os.fstat(fd)
    pids = []
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if "FLOCK" not in parts or "->" in parts:
                    continue  # "->" marks a waiter, not a holder
                i = parts.index("FLOCK")
                _maj, _min, ino = parts[i + 4].split(":")
                if int(ino) == st.st_ino and parts[i + 3] != str(os.getpid()):
                    pids.append(parts[i + 3])
    except (OSError, ValueError, IndexError):
        pass
    if not pids:
        return "another process"
    who = []
    for pid in dict.fromkeys(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        if len(cmd) > 60:
            cmd = cmd[:57] + "..."
        who.append(f"PID {pid}" + (f" ({escaped(cmd)})" if cmd else ""))
    return ", ".join(who)


class WalLock:
    """The lock of one WAL directory: ``acquire`` / ``release`` take and drop LOCK_EX,
    re-entrant within a thread; ``shared()`` is a reader's LOCK_SH. A mutex serialises this
    process's threads around the flock, which does not exclude threads sharing the file."""

    __slots__ = ("path", "_lockfd", "_mutex", "_depth", "_base_fd", "_held_fd")

    def __init__(self, path: str, lockfd: Callable[[], int]) -> None:
        self.path = path
        # this process's open of the lock file (a forked child reopens it: see WalDirectory)
        self._lockfd = lockfd
        self._mutex = RLock()
        self._depth = 0
        self._base_fd = -1  # the fd asked to lock, and the fd holding LOCK_EX while _depth > 0
        self._held_fd = -1

    def held(self) -> bool:
        """Whether this thread holds LOCK_EX."""
        return self._depth > 0 and self._mutex._is_owned()  # type: ignore[attr-defined]

    def acquire(self) -> None:
        self._mutex.acquire()
        try:
            if self._depth == 0:
                self._base_fd = self._lockfd()
                self._held_fd = _flock(self._base_fd, self.path, fcntl.LOCK_EX)
            self._depth += 1
        except BaseException:
            self._mutex.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:  # the outermost block: nesting is balanced under the mutex
                _unlock(self._held_fd, self._base_fd)
        finally:
            self._mutex.release()

    def shared(self) -> Shared:
        """``with lock.shared() as mode``: LOCK_SH, or nothing when the thread holds LOCK_EX;
        ``mode`` is the lock mode held (SHARED or EXCLUSIVE)."""
        return Shared(self)


def _unlock(fd: int, base_fd: int) -> None:
    """Unlock ``fd``; close it when it is a wait's own open of the lock file."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    if fd != base_fd:
        os.close(fd)


class Shared:
    """``with lock.shared() as mode``: see ``WalLock.shared``."""

    __slots__ = ("_lock", "_base_fd", "_fd")

    def __init__(self, lock: WalLock) -> None:
        self._lock = lock

    def __enter__(self) -> int:
        lock = self._lock
        lock._mutex.acquire()
        try:
            if lock._depth:
                self._fd = -1
                return EXCLUSIVE
            self._base_fd = lock._lockfd()
            self._fd = _flock(self._base_fd, lock.path, fcntl.LOCK_SH)
        except BaseException:
            lock._mutex.release()
            raise
        return SHARED

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd >= 0:
                _unlock(self._fd, self._base_fd)
        finally:
            self._lock._mutex.release()
