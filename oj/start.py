"""``oj worker start`` / ``wake``: shared by the fast path (no click) and the click command.

Nothing here may import click or the runbook model: starting or waking a worker with an
unchanged runbook reads the cached JSON index (``ojd.project.load_index``), so an invalid
runbook still fails with its file:line errors before anything is recorded or signalled.
"""

from __future__ import annotations

import sys

from ojd import paths, runas, worker_control
from ojd import project as projects
from ojd.errors import quoted
from ojd.store import Store
from ojd.systemd import Systemd


def do_start(name: str, project: str | None, user: bool | None = None,
             enable: bool = False, run_as: str | None = None) -> int:
    """Record the worker, start its unit or wake it when it runs (saying which); with
    ``enable`` also start it at boot. ``user`` picks the manager (None: the user's unless
    root); ``run_as`` the user a system worker runs as."""
    print(start_worker(name, project, user, enable, run_as))
    return 0


def start_worker(name: str, project: str | None, user: bool | None = None,
                 enable: bool = False, run_as: str | None = None) -> str:
    """``do_start`` without its output: the line that says what happened."""
    root, name = worker_control.locate(name, project)
    systemd = Systemd(user=user)
    # who may change the runbooks is checked before anything reads or records them
    worker_control.trusted_runner(systemd, root, name, run_as)
    store = Store()
    runbook = worker_control.WorkerIndex(projects.load_index(root, paths.cache_dir(store.root)))
    changed = False
    if enable:
        full = worker_control.full_name(root, name)
        before = runas.recorded_user(systemd, full)
        for note in worker_control.enable(store, systemd, runbook, root, name, run_as):
            print(f"oj: {note}", file=sys.stderr)
        # enable wrote the run-as drop-in: a running worker still runs as the user before
        changed = runas.recorded_user(systemd, full) != before
    take_over_old_unit(store, systemd, root, name)
    how = worker_control.start(store, systemd, runbook, root, name, run_as=run_as,
                        run_as_changed=changed)
    # a running worker is woken (it polls its queue now), not started a second time; one
    # that runs as another user than asked (--run-as) is restarted as that user
    said = {"started": "started", "restarted": "restarted to run as its new user"}
    return f"Worker {quoted(name)} {said.get(how, 'was already running; woken')}"


def take_over_old_unit(store: Store, systemd: Systemd, root: str, name: str) -> None:
    """A unit of this worker named before projects had names (oj-worker@NAME.service,
    still running the code before an upgrade, or enabled) hands over to the new one
    before it starts. Its record says so: still under NAME, or renamed from it."""
    full = worker_control.full_name(root, name)
    state = store.refresh()  # the first read of this start: a later transaction reuses it
    old = state.workers.get(name)
    if (old is None or old.get("project") != root) and \
            not (state.workers.get(full) or {}).get("was"):
        return
    from ojd.handover import take_over_worker  # lazy: only for a worker renamed at an upgrade

    said = take_over_worker(store, systemd, root, full)
    if said is not None:
        print(f"oj: {said}", file=sys.stderr)
