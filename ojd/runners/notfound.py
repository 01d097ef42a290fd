"""What a failed command's output says about a program that is not there: bash's
``NAME: command not found`` (exit 127), named in the failure of its step or agent instead of
a bare exit status."""

from __future__ import annotations

import os
import re

NOT_FOUND_EXIT = 127  # bash: the command was not found (or a path to it does not exist)
TAIL = 64 << 10  # bytes of a step's output looked at: the message is among its last lines

# "bash: line 1: claude: command not found", "/tmp/x.sh: line 3: ./build: No such file..."
_MESSAGE = re.compile(
    rb"^(?:[^\n]*?: )?(?:line \d+: )?([^\s:]+): (?:command not found|No such file or directory)"
    rb"\s*$", re.MULTILINE)


def missing_command(output: bytes | str) -> str | None:
    """The program bash last said it could not find in ``output``, or None."""
    data = output.encode(errors="replace") if isinstance(output, str) else output
    found = _MESSAGE.findall(data)
    return found[-1].decode(errors="replace") if found else None


def since(path: str, offset: int) -> bytes:
    """What a log holds from ``offset`` on, its last ``TAIL`` bytes at most ("" when it
    cannot be read, or was cut shorter meanwhile)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(offset, size - TAIL) if size >= offset else max(0, size - TAIL))
            return f.read(TAIL)
    except OSError:
        return b""
