"""``oj state``: check, compact, export, import."""

from __future__ import annotations

import sys

import click

from oj.app import missing_state_dir, state_exists
from oj.output import emit_json, output_option
from ojd import paths
from ojd.errors import OjError
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store, export_state, import_state, state_dir_error
from ojd.store.walsegments import positions


@click.group()
def state() -> None:
    """Check, compact, export and import the state (the WAL directory or PostgreSQL)."""


@state.command("check")
@click.option("--repair", is_flag=True,
              help="Say what would be done about the problems found, then do it.")
@click.option("--yes", is_flag=True, help="With --repair: do it without asking.")
@output_option
def check_cmd(output: str, repair: bool, yes: bool) -> int:
    """Verify every record, that no position is missing, and that the snapshots agree with
    the log; report each problem with its position. Exit 1 on a problem."""
    root = paths.state_dir()
    if not state_exists(root):  # checking must not create it
        raise OjError(missing_state_dir(root))
    try:
        store = Store(root, on_problem=lambda _p: None)  # all of it is in the report
        report = store.check()
    except OSError as e:
        raise state_dir_error(None, e) from None
    if output == "json":
        emit_json({"path": str(store.log.path), "store": "postgresql" if store.url else "wal",
                   "ok": report.ok, "records": report.records,
                   "last_pos": report.last_pos, "segments": report.segments,
                   "snapshot_pos": report.snapshot_pos,
                   "lost": [list(r) for r in report.lost],
                   "acknowledged": [list(r) for r in report.acknowledged],
                   "problems": [p._asdict() for p in report.problems]})
    else:
        if store.url:
            click.echo(f"state:     PostgreSQL {store.log.path}")
            click.echo(f"records:   {report.records} in table oj_events, "
                       f"last position {report.last_pos}")
        else:
            click.echo(f"state dir: {root}")
            click.echo(f"records:   {report.records} in {report.segments} segment(s), "
                       f"last position {report.last_pos}")
        click.echo(f"snapshot:  {report.snapshot_pos if report.snapshot_pos else 'none'}")
        for p in report.problems:
            if p.kind == "lost":
                click.echo(f"problem:   lost: {p.detail}")
                continue
            where = f"position {p.pos}, " if p.pos is not None else ""
            click.echo(f"problem:   {p.kind} in {p.segment} ({where}byte {p.offset}): {p.detail}")
        for first, last in report.acknowledged:
            was = "was" if first == last else "were"
            click.echo(f"history:   {positions([(first, last)])} {was} lost (acknowledged)")
        click.echo("ok" if report.ok else f"{len(report.problems)} problem(s)")
    if not repair:
        return 0 if report.ok else 1
    plan = store.repair_plan(report)
    err = click.get_text_stream("stderr")
    if not plan:
        click.echo("nothing to repair" + ("" if report.ok else
                   ": the problems above need no action (a corrupt record is skipped and "
                   "named; it leaves the log when compaction passes it)"), file=err)
        return 0 if report.ok else 1
    click.echo("repair would:", file=err)
    for what, _do in plan:
        click.echo(f"  - {what}", file=err)
    if not yes:
        if not sys.stdin.isatty():
            click.echo("oj: not repairing without --yes (no terminal to ask)", file=err)
            return 1
        if not click.confirm("repair now?", default=False, err=True):
            return 1
    for what, do in plan:
        do()
        click.echo(f"done: {what.split(' (', 1)[0]}", file=err)
    return 0


@state.command("compact")
@click.pass_obj
def compact_cmd(app) -> None:
    """Write a snapshot now and drop the segments (or rows) it covers."""
    pos = app.store.snapshot()
    click.echo(f"snapshot at position {pos}")


@state.command("export")
@click.pass_obj
def export_cmd(app) -> None:
    """Write the whole state as one JSON document to stdout: a backup, or the way to move a
    state between the WAL directory and PostgreSQL ('oj state import')."""
    click.echo(export_state(app.store))
    live = sorted(j["id"] for j in app.store.state.jobs.values()
                  if j["status"] in LIVE_JOB_STATES)
    if live:  # job processes outlive their workers: what they record next is not in it
        shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
        click.echo(f"oj: warning: {len(live)} job(s) still running ({shown}): what they "
                   "record from now on is not in this export; to move the state, stop the "
                   "workers and wait for their jobs to end ('oj job list')", err=True)


@state.command("import")
@click.pass_obj
def import_cmd(app) -> None:
    """Read a document of 'oj state export' from stdin into this store, which must hold no
    state yet (a new state dir, or an empty database)."""
    pos = import_state(app.store, sys.stdin.read())
    where = f"PostgreSQL {app.store.log.path}" if app.store.url else f"state dir {app.store.root}"
    click.echo(f"imported the state at position {pos} into {where}", err=True)
