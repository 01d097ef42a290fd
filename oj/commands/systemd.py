"""``oj systemd install|uninstall``: put oj's unit files where the manager finds them."""

from __future__ import annotations

import click

from oj.commands.worker import systemd_for, with_scope
from ojd import paths
from ojd import unitfiles as units


@click.group()
def systemd() -> None:
    """Install oj's unit files (a pip install has no place for them)."""


@systemd.command("install")
@with_scope
def install_cmd(scope: str | None) -> None:
    """Write oj-worker@.service and oj-workers.target with this installation's ojd."""
    manager = systemd_for(scope)
    written = units.install(manager)
    for path in written:
        click.echo(f"wrote {path}")


@systemd.command("uninstall")
@with_scope
def uninstall_cmd(scope: str | None) -> None:
    """Remove the unit files this installation wrote and the drop-ins of this state dir's
    workers (stop workers first)."""
    removed, kept = units.uninstall(systemd_for(scope), paths.state_dir())
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("nothing to remove")
    for note in kept:
        click.echo(f"oj: {note}", err=True)
