"""A job's unit: the systemd manager its scope goes to (its starter's, or none), the
scope ``oj-job-ID.scope`` its process is moved into, and the wait until it is there."""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable

from ojd.errors import OjError
from ojd.runners import leftovers
from ojd.systemd import Systemd, SystemdUnavailable
from ojd.wake import manager_present


def job_unit(job_id: str) -> str:
    return f"oj-job-{job_id}.scope"


def own_manager():
    """The systemd manager this process runs under (its cgroup says which), for the scopes
    of the jobs it starts; None outside a manager's units."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    # the unified hierarchy's line, or (cgroup v1) systemd's named one
    path = next((ln.split(":", 2)[2] for ln in lines if ":name=systemd:" in ln),
                next((ln[3:] for ln in lines if ln.startswith("0::")), ""))
    if "/user@" in path:
        return Systemd(user=True) if os.geteuid() != 0 else None
    if "/system.slice/" in path and os.geteuid() == 0:
        return Systemd(user=False)
    return None  # a run-as worker cannot make units in the system manager


def manager_for_cli():
    """The manager ``oj run`` puts a job's scope in: the system's for root, the user's when
    it outlives the login (linger); else None, and the job runs in a session of its own,
    which a closed terminal does not stop either."""
    user = os.geteuid() != 0
    if not manager_present(user):
        return None
    if user:
        name = pwd.getpwuid(os.geteuid()).pw_name
        if not os.path.exists(f"/var/lib/systemd/linger/{name}"):
            return None
    return Systemd(user=user)


class NoScope(OjError):
    """The manager made no scope for a job whose starter needs one (``scope_required``)."""


def into_scope(manager, pid: int, job_id: str, name: str,
             warn: Callable[[str], None] | None, required: bool = False) -> str | None:
    """Move ``pid`` into a new scope ``oj-job-ID.scope`` of ``manager``; its unit, or None
    (said through ``warn``) when the manager made none and none is ``required``."""
    unit = job_unit(job_id)
    # a cancel stops the scope: what ignores SIGTERM is killed after a short grace
    stop_timeout = leftovers.STOP_GRACE
    try:
        try:
            manager.start_scope(unit, pid, f"oj job {job_id} ({name})", stop_timeout)
        except SystemdUnavailable as e:
            if "already" not in str(e) and "exists" not in str(e):
                raise
            # the scope of an earlier run of this job is still being collected
            unit = f"oj-job-{job_id}-{os.urandom(2).hex()}.scope"
            manager.start_scope(unit, pid, f"oj job {job_id} ({name})", stop_timeout)
    except SystemdUnavailable as e:
        if required:
            raise NoScope(f"the manager made no scope for job {job_id} ({e})") from None
        if warn is not None:
            warn(f"job {job_id} runs without a unit of its own ({e}); a stop of its "
                 "starter's unit stops it too")
        return None
    return unit


def wait_in_scope(unit: str, pid: int | str = "self", timeout: float = 2.0) -> None:
    """The manager moves a process into its scope after the call that asked for it
    returned: wait until ``pid`` is there. A job process runs nothing (no step, no journal
    stream) before; a cron tick's service must not end before (its stop would kill what is
    left in it). A process already gone has nothing left to lose."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if unit in f.read():
                    return
        except OSError:
            return
        time.sleep(0.0005)
