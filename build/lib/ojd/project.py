"""Finding a project and loading its runbooks, with the parse cached by content hash.

An unchanged set of runbook files is parsed and validated once; later CLI calls unpickle the
validated model (a fraction of a millisecond) instead of parsing again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle

from ojd import __version__
from ojd.errors import OjError, RunbookError
from ojd.runbook import Runbook

RUNBOOK_DIR = os.path.join(".oj", "runbooks")


def find_root(start: str | None = None, override: str | None = None) -> str:
    """``--project`` / ``$OJ_PROJECT``, else the nearest directory above ``start`` with ``.oj/``."""
    explicit = override or os.environ.get("OJ_PROJECT")
    if explicit:
        root = os.path.abspath(explicit)
        if not os.path.isdir(os.path.join(root, ".oj")):
            raise OjError(f"{root} has no .oj/ directory; create .oj/runbooks/ there or pass "
                          "--project with a project directory")
        return root
    here = os.path.abspath(start or os.getcwd())
    while True:
        if os.path.isdir(os.path.join(here, ".oj")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            raise OjError("not in an oj project (no .oj/ directory here or above); cd into a "
                          "project or pass --project DIR")
        here = parent


def runbook_files(root: str) -> list[str]:
    directory = os.path.join(root, RUNBOOK_DIR)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".hcl"))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names]


def load(root: str, cache_dir: str | None = None) -> Runbook:
    """The validated runbook of a project. Raises RunbookError listing every problem."""
    sources = []
    digest = hashlib.sha256(__version__.encode())
    for path in runbook_files(root):
        with open(path, "rb") as f:
            data = f.read()
        display = os.path.relpath(path, root)
        sources.append((display, data))
        digest.update(b"\0" + display.encode() + b"\0" + data)
    cache_path = None
    if cache_dir is not None:
        cache_path = os.path.join(cache_dir, f"runbook-{digest.hexdigest()[:32]}.pickle")
        cached = _read_cache(cache_path)
        if cached is not None:
            return cached
    runbook = dataclasses.replace(parse(sources), digest=digest.hexdigest()[:32])
    if cache_path is not None:
        _write_cache(cache_path, runbook)
    return runbook


def parse(sources: list[tuple[str, bytes]]) -> Runbook:
    from ojd import hcl, runbook

    parsed = []
    problems: list[str] = []
    for display, data in sources:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            problems.append(f"{display}:{line}: not valid UTF-8; save the file as UTF-8")
            continue
        try:
            parsed.append((display, hcl.parse(text, display)))
        except hcl.HclSyntaxError as e:
            problems.append(str(e))
    if problems:
        raise RunbookError(problems)
    return runbook.build(parsed)


def _read_cache(path: str) -> Runbook | None:
    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
        return None  # missing or written by another version: parse again
    return value if isinstance(value, Runbook) else None


def _write_cache(path: str, runbook: Runbook) -> None:
    """Best effort: a cache that cannot be written costs only a re-parse next time."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(runbook, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass
