"""How a rendered script reaches bash: on its command line, or, when it is too big for one,
through a memory file.

Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN) with "Argument list too long",
and item data is pasted into scripts, so a large item would fail its job before bash ran.
Big scripts are written to a memfd that bash reads as its script file (``bash /dev/fd/N``);
everything else keeps ``bash -c`` (the same ``$0`` and messages as always).
"""

from __future__ import annotations

import os
import subprocess

_ARG_LIMIT = 100_000  # bytes: well under MAX_ARG_STRLEN, leaving room for nothing else to fail


class Script:
    """``with Script(text, "-e") as s: subprocess.run(s.argv, pass_fds=s.fds)``."""

    def __init__(self, text: str, *options: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        self.fds: tuple[int, ...] = ()
        if len(data) < _ARG_LIMIT:
            self.argv = ["bash", *options, "-c", text]
            return
        fd = os.memfd_create("oj-script", os.MFD_CLOEXEC)  # pass_fds opens it to bash only
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        self.fds = (fd,)
        self.argv = ["bash", *options, f"/dev/fd/{fd}"]

    def __enter__(self) -> Script:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds:
            os.close(fd)


def run(script: str, *options: str, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run of a script, whatever its size (``text=`` goes to subprocess.run)."""
    with Script(script, *options) as s:
        return subprocess.run(s.argv, pass_fds=s.fds, **kwargs)
