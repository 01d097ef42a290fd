"""``oj workspace``: list the kept job workspaces, prune old ones."""

from __future__ import annotations

import time

import click

from oj.commands.job import older_than_option, parse_age
from oj.output import ago, emit_json, output_option, table
from ojd import prune
from ojd.errors import escaped


@click.group()
def workspace() -> None:
    """List job workspaces, prune old ones."""


@workspace.command("list", short_help="List job workspaces.")
@output_option
@click.pass_obj
def list_cmd(app, output: str) -> None:
    """The directories under the state dir's workspaces/, with the job that used each last."""
    store = app.reader_store
    project = app.project_or_none()
    found = [ws for ws in prune.scan_workspaces(store.state, store.root)
             if prune.in_scope(ws, project)]
    now = time.time()
    if output == "json":
        emit_json([_fields(ws) for ws in found])
        return
    rows = []
    for ws in found:
        j = ws.job
        status = ws.status if ws.kind == "dir" else ws.kind
        if ws.trash:
            status = "pruning"
        rows.append((j["id"] if j else None, j["pipeline"] if j else None, status,
                     escaped(ws.path), _size(prune.disk_usage(ws.path))
                     if ws.kind == "dir" else None, ago(ws.last_used, now)))
    table(("JOB", "PIPELINE", "STATUS", "PATH", "SIZE", "AGE"), rows, empty="no workspaces")


def _fields(ws) -> dict:
    j = ws.job
    return {"path": ws.path, "job": j["id"] if j else None,
            "pipeline": j["pipeline"] if j else None, "status": ws.status, "kind": ws.kind,
            "project": j["project"] if j else None, "jobs": [x["id"] for x in ws.jobs],
            "size": prune.disk_usage(ws.path) if ws.kind == "dir" else None,
            "last_used": ws.last_used}


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


@workspace.command("prune", short_help="Remove workspaces of old finished jobs.")
@older_than_option("7d")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.pass_obj
def prune_cmd(app, older_than: str, dry_run: bool) -> int:
    """Remove workspaces whose jobs are all finished (or no longer recorded) and were last
    used long enough ago. A running or waiting job's workspace is never removed."""
    age = parse_age(older_than)
    project = app.project_or_none()
    store = app.reader_store
    if not hasattr(store, "transaction"):
        click.echo("nothing to prune")
        return 0
    now = time.time()
    remove, skipped, problems = prune.prune_workspaces(store, now, age, project, dry_run)
    for ws in remove:
        j = ws.job
        whose = f"job {j['id']} ({ws.status})" if j else "no recorded job"
        if ws.trash:
            whose = "left by an earlier prune"
        click.echo(f"{'would remove' if dry_run else 'removed'} {escaped(ws.path)}: {whose}")
    for ws, why in skipped:
        click.echo(f"skipped {escaped(ws.path)}: {why}", err=True)
    for line in problems:
        click.echo(f"oj: {line}", err=True)
    n = len(remove)
    click.echo(f"{'would prune' if dry_run else 'pruned'} {n} workspace{'s' if n != 1 else ''}")
    return 1 if problems else 0
