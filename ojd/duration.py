"""Durations in runbooks ("30s", "5m", "1h30m") and in human output ("3m 5s")."""

from __future__ import annotations

import math
import re

from ojd.errors import OjError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)", re.ASCII | re.IGNORECASE)
_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*", re.ASCII)
_EXAMPLE = 'use e.g. "30s", "5m", "1h30m"'


class DurationError(OjError, ValueError):
    """A duration that does not parse, or is not positive."""


def parse_duration(text: str | int | float, allow_zero: bool = False) -> float:
    """Seconds in `text`: "30s", "5m", "1h", "2d", "500ms", "1h30m", "1.5s", or plain seconds.
    Zero is refused unless ``allow_zero`` (a retry cooldown of "0s" means at once)."""
    if isinstance(text, bool):  # a bool is an int, but `timeout = true` is a mistake
        raise DurationError(f"invalid duration {text!r}; {_EXAMPLE}")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str):
        seconds = _parse_text(text)
    else:
        raise DurationError(f"invalid duration {text!r}; {_EXAMPLE}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        least = "zero or more" if allow_zero else "more than zero"
        raise DurationError(f"invalid duration {text!r}: it must be {least}; {_EXAMPLE}")
    return seconds


def _parse_text(text: str) -> float:
    if m := _NUMBER.fullmatch(text):
        return float(m.group(1))
    total, pos = 0.0, 0
    while pos < len(text.rstrip()):
        m = _PART.match(text, pos)
        if m is None:
            raise DurationError(f"invalid duration {text!r}; {_EXAMPLE}")
        total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        pos = m.end()
    if pos == 0:
        raise DurationError(f"invalid duration {text!r}; {_EXAMPLE}")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: "450ms", "12s", "3m 5s", "2h 10m", "3d 4h" (two units at most)."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    for unit, size, small, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            big, rest = divmod(whole, size)
            rest //= small_size
            return f"{big}{unit} {rest}{small}" if rest else f"{big}{unit}"
    return f"{whole}s"
