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
    """Create the state dir: 0750 for the system (an ``oj`` group may read it), 0700 per user.
    Root using another user's state dir makes its directories ahead, as that user's."""
    path = path or state_dir()
    if not os.path.isdir(path):
        mode = 0o750 if path == SYSTEM_STATE_DIR else 0o700
        make_state_dir(path, mode)
        os.chmod(path, mode)  # makedirs applies the umask; the mode is the point
    if os.geteuid() == 0 and _heir(os.stat(path)) is not None:
        for sub in STATE_SUBDIRS:
            make_state_dir(os.path.join(path, sub))
    return path


# Root writing into a user's state dir (OJ_STATE_DIR=~user/.local/state/oj, or a directory
# under a user's home) must not lock that user out of it: what root makes in a directory
# another user owns is given to that user, so the user's own commands and worker can still
# write there. Only what this process made is given away (a file created with O_EXCL, a
# directory it made), and always through a descriptor of the directory it was made in: a
# symlink the user put in its place cannot hand the user a file of root's. The state dir's
# own directories are made ahead (ensure_state_dir), so that those made elsewhere with
# os.makedirs (job logs, step status files, the runbook cache, agent sockets) are the
# user's too; files root writes in them stay root's, which the directory's owner may
# remove or replace.
STATE_SUBDIRS = ("wal", "workers", "cache", "logs", "steps", "workspaces", "agents")


def _heir(directory: os.stat_result) -> tuple[int, int] | None:
    """Whom root gives what it makes in ``directory``: its owner when that is another user
    than root; None otherwise (and for every other user, who can give nothing away)."""
    if directory.st_uid == 0 or os.geteuid() != 0:
        return None
    return directory.st_uid, directory.st_gid


def make_state_dir(path: str, mode: int = 0o700) -> None:
    """``os.makedirs(path, mode, exist_ok=True)`` for a directory of the state dir (the
    intermediate ones get the default mode, as with makedirs); one root makes in another
    user's directory belongs to that user."""
    if os.geteuid() != 0:
        os.makedirs(path, mode=mode, exist_ok=True)
        return
    path = os.path.normpath(path)
    if os.path.isdir(path):
        return
    parent, name = os.path.split(path)
    if parent and parent != path:
        make_state_dir(parent, 0o777)
    dfd = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(name, mode, dir_fd=dfd)
        except FileExistsError:
            if os.path.isdir(path):
                return  # made meanwhile by someone else
            raise
        heir = _heir(os.fstat(dfd))
        if heir is not None:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=dfd)
            try:
                if os.fstat(fd).st_uid == 0:  # still the one made here
                    os.fchown(fd, *heir)
            finally:
                os.close(fd)
    except OSError as e:
        e.filename = path  # the whole path, as os.makedirs says it, not the name in dfd
        raise
    finally:
        os.close(dfd)


def open_state_file(path: str, flags: int) -> int:
    """``os.open`` for a file of the state dir: 0600, or 0660 in a directory shared through
    its group (setgid and group-writable: ``oj worker start --run-as`` shares the system
    state dir with group oj), whatever this process's umask. A file root creates in a
    directory another user owns belongs to that user."""
    if os.geteuid() == 0:
        fd, mode = _open_as_root(path, flags)
    else:
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


def _open_as_root(path: str, flags: int) -> tuple[int, int]:
    """``open_state_file`` for root: the file and the mode it was opened with."""
    try:
        return _open_in_dir(path, flags)
    except OSError as e:
        e.filename = path  # the whole path, as os.open says it, not the name in its directory
        raise


def _open_in_dir(path: str, flags: int) -> tuple[int, int]:
    dfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(dfd)
        mode = 0o660 if st.st_mode & 0o2020 == 0o2020 else 0o600
        name = os.path.basename(path)
        heir = _heir(st) if flags & os.O_CREAT else None
        if heir is None:
            return os.open(name, flags, mode, dir_fd=dfd), mode
        while True:  # created here (given away), or opened as it was (kept as it is)
            try:
                fd = os.open(name, flags | os.O_EXCL, mode, dir_fd=dfd)
                break
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
            try:
                return os.open(name, flags & ~os.O_CREAT, mode, dir_fd=dfd), mode
            except FileNotFoundError:
                continue  # removed meanwhile: create it after all
        try:
            os.fchown(fd, *heir)
        except OSError:
            os.close(fd)
            raise
        return fd, mode
    finally:
        os.close(dfd)


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
