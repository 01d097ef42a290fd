"""What a job's steps leave running: found and stopped when the job is over.

A job process is a child subreaper (PR_SET_CHILD_SUBREAPER): a step's ``sleep 600 &`` or
``setsid daemon`` whose parent exits is reparented to the job process, not to init, so
every process a job started is a descendant of its job process, whether it left the step's
process group or not, with systemd or without. When the job is over, they are stopped:
SIGTERM, then SIGKILL after a grace, as a scope's stop does.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Collection

_PR_SET_CHILD_SUBREAPER = 36

# how long what is stopped (a cancelled or timed-out step, a job's leftovers, a job's
# scope) has between SIGTERM and SIGKILL
STOP_GRACE = 5.0


def become_subreaper() -> bool:  # pragma: no cover - runs in the job process
    """Make orphaned descendants this process's children; False where prctl is refused."""
    # lazy: ctypes for the job process only; every `oj` that asks whether a job runs imports
    # this module
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children(pid: int) -> list[int] | None:
    """The direct children of ``pid`` from /proc (None where the kernel does not list
    them: no CONFIG_PROC_CHILDREN)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None
        except OSError:
            continue
    return found


def _stat(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, ...; None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def _children_by_scan() -> dict[int, list[int]]:
    """Every process's children, from each one's parent in /proc/PID/stat."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := _stat(name)) is not None:
            tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def descendants(root: int | None = None, skip: Collection[int] = ()) -> list[int]:
    """Every process below ``root`` (this process), parents before their children, without
    ``skip`` and what is below those."""
    root = os.getpid() if root is None else root
    tree: dict[int, list[int]] | None = None
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        kids = None if tree is not None else _children(pid)
        if kids is None:
            if tree is None:
                tree = _children_by_scan()
            kids = tree.get(pid, [])
        for kid in kids:
            if kid not in skip:
                out.append(kid)
                todo.append(kid)
    return out


def stop(skip: Collection[int] = (), grace: float = STOP_GRACE) -> int:
    """Stop every descendant of this process but ``skip``: SIGTERM, SIGKILL to what is left
    after ``grace``; reaped. How many there were."""
    seen: set[int] = set()
    deadline = None
    sig = signal.SIGTERM
    while True:
        pids = descendants(skip=skip)
        if not pids:
            return len(seen)
        now = time.monotonic()
        if deadline is None:
            deadline = now + grace
        elif now >= deadline + 5.0:
            return len(seen)  # not ours to kill (another user's, set-user-ID): left alone
        elif now >= deadline:
            sig = signal.SIGKILL
        for pid in pids:
            if pid not in seen or sig == signal.SIGKILL:
                seen.add(pid)
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        _reap(pids)
        time.sleep(0.01)


def reap_group(pgid: int, keep: int | None = None) -> None:
    """Collect this process's ended children in process group ``pgid`` but ``keep``: a
    step's processes come back to the job process (the subreaper) when the step's wrapper
    exits, and as zombies they would keep its group alive for whoever waits for it to go.
    ``keep``: the one another waiter collects (a Popen's own child)."""
    for pid in _children(os.getpid()) or ():
        fields = _stat(pid) if pid != keep else None
        if fields is not None and fields[0] == b"Z" and int(fields[2]) == pgid:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _reap(pids: list[int]) -> None:
    """Collect those of ``pids`` that are this process's own children and have ended."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours (a grandchild), or reaped already
