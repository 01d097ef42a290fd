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

