"""``oj worker``: start (idempotent), stop, restart, logs, list. ``wake`` is a hidden alias."""

from __future__ import annotations

import os

import click

from oj.output import ago, emit_json, output_option, table
from ojd.errors import quoted

scope_options = [
    click.option("--user", "scope", flag_value="user",
                 help="Use the user manager (default when not root)."),
    click.option("--system", "scope", flag_value="system",
                 help="Use the system manager (default as root)."),
]


def with_scope(f):
    for option in reversed(scope_options):
        f = option(f)
    return f


def systemd_for(scope: str | None):
    from ojd.systemd import Systemd

    return Systemd(user=None if scope is None else scope == "user")


@click.group()
def worker() -> None:
    """Start, stop and list workers (each one is the unit oj-worker@NAME.service)."""


def _start(app, name: str, scope: str | None, enable: bool = False,
           run_as: str | None = None) -> None:
    # the same function as the fast path of oj/fastpath.py: both behave identically
    from oj.start import do_start

    do_start(name, app.project_override, None if scope is None else scope == "user", enable,
             run_as)


def _enable(app, systemd, name: str) -> None:
    from ojd import workers

    for note in workers.enable(app.store, systemd, app.runbook, app.root, name):
        click.echo(f"oj: {note}", err=True)


@worker.command("start")
@click.argument("name")
@click.option("--enable", is_flag=True, help="Also start it at boot (see 'oj worker enable').")
@click.option("--run-as", metavar="USER",
              help="Run this system worker as USER, not root, from now on (root: back to root).")
@with_scope
@click.pass_obj
def start_cmd(app, name: str, enable: bool, run_as: str | None, scope: str | None) -> None:
    """Start a worker, or wake it (poll its queue now) if it is already running."""
    _start(app, name, scope, enable, run_as)


@worker.command("enable")
@click.argument("name")
@with_scope
@click.pass_obj
def enable_cmd(app, name: str, scope: str | None) -> None:
    """Start a worker at boot (it joins oj-workers.target); does not start it now."""
    _enable(app, systemd_for(scope), name)
    click.echo(f"Worker {quoted(name)} enabled")


@worker.command("disable")
@click.argument("name")
@with_scope
def disable_cmd(name: str, scope: str | None) -> None:
    """No longer start a worker at boot; a running worker keeps running."""
    from ojd import workers

    workers.disable(systemd_for(scope), name)
    click.echo(f"Worker {quoted(name)} disabled")


@worker.command("wake", hidden=True)
@click.argument("name")
@with_scope
@click.pass_obj
def wake_cmd(app, name: str, scope: str | None) -> None:
    """Alias of start."""
    _start(app, name, scope)


@worker.command("stop")
@click.argument("name")
@click.option("--cancel", is_flag=True,
              help="Cancel its running jobs too; their items go back to pending.")
@with_scope
@click.pass_obj
def stop_cmd(app, name: str, cancel: bool, scope: str | None) -> None:
    """Stop a worker taking work. Its running jobs finish and settle their items (each
    runs in its own process), unless --cancel."""
    from ojd import workers
    from ojd.runners import control
    from ojd.state import LIVE_JOB_STATES

    st = workers.stop(systemd_for(scope), name, state_root=app.store.root)
    store = app.store
    jobs = [j for j in store.refresh().jobs.values()
            if j["worker"] == name and j["status"] in LIVE_JOB_STATES
            and (app.project_or_none() in (None, j["project"]))]
    if cancel:
        from ojd.errors import OjError

        for j in list(jobs):
            try:
                control.cancel(store, j["id"], reason="worker stopped", release=True)
            except OjError as e:  # it ended meanwhile, or cannot be stopped: say, go on
                click.echo(f"oj: {e}", err=True)
                jobs.remove(j)
        left = f"; {len(jobs)} job(s) cancelled, their items back to pending" if jobs else ""
    else:
        left = f"; {len(jobs)} job(s) keep running to their end" if jobs else ""
    click.echo(f"Worker {quoted(name)} stopped ({st.active_state}){left}")


@worker.command("restart")
@click.argument("name")
@with_scope
@click.pass_obj
def restart_cmd(app, name: str, scope: str | None) -> None:
    """Stop and start a worker (after a runbook change, for instance)."""
    from ojd import workers

    workers.restart(app.store, systemd_for(scope), app.runbook, app.root, name)
    click.echo(f"Worker {quoted(name)} restarted")


@worker.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show.")
@with_scope
def logs_cmd(name: str, follow: bool, lines: int, scope: str | None) -> None:
    """The worker's journal: what it takes, starts and sees end (a job's steps write to
    its own unit's journal: journalctl -u oj-job-ID.scope)."""
    from ojd.errors import OjError
    from ojd.systemd import worker_unit
    from ojd.wake import manager_present
    from ojd.workers import check_name

    check_name(name)
    user = (os.geteuid() != 0) if scope is None else scope == "user"
    if not manager_present(user):
        raise OjError(f"no systemd {'user' if user else 'system'} manager runs here, so no "
                      f"journal holds worker logs; a worker run with 'ojd worker {name} "
                      "--foreground' logs to its own stderr")
    argv = ["journalctl", "--user-unit" if user else "--unit", worker_unit(name),
            "-n", str(lines), "--no-pager", "-o", "short-iso"]
    if follow:
        argv.append("--follow")
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise OjError("journalctl is not installed; worker logs live in the journal") from None


@worker.command("list")
@output_option
@click.option("--all", "all_projects", is_flag=True, help="Workers of every project.")
@with_scope
@click.pass_obj
def list_cmd(app, output: str, all_projects: bool, scope: str | None) -> None:
    """Workers with their unit state, running jobs and pending items."""
    from ojd import workers

    project = None if all_projects else app.project_or_none()
    rows, problem = workers.listing(app.reader_store, systemd_for(scope), project)
    if problem:
        click.echo(f"oj: systemd cannot be reached ({problem}); showing the WAL and "
                   "workers running in the foreground", err=True)
    if output == "json":
        emit_json(rows)
        return
    def enabled(value: bool | None) -> str:
        return "-" if value is None else ("enabled" if value else "disabled")

    def state(r: dict) -> str:
        if r["active_state"] in (None, "foreground"):
            return r["active_state"] or "unknown"
        return f"{r['active_state']}/{r['sub_state']}"

    table(("NAME", "STATE", "BOOT", "PID", "JOBS", "PENDING", "QUEUE", "STARTED", "PROJECT"),
          [(r["name"], state(r), enabled(r["enabled"]), r["main_pid"],
            f"{r['active']}/{r['concurrency']}", r["pending"], r["queue"],
            ago(r["started_at"]), r["project"]) for r in rows],
          empty="" if rows else no_workers(None if scope is None else scope == "user"))


def no_workers(user: bool | None) -> str:
    """What an empty listing says: how to get a worker on this machine."""
    from ojd.wake import manager_present

    if manager_present(user):
        return "no workers (start one with 'oj worker start NAME')"
    return "no workers (no systemd here: run one with 'ojd worker NAME --foreground')"
