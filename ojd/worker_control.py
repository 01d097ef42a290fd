"""Worker control: bind a worker to its project in the WAL, start or wake its unit, list them.

``start`` is idempotent: an inactive or failed unit is started; a running one gets SIGUSR1
on its main process (a wake) instead of a second start.
"""

from __future__ import annotations

import os
import signal
import time

from ojd import identity, paths, unitcontrol, wake
from ojd import project as projects
from ojd.errors import OjError, UsageError, escaped, quoted, unknown
from ojd.events import worker_pruned, worker_resized, worker_woken
from ojd.state import concurrency_of
from ojd.systemd import RUNNING_STATES, Systemd, SystemdUnavailable, UnitState
from ojd.unitcontrol import (
    TARGET,
    require_unit_safe,
    state_text,
)
from ojd.unitnames import SEPARATOR, short, split, worker_unit
from ojd.unitnames import check_name as check_unit_name

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and the runbook model stay off the start path
    from typing import Any

    from ojd.runbook.model import Runbook, Worker
    from ojd.store import Store

START_TIMEOUT = 60.0
STOP_TIMEOUT = 100.0  # the unit's TimeoutStopSec= plus a margin
UP = wake.UP_STATE  # the sub-state of a worker of a project that 'ojd up' runs
UP_START_TIMEOUT = 20.0  # 'ojd up' starts a worker: an interpreter and a runbook load


class WorkerSpec:
    """What starting a worker needs of it, read from the project's cached runbook index."""

    __slots__ = ("name", "queue", "pipeline", "concurrency")

    def __init__(self, name: str, queue: str, pipeline: str, concurrency: int) -> None:
        self.name = name
        self.queue = queue
        self.pipeline = pipeline
        self.concurrency = concurrency


class WorkerIndex:
    """A runbook as worker control reads it (its workers and digest), built from the JSON
    index of ``ojd.project.load_index``; a full ``Runbook`` serves in its place."""

    __slots__ = ("workers", "digest")

    def __init__(self, index: dict[str, Any]) -> None:
        self.digest: str = index["digest"]
        self.workers = {name: WorkerSpec(name, w["queue"], w["pipeline"], w["concurrency"])
                        for name, w in index["workers"].items()}


def check_name(name: str) -> str:
    """A name that fits oj-worker@NAME.service, the rule runbook worker names follow: what
    does not is refused before it reaches systemd (or a journalctl query)."""
    return check_unit_name("worker", name)


def worker_named(runbook: Runbook | WorkerIndex, name: str) -> Worker | WorkerSpec:
    worker = runbook.workers.get(name)
    if worker is None:
        raise unknown("worker", name, runbook.workers)
    return worker


def full_name(root: str, name: str) -> str:
    """Worker ``name`` of the project at ``root`` as its record and unit name it:
    ``PROJECT:NAME``."""
    return projects.full_name(root, name)


def locate(name: str, project: str | None, kind: str = "worker") -> tuple[str, str]:
    """(project root, runbook name) of the worker a user names: ``merge`` is the current
    project's (``--project``, ``OJ_PROJECT`` or the directory), ``shop:merge`` project
    ``shop``'s wherever it is run."""
    check_unit_name(kind, name)
    if SEPARATOR not in name:
        return projects.find_root(override=project), name
    wanted, short = split(name)
    try:
        root: str | None = projects.find_root(override=project)
    except OjError:
        root = None
    if root is None or projects.project_name(root) != wanted:
        root = projects.recorded_root(wanted)
        if root is None:
            raise OjError(f"no project named {quoted(wanted)} has workers or crons recorded "
                          f"here; start {quoted(short)} in its project once, or pass "
                          "--project DIR")
    return root, short


def record(store: Store, runbook: Runbook | WorkerIndex, root: str, name: str
           ) -> Worker | WorkerSpec:
    """Bind worker ``name`` to project ``root`` in the WAL (once; no duplicate records)."""
    worker = worker_named(runbook, name)
    unitcontrol.record(store, "worker", full_name(root, name), root, {
        "runbook": runbook.digest, "queue": worker.queue, "pipeline": worker.pipeline,
        "concurrency": worker.concurrency})
    return worker


def dropin_text(state_root: str) -> str:
    """The drop-in that points a worker at ``state_root`` (``unitcontrol.state_text``)."""
    return state_text("worker", state_root)


def _foreground(name: str) -> str:
    return (f"run the worker without systemd: 'ojd worker {escaped(name)} --foreground' "
            "in its project (add --until-idle to exit once its queue is empty)")


def unit_state(systemd: Systemd, full: str) -> UnitState:
    """The worker unit's state; also the proof that a manager answers, asked before oj
    writes anything (a WAL record, a drop-in) on its behalf."""
    return unitcontrol.unit_state(systemd, worker_unit(full), _foreground(split(full)[1]))


def wake_foreground(store: Store, full: str) -> int | None:
    """SIGUSR1 to the worker when it runs outside its unit; its PID, or None."""
    pid = wake.foreground_pid(store.root, full)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return None
    store.append(worker_woken(name=full))
    return pid


def bind_state_dir(systemd: Systemd, full: str, state_root: str) -> None:
    unitcontrol.bind_state_dir(systemd, "worker", full, worker_unit(full), state_root)


def trusted_runner(systemd: Systemd, root: str, name: str, run_as: str | None = None,
                   state_root: str | None = None) -> str | None:
    """Who the worker will run as (None: root, or the user manager's owner), once its
    runbooks (with ``state_root``, whose cache they load from, and the files they name) are
    known to be changeable by no one else (``ojd.trust``); else the refusal."""
    # lazy: run-as users and runbook trust cost oj status, which loads this module for listing()
    from ojd import runas, trust

    uid, user = runas.runner(systemd, full_name(root, name), run_as)
    trust.require(root, name, uid,
                  cache_dir=None if state_root is None else paths.cache_dir(state_root))
    return user


def start(store: Store, systemd: Systemd, runbook: Runbook | WorkerIndex, root: str,
          name: str, wait: bool = True, run_as: str | None = None,
          run_as_changed: bool = False) -> str:
    """Start the worker's unit, or wake it when it runs (in its unit or in the foreground).
    Returns "started", "woken" or "restarted" (running as another user than before;
    ``run_as_changed``: the caller already rewrote the run-as drop-in, ``enable``)."""
    from ojd import runas  # lazy: as in trusted_runner, off oj status

    worker_named(runbook, name)
    full = full_name(root, name)
    pid = wake.foreground_pid(store.root, full)
    if pid is not None:
        if run_as is not None:
            raise UsageError(f"worker {quoted(name)} runs in the foreground (PID {pid}), as "
                             "whoever started it; --run-as is for its unit: stop it first")
        # its own trust check runs at the poll this wake causes, for the user it runs as
        record(store, runbook, root, name)
        if wake_foreground(store, full) is not None:
            return "woken"
    up = wake.up_pid(store.root, root)
    if up is not None:  # 'ojd up' runs the project: it starts the worker, not systemd
        if run_as is not None:
            raise UsageError(f"worker {quoted(name)} runs under 'ojd up' (PID {up}), as "
                             "whoever started it; --run-as is for its unit")
        record(store, runbook, root, name)
        return _start_under_up(store, root, full, up, wait)
    require_unit_safe(store.root)
    user = trusted_runner(systemd, root, name, run_as, store.root)  # nothing is written before this
    unit = worker_unit(full)
    st = unit_state(systemd, full)  # nor before a manager answers
    if st.load_state == "not-found":
        raise OjError(f"unit {unit} is not installed; run 'oj systemd install"
                      f"{' --user' if systemd.user else ''}'")
    record(store, runbook, root, name)
    bind_state_dir(systemd, full, store.root)
    changed = runas.bind(systemd, full, store.root, user) or run_as_changed
    if changed and st.active_state in RUNNING_STATES:
        systemd.restart(unit)  # a running worker runs as its new user from now on
        _wait_started(systemd, unit)
        return "restarted"
    if st.active_state in RUNNING_STATES and st.main_pid:
        # the main process only: SIGUSR1 would kill a shell step that received it
        systemd.kill_main(unit, signal.SIGUSR1)
        store.append(worker_woken(name=full))
        return "woken"
    # inactive, failed, activating (a start is already on its way: this joins it) or
    # deactivating (this start runs once the stop completes, never a wake of a dying worker)
    if st.active_state == "failed":
        systemd.reset_failed(unit)
    systemd.start(unit)
    if wait:
        _wait_started(systemd, unit)
    return "started"


def _start_under_up(store: Store, root: str, full: str, up: int, wait: bool) -> str:
    """Ask the ``ojd up`` of the project to start worker ``full`` (PROJECT:NAME; stopped,
    crashed, or new in the runbook): the ``worker:woken`` record says which, SIGUSR1 says
    when."""
    store.append(worker_woken(name=full))
    try:
        os.kill(up, signal.SIGUSR1)
    except ProcessLookupError:
        raise OjError(f"'ojd up' (PID {up}) ended meanwhile; start it again") from None
    deadline = time.monotonic() + UP_START_TIMEOUT
    while wait and wake.foreground_pid(store.root, full) is None:
        if time.monotonic() > deadline or wake.up_pid(store.root, root) != up:
            raise OjError(f"'ojd up' (PID {up}) did not start worker {quoted(short(full))} in "
                          f"{UP_START_TIMEOUT:.0f}s; its output says why")
        time.sleep(0.02)
    return "started"


def _wait_started(systemd: Systemd, unit: str) -> None:
    unitcontrol.wait_started(systemd, unit, what="worker unit",
                             logs=f"oj worker logs {unit[10:-8]}", timeout=START_TIMEOUT,
                             late="become ready")


def enable(store: Store, systemd: Systemd, runbook: Runbook | WorkerIndex, root: str,
           name: str, run_as: str | None = None) -> list[str]:
    """Start the worker at boot: link its instance into oj-workers.target and make sure the
    target itself is enabled. Returns notes for the user (lingering, for user managers)."""
    from ojd import runas  # lazy: as in trusted_runner, off oj status

    worker_named(runbook, name)
    require_unit_safe(store.root)
    user = trusted_runner(systemd, root, name, run_as, store.root)
    full = full_name(root, name)
    unit_state(systemd, full)
    record(store, runbook, root, name)
    bind_state_dir(systemd, full, store.root)
    runas.bind(systemd, full, store.root, user)
    systemd.enable(worker_unit(full), TARGET)
    return unitcontrol.boot_notes(systemd, "the worker")


def disable(systemd: Systemd, full: str) -> None:
    check_name(full)
    unit_state(systemd, full)
    systemd.disable(worker_unit(full))


def stop(systemd: Systemd, name: str, wait: bool = True, state_root: str | None = None
         ) -> UnitState:
    # ``name``: the worker's full name (PROJECT:NAME)
    """Stop the unit, or the worker running in the foreground (SIGTERM) when there is one:
    it takes nothing more and exits; its running jobs go on in their own processes."""
    unit = worker_unit(check_name(name))
    pid = wake.foreground_pid(state_root, name) if state_root is not None else None
    if pid is not None:
        return _stop_foreground(state_root, name, pid, wait)
    unit_state(systemd, name)
    return unitcontrol.stop_and_wait(systemd, unit, STOP_TIMEOUT, wait)


def _stop_foreground(state_root: str, name: str, pid: int, wait: bool) -> UnitState:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while wait and wake.running_pid(state_root, name) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = wake.running_pid(state_root, name) != pid
    return UnitState(worker_unit(name), "", "inactive" if gone else "foreground",
                     "dead" if gone else "stop-sigterm", 0 if gone else pid, 0)


def restart(store: Store, systemd: Systemd, runbook: Runbook | WorkerIndex, root: str,
            name: str) -> None:
    from ojd import runas  # lazy: as in trusted_runner, off oj status

    worker_named(runbook, name)
    require_unit_safe(store.root)
    user = trusted_runner(systemd, root, name, state_root=store.root)
    full = full_name(root, name)
    unit = worker_unit(full)
    st = unit_state(systemd, full)
    record(store, runbook, root, name)
    bind_state_dir(systemd, full, store.root)
    runas.bind(systemd, full, store.root, user)
    if st.active_state == "failed":
        systemd.reset_failed(unit)
    systemd.restart(unit)
    _wait_started(systemd, unit)


def listing(store: Store, systemd: Systemd | None, project: str | None
            ) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for ``oj worker list``; the WAL is enough, live unit state is added when
    systemd answers, and a worker running outside its unit shows as ``foreground`` with its
    PID. Returns (rows, why systemd could not be asked)."""
    state = store.state
    problem = None
    rows = []
    for w in sorted(state.workers.values(), key=lambda w: w["name"]):
        if project is not None and w.get("project") != project:
            continue
        full = w["name"]
        project_name, short = split(full)
        unit = worker_unit(full)
        live: UnitState | None = None
        enabled = None
        if systemd is not None and problem is None:
            try:
                live = systemd.state(unit)
                enabled = systemd.unit_file_state(unit) == "enabled"
            except SystemdUnavailable as e:
                problem = str(e)
        running = sum(1 for j in state.jobs.values()
                      if j["worker"] == short and j["project"] == w.get("project")
                      and j["status"] == "running")
        pending = state.waiting_count(w.get("project"), w.get("queue"))
        active_state = live.active_state if live else None
        sub_state = live.sub_state if live else None
        main_pid = (live.main_pid or None) if live else None
        if active_state not in RUNNING_STATES:
            foreground = wake.foreground_pid(store.root, full)
            if foreground is not None:
                active_state, sub_state, main_pid = "foreground", "running", foreground
            if w.get("project") and wake.up_pid(store.root, w["project"]) is not None:
                # 'ojd up' runs its project: it runs the worker, or starts it when asked
                active_state = "foreground" if foreground is not None else "stopped"
                sub_state = UP
        row = {
            "name": short, "full_name": full, "project_name": project_name,
            "project": w.get("project"), "queue": w.get("queue"),
            "unit": unit, "active_state": active_state, "sub_state": sub_state,
            "main_pid": main_pid,
            "active": running, "concurrency": concurrency_of(w),
            "runbook_concurrency": w.get("concurrency"), "resized": w.get("resized"),
            "pending": pending,
            "paused": (w.get("project"), w.get("queue")) in state.paused,
            "enabled": enabled,
            "started_at": w.get("started_at"), "woken_at": w.get("woken_at"),
            "host": identity.host_name(),
            # its changed runbook did not load: it runs the previous one (worker:runbook)
            "runbook_problem": w.get("runbook_problem"),
        }
        rows.append(row)
        if getattr(store, "shared", False):
            rows += _other_hosts(state, w, row)
    return rows, problem


def _other_hosts(state, w: dict, local: dict) -> list[dict[str, Any]]:
    """A shared store: the worker's instances on other hosts, as the state knows them (their
    units cannot be asked from here); running jobs counted by the host of their process."""
    here = identity.host_name()
    local["active"] = _running_on(state, w, here, local["active"])
    rows = []
    for host, inst in sorted(w.get("hosts", {}).items()):
        if host == here:
            continue
        stopped = (inst.get("stopped_at") or 0) >= (inst.get("started_at") or 0)
        rows.append({**local, "active_state": "stopped" if stopped else "running",
                     "sub_state": None, "main_pid": None if stopped else inst.get("pid"),
                     "enabled": None, "started_at": inst.get("started_at"), "host": host,
                     "active": _running_on(state, w, host, 0)})
    return rows


def _running_on(state, w: dict, host: str, default: int) -> int:
    jobs = [j for j in state.jobs.values()
            if j["worker"] == split(w["name"])[1] and j["project"] == w.get("project")
            and j["status"] == "running"]
    if not any((j.get("process") or {}).get("host") for j in jobs):
        return default
    return sum(1 for j in jobs if (j.get("process") or {}).get("host") == host)



def resize(store: Store, runbook: Runbook | WorkerIndex, root: str, name: str,
           concurrency: int | None) -> tuple[int, bool]:
    """Record ``concurrency`` as the worker's own (None: its runbook's again) and wake the
    worker when it runs, so that it fills new slots at once (fewer slots: its running jobs
    finish, and it takes no new one until fewer run). Returns (the runbook's concurrency,
    whether a running worker was woken)."""
    worker = record(store, runbook, root, name)
    full = full_name(root, name)
    with store.transaction() as tx:
        if tx.state.workers[full].get("resized") != concurrency:
            tx.append(worker_resized(name=full, concurrency=concurrency))
    return worker.concurrency, wake.wake_worker(store, full)


def prune(store: Store, systemd: Systemd | None, dry_run: bool = False
          ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Remove the bindings of workers no runbook of their project defines any more, in one
    ``worker:pruned`` record; a worker that runs (in its unit or in the foreground) keeps
    its binding. Returns ([(name, project, why removed)], [(name, why kept)])."""
    removed: list[tuple[str, str, str]] = []
    kept: list[tuple[str, str]] = []
    seen: dict[str, float | None] = {}  # name -> when the binding removed was recorded
    state = store.refresh()
    for w in sorted(state.workers.values(), key=lambda w: (split(w["name"])[1], w["name"])):
        name, root = w["name"], w.get("project") or ""
        if not os.path.isdir(os.path.join(root, ".oj")):
            why = "its project is gone"
        else:
            try:
                defined = projects.load_index(root, paths.cache_dir(store.root))["workers"]
            except (OjError, OSError) as e:
                kept.append((name, f"the runbook of {escaped(root)} does not load ({e}); "
                                   "'oj runbook check' there lists the problems"))
                continue
            if split(name)[1] in defined and (
                    split(name)[0] == projects.project_name(root)):
                continue
            why = "its project's runbook no longer defines it"
        running = _running(store, systemd, name)
        if running is not None:
            kept.append((name, f"{why}, but it runs ({running}); stop it first"))
            continue
        removed.append((name, root, why))
        seen[name] = w.get("recorded_at")
    if removed and not dry_run:
        with store.transaction() as tx:
            # a binding recorded again meanwhile (a start in a project made anew) stays
            names = [name for name, _, _ in removed
                     if name in tx.state.workers
                     and tx.state.workers[name].get("recorded_at") == seen[name]]
            removed = [r for r in removed if r[0] in names]
            if names:
                tx.append(worker_pruned(names=names))
    return removed, kept


def _running(store: Store, systemd: Systemd | None, name: str) -> str | None:
    """How worker ``name`` of this state dir runs (its PID, or its unit's state), or None.
    The lock file answers for workers in units of either manager and in the foreground; the
    manager, when one answers, for a unit between its start and its lock."""
    pid = wake.running_pid(store.root, name)
    if pid is not None:
        return f"PID {pid}"
    if systemd is None or not wake.manager_present(systemd.user):
        return None
    try:
        st = systemd.state(worker_unit(name))
    except SystemdUnavailable:
        return None
    if st.active_state in ("inactive", "failed") or st.load_state == "not-found":
        return None
    return f"{st.name} {st.active_state}"
