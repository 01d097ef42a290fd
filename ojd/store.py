"""The state of one oj state directory: the WAL replayed into a ``State``, kept caught up.

Reads are lock-free (snapshot + tail). Decisions that read and then write (take an item,
dedupe a push) run inside ``transaction()``, which holds the WAL's exclusive lock, catches up
to the true tail and applies what it appends, so two processes never decide on stale state.
"""

from __future__ import annotations

import sys
import time
from _thread import RLock
from contextlib import contextmanager

from ojd import paths
from ojd.errors import OjError, escaped
from ojd.state import Event, State
from ojd.wal import WalDirectory, WalProblem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# A snapshot is written when this many events have accumulated past the last one, so a
# CLI call replays at most this tail.
SNAPSHOT_EVERY = 2000


def warn_to_stderr(problem: WalProblem) -> None:
    print(f"oj: warning: state {problem.kind} in {problem.segment} at byte {problem.offset}"
          f"{'' if problem.pos is None else f' (position {problem.pos})'}: {problem.detail}",
          file=sys.stderr)


def state_dir_error(root: str | None, error: OSError) -> OjError:
    where = root or paths.state_dir()
    if isinstance(error, PermissionError):
        why = (f"permission denied ({error.filename}); it belongs to another user, or "
               "needs root")
    else:
        why = f"{error.strerror or error} ({error.filename}); set OJ_STATE_DIR to a directory"
    return OjError(escaped(f"cannot use state dir {where}: {why}"))  # paths on one line


class Transaction:
    """What a decision sees and does while it holds the WAL lock."""

    def __init__(self, store: Store, writer) -> None:
        self.state = store.state
        self._store = store
        self._writer = writer

    def append(self, *events: Event) -> list[int]:
        ts = time.time()
        for ev in events:
            ev.setdefault("ts", ts)
        positions = self._writer.append(*events)
        for ev, pos in zip(events, positions, strict=True):
            self.state.apply(ev, pos)
        return positions


class Store:
    def __init__(self, root: str | None = None,
                 on_problem: Callable[[WalProblem], None] | None = warn_to_stderr) -> None:
        try:
            self.root = paths.ensure_state_dir(root)
            self.wal = WalDirectory(paths.wal_dir(self.root), on_problem=on_problem)
        except OSError as e:
            raise state_dir_error(root, e) from None
        self.state = State()
        self._snapshot_pos = 0
        self._reader = None
        # flock does not exclude threads of one process that share the lock file: this does
        self.lock = RLock()

    def load(self) -> State:
        """Newest snapshot plus every record after it."""
        with self.lock:
            snap = self.wal.load_snapshot()
            if snap is not None:
                self._snapshot_pos, data = snap
                self.state = State.from_dict(data)
                self.state.pos = self._snapshot_pos
            else:
                self.state = State()
            self._reader = self.wal.reader(after=self.state.pos)
            self._catch_up(self._reader.read_new())
            return self.state

    def refresh(self) -> State:
        """Apply what other processes appended since the last read."""
        with self.lock:
            if self._reader is None or not self._catch_up(self._reader.read_new()):
                return self.load()
            return self.state

    def _catch_up(self, records) -> bool:
        """Apply records; False when they skip positions (a compaction removed what this
        reader had yet to read: the caller reloads from the newer snapshot)."""
        state = self.state
        apply = state.apply
        for rec in records:
            # a gap is either a corrupt record (reported by the WAL; go on) or a compaction
            if rec.pos > state.pos + 1 and self._newer_snapshot_covers(rec.pos - 1):
                return False
            if rec.pos > state.pos:
                apply(rec.event, rec.pos)
        return True

    def _newer_snapshot_covers(self, pos: int) -> bool:
        snap = self.wal.load_snapshot()
        return snap is not None and snap[0] > self._snapshot_pos and snap[0] >= pos

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.lock:
            if self._reader is None:
                self.load()
            with self.wal.locked() as writer:
                # the lock is held: reading to the end now gives the true tail
                if not self._catch_up(self._reader.read_new()):
                    self.load()
                yield Transaction(self, writer)
                self._reader.read_new()  # step the cursor past our own appends
            if self.state.pos - self._snapshot_pos >= SNAPSHOT_EVERY:
                self.snapshot()

    def append(self, *events: Event) -> list[int]:
        with self.transaction() as tx:
            return tx.append(*events)

    def snapshot(self) -> int:
        """Write a snapshot of the current state and drop the segments it covers."""
        with self.lock:
            pos = self.state.pos
            self.wal.save_snapshot(pos, self.state.to_dict())
            self._snapshot_pos = pos
            self.wal.compact()
            return pos
