"""oj's unit files: shipped in ``systemd/`` (the source of truth, packaged as ``ojd/units``)
and written by ``oj systemd install`` with this installation's ``ojd`` path."""

from __future__ import annotations

import glob
import os
import shutil
import sys

from ojd import crons, runas
from ojd.errors import OjError
from ojd.systemd import Systemd, SystemdUnavailable
from ojd.unitcontrol import STATE_DROPIN, state_text, unit_dir, unit_safe

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "units")
UNIT_NAMES = ("oj-worker@.service", "oj-workers.target", "oj-cron@.service", "oj-cron@.timer",
              "oj-metrics.socket", "oj-metrics.service", "oj-web.socket",
              "oj-web.service")
SHIPPED_OJD = "/usr/bin/ojd"
# The shipped units' Documentation= is where the Debian package puts the docs; a pip install
# has them as package data instead (ojd/docs, a link to docs/ in the checkout).
SHIPPED_DOCS = "file:/usr/share/doc/oj/"
DOCS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "docs")
# Sandboxing that needs a mount namespace or capabilities: a user manager can only set it
# up with unprivileged user namespaces, and without them the unit fails to start.
SYSTEM_ONLY = ("PrivateTmp=", "PrivateDevices=", "ProtectSystem=", "ProtectKernelTunables=",
               "ProtectKernelModules=", "ProtectKernelLogs=", "ProtectControlGroups=",
               "ProtectClock=", "ProtectHostname=", "CapabilityBoundingSet=", "ProtectHome=")


def ojd_path() -> str:
    """The ``ojd`` of the running installation (a venv's, a pipx's, or the system's)."""
    beside = os.path.join(os.path.dirname(sys.executable), "ojd")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("ojd")
    if found is None:
        raise OjError("cannot find the ojd program; install oj so that ojd is on PATH")
    return os.path.abspath(found)


def _exec_quote(path: str) -> str:
    if any(c in path for c in ' "\\\'$%;'):
        return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return path


def render(name: str, text: str, ojd: str, user: bool) -> str:
    """A shipped unit as this installation needs it."""
    text = text.replace(f"ExecStart={SHIPPED_OJD} ", f"ExecStart={_exec_quote(ojd)} ")
    if ojd != SHIPPED_OJD:  # not the Debian package's: name the docs this install has
        text = text.replace(f"Documentation={SHIPPED_DOCS}", f"Documentation=file:{DOCS_DIR}/")
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


def uninstall(systemd: Systemd, state_root: str) -> tuple[list[str], list[str]]:
    """Remove what this installation and this state dir wrote: the unit files when their
    ExecStart= is this installation's ``ojd`` (another installation's stay, with the
    target its workers need), and the drop-ins that point workers at ``state_root``
    (workers of other state dirs keep theirs). Returns (removed paths, notes on what stays).
    """
    target_dir = unit_dir(systemd)
    removed: list[str] = []
    kept: list[str] = []
    # a state dir no drop-in can name (a control character) has none
    fits = unit_safe(state_root)
    default = os.environ.get("OJ_STATE_DIR") is None

    def texts(kind: str) -> set[str]:
        """What bind_state_dir writes for ``state_root``'s units, with a state in a database
        (ordered after the network) or not; the default state dir's units are not named it."""
        if not fits:
            return set()
        found = {state_text(kind, state_root, remote) for remote in (False, True)}
        if default:
            found.add(state_text(kind, state_root, True, env=False))
        return found

    ours, ours_cron = texts("worker"), texts("cron")
    # the OJ_STATE_DIR drop-ins, the --run-as ones and the cron schedules (which name their
    # state dir too)
    dropins = [path for units, name in (("oj-worker@*.service.d", STATE_DROPIN),
                                        ("oj-worker@*.service.d", runas.DROPIN),
                                        ("oj-cron@*.service.d", STATE_DROPIN),
                                        ("oj-cron@*.timer.d", crons.SCHEDULE_DROPIN))
               for path in glob.glob(os.path.join(glob.escape(target_dir), units, name))]
    others = []
    for dropin in sorted(dropins):
        try:
            with open(dropin) as f:
                text = f.read()
        except OSError:
            text = None
        base = os.path.basename(dropin)
        if text is None:
            mine = False
        elif base == crons.SCHEDULE_DROPIN:
            mine = crons.schedule_written_for(text, state_root)
        elif base == runas.DROPIN:
            mine = fits and runas.written_for(text, state_root)
        else:
            mine = text in (ours_cron if "/oj-cron@" in dropin else ours)
        if not mine:
            kept.append(f"kept {dropin}: written for another state dir")
            others.append(dropin)
            continue
        os.unlink(dropin)
        removed.append(dropin)
        try:
            os.rmdir(os.path.dirname(dropin))
        except OSError:
            pass  # the operator's own drop-ins are there too
    service = os.path.join(target_dir, UNIT_NAMES[0])
    other = _other_installation(service, ojd_path())
    if other is not None:
        kept.append(f"kept {service} and {UNIT_NAMES[1]}: written for {other}, not this "
                    "installation; uninstall with that installation's oj")
    elif others:
        # the template is shared: removing it would leave those workers with no unit
        kept.append(f"kept {service} and {UNIT_NAMES[1]}: the workers of other state dirs "
                    "(the drop-ins above) still use them; uninstall those state dirs too "
                    "(OJ_STATE_DIR=DIR oj systemd uninstall), and the last one removes them")
    else:
        _stop_on_demand(systemd, target_dir)
        for name in UNIT_NAMES:
            path = os.path.join(target_dir, name)
            if os.path.exists(path):
                os.unlink(path)
                removed.append(path)
    if removed:
        _reload(systemd)
    return removed, kept


def _stop_on_demand(systemd: Systemd, target_dir: str) -> None:
    """Disable and stop the socket-activated units whose files are about to go: a socket
    left listening would start a service that is no longer installed."""
    for socket_unit in (n for n in UNIT_NAMES if n.endswith(".socket")):
        if not os.path.exists(os.path.join(target_dir, socket_unit)):
            continue
        service = socket_unit.removesuffix(".socket") + ".service"
        for call, unit in ((systemd.disable, socket_unit), (systemd.stop, socket_unit),
                           (systemd.stop, service)):
            try:
                call(unit)
            except SystemdUnavailable:
                pass  # no manager (nothing listens), or a unit not enabled or not loaded


def _other_installation(service: str, ojd: str) -> str | None:
    """The program an installed oj-worker@.service runs when it is not ``ojd``."""
    try:
        with open(service) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    line = next((x for x in text.splitlines() if x.startswith("ExecStart=")), "")
    if line.startswith(f"ExecStart={_exec_quote(ojd)} "):
        return None
    return line[len("ExecStart="):].split(" worker ", 1)[0] or "another program"


def _reload(systemd: Systemd) -> None:
    try:
        systemd.daemon_reload()
    except SystemdUnavailable as e:
        print(f"oj: warning: files written, but systemd was not reloaded ({e}); run "
              f"'systemctl{' --user' if systemd.user else ''} daemon-reload'", file=sys.stderr)
