"""``oj cron``: list, start, stop, enable, disable, once, logs. Each cron is the timer
``oj-cron@PROJECT:NAME.timer``, whose ticks run ``oj-cron@PROJECT:NAME.service``."""

from __future__ import annotations

import time

import click

from oj.commands.worker import located, show_journal, systemd_for, user_scope, with_scope
from oj.output import ago, emit_json, output_option, table
from ojd import crons, handover
from ojd.duration import format_duration
from ojd.errors import OjError, escaped, quoted
from ojd.unitcontrol import resolve
from ojd.unitnames import short
from ojd.wake import manager_present


@click.group()
def cron() -> None:
    """Start, stop and list crons (each one is the timer oj-cron@PROJECT:NAME.timer).

    NAME is the runbook's name of a cron of this project, or PROJECT:NAME for another
    project's."""


def cron_full_name(app, name: str) -> str:
    """The full name (PROJECT:NAME) a command on a recorded cron means by ``name``."""
    crons.check_name(name)
    return resolve(lambda: app.reader_store.state.crons, "cron", name, app.project_or_none())


@cron.command("start")
@click.argument("name")
@click.option("--enable", is_flag=True, help="Also start it at boot (see 'oj cron enable').")
@with_scope
@click.pass_obj
def start_cmd(app, name: str, enable: bool, scope: str | None) -> None:
    """Start a cron's timer with its runbook's schedule (a running one takes a changed
    schedule)."""
    systemd = systemd_for(scope)
    app, name = located(app, name, "cron")
    outcome = crons.start(app.store, systemd, app.runbook, app.root, name)
    if enable:
        for note in crons.enable(app.store, systemd, app.runbook, app.root, name):
            click.echo(f"oj: {note}", err=True)
    take_over_old_timer(app, systemd, name)
    said = {"started": "started", "running": "was already running",
            "rescheduled": "was running; restarted with its new schedule"}[outcome]
    click.echo(f"Cron {quoted(name)} {said} ({crons.describe_schedule(app.runbook.crons[name])})"
               + ("; enabled" if enable else ""))


@cron.command("stop")
@click.argument("name")
@with_scope
@click.pass_obj
def stop_cmd(app, name: str, scope: str | None) -> None:
    """Stop a cron's timer: no more ticks. Jobs it started run on to their end."""
    full = cron_full_name(app, name)
    st = crons.stop(systemd_for(scope), full)
    store = app.reader_store
    root = (store.state.crons.get(full) or {}).get("project")
    running = len(crons.running_jobs(store.state, root, short(full))) if root else 0
    left = f"; {running} of its job(s) keep running to their end" if running else ""
    click.echo(f"Cron {quoted(name)} stopped ({st.active_state}){left}")


@cron.command("enable")
@click.argument("name")
@with_scope
@click.pass_obj
def enable_cmd(app, name: str, scope: str | None) -> None:
    """Start a cron's timer at boot (it joins oj-workers.target); does not start it now."""
    app, name = located(app, name, "cron")
    systemd = systemd_for(scope)
    for note in crons.enable(app.store, systemd, app.runbook, app.root, name):
        click.echo(f"oj: {note}", err=True)
    take_over_old_timer(app, systemd, name)
    click.echo(f"Cron {quoted(name)} enabled")


def take_over_old_timer(app, systemd, name: str) -> None:
    """A timer this cron had before projects had names (oj-cron@NAME.timer) hands over."""
    said = handover.take_over_cron(app.store, systemd, crons.full_name(app.root, name))
    if said is not None:
        click.echo(f"oj: {said}", err=True)


@cron.command("disable")
@click.argument("name")
@with_scope
@click.pass_obj
def disable_cmd(app, name: str, scope: str | None) -> None:
    """No longer start a cron's timer at boot; a running timer keeps running."""
    crons.disable(systemd_for(scope), cron_full_name(app, name))
    click.echo(f"Cron {quoted(name)} disabled")


@cron.command("once")
@click.argument("name")
@with_scope
@click.pass_obj
def once_cmd(app, name: str, scope: str | None) -> None:
    """Tick now: start the cron's job, as its timer would (skipped while its concurrency
    is reached). Prints the job's id; follow it with 'oj job logs -f ID'."""
    app, name = located(app, name, "cron")
    result = crons.once(app.store, systemd_for(scope), app.runbook, app.root, name)
    if result["outcome"] == "skipped":
        cron_ = app.runbook.crons[name]
        click.echo(f"Cron {quoted(name)} skipped: {result['running']} of its job(s) still "
                   f"running (concurrency {cron_.concurrency})")
        return
    click.echo(f"Cron {quoted(name)} started job {result['job']}")


@cron.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show.")
@with_scope
@click.pass_obj
def logs_cmd(app, name: str, follow: bool, lines: int, scope: str | None) -> None:
    """The cron's journal: its ticks (started or skipped) and the output of the jobs of its
    latest ticks (the units oj-job-ID.scope)."""
    crons.check_name(name)
    try:
        runbook = app.runbook
    except OjError:
        runbook = None
    state = app.reader_store.state
    full = cron_full_name(app, name)
    root = (state.crons.get(full) or {}).get("project") or app.project_or_none()
    if ":" in name:
        runbook = None  # another project's: its record answers
    if (runbook is None or name not in runbook.crons) and full not in state.crons:
        if runbook is not None:
            crons.cron_named(runbook, name)  # unknown: the did-you-mean error
        raise OjError(f"unknown cron {quoted(name)}: nothing is recorded for it")
    user = user_scope(scope)
    if not manager_present(user):
        raise OjError(f"no systemd {'user' if user else 'system'} manager runs here, so no "
                      "journal holds cron logs; a tick run by hand ('ojd cron NAME "
                      "--project DIR') logs to its own stderr, its job to 'oj job logs ID'")
    # the jobs of its latest ticks, by their recorded units (the state keeps recent jobs)
    jobs = sorted((j for j in state.jobs.values()
                   if j.get("cron") == short(full) and j["project"] == root),
                  key=lambda j: j["created_at"])[-20:]
    units = [(job.get("process") or {}).get("unit") for job in jobs]
    show_journal([crons.service_unit(full), *filter(None, units)], user, lines, follow, "cron")


@cron.command("list")
@output_option
@click.option("--all", "all_projects", is_flag=True, help="Crons of every project.")
@with_scope
@click.pass_obj
def list_cmd(app, output: str, all_projects: bool, scope: str | None) -> None:
    """Crons with their schedule, next run, last run and its outcome, and boot state."""
    here = app.project_or_none()
    project = None if all_projects else here
    runbook = app.runbook if project is not None else None
    rows, problem = crons.listing(app.reader_store, systemd_for(scope), project, runbook)
    if problem:
        click.echo(f"oj: systemd cannot be reached ({problem}); showing what the state "
                   "holds", err=True)
    if output == "json":
        emit_json(rows)
        return
    now = time.time()
    # runbook text, escaped as 'oj status' does: a control character would break the table
    table(("NAME", "SCHEDULE", "STATE", "NEXT", "LAST", "OUTCOME", "RUNNING", "BOOT"),
          [(escaped(r["name"] if r["project"] == here else r["full_name"]),
            escaped(crons.schedule_shown(r)), state_of(r),
            until(r["next_run"], now), ago(r["last_run"], now), escaped(outcome_of(r)),
            f"{r['running']}/{r['concurrency'] or '-'}",
            boot(r["enabled"])) for r in rows],
          empty="" if rows else "no crons (define one in a runbook: cron \"NAME\" { ... })")


def state_of(row: dict) -> str:
    if row["sub_state"] == "ojd up":  # ticked by the project's 'ojd up', not a timer
        return f"{row['active_state']} (ojd up)"
    if row["active_state"] is None:
        return "unknown"
    return f"{row['active_state']}/{row['sub_state']}"


def outcome_of(row: dict) -> str:
    if row["tick_failed"]:
        return f"tick failed (oj cron logs {row['name']})"
    outcome = row["last_outcome"]
    if outcome is None:
        return "-"
    return f"{outcome} ({row['last_job']})" if row["last_job"] else outcome


def boot(enabled: bool | None) -> str:
    return "-" if enabled is None else ("enabled" if enabled else "disabled")


def until(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    return "in " + format_duration(max(0.0, ts - now))
