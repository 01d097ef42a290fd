"""The write-ahead-log directory: oj's only durable state.

Many processes append events (JSON objects) to one directory and replay them; positions start
at 1 and increase strictly across segments and processes. Layout:

* ``lock``: every append holds ``flock(LOCK_EX)`` on it.
* ``seg-<first position>.wal``: append-only segments of framed records. A frame is the header
  ``<3sIIQ`` (magic ``b"OJ"`` + version 1, payload length, crc32, position) followed by the
  compact JSON payload. The crc covers the position bytes and the payload, which are adjacent so
  one ``zlib.crc32`` call checks both; the magic lets a reader resync after a corrupt record.
* ``snapshot-<pos>.json``: ``{"pos": N, "state": ...}``, written atomically; the newest 2 kept.
* ``damaged-<segment>-<offset>.bin``: bytes of a torn tail moved aside by the repair.

Damage never raises: a corrupt record in the middle is skipped and reported, a torn tail (power
loss, kill -9 mid-write) is moved aside and truncated by whoever holds the exclusive lock.
"""

from __future__ import annotations

# Imported by every CLI call (``oj queue push`` must start fast): no logging, tempfile,
# dataclasses, pathlib, typing, contextlib or threading here. json (with re, which it imports)
# is the one costly import left, and every read or append of the log needs it.
import fcntl
import gc
import json
import os
import struct
import sys
import zlib
from _bisect import bisect_left, bisect_right  # what ``bisect`` re-exports, minus its import
from _thread import RLock, allocate_lock
from collections import namedtuple  # already imported by json (through re)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

__all__ = ["CheckReport", "Record", "WalDirectory", "WalProblem", "WalReader", "WalWriter"]

_MAGIC = b"OJ\x01"  # "OJ" + format version 1
_HDR = struct.Struct("<3sIIQ")  # magic+version, payload length, crc32, position
_HS = _HDR.size  # 19
_CRC_FROM = 11  # the crc covers frame[11:]: the position bytes, then the payload
_POS = struct.Struct("<Q")
_CHUNK = 8 << 20  # read size: big enough to amortise syscalls, small enough to bound memory
_KEEP_SNAPSHOTS = 2
# json.dumps(ev, separators=...) builds a new encoder per call; one shared encoder is the same
# compact output at a fraction of the cost.
_encode = json.JSONEncoder(separators=(",", ":")).encode

# Lock modes of a scan: an unlocked reader may see a concurrent append half-written.
_UNLOCKED, _SHARED, _EXCLUSIVE = 0, 1, 2


def _numbered(names: list[str], prefix: str, suffix: str) -> list[tuple[int, str]]:
    """``(number, name)`` of the names that are ``prefix`` + 16 digits + ``suffix``, sorted."""
    # str.isdecimal() is the regex \d (Unicode category Nd), and int() accepts all of it.
    n = len(prefix) + 16 + len(suffix)
    start, end = len(prefix), len(prefix) + 16
    found = []
    for name in names:
        if (
            len(name) == n
            and name.startswith(prefix)
            and name.endswith(suffix)
            and name[start:end].isdecimal()
        ):
            found.append((int(name[start:end]), name))
    found.sort()
    return found


class Record:
    """One event of the log and its position; immutable."""

    __slots__ = ("pos", "event")
    __match_args__ = ("pos", "event")
    pos: int
    event: dict

    def __init__(self, pos: int, event: dict) -> None:
        # Replay builds a million of these: calling the slot setters directly skips the
        # __setattr__ that makes the instance read-only.
        _set_pos(self, pos)
        _set_event(self, event)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of an immutable Record")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of an immutable Record")

    def __repr__(self) -> str:
        return f"Record(pos={self.pos!r}, event={self.event!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.pos, self.event) == (other.pos, other.event)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.pos, self.event))

    def __getstate__(self) -> tuple[int, dict]:
        return (self.pos, self.event)

    def __setstate__(self, state: tuple[int, dict]) -> None:
        _set_pos(self, state[0])
        _set_event(self, state[1])


_set_pos = Record.pos.__set__  # type: ignore[attr-defined]
_set_event = Record.event.__set__  # type: ignore[attr-defined]


class WalProblem(namedtuple("WalProblem", "kind pos segment offset detail")):
    """``kind`` is "torn-tail" or "corrupt"; ``pos`` (int or None) is the position lost, when
    known; ``segment`` and ``offset`` locate the damage; ``detail`` says what was found."""

    __slots__ = ()

    kind: str
    pos: int | None
    segment: str
    offset: int
    detail: str

    def __str__(self) -> str:
        at = f" at position {self.pos}" if self.pos is not None else ""
        return f"{self.segment}@{self.offset}: {self.kind}{at}: {self.detail}"


class CheckReport:
    __slots__ = ("records", "last_pos", "segments", "snapshot_pos", "problems")

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


class _Cursor:
    """A read position: ``off`` in segment ``seg`` is the start of a frame (or the end)."""

    __slots__ = ("seg", "off", "pos", "prev")

    def __init__(self, seg: str | None, off: int, pos: int, prev: int) -> None:
        # seg None: not placed yet, start at the segment that may hold pos + 1.
        self.seg = seg
        self.off = off
        # Highest position returned or skipped; records at or below it are not returned.
        self.pos = pos
        # Position of the frame before ``off`` in ``seg`` (first - 1 at offset 0).
        self.prev = prev

    def __repr__(self) -> str:
        return f"_Cursor({self.seg!r}, {self.off!r}, {self.pos!r}, {self.prev!r})"

    def copy(self) -> _Cursor:
        return _Cursor(self.seg, self.off, self.pos, self.prev)

    def key(self) -> tuple[str, int]:
        # Segment names sort by their first position, so this orders boundaries in the log.
        return (self.seg or "", self.off)


class _Count:
    """An ``out`` sink that only counts, so check() can walk a huge log in bounded memory."""

    def __init__(self) -> None:
        self.n = 0

    def extend(self, items: Iterable[object]) -> None:
        for _ in items:
            self.n += 1

    def append(self, _item: object) -> None:
        self.n += 1


_BULK = 10_000  # records decoded in one call above which they are treated as long-lived


class _gc_paused:
    """``with _gc_paused(out):`` runs a decode with the cyclic garbage collector off."""

    # Decoded events are acyclic, yet each new dict would count towards a collection that
    # re-walks everything already decoded: pausing roughly halves the cost of a big replay.
    __slots__ = ("_out", "_was", "_before")

    def __init__(self, out: list[Record] | _Count) -> None:
        self._out = out

    def __enter__(self) -> None:
        out = self._out
        self._was = gc.isenabled()
        self._before = len(out) if isinstance(out, list) else 0
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._was:
            # After a bulk replay the records are long-lived state: freeze() + unfreeze() moves
            # them to the oldest generation in O(1) instead of the next collection walking them
            # all. Skipped for small reads (which would keep young garbage from collection)
            # and when the process froze objects itself (unfreeze() would release them).
            out = self._out
            if (
                isinstance(out, list)
                and len(out) - self._before > _BULK
                and not gc.get_freeze_count()
            ):
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _parse(buf: bytes, prev: int, poss: list[int], pays: list[bytes]) -> tuple[int, int, int]:
    """Walk whole, valid, in-order frames from ``buf[0]``, collecting positions and payloads.

    Returns ``(end, prev, need)``: ``end`` is where walking stopped, ``prev`` the last frame's
    position; ``need`` is 0 at a clean end of ``buf``, the frame size when the frame at ``end``
    is cut off by the end of ``buf``, or -1 when that frame is bad.
    """
    # The hot loop of replay: positions are consecutive within a run, so they are collected
    # as ranges, and every test is folded into one condition.
    n = len(buf)
    unpack = _HDR.unpack_from
    crc32 = zlib.crc32
    add = pays.append
    error = struct.error
    i = 0
    while True:
        first = expect = prev + 1
        while True:
            try:
                magic, ln, crc, pos = unpack(buf, i)
            except error:  # fewer than 19 bytes left; cheaper than a bounds test per record
                break
            j = i + 19 + ln
            if pos != expect or crc32(buf[i + 11 : j]) != crc or j > n or magic != b"OJ\x01":
                break
            add(buf[i + 19 : j])
            expect += 1
            i = j
        poss.extend(range(first, expect))
        prev = expect - 1
        if i + _HS > n:
            return i, prev, (_HS if i < n else 0)
        magic, ln, crc, pos = unpack(buf, i)
        if magic != _MAGIC:
            return i, prev, -1
        if i + _HS + ln > n:
            return i, prev, _HS + ln
        if pos <= prev or crc32(buf[i + _CRC_FROM : i + _HS + ln]) != crc:
            return i, prev, -1
        prev = pos - 1  # a valid frame after a gap (a skipped corrupt record): a new run


def _valid_at(buf: bytes, k: int, prev: int) -> int | None:
    """Position of a whole frame at ``buf[k]`` whose crc checks and that follows ``prev``."""
    if k + _HS > len(buf):
        return None
    magic, ln, crc, pos = _HDR.unpack_from(buf, k)
    j = k + _HS + ln
    if magic != _MAGIC or j > len(buf) or pos <= prev:
        return None
    return pos if zlib.crc32(memoryview(buf)[k + _CRC_FROM : j]) == crc else None


def _resync(buf: bytes, prev: int) -> tuple[int, int] | None:
    """(offset, position) of the first valid frame after ``buf[0]``, or None."""
    k = 1
    while (k := buf.find(_MAGIC, k)) >= 0:
        pos = _valid_at(buf, k, prev)
        if pos is not None:
            return k, pos
        k += 1
    return None


def _diagnose(buf: bytes, prev: int) -> tuple[str, int | None]:
    """Why the frame at ``buf[0]`` is unusable, and the position its header claims."""
    if len(buf) < _HS:
        return f"incomplete header ({len(buf)} of {_HS} bytes)", None
    magic, ln, _crc, pos = _HDR.unpack_from(buf, 0)
    if magic != _MAGIC:
        return f"bad magic {bytes(magic)!r}", None
    if _HS + ln > len(buf):
        return f"incomplete frame ({len(buf)} of {_HS + ln} bytes)", pos
    if zlib.crc32(memoryview(buf)[_CRC_FROM : _HS + ln]) != _crc:
        return "crc mismatch", pos
    return f"position {pos} out of order after {prev}", None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(data):
        done += os.pwrite(fd, view[done:], off + done)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _create_temp(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """Create a new private file in ``directory`` (as tempfile.mkstemp does, without the
    import): returns its open fd and path."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue


class _Locked:
    """``with wal.locked() as w``: the exclusive lock, re-entrant within a thread."""

    __slots__ = ("_wal", "_writer")

    def __init__(self, wal: WalDirectory) -> None:
        self._wal = wal

    def __enter__(self) -> WalWriter:
        wal = self._wal
        wal._mutex.acquire()
        try:
            if wal._depth == 0:
                fcntl.flock(wal._lockfd(), fcntl.LOCK_EX)
            wal._depth += 1
        except BaseException:
            wal._mutex.release()
            raise
        self._writer = writer = WalWriter(wal)
        return writer

    def __exit__(self, *exc: object) -> None:
        wal = self._wal
        self._writer._valid = False
        wal._depth -= 1
        try:
            if wal._depth == 0:  # the outermost block: nesting is balanced under the mutex
                fcntl.flock(wal._lock_fd, fcntl.LOCK_UN)
        finally:
            wal._mutex.release()


class _Shared:
    """``with wal._shared() as mode``: LOCK_SH, or nothing when the thread holds LOCK_EX."""

    __slots__ = ("_wal", "_fd")

    def __init__(self, wal: WalDirectory) -> None:
        self._wal = wal

    def __enter__(self) -> int:
        wal = self._wal
        wal._mutex.acquire()
        try:
            if wal._depth:
                self._fd = -1
                return _EXCLUSIVE
            fd = wal._lockfd()
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            wal._mutex.release()
            raise
        self._fd = fd
        return _SHARED

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._wal._mutex.release()


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
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._dir = self.path
        self.segment_bytes = segment_bytes
        self._on_problem = on_problem
        self._reported: set[tuple[str, int]] = set()
        self._mutex = RLock()  # serialises this instance's threads around the flock
        self._cache_lock = allocate_lock()
        self._depth = 0
        self._pid = -1
        self._lock_fd = -1
        self._seg_fd = -1
        self._seg_name: str | None = None
        # Furthest known frame boundary: appends read forward from here, never rescan.
        self._tail: _Cursor | None = None
        # Furthest position handed to the caller (readers, WalWriter.read_new, own appends).
        self._seen: _Cursor | None = None

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

    def save_snapshot(self, pos: int, state: object) -> Path:
        from pathlib import Path  # only here, off the start-up path

        data = json.dumps({"pos": pos, "state": state}, separators=(",", ":")).encode()
        with self.locked() as w:
            if not 0 <= pos <= w.last_pos:
                raise ValueError(f"snapshot position {pos} is beyond the log (last {w.last_pos})")
            final = os.path.join(self.path, f"snapshot-{pos:016d}.json")
            fd, tmp = _create_temp(self.path, ".snapshot-", ".tmp")
            try:
                _write_all(fd, data, 0)
                os.fsync(fd)
                os.close(fd)
                fd = -1
                os.replace(tmp, final)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                _unlink(tmp)
                raise
            _fsync_dir(self.path)
            # A fresh segment lets compact() drop everything the snapshot covers.
            tail = self._catch_up_tail()
            if tail.off > 0 or tail.seg is None:
                self._roll(tail)
            for _pos, name in self._snapshots()[:-_KEEP_SNAPSHOTS]:
                _unlink(os.path.join(self.path, name))
            _fsync_dir(self.path)
        return Path(final)

    def load_snapshot(self) -> tuple[int, object] | None:
        return self._load_snapshot(None)

    def compact(self) -> int:
        with self.locked():
            snap = self._load_snapshot(None)
            if snap is None:
                return 0
            segs = self._segments()
            removed = 0
            # A segment is covered when the next one starts at or before snapshot pos + 1; the
            # last segment always stays, it is where appends go.
            for (_first, name), (next_first, _next) in zip(segs, segs[1:], strict=False):
                if next_first - 1 > snap[0]:
                    break
                _unlink(os.path.join(self.path, name))
                removed += 1
            if removed:
                _fsync_dir(self.path)
            return removed

    def check(self) -> CheckReport:
        """Walk every segment and snapshot under the exclusive lock (repairing a torn tail)."""
        report = CheckReport()
        with self.locked():
            count = _Count()
            cur = _Cursor(None, 0, 0, 0)
            with _gc_paused(count):
                self._advance(cur, count, _EXCLUSIVE, report.problems)
            report.records = count.n
            report.last_pos = cur.prev
            report.segments = len(self._segments())
            for pos, name in reversed(self._snapshots()):
                if self._read_snapshot(pos, name, report.problems) and report.snapshot_pos is None:
                    report.snapshot_pos = pos
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
            self._lock_fd = os.open(os.path.join(self.path, "lock"), flags, 0o600)
            self._seg_fd, self._seg_name = -1, None
        return self._lock_fd

    def _shared(self) -> _Shared:
        """LOCK_SH for a reader's re-check, unless this instance already holds LOCK_EX:
        ``with wal._shared() as mode`` gives the lock mode held (_SHARED or _EXCLUSIVE)."""
        return _Shared(self)

    def _note(self, cur: _Cursor, *, seen: bool) -> None:
        """Remember a frame boundary a reader reached, so appends need not rescan to it."""
        with self._cache_lock:
            if cur.seg is not None and (self._tail is None or cur.key() > self._tail.key()):
                self._tail = cur.copy()
            if seen and (self._seen is None or cur.pos > self._seen.pos):
                self._seen = cur.copy()

    def _catch_up_tail(self) -> _Cursor:
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
            segs = self._segments()
            first, name = segs[-1] if segs else (1, None)
            cur = _Cursor(name, 0, first - 1, first - 1)
            if name is not None:
                self._find_end(cur)
        self._advance(cur, None, _EXCLUSIVE, None)
        with self._cache_lock:
            self._tail = cur
        return cur

    def _find_end(self, cur: _Cursor) -> None:
        """Move ``cur`` (at the start of its segment) to the segment's end when the segment
        ends with a whole valid frame, so a fresh process's first append reads one small
        window instead of the whole segment. Left alone otherwise (a forward scan decides)."""
        assert cur.seg is not None
        try:
            fd = os.open(os.path.join(self.path, cur.seg), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        finally:
            os.close(fd)
        k = len(data)
        # Payloads are JSON, where a raw 0x01 byte cannot occur, so only a header can hold the
        # magic; the crc and the exact fit to the end rule out a header field mimicking it.
        while (k := data.rfind(_MAGIC, 0, k + len(_MAGIC) - 1)) >= 0:
            if k + _HS <= len(data):
                _magic, ln, _crc, pos = _HDR.unpack_from(data, k)
                if k + _HS + ln == len(data) and pos > cur.prev and _valid_at(data, k, cur.prev):
                    cur.off, cur.pos, cur.prev = size, pos, pos
                    return
            k -= 1

    def _segfd(self, name: str) -> int:
        self._lockfd()
        if self._seg_name != name:
            if self._seg_fd >= 0:
                os.close(self._seg_fd)
                self._seg_fd, self._seg_name = -1, None
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._seg_fd = os.open(os.path.join(self.path, name), flags, 0o600)
            self._seg_name = name
        return self._seg_fd

    def _roll(self, tail: _Cursor) -> None:
        name = f"seg-{tail.prev + 1:016d}.wal"
        self._segfd(name)
        _fsync_dir(self.path)
        tail.seg, tail.off = name, 0

    # -- writing ------------------------------------------------------------------------------

    def _append_locked(self, events: tuple[dict, ...]) -> list[int]:
        # Encode before touching the log: a bad event raises with nothing written.
        payloads = []
        for ev in events:
            if not isinstance(ev, dict):
                raise TypeError(f"a WAL event must be a dict, not {type(ev).__name__}")
            payloads.append(_encode(ev).encode())
        if not payloads:
            return []
        tail = self._catch_up_tail()
        with self._cache_lock:
            # Own appends count as handed out only when nothing before them is unseen.
            seen_all = self._seen is not None and self._seen.pos >= tail.prev
        if tail.seg is None or tail.off >= self.segment_bytes:
            self._roll(tail)
        frames = []
        crc32 = zlib.crc32
        pos = tail.prev
        for payload in payloads:
            pos += 1
            crc = crc32(payload, crc32(_POS.pack(pos)))
            frames.append(_HDR.pack(_MAGIC, len(payload), crc, pos))
            frames.append(payload)
        data = b"".join(frames)
        assert tail.seg is not None
        fd = self._segfd(tail.seg)
        try:
            _write_all(fd, data, tail.off)
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
            cur = self._seen.copy() if self._seen is not None else _Cursor(None, 0, 0, 0)
        out: list[Record] = []
        with _gc_paused(out):
            self._advance(cur, out, _EXCLUSIVE, None)
        with self._cache_lock:
            self._seen, self._tail = cur, cur.copy()
        return out

    # -- reading ------------------------------------------------------------------------------

    def _segments(self) -> list[tuple[int, str]]:
        return _numbered(os.listdir(self.path), "seg-", ".wal")

    def _advance(
        self,
        cur: _Cursor,
        out: list[Record] | _Count | None,
        mode: int,
        found: list[WalProblem] | None,
    ) -> bool:
        """Read from ``cur`` to the end of the log, moving ``cur``. ``out`` collects records
        (None: only find the tail). Returns True when the tail is damaged but could not be
        repaired in this mode (unlocked: possibly an append in progress)."""
        segs = self._segments()
        if not segs:
            return False
        idx = self._locate(cur, segs)
        while True:
            first, name = segs[idx]
            if cur.seg != name:
                cur.seg, cur.off, cur.prev = name, 0, first - 1
            last = idx == len(segs) - 1
            damage = self._scan(cur, out, found)
            if damage is not None:
                size, detail = damage
                if not last:
                    # A closed segment is complete (its successor was created after its last
                    # append), so an unreadable end is corruption, whatever the lock.
                    self._report(
                        WalProblem(
                            "corrupt",
                            cur.prev + 1,
                            name,
                            cur.off,
                            f"{detail}; {size - cur.off} bytes to the end of a "
                            "closed segment skipped",
                        ),
                        found,
                    )
                elif mode == _EXCLUSIVE:
                    self._repair(cur, detail, found)
                else:
                    return True
            if last:
                return False
            idx += 1

    @staticmethod
    def _locate(cur: _Cursor, segs: list[tuple[int, str]]) -> int:
        if cur.seg is not None:
            names = [name for _first, name in segs]
            i = bisect_left(names, cur.seg)
            # Gone (compacted under a slow reader): resume at the next segment that exists.
            return min(i, len(segs) - 1)
        i = bisect_right([first for first, _name in segs], cur.pos + 1) - 1
        return max(i, 0)

    def _scan(
        self, cur: _Cursor, out: list[Record] | _Count | None, found: list[WalProblem] | None
    ) -> tuple[int, str] | None:
        """Read segment ``cur.seg`` from ``cur.off`` to its current end. Skips (and reports)
        corrupt records followed by a valid one; returns ``(size, detail)`` when the bytes
        from ``cur.off`` to the end hold no valid frame."""
        assert cur.seg is not None
        try:
            fd = os.open(os.path.join(self.path, cur.seg), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # compacted away while we listed
        try:
            size = os.fstat(fd).st_size
            need = 0
            while cur.off < size:
                want = min(size - cur.off, max(_CHUNK, need))
                buf = os.pread(fd, want, cur.off)
                if len(buf) < want:
                    size = cur.off + len(buf)  # truncated under us by a repair
                    if not buf:
                        break
                poss: list[int] = []
                pays: list[bytes] = []
                end, prev, need = _parse(buf, cur.prev, poss, pays)
                if out is not None and poss:
                    if poss[0] <= cur.pos:  # the start of reader(after): skip up to `after`
                        k = bisect_right(poss, cur.pos)
                        del poss[:k], pays[:k]
                    if poss:
                        self._decode(cur, buf, poss, pays, out, found)
                del pays
                cur.off += end
                cur.prev = prev
                if prev > cur.pos:
                    cur.pos = prev
                if need == 0 or (need > 0 and cur.off + need <= size):
                    continue
                rest = os.pread(fd, size - cur.off, cur.off)
                detail, claimed = _diagnose(rest, cur.prev)
                hit = _resync(rest, cur.prev)
                if hit is None:
                    return size, detail
                skip, next_pos = hit
                # Name the lost position when it is certain: the only one missing, or the
                # header's claim when that fits between its neighbours.
                pos = None
                if next_pos == cur.prev + 2:
                    pos = cur.prev + 1
                elif claimed is not None and cur.prev < claimed < next_pos:
                    pos = claimed
                self._report(
                    WalProblem("corrupt", pos, cur.seg, cur.off, f"{detail}; {skip} bytes skipped"),
                    found,
                )
                cur.off += skip
                need = 0
            return None
        finally:
            os.close(fd)

    def _decode(
        self,
        cur: _Cursor,
        buf: bytes,
        poss: list[int],
        pays: list[bytes],
        out: list[Record] | _Count,
        found: list[WalProblem] | None,
    ) -> None:
        # One json.loads for a whole chunk is several times faster than one per record.
        try:
            events = json.loads(b"[" + b",".join(pays) + b"]")
        except ValueError:
            events = None
        if events is not None and len(events) == len(pays):
            out.extend(map(Record, poss, events))
            return
        offsets: dict[int, int] = {}
        i = 0
        while i + _HS <= len(buf):
            _magic, ln, _crc, pos = _HDR.unpack_from(buf, i)
            offsets[pos] = i
            i += _HS + ln
        for pos, payload in zip(poss, pays, strict=True):
            try:
                event = json.loads(payload)
                if not isinstance(event, dict):
                    raise ValueError(f"not an object: {type(event).__name__}")
            except ValueError as e:
                self._report(
                    WalProblem(
                        "corrupt",
                        pos,
                        cur.seg or "",
                        cur.off + offsets.get(pos, 0),
                        f"undecodable event skipped: {e}",
                    ),
                    found,
                )
                continue
            out.append(Record(pos, event))

    def _repair(self, cur: _Cursor, detail: str, found: list[WalProblem] | None) -> None:
        """Under LOCK_EX: move a torn tail aside and truncate the segment to its last record."""
        assert cur.seg is not None
        seg = os.path.join(self.path, cur.seg)
        fd = os.open(seg, os.O_RDWR | os.O_CLOEXEC)
        try:
            damaged = os.pread(fd, os.fstat(fd).st_size - cur.off, cur.off)
            stem = f"damaged-{os.path.splitext(cur.seg)[0]}-{cur.off}"
            target_name = f"{stem}.bin"
            n = 1
            while os.path.exists(os.path.join(self.path, target_name)):
                n += 1
                target_name = f"{stem}.{n}.bin"
            target = os.path.join(self.path, target_name)
            dfd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(dfd, damaged, 0)
                os.fsync(dfd)
            finally:
                os.close(dfd)
            os.ftruncate(fd, cur.off)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.path)
        self._report(
            WalProblem(
                "torn-tail",
                cur.prev + 1,
                cur.seg,
                cur.off,
                f"{detail}: {len(damaged)} bytes after position {cur.prev} "
                f"moved to {target_name}; the log continues at "
                f"{cur.prev + 1}",
            ),
            found,
        )

    def _report(self, problem: WalProblem, found: list[WalProblem] | None) -> None:
        if found is not None:
            found.append(problem)
        if problem.kind == "corrupt":
            key = (problem.segment, problem.offset)
            with self._cache_lock:
                if key in self._reported:
                    return
                self._reported.add(key)
        if self._on_problem is not None:
            self._on_problem(problem)
        else:
            print(f"oj: warning: WAL {self.path}: {problem}", file=sys.stderr)

    # -- snapshots ----------------------------------------------------------------------------

    def _snapshots(self) -> list[tuple[int, str]]:
        return _numbered(os.listdir(self.path), "snapshot-", ".json")

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
            self._report(WalProblem("corrupt", pos, name, 0, f"unreadable snapshot: {e}"), found)
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
        self._cur = _Cursor(None, 0, after, after)

    @property
    def position(self) -> int:
        return self._cur.pos

    def read_new(self) -> list[Record]:
        wal, cur = self._wal, self._cur
        out: list[Record] = []
        with _gc_paused(out):
            if wal._advance(cur, out, _UNLOCKED, None):
                # A damaged tail may be an append in progress: once writers are shut out it is
                # either complete or real damage, which the exclusive lock then repairs.
                with wal._shared() as mode:
                    damaged = wal._advance(cur, out, mode, None)
                if damaged:
                    with wal.locked():
                        wal._advance(cur, out, _EXCLUSIVE, None)
        wal._note(cur, seen=True)
        return out


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

    def append(self, *events: dict) -> list[int]:
        """Write the events as one batch and fdatasync once; returns their positions."""
        return self._check()._append_locked(events)
