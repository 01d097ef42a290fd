"""``oj run COMMAND [ARGS]``: a runbook command. A shell command runs in the foreground;
a pipeline command starts a job in its own process (its own unit under systemd) and
follows its output until it ends; Ctrl-C leaves it running."""

from __future__ import annotations

import os
import signal
import sys

import click

from oj.output import table
from ojd import bashrun
from ojd.errors import UsageError, escaped, unknown
from ojd.runbook.argspec import ArgsError
from ojd.runbook.jobnames import command_job_name
from ojd.runbook.template import TemplateError, render_shell


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--detach", "-d", is_flag=True,
              help="Start a pipeline command's job, print its id and return.")
@click.argument("command_name", metavar="[COMMAND]", required=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="[ARGS]...")
@click.pass_obj
def run(app, detach: bool, command_name: str | None, argv: tuple[str, ...]) -> int:
    """Run a runbook command; without one, list the project's commands. A pipeline
    command's job runs on its own (a closed terminal does not stop it); its output is shown
    as it comes and the exit status is its outcome: 0 done, 1 failed, 4 cancelled. Ctrl-C
    stops following, not the job."""
    runbook = app.runbook
    if command_name is None:
        return _list_commands(runbook)
    command = runbook.commands.get(command_name)
    if command is None:
        raise unknown("command", command_name, runbook.commands)
    try:
        values = command.args.bind(list(argv), command.defaults)
    except ArgsError as e:
        raise UsageError(f"{escaped(command_name)}: {e}") from None
    if command.run is not None:
        return _run_shell(app, command.run, values)
    name = command_name
    pipeline = runbook.pipelines.get(command.pipeline)
    if pipeline is not None and pipeline.spelling == "job" and pipeline.job_name is None:
        # upstream's jobs are named after the command's first argument
        name = command_job_name(values, tuple(p.name for p in command.args.positionals)) \
            or name
    return _run_pipeline(app, command.pipeline, values, name, detach)


def _list_commands(runbook) -> int:
    """What ``oj run NAME`` can run: each command's usage, what it runs, where it is."""
    if not runbook.commands:
        click.echo("no commands in this project's runbooks; add one: command \"NAME\" "
                   "{ run = \"...\" } (see docs/RUNBOOKS.md#command)")
        return 0
    rows = [(f"{c.name} {c.args.usage()}".rstrip(),
             f"pipeline {c.pipeline}" if c.pipeline else "shell script", str(c.where))
            for c in sorted(runbook.commands.values(), key=lambda c: c.name)]
    table(("COMMAND", "RUNS", "DEFINED AT"), rows)
    click.echo("run one: oj run COMMAND [ARGS]...", err=True)
    return 0


def _run_shell(app, script: str, values: dict) -> int:
    ctx = {"args": values, "var": values, "invoke": {"dir": os.getcwd()}}
    try:
        rendered = render_shell(script, ctx)
    except TemplateError as e:
        raise UsageError(str(e)) from None
    env = dict(os.environ, OJ_PROJECT=app.root)
    return bashrun.run(rendered, "-e", "-o", "pipefail", cwd=app.root, env=env).returncode


def _run_pipeline(app, pipeline: str, values: dict, name: str, detach: bool) -> int:
    # lazy: the store and the job runners (~40 modules) only for a pipeline, not for a
    # command's script
    from ojd.queues import new_id
    from ojd.runners.jobs import job_created_event

    store = app.store
    job_id = new_id(store.refresh().jobs)
    owner = cli_owner()

    def create(tx) -> list[dict]:  # the job and its process: one append
        return [job_created_event(tx, store.root, app.runbook, app.root, pipeline, values,
                                  os.getcwd(), owner=owner, name=name, job_id=job_id)]

    return launch(app, job_id, create, name, detach, f"job {job_id} ({pipeline}) started")


def launch(app, job_id: str, create, name: str, detach: bool, started: str) -> int:
    """Start the job ``create`` records, then print its id (``detach``) or say ``started``
    and follow it to its end: the exit status of ``oj run`` and ``oj job rerun``."""
    try:
        # a Ctrl-C while the job's process starts is held until it runs (start_job), and
        # then lands anywhere from here on: the job runs on either way
        start_job(app, job_id, create, name)
        if detach:
            click.echo(job_id)
            return 0
        click.echo(started, err=True)
        return follow_job(app, job_id)
    except KeyboardInterrupt:
        return keeps_running(job_id)


def keeps_running(job_id: str) -> int:
    """What Ctrl-C on a followed job says: it only stops the following."""
    click.echo(f"\njob {job_id} keeps running; follow it: oj job logs -f {job_id}; "
               f"cancel it: oj job cancel {job_id}", err=True)
    return 130


def cli_owner() -> str:
    """Who started a job from the command line (`oj run`, `oj job resume`)."""
    return f"oj-run/{os.getpid()}"


def start_job(app, job_id: str, create=None, name: str | None = None,
              replaces: dict | None = None) -> None:
    """Start the job's own process (in a scope of this user's manager when there is one);
    ``create(tx)`` gives the events that create the job, appended with its process; else
    the job exists and its recorded process must still be ``replaces``."""
    from ojd.runners import jobprocess  # lazy: as in _run_pipeline

    # Ctrl-C between the record of the process and its go would leave a job whose process
    # never ran: it waits until the process runs (and is then only a detach)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        jobprocess.spawn(app.store, app.runbook, job_id, owner=cli_owner(),
                         manager=jobprocess.manager_for_cli(), quiet=True, decide=create,
                         name=name, replaces=replaces,
                         warn=lambda m: click.echo(f"oj: warning: {m}", err=True))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def follow_job(app, job_id: str) -> int:
    """Show the job's output until it ends; its outcome as the exit status. Ctrl-C (or a
    closed terminal) leaves the job running."""
    from ojd.runners import control  # lazy: as in _run_pipeline

    out = sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    try:
        outcome = control.follow(app.store, job_id, write)
    except KeyboardInterrupt:
        return keeps_running(job_id)
    job = app.store.state.jobs.get(job_id) or {}
    if outcome == "lost":
        click.echo(f"job {job_id} stopped without finishing; resume it: "
                   f"oj job resume {job_id}", err=True)
        return 1
    error = job.get("error")
    click.echo(f"job {job_id} {outcome}" + (f": {error}" if error else ""), err=True)
    return control.OUTCOME_EXIT.get(outcome, 1)
