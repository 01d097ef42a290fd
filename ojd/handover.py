"""A unit named the way oj named units before projects had names hands over to its new
name, once: ``oj-worker@merge.service`` (enabled before an upgrade, or started at boot by
oj-workers.target) becomes ``oj-worker@shop:merge.service``.

The old unit's ``ojd`` has already renamed the record (``worker:renamed``); here it moves
the unit's drop-ins (state dir, run-as user) to the new unit, enables the new one where the
old was enabled, disables itself, starts the new one and exits cleanly. Jobs that ran
meanwhile run in their own scopes: the new worker adopts them when it starts.
"""

from __future__ import annotations

import os
import shutil

from ojd.systemd import Systemd
from ojd.unitcontrol import TARGET, unit_dir
from ojd.unitnames import worker_unit


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
