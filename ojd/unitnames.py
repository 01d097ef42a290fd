"""What a worker or cron name must be to name its systemd units: ``oj-worker@NAME.service``,
``oj-cron@NAME.timer`` and ``.service``, and their drop-in directories (``UNIT.d``).

Pure and light: ``oj`` checks names with it before anything reaches systemd, the runbook
checks them at file:line.
"""

from __future__ import annotations

from ojd.errors import UsageError, quoted

NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# systemd refuses unit names over 255 characters, and a unit's drop-in directory UNIT.d is
# a file name, at most 255 bytes: the longest name made from NAME sets its limit
_NAME_MAX = 255
LONGEST = {"worker": "oj-worker@.service.d", "cron": "oj-cron@.service.d"}


def worker_unit(name: str) -> str:
    """The systemd unit of worker ``name``."""
    return f"oj-worker@{name}.service"


def max_length(kind: str) -> int:
    """The longest ``kind`` ("worker", "cron") name whose units systemd takes."""
    return _NAME_MAX - len(LONGEST[kind])


def too_long(kind: str, name: str) -> str | None:
    """Why ``name`` is too long for a ``kind``'s units, or None."""
    if len(name) <= max_length(kind):
        return None
    return (f"is {len(name)} characters long; at most {max_length(kind)} fit the systemd "
            f"units named after a {kind} ({LONGEST[kind][:-2].replace('@', '@NAME')})")


def check_name(kind: str, name: str) -> str:
    """A ``kind`` name that fits its units (the rule of runbook names), refused in one line
    before it reaches systemd or journalctl."""
    if not name or name[0] in ".-" or not NAME_CHARS.issuperset(name):
        raise UsageError(f"{quoted(name)} is not a {kind} name; {kind} names are letters, "
                         f"digits, '_', '-' or '.' (see 'oj {kind} list')")
    problem = too_long(kind, name)
    if problem is not None:
        raise UsageError(f"{kind} name '{name[:16]}...' {problem}")
    return name
