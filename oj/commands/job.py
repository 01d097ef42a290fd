"""``oj job``: list, show, logs."""

from __future__ import annotations

import os
import time

import click

from oj.output import ago, emit_json, output_option, table

JOB_FIELDS = ("id", "name", "pipeline", "status", "step", "step_status", "item", "worker",
              "cwd", "created_at", "updated_at", "finished_at", "error", "project", "vars",
              "history", "process")
JOB_STATUSES = ("running", "done", "failed", "cancelled")


def find_job(store, prefix: str) -> dict:
    from ojd.errors import OjError, quoted

    matches = store.state.find(store.state.jobs, prefix)
    if not matches:
        raise OjError(f"no job with id {quoted(prefix)}; see 'oj job list'")
    if len(matches) > 1:
        raise OjError(f"job id {quoted(prefix)} is ambiguous; give more characters")
    return matches[0]


@click.group()
def job() -> None:
    """List jobs, show one, follow its logs."""


@job.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this state.")
@output_option
@click.pass_obj
def list_cmd(app, status: str | None, output: str) -> None:
    """Jobs of this project (every project's, outside one), oldest first."""
    project = app.project_or_none()
    jobs = [j for j in app.reader_store.state.jobs.values()
            if (project is None or j["project"] == project)
            and (status is None or j["status"] == status)]
    jobs.sort(key=lambda j: j["created_at"])
    if output == "json":
        emit_json([{k: j.get(k) for k in JOB_FIELDS} for j in jobs])
        return
    rows = [(j["id"], j["name"], j["status"], j["step"], j["worker"], ago(j["created_at"]))
            for j in jobs]
    table(("ID", "NAME", "STATUS", "STEP", "WORKER", "CREATED"), rows, empty="no jobs")


@job.command("show")
@click.argument("job_id", metavar="ID")
@output_option
@click.pass_obj
def show_cmd(app, job_id: str, output: str) -> None:
    """One job and its steps."""
    j = find_job(app.existing_store(), job_id)
    if output == "json":
        emit_json({k: j.get(k) for k in JOB_FIELDS})
        return
    for key in ("id", "name", "pipeline", "status", "item", "worker", "cwd", "error"):
        click.echo(f"{key + ':':<10} {j.get(key) or '-'}")
    click.echo(f"{'created:':<10} {ago(j['created_at'])}")
    click.echo("steps:")
    for h in j["history"]:
        took = f"{h['finished_at'] - h['started_at']:.1f}s" if h["finished_at"] else "running"
        verdict = "-" if h["exit"] is None else ("ok" if h["exit"] == 0 else f"exit {h['exit']}")
        click.echo(f"  {h['step']:<16} {verdict:<8} {took}")


@job.command("logs")
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_obj
def logs_cmd(app, job_id: str, follow: bool) -> None:
    """Print a job's log (every step's output)."""
    from ojd import paths

    store = app.existing_store()
    j = find_job(store, job_id)
    path = os.path.join(paths.logs_dir(store.root), f"{j['id']}.log")
    if not os.path.exists(path) and not follow:
        click.echo(f"job {j['id']} has no output yet", err=True)
        return
    offset = 0
    while True:
        if os.path.exists(path):
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            click.echo(chunk.decode(errors="replace"), nl=False)
        if not follow or store.refresh().jobs[j["id"]]["status"] != "running":
            if follow and os.path.exists(path):  # flush what the last step wrote
                with open(path, "rb") as f:
                    f.seek(offset)
                    click.echo(f.read().decode(errors="replace"), nl=False)
            return
        time.sleep(0.2)


@job.command("cancel")
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_obj
def cancel_cmd(app, job_ids: tuple[str, ...]) -> None:
    """Cancel jobs: stop what runs of them; a worker job's item goes dead ("cancelled"),
    so `oj queue retry` can bring it back."""
    from ojd.runners import control

    store = app.existing_store()
    jobs = [find_job(store, prefix) for prefix in job_ids]  # all ids valid before acting
    for j in jobs:
        control.cancel(store, j["id"])
        item = f"; item {j['item']} is dead, 'oj queue retry' brings it back" \
            if j.get("item") else ""
        click.echo(f"job {j['id']} cancelled{item}")


@job.command("resume")
@click.argument("job_id", metavar="ID")
@click.option("--var", "vars_", multiple=True, metavar="KEY=VALUE",
              help="Set a var of the job before it runs on (repeatable).")
@click.option("--detach", "-d", is_flag=True, help="Do not follow its output.")
@click.pass_obj
def resume_cmd(app, job_id: str, vars_: tuple[str, ...], detach: bool) -> int:
    """Run a failed, cancelled or interrupted job on from the step it stopped at."""
    from oj.commands.run import follow_job, start_job
    from ojd.errors import OjError, UsageError, escaped
    from ojd.runners import control
    from ojd.runners.jobprocess import alive

    values = {}
    for pair in vars_:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--var {escaped(pair)}: expected KEY=VALUE")
        values[key] = value
    j = find_job(app.store, job_id)
    if j["status"] == "done":
        raise OjError(f"job {j['id']} is done; nothing to resume")
    if j["status"] in ("running", "waiting"):
        if alive(j.get("process")):
            raise OjError(f"job {j['id']} is still running (process {j['process']['pid']})")
        if values:
            raise UsageError("--var applies to a failed or cancelled job")
    else:
        j = control.reopen(app.store, j["id"], values)
    if j["worker"]:
        from ojd import wake

        where = "" if wake.wake_worker(app.store, j["worker"]) else \
            f"; it is not running: oj worker start {j['worker']}"
        click.echo(f"job {j['id']} resumes at step '{j.get('next') or j['step'] or '-'}' "
                   f"in worker '{j['worker']}'{where}", err=True)
        return 0
    app.store.append({"type": "job:resumed", "id": j["id"], "by": f"oj-run/{os.getpid()}"})
    start_job(app, j["id"])
    if detach:
        click.echo(j["id"])
        return 0
    return follow_job(app, j["id"])
