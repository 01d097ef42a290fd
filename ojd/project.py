"""Finding a project and loading its runbooks, with the parse cached by content hash.

An unchanged set of runbook files is parsed and validated once; later CLI calls unpickle the
validated model (a fraction of a millisecond) instead of parsing again. The hottest commands
(``oj queue push``, ``oj worker start``) read a plain JSON index of it instead, which needs
neither the model's import nor unpickling.
"""

from __future__ import annotations

import json
import os

from ojd import __version__
from ojd.errors import OjError, RunbookError

try:  # CPython's builtin SHA-256: importing hashlib loads OpenSSL's binding (~3 ms)
    from _sha256 import sha256
except ImportError:  # other interpreters and versions (3.12 calls it _sha2)
    from hashlib import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.runbook import Runbook

RUNBOOK_DIR = os.path.join(".oj", "runbooks")
# Part of the index file's name: an index written in an older layout is never read as this one
INDEX_FORMAT = 2


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


def _sources(root: str) -> tuple[list[tuple[str, bytes]], str]:
    """The runbook files' (display name, bytes) and their content digest."""
    sources = []
    digest = sha256(__version__.encode())
    for path in runbook_files(root):
        with open(path, "rb") as f:
            data = f.read()
        display = os.path.relpath(path, root)
        sources.append((display, data))
        digest.update(b"\0" + display.encode() + b"\0" + data)
    return sources, digest.hexdigest()[:32]


def load(root: str, cache_dir: str | None = None) -> Runbook:
    """The validated runbook of a project. Raises RunbookError listing every problem."""
    sources, digest = _sources(root)
    return _load(sources, digest, cache_dir)


def _load(sources: list[tuple[str, bytes]], digest: str, cache_dir: str | None) -> Runbook:
    import dataclasses

    cache_path = None
    if cache_dir is not None:
        cache_path = os.path.join(cache_dir, f"runbook-{digest}.pickle")
        cached = _read_cache(cache_path)
        if cached is not None:
            return cached
    runbook = dataclasses.replace(parse(sources), digest=digest)
    if cache_path is not None:
        _write_cache(cache_path, runbook)
        _write_index(_index_path(cache_dir, digest), runbook)
    return runbook


def _index_path(cache_dir: str, digest: str) -> str:
    return os.path.join(cache_dir, f"index{INDEX_FORMAT}-{digest}.json")


def load_index(root: str, cache_dir: str) -> dict:
    """The queues and workers of a validated runbook, as plain JSON: all that ``oj queue
    push`` and ``oj worker start`` need, without unpickling (or importing) the runbook model.
    Only a runbook that validated has an index: on a miss this parses, raising its errors."""
    sources, digest = _sources(root)
    path = _index_path(cache_dir, digest)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        pass
    runbook = _load(sources, digest, cache_dir)  # validates; raises on any problem
    _write_index(path, runbook)
    return index_of(runbook)


def index_of(runbook: Runbook) -> dict:
    return {"digest": runbook.digest,
            "queues": {q.name: {"type": q.type, "vars": list(q.vars), "defaults": q.defaults}
                       for q in runbook.queues.values()},
            "workers": {w.name: {"queue": w.queue, "pipeline": w.pipeline,
                                 "concurrency": w.concurrency}
                        for w in runbook.workers.values()}}


def _write_index(path: str, runbook: Runbook) -> None:
    _atomic_write(path, json.dumps(index_of(runbook)).encode())


def check(root: str) -> tuple[Runbook, list[str]]:
    """Parse and validate without the cache (``oj runbook check``): the runbook and its
    warnings. Raises RunbookError listing every problem."""
    import dataclasses

    warnings: list[str] = []
    sources, digest = _sources(root)
    runbook = dataclasses.replace(parse(sources, warnings), digest=digest)
    return runbook, warnings


def parse(sources: list[tuple[str, bytes]], warnings: list[str] | None = None) -> Runbook:
    from ojd import hcl, validate

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
    return validate.build(parsed, warnings)


def _read_cache(path: str) -> Runbook | None:
    import pickle

    from ojd.runbook import Runbook

    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
        return None  # missing or written by another version: parse again
    return value if isinstance(value, Runbook) else None


def _write_cache(path: str, runbook: Runbook) -> None:
    import pickle

    _atomic_write(path, pickle.dumps(runbook, protocol=pickle.HIGHEST_PROTOCOL))


def _atomic_write(path: str, data: bytes) -> None:
    """Best effort: a cache that cannot be written costs only a re-parse next time."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
