"""``oj runbook``: check, list."""

from __future__ import annotations

import click

from oj.output import emit_json, output_option, table


@click.group()
def runbook() -> None:
    """Check and list the project's runbooks."""


@runbook.command("check")
@click.pass_obj
def check_cmd(app) -> int:
    """Validate every runbook; print each problem as file:line and exit 1 on any.

    Warnings (values where bash reads them again, values in command position) are printed
    too, as file:line: warning: ...; they do not change the exit status."""
    from ojd.errors import RunbookError
    from ojd.project import check, runbook_files

    files = runbook_files(app.root)
    try:
        rb, warnings = check(app.root)  # no cache: a check always parses
    except RunbookError as e:
        for line in e.problems:
            click.echo(line, err=True)
        click.echo(f"{len(e.problems)} problem(s) in {len(files)} runbook file(s)", err=True)
        return 1
    for line in warnings:
        click.echo(line, err=True)
    counts = {k: len(getattr(rb, k)) for k in ("commands", "queues", "workers", "pipelines",
                                                "agents")}
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
