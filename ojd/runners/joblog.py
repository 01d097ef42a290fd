"""A job log's cap: ``job_log_limit`` in the state dir's ``oj.conf`` (64M unless set; 0: no
cap). A log grown past it keeps its head and its tail, with one line between them saying how
much was cut, so a step that prints without end cannot fill the disk the WAL is on.

Steps write the log themselves (O_APPEND, through their own fds) while it is capped. Where
the file system can (ext4, XFS) the middle is taken out in place
(``FALLOC_FL_COLLAPSE_RANGE``): appends meanwhile land after the kept tail, none is lost.
Elsewhere (tmpfs, btrfs) the tail is copied down over the middle and the file truncated
after it, which loses what a step writes in that instant.

The head is the same at every cap of one log (its size depends on the limit and the block
size only), so the line saying what was cut stays in one place and counts every cut.
"""

from __future__ import annotations

import fcntl
import os
import re

from ojd import conf

DEFAULT_LIMIT = 64 << 20
MIN_LIMIT = 64 << 10  # a smaller limit is this: a head and a tail of a few lines each
NEARBY = 1024  # how far from a cut point a line end is looked for
_COLLAPSE_RANGE = 0x08  # FALLOC_FL_COLLAPSE_RANGE, linux/falloc.h
_MARKER = re.compile(rb"\n?==> oj: (\d+) bytes of this log were cut[^\n]*\n")


def limit_for(state_root: str) -> int:
    """The cap of a job log of this state dir: ``job_log_limit`` of its oj.conf, 64 MiB
    when unset, 0 for none. A value that does not parse is an OjError naming its line."""
    limit = conf.size(state_root, "job_log_limit")
    return DEFAULT_LIMIT if limit is None else limit


def cap(path: str, limit: int | None, *, collapse: bool = True) -> bool:
    """Cut the middle out of the log at ``path`` when it is larger than ``limit`` bytes,
    keeping about ``limit/2`` of its head and somewhat less of its tail (room to grow
    before the next cut); whether it cut. ``collapse=False``: copy the tail even where the
    file system could collapse the range (for tests)."""
    if not limit:
        return False
    limit = max(limit, MIN_LIMIT)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_size <= limit:
            return False
        try:  # one cut at a time (a job process that took over, say)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return _cut(fd, limit, st.st_blksize if st.st_blksize > 0 else 4096, collapse)
    finally:
        os.close(fd)


def _marker(cut: int, limit: int) -> bytes:
    return f"==> oj: {cut} bytes of this log were cut (job_log_limit = " \
           f"{_size_text(limit)})".encode()


def _size_text(n: int) -> str:
    for shift, unit in ((30, "G"), (20, "M"), (10, "k")):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _cut(fd: int, limit: int, block: int, collapse: bool) -> bool:
    size = os.fstat(fd).st_size
    room = len(_marker(10**15, limit)) + 2  # the longest marker line, a newline before it
    slack = limit // 16  # kept free, so that a slowly growing log is not cut at every poll
    # the head ends on a block boundary (a collapse cuts whole blocks), the same one at
    # every cut; its last bytes, from the line end before them, become the marker line
    head = limit // 2 // block * block
    if head < room + NEARBY:
        head = limit // 2
    zone_at = max(0, head - room - NEARBY)
    zone = os.pread(fd, 2 * (room + NEARBY), zone_at)
    nl = zone.rfind(b"\n", 0, head - room - zone_at)
    head_end = zone_at + nl + 1 if nl >= 0 else head - room
    lead = b"" if nl >= 0 else b"\n"  # a long line cut: the marker on a line of its own
    # an earlier cut's marker: the count goes on, what follows it is the kept tail's start
    old = _MARKER.match(zone, head_end - zone_at)
    done, kept_from = (int(old[1]), zone_at + old.end()) if old else (0, head_end)

    # the bytes from head_end to the kept tail's first line start become one line: the
    # marker, padded with spaces (its room ends on a block boundary, not a line end)
    start = _round_up(max(size - (limit - slack - head), kept_from), block)
    if collapse and head % block == 0 and head < start < size - NEARBY:
        tail = _line_start(fd, start)
        marker = lead + _marker(done + tail - kept_from, limit)
        if _collapse(fd, head, start - head):
            fill = (head - head_end) + (tail - start) - len(marker) - 1
            os.pwrite(fd, marker + b" " * fill + b"\n", head_end)
            return True
    # no collapse here: the tail is copied down over the middle, then the file truncated
    # after it. Lines a step writes between the copy's last read and the truncate are lost:
    # a short instant once per cut, where no file system support leaves no better way
    tail = _line_start(fd, max(size - (limit - slack - head), kept_from))
    marker = lead + _marker(done + tail - kept_from, limit)
    marker += b" " * (head - head_end - len(marker) - 1) + b"\n"  # as a collapse leaves it
    os.pwrite(fd, marker, head_end)
    at, to = tail, head  # to < at: the copy never overwrites what it has yet to read
    while chunk := os.pread(fd, 1 << 20, at):
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, to)
            view, to = view[n:], to + n
        at += len(chunk)
    os.ftruncate(fd, to)
    return True


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _line_start(fd: int, at: int) -> int:
    """The first line start at or after ``at`` when one is near, else ``at``."""
    near = os.pread(fd, NEARBY + 1, at - 1)
    nl = near.find(b"\n")
    return at + nl if nl >= 0 else at


_fallocate = None


def _collapse(fd: int, offset: int, length: int) -> bool:
    """Remove the bytes [offset, offset+length) in place; False where that fails: the file
    system cannot (EOPNOTSUPP, EINVAL: tmpfs, btrfs, NFS...), or it lacks the space for
    the new extents, which the copy (into blocks the file has) does not need."""
    global _fallocate
    if _fallocate is None:
        import ctypes  # lazy: only for a log that is cut, not on every job process's start

        try:  # this process's own symbols, libc's among them (no ldconfig search)
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return False
        call = getattr(libc, "fallocate64", None) or libc.fallocate
        call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        call.restype = ctypes.c_int
        _fallocate = call
    return _fallocate(fd, _COLLAPSE_RANGE, offset, length) == 0
