"""Reading the segment files of a WAL directory, and what reading reports.

``Segments`` reads ``seg-<first position>.wal`` files from a ``Cursor`` to the end of the log,
in chunks: corrupt records followed by a valid one are skipped and reported as WalProblems; a
damaged tail is repaired (moved aside to ``damaged-<segment>-<offset>.bin`` and truncated) when
the caller holds the exclusive lock, and left for a locked re-read otherwise. Also here: the
small file helpers the directory, segments and snapshots share, and the garbage-collector pause
around bulk decoding.
"""

from __future__ import annotations

# Imported whenever ojd.store.wal is (see its header): builtins, and collections, which json loads.
import gc
import os
import sys
from _bisect import bisect_left, bisect_right  # what ``bisect`` re-exports, minus its import
from _thread import allocate_lock
from collections import namedtuple  # already imported by json (through re)

from ojd.paths import open_state_file
from ojd.store.walframe import decode, diagnose, last_frame, parse, resync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ojd.store.walframe import Continuity, Record

_CHUNK = 8 << 20  # read size: big enough to amortise syscalls, small enough to bound memory
_BULK = 10_000  # records decoded in one call above which they are treated as long-lived

# Lock modes of a scan: an unlocked reader may see a concurrent append half-written.
UNLOCKED, SHARED, EXCLUSIVE = 0, 1, 2


# -- file helpers -----------------------------------------------------------------------------


def numbered(names: list[str], prefix: str, suffix: str) -> list[tuple[int, str]]:
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


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(data):
        done += os.pwrite(fd, view[done:], off + done)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- what reading reports, and where it is --------------------------------------------------


# module=: its public home, so repr of the class and pickles name ojd.store.wal.WalProblem.
class WalProblem(namedtuple("WalProblem", "kind pos segment offset detail",
                            module="ojd.store.wal")):
    """``kind`` is "torn-tail", "corrupt", "lost" (positions nothing holds) or "mismatch" (a
    snapshot that disagrees with the log); ``pos`` (int or None) is the position lost, when
    known; ``segment`` and ``offset`` locate the damage; ``detail`` says what was found."""

    __slots__ = ()
    __module__ = "ojd.store.wal"

    kind: str
    pos: int | None
    segment: str
    offset: int
    detail: str

    def __str__(self) -> str:
        at = f" at position {self.pos}" if self.pos is not None else ""
        return f"{self.segment}@{self.offset}: {self.kind}{at}: {self.detail}"


class Cursor:
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
        return f"Cursor({self.seg!r}, {self.off!r}, {self.pos!r}, {self.prev!r})"

    def copy(self) -> Cursor:
        return Cursor(self.seg, self.off, self.pos, self.prev)

    def key(self) -> tuple[str, int]:
        # Segment names sort by their first position, so this orders boundaries in the log.
        return (self.seg or "", self.off)


def span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def positions(ranges: list[tuple[int, int]]) -> str:
    """``position 7`` or ``positions 1-3, 7``."""
    one = len(ranges) == 1 and ranges[0][0] == ranges[0][1]
    return ("position " if one else "positions ") + ", ".join(span(a, b) for a, b in ranges)


def lost_problem(first: int, last: int) -> WalProblem:
    return WalProblem("lost", first, "", 0,
                      f"state {positions([(first, last)])} "
                      f"{'is' if first == last else 'are'} lost: the log no longer holds "
                      f"{'it' if first == last else 'them'} and no snapshot covers "
                      f"{'it' if first == last else 'them'} (items or jobs recorded there are "
                      "gone)")


class gc_paused:
    """``with gc_paused(out):`` runs a decode with the cyclic garbage collector off."""

    # Decoded events are acyclic, yet each new dict would count towards a collection that
    # re-walks everything already decoded: pausing roughly halves the cost of a big replay.
    __slots__ = ("_out", "_was", "_before")

    def __init__(self, out: list[Record] | Continuity) -> None:
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


# -- the segments -----------------------------------------------------------------------------


class Segments:
    """The segment files of one WAL directory, and where their damage is reported."""

    def __init__(self, path: str, on_problem: Callable[[WalProblem], None] | None) -> None:
        self.path = path
        self._on_problem = on_problem
        self._reported: set[tuple[str, int]] = set()
        self._reported_lock = allocate_lock()

    def names(self) -> list[tuple[int, str]]:
        """``(first position, name)`` of every segment, in log order."""
        return numbered(os.listdir(self.path), "seg-", ".wal")

    def report(self, problem: WalProblem, found: list[WalProblem] | None) -> None:
        """Add ``problem`` to ``found``, and tell on_problem (stderr without one), once per
        place for corruption: every reader that passes it would report it again."""
        if found is not None:
            found.append(problem)
        if problem.kind == "corrupt":
            key = (problem.segment, problem.offset)
            with self._reported_lock:
                if key in self._reported:
                    return
                self._reported.add(key)
        if self._on_problem is not None:
            self._on_problem(problem)
        else:
            print(f"oj: warning: WAL {self.path}: {problem}", file=sys.stderr)

    def advance(
        self,
        cur: Cursor,
        out: list[Record] | Continuity | None,
        mode: int,
        found: list[WalProblem] | None,
    ) -> bool:
        """Read from ``cur`` to the end of the log, moving ``cur``. ``out`` collects records
        (None: only find the tail). Returns True when the tail is damaged but could not be
        repaired in this mode (unlocked: possibly an append in progress)."""
        segs = self.names()
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
                    self.report(
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
                elif mode == EXCLUSIVE:
                    self._repair(cur, detail, found)
                else:
                    return True
            if last:
                return False
            idx += 1

    @staticmethod
    def _locate(cur: Cursor, segs: list[tuple[int, str]]) -> int:
        if cur.seg is not None:
            names = [name for _first, name in segs]
            i = bisect_left(names, cur.seg)
            # Gone (compacted under a slow reader): resume at the next segment that exists.
            return min(i, len(segs) - 1)
        i = bisect_right([first for first, _name in segs], cur.pos + 1) - 1
        return max(i, 0)

    def _scan(
        self, cur: Cursor, out: list[Record] | Continuity | None,
        found: list[WalProblem] | None
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
                end, prev, need = parse(buf, cur.prev, poss, pays)
                if out is not None and poss:
                    if poss[0] <= cur.pos:  # the start of reader(after): skip up to `after`
                        k = bisect_right(poss, cur.pos)
                        del poss[:k], pays[:k]
                    if poss:
                        for pos, off, detail in decode(buf, poss, pays, out):
                            self.report(
                                WalProblem("corrupt", pos, cur.seg, cur.off + off, detail), found
                            )
                del pays
                cur.off += end
                cur.prev = prev
                if prev > cur.pos:
                    cur.pos = prev
                if need == 0 or (need > 0 and cur.off + need <= size):
                    continue
                rest = os.pread(fd, size - cur.off, cur.off)
                detail, claimed = diagnose(rest, cur.prev)
                hit = resync(rest, cur.prev)
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
                self.report(
                    WalProblem("corrupt", pos, cur.seg, cur.off, f"{detail}; {skip} bytes skipped"),
                    found,
                )
                cur.off += skip
                need = 0
            return None
        finally:
            os.close(fd)

    def _repair(self, cur: Cursor, detail: str, found: list[WalProblem] | None) -> None:
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
            dfd = open_state_file(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC)
            try:
                write_all(dfd, damaged, 0)
                os.fsync(dfd)
            finally:
                os.close(dfd)
            os.ftruncate(fd, cur.off)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path)
        self.report(
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

    def find_end(self, cur: Cursor) -> None:
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
        pos = last_frame(data, cur.prev)
        if pos is not None:
            cur.off, cur.pos, cur.prev = size, pos, pos
