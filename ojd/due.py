"""When a delayed push falls due: ``--in DURATION`` or ``--at TIME`` to a time stamp (pure)."""

from __future__ import annotations

import math
from datetime import datetime

from ojd.duration import DurationError, parse_duration
from ojd.errors import UsageError, quoted

_AT_FORMS = ("2026-12-24T09:00 (local time), 2026-12-24T09:00+02:00, 2026-12-24T08:00Z "
             "or 2026-12-24 (midnight, local)")


def parse_due(within: str | None, at: str | None, now: float) -> float | None:
    """The time stamp an item falls due (None: at once). A time already past is kept: the
    item is due, and is taken as any pending one."""
    if within is not None and at is not None:
        raise UsageError("give --in or --at, not both")
    if within is not None:
        try:
            return now + parse_duration(within, allow_zero=True)
        except DurationError:
            raise UsageError(f"--in expects a duration such as 30s, 10m or 1h30m, got "
                             f"{quoted(within)}") from None
    if at is not None:
        return parse_at(at)
    return None


def parse_at(text: str) -> float:
    """An ISO 8601 time: local without an offset, else at its offset (``Z``: UTC)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--at expects a time such as {_AT_FORMS}; got {quoted(text)}"
                         ) from None
    stamp = when.timestamp()  # naive: the local time zone's, as the user reads a clock
    if not math.isfinite(stamp):
        raise UsageError(f"--at {quoted(text)} is out of range")
    return stamp
