"""What ``oj status`` shows, per project: workers, jobs that run, wait for a person or
failed lately, queue counts, crons (their timers' next runs) and agents.

Everything comes from the state (the WAL) and, when a systemd manager runs, from one
``ListUnitsByPatterns`` call for every oj unit (and three properties of each active cron
timer: its next and last elapse); whether a worker is enabled is read from the
manager's configuration directories (the links ``systemctl enable`` makes), not asked unit
by unit, so the screen costs the same with 50 workers as with one.
"""

from __future__ import annotations

from ojd import wake
from ojd.crons import listing as cron_listing
from ojd.queue_maintenance import overview
from ojd.state import FINISHED_JOB_STATES
from ojd.systemd import Systemd, SystemdUnavailable, UnitInfo
from ojd.unitcontrol import config_dirs, enabled_units
from ojd.worker_control import listing as worker_listing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ojd.runbook.model import Runbook
    from ojd.store import Store

UNIT_PATTERNS = ("oj-worker@*.service", "oj-job-*.scope", "oj-cron@*.timer",
                 "oj-cron@*.service")
FAILED_WINDOW = 24 * 3600.0  # failed jobs are shown for a day


def units(systemd: Systemd | None) -> tuple[dict[str, UnitInfo] | None, str | None]:
    """Every loaded oj unit of the manager, by name, in one D-Bus call. (None, None) when
    no manager runs here (foreground workers only); (None, why) when one runs but does not
    answer."""
    if systemd is None or not wake.manager_present(systemd.user):
        return None, None
    try:
        return {u.name: u for u in systemd.list_units(list(UNIT_PATTERNS))}, None
    except SystemdUnavailable as e:
        return None, str(e)


def projects_of(store: Store) -> list[str]:
    """Every project the state knows of: from its workers, items and jobs."""
    state = store.state
    found = {w.get("project") for w in state.workers.values()}
    found.update(c.get("project") for c in state.crons.values())
    found.update(i["project"] for i in state.items.values())
    found.update(j["project"] for j in state.jobs.values())
    found.discard(None)
    return sorted(found)


def worker_rows(store: Store, project: str | None, unit_map: dict[str, UnitInfo] | None,
                enabled: set[str] | None) -> list[dict]:
    """``oj worker list``'s rows (WAL and foreground workers, no systemd call), with the
    unit states of ``unit_map``, whether each is enabled and when it last polled."""
    rows, _ = worker_listing(store, None, project)
    for r in rows:
        info = unit_map.get(r["unit"]) if unit_map is not None else None
        if r["sub_state"] == "ojd up":  # a worker of a project 'ojd up' runs
            state = f"{r['active_state']} (ojd up)"
        elif r["active_state"] == "foreground":
            state = "foreground"
        elif info is not None:
            r["active_state"], r["sub_state"] = info.active_state, info.sub_state
            state = f"{info.active_state}/{info.sub_state}"
        elif unit_map is not None:  # the manager does not hold it loaded: it is not running
            r["active_state"], r["sub_state"] = "inactive", "dead"
            state = "inactive/dead"
        else:  # no manager to ask: the lock file says whether it runs (in another scope)
            state = "running" if wake.running_pid(store.root, r["full_name"]) else "stopped"
        if r["main_pid"] is None and r["active_state"] in ("active", "reloading"):
            r["main_pid"] = wake.running_pid(store.root, r["full_name"])
        r["state"] = state
        r["enabled"] = None if enabled is None else r["unit"] in enabled
        r["last_poll"] = wake.last_poll(store.root, r["full_name"])
        if r["runbook_problem"]:
            r["state"] += ", runbook not reloaded"
        r["needs_person"] = r["active_state"] == "failed" or bool(r["runbook_problem"])
    return rows


def _job_unit(job: dict, unit_map: dict[str, UnitInfo] | None) -> tuple[str | None, str | None]:
    unit = (job.get("process") or {}).get("unit")
    info = unit_map.get(unit) if unit and unit_map is not None else None
    return unit, (f"{info.active_state}/{info.sub_state}" if info is not None else None)


def job_rows(jobs: list[dict], unit_map: dict[str, UnitInfo] | None, now: float,
             items: dict[str, dict] | None = None) -> dict[str, list[dict]]:
    """The project's jobs that run, that wait for a person, and that failed in the last
    day (newest first). Only what a person must act on ``needs_person``: a failure whose
    item waits out its retry (``items``: the state's) retries by itself, and a dismissed
    job (``oj job dismiss``) was seen to; dismissed failures are left out."""
    running, waiting, failed = [], [], []
    for j in jobs:
        status = j["status"]
        row = {"id": j["id"], "name": j["name"], "pipeline": j["pipeline"], "step": j["step"],
               "worker": j["worker"], "item": j["item"], "created_at": j["created_at"],
               "updated_at": j["updated_at"]}
        if status == "running":
            row["unit"], row["unit_state"] = _job_unit(j, unit_map)
            row["needs_person"] = (row["unit_state"] or "").startswith("failed")
            running.append(row)
        elif status == "waiting":
            row.update(reason=j.get("waiting_reason"), decision=j.get("decision"),
                       needs_person=not j.get("dismissed"),
                       dismissed=bool(j.get("dismissed")))
            waiting.append(row)
        elif status == "failed" and not j.get("dismissed") \
                and (j["finished_at"] or 0.0) >= now - FAILED_WINDOW:
            retry_at = retrying(j, items or {})
            row.update(error=j.get("error"), finished_at=j["finished_at"],
                       retry_at=retry_at, needs_person=retry_at is None)
            failed.append(row)
    running.sort(key=lambda r: r["created_at"])
    waiting.sort(key=lambda r: r["updated_at"])
    failed.sort(key=lambda r: r["finished_at"], reverse=True)
    return {"running": running, "waiting": waiting, "failed": failed}


def retrying(job: dict, items: dict[str, dict]) -> float | None:
    """When the failed job's queue item is taken again (its retry policy's cooldown), or
    None when nothing retries it: no item, or the item is dead or moved on."""
    item = items.get(job.get("item") or "")
    if item is None or item.get("job") != job["id"] or item["status"] != "failed":
        return None
    return item.get("retry_at") or 0.0


def unseen_dead(state) -> dict[tuple[str, str], int]:
    """Dead items a person has not seen to, per (project, queue): those of a dismissed job
    are not counted (``oj queue drop`` or ``retry`` still act on them)."""
    counts: dict[tuple[str, str], int] = {}
    for i in state.items.values():
        if i["status"] == "dead" and \
                not (state.jobs.get(i.get("job") or "") or {}).get("dismissed"):
            key = (i["project"], i["queue"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def cron_rows(store: Store, project: str | None, runbook: Runbook | None,
              systemd: Systemd | None, unit_map: dict[str, UnitInfo] | None,
              enabled: set[str] | None) -> list[dict]:
    """``oj cron list``'s rows, with the timer states of ``unit_map``; systemd is asked
    only for the next and last runs of the timers that are active."""
    # no unit map: systemd could not be listed, and is not asked again here
    rows, _ = cron_listing(store, systemd if unit_map is not None else None, project, runbook,
                      unit_map=unit_map, enabled=enabled)
    for r in rows:
        r["needs_person"] = (r["active_state"] == "failed" or r["last_outcome"] == "failed"
                             or r["tick_failed"])
    return rows


def gather(store: Store, projects: list[str], runbook: Runbook | None,
           systemd: Systemd | None, now: float,
           agent_row: Callable[[dict], dict | None]) -> dict:
    """The whole screen as data (what ``-o json`` prints). ``runbook``: the runbook of the
    single project shown, when it loads; ``agent_row``: a job's agent as ``oj agent list``
    shows it (None: the job is at no agent step)."""
    unit_map, problem = units(systemd)
    dirs = config_dirs(systemd) if unit_map is not None else []
    enabled = enabled_units(dirs, "oj-worker@") if unit_map is not None else None
    enabled_crons = enabled_units(dirs, "oj-cron@") if unit_map is not None else None
    state = store.state
    single = projects[0] if len(projects) == 1 else None
    queues: dict[str, list[dict]] = {p: [] for p in projects}
    dead = unseen_dead(state)
    for q in overview(state, runbook if single else None, single):
        if q["project"] in queues:
            q["needs_person"] = dead.get((q["project"], q["name"]), 0) > 0
            queues[q["project"]].append(q)
    workers: dict[str, list[dict]] = {p: [] for p in projects}
    for w in worker_rows(store, single, unit_map, enabled):
        if w["project"] in workers:
            workers[w["project"]].append(w)
    crons: dict[str, list[dict]] = {p: [] for p in projects}
    for c in cron_rows(store, single, runbook if single else None, systemd, unit_map,
                       enabled_crons):
        if c["project"] in crons:
            crons[c["project"]].append(c)
    jobs: dict[str, list[dict]] = {p: [] for p in projects}
    for j in state.jobs.values():
        if j["project"] in jobs and (j["status"] not in FINISHED_JOB_STATES
                                     or j["status"] == "failed"):
            jobs[j["project"]].append(j)
    sections = []
    for p in projects:
        agents = [a for a in (agent_row(j) for j in sorted(jobs[p],
                                                            key=lambda j: j["created_at"]))
                  if a is not None]
        js = job_rows(jobs[p], unit_map, now, state.items)
        sections.append({
            "project": p,
            "workers": workers[p],
            "jobs": js,
            "queues": queues[p],
            "crons": crons[p],
            "agents": agents,
            # what a person is asked to choose (oj decision review)
            "decisions": [{k: d[k] for k in ("id", "job", "source", "step", "reason",
                                             "created_at")}
                          for d in state.open_decisions(p)],
            "attention": {
                "failed_units": sum(w["needs_person"] for w in workers[p])
                + sum(j["needs_person"] for j in js["running"])
                + sum(c["active_state"] == "failed" or c["tick_failed"] for c in crons[p]),
                "waiting_jobs": sum(j["needs_person"] for j in js["waiting"]),
                "failed_jobs": sum(j["needs_person"] for j in js["failed"]),
                "dead_items": sum(n for (project, _), n in dead.items() if project == p),
            },
        })
    return {"time": now, "systemd": {"asked": unit_map is not None, "problem": problem},
            "projects": sections}
