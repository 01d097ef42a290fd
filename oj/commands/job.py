"""``oj job``: list, show, logs."""

from __future__ import annotations

import os
import time

import click

from oj.output import ago, emit_json, output_option, table

JOB_FIELDS = ("id", "name", "pipeline", "status", "step", "step_status", "item", "worker",
              "cwd", "created_at", "updated_at", "finished_at", "error", "project", "vars",
              "history", "waiting_reason")
JOB_STATUSES = ("running", "waiting", "done", "failed", "cancelled")


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
    if j["status"] == "waiting":
        click.echo(f"{'waiting:':<10} {j.get('waiting_reason') or '-'} (answer: oj job resume "
                   f"{j['id']} -m ...)")
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
        if not follow or store.refresh().jobs[j["id"]]["status"] not in ("running", "waiting"):
            if follow and os.path.exists(path):  # flush what the last step wrote
                with open(path, "rb") as f:
                    f.seek(offset)
                    click.echo(f.read().decode(errors="replace"), nl=False)
            return
        time.sleep(0.2)


@job.command("resume")
@click.argument("job_id", metavar="ID")
@click.option("-m", "--message", help="Answer a job waiting on its agent: typed into it.")
@click.pass_obj
def resume_cmd(app, job_id: str, message: str | None) -> int:
    """Run an interrupted `oj run` job on from the step it was in; answer a waiting one."""
    import os

    from oj.commands.run import run_job
    from ojd.errors import OjError

    j = find_job(app.store, job_id)
    if message is not None:
        from oj.commands.agent import answer

        answer(app.store, j, message)
        owner = j.get("owner") or ""
        if owner.startswith("oj-run/") and owner[7:].isdigit() and not _alive(int(owner[7:])):
            click.echo(f"job {j['id']} answered; its runner is gone: oj job resume {j['id']}",
                       err=True)
        else:
            click.echo(f"job {j['id']} answered; it goes on", err=True)
        return 0
    if j["status"] not in ("running", "waiting"):  # waiting: its runner may have died
        raise OjError(f"job {j['id']} is {j['status']}; only an interrupted job can resume")
    if j["worker"]:
        raise OjError(f"job {j['id']} belongs to worker '{j['worker']}', which resumes it "
                      f"when it starts: oj worker start {j['worker']}")
    owner = j.get("owner") or ""
    if owner.startswith("oj-run/") and owner[7:].isdigit() and _alive(int(owner[7:])):
        raise OjError(f"job {j['id']} is still running (process {owner[7:]})")
    owner = f"oj-run/{os.getpid()}"
    app.store.append({"type": "job:resumed", "id": j["id"], "by": owner})
    return run_job(app, j["id"])


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
