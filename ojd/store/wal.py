"""The write-ahead-log directory: oj's only durable state.

Many processes append events (JSON objects) to one directory and replay them; positions start
at 1 and increase strictly across segments and processes. Layout:

* ``lock``: every append holds ``flock(LOCK_EX)`` on it.
* ``seg-<first position>.wal``: append-only segments of framed records (ojd.store.walframe).
* ``snapshot-<pos>.json``: ``{"pos": N, "state": ...}``, written atomically; the newest 2 kept.
* ``damaged-<segment>-<offset>.bin``: bytes of a torn tail moved aside by the repair.

Damage never raises: a corrupt record in the middle is skipped and reported, a torn tail (power
loss, kill -9 mid-write) is moved aside and truncated by whoever holds the exclusive lock.

Here: the public API (callers import everything from this module), the cached tail and read
position, appending, rolling segments, snapshots, compaction and check. The parts it uses:
ojd.store.walframe (the frame format and Record, pure), ojd.store.walsegments (reading
segments, skipping and repairing damage, WalProblem) and ojd.store.wallock (the lock and its
bounded wait).
"""

from __future__ import annotations

# Imported by every CLI call (``oj queue push`` must start fast): no logging, tempfile,
# dataclasses, pathlib, typing, contextlib or threading here or in the ojd.store.wal* modules it
# imports. json (with re, which it imports) is the one costly import left, and every read or
# append of the log needs it; struct is taken from the C ``_struct`` it wraps, and fcntl is
# imported by the lock classes on first use (reads are lock-free: a read-only command never
# needs it).
import json
import os
from _thread import allocate_lock

from ojd.paths import make_state_dir, open_state_file
from ojd.store.walframe import Continuity, Record, encode_events, encode_frames
from ojd.store.wallock import Shared, WalLock
from ojd.store.walsegments import (
    EXCLUSIVE,
    UNLOCKED,
    Cursor,
    Segments,
    WalProblem,
    fsync_dir,
    gc_paused,
    lost_problem,
    numbered,
    positions,
    unlink,
    write_all,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["CheckReport", "Record", "WalDirectory", "WalProblem", "WalReader", "WalWriter"]

_KEEP_SNAPSHOTS = 2
# The highest position a log may start at (``start_at``: an imported state), far below both
# stores' ends (the WAL's 16-digit segment names, 10**16 - 1; PostgreSQL's bigint, 2**63 - 1)
# so that appends after it have room, and exact in any JSON reader's doubles.
MAX_START_POS = 2**53


def start_pos_problem(pos: int) -> str | None:
    """Why a log cannot start at ``pos``, or None: one reason for both stores."""
    if pos > MAX_START_POS:
        return (f"position {pos} is above {MAX_START_POS} (2**53), the highest a state "
                "can be imported at (the positions appended after it need room)")
    return None


class CheckReport:
    __slots__ = ("records", "last_pos", "segments", "snapshot_pos", "problems", "lost",
                 "covered", "acknowledged")

    def __init__(
        self,
        records: int = 0,
        last_pos: int = 0,
        segments: int = 0,
        snapshot_pos: int | None = None,
        problems: list[WalProblem] | None = None,
    ) -> None:
        self.records = records
        self.last_pos = last_pos
        self.segments = segments
        self.snapshot_pos = snapshot_pos
        self.problems: list[WalProblem] = [] if problems is None else problems
        # (first, last) of position ranges lost, and of those an operator has acknowledged
        self.lost: list[tuple[int, int]] = []
        # damaged or missing position ranges the newest snapshot still holds
        self.covered: list[tuple[int, int]] = []
        self.acknowledged: list[tuple[int, int]] = []

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        return (
            f"CheckReport(records={self.records!r}, last_pos={self.last_pos!r}, "
            f"segments={self.segments!r}, snapshot_pos={self.snapshot_pos!r}, "
            f"problems={self.problems!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced


def _create_temp(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """Create a new file in ``directory`` (as tempfile.mkstemp does, without the import;
    0600, or 0660 in a shared state dir): returns its open fd and path."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return open_state_file(path, flags), path
        except FileExistsError:
            continue


class WalDirectory:
    """One WAL directory. Safe to share between threads; each process opens its own."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = 64 << 20,
        on_problem: Callable[[WalProblem], None] | None = None,
    ) -> None:
        # A str: os.path is already loaded, pathlib costs milliseconds at start-up.
        self.path: str = os.fspath(path)
        make_state_dir(self.path)  # root making it in a user's state dir gives it to that user
        self._dir = self.path
        self.segment_bytes = segment_bytes
        self._segs = Segments(self.path, on_problem)
        self._lock = WalLock(os.path.join(self.path, "lock"), self._lockfd)
        self._cache_lock = allocate_lock()
        self._pid = -1
        self._lock_fd = -1
        self._seg_fd = -1
        self._seg_name: str | None = None
        # Furthest known frame boundary: appends read forward from here, never rescan.
        self._tail: Cursor | None = None
        # Furthest position handed to the caller (readers, WalWriter.read_new, own appends).
        self._seen: Cursor | None = None

    # -- public API ---------------------------------------------------------------------------

    def reader(self, after: int = 0) -> WalReader:
        return WalReader(self, after)

    def records(self, after: int = 0) -> Iterator[Record]:
        return iter(self.reader(after).read_new())

    def locked(self) -> _Locked:
        """Hold the exclusive lock: read the true tail, decide, append, with no one in between.

        ``with wal.locked() as w:`` gives a WalWriter, valid until the block ends."""
        return _Locked(self)

    def append(self, *events: dict) -> list[int]:
        with self.locked() as w:
            return w.append(*events)

    def holds_lock(self) -> bool:
        """Whether this thread is inside ``with wal.locked()``."""
        return self._lock.held()

    # What the Log protocol (ojd.store.log) asks of a shared store, for one host's directory:
    # an append is durable when it returns, never rolled back; files are opened on first use;
    # a push signals the workers of its queue itself; the clock is this host's.
    rolled_back = False

    def connect(self) -> None:
        pass

    def listener(self) -> None:
        return None

    def clock_offset(self) -> float:
        return 0.0

    def save_snapshot(self, pos: int, state: object) -> Path:
        from pathlib import Path  # lazy: only for a snapshot, off a push's start-up

        data = json.dumps({"pos": pos, "state": state}, separators=(",", ":")).encode()
        with self.locked() as w:
            if not 0 <= pos <= w.last_pos:
                raise ValueError(f"snapshot position {pos} is beyond the log (last {w.last_pos})")
            tail = self._catch_up_tail()
            if tail.seg is not None:  # what it summarises is on disk before it is
                os.fdatasync(self._segfd(tail.seg))
            final = os.path.join(self.path, f"snapshot-{pos:016d}.json")
            fd, tmp = _create_temp(self.path, ".snapshot-", ".tmp")
            try:
                write_all(fd, data, 0)
                os.fsync(fd)
                os.close(fd)
                fd = -1
                os.replace(tmp, final)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                unlink(tmp)
                raise
            fsync_dir(self.path)
            # A fresh segment lets compact() drop everything the snapshot covers.
            tail = self._catch_up_tail()
            if tail.off > 0 or tail.seg is None:
                self._roll(tail)
            for _pos, name in self._snapshots()[:-_KEEP_SNAPSHOTS]:
                unlink(os.path.join(self.path, name))
            fsync_dir(self.path)
        return Path(final)

    def load_snapshot(self) -> tuple[int, object] | None:
        return self._load_snapshot(None)

    def start_at(self, pos: int, state: object) -> None:
        """Begin an empty log with a snapshot at ``pos`` (an imported state): its first
        segment is named after ``pos + 1``, so appends continue from there."""
        problem = start_pos_problem(pos)
        if problem is not None:  # before anything is written (a segment past the names read)
            raise ValueError(problem)
        with self.locked():
            if self._segs.names() or self._snapshots():
                raise ValueError("the log is not empty")
            self._roll(Cursor(None, 0, pos, pos))
            with self._cache_lock:
                self._tail = self._seen = None
        self.save_snapshot(pos, state)

    def read_snapshot(self, pos: int) -> tuple[int, object] | None:
        """The snapshot at ``pos``, or None when it is absent or unreadable."""
        return self._read_snapshot(pos, f"snapshot-{pos:016d}.json", [])

    def compact(self) -> int:
        """Drop the segments that the older of the two kept snapshots covers.

        Only the older one: if the newest snapshot turns out unreadable, loading falls back
        to the older and replays from it, so every segment after it must still be there."""
        with self.locked():
            snaps = self._snapshots()
            if len(snaps) < _KEEP_SNAPSHOTS:
                return 0  # the fallback is replaying from position 1: keep everything
            pos, name = snaps[-_KEEP_SNAPSHOTS]
            if self._read_snapshot(pos, name, None) is None:
                return 0  # no usable fallback: keep what replaying from the start needs
            segs = self._segs.names()
            removed = 0
            # A segment is covered when the next one starts at or before snapshot pos + 1; the
            # last segment always stays, it is where appends go.
            for (_first, seg), (next_first, _next) in zip(segs, segs[1:], strict=False):
                if next_first - 1 > pos:
                    break
                unlink(os.path.join(self.path, seg))
                removed += 1
            if removed:
                fsync_dir(self.path)
            return removed

    def set_aside(self, name: str) -> str:
        """Rename a snapshot to ``damaged-<name>`` so loading no longer reads it."""
        with self.locked():
            target = f"damaged-{name}"
            os.replace(os.path.join(self.path, name), os.path.join(self.path, target))
            fsync_dir(self.path)
        return target

    def snapshot_positions(self) -> list[int]:
        """Positions of the snapshot files present (readable or not), oldest first: cheap,
        nothing is parsed."""
        return [pos for pos, _name in self._snapshots()]

    def check(self, after: int | None = None) -> CheckReport:
        """Walk every segment and snapshot under the exclusive lock (repairing a torn tail).

        Positions missing from the log past ``after`` (default: the oldest readable snapshot,
        or 0) are reported as "lost": nothing left on disk holds them."""
        report = CheckReport()
        with self.locked():
            readable = []
            for pos, name in reversed(self._snapshots()):
                if self._read_snapshot(pos, name, report.problems):
                    readable.append(pos)
            report.snapshot_pos = readable[0] if readable else None
            base = after if after is not None else (readable[-1] if readable else 0)
            sink = Continuity(base)
            cur = Cursor(None, 0, 0, 0)
            with gc_paused(sink):
                self._segs.advance(cur, sink, EXCLUSIVE, report.problems)
            report.records = sink.n
            report.last_pos = cur.prev
            report.segments = len(self._segs.names())
            if cur.prev > sink.last:  # the tail itself is missing (a lost last segment)
                sink.gaps.append((sink.last + 1, cur.prev))
            corrupt = {p.pos for p in report.problems if p.kind == "corrupt"}
            newest = readable[0] if readable else 0
            for first, last in sink.gaps:
                if last <= newest:
                    # the newest snapshot holds these events: nothing is lost, only the
                    # fallback (the older snapshot plus the log) is incomplete
                    report.covered.append((first, last))
                    if not (first == last and first in corrupt):
                        report.problems.append(WalProblem(
                            "missing", first, "", 0,
                            f"{positions([(first, last)])} missing from the log; snapshot "
                            f"{newest} holds them, so nothing is lost, but falling back to the "
                            "older snapshot would lose them"))
                    continue
                report.lost.append((first, last))
                if first == last and first in corrupt:
                    continue  # already reported where it is, as a corrupt record
                report.problems.append(lost_problem(first, last))
        return report

    # -- locking and caches -------------------------------------------------------------------

    def _lockfd(self) -> int:
        # A forked child shares the parent's open file description, so its flock would not
        # exclude the parent: reopen per process.
        if self._pid != os.getpid():
            for fd in (self._lock_fd, self._seg_fd):
                if fd >= 0:
                    os.close(fd)  # this process's inherited copy only
            self._pid = os.getpid()
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._lock_fd = open_state_file(os.path.join(self.path, "lock"), flags)
            self._seg_fd, self._seg_name = -1, None
        return self._lock_fd

    def _shared(self) -> Shared:
        """LOCK_SH for a reader's re-check, unless this instance already holds LOCK_EX:
        ``with wal._shared() as mode`` gives the lock mode held (SHARED or EXCLUSIVE)."""
        return self._lock.shared()

    def _note(self, cur: Cursor, *, seen: bool) -> None:
        """Remember a frame boundary a reader reached, so appends need not rescan to it."""
        with self._cache_lock:
            if cur.seg is not None and (self._tail is None or cur.key() > self._tail.key()):
                self._tail = cur.copy()
            if seen and (self._seen is None or cur.pos > self._seen.pos):
                self._seen = cur.copy()

    def _catch_up_tail(self) -> Cursor:
        """Under LOCK_EX: move the append cursor to the true tail, repairing a torn one."""
        with self._cache_lock:
            cur = self._tail
            if self._seen is not None and (cur is None or self._seen.key() > cur.key()):
                cur = self._seen
            cur = cur.copy() if cur is not None else None
        if cur is not None and cur.seg and cur.seg == self._seg_name and self._pid == os.getpid():
            # Fast path, O(1): our segment has not grown and nobody rolled past it (a roll
            # would be named after the next position).
            successor = f"{self._dir}/seg-{cur.prev + 1:016d}.wal"
            if os.fstat(self._seg_fd).st_size == cur.off and not os.path.exists(successor):
                with self._cache_lock:
                    self._tail = cur
                return cur
        if cur is None or cur.seg is None:
            # Nothing known yet: the tail is in the last segment, whose name gives its start.
            segs = self._segs.names()
            first, name = segs[-1] if segs else (1, None)
            cur = Cursor(name, 0, first - 1, first - 1)
            if name is not None:
                self._segs.find_end(cur)
        self._segs.advance(cur, None, EXCLUSIVE, None)
        with self._cache_lock:
            self._tail = cur
        return cur

    def _segfd(self, name: str) -> int:
        self._lockfd()
        if self._seg_name != name:
            if self._seg_fd >= 0:
                os.close(self._seg_fd)
                self._seg_fd, self._seg_name = -1, None
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._seg_fd = open_state_file(os.path.join(self.path, name), flags)
            self._seg_name = name
        return self._seg_fd

    def _roll(self, tail: Cursor) -> None:
        if tail.seg is not None:  # appends made without a sync go to disk before it is left
            os.fdatasync(self._segfd(tail.seg))
        name = f"seg-{tail.prev + 1:016d}.wal"
        self._segfd(name)
        fsync_dir(self.path)
        tail.seg, tail.off = name, 0

    # -- writing ------------------------------------------------------------------------------

    def _append_locked(self, events: tuple[dict, ...], sync: bool = True) -> list[int]:
        # Encode before touching the log: a bad event raises with nothing written.
        payloads = encode_events(events)
        if not payloads:
            return []
        tail = self._catch_up_tail()
        with self._cache_lock:
            # Own appends count as handed out only when nothing before them is unseen.
            seen_all = self._seen is not None and self._seen.pos >= tail.prev
        if tail.seg is None or tail.off >= self.segment_bytes:
            self._roll(tail)
        data = encode_frames(tail.prev + 1, payloads)
        pos = tail.prev + len(payloads)
        assert tail.seg is not None
        fd = self._segfd(tail.seg)
        try:
            write_all(fd, data, tail.off)
            if sync:
                os.fdatasync(fd)
        except BaseException:
            # Leave no half-written frame behind when we can help it; the next writer's
            # catch-up repairs it otherwise.
            try:
                os.ftruncate(fd, tail.off)
            except OSError:
                pass
            raise
        first = tail.prev + 1
        tail.off += len(data)
        tail.pos = max(tail.pos, pos)
        tail.prev = pos
        with self._cache_lock:
            self._tail = tail
            if seen_all:
                self._seen = tail.copy()
        return list(range(first, pos + 1))

    def _read_unseen_locked(self) -> list[Record]:
        with self._cache_lock:
            cur = self._seen.copy() if self._seen is not None else Cursor(None, 0, 0, 0)
        out: list[Record] = []
        with gc_paused(out):
            self._segs.advance(cur, out, EXCLUSIVE, None)
        with self._cache_lock:
            self._seen, self._tail = cur, cur.copy()
        return out

    # -- snapshots ----------------------------------------------------------------------------

    def _snapshots(self) -> list[tuple[int, str]]:
        return numbered(os.listdir(self.path), "snapshot-", ".json")

    def _read_snapshot(
        self, pos: int, name: str, found: list[WalProblem] | None
    ) -> tuple[int, object] | None:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                obj = json.loads(f.read())
            if not isinstance(obj, dict) or obj.get("pos") != pos or "state" not in obj:
                raise ValueError("not a snapshot of this position")
        except FileNotFoundError:
            return None  # pruned by a newer save
        except (OSError, ValueError) as e:
            problem = WalProblem("corrupt", pos, name, 0, f"unreadable snapshot: {e}")
            self._segs.report(problem, found)
            return None
        return pos, obj["state"]

    def _load_snapshot(self, found: list[WalProblem] | None) -> tuple[int, object] | None:
        for pos, name in reversed(self._snapshots()):
            snap = self._read_snapshot(pos, name, found)
            if snap is not None:
                return snap
        return None


class WalReader:
    """An incremental cursor: each read_new() returns only records appended since the last."""

    def __init__(self, wal: WalDirectory, after: int = 0) -> None:
        self._wal = wal
        self._cur = Cursor(None, 0, after, after)

    @property
    def position(self) -> int:
        return self._cur.pos

    def read_new(self) -> list[Record]:
        wal, cur = self._wal, self._cur
        out: list[Record] = []
        with gc_paused(out):
            if wal._segs.advance(cur, out, UNLOCKED, None):
                # A damaged tail may be an append in progress: once writers are shut out it is
                # either complete or real damage, which the exclusive lock then repairs.
                with wal._shared() as mode:
                    damaged = wal._segs.advance(cur, out, mode, None)
                if damaged:
                    with wal.locked():
                        wal._segs.advance(cur, out, EXCLUSIVE, None)
        wal._note(cur, seen=True)
        return out


class _Locked:
    """``with wal.locked() as w``: the exclusive lock, re-entrant within a thread, and the
    WalWriter valid while it is held."""

    __slots__ = ("_wal", "_writer")

    def __init__(self, wal: WalDirectory) -> None:
        self._wal = wal

    def __enter__(self) -> WalWriter:
        self._wal._lock.acquire()
        self._writer = writer = WalWriter(self._wal)
        return writer

    def __exit__(self, *exc: object) -> None:
        self._writer._valid = False
        self._wal._lock.release()


class WalWriter:
    """The view of the log inside ``with wal.locked() as w``: its tail cannot move under it."""

    def __init__(self, wal: WalDirectory) -> None:
        self._wal = wal
        self._valid = True

    def _check(self) -> WalDirectory:
        if not self._valid:
            raise RuntimeError("WalWriter used outside its `with wal.locked()` block")
        return self._wal

    @property
    def last_pos(self) -> int:
        return self._check()._catch_up_tail().prev

    def read_new(self) -> list[Record]:
        """Records up to the true tail that this WalDirectory has not yet handed out (through
        its readers, earlier read_new calls or its own appends)."""
        return self._check()._read_unseen_locked()

    def append(self, *events: dict, sync: bool = True) -> list[int]:
        """Write the events as one batch and fdatasync once; returns their positions.

        ``sync=False``: visible to every process at once, durable with the next append that
        syncs (any process's: fdatasync writes the whole segment), a snapshot or a new
        segment. Only for events whose loss in a power cut loses nothing: a power cut also
        ends every process that acted on them, and what they did is redone from the last
        durable event (see docs/DESIGN.md, "Writing")."""
        return self._check()._append_locked(events, sync)
