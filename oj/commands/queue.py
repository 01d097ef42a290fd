"""``oj queue``: push, list, show, drop, retry."""

from __future__ import annotations

import json

import click

from oj.output import ago, emit_json, output_option, table

ITEM_FIELDS = ("id", "queue", "status", "data", "attempts", "created_at", "updated_at",
               "retry_at", "job", "error", "project")
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
@click.pass_obj
def push_cmd(app, queue_name: str, item: str | None, variables: tuple[str, ...],
             start: bool) -> int:
    """Queue an item, e.g. oj queue push merges '{"branch": "fix-1"}' (JSON - reads it from
    stdin). Prints its id."""
    from oj.push import do_push

    return do_push(queue_name, item, variables, app.project_override, start)


def item_json(item: dict) -> dict:
    return {k: item.get(k) for k in ITEM_FIELDS}


@queue.command("list")
@click.argument("queue_name", required=False, metavar="[QUEUE]")
@click.option("--status", type=click.Choice(ITEM_STATUSES), help="Only items in this state.")
@output_option
@click.pass_obj
def list_cmd(app, queue_name: str | None, status: str | None, output: str) -> None:
    """List queue items of this project (every project's, outside one)."""
    project = app.project_or_none()
    if queue_name is not None and project is not None:
        from ojd.queues import queue_named

        queue_named(app.runbook, queue_name)
    items = app.reader_store.state.queue_items(project, queue_name)
    if status:
        items = [i for i in items if i["status"] == status]
    items.sort(key=lambda i: i["seq"])
    if output == "json":
        emit_json([item_json(i) for i in items])
        return
    rows = [(i["id"], i["queue"], i["status"], i["attempts"], ago(i["created_at"]),
             _short(json.dumps(i["data"], separators=(",", ":")))) for i in items]
    table(("ID", "QUEUE", "STATUS", "ATTEMPTS", "CREATED", "DATA"), rows,
          empty="no items" + (f" in queue '{queue_name}'" if queue_name else ""))


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@queue.command("show")
@click.argument("item_id", metavar="ID")
@output_option
@click.pass_obj
def show_cmd(app, item_id: str, output: str) -> None:
    """Show one item (a unique prefix of its id is enough)."""
    from ojd.queues import find_item

    item = find_item(app.existing_store(), item_id, app.project_or_none())
    if output == "json":
        emit_json(item_json(item))
        return
    for key in ITEM_FIELDS:
        value = item.get(key)
        if key.endswith("_at") and value:
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
    from ojd.queues import drop, queue_named

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
    from ojd.errors import UsageError
    from ojd.queues import queue_named, retry

    if (item_id is None) == (not all_dead):
        raise UsageError("give an item ID or --all-dead (not both)")
    queue_named(app.runbook, queue_name)
    ids = retry(app.store, app.root, queue_name, item_id, all_dead)
    click.echo(f"retrying {len(ids)} item(s)" + (f": {', '.join(ids)}" if ids else ""))
