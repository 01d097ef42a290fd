"""The PATH a worker's jobs run with, and which programs it does not find there: what
``oj runbook check`` warns of (``ojd.runbook.programs`` names the programs)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from ojd.systemd import Systemd, SystemdUnavailable


def worker_path() -> tuple[str, str]:
    """(PATH, whose it is): the service manager's, which a worker unit inherits, else this
    process's (a worker started with --foreground here has it)."""
    manager = Systemd()
    try:
        path = manager.environment().get("PATH")
    except SystemdUnavailable:
        path = None
    finally:
        manager.close()
    if path is not None:
        whose = f"the {manager.scope} manager's PATH"
    else:
        path, whose = os.environ.get("PATH", os.defpath), "this shell's PATH"
    # a job process puts this installation's scripts first (ojd.runners.jobs)
    bindir = os.path.dirname(os.path.abspath(sys.argv[0]))
    oj = os.path.join(bindir, "oj")
    if os.path.isfile(oj) and os.access(oj, os.X_OK):
        path = bindir + os.pathsep + path
    return path, whose


def missing_program(path: str, whose: str) -> Callable[[str], str | None]:
    """For ``validate.build``: why a program is not found on ``path``, or None."""

    def missing(word: str) -> str | None:
        if shutil.which(word, path=path) is not None:
            return None
        return f"which is not on {whose}; install it or give its full path"

    return missing
