"""``oj state``: check, compact."""

from __future__ import annotations

import os

import click

from oj.output import emit_json, output_option


@click.group()
def state() -> None:
    """Check and compact the state directory."""


@state.command("check")
@output_option
def check_cmd(output: str) -> int:
    """Verify every record of the WAL; report damage with its position. Exit 1 on damage."""
    from ojd import paths
    from ojd.store import state_dir_error
    from ojd.wal import WalDirectory

    root = paths.state_dir()
    if not os.path.lexists(root):  # checking must not create it
        from oj.app import missing_state_dir
        from ojd.errors import OjError

        raise OjError(missing_state_dir(root))
    try:
        wal = WalDirectory(paths.wal_dir(root), on_problem=lambda p: None)
        report = wal.check()
    except OSError as e:
        raise state_dir_error(None, e) from None
    if output == "json":
        emit_json({"path": str(wal.path), "ok": report.ok, "records": report.records,
                   "last_pos": report.last_pos, "segments": report.segments,
                   "snapshot_pos": report.snapshot_pos,
                   "problems": [p._asdict() for p in report.problems]})
    else:
        click.echo(f"state dir: {root}")
        click.echo(f"records:   {report.records} in {report.segments} segment(s), "
                   f"last position {report.last_pos}")
        click.echo(f"snapshot:  {report.snapshot_pos if report.snapshot_pos else 'none'}")
        for p in report.problems:
            where = f"position {p.pos}, " if p.pos is not None else ""
            click.echo(f"problem:   {p.kind} in {p.segment} ({where}byte {p.offset}): {p.detail}")
        click.echo("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


@state.command("compact")
@click.pass_obj
def compact_cmd(app) -> None:
    """Write a snapshot now and drop the segments it covers."""
    pos = app.store.snapshot()
    click.echo(f"snapshot at position {pos}")
