"""A unit named the way oj named units before projects had names hands over to its new
name, once: ``oj-worker@merge.service`` (enabled before an upgrade, or started at boot by
oj-workers.target) becomes ``oj-worker@shop:merge.service``, and ``oj-cron@janitor.timer``
becomes ``oj-cron@shop:janitor.timer``.

The old unit's ``ojd`` has already renamed the record (``worker:renamed``); here it moves
the unit's drop-ins (state dir, run-as user) to the new unit, enables the new one where the
old was enabled, disables itself, starts the new one and exits cleanly. Jobs that ran
meanwhile run in their own scopes: the new worker adopts them when it starts.

A cron's old timer hands over at its next tick (the tick itself runs, under the new name)
or at ``oj cron start|enable`` in its project: the timer's and its service's drop-ins move,
the new timer is enabled where the old one was, and the old one is disabled and stopped.
"""

from __future__ import annotations

import os
import shutil

from ojd.crons import service_unit, timer_unit
from ojd.systemd import RUNNING_STATES, Systemd
from ojd.unitcontrol import TARGET, rename_legacy, stop_and_wait, unit_dir
from ojd.unitnames import split, worker_unit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store import Store

STOP_WAIT = 35.0  # the old unit's TimeoutStopSec= (30 s), and a little


def hand_over_worker(old: str, full: str) -> str:
    """Move legacy unit ``oj-worker@OLD.service``'s drop-ins and boot link to
    ``oj-worker@FULL.service`` and start that; the line that says so."""
    systemd = Systemd()
    before, after = worker_unit(old), worker_unit(full)
    moved = move_dropins(unit_dir(systemd), before, after)
    enabled = systemd.unit_file_state(before) == "enabled"
    if enabled:
        systemd.disable(before)
        systemd.enable(after, TARGET)
    elif moved:
        systemd.daemon_reload()
    systemd.start(after)  # queued: it starts once this one's start has ended
    return (f"renamed: worker {old} is {full} from now on; started {after}"
            + (" (enabled in its place)" if enabled else "") + f", this unit {before} ends")


def hand_over_cron(systemd: Systemd, old: str, full: str, start: bool) -> str | None:
    """Move legacy timer ``oj-cron@OLD.timer``'s drop-ins (and its service's) and boot link
    to cron ``full``'s, disable and stop it, and start the new timer when ``start`` or
    the old one ran; the line that says so, or None when the old timer is neither enabled
    nor running (nothing to hand over)."""
    before = timer_unit(old)
    enabled = systemd.unit_file_state(before) == "enabled"
    active = systemd.state(before).active_state in RUNNING_STATES
    units = unit_dir(systemd)
    moved = [move_dropins(units, a, b) for a, b in ((before, timer_unit(full)),
                                                     (service_unit(old), service_unit(full)))]
    if not (enabled or active or any(moved)):
        return None
    after = timer_unit(full)
    if enabled:
        systemd.disable(before)
        systemd.enable(after, TARGET)
    else:
        systemd.daemon_reload()
    if active:
        systemd.stop(before)
    if start or active:
        systemd.start(after)
    return (f"renamed: cron {old} is {full} from now on; its timer is {after}"
            + (" (enabled in its place)" if enabled else "") + f", the old {before} "
            + ("disabled and stopped" if enabled else "stopped"))


def take_over_worker(store: Store, systemd: Systemd, root: str, full: str) -> str | None:
    """At ``oj worker start|restart``: worker ``full``'s record, if still under the name it
    had before projects had names, is renamed, and that name's unit, left running or
    enabled by an older oj (a pip upgrade restarts nothing), hands over before the new unit
    starts: its drop-ins move, the new unit is enabled where it was, and it is disabled and
    stopped (its jobs run on in their scopes; the new worker sees them to their end). The
    line that says so, or None when there is nothing to hand over."""
    if split(full)[1] in store.state.workers:  # not renamed yet (this start would)
        with store.transaction() as tx:
            rename_legacy(tx, "worker", full, root)
    was = (store.state.workers.get(full) or {}).get("was")
    if not was:
        return None
    before, after = worker_unit(was), worker_unit(full)
    enabled = systemd.unit_file_state(before) == "enabled"
    active = systemd.state(before).active_state in RUNNING_STATES
    moved = move_dropins(unit_dir(systemd), before, after)
    if not (enabled or active or moved):
        return None
    if enabled:
        systemd.disable(before)
        systemd.enable(after, TARGET)
    elif moved:
        systemd.daemon_reload()
    if active:
        stop_and_wait(systemd, before, STOP_WAIT)
    return (f"renamed: worker {was} is {full} from now on; {after} takes the place of "
            f"{before}" + (" (enabled in its place)" if enabled else "")
            + (", which was stopped" if active else ""))


def take_over_cron(store: Store, systemd: Systemd, full: str) -> str | None:
    """At ``oj cron start|enable``: the old timer of cron ``full``, when its record was
    renamed from a name before projects had names, hands over (``hand_over_cron``)."""
    was = (store.refresh().crons.get(full) or {}).get("was")
    return hand_over_cron(systemd, was, full, start=False) if was else None


def move_dropins(units: str, before: str, after: str) -> bool:
    """The files of ``before``'s drop-in directory moved to ``after``'s (an existing one
    is kept); whether any moved."""
    source = os.path.join(units, f"{before}.d")
    try:
        names = sorted(os.listdir(source))
    except FileNotFoundError:
        return False
    target = os.path.join(units, f"{after}.d")
    os.makedirs(target, exist_ok=True)
    for name in names:
        if not os.path.exists(os.path.join(target, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(target, name))
    shutil.rmtree(source, ignore_errors=True)
    return bool(names)
