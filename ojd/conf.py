"""The state dir's ``oj.conf``: ``key = value`` lines that every process knowing the state dir
reads (CLI, worker units, job processes, steps), for settings that belong to the state
rather than to one project's runbooks: ``state_url``, ``job_timeout``, ``job_log_limit``, and
the retention defaults ``retain_done``, ``retain_dead``, ``retain_jobs``.
"""

from __future__ import annotations

import os

from ojd.duration import DurationError, parse_duration
from ojd.errors import OjError, escaped

CONFIG_FILE = "oj.conf"


def read(root: str) -> dict[str, tuple[int, str]]:
    """Every ``key = value`` of ``ROOT/oj.conf`` with its line number (the last one of a key
    wins); empty when there is no such file. Lines without ``=`` and ``#`` comments are
    skipped."""
    path = os.path.join(root, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    values: dict[str, tuple[int, str]] = {}
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip()] = (n, value.strip().strip('"'))
    return values


def duration(root: str, key: str) -> float | None:
    """A duration setting ("30m"), None when unset; a value that does not parse is an
    error naming its line."""
    found = read(root).get(key)
    if found is None or not found[1]:
        return None
    try:
        return parse_duration(found[1])
    except DurationError as e:
        where = f"{os.path.join(root, CONFIG_FILE)}:{found[0]}"
        raise OjError(escaped(f"{where}: {key}: {e}")) from None


# what a runbook's ``retain = { done, dead, jobs }`` holds, and the oj.conf key of each default
RETAIN_KINDS = ("done", "dead", "jobs")


def retention(root: str) -> dict[str, float]:
    """oj.conf's retention defaults: how long completed items, dead items and finished jobs
    are kept (``retain_done = 7d``...), only those set."""
    out = {}
    for kind in RETAIN_KINDS:
        value = duration(root, f"retain_{kind}")
        if value is not None:
            out[kind] = value
    return out


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(root: str, key: str) -> int | None:
    """A size setting ("64M", "512k", plain bytes; 0 means no limit), None when unset."""
    found = read(root).get(key)
    if found is None or not found[1]:
        return None
    text = found[1].lower().removesuffix("b").removesuffix("i")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
    number = text[: len(text) - len(unit)].strip()
    if not number.isdigit():
        where = f"{os.path.join(root, CONFIG_FILE)}:{found[0]}"
        raise OjError(escaped(f"{where}: {key}: invalid size {found[1]!r}; use e.g. "
                              '"64M", "512k" or 0 for no limit'))
    return int(number) * _SIZE_UNITS[unit]
