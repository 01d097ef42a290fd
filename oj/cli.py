"""The ``oj`` command line: a thin layer over ojd.

Start-up is what users feel (``oj`` runs inside shell steps and scripts), so command groups
load lazily, and the hottest commands, ``oj queue push`` and ``oj worker start|wake NAME``,
have a fast path that does not import click at all; anything it does not understand falls
through to the full click parser.
"""

from __future__ import annotations

import os
import sys

from ojd.errors import OjError


def _fail(message: str, code: int) -> int:
    for line in message.splitlines():
        # runbook problems start with their file:line; everything else is oj's
        is_location = line.startswith(".") and ":" in line.split(" ", 1)[0]
        print(line if is_location else f"oj: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if "push" in argv[:4] or "worker" in argv[:3]:
            from oj.fastpath import try_fast  # lazy: only push and worker start try it

            code = try_fast(argv)
            if code is not None:
                return code
        from oj.root import run  # lazy: click (~60 ms), only for what the fast path leaves

        return run(argv)
    except OjError as e:
        return _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # the last resort for files oj cannot use: one line, no traceback
        if isinstance(e, BrokenPipeError):
            raise
        where = f": {e.filename}" if e.filename else ""
        return _fail(f"{e.strerror or e}{where}", 1)
    except BrokenPipeError:
        # `oj queue list | head`: the reader left; say nothing, like coreutils
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
