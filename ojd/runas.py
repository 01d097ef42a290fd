"""``oj worker start --run-as USER``: a system worker that runs as a user, not root.

The choice lives in the drop-in ``oj-worker@NAME.service.d/40-oj-run-as.conf`` (``User=``),
so it holds for later starts, restarts and boots until ``--run-as root`` removes it. Such a
worker shares the system state dir with root through group ``oj``: the worker gets it as a
supplementary group and ``UMask=0007``, and the state dir's ``wal/``, ``logs/``,
``workspaces/`` and ``workers/`` become group ``oj``, setgid, group-writable (the WAL code
creates its files 0660 there). ``cache/`` stays writable by root alone: it holds pickles,
which only the user who would load them may write.
"""

from __future__ import annotations

import grp
import os
import pwd

from ojd import paths, unitcontrol
from ojd.errors import OjError, UsageError, quoted
from ojd.systemd import Systemd
from ojd.unitnames import worker_unit

GROUP = "oj"
DROPIN = "40-oj-run-as.conf"
SHARED_DIRS = ("wal", "logs", "steps", "workspaces", "workers")


def dropin_path(systemd: Systemd, name: str) -> str:
    return unitcontrol.dropin_path(systemd, worker_unit(name), DROPIN)


def recorded_user(systemd: Systemd, name: str) -> str | None:
    """The user a system worker runs as, from its drop-in; None: root."""
    if systemd.user:
        return None
    try:
        with open(dropin_path(systemd, name)) as f:
            for line in f:
                if line.startswith("User="):
                    return line[len("User="):].strip()
    except FileNotFoundError:
        pass
    return None


def runner(systemd: Systemd, name: str, run_as: str | None) -> tuple[int, str | None]:
    """Who worker ``name`` will run as: (uid, user for the drop-in, None for none)."""
    if run_as is not None:
        if systemd.user or os.geteuid() != 0:
            raise UsageError("--run-as is for system workers: run it as root, without "
                             "--user (a user's own workers already run as that user)")
        if run_as in ("root", "0"):
            return 0, None
    elif systemd.user:
        return os.geteuid(), None
    user = run_as if run_as is not None else recorded_user(systemd, name)
    if user is None:
        return 0, None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"no user {quoted(user)} on this machine; name an existing user with "
                         "--run-as (or --run-as root)") from None
    if pw.pw_uid == 0:
        return 0, None
    _group_id()  # before anything is recorded or written
    return pw.pw_uid, pw.pw_name


def dropin_text(user: str, state_root: str) -> str:
    """The drop-in that runs a worker as ``user`` with its state in ``state_root``; ``oj
    systemd uninstall`` removes only drop-ins with exactly this text for its own state dir."""
    return ("# written by oj worker start --run-as: this worker runs as a user and\n"
            "# shares the state directory with root through group oj\n"
            f"[Service]\nUser={user}\nSupplementaryGroups={GROUP}\nUMask=0007\n"
            f"Environment=\"OJ_STATE_DIR={unitcontrol.unit_quote(state_root)}\"\n")


def written_for(text: str, state_root: str) -> bool:
    """``text`` is a run-as drop-in of ``state_root``'s (``dropin_text``), for any user."""
    user = next((line[len("User="):] for line in text.splitlines()
                 if line.startswith("User=")), None)
    return user is not None and text == dropin_text(user, state_root)


def bind(systemd: Systemd, name: str, state_root: str, user: str | None) -> bool:
    """Write (or remove) the run-as drop-in; True when it changed (the manager reloaded)."""
    if systemd.user:
        return False
    wanted = None
    if user is not None:
        share_state_dir(state_root, _group_id())
        wanted = dropin_text(user, state_root)
    return unitcontrol.write_dropin(systemd, dropin_path(systemd, name), wanted)


def _group_id() -> int:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        raise OjError(f"group '{GROUP}' does not exist; create it ('groupadd --system "
                      f"{GROUP}'; the Debian package does) so root and the worker's user "
                      "can share the state directory") from None


def share_state_dir(root: str, gid: int) -> None:
    """Make the state dir usable by root and group ``gid``: once, when ``wal/`` is not
    shared yet. Later files get the mode from their directory (``paths.open_state_file``)."""
    wal = paths.wal_dir(root)
    try:
        st = os.stat(wal)
        if st.st_gid == gid and st.st_mode & 0o2070 == 0o2070:
            return
    except FileNotFoundError:
        pass
    paths.ensure_state_dir(root)
    _share(root, gid, 0o2750)  # group may enter and read; only root creates here
    for sub in SHARED_DIRS:
        directory = os.path.join(root, sub)
        os.makedirs(directory, exist_ok=True)
        _share(directory, gid, 0o2770)
        if sub == "workspaces":
            continue  # kept workspaces stay their creator's; new ones inherit the group
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False):
                _share(entry.path, gid, 0o660)
    cache = paths.cache_dir(root)
    os.makedirs(cache, mode=0o750, exist_ok=True)
    _share(cache, gid, 0o2750)


def _share(path: str, gid: int, mode: int) -> None:
    os.chown(path, -1, gid, follow_symlinks=False)
    os.chmod(path, (os.stat(path).st_mode & 0o700) | mode)
