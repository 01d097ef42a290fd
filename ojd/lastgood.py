"""The last valid definition of each queue of a project, for pushes while a runbook is broken.

A running worker keeps its runbook when the files on disk stop validating, so a push to a
queue whose ``queue`` block is unchanged since the last valid runbook still makes sense: it
is checked against that definition, which is the one the worker uses. A queue block that
changed, cannot be read (its file has a syntax error) or is defined twice gets no such
favour: the push fails with the runbook's errors.

The record (``cache/lastgood-<project hash>.json``) is rewritten only when the valid
runbook's digest changes, so an ordinary push pays one small file read for it.
"""

from __future__ import annotations

import json
import os

from ojd.errors import RunbookError, quoted
from ojd.project import _parse_files, atomic_write, read_runbook, runbook_files

try:  # see ojd.project: the builtin module avoids loading OpenSSL's binding
    from _sha256 import sha256
except ImportError:
    from hashlib import sha256


def _path(cache_dir: str, root: str) -> str:
    return os.path.join(cache_dir, f"lastgood-{sha256(root.encode()).hexdigest()[:16]}.json")


def _read(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def remember(root: str, cache_dir: str, index: dict) -> None:
    """Keep ``index`` (of a runbook that validated) as the project's last valid one."""
    path = _path(cache_dir, root)
    record = _read(path)
    if record is not None and record.get("digest") == index["digest"]:
        return
    fingerprints = queue_fingerprints(root)
    atomic_write(path, json.dumps({"digest": index["digest"], "queues": index["queues"],
                                    "fingerprints": fingerprints}).encode())


def fallback(root: str, cache_dir: str, queue: str, error: RunbookError) -> dict:
    """An index holding ``queue``'s last valid definition when its block is unchanged;
    otherwise raises ``error`` (the runbook's problems)."""
    record = _read(_path(cache_dir, root))
    if record is None:
        raise error
    spec = record.get("queues", {}).get(queue)
    fingerprint = record.get("fingerprints", {}).get(queue)
    if spec is None or fingerprint is None or queue_fingerprints(root).get(queue) != fingerprint:
        raise error
    return {"digest": record.get("digest"), "queues": {queue: spec}, "workers": {}}


def queue_fingerprints(root: str) -> dict[str, str | None]:
    """A hash of each ``queue`` block as written (lines aside) in the runbook files (found
    as loading finds them: recursively, any format) that parse; None for a name defined
    more than once."""
    found: dict[str, str | None] = {}
    for path in runbook_files(root):
        display = os.path.relpath(path, root)
        try:
            parsed, _problems = _parse_files([(display, read_runbook(path, display))])
        except RunbookError:
            continue
        for _display, body in parsed:
            for block in body.blocks:
                if block.type == "queue" and len(block.labels) == 1:
                    name = block.labels[0]
                    digest = sha256(json.dumps(_canonical(block), sort_keys=True,
                                               default=repr).encode())
                    found[name] = None if name in found else digest.hexdigest()
    return found


def _canonical(block) -> list:
    return [list(block.labels), sorted(([a.name, a.value] for a in block.attributes),
                                       key=lambda attr: attr[0]),
            [[b.type, _canonical(b)] for b in block.blocks]]


def warning(error: RunbookError, queue: str) -> str:
    problems = error.problems
    first = problems[0] if problems else str(error)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (f"oj: warning: the runbook is invalid: {first}{more}; queue {quoted(queue)} is "
            "unchanged since the last valid runbook, so the item was checked against that "
            "definition (the one running workers keep); 'oj runbook check' lists the problems")
