"""Where oj keeps its state: one WAL directory per user (or the system), plus logs and workspaces.

Kept free of pathlib and platformdirs on purpose: this runs on every CLI call, and the
hot commands (``oj queue push``) must start in a few milliseconds.
"""

from __future__ import annotations

import os

SYSTEM_STATE_DIR = "/var/lib/oj"


def is_system_scope() -> bool:
    """Root talks to the system manager and keeps system state; everyone else is per-user."""
    return os.geteuid() == 0


def state_dir() -> str:
    """``$OJ_STATE_DIR``, else ``/var/lib/oj`` as root, else the user's XDG state dir."""
    override = os.environ.get("OJ_STATE_DIR")
    if override:
        return os.path.abspath(override)
    if is_system_scope():
        return SYSTEM_STATE_DIR
    # Same answer as platformdirs.user_state_dir("oj") on Linux, without its import cost.
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "oj")


def ensure_state_dir(path: str | None = None) -> str:
    """Create the state dir: 0750 for the system (an ``oj`` group may read it), 0700 per user."""
    path = path or state_dir()
    if not os.path.isdir(path):
        mode = 0o750 if path == SYSTEM_STATE_DIR else 0o700
        os.makedirs(path, mode=mode, exist_ok=True)
        os.chmod(path, mode)  # makedirs applies the umask; the mode is the point
    return path


def open_state_file(path: str, flags: int) -> int:
    """``os.open`` for a file of the state dir: 0600, or 0660 in a directory shared through
    its group (setgid and group-writable: ``oj worker start --run-as`` shares the system
    state dir with group oj), whatever this process's umask."""
    mode = 0o660 if os.stat(os.path.dirname(path)).st_mode & 0o2020 == 0o2020 else 0o600
    fd = os.open(path, flags, mode)
    if mode != 0o600:
        try:
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and st.st_mode & 0o777 != mode:
                os.fchmod(fd, mode)  # the umask took the group's write away
        except OSError:
            os.close(fd)
            raise
    return fd


def wal_dir(root: str) -> str:
    return os.path.join(root, "wal")


def logs_dir(root: str) -> str:
    return os.path.join(root, "logs")


def job_log(root: str, job_id: str) -> str:
    """A job's log: every step's output and the runner's ``==>`` lines."""
    return os.path.join(logs_dir(root), f"{job_id}.log")


def steps_dir(root: str) -> str:
    """Exit status files that step wrappers write: a step outlives the process that ran it."""
    return os.path.join(root, "steps")


def workspaces_dir(root: str) -> str:
    return os.path.join(root, "workspaces")


def cache_dir(root: str) -> str:
    return os.path.join(root, "cache")
