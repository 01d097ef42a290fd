"""``oj run COMMAND [ARGS]``: a runbook command, in the foreground."""

from __future__ import annotations

import os
import sys

import click


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("command_name", metavar="COMMAND")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="[ARGS]...")
@click.pass_obj
def run(app, command_name: str, argv: tuple[str, ...]) -> int:
    """Run a runbook command; a pipeline command's exit status is the job's outcome."""
    from ojd.argspec import ArgsError
    from ojd.errors import UsageError, escaped, quoted

    runbook = app.runbook
    command = runbook.commands.get(command_name)
    if command is None:
        known = ", ".join(sorted(runbook.commands)) or "none"
        raise UsageError(f"unknown command {quoted(command_name)}; this project defines: "
                         f"{known}")
    try:
        values = command.args.bind(list(argv), command.defaults)
    except ArgsError as e:
        raise UsageError(f"{escaped(command_name)}: {e}") from None
    if command.run is not None:
        return _run_shell(app, command.run, values)
    return _run_pipeline(app, command.pipeline, values, command_name)


def _run_shell(app, script: str, values: dict) -> int:
    from ojd.errors import UsageError
    from ojd.template import TemplateError, render_shell

    ctx = {"args": values, "var": values, "invoke": {"dir": os.getcwd()}}
    try:
        rendered = render_shell(script, ctx)
    except TemplateError as e:
        raise UsageError(str(e)) from None
    env = dict(os.environ, OJ_PROJECT=app.root)
    from ojd import bashrun

    return bashrun.run(rendered, "-e", "-o", "pipefail", cwd=app.root, env=env).returncode


def _run_pipeline(app, pipeline: str, values: dict, name: str) -> int:
    from ojd.jobs import create_job

    store = app.store
    with store.transaction() as tx:
        job = create_job(tx, store.root, app.runbook, app.root, pipeline, values, os.getcwd(),
                         owner=f"oj-run/{os.getpid()}", name=name)
    click.echo(f"job {job['id']} ({pipeline}) started; logs: oj job logs {job['id']}",
               err=True)
    return run_job(app, job["id"])


def run_job(app, job_id: str) -> int:
    """Run (or resume) a job in the foreground, printing its progress; 0 when done."""
    from ojd.jobs import JobRunner

    store = app.store

    def progress(job: str, what: str, detail: str) -> None:
        if what in ("step", "notify"):
            click.echo(f"  {detail}", err=True)

    runner = JobRunner(store, app.runbook, progress=progress)
    try:
        outcome = runner.run(job_id)
    except KeyboardInterrupt:
        runner.stop(grace=0)
        store.append({"type": "job:finished", "id": job_id, "outcome": "cancelled",
                      "error": "interrupted"})
        click.echo(f"job {job_id} cancelled", err=True)
        return 130
    error = store.state.jobs[job_id].get("error")
    click.echo(f"job {job_id} {outcome}" + (f": {error}" if error else ""), err=True)
    sys.stdout.flush()
    return 0 if outcome == "done" else 1
