"""``oj agent``: the agents of running jobs: list, peek, attach, send."""

from __future__ import annotations

import os
import time

import click

from oj.commands.job import find_job
from oj.output import emit_json, output_option, table
from ojd.agents import session as tmux
from ojd.errors import OjError
from ojd.runbook.model import DEFAULT_AGENT_IDLE
from ojd.state import LIVE_JOB_STATES


@click.group()
def agent() -> None:
    """See and talk to the agents of running jobs."""


def current_agent(job: dict) -> dict | None:
    """The job's agent session, while the job is in the agent step that started it."""
    a = job.get("agent")
    if not a or job["status"] not in LIVE_JOB_STATES:
        return None
    if job["step"] != a.get("step") or job["step_status"] != "running":
        return None
    return a


def _live_agent(app, job_id: str) -> tuple[dict, dict]:
    j = find_job(app.existing_store(), job_id)
    a = current_agent(j)
    if a is None:
        if j["status"] not in LIVE_JOB_STATES:
            raise OjError(f"job {j['id']} is {j['status']}; its agent is no longer running")
        raise OjError(f"job {j['id']} has no agent running (step '{j['step'] or '-'}'); "
                      "see 'oj agent list'")
    if not tmux.alive(a["socket"], a["session"]):
        raise OjError(f"the agent of job {j['id']} has exited; see 'oj job logs {j['id']}'")
    return j, a


def agent_status(app, job: dict, a: dict, now: float) -> str:
    """waiting, dead, idle or running: as `oj agent list` and `oj status` show it."""
    if job["status"] == "waiting":
        return "waiting"
    if not tmux.alive(a["socket"], a["session"]):
        return "dead"
    idle = DEFAULT_AGENT_IDLE
    try:
        spec = app.runbook.agents.get(a.get("agent") or "")
        idle = spec.idle if spec is not None else idle
    except Exception:  # outside the project, or a broken runbook: the default will do
        pass
    last = tmux.activity(a["socket"], a["session"])
    return "idle" if last is not None and now - last >= idle else "running"


@agent.command("list")
@output_option
@click.pass_obj
def list_cmd(app, output: str) -> None:
    """Agents of this project's running jobs (every project's, outside one)."""
    project = app.project_or_none()
    now = time.time()
    rows = []
    for j in sorted(app.reader_store.state.jobs.values(), key=lambda j: j["created_at"]):
        a = current_agent(j)
        if a is None or (project is not None and j["project"] != project):
            continue
        rows.append({"job": j["id"], "step": a["step"], "agent": a.get("agent"),
                     "status": agent_status(app, j, a, now), "session": a["session"],
                     "socket": a["socket"], "reason": j.get("waiting_reason")})
    if output == "json":
        emit_json(rows)
        return
    table(("JOB", "STEP", "AGENT", "STATUS", "SESSION"),
          [(r["job"], r["step"], r["agent"], r["status"], r["session"]) for r in rows],
          empty="no agents running")


@agent.command("peek")
@click.argument("job_id", metavar="ID")
@click.pass_obj
def peek_cmd(app, job_id: str) -> None:
    """Print the agent's screen as it is now."""
    j, a = _live_agent(app, job_id)
    screen = tmux.capture(a["socket"], a["session"])
    if screen is None:
        raise OjError(f"the agent of job {j['id']} has exited; see 'oj job logs {j['id']}'")
    click.echo(screen.rstrip("\n"))


@agent.command("attach")
@click.argument("job_id", metavar="ID")
@click.pass_obj
def attach_cmd(app, job_id: str) -> None:
    """Take the agent's terminal (tmux); detach with C-b d, the agent keeps running."""
    _, a = _live_agent(app, job_id)
    argv = tmux.attach_argv(a["socket"], a["session"])
    env = dict(os.environ)
    env.pop("TMUX", None)  # attaching from inside another tmux is fine: it is another server
    os.execvpe(argv[0], argv, env)


@agent.command("send")
@click.argument("job_id", metavar="ID")
@click.argument("message")
@click.pass_obj
def send_cmd(app, job_id: str, message: str) -> None:
    """Type MESSAGE into the agent's session, then Enter."""
    j, a = _live_agent(app, job_id)
    if not tmux.send(a["socket"], a["session"], message):
        raise OjError(f"could not type into the agent of job {j['id']}: its session ended")
    click.echo(f"sent to the agent of job {j['id']}", err=True)



@agent.command("show")
@click.argument("job_id", metavar="ID")
@output_option
@click.pass_obj
def show_cmd(app, job_id: str, output: str) -> None:
    """The job's agent: its step, session, status and why it waits."""
    j = find_job(app.existing_store(), job_id)
    a = j.get("agent")
    if not a:
        raise OjError(f"job {j['id']} has run no agent; see 'oj agent list'")
    current = current_agent(j) is not None or bool(a.get("suspended"))
    status = ("suspended" if a.get("suspended") else
              agent_status(app, j, a, time.time()) if current else "ended")
    row = {"job": j["id"], "step": a["step"], "visit": a.get("visit"), "agent": a.get("agent"),
           "status": status, "session": a["session"], "socket": a["socket"],
           "restarts": a.get("start"), "started_at": a.get("started_at"),
           "reason": j.get("waiting_reason") if j["status"] == "waiting" else None,
           "transcript": a.get("suspended")}
    if output == "json":
        emit_json(row)
        return
    for key, value in row.items():
        if value is not None:
            click.echo(f"{key + ':':12}{value}")


@agent.command("logs")
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Print new lines as the agent writes them.")
@click.pass_obj
def logs_cmd(app, job_id: str, follow: bool) -> None:
    """The agent's transcript: all its session holds (or the one kept at a suspend)."""
    store = app.existing_store()
    j = find_job(store, job_id)
    a = j.get("agent")
    if not a:
        raise OjError(f"job {j['id']} has run no agent; see 'oj agent list'")
    text = tmux.transcript(a["socket"], a["session"])
    if text is None and a.get("suspended"):
        try:
            with open(a["suspended"], encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            text = None
    if text is None:
        raise OjError(f"the agent of job {j['id']} has exited; its last screen is in "
                      f"'oj job logs {j['id']}'")
    lines = text.rstrip("\n").splitlines()
    for line in lines:
        click.echo(line)
    while follow:  # the pane's history only grows; what is new is past the lines printed
        time.sleep(FOLLOW_POLL)
        text = tmux.transcript(a["socket"], a["session"])
        if text is None:
            return
        now = text.rstrip("\n").splitlines()
        # the last screen line may have been redrawn: print from where the two differ
        same = 0
        while same < min(len(lines), len(now)) and lines[same] == now[same]:
            same += 1
        for line in now[same:]:
            click.echo(line)
        lines = now


FOLLOW_POLL = 0.5


@agent.command("kill")
@click.argument("job_id", metavar="ID")
@click.pass_obj
def kill_cmd(app, job_id: str) -> None:
    """End the agent's session: its on_dead action runs."""
    j, a = _live_agent(app, job_id)
    tmux.kill(a["socket"], a["session"])
    click.echo(f"killed the agent of job {j['id']}; its on_dead action runs", err=True)


@agent.command("suspend")
@click.argument("job_id", metavar="ID")
@click.pass_context
def suspend_cmd(ctx: click.Context, job_id: str) -> None:
    """Suspend the agent's job (oj job suspend)."""
    from oj.commands.job import suspend_cmd as job_suspend  # lazy: as job.py's own

    ctx.invoke(job_suspend, job_id=job_id)


@agent.command("resume")
@click.argument("job_id", metavar="ID")
@click.pass_context
def resume_cmd(ctx: click.Context, job_id: str) -> int:
    """Start a suspended agent again, with its transcript (oj job resume)."""
    from oj.commands.job import resume_cmd as job_resume  # lazy: as job.py's own

    return ctx.invoke(job_resume, job_id=job_id, vars_=(), message=None, detach=True)


@agent.command("wait")
@click.argument("job_id", metavar="ID")
@click.option("--timeout", metavar="DURATION", help="Give up after this long (exit 2).")
@click.pass_obj
def wait_cmd(app, job_id: str, timeout: str | None) -> int:
    """Wait until the agent is idle, waits for a person, or has exited."""
    from ojd.duration import DurationError, parse_duration  # lazy: only this command

    try:
        limit = parse_duration(timeout) if timeout else None
    except DurationError as e:
        raise OjError(f"--timeout: {e}") from None
    store = app.existing_store()
    j = find_job(store, job_id)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        j = store.refresh().jobs[j["id"]]
        a = current_agent(j)
        status = "ended" if a is None else agent_status(app, j, a, time.time())
        if status != "running":
            click.echo(f"job {j['id']}: agent {status}", err=True)
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            click.echo(f"job {j['id']}: agent still running after {timeout}", err=True)
            return 2
        time.sleep(FOLLOW_POLL)


@agent.command("prune")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@click.pass_obj
def prune_cmd(app, dry_run: bool) -> None:
    """End the tmux servers left by jobs that ended, and remove their transcripts."""
    from ojd.agents.step import ended_agents  # lazy: only this command

    store = app.existing_store()
    sockets = ended_agents(store.state)
    transcripts = [a["suspended"] for j in store.state.jobs.values()
                   if (a := j.get("agent")) and a.get("suspended")
                   and j["status"] not in LIVE_JOB_STATES and os.path.exists(a["suspended"])]
    for socket in sockets:
        if not dry_run:
            tmux.end_job(socket)
        click.echo(f"{'would end' if dry_run else 'ended'} agent server {socket}")
    for path in transcripts:
        if not dry_run:
            os.unlink(path)
        click.echo(f"{'would remove' if dry_run else 'removed'} transcript {path}")
    if not sockets and not transcripts:
        click.echo("nothing to prune", err=True)
