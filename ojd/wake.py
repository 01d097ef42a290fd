"""Finding and waking a queue's running workers after a push, without D-Bus on the push path.

A worker runs either in its unit or in the foreground (``ojd worker NAME --foreground``).
Either way it writes ``PID STARTTIME`` into the lock file it holds
(``workers/PROJECT:NAME.lock``,
see ``ojd.identity``), so a recycled PID of a worker that is gone is never signalled.
"""

from __future__ import annotations

import os
import signal

from ojd.errors import escaped, quoted
from ojd.identity import host_name, in_unit, proc_start_time
from ojd.unitnames import short, worker_unit

try:  # as in ojd.project: the builtin module avoids loading OpenSSL's binding
    from _sha256 import sha256
except ImportError:
    from hashlib import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ojd.store import Store


def lock_path(state_root: str, name: str) -> str:
    return os.path.join(state_root, "workers", f"{name}.lock")


def mark_poll(state_root: str, name: str) -> None:
    """A worker's poll touches its lock file: its mtime says when the worker last polled
    (``oj status``), with no WAL record per poll."""
    try:
        os.utime(lock_path(state_root, name))
    except OSError:  # a lock file the worker may only read (--run-as): no mark
        pass


def last_poll(state_root: str, name: str) -> float | None:
    try:
        return os.stat(lock_path(state_root, name)).st_mtime
    except OSError:
        return None


def running_pid(state_root: str, name: str) -> int | None:
    """The PID of the running ``ojd worker NAME`` of this state directory, unit or not."""
    return _pid_in(lock_path(state_root, name))


def _pid_in(path: str) -> int | None:
    """The live process a lock file names (``PID STARTTIME``), or None."""
    try:
        with open(path) as f:
            pid_text, _, start = f.read().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and start and proc_start_time(pid) == start else None


UP_STATE = "ojd up"  # the sub-state shown for a worker or cron that 'ojd up' runs


def up_lock_path(state_root: str, root: str) -> str:
    """The lock ``ojd up`` holds for project ``root`` (its pid file too), by a hash of the
    root: a path is no file name."""
    digest = sha256(root.encode()).hexdigest()[:16]
    return os.path.join(state_root, "up", f"{digest}.lock")


def up_pid(state_root: str, root: str) -> int | None:
    """The PID of the ``ojd up`` that runs project ``root``, or None."""
    return _pid_in(up_lock_path(state_root, root))


def foreground_pid(state_root: str, name: str) -> int | None:
    """The PID of worker ``name`` running outside its unit (``ojd worker --foreground``)."""
    pid = running_pid(state_root, name)
    return pid if pid is not None and not in_unit(pid, worker_unit(name)) else None


def manager_present(user: bool | None = None) -> bool:
    """Whether a systemd manager runs for this scope, judged from /run without D-Bus: the
    system manager creates /run/systemd/system (sd_booted(3)), a user manager its private
    socket."""
    if user is None:
        user = os.geteuid() != 0
    if not user:
        return os.path.isdir("/run/systemd/system")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return os.path.exists(os.path.join(runtime, "systemd", "private"))


def start_hint(name: str) -> str:
    """The command that starts worker ``name`` on this machine."""
    if manager_present():
        return f"start with 'oj worker start {escaped(name)}'"
    return f"no systemd here: run 'ojd worker {escaped(name)} --foreground' in the project"


def wake_queue_workers(store: Store, project: str, queue: str, defined: Iterable[str] = ()
                       ) -> tuple[list[str], list[str]]:
    """After a push (or a retry): SIGUSR1 to the running workers whose source is ``queue``.

    A unit's main PID comes from its ``worker:started`` record and is checked against
    /proc/PID/cgroup (it must still be that worker's unit); a foreground worker's comes
    from its lock file, checked by start time. No D-Bus round trip is on the push path.
    Returns (woken, not running), by the names the runbook gives them: the latter with
    ``defined``, the runbook's workers of ``queue``, also those never started, which have
    no record yet."""
    woken, idle = [], []
    for w in store.state.workers.values():
        if w.get("project") != project or w.get("queue") != queue:
            continue
        awake = wake_worker(store, w["name"]) or (store.shared and runs_elsewhere(w))
        (woken if awake else idle).append(short(w["name"]))
    idle += sorted(set(defined) - set(woken) - set(idle))
    return woken, idle


def not_woken(idle: list[str], state_root: str | None = None, project: str | None = None
              ) -> str:
    """The line that says no worker took notice of a new item, and how to start one: where
    ``ojd up`` runs ``project``, through it, whether or not systemd is here."""
    names = ", ".join(quoted(name) for name in idle)
    up = up_pid(state_root, project) if state_root and project else None
    if up is not None:
        hint = (f"'ojd up' (PID {up}) runs this project: start it with 'oj worker start "
                f"{escaped(idle[0])}'")
    else:
        hint = start_hint(idle[0])
    return f"no worker was woken: {names} not running; {hint}"


def runs_elsewhere(w: dict) -> bool:
    """A worker last started on another host and not stopped since: with a shared store it
    is woken by the database's notification of the push, not by a signal from here."""
    host = w.get("host")
    return bool(host) and host != host_name() and (
        w.get("stopped_at") or 0) < (w.get("started_at") or 0)


def wake_worker(store: Store, name: str) -> bool:
    """SIGUSR1 to worker ``name`` (its full name, PROJECT:NAME) if it runs (in its unit or
    in the foreground)."""
    w = store.state.workers.get(name) or {}
    pid = w.get("pid")
    if not (pid and in_unit(pid, worker_unit(name))):
        pid = foreground_pid(store.root, name)
    if pid:
        try:
            os.kill(pid, signal.SIGUSR1)
            return True
        except (ProcessLookupError, PermissionError):
            pass
    return False
