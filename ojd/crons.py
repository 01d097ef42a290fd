"""Cron control: bind a cron to its project in the WAL, give its timer the runbook's
schedule, start, stop, enable and list the timers, run a tick now.

Each cron is a timer of its own, ``oj-cron@NAME.timer``, activating
``oj-cron@NAME.service``, which runs ``ojd cron NAME`` (``ojd.cron_tick``): systemd keeps
the schedule, catches up missed calendar ticks (``Persistent=true``) and shows next and
last runs in ``systemctl list-timers``. systemd does not read runbooks, so the schedule
reaches the timer as a drop-in, ``oj-cron@NAME.timer.d/50-oj-schedule.conf``, which
``oj cron start`` (and ``enable``) rewrite from the runbook.
"""

from __future__ import annotations

import os
import time

from ojd import identity, unitcontrol, unitnames, wake
from ojd import project as projects
from ojd.duration import format_duration
from ojd.errors import OjError, escaped, quoted, unknown
from ojd.state import LIVE_JOB_STATES
from ojd.systemd import RUNNING_STATES, Systemd, SystemdUnavailable, UnitState
from ojd.unitcontrol import (
    TARGET,
    bind_state_dir,
    config_dirs,
    dropin_path,
    enabled_units,
    require_unit_safe,
    stop_and_wait,
    write_dropin,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ojd.runbook.model import Cron, Runbook
    from ojd.store import Store

SCHEDULE_DROPIN = "50-oj-schedule.conf"
ONCE_TIMEOUT = 60.0


def timer_unit(name: str) -> str:
    return f"oj-cron@{name}.timer"


def service_unit(name: str) -> str:
    return f"oj-cron@{name}.service"


def check_name(name: str) -> str:
    """A name that fits oj-cron@NAME.timer (the rule of runbook cron names), refused before
    it reaches systemd or journalctl."""
    return unitnames.check_name("cron", name)


def cron_named(runbook: Runbook, name: str) -> Cron:
    cron = runbook.crons.get(name)
    if cron is None:
        check_name(name)
        raise unknown("cron", name, runbook.crons)
    return cron


def schedule_shown(row: dict[str, Any]) -> str:
    """A listing row's schedule, or what to do about a cron its runbook no longer has."""
    if row["gone"]:
        return f"gone from the runbook (oj cron stop {row['name']})"
    return row["schedule"] or "-"


def describe_schedule(cron: Cron) -> str:
    if cron.schedule is not None:
        return cron.schedule
    return f"every {format_duration(cron.interval or 0.0)}"


def full_name(root: str, name: str) -> str:
    """Cron ``name`` of the project at ``root`` as its record and units name it:
    ``PROJECT:NAME``."""
    return projects.full_name(root, name)


def record(store: Store, runbook: Runbook, root: str, name: str) -> Cron:
    """Bind cron ``name`` to project ``root`` in the WAL (once; no duplicate records)."""
    cron = cron_named(runbook, name)
    unitcontrol.record(store, "cron", full_name(root, name), root, {"runbook": runbook.digest})
    return cron


def require_trusted(systemd: Systemd, root: str, name: str, runbook: Runbook | None = None
                    ) -> None:
    """The cron's jobs run as its manager's user (root for the system's): refused when
    someone else could change the runbooks they come from, or the files ``runbook`` names
    (``ojd.trust``)."""
    require_trusted_uid(root, name, os.geteuid() if systemd.user else 0, runbook)


def require_trusted_uid(root: str, name: str, uid: int, runbook: Runbook | None = None
                        ) -> None:
    from ojd import trust  # lazy: its runbook checks cost oj status 10 ms

    try:
        problem = trust.check_project(root, uid, runbook)
    except OSError as e:
        raise OjError(escaped(f"cannot check who may change the runbooks of {root}: "
                              f"{e.strerror or e}")) from None
    if problem is not None:
        runner = trust._user_name(uid)
        raise OjError(escaped(f"refusing to run cron '{name}' as {runner}: {problem}, who "
                              f"could make it run their code as {runner}; make "
                              f"{problem.path} writable by {runner} or root alone"
                              + (f", or run the cron in {problem.user}'s own manager"
                                 if problem.user else "")))


def schedule_text(cron: Cron, state_root: str) -> str:
    """The timer drop-in holding the runbook's schedule. An interval ticks one interval
    after the timer starts (OnActiveSec=) and then one after each tick began
    (OnUnitActiveSec=): with OnUnitActiveSec= alone a timer whose service never ran
    never fires."""
    head = ("# written by oj cron start from the runbook; rewritten at each start\n"
            f"# state dir: {escaped(state_root)}\n[Timer]\n")
    if cron.schedule is not None:
        return head + f"OnCalendar={cron.schedule}\n"
    usec = max(1, round((cron.interval or 0.0) * 1e6))
    return head + f"OnActiveSec={usec}us\nOnUnitActiveSec={usec}us\n"


def schedule_written_for(text: str, state_root: str) -> bool:
    """Whether a schedule drop-in was written for the crons of ``state_root``."""
    return f"\n# state dir: {escaped(state_root)}\n" in text


def state_text(state_root: str) -> str:
    """The drop-in that points a cron's service at ``state_root``
    (``unitcontrol.state_text``)."""
    return unitcontrol.state_text("cron", state_root)


def _by_hand(name: str) -> str:
    return (f"a cron is a systemd timer: without one, run a tick by hand with 'ojd cron "
            f"{escaped(name)} --project DIR' (from cron(8), say)")


def _timer_state(systemd: Systemd, full: str) -> UnitState:
    """The timer's state; also the proof that a manager answers, asked before oj writes
    anything (a WAL record, a drop-in) on the cron's behalf."""
    st = unitcontrol.unit_state(systemd, timer_unit(full), _by_hand(unitnames.short(full)))
    if st.load_state == "not-found":
        raise OjError(f"unit {timer_unit(full)} is not installed; run 'oj systemd install"
                      f"{' --user' if systemd.user else ''}'")
    return st


def _bind(store: Store, systemd: Systemd, runbook: Runbook, root: str, name: str
          ) -> tuple[Cron, UnitState, bool]:
    """Everything a start, an enable or a tick now need: trust, a manager that answers, the
    binding in the WAL, the drop-ins. Returns (cron, timer state, schedule changed)."""
    cron = cron_named(runbook, name)
    require_unit_safe(store.root)
    require_trusted(systemd, root, name, runbook)
    full = full_name(root, name)
    st = _timer_state(systemd, full)
    record(store, runbook, root, name)
    moved = bind_state_dir(systemd, "cron", full, service_unit(full), store.root,
                           reload=False)
    changed = write_dropin(systemd, dropin_path(systemd, timer_unit(full), SCHEDULE_DROPIN),
                           schedule_text(cron, store.root), reload=False)
    if moved or changed:
        systemd.daemon_reload()  # once for both
    return cron, st, changed


def start(store: Store, systemd: Systemd, runbook: Runbook, root: str, name: str) -> str:
    """Start the cron's timer with the runbook's schedule. Returns "started", "running"
    (it was, with this schedule) or "rescheduled" (it was, with another)."""
    _, st, changed = _bind(store, systemd, runbook, root, name)
    full = full_name(root, name)
    timer = timer_unit(full)
    if st.active_state in RUNNING_STATES:
        if not changed:
            return "running"
        systemd.restart(timer)  # a running timer computes its next tick anew
        _wait_active(systemd, full)
        return "rescheduled"
    if st.active_state == "failed":
        systemd.reset_failed(timer)
    systemd.start(timer)
    _wait_active(systemd, full)
    return "started"


def _wait_active(systemd: Systemd, name: str) -> None:  # name: PROJECT:NAME
    unitcontrol.wait_started(systemd, timer_unit(name), what="timer",
                             logs=f"oj cron logs {name}", timeout=10.0, late="start")


def stop(systemd: Systemd, name: str) -> UnitState:
    """Stop the timer of cron ``name`` (PROJECT:NAME): no more ticks. A tick under way and
    the jobs of earlier ticks run on."""
    check_name(name)
    _timer_state(systemd, name)
    return stop_and_wait(systemd, timer_unit(name), 10.0)


def enable(store: Store, systemd: Systemd, runbook: Runbook, root: str, name: str
           ) -> list[str]:
    """Start the timer at boot (linked into oj-workers.target); does not start it now.
    Returns notes for the user (lingering, for user managers)."""
    _bind(store, systemd, runbook, root, name)
    systemd.enable(timer_unit(full_name(root, name)), TARGET)
    return unitcontrol.boot_notes(systemd, "the cron's timer")


def disable(systemd: Systemd, name: str) -> None:  # name: PROJECT:NAME
    check_name(name)
    _timer_state(systemd, name)
    systemd.disable(timer_unit(name))


def once(store: Store, systemd: Systemd, runbook: Runbook, root: str, name: str
         ) -> dict[str, Any]:
    """Run a tick now through the cron's service (as the timer would: concurrency holds)
    and wait for it. Returns the cron's record after it: ``last_job`` and ``skipped``."""
    _bind(store, systemd, runbook, root, name)
    full = full_name(root, name)
    before = dict(store.refresh().crons.get(full) or {})
    service = service_unit(full)
    st = systemd.state(service)
    if st.active_state == "failed":
        systemd.reset_failed(service)
    systemd.start(service)
    deadline = time.monotonic() + ONCE_TIMEOUT
    while True:
        st = systemd.state(service)
        if st.active_state in ("inactive", "failed") and not systemd.has_job(service):
            break
        if time.monotonic() > deadline:
            raise OjError(f"the tick of cron {quoted(name)} did not end in "
                          f"{ONCE_TIMEOUT:.0f}s; see 'oj cron logs {escaped(name)}'")
        time.sleep(0.02)
    after = dict(store.refresh().crons.get(full) or {})
    if after.get("ticks", 0) > before.get("ticks", 0):
        return {"outcome": "started", "job": after.get("last_job")}
    if after.get("skipped", 0) > before.get("skipped", 0):
        return {"outcome": "skipped", "job": None, "running": after.get("last_running")}
    raise OjError(f"the tick of cron {quoted(name)} ended {st.active_state}/{st.sub_state} "
                  f"without starting a job; see 'oj cron logs {escaped(name)}'")


def running_jobs(state: Any, root: str, name: str) -> list[dict]:
    return [j for j in state.jobs.values() if j.get("cron") == name
            and j["project"] == root and j["status"] in LIVE_JOB_STATES]


def enabled_timers(systemd: Systemd) -> set[str]:
    """Timer units linked into some unit's ``.wants/``: what ``systemctl enable`` made."""
    return enabled_units(config_dirs(systemd), "oj-cron@")


def listing(store: Store, systemd: Systemd | None, project: str | None,
            runbook: Runbook | None, unit_map: dict | None = None,
            enabled: set[str] | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for ``oj cron list`` and ``oj status``: the runbook's crons (in a project) or
    every recorded one, with their timers' state, next and last run. ``unit_map``: the
    loaded units already listed (``oj status``); else systemd is asked here. Returns (rows,
    why systemd could not be asked)."""
    state = store.state
    problem = None
    # by full name (PROJECT:NAME): (project root, the runbook's cron or None)
    crons: dict[str, tuple[str | None, Cron | None]] = {}
    if runbook is not None and project is not None:
        crons = {full_name(project, name): (project, c) for name, c in runbook.crons.items()}
        # crons bound to the project that its runbook no longer defines: their timers may
        # still run (each tick failing) until stopped
        crons.update({name: (project, None) for name, c in state.crons.items()
                      if c.get("project") == project and name not in crons})
    else:
        crons = {name: (c.get("project"), None) for name, c in state.crons.items()
                 if project is None or c.get("project") == project}
    if systemd is not None and unit_map is None:
        if not wake.manager_present(systemd.user):
            systemd = None
        else:
            try:
                unit_map = {u.name: u for u in systemd.list_units(["oj-cron@*.timer",
                                                                   "oj-cron@*.service"])}
                enabled = enabled_timers(systemd)
            except SystemdUnavailable as e:
                problem, systemd = str(e), None
    rows = []
    up_since: dict[str, float | None] = {}  # per project: when its 'ojd up' started
    for full in sorted(crons):
        root, cron = crons[full]
        project_name, name = unitnames.split(full)
        rec = state.crons.get(full) or {}
        if rec and rec.get("project") != root:
            rec = {}  # the name is bound to another project: nothing recorded for this one
        unit = timer_unit(full)
        info = unit_map.get(unit) if unit_map is not None else None
        active = sub = None
        next_run = last_trigger = None
        if unit_map is not None:
            active, sub = (info.active_state, info.sub_state) if info else ("inactive", "dead")
        if systemd is not None and info is not None and active in RUNNING_STATES:
            try:
                next_run, last_trigger = systemd.timer(unit)
            except SystemdUnavailable:
                pass
        last_job = state.jobs.get(rec.get("last_job") or "")
        last_run = rec.get("last_tick")
        outcome = last_job["status"] if last_job is not None else None
        if rec.get("last_skipped") and (last_run or 0) < rec["last_skipped"]:
            last_run, outcome = rec["last_skipped"], "skipped"
        elif last_run and last_job is None:
            outcome = "pruned"  # its job is gone from the state
        if root is not None and cron is not None:
            if root not in up_since:
                up = wake.up_pid(store.root, root)
                up_since[root] = identity.proc_started_at(up) if up is not None else None
            if up_since[root] is not None:  # 'ojd up' ticks it, not a timer
                # lazy: the calendar's reckoning, only where 'ojd up' runs the project
                from ojd.runbook.elapse import upcoming_tick

                active, sub = "active", wake.UP_STATE
                began = max(rec.get("last_tick") or 0.0, rec.get("last_skipped") or 0.0)
                next_run = upcoming_tick(cron.schedule, cron.interval, began or None,
                                         up_since[root], time.time())
        tick = unit_map.get(service_unit(full)) if unit_map is not None else None
        # the last tick's service failed: it started nothing (its cron gone from the
        # runbook, a runbook that does not load, runbooks refused); its journal says why
        tick_failed = tick is not None and tick.active_state == "failed"
        rows.append({
            "name": name, "full_name": full, "project_name": project_name, "project": root,
            "schedule": describe_schedule(cron) if cron is not None else None,
            "interval": cron.interval if cron is not None else None,
            "calendar": cron.schedule if cron is not None else None,
            "pipeline": cron.pipeline if cron is not None else None,
            "concurrency": cron.concurrency if cron is not None else None,
            "unit": unit, "active_state": active, "sub_state": sub,
            "enabled": None if enabled is None else unit in enabled,
            "next_run": next_run,
            "last_run": last_run or last_trigger, "last_outcome": outcome,
            "last_job": rec.get("last_job") if outcome != "skipped" else None,
            "running": len(running_jobs(state, root, name)) if root else 0,
            "ticks": rec.get("ticks", 0), "skipped": rec.get("skipped", 0),
            "tick_failed": tick_failed,
            "gone": runbook is not None and cron is None,
        })
    return rows, problem
