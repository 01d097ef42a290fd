"""oj's unit files: shipped in ``systemd/`` (the source of truth, packaged as ``ojd/units``)
and written by ``oj systemd install`` with this installation's ``ojd`` path."""

from __future__ import annotations

import glob
import os
import shutil
import sys

from ojd.systemd import Systemd, SystemdUnavailable
from ojd.workers import unit_dir

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "units")
UNIT_NAMES = ("oj-worker@.service", "oj-workers.target")
SHIPPED_OJD = "/usr/bin/ojd"
# Sandboxing that needs a mount namespace or capabilities: a user manager can only set it
# up with unprivileged user namespaces, and without them the unit fails to start.
SYSTEM_ONLY = ("PrivateTmp=", "PrivateDevices=", "ProtectSystem=", "ProtectKernelTunables=",
               "ProtectKernelModules=", "ProtectKernelLogs=", "ProtectControlGroups=",
               "ProtectClock=", "ProtectHostname=", "CapabilityBoundingSet=")


def ojd_path() -> str:
    """The ``ojd`` of the running installation (a venv's, a pipx's, or the system's)."""
    beside = os.path.join(os.path.dirname(sys.executable), "ojd")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("ojd")
    if found is None:
        from ojd.errors import OjError

        raise OjError("cannot find the ojd program; install oj so that ojd is on PATH")
    return os.path.abspath(found)


def _exec_quote(path: str) -> str:
    if any(c in path for c in ' "\\\'$%;'):
        return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return path


def render(name: str, text: str, ojd: str, user: bool) -> str:
    """A shipped unit as this installation needs it."""
    text = text.replace(f"ExecStart={SHIPPED_OJD} ", f"ExecStart={_exec_quote(ojd)} ")
    if user:
        # a user manager has no multi-user.target; its boot is default.target
        text = text.replace("WantedBy=multi-user.target", "WantedBy=default.target")
        text = "".join(line for line in text.splitlines(keepends=True)
                       if not line.startswith(SYSTEM_ONLY))
    return text


def install(systemd: Systemd) -> list[str]:
    target_dir = unit_dir(systemd)
    os.makedirs(target_dir, exist_ok=True)
    ojd = ojd_path()
    written = []
    for name in UNIT_NAMES:
        with open(os.path.join(SHIPPED_DIR, name)) as f:
            text = render(name, f.read(), ojd, systemd.user)
        path = os.path.join(target_dir, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    _reload(systemd)
    return written


def uninstall(systemd: Systemd) -> list[str]:
    target_dir = unit_dir(systemd)
    removed = []
    for name in UNIT_NAMES:
        path = os.path.join(target_dir, name)
        if os.path.exists(path):
            os.unlink(path)
            removed.append(path)
    dropins = [path for name in ("50-oj-state.conf", "40-oj-run-as.conf")
               for path in glob.glob(os.path.join(target_dir, "oj-worker@*.service.d", name))]
    for dropin in sorted(dropins):
        os.unlink(dropin)
        removed.append(dropin)
        try:
            os.rmdir(os.path.dirname(dropin))
        except OSError:
            pass  # the operator's own drop-ins are there too
    _reload(systemd)
    return removed


def _reload(systemd: Systemd) -> None:
    try:
        systemd.daemon_reload()
    except SystemdUnavailable as e:
        print(f"oj: warning: files written, but systemd was not reloaded ({e}); run "
              f"'systemctl{' --user' if systemd.user else ''} daemon-reload'", file=sys.stderr)
