"""A job process's name in ``ps`` and ``systemctl status``: ``ojd job 3f9c merge/check``.

A job process is a fork of whoever started it (a worker, ``oj run``), so without this it
shows their command line. Its own command line is rewritten in place: the kernel reads
``/proc/PID/cmdline`` from the process's argument area (``arg_start``..``arg_end`` of
``/proc/self/stat``), which Python copied at start and never reads again. The title is cut
to the area's size (the environment after it is left alone), and the thread name
(``/proc/PID/comm``, 15 bytes, what ``top`` and ``ps -o comm`` show) is set with
``prctl(PR_SET_NAME)``. A failure changes nothing: a name is not worth a job.
"""

from __future__ import annotations

import ctypes

_PR_SET_NAME = 15  # linux/prctl.h
_area: tuple[int, int] | None = None
_libc = None


def _argument_area() -> tuple[int, int] | None:
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2:].split()  # fields from the 3rd (state) on
    if len(fields) < 47:
        return None  # a kernel before 3.5 does not say where
    start, end = int(fields[45]), int(fields[46])  # fields 48 and 49: arg_start, arg_end
    return (start, end) if 0 < start < end else None


def set_title(title: str, comm: str | None = None) -> None:
    """Show this process as ``title`` in ps (cut to fit), its thread name as ``comm``."""
    global _area, _libc
    try:
        if _area is None:
            _area = _argument_area() or (0, 0)
            _libc = ctypes.CDLL(None, use_errno=True)
        start, end = _area
        if end > start:
            size = end - start
            # NUL-filled up to the area's last byte, which stays NUL: the kernel then shows
            # the area as it is, not running on into the environment
            ctypes.memmove(start, title.encode(errors="replace")[:size - 1].ljust(size, b"\0"),
                           size)
        if comm and _libc is not None:
            _libc.prctl(_PR_SET_NAME, comm.encode(errors="replace")[:15], 0, 0, 0)
    except (OSError, ValueError, AttributeError):
        pass
