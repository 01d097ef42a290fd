"""``oj runbook``: check, list."""

from __future__ import annotations

import os

import click

from oj.output import emit_json, output_option, table
from ojd.errors import RunbookError
from ojd.project import RUNBOOK_DIR, check, scan
from ojd.worker_path import missing_program, worker_path


@click.group()
def runbook() -> None:
    """Check and list the project's runbooks."""


@runbook.command("check")
@click.pass_obj
def check_cmd(app) -> int:
    """Validate every runbook (shell scripts with bash -n too); print each problem as
    file:line and exit 1 on any.

    Warnings (values where bash reads them again, values in command position, programs a
    worker's scripts run that are not on the PATH it runs with) are printed too, as
    file:line: warning: ...; they do not change the exit status."""
    files, skipped = scan(app.root)
    for display, why in skipped:
        click.echo(f"warning: skipped {display}: {why}", err=True)
    if not files:
        click.echo(f"oj: no runbooks in {RUNBOOK_DIR}/ (looked for .hcl, .toml and .json files, "
                   "in subdirectories too); add one, or check the project directory", err=True)
        return 1
    for path in files:
        click.echo(f"read {os.path.relpath(path, app.root)}")
    try:
        path, whose = worker_path()
        # no cache: a check always parses
        rb, warnings = check(app.root, exact=True, missing_program=missing_program(path, whose))
    except RunbookError as e:
        for line in e.problems:
            click.echo(line, err=True)
        click.echo(f"{len(e.problems)} problem(s) in {len(files)} runbook file(s)", err=True)
        return 1
    for line in warnings:
        click.echo(line, err=True)
    if any(f"not on {whose};" in line for line in warnings):
        click.echo(f"note: programs were looked up on {whose}: {path}", err=True)
    counts = {k: len(getattr(rb, k)) for k in ("commands", "queues", "workers", "pipelines",
                                                "agents")}
    if rb.crons:
        counts["crons"] = len(rb.crons)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    click.echo(f"ok: {len(files)} file(s), {summary}")
    return 0


@runbook.command("list")
@output_option
@click.pass_obj
def list_cmd(app, output: str) -> None:
    """What each runbook file defines."""
    rb = app.runbook
    if output == "json":
        emit_json({f: defs for f, defs in rb.files.items()})
        return
    rows = [(f, ", ".join(defs) or "-") for f, defs in rb.files.items()]
    table(("FILE", "DEFINES"), rows, empty="no runbooks in .oj/runbooks/")
