"""Waking a queue's running workers after a push, without D-Bus on the push path."""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store import Store


def worker_unit(name: str) -> str:
    return f"oj-worker@{name}.service"


def wake_queue_workers(store: Store, project: str, queue: str
                       ) -> tuple[list[str], list[str]]:
    """After a push: SIGUSR1 to the running workers whose source is ``queue``.

    The worker's main PID comes from its ``worker:started`` record and is checked against
    /proc/PID/cgroup (it must still be that worker's unit), so no D-Bus round trip is on
    the push path. Returns (woken, not running)."""
    woken, idle = [], []
    for w in store.state.workers.values():
        if w.get("project") != project or w.get("queue") != queue:
            continue
        pid = w.get("pid")
        if pid and _in_unit(pid, worker_unit(w["name"])):
            try:
                os.kill(pid, signal.SIGUSR1)
                woken.append(w["name"])
                continue
            except (ProcessLookupError, PermissionError):
                pass
        idle.append(w["name"])
    return woken, idle


def _in_unit(pid: int, unit: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return any(line.rstrip().endswith("/" + unit) for line in f)
    except OSError:
        return False
