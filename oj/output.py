"""Listings: aligned tables for people, ``-o json`` for scripts. Times are human by default."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from ojd.duration import format_duration

output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]),
                             default="table", show_default=True, help="Output format.")


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    return format_duration(max(0.0, (now or time.time()) - ts)) + " ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "") -> None:
    if not rows:
        if empty:
            click.echo(empty)
        return
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
