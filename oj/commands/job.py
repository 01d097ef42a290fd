"""``oj job``: list, show, logs, and acting on one: cancel, resume, rerun, dismiss."""

from __future__ import annotations

import json
import os
import time

import click

from oj import joblisting
from oj.output import ago, emit_json, output_option, table
from ojd import paths, wake
from ojd.duration import DurationError, format_duration, parse_duration
from ojd.errors import OjError, UsageError, escaped, quoted
from ojd.identity import elsewhere
from ojd.notify import one_line
from ojd.project import full_name
from ojd.state import LIVE_JOB_STATES

JOB_FIELDS = ("id", "name", "pipeline", "status", "step", "step_status", "item", "worker",
              "cwd", "created_at", "updated_at", "finished_at", "error", "project", "vars",
              "locals", "history", "waiting_reason", "process", "dismissed", "rerun_of",
              "decision")
JOB_STATUSES = ("running", "waiting", "done", "failed", "cancelled")
# job names come from item data through a pipeline's `name` template: the table keeps its shape
NAME_WIDTH = 32


def find_job(store, prefix: str) -> dict:
    matches = store.state.find(store.state.jobs, prefix)
    if not matches:
        raise OjError(f"no job with id {quoted(prefix)}; see 'oj job list'")
    if len(matches) > 1:
        raise OjError(f"job id {quoted(prefix)} is ambiguous; give more characters")
    return matches[0]


@click.group()
def job() -> None:
    """List jobs, show one, follow its logs, wait for them, prune old ones."""


@job.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this state.")
@click.option("--worker", metavar="NAME", help="Only jobs this worker started.")
@click.option("--name", metavar="PATTERN",
              help="Only jobs whose name holds PATTERN (a glob when it has * ? or [).")
@click.option("-n", "last", type=click.IntRange(min=1), metavar="N", help="Only the newest N.")
@output_option
@click.pass_obj
def list_cmd(app, status: str | None, worker: str | None, name: str | None, last: int | None,
             output: str) -> None:
    """Jobs of this project (every project's, outside one), oldest first; a running job's
    step as k/n of its pipeline and how long it has been in it."""
    project = app.project_or_none()
    jobs = [j for j in app.reader_store.state.jobs.values()
            if (project is None or j["project"] == project)
            and (status is None or j["status"] == status)]
    jobs.sort(key=lambda j: j["created_at"])
    jobs = joblisting.select(jobs, worker=worker, name=name, last=last)
    runbook = None
    if project is not None and jobs:
        try:
            runbook = app.runbook
        except OjError:  # an invalid runbook: the steps show without their place
            pass
    now = time.time()
    places = {j["id"]: joblisting.step_position(j, joblisting.pipeline_of(runbook, j))
              for j in jobs}
    if output == "json":
        emit_json([{**{k: j.get(k) for k in JOB_FIELDS}, "step_number": places[j["id"]][0],
                    "step_count": places[j["id"]][1],
                    "in_step": joblisting.in_step(j, now)} for j in jobs])
        return
    rows = []
    for j in jobs:
        took = joblisting.in_step(j, now)
        status_cell = f"waiting: decision {j['decision']}" \
            if j["status"] == "waiting" and j.get("decision") else j["status"]
        rows.append((j["id"], short_name(j["name"]), status_cell,
                     joblisting.step_cell(j, *places[j["id"]]),
                     None if took is None else format_duration(took), j["worker"],
                     ago(j["created_at"])))
    table(("ID", "NAME", "STATUS", "STEP", "IN STEP", "WORKER", "CREATED"), rows,
          empty="no jobs")


@job.command("show")
@click.argument("job_id", metavar="ID")
@output_option
@click.pass_obj
def show_cmd(app, job_id: str, output: str) -> None:
    """One job and its steps."""
    store = app.existing_store()
    j = find_job(store, job_id)
    if output == "json":
        emit_json({k: j.get(k) for k in JOB_FIELDS})
        return
    for key in ("id", "name", "pipeline", "status", "item", "worker", "cwd", "error"):
        click.echo(f"{key + ':':<10} {j.get(key) or '-'}")
    if j["status"] == "waiting":
        how = f"oj decision show {j['decision']}" if j.get("decision") else \
            f"oj job resume {j['id']} -m ..."
        click.echo(f"{'waiting:':<10} {j.get('waiting_reason') or '-'} (answer: {how})")
    click.echo(f"{'created:':<10} {ago(j['created_at'])}")
    if j.get("dismissed"):
        click.echo(f"{'dismissed:':<10} {ago(j['dismissed'])}")
    if j.get("rerun_of"):
        click.echo(f"{'rerun of:':<10} {j['rerun_of']}")
    reruns = [r["id"] for r in store.state.jobs.values() if r.get("rerun_of") == j["id"]]
    if reruns:
        click.echo(f"{'rerun as:':<10} {', '.join(reruns)}")
    click.echo("vars:" if j["vars"] else "vars:     -")
    # each by the name a template gives it: var.NAME, local.NAME, invoke.dir
    for name, value in j["vars"].items():
        click.echo(f"  var.{escaped(name)} = {value_line(value)}")
    if j.get("locals"):
        click.echo("locals:")
        for name, value in j["locals"].items():
            click.echo(f"  local.{escaped(name)} = {value_line(value)}")
    else:  # none recorded: none defined, or the job has not reached its first step
        click.echo("locals:   -" if j["history"] or j.get("locals_done")
                   or j["status"] != "running" else "locals:   - (not evaluated yet)")
    click.echo(f"invoke:\n  invoke.dir = {escaped(j.get('invoke') or j['cwd'])}")
    click.echo("steps:")
    for h in j["history"]:
        took = f"{h['finished_at'] - h['started_at']:.1f}s" if h["finished_at"] else "running"
        verdict = "-" if h["exit"] is None else ("ok" if h["exit"] == 0 else f"exit {h['exit']}")
        # with a shared state, where it ran: its output is in that host's log
        on = f"  on {escaped(h['host'])}" if store.shared and h.get("host") else ""
        click.echo(f"  {h['step']:<16} {verdict:<8} {took:<8}{on}".rstrip())


@job.command("logs")
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing until the job ends; exit with its outcome.")
@click.pass_obj
def logs_cmd(app, job_id: str, follow: bool) -> int:
    """Print a job's log (every step's output). With -f, follow it while the job runs or
    waits for a person, and exit as `oj run` does: 0 done, 1 failed (or its process
    stopped without ending it), 4 cancelled."""
    store = app.existing_store()
    j = find_job(store, job_id)
    # a job log is a file of the host that ran the steps: with a shared state, steps of
    # this job may have run (or run now) on another host
    others = other_hosts(j) if store.shared else []
    path = paths.job_log(store.root, j["id"])
    if others:
        where = ", ".join(escaped(h) for h in others)
        where = f"host{'s' if len(others) > 1 else ''} {where}"
        if not os.path.exists(path):
            raise OjError(f"the log of job {j['id']} is on {where}: run 'oj job logs "
                          f"{j['id']}' there")
        click.echo(f"oj: steps of job {j['id']} also ran on {where}: their output is in the "
                   "log there", err=True)
    if follow:  # as `oj run` shows its job, until it ends
        # lazy: the run command and the job runners (~40 modules); oj status imports this
        # module for short_name
        from oj.commands.run import follow_job

        return follow_job(app, j["id"])
    if not os.path.exists(path):
        click.echo(f"job {j['id']} has no output yet", err=True)
    else:
        with open(path, "rb") as f:
            click.echo(f.read().decode(errors="replace"), nl=False)
    return 0


def other_hosts(j: dict) -> list[str]:
    """The hosts other than this one that ran steps of the job, or run its process now."""
    found = [elsewhere({"host": h.get("host")}) for h in j["history"]]
    found.append(elsewhere(j.get("process")))
    return list(dict.fromkeys(h for h in found if h))


@job.command("cancel")
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_obj
def cancel_cmd(app, job_ids: tuple[str, ...]) -> None:
    """Cancel jobs: stop what runs of them; a worker job's item goes dead ("cancelled"),
    so `oj queue retry` can bring it back."""
    from ojd.runners import control  # lazy: as in logs_cmd, off oj status

    store = app.existing_store()
    jobs = [find_job(store, prefix) for prefix in job_ids]  # all ids valid before acting
    for j in jobs:
        control.cancel(store, j["id"], cleanup=True)
        item = f"; item {j['item']} is dead, 'oj queue retry' brings it back" \
            if j.get("item") else ""
        click.echo(f"job {j['id']} cancelled{item}")


@job.command("resume")
@click.argument("job_id", metavar="ID")
@click.option("--var", "vars_", multiple=True, metavar="KEY=VALUE",
              help="Set a var of the job before it runs on (repeatable).")
@click.option("-m", "--message", help="Answer a job waiting on its agent: typed into it.")
@click.option("--detach", "-d", is_flag=True, help="Do not follow its output.")
@click.pass_obj
def resume_cmd(app, job_id: str, vars_: tuple[str, ...], message: str | None,
               detach: bool) -> int:
    """Run a failed, cancelled or interrupted job on from the step it stopped at; answer
    a job waiting on its agent (-m)."""
    # lazy: the run command and the job runners, off oj status (as in logs_cmd)
    from oj.commands.run import follow_job, keeps_running, start_job
    from ojd.runners import control
    from ojd.runners.liveness import alive

    values = {}
    for pair in vars_:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--var {escaped(pair)}: expected KEY=VALUE")
        values[key] = value
    j = find_job(app.store, job_id)
    if message is None and j["status"] == "waiting" and (j.get("agent") or {}).get("suspended"):
        message = control.RESUME_MESSAGE  # a suspended agent starts again with its transcript
    if message is not None:
        gone = not alive(j.get("process"))  # before the answer makes the job run again
        control.answer(app.store, j["id"], message)
        if gone:
            click.echo(f"job {j['id']} answered; its runner is gone: oj job resume {j['id']}",
                       err=True)
        else:
            click.echo(f"job {j['id']} answered; it goes on", err=True)
        return 0
    if j["status"] == "done":
        raise OjError(f"job {j['id']} is done; nothing to resume")
    if j["status"] in LIVE_JOB_STATES:
        if alive(j.get("process")):
            raise OjError(f"job {j['id']} is still running (process {j['process']['pid']})")
        host = elsewhere(j.get("process"))
        item = app.store.state.items.get(j.get("item") or "")
        if host and item is not None and item.get("lease"):
            raise OjError(f"job {j['id']} runs on host {escaped(host)} "
                          f"(process {j['process']['pid']}); it is resumed elsewhere only "
                          "once its lease expires")
        if host:  # nothing expires: the one who knows that host is gone says so
            raise OjError(f"job {j['id']} runs on host {escaped(host)} (process "
                          f"{j['process']['pid']}); if that host is gone for good: "
                          f"oj job cancel {j['id']}, then oj job resume {j['id']} runs it "
                          "on here from its step")
        if item is not None and (item["status"] != "active" or item.get("job") != j["id"]):
            # its lease expired: the item went back to its queue, and whichever worker
            # takes it resumes the job; a process started here would run beside that one
            raise OjError(f"job {j['id']}'s item {item['id']} went back to queue "
                          f"{quoted(item['queue'])} when its lease expired: a worker of "
                          "that queue resumes the job when it takes the item")
        if values:
            raise UsageError("--var applies to a failed or cancelled job")
    else:
        j = control.reopen(app.store, j["id"], values)
    if j["worker"]:
        full = full_name(j["project"], j["worker"])  # its record's and unit's name
        where = "" if wake.wake_worker(app.store, full) else \
            f"; it is not running: oj worker start {j['worker']}"
        click.echo(f"job {j['id']} resumes at step '{j.get('next') or j['step'] or '-'}' "
                   f"in worker '{j['worker']}'{where}", err=True)
        return 0
    try:  # a Ctrl-C held back while the process starts: the job runs on (as in oj run)
        start_job(app, j["id"], replaces=j.get("process"))
        if detach:
            click.echo(j["id"])
            return 0
        return follow_job(app, j["id"])
    except KeyboardInterrupt:
        return keeps_running(j["id"])


@job.command("suspend")
@click.argument("job_id", metavar="ID")
@click.pass_obj
def suspend_cmd(app, job_id: str) -> None:
    """Stop the job's agent, keeping its workspace and transcript; oj job resume goes on."""
    # lazy: job control, off oj status (as in resume_cmd)
    import getpass

    from ojd.runners import control

    j = find_job(app.store, job_id)
    path = control.suspend(app.store, j["id"], getpass.getuser())
    click.echo(f"job {j['id']} suspended; its transcript is in {path}; "
               f"oj job resume {j['id']} starts its agent again", err=True)


@job.command("rerun")
@click.argument("job_id", metavar="ID")
@click.option("--detach", "-d", is_flag=True, help="Print the new job's id and return.")
@click.pass_obj
def rerun_cmd(app, job_id: str, detach: bool) -> int:
    """Run a finished job again from its first step, as a new job with the same vars (an
    item's data, a command's args); the old job stays as it was. Its output is followed
    as `oj run` does, and the exit status is the new job's outcome."""
    # lazy: the run command and the job runners, off oj status (as in logs_cmd)
    from oj.commands.run import cli_owner, launch
    from ojd.queues import new_id
    from ojd.runners.jobs import job_created_event

    store = app.existing_store()
    j = find_job(store, job_id)
    if j["status"] in LIVE_JOB_STATES:
        raise OjError(f"job {j['id']} is {j['status']}; only a finished job is rerun (cancel "
                      f"it first: oj job cancel {j['id']})")
    if j["project"] != app.root:
        raise OjError(f"job {j['id']} is of project {escaped(j['project'])}; rerun it from "
                      "there (or with --project)")
    if app.runbook.pipeline(j["pipeline"]) is None:
        raise OjError(f"job {j['id']}'s pipeline {quoted(j['pipeline'])} is no longer "
                      "defined in the runbook; nothing to rerun it with")
    new = new_id(store.refresh().jobs)
    owner = cli_owner()

    # where it ran (a worker's job: the project, whatever directory its item came from)
    base = j.get("invoke") or os.getcwd() if j.get("workspace") else j["cwd"]

    def create(tx) -> list[dict]:  # the job and its process: one append
        return [job_created_event(tx, store.root, app.runbook, app.root, j["pipeline"],
                                  j["vars"], base, owner=owner, name=j["name"], job_id=new,
                                  rerun_of=j["id"], invoked_from=j.get("invoke"))]

    return launch(app, new, create, j["name"], detach,
                  f"job {new} ({j['pipeline']}) started: a rerun of job {j['id']}")


@job.command("dismiss")
@click.argument("job_ids", nargs=-1, metavar="ID...")
@click.option("--all", "all_", is_flag=True,
              help="Every failed, waiting or cancelled job of this project (every project's, "
                   "outside one).")
@click.pass_obj
def dismiss_cmd(app, job_ids: tuple[str, ...], all_: bool) -> None:
    """Take failed, waiting or cancelled jobs (and their dead items) out of what `oj status`
    says needs a person; they stay in `oj job list` and `oj job show`."""
    from ojd.runners import control  # lazy: as in logs_cmd, off oj status

    if bool(job_ids) == all_:
        raise UsageError("give job ids or --all (not both)")
    if all_:
        project = app.project_or_none()
        store = app.reader_store
        ids = [j["id"] for j in store.state.jobs.values()
               if j["status"] in control.DISMISSIBLE and not j.get("dismissed")
               and (project is None or j["project"] == project)]
        if not ids:
            click.echo("nothing to dismiss")
            return
    else:
        store = app.existing_store()
        ids = list(dict.fromkeys(find_job(store, prefix)["id"] for prefix in job_ids))
    done = control.dismiss(store, ids)
    for job_id in ids:
        click.echo(f"job {job_id} dismissed" + ("" if job_id in done else " already"))


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A name for a table cell: one line, cut to ``width`` with an ellipsis (JSON has it all)."""
    name = escaped(name or "", backslashes=False)
    return name if len(name) <= width else name[: width - 1] + "…"


def value_line(value: object) -> str:
    """A var or local on one line: text as it is (escaped), anything else as compact JSON."""
    if isinstance(value, str):
        return escaped(value, backslashes=False)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- waiting -----------------------------------------------------------------------------------

# exit status of `oj job wait` per outcome, and which outcome wins when several jobs end
# differently: a mistake in the call first, then a verdict, then no verdict yet
WAIT_EXIT = {"done": 0, "failed": 1, "timeout": 2, "not found": 3, "cancelled": 4}
WAIT_WORST = ("not found", "failed", "cancelled", "timeout", "done")


@job.command("wait", short_help="Wait until jobs end.")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", metavar="DURATION",
              help="Give up after this long (30s, 5m, 1h30m); default: wait as long as it takes.")
@click.option("--any", "any_", is_flag=True, help="Return when the first of them ends.")
@click.pass_obj
def wait_cmd(app, job_ids: tuple[str, ...], timeout: str | None, any_: bool) -> int:
    """Wait until jobs end; the exit status says how (0 done, 1 failed, 2 timeout,
    3 not found, 4 cancelled; with several jobs, the worst)."""
    from ojd.prune import is_finished  # lazy: prunes load shutil and more, off oj status

    try:
        limit = None if timeout is None else parse_duration(timeout, allow_zero=True)
    except DurationError as e:
        raise UsageError(f"--timeout: {e}") from None
    deadline = None if limit is None else time.monotonic() + limit
    if not os.path.lexists(paths.state_dir()):  # nothing recorded: no job exists
        for prefix in job_ids:
            click.echo(f"{escaped(prefix)}: not found (no state dir)", err=True)
        return WAIT_EXIT["not found"]
    store = app.existing_store()
    ids: list[str] = []
    for prefix in dict.fromkeys(job_ids):
        matches = store.state.find(store.state.jobs, prefix)
        if len(matches) != 1:
            why = "ambiguous; give more characters" if matches else "no such job"
            click.echo(f"{escaped(prefix)}: not found ({why}; see 'oj job list')", err=True)
            return WAIT_EXIT["not found"]
        ids.append(matches[0]["id"])
    outcomes: dict[str, str] = {}
    while True:
        state = store.state
        for job_id in ids:
            j = state.jobs.get(job_id)
            if j is None:  # pruned, or aged out of the state while we waited
                outcomes.setdefault(job_id, "not found")
            elif is_finished(j):
                outcomes.setdefault(job_id, j["status"])
        if len(outcomes) == len(ids) or (any_ and outcomes):
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
        store.refresh()
    for job_id in ids:
        outcome = outcomes.get(job_id)
        j = store.state.jobs.get(job_id)
        click.echo(_wait_summary(job_id, j, outcome, "--any" if any_ else "timeout"),
                   err=True)
    ended = [outcomes.get(i, "timeout") for i in ids]
    if any_ and outcomes:
        ended = list(outcomes.values())  # the ones that ended decide; the others run on
    worst = min(ended, key=WAIT_WORST.index)
    return WAIT_EXIT[worst]


def _wait_summary(job_id: str, j: dict | None, outcome: str | None, why: str) -> str:
    if j is None:
        return f"{job_id}: not found (no longer recorded)"
    head = f"{job_id} {short_name(j['name'])}:"
    if outcome is None:
        step = f" in step '{j['step']}'" if j.get("step") else ""
        return f"{head} still {j['status']}{step} ({why})"
    took = format_duration(max(0.0, (j["finished_at"] or j["updated_at"]) - j["created_at"]))
    error = f": {one_line(j['error'])}" if j.get("error") else ""
    return f"{head} {outcome} after {took}{error}"


# -- pruning -----------------------------------------------------------------------------------


def older_than_option(default: str):
    return click.option("--older-than", metavar="DURATION", default=default, show_default=True,
                        help="Only what ended at least this long ago (0s: everything ended).")


def parse_age(text: str) -> float:
    try:
        return parse_duration(text, allow_zero=True)
    except DurationError as e:
        raise UsageError(f"--older-than: {e}") from None


@job.command("prune", short_help="Remove old finished jobs, logs and workspaces.")
@older_than_option("7d")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.pass_obj
def prune_cmd(app, older_than: str, dry_run: bool) -> int:
    """Remove finished jobs (done, failed, cancelled) that ended long enough ago: their logs,
    their kept workspaces, and their record in the state."""
    from ojd import prune  # lazy: as in wait_cmd, off oj status
    age = parse_age(older_than)
    project = app.project_or_none()
    store = app.reader_store
    if not hasattr(store, "transaction"):  # no state dir: nothing was ever recorded
        click.echo("nothing to prune")
        return 0
    now = time.time()
    verb = "would remove" if dry_run else "removed"
    plan, problems = prune.prune_jobs(store, now, age, project, dry_run)
    for j in plan.jobs:
        what = [f"log {escaped(plan.logs[j['id']])}"] if j["id"] in plan.logs else []
        if j["id"] in plan.workspaces:
            what.append(f"workspace {escaped(plan.workspaces[j['id']])}")
        click.echo(f"{verb} job {j['id']} {short_name(j['name'])} ({j['status']}, ended "
                   f"{ago(prune.ended_at(j), now)})" + (": " + ", ".join(what) if what else ""))
    for job_id, why in plan.kept:
        click.echo(f"kept the workspace of job {job_id}: {escaped(why)}", err=True)
    for path in plan.orphan_logs:
        click.echo(f"{verb} log {escaped(path)} (its job is no longer recorded)")
    for line in problems:
        click.echo(f"oj: {line}", err=True)
    n = len(plan.jobs)
    click.echo(f"{'would prune' if dry_run else 'pruned'} {n} job{'s' if n != 1 else ''}"
               + (f" and {len(plan.orphan_logs)} orphaned log(s)" if plan.orphan_logs else ""))
    return 1 if problems else 0
