"""``oj queue``: push, list, logs, show, drop, retry, drain, prune, done, fail."""

from __future__ import annotations

import json
import time

import click

from oj.output import ago, emit_json, output_option, table
from ojd import paths
from ojd import project as projects
from ojd.duration import format_duration
from ojd.errors import OjError, UsageError, escaped, quoted
from ojd.events import QUEUE_COMPLETED
from ojd.queue_maintenance import drain, known_queue, overview, prune, settle
from ojd.queues import drop, find_item, queue_named, retry, set_paused
from ojd.wake import not_woken, wake_queue_workers

ITEM_FIELDS = ("id", "queue", "status", "data", "attempts", "created_at", "updated_at",
               "priority", "due", "retry_at", "job", "error", "project")
ITEM_STATUSES = ("pending", "active", "completed", "failed", "dead")


@click.group()
def queue() -> None:
    """Push to, list and manage queues."""


@queue.command("push")
@click.argument("queue_name", metavar="QUEUE")
@click.argument("item", required=False, metavar="[JSON]")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Set one var of the item (repeatable).")
@click.option("--start", is_flag=True,
              help="Start the queue's workers that do not run (as 'oj worker start').")
@click.option("--wait", is_flag=True,
              help="Wait for the item's job; exit 0 done, 1 failed, 4 cancelled or dropped, "
                   "3 when no worker runs to take it.")
@click.option("--follow", is_flag=True, help="Wait (as --wait) and print the job's log as it runs.")
@click.option("--in", "within", metavar="DURATION",
              help="Not taken before this long from now, e.g. 10m.")
@click.option("--at", metavar="TIME",
              help="Not taken before this time: 2026-12-24T09:00 (local), with an offset "
                   "or Z; a past time runs now.")
@click.option("--priority", type=int, metavar="N",
              help="Taken before items of a lower priority (default: the queue's, 0).")
@click.option("--lines", metavar="FILE|-",
              help="Queue one item per line of JSON objects (- reads stdin), in one append.")
@click.pass_obj
def push_cmd(app, queue_name: str, item: str | None, variables: tuple[str, ...],
             start: bool, wait: bool, follow: bool, within: str | None,
             at: str | None, priority: int | None, lines: str | None) -> int:
    """Queue an item, e.g. oj queue push merges '{"branch": "fix-1"}' (JSON - reads it from
    stdin). Prints its id."""
    # lazy: the push's own modules (wake-ups, the last good runbook), off oj queue list
    from oj.push import do_push
    from ojd.due import parse_due

    due = parse_due(within, at, time.time())
    if lines is not None:
        if item is not None or start or wait or follow:
            raise UsageError("--lines takes the items from its lines: give no JSON argument, "
                             "--start, --wait or --follow with it")
        # lazy: as do_push
        from oj.push import do_push_lines

        return do_push_lines(queue_name, lines, variables, app.project_override, due,
                             priority)
    return do_push(queue_name, item, variables, app.project_override, start,
                   wait or follow, follow, due, priority)


def item_json(item: dict) -> dict:
    return {**{k: item.get(k) for k in ITEM_FIELDS}, "priority": item.get("priority", 0)}


@queue.command("list", short_help="List the queues and their counts, or items.")
@click.argument("queue_name", required=False, metavar="[QUEUE]")
@click.option("--items", "all_items", is_flag=True,
              help="Items of every queue (without QUEUE), not the queues.")
@click.option("--status", type=click.Choice(ITEM_STATUSES),
              help="Only items in this state (lists items, as --items).")
@output_option
@click.pass_obj
def list_cmd(app, queue_name: str | None, all_items: bool, status: str | None,
             output: str) -> None:
    """List the queues of this project with their counts (every project's, outside one);
    with QUEUE (or --items) its items instead."""
    project = app.project_or_none()
    if queue_name is None and not all_items and status is None:
        _list_queues(app, project, output)
        return
    if queue_name is not None and project is not None:
        queue_named(app.runbook, queue_name)
    items = app.reader_store.state.queue_items(project, queue_name)
    if status:
        items = [i for i in items if i["status"] == status]
    items.sort(key=lambda i: i["seq"])
    if output == "json":
        emit_json([item_json(i) for i in items])
        return
    now = time.time()
    rows = [(i["id"], i["queue"], i["status"], i.get("priority", 0), i["attempts"],
             ago(i["created_at"]), _when(i, now),
             _short(json.dumps(i["data"], separators=(",", ":")))) for i in items]
    table(("ID", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED", "DUE", "DATA"), rows,
          empty="no items" + (f" in queue '{queue_name}'" if queue_name else ""))


def _list_queues(app, project: str | None, output: str) -> None:
    runbook = None
    if project is not None:
        try:
            runbook = app.runbook
        except OjError as e:  # an operator still sees the queues while a runbook is broken
            click.echo(f"oj: warning: the runbook is invalid: {str(e).splitlines()[0]}; "
                       "listing the queues recorded in the state", err=True)
    rows = overview(app.reader_store.state, runbook, project)
    if output == "json":
        emit_json(rows)
        return
    table(("PROJECT", "NAME", "TYPE", "PENDING", "ACTIVE", "DEAD", "WORKERS"),
          [(escaped(r["project"]), escaped(r["name"]) + (" (paused)" if r["paused"] else ""),
            r["type"] or "-", r["pending"], r["active"], r["dead"],
            ", ".join(r["workers"]) or "-") for r in rows],
          empty="no queues" + ("" if project is None else " in this project's runbooks"))


def _when(item: dict, now: float) -> str:
    """When a waiting item may be taken: a delayed one's due time, a failed one's retry."""
    if item["status"] not in ("pending", "failed"):
        return "-"
    at = item.get("retry_at") if item["status"] == "failed" else item.get("due")
    if not at or at <= now:
        return "now"
    return "in " + format_duration(at - now)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@queue.command("logs")
@click.argument("queue_name", metavar="QUEUE")
@click.pass_obj
def logs_cmd(app, queue_name: str) -> None:
    """Print the log lines of the jobs of the queue's items, oldest job first, each line
    after its job's id."""
    # lazy: only this command reads job logs
    from ojd.queue_logs import jobs_of_queue, log_lines

    project = app.project_or_none()
    if project is not None:
        queue_named(app.runbook, queue_name)
    store = app.reader_store
    jobs = jobs_of_queue(store.state, project, queue_name)
    if not jobs:
        click.echo(f"no jobs of queue {quoted(queue_name)} items are recorded", err=True)
    out = click.get_binary_stream("stdout")
    for job_id, line in log_lines(store.root, jobs):
        if line is None:
            click.echo(f"{job_id} (no log on this host)", err=True)
        else:
            out.write(job_id.encode() + b" " + line + b"\n")
    out.flush()


@queue.command("show")
@click.argument("item_id", metavar="ID")
@output_option
@click.pass_obj
def show_cmd(app, item_id: str, output: str) -> None:
    """Show one item (a unique prefix of its id is enough)."""
    item = find_item(app.existing_store(), item_id, app.project_or_none())
    if output == "json":
        emit_json(item_json(item))
        return
    fields = item_json(item)
    for key in ITEM_FIELDS:
        value = fields[key]
        if key in ("due", "retry_at") and value and value > time.time():
            value = f"in {format_duration(value - time.time())}"
        elif (key.endswith("_at") or key == "due") and value:
            value = f"{ago(value)}"
        elif key == "data":
            value = json.dumps(value)
        click.echo(f"{key + ':':<12} {'-' if value is None else value}")


@queue.command("drop")
@click.argument("queue_name", metavar="QUEUE")
@click.argument("item_id", metavar="ID")
@click.pass_obj
def drop_cmd(app, queue_name: str, item_id: str) -> None:
    """Remove an item that is not being worked on."""
    queue_named(app.runbook, queue_name)
    item = drop(app.store, app.root, queue_name, item_id)
    click.echo(f"dropped {item['id']}")


@queue.command("retry")
@click.argument("queue_name", metavar="QUEUE")
@click.argument("item_id", required=False, metavar="[ID]")
@click.option("--all-dead", is_flag=True, help="Retry every dead item of the queue.")
@click.pass_obj
def retry_cmd(app, queue_name: str, item_id: str | None, all_dead: bool) -> None:
    """Put a failed or dead item back to pending, its attempts reset."""
    if (item_id is None) == (not all_dead):
        raise UsageError("give an item ID or --all-dead (not both)")
    queue_named(app.runbook, queue_name)
    ids = retry(app.store, app.root, queue_name, item_id, all_dead)
    click.echo(f"retrying {len(ids)} item(s)" + (f": {', '.join(ids)}" if ids else ""))
    if ids:  # as a push does: the queue's workers take them now, not at their next poll
        _wake_workers(app, queue_name)


def _wake_workers(app, queue_name: str) -> None:
    """Wake the queue's workers, as a push does; say so when none of them runs to wake."""
    defined = [w.name for w in app.runbook.workers.values() if w.queue == queue_name]
    woken, idle = wake_queue_workers(app.store, app.root, queue_name, defined)
    if idle and not woken:
        click.echo(f"oj: {not_woken(idle, app.store.root, app.root)}", err=True)


@queue.command("pause", short_help="Stop every host taking the queue's items.")
@click.argument("queue_name", metavar="QUEUE")
@click.pass_obj
def pause_cmd(app, queue_name: str) -> None:
    """Stop every worker, on every host, taking items of QUEUE; pushes are still accepted
    and jobs already running go on. 'oj queue resume QUEUE' undoes it."""
    known_queue(app.runbook, app.root, queue_name, lambda: app.store.state)
    if set_paused(app.store, app.root, queue_name, True):
        click.echo(f"paused queue {quoted(queue_name)}: no worker takes its items until "
                   f"'oj queue resume {escaped(queue_name)}'")
    else:
        click.echo(f"queue {quoted(queue_name)} is already paused")


@queue.command("resume", short_help="Take a paused queue's items again.")
@click.argument("queue_name", metavar="QUEUE")
@click.pass_obj
def resume_cmd(app, queue_name: str) -> None:
    """Let workers take the items of a paused QUEUE again, and wake them."""
    known_queue(app.runbook, app.root, queue_name, lambda: app.store.state)
    if not set_paused(app.store, app.root, queue_name, False):
        click.echo(f"queue {quoted(queue_name)} is not paused")
        return
    click.echo(f"resumed queue {quoted(queue_name)}")
    _wake_workers(app, queue_name)


@queue.command("drain", short_help="Drop every item still waiting to be taken.")
@click.argument("queue_name", metavar="QUEUE")
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; drop nothing.")
@output_option
@click.pass_obj
def drain_cmd(app, queue_name: str, dry_run: bool, output: str) -> None:
    """Drop every item of QUEUE still waiting to be taken: pending ones and failed ones
    waiting for their retry. Active items stay with their jobs."""
    known_queue(app.runbook, app.root, queue_name, lambda: app.store.state)
    items = drain(app.store, app.root, queue_name, dry_run)
    if output == "json":
        emit_json({"dry_run": dry_run, "queue": queue_name,
                   "items": [item_json(i) for i in items]})
        return
    verb = "would drop" if dry_run else "dropped"
    for i in items:
        click.echo(f"{verb} {i['id']} ({i['status']}) "
                   f"{_short(json.dumps(i['data'], separators=(',', ':')))}")
    n = len(items)
    click.echo(f"{'would drain' if dry_run else 'drained'} {n} item{'s' if n != 1 else ''} "
               f"from queue {quoted(queue_name)}")


@queue.command("prune", short_help="Remove old completed and dead items.")
@click.argument("queue_name", required=False, metavar="[QUEUE]")
@click.option("--older-than", metavar="DURATION",
              help="Only items settled at least this long ago.  [default: 12h]")
@click.option("--all", "any_age", is_flag=True,
              help="Completed and dead items of any age.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@output_option
@click.pass_obj
def prune_cmd(app, queue_name: str | None, older_than: str | None, any_age: bool,
              dry_run: bool, output: str) -> None:
    """Remove completed and dead items from the state: of QUEUE, else of every queue of this
    project (of every project, outside one)."""
    from oj.commands.job import parse_age  # lazy: the job commands, off oj queue list

    if any_age and older_than is not None:
        raise UsageError("give --older-than or --all, not both")
    age = None if any_age else parse_age(older_than or "12h")
    if queue_name is not None:
        project = app.root
        known_queue(app.runbook, project, queue_name, lambda: app.reader_store.state)
    else:
        project = app.project_or_none()
    store = app.reader_store
    if not hasattr(store, "transaction"):  # no state dir: nothing was ever recorded
        items = []
    else:
        items = prune(store, project, queue_name, time.time(), age, dry_run)
    if output == "json":
        emit_json({"dry_run": dry_run, "items": [item_json(i) for i in items]})
        return
    verb = "would remove" if dry_run else "removed"
    for i in items:
        click.echo(f"{verb} {i['id']} from queue {quoted(i['queue'])} ({i['status']}, settled "
                   f"{ago(i['updated_at'])})")
    n = len(items)
    click.echo(f"{'would prune' if dry_run else 'pruned'} {n} item{'s' if n != 1 else ''}")


@queue.command("done", short_help="Complete an active item whose job is gone.")
@click.argument("item_id", metavar="ID")
@click.pass_obj
def done_cmd(app, item_id: str) -> None:
    """Mark completed an active item whose job is gone (finished, no longer recorded, or its
    process dead). Refused while its job runs."""
    _settle(app, item_id, "done")


@queue.command("fail", short_help="Fail an active item whose job is gone.")
@click.argument("item_id", metavar="ID")
@click.pass_obj
def fail_cmd(app, item_id: str) -> None:
    """Mark failed an active item whose job is gone: it is retried after the queue's
    cooldown, or goes dead when its attempts are used up, as when a job fails."""
    _settle(app, item_id, "failed")


def _settle(app, item_id: str, outcome: str) -> None:
    project = app.project_or_none()
    store = app.existing_store()
    runbook = None  # only a failure needs it: its queue's retry policy
    if outcome == "failed":
        runbook = app.runbook if project is not None else \
            _runbook_of(find_item(store, item_id)["project"])
    item, event, fate = settle(store, runbook, project, item_id, outcome)
    if event["type"] == QUEUE_COMPLETED:
        became = "completed"
    elif event.get("dead"):
        became = f"dead (no retries left); bring it back with 'oj queue retry " \
                 f"{escaped(item['queue'])} {item['id']}'"
    else:
        wait = event["retry_at"] - event.get("ts", event["retry_at"])
        became = "failed; retried " + (f"in {format_duration(wait)}" if wait >= 1 else
                                       "by its worker's next poll")
    click.echo(f"{item['id']} in queue {quoted(item['queue'])}: {became} ({fate})")


def _runbook_of(root: str):
    """The runbook of an item's project, for its queue's retry policy (outside a project);
    None when it cannot be read: the item then goes dead."""
    try:
        return projects.load(root, paths.cache_dir(paths.state_dir()))
    except (OjError, OSError):
        return None
