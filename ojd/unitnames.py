"""What a worker or cron name must be to name its systemd units: ``oj-worker@NAME.service``,
``oj-cron@NAME.timer`` and ``.service``, and their drop-in directories (``UNIT.d``).

A recorded worker or cron has a full name, ``PROJECT:NAME``: its project's name, then the
name its runbook gives it. Two projects may each have a ``merge`` worker; their units are
``oj-worker@shop:merge.service`` and ``oj-worker@blog:merge.service``. The full name is
split at its first ``:`` (project names never hold one; the runbook part may).

Pure and light: ``oj`` checks names with it before anything reaches systemd, the runbook
checks them at file:line.
"""

from __future__ import annotations

from ojd.errors import UsageError, quoted

NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
SEPARATOR = ":"
# systemd refuses unit names over 255 characters, and a unit's drop-in directory UNIT.d is
# a file name, at most 255 bytes: the longest name made from NAME sets its limit
_NAME_MAX = 255
LONGEST = {"worker": "oj-worker@.service.d", "cron": "oj-cron@.service.d"}


def worker_unit(full: str) -> str:
    """The systemd unit of worker ``full`` (``PROJECT:NAME``)."""
    return f"oj-worker@{full}.service"


def qualify(project: str, name: str) -> str:
    """The full name of a project's worker or cron: ``shop`` and ``merge`` -> ``shop:merge``."""
    return f"{project}{SEPARATOR}{name}"


def split(full: str) -> tuple[str, str]:
    """``shop:merge`` -> (``shop``, ``merge``); a name recorded before projects had names
    (``merge``) -> ("", ``merge``)."""
    project, sep, name = full.partition(SEPARATOR)
    return (project, name) if sep else ("", full)


def short(full: str) -> str:
    return split(full)[1]


def is_legacy(full: str) -> bool:
    """A record or unit named the way oj named them before projects had names."""
    return SEPARATOR not in full


def max_length(kind: str) -> int:
    """The longest ``kind`` ("worker", "cron") full name whose units systemd takes."""
    return _NAME_MAX - len(LONGEST[kind])


def too_long(kind: str, name: str) -> str | None:
    """Why ``name`` is too long for a ``kind``'s units, or None."""
    if len(name) <= max_length(kind):
        return None
    return (f"is {len(name)} characters long; at most {max_length(kind)} fit the systemd "
            f"units named after a {kind} ({LONGEST[kind][:-2].replace('@', '@NAME')})")


def valid_part(name: str) -> bool:
    return bool(name) and name[0] not in ".-" and NAME_CHARS.issuperset(name)


def check_name(kind: str, name: str) -> str:
    """A ``kind`` name, short or full (``PROJECT:NAME``), that fits its units (the rule of
    runbook names), refused in one line before it reaches systemd or journalctl."""
    # PROJECT:NAME, whose NAME may hold ':' itself (an imported name, ALIAS:NAME)
    if not all(valid_part(part) for part in name.split(SEPARATOR)):
        raise UsageError(f"{quoted(name)} is not a {kind} name; {kind} names are letters, "
                         f"digits, '_', '-' or '.' (see 'oj {kind} list')")
    problem = too_long(kind, name)
    if problem is not None:
        raise UsageError(f"{kind} name '{name[:16]}...' {problem}")
    return name


def check_project_name(name: str, where: str) -> str:
    """A project name (``project = "..."`` in .oj/config.toml, or a directory's): it is the
    first part of unit names, so letters, digits, '_', '-' and '.', never ':'."""
    if not valid_part(name) or len(name) > 64:
        raise UsageError(f"{quoted(name)} ({where}) is not a project name; project names are "
                         "1-64 letters, digits, '_', '-' or '.', not starting with '.' or '-': "
                         "set project = \"NAME\" in .oj/config.toml")
    return name


def name_of_directory(base: str) -> str:
    """A project's default name: its directory's base name made fit for unit names (other
    characters become '-')."""
    name = "".join(c if c in NAME_CHARS else "-" for c in base).lstrip(".-")[:64]
    return name or "project"
