"""What worker and cron control share over their systemd units: the binding in the WAL, the
state-dir drop-in and where drop-ins go, a manager that answers (or the one line saying what
works without it), waiting for a start, and lingering for a user's units at boot.
"""

from __future__ import annotations

import os
import pwd
import time

from ojd import wake
from ojd.errors import OjError, escaped, quoted
from ojd.events import cron_recorded, cron_renamed, worker_recorded, worker_renamed
from ojd.project import full_name as project_full_name
from ojd.store import CONFIG_FILE, configured_url
from ojd.systemd import RUNNING_STATES, Systemd, SystemdUnavailable, UnitState
from ojd.unitnames import SEPARATOR, check_name, split

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ojd.store import Store

TARGET = "oj-workers.target"  # enabled workers and cron timers start with it at boot
STATE_DROPIN = "50-oj-state.conf"


def record(store: Store, kind: str, full: str, root: str, fields: dict) -> None:
    """Bind worker or cron (``kind``) ``full`` (``PROJECT:NAME``) to project ``root`` in the
    WAL, with what its runs need to know (``fields``); recorded again only when one of them
    changed. A record this project made before projects had names (``NAME``) is renamed
    first, keeping what it had; a project name another directory holds is refused."""
    check_name(kind, full)  # the project's name makes it longer than the runbook's
    project, name = split(full)
    with store.transaction() as tx:
        state = tx.state
        clash = name_taken(state, project, root)
        if clash is not None:
            raise OjError(escaped(
                f"project name {quoted(project)} already belongs to {clash} in this state "
                f"directory; set project = \"OTHER\" in {os.path.join(root, '.oj', 'config.toml')}"
                " to give this project a name of its own"))
        rename_legacy(tx, kind, full, root)
        current = getattr(state, f"{kind}s").get(full)
        if current is None or any(current.get(k) != v for k, v in fields.items()):
            recorded = worker_recorded if kind == "worker" else cron_recorded
            tx.append(recorded(name=full, project=root, **fields))


def rename_legacy(tx, kind: str, full: str, root: str) -> bool:
    """In transaction ``tx``: the record of ``full``'s NAME made before projects had names,
    when it is this project's, goes by ``full`` from now on (``worker:renamed``,
    ``cron:renamed``). Whether there was one."""
    name = split(full)[1]
    legacy = getattr(tx.state, f"{kind}s").get(name)
    if name == full or legacy is None or legacy.get("project") != root:
        return False
    renamed = worker_renamed if kind == "worker" else cron_renamed
    tx.append(renamed(name=name, to=full))
    return True


def name_taken(state, project: str, root: str) -> str | None:
    """The other directory whose workers or crons are recorded under project name
    ``project``, or None."""
    for rec in (*state.workers.values(), *state.crons.values()):
        other = rec.get("project")
        if other and other != root and split(rec["name"])[0] == project:
            return other
    return None


def resolve(records: Callable[[], dict], kind: str, name: str, root: str | None) -> str:
    """The full name (``PROJECT:NAME``) a user means by ``name``: itself when full; in a
    project (``root``), that project's; elsewhere the one recorded worker or cron of that
    name (two projects' are ambiguous: the error names their full names). ``records`` are
    read only then: a stop or a disable needs no state when the name says it all."""
    if SEPARATOR in name:
        return name
    if root is not None:
        return project_full_name(root, name)
    found = sorted(n for n in records() if split(n)[1] == name or n == name)
    if len(found) == 1:
        return found[0]
    if found:
        raise OjError(f"{kind} {quoted(name)} is in several projects "
                      f"({', '.join(quoted(n) for n in found)}); give its full name, "
                      f"PROJECT:{name}, or run this in its project")
    return name


def unit_dir(systemd: Systemd) -> str:
    """Where ``oj systemd install`` puts units and oj puts per-worker drop-ins."""
    if systemd.user:
        import platformdirs  # lazy: ~20 ms, for a user manager only

        return os.path.join(platformdirs.user_config_dir(), "systemd", "user")
    return "/etc/systemd/system"


def config_dirs(systemd: Systemd) -> list[str]:
    """Where ``systemctl enable`` links units for this manager (persistently)."""
    dirs = [unit_dir(systemd)]
    if systemd.user:
        dirs.append("/etc/systemd/user")  # `systemctl --global enable`
    return dirs


def enabled_units(dirs: list[str], prefix: str) -> set[str]:
    """Units named ``prefix...`` linked into some unit's ``.wants/`` or ``.requires/`` under
    ``dirs``: what makes systemd call an instance "enabled"."""
    found: set[str] = set()
    for top in dirs:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith((".wants", ".requires")):
                continue
            try:
                found.update(n for n in os.listdir(entry.path) if n.startswith(prefix))
            except OSError:  # not a directory, or unreadable: nothing enabled through it
                continue
    return found


def unit_quote(value: str) -> str:
    """A value inside a double-quoted unit-file word: no specifier, quote or escape. One
    with a control character is refused (``require_unit_safe``): a newline would end the
    directive and begin another in a unit that may run as root."""
    require_unit_safe(value)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def unit_safe(value: str) -> bool:
    return value.isprintable()


def require_unit_safe(state_root: str) -> None:
    """Refuse a state directory that cannot be written into a drop-in, before anything is
    recorded or written."""
    if not unit_safe(state_root):
        raise OjError(f"the state directory {quoted(state_root)} has a control character, "
                      "which a unit file cannot hold; set OJ_STATE_DIR to a path without "
                      "one")


def state_text(kind: str, state_root: str, remote: bool = False, env: bool = True) -> str:
    """The drop-in that points a worker's or a cron's service at ``state_root`` (``env``:
    not the default one); ``oj systemd uninstall`` removes only drop-ins with exactly this
    text (either ``remote``) for its own state dir. ``remote``: its state is in a database,
    which the unit waits for the network to reach (``bind_state_dir``)."""
    text = ""
    if env:
        text = (f"# written by oj {kind} start: this {kind}'s state directory\n"
                f"[Service]\nEnvironment=\"OJ_STATE_DIR={unit_quote(state_root)}\"\n")
    if remote:
        text += (f"# written by oj {kind} start: its state is in a database across the "
                 "network\n[Unit]\nWants=network-online.target\n"
                 "After=network-online.target\n")
    return text


def dropin_path(systemd: Systemd, unit: str, dropin: str) -> str:
    return os.path.join(unit_dir(systemd), f"{unit}.d", dropin)


def bind_state_dir(systemd: Systemd, kind: str, name: str, unit: str, state_root: str,
                   reload: bool = True) -> bool:
    """A worker's or cron's ``unit`` whose state is not in the default place learns it from
    a drop-in; whether that changed anything. Its PostgreSQL URL it reads from the state
    dir's oj.conf: a URL only in this shell's OJ_STATE_URL would leave the unit on another
    store, so that is refused. With a URL the unit is ordered after the network (below)."""
    url = os.environ.get("OJ_STATE_URL")
    if url:
        del os.environ["OJ_STATE_URL"]
        try:
            in_file = configured_url(state_root)
        finally:
            os.environ["OJ_STATE_URL"] = url
        if in_file != url:
            # lazy: the PostgreSQL store's module, for this refusal only
            from ojd.store.postgres import redacted

            shown = redacted(url)  # never a password in a message
            hint = " (with its password)" if shown != url else ""
            raise OjError(escaped(
                f"{kind} {quoted(name)}'s unit does not see OJ_STATE_URL: put the line "
                f"'state_url = {shown}'{hint} in {os.path.join(state_root, CONFIG_FILE)} "
                "(and unset OJ_STATE_URL), so that the unit, its jobs and this shell share "
                "one store"))
    default = os.environ.get("OJ_STATE_DIR") is None
    # A unit whose state is in PostgreSQL starts after network-online.target, so that at boot
    # its first connection is not made before the network is up (it would wait the outage
    # out anyway, ojd.worker.StoreWait, but with a warning and a retry delay). Here rather
    # than in the template: a WAL worker needs no network, and network-online.target delays
    # the boot of every unit ordered after it by as long as the network takes (or the
    # wait-online service's timeout). Not for a user manager: it has no such target.
    # with a URL, the same as oj.conf's (above)
    remote = True if url else configured_url(state_root) is not None
    remote = remote and not systemd.user
    wanted = None if default and not remote else state_text(kind, state_root, remote,
                                                             env=not default)
    return write_dropin(systemd, dropin_path(systemd, unit, STATE_DROPIN), wanted,
                        reload=reload)


def write_dropin(systemd: Systemd, path: str, wanted: str | None, reload: bool = True) -> bool:
    """Make the drop-in at ``path`` hold ``wanted`` (None: no drop-in), atomically, and reload
    the manager (unless not ``reload``) when that changed anything. Returns whether it did."""
    try:
        with open(path) as f:
            current: str | None = f.read()
    except FileNotFoundError:
        current = None
    if current == wanted:
        return False
    if wanted is None:
        os.unlink(path)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(wanted)
        os.replace(tmp, path)
    if reload:
        systemd.daemon_reload()
    return True


def no_manager(systemd: Systemd, error: SystemdUnavailable, instead: str
               ) -> SystemdUnavailable:
    """One line for a machine (container, CI runner) or user without a systemd manager: what
    failed, and what works there instead (``instead``); for a user whose manager does not
    run while the system's does, lingering too."""
    if systemd.user and wake.manager_present(user=False):
        user = user_name()
        return SystemdUnavailable(f"no systemd user manager runs for {user} ({error}); "
                                  f"'loginctl enable-linger {user}' starts one, or {instead}")
    return SystemdUnavailable(f"no systemd {systemd.scope} manager answers here ({error}); "
                              f"{instead}")


def unit_state(systemd: Systemd, unit: str, instead: str) -> UnitState:
    """The unit's state; also the proof that a manager answers, asked before oj writes
    anything (a WAL record, a drop-in) on its behalf."""
    try:
        return systemd.state(unit)
    except SystemdUnavailable as e:
        raise no_manager(systemd, e, instead) from None


def stop_and_wait(systemd: Systemd, unit: str, timeout: float, wait: bool = True
                  ) -> UnitState:
    """Stop ``unit``; its state once inactive or failed (or at ``timeout``), else at once."""
    systemd.stop(unit)
    deadline = time.monotonic() + timeout
    st = systemd.state(unit)
    while wait and st.active_state not in ("inactive", "failed") and \
            time.monotonic() < deadline:
        time.sleep(0.02)
        st = systemd.state(unit)
    return st


def wait_started(systemd: Systemd, unit: str, *, what: str, logs: str, timeout: float,
                 late: str) -> None:
    """Wait for ``unit`` to run with no job pending (a restart's old process is still
    "active" until its stop begins); a start that ran and ended, or failed, is an error
    naming ``logs``; ``late`` says what it did not do within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the job before the state: a start job ends only once its unit is in its new state,
        # so a state read after "no job" is where the start left it, never a moment before
        # (read the other way round, a loaded machine saw a timer that had just started as
        # inactive, and then no job)
        pending = systemd.has_job(unit)
        st = systemd.state(unit)
        if st.active_state in RUNNING_STATES and not pending:
            return
        # inactive with no job left: the start ran and ended (it exited, or was stopped)
        if st.active_state == "failed" or (st.active_state == "inactive" and not pending):
            raise OjError(f"{what} {unit} failed to start ({st.active_state}/"
                          f"{st.sub_state}); see '{logs}'")
        time.sleep(0.02)
    raise OjError(f"{what} {unit} did not {late} in {timeout:.0f}s")


def lingering() -> bool:
    """logind keeps a user's manager running from boot when this flag file exists."""
    return os.path.exists(f"/var/lib/systemd/linger/{user_name()}")


def user_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def boot_notes(systemd: Systemd, what: str) -> list[str]:
    """What the user should know about ``what`` starting at boot (``enable``)."""
    if systemd.user and not lingering():
        user = user_name()
        return [f"user {user} does not linger: {what} starts at login, not at boot; "
                f"'loginctl enable-linger {user}' makes it start at boot"]
    return []
