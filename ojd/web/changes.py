"""Being told that the state (or a job log) changed, so a page updates within a second
without polling the log in a tight loop.

* PostgreSQL: the store's own listener (every commit NOTIFYs ``oj_events``, any host).
* The WAL directory: inotify on ``wal/`` (an append is a write to a segment; a new segment
  or snapshot is a create or rename) and on ``logs/`` (a step's output).
* Neither (inotify unavailable: no watches left, a file system without it): a poll every
  ``POLL_EVERY`` seconds; the page is then up to that much late.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import threading

from ojd import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store import Store
    from ojd.store.log import Listener

POLL_EVERY = 0.5  # the fallback's interval, in seconds
# what a WAL append, a new segment or snapshot, and a log's growth look like to inotify
_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x8, 0x80, 0x100
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_WATCH = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE


class Inotify:
    """A few directories watched for writes and new files; ``fileno()`` for select."""

    def __init__(self, directories: list[str]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._fd = fd
        self._libc = libc
        self._missing = [d for d in directories if not self._add(d)]
        if len(self._missing) == len(directories):
            os.close(fd)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def _add(self, directory: str) -> bool:
        return self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _WATCH) >= 0

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> int:
        """Consume what arrived; how many events."""
        n = 0
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                # a directory made since (logs/ at the first job): watched from now on
                self._missing = [d for d in self._missing if not self._add(d)]
                return n
            offset = 0
            while offset + 16 <= len(data):
                length = struct.unpack_from("iIII", data, offset)[3]
                offset += 16 + length
                n += 1

    def close(self) -> None:
        os.close(self._fd)


def watch(store: Store) -> tuple[Listener | Inotify | None, str]:
    """What to wait on for this store's changes, and a word on how (for the log)."""
    try:
        listener = store.change_listener()
    except Exception:  # a database out of reach: the poll reads it when it is back
        listener = None
    if listener is not None:
        return listener, "notifications from PostgreSQL (LISTEN)"
    # the state dir itself: its logs/ appears with the first job
    dirs = [paths.wal_dir(store.root), paths.logs_dir(store.root), store.root]
    try:
        return Inotify(dirs), "inotify on the state dir"
    except (OSError, AttributeError):
        return None, f"a poll every {POLL_EVERY:g}s (no inotify here)"


class ChangeFeed:
    """One thread waits on the store's changes and counts them; page streams wait on
    ``wait(seen, timeout)`` for the count to move past what they last saw."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition()
        self.count = 0
        self.how = ""
        self._source: Listener | Inotify | None = None
        self._stop_r, self._stop_w = os.pipe()

    def start(self) -> None:
        self._source, self.how = watch(self._store)
        threading.Thread(target=self._run, name="oj-web-changes", daemon=True).start()

    def _run(self) -> None:
        while True:
            fds = [self._stop_r] + ([self._source.fileno()] if self._source else [])
            try:
                ready, _, _ = select.select(fds, [], [], None if self._source else POLL_EVERY)
            except (OSError, ValueError):  # a listener's connection dropped under it
                ready = []
                self._source = None
            if self._stop_r in ready:
                return
            if self._source is not None and ready:
                try:
                    self._source.drain()
                except Exception:  # a lost database connection: fall back to the poll
                    self._source = None
            self.bump()

    def bump(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """The change count once it is past ``seen``, or after ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self.count != seen, timeout)
            return self.count

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        if self._source is not None:
            self._source.close()
