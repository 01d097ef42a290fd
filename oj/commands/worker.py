"""``oj worker``: start (idempotent), stop, restart, resize, prune, logs, list. ``wake`` is a
hidden alias."""

from __future__ import annotations

import os

import click

from oj.output import ago, emit_json, output_option, table
from oj.start import do_start, start_worker, take_over_old_unit
from ojd import worker_control
from ojd.errors import OjError, UsageError, escaped, quoted
from ojd.identity import elsewhere
from ojd.notify import one_line
from ojd.state import LIVE_JOB_STATES
from ojd.systemd import Systemd, SystemdUnavailable
from ojd.unitcontrol import resolve
from ojd.unitnames import short, worker_unit
from ojd.wake import manager_present
from ojd.worker_control import check_name

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
    return Systemd(user=None if scope is None else scope == "user")


def user_scope(scope: str | None) -> bool:
    """Whether ``--user``/``--system`` (or, without either, who runs oj) means the user
    manager."""
    return (os.geteuid() != 0) if scope is None else scope == "user"


def show_journal(units: list[str], user: bool, lines: int, follow: bool, what: str) -> None:
    """Replace this process with journalctl showing ``units``' lines, merged in time."""
    argv = ["journalctl"]
    for unit in units:
        argv += ["--user-unit" if user else "--unit", unit]
    argv += ["-n", str(lines), "--no-pager", "-o", "short-iso"]
    if follow:
        argv.append("--follow")
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise OjError(f"journalctl is not installed; {what} logs live in the journal") from None


@click.group()
def worker() -> None:
    """Start, stop and list workers (each one is the unit oj-worker@PROJECT:NAME.service).

    NAME is the runbook's name of a worker of this project, or PROJECT:NAME for another
    project's."""


def located(app, name: str, kind: str = "worker"):
    """(the App of the project, the runbook's name) of worker or cron ``name``: this
    project's for a short name, project ``P``'s for ``P:NAME`` wherever it is run."""
    from oj.app import App  # lazy: as in oj.cli, built only once a command runs

    root, runbook_name = worker_control.locate(name, app.project_override, kind)
    return (app if root == app.project_or_none() else App(root)), runbook_name


def full_name(app, name: str) -> str:
    """The full name (PROJECT:NAME) a command on a recorded worker means by ``name``."""
    check_name(name)
    return resolve(lambda: app.reader_store.state.workers, "worker", name, app.project_or_none())


def _start(app, name: str, scope: str | None, enable: bool = False,
           run_as: str | None = None) -> None:
    # the same function as the fast path of oj/fastpath.py: both behave identically
    do_start(name, app.project_override, None if scope is None else scope == "user", enable,
             run_as)


def _enable(app, systemd, name: str) -> None:
    app, name = located(app, name)
    for note in worker_control.enable(app.store, systemd, app.runbook, app.root, name):
        click.echo(f"oj: {note}", err=True)


@worker.command("start")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True,
              help="Every worker this project's runbooks define.")
@click.option("--enable", is_flag=True, help="Also start it at boot (see 'oj worker enable').")
@click.option("--run-as", metavar="USER",
              help="Run this system worker as USER, not root, from now on (root: back to root).")
@with_scope
@click.pass_obj
def start_cmd(app, name: str | None, every: bool, enable: bool, run_as: str | None,
              scope: str | None) -> int:
    """Start a worker, or wake it (poll its queue now) if it is already running."""
    name = one_name(name, every)
    if not every:
        _start(app, name, scope, enable, run_as)
        return 0
    user = None if scope is None else scope == "user"
    return for_each_worker(app, "start", lambda n: start_worker(
        n, app.project_override, user, enable, run_as))


def one_name(name: str | None, every: bool) -> str:
    """The NAME of a command that also takes --all: exactly one of the two ("" for --all)."""
    if every and name is not None:
        raise UsageError(f"give a worker NAME or --all, not both (--all takes every worker of "
                         f"the project, {quoted(name)} included)")
    if name is None and not every:  # worded as click words a missing argument
        raise click.UsageError("Missing argument 'NAME' (or --all: every worker of the "
                               "project)", ctx=click.get_current_context())
    return name or ""


def for_each_worker(app, verb: str, act) -> int:
    """``act(name)`` for every worker of the project's runbook, one line each (its result,
    or on stderr why it failed); a failure goes on to the next. Exit 1 if any failed."""
    names = sorted(app.runbook.workers)
    if not names:
        click.echo("no workers: this project's runbooks define none")
        return 0
    failed = 0
    for name in names:
        try:
            click.echo(act(name))
        except OjError as e:
            failed += 1
            click.echo(f"oj: worker {quoted(name)} did not {verb}: "
                       f"{str(e).splitlines()[0]}", err=True)
    return 1 if failed else 0


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
@click.pass_obj
def disable_cmd(app, name: str, scope: str | None) -> None:
    """No longer start a worker at boot; a running worker keeps running."""
    worker_control.disable(systemd_for(scope), full_name(app, name))
    click.echo(f"Worker {quoted(name)} disabled")


@worker.command("wake", hidden=True)
@click.argument("name")
@with_scope
@click.pass_obj
def wake_cmd(app, name: str, scope: str | None) -> None:
    """Alias of start."""
    _start(app, name, scope)


@worker.command("stop")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True,
              help="Every worker this project's runbooks define.")
@click.option("--cancel", is_flag=True,
              help="Cancel its running jobs too; their items go back to pending.")
@with_scope
@click.pass_obj
def stop_cmd(app, name: str | None, every: bool, cancel: bool, scope: str | None) -> int:
    """Stop a worker taking work. Its running jobs finish and settle their items (each
    runs in its own process), unless --cancel."""
    systemd = systemd_for(scope)
    name = one_name(name, every)
    if not every:
        click.echo(_stop(app, systemd, name, cancel))
        return 0
    return for_each_worker(app, "stop", lambda n: _stop(app, systemd, n, cancel, every=True))


def _stop(app, systemd, name: str, cancel: bool, every: bool = False) -> str:
    """Stop worker ``name``; the line that says so. With ``every`` (stop --all), a worker
    on a machine without a manager that does not run in the foreground is simply not
    running: there is no unit it could run in."""
    from ojd.runners import control  # lazy: the job runners (~40 modules), only for a stop
    full = full_name(app, name)
    try:
        st = worker_control.stop(systemd, full, state_root=app.store.root)
    except SystemdUnavailable:
        if not every or manager_present(systemd.user):
            raise
        return f"Worker {quoted(name)} not running (no systemd here, nor in the foreground)"
    store = app.store
    # this host's worker stopped: its jobs, not those the worker runs on other hosts
    root = (store.state.workers.get(full) or {}).get("project")
    jobs = [j for j in store.refresh().jobs.values()
            if j["worker"] == short(full) and j["status"] in LIVE_JOB_STATES
            and root in (None, j["project"])
            and not elsewhere(j.get("process"))]
    if cancel:
        for j in list(jobs):
            try:
                control.cancel(store, j["id"], reason="worker stopped", release=True)
            except OjError as e:  # it ended meanwhile, or cannot be stopped: say, go on
                click.echo(f"oj: {e}", err=True)
                jobs.remove(j)
        left = f"; {len(jobs)} job(s) cancelled, their items back to pending" if jobs else ""
    else:
        left = f"; {len(jobs)} job(s) keep running to their end" if jobs else ""
    return f"Worker {quoted(name)} stopped ({st.active_state}){left}"


@worker.command("resize")
@click.argument("name")
@click.argument("concurrency", required=False, metavar="N")
@click.option("--reset", is_flag=True, help="Back to the concurrency the runbook gives it.")
@click.pass_obj
def resize_cmd(app, name: str, concurrency: str | None, reset: bool) -> None:
    """Run up to N jobs at once from now on, whatever the runbook says (kept across restarts
    until --reset). More: a running worker fills the new slots at once; fewer: running jobs
    finish, and no new one starts until fewer run."""
    if reset and concurrency is not None:
        raise UsageError(f"give the new concurrency N or --reset (back to the runbook's), not "
                         f"both ('{escaped(concurrency)}' and --reset)")
    if not reset and concurrency is None:
        raise UsageError("give the new concurrency N (a whole number, at least 1), or --reset "
                         "to go back to the runbook's")
    n = None if reset else parse_concurrency(concurrency or "")
    worker_control.check_name(name)
    app, name = located(app, name)
    runbook_value, woken = worker_control.resize(app.store, app.runbook, app.root, name, n)
    if n is None:
        said = f"back to the runbook's concurrency {runbook_value}"
    else:
        said = f"resized to {n} (the runbook says {runbook_value})"
    if woken:
        said += "; running, it keeps to it from now on"
    else:
        said += "; it keeps to it when it starts"
    click.echo(f"Worker {quoted(name)} {said}")


def parse_concurrency(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UsageError(f"concurrency must be a whole number of at least 1, not "
                         f"'{escaped(text)}'; 'oj worker stop' stops a worker, --reset goes "
                         "back to the runbook's concurrency")
    return int(text)


@worker.command("prune")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@with_scope
@click.pass_obj
def prune_cmd(app, dry_run: bool, scope: str | None) -> None:
    """Forget workers that no runbook of their project defines any more (the project is
    gone, or its runbooks dropped them), in every project of the state dir. A worker that
    runs is kept."""
    removed, kept = worker_control.prune(app.store, systemd_for(scope), dry_run)
    verb = "would remove" if dry_run else "removed"
    for name, root, why in removed:  # named by the runbook's name, beside its project
        click.echo(f"{verb} worker {quoted(short(name))} of {escaped(root)}: {why}")
    for name, why in kept:
        click.echo(f"oj: kept worker {quoted(short(name))}: {why}", err=True)
    if not removed:
        click.echo("nothing to prune: every recorded worker is defined by its project's "
                   "runbooks" + (" or kept" if kept else ""))


@worker.command("restart")
@click.argument("name")
@with_scope
@click.pass_obj
def restart_cmd(app, name: str, scope: str | None) -> None:
    """Stop and start a worker (after a runbook change, for instance)."""
    app, name = located(app, name)
    systemd = systemd_for(scope)
    take_over_old_unit(app.store, systemd, app.root, name)
    worker_control.restart(app.store, systemd, app.runbook, app.root, name)
    click.echo(f"Worker {quoted(name)} restarted")


@worker.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show.")
@with_scope
@click.pass_obj
def logs_cmd(app, name: str, follow: bool, lines: int, scope: str | None) -> None:
    """The worker's journal: what it takes, starts and sees end (a job's steps write to
    its own unit's journal: journalctl -u oj-job-ID.scope)."""
    check_name(name)
    user = user_scope(scope)
    if not manager_present(user):
        raise OjError(f"no systemd {'user' if user else 'system'} manager runs here, so no "
                      f"journal holds worker logs; a worker run with 'ojd worker {name} "
                      "--foreground' logs to its own stderr")
    show_journal([worker_unit(full_name(app, name))], user, lines, follow, "worker")


@worker.command("list")
@output_option
@click.option("--all", "all_projects", is_flag=True, help="Workers of every project.")
@with_scope
@click.pass_obj
def list_cmd(app, output: str, all_projects: bool, scope: str | None) -> None:
    """Workers with their unit state, running jobs and pending items."""
    here = app.project_or_none()
    project = None if all_projects else here
    rows, problem = worker_control.listing(app.reader_store, systemd_for(scope), project)
    if problem:
        click.echo(f"oj: systemd cannot be reached ({problem}); showing the WAL and "
                   "workers running in the foreground", err=True)
    if output == "json":
        emit_json(rows)
        return
    for r in rows:  # this project's workers by their runbook name, others' by full name
        r["shown"] = r["name"] if r["project"] == here else r["full_name"]
    def enabled(value: bool | None) -> str:
        return "-" if value is None else ("enabled" if value else "disabled")

    def state(r: dict) -> str:
        if r["sub_state"] == "ojd up":  # a worker of a project 'ojd up' runs
            return f"{r['active_state']} (ojd up)"
        if r["active_state"] in (None, "foreground"):
            return r["active_state"] or "unknown"
        return f"{r['active_state']}/{r['sub_state']}"

    empty = "" if rows else no_workers(None if scope is None else scope == "user")
    if getattr(app.reader_store, "shared", False):  # a shared store: the workers of every host
        table(("NAME", "HOST", "STATE", "BOOT", "PID", "JOBS", "PENDING", "QUEUE", "STARTED",
               "PROJECT"),
              [(r["shown"], r["host"], state(r), enabled(r["enabled"]), r["main_pid"],
                f"{r['active']}/{r['concurrency']}", r["pending"], queue_of(r),
                ago(r["started_at"]), r["project"]) for r in rows], empty=empty)
        runbook_notes(rows)
        return
    table(("NAME", "STATE", "BOOT", "PID", "JOBS", "PENDING", "QUEUE", "STARTED", "PROJECT"),
          [(r["shown"], state(r), enabled(r["enabled"]), r["main_pid"],
            f"{r['active']}/{r['concurrency']}" + (" (resized)" if r["resized"] else ""),
            r["pending"], queue_of(r),
            ago(r["started_at"]), r["project"]) for r in rows],
          empty=empty)
    runbook_notes(rows)


def queue_of(row: dict) -> str:
    """A worker's queue, said paused when it is (oj queue pause): the worker takes nothing."""
    return f"{row['queue']} (paused)" if row.get("paused") else row["queue"] or "-"


def runbook_notes(rows: list[dict]) -> None:
    """Under the table: the workers whose changed runbook did not load, and why."""
    for name in sorted({r["shown"] for r in rows if r["runbook_problem"]}):
        problem = next(r["runbook_problem"] for r in rows if r["shown"] == name)
        click.echo(f"worker {quoted(name)} keeps its previous runbook: {one_line(problem)}; "
                   "'oj runbook check' lists the problems")


def no_workers(user: bool | None) -> str:
    """What an empty listing says: how to get a worker on this machine."""
    if manager_present(user):
        return "no workers (start one with 'oj worker start NAME')"
    return "no workers (no systemd here: run one with 'ojd worker NAME --foreground')"
