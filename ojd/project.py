"""Finding a project and loading its runbooks, with the parse cached by content hash.

An unchanged set of runbook files is parsed and validated once; later CLI calls unpickle the
validated model (a fraction of a millisecond) instead of parsing again. The hottest commands
(``oj queue push``, ``oj worker start``) read a plain JSON index of it instead, which needs
neither the model's import nor unpickling.
"""

from __future__ import annotations

import json
import os
import re
import stat

from ojd import __version__, paths
from ojd.errors import OjError, RunbookError, escaped, quoted
from ojd.unitnames import check_project_name, name_of_directory, qualify

try:  # CPython's builtin SHA-256: importing hashlib loads OpenSSL's binding (~3 ms)
    from _sha256 import sha256
except ImportError:  # other interpreters and versions (3.12 calls it _sha2)
    from hashlib import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ojd.runbook.model import Runbook

RUNBOOK_DIR = os.path.join(".oj", "runbooks")
# Part of the index file's name: an index written in an older layout is never read as this one
INDEX_FORMAT = 2
# Part of the runbook digest: a model cached in an older layout (before cron blocks) is
# never unpickled as this one
MODEL_FORMAT = b"model-2"


def find_root(start: str | None = None, override: str | None = None) -> str:
    """``--project`` / ``$OJ_PROJECT`` (a directory, or the name of a project recorded in
    the state dir), else the nearest directory above ``start`` with ``.oj/``."""
    explicit = override or os.environ.get("OJ_PROJECT")
    if explicit:
        root = os.path.abspath(explicit)
        if os.path.isdir(os.path.join(root, ".oj")):
            return root
        recorded = recorded_root(explicit) if os.sep not in explicit else None
        if recorded is not None:
            return recorded
        raise OjError(f"{escaped(root)} has no .oj/ directory, nor is "
                      f"{quoted(explicit)} the name of a project with workers or crons "
                      "recorded here; pass --project with a project directory (or name)")
    here = os.path.abspath(start or os.getcwd())
    while True:
        if os.path.isdir(os.path.join(here, ".oj")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            raise OjError("not in an oj project (no .oj/ directory here or above); cd into a "
                          "project or pass --project DIR")
        here = parent


CONFIG = os.path.join(".oj", "config.toml")
_names: dict[str, str] = {}


def project_name(root: str) -> str:
    """The project's name, the first part of its workers' and crons' full names (and
    units): ``project = "shop"`` at the top of ``.oj/config.toml``, else its directory's
    base name made fit for unit names. TOML is read only when the file exists."""
    name = _names.get(root)
    if name is not None:
        return name
    path = os.path.join(root, CONFIG)
    configured = None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = None
    except OSError as e:
        raise OjError(escaped(f"{path}: {e.strerror or e}; fix the file")) from None
    if data is not None:
        configured = plain_project(data)
        if configured is UNPLAIN:
            import tomllib  # lazy: ~10 ms, only for a config the plain reading cannot read

            try:
                configured = tomllib.loads(data.decode()).get("project")
            except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                raise OjError(escaped(f"{path}: {e}; fix the file")) from None
    if configured is None:
        name = name_of_directory(os.path.basename(root.rstrip(os.sep)) or "project")
    elif not isinstance(configured, str):
        raise OjError(escaped(f"{path}: project must be a string, like project = \"shop\""))
    else:
        name = check_project_name(configured, escaped(path))
    _names[root] = name
    return name


UNPLAIN: Any = object()  # plain_project: the TOML parser must read it
_PLAIN_PROJECT = re.compile(r'project[ \t]*=[ \t]*"([^"\\\x00-\x1f\x7f]*)"[ \t]*(#.*)?')


def plain_project(data: bytes) -> str | None | Any:
    """``.oj/config.toml``'s top-level ``project``, read without the TOML parser when the
    file holds it in the form the docs give (``project = "shop"`` on a line of its own,
    before any table), or None when no such key comes before the first table; UNPLAIN for
    anything else (a quoted or dotted key, an escape, a multi-line string before the key),
    which tomllib reads. Starting a worker reads this on every call."""
    for raw in data.splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if line.startswith(b"["):
            return None  # a table: top-level keys come before the first one
        if b'"""' in line or b"'''" in line or line.startswith((b'"', b"'")):
            return UNPLAIN
        if line.startswith(b"project"):
            try:
                match = _PLAIN_PROJECT.fullmatch(line.decode())
            except UnicodeDecodeError:
                return UNPLAIN
            return match.group(1) if match else UNPLAIN
        if line.count(b"[") != line.count(b"]") or line.count(b"{") != line.count(b"}"):
            return UNPLAIN  # a value over several lines: a line of it may look like a table
    return None


def full_name(root: str, name: str) -> str:
    """The full name (``PROJECT:NAME``) of worker or cron ``name`` of the project at
    ``root``."""
    return qualify(project_name(root), name)


def recorded_root(name: str) -> str | None:
    """The root of the project named ``name`` whose workers or crons are recorded in this
    state dir, or None."""
    # lazy: the store, only for --project NAME (a directory is the common case)
    from ojd.store import Store
    from ojd.unitnames import split

    if not os.path.isdir(paths.state_dir()) and not os.environ.get("OJ_STATE_URL"):
        return None  # nothing recorded, and a lookup creates no state dir
    try:
        state = Store().load()
    except (OSError, OjError):
        return None
    for rec in (*state.workers.values(), *state.crons.values()):
        if split(rec["name"])[0] == name and rec.get("project"):
            return rec["project"]
    return None


RUNBOOK_EXTENSIONS = (".hcl", ".toml", ".json")
# A runbook is a few kilobytes of text; anything this large is a mistake (or not a file)
MAX_RUNBOOK_BYTES = 1024 * 1024


def scan(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The runbook files under ``.oj/runbooks/`` (searched recursively, in path order), and
    the entries passed over as (path relative to the root, why). Hidden entries and other
    extensions are passed over; a directory reached twice (a symlink loop) is entered once."""
    top = os.path.join(root, RUNBOOK_DIR)
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    todo = [top]
    while todo:
        directory = todo.pop()
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:
                skipped.append((os.path.relpath(directory, root), "a directory already read"))
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        except OSError as e:
            skipped.append((os.path.relpath(directory, root), e.strerror or str(e)))
            continue
        for entry in entries:
            display = os.path.relpath(entry.path, root)
            if entry.name.startswith("."):
                skipped.append((display, "hidden"))
            elif entry.name.endswith(RUNBOOK_EXTENSIONS):
                files.append(entry.path)  # even if not a regular file: reading refuses it
            elif _is_dir(entry):
                todo.append(entry.path)
            else:
                skipped.append((display, f"{_kind(entry.path)}, not a runbook (.hcl, .toml or "
                                ".json)"))
    files.sort(key=lambda p: p.split(os.sep))
    skipped.sort()
    return files, skipped


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _kind(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a dangling symlink" if os.path.islink(path) else "unreadable"
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def runbook_files(root: str) -> list[str]:
    return scan(root)[0]


def read_runbook(path: str, display: str) -> bytes:
    """A runbook's bytes; refuses (with a file:line error) anything but a regular file of at
    most MAX_RUNBOOK_BYTES, without opening devices or blocking on a FIFO."""
    def refuse(message: str) -> RunbookError:
        return RunbookError([f"{display}:1: {message}"])

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{_kind(path)}, not a regular file; a runbook must be a regular "
                         "file: replace or remove it")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise refuse(f"cannot read it: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)  # what was opened, should it have been swapped since the stat
        if not stat.S_ISREG(st.st_mode):
            raise refuse("not a regular file; a runbook must be a regular file: replace or "
                         "remove it")
        data = f.read(MAX_RUNBOOK_BYTES + 1)
    if len(data) > MAX_RUNBOOK_BYTES:
        raise refuse(f"larger than the {MAX_RUNBOOK_BYTES // 1024} KiB limit for a runbook; "
                     "split it into smaller files")
    return data


def _sources(root: str) -> tuple[list[tuple[str, bytes]], str]:
    """The runbook files' (display name, bytes) and their content digest."""
    sources = []
    problems: list[str] = []
    digest = sha256(__version__.encode() + b"\0" + MODEL_FORMAT)
    for path in runbook_files(root):
        display = os.path.relpath(path, root)
        try:
            data = read_runbook(path, display)
        except RunbookError as e:
            problems.extend(e.problems)
            continue
        sources.append((display, data))
        digest.update(b"\0" + display.encode() + b"\0" + data)
    if problems:  # with the syntax errors of the readable files (not their references)
        raise RunbookError(sorted(problems + _parse_files(sources)[1], key=_file_line))
    return sources, digest.hexdigest()[:32]


def load(root: str, cache_dir: str | None = None, exact: bool = False) -> Runbook:
    """The validated runbook of a project. Raises RunbookError listing every problem.
    ``exact`` checks each shell script with a bash of its own (see ``ojd.runbook.bashsyntax``)."""
    sources, digest = _sources(root)
    return _load(sources, digest, cache_dir, exact)


def load_if_changed(root: str, cache_dir: str | None, digest: str) -> Runbook | None:
    """The runbook when its files no longer hash to ``digest``, else None (the files are
    read and hashed; the cached model is not unpickled)."""
    sources, new = _sources(root)
    return None if new == digest else _load(sources, new, cache_dir, False)


def _load(sources: list[tuple[str, bytes]], digest: str, cache_dir: str | None,
          exact: bool = False) -> Runbook:
    import dataclasses  # lazy: it loads inspect (~5 ms); a push reads the JSON index

    cache_path = None
    if cache_dir is not None:
        cache_path = os.path.join(cache_dir, f"runbook-{digest}.pickle")
        cached = _read_cache(cache_path)
        if cached is not None:
            return cached
    runbook = dataclasses.replace(parse(sources, exact=exact), digest=digest)
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
            "queues": {q.name: {"type": q.type, "vars": list(q.vars), "defaults": q.defaults,
                                "priority": q.priority}
                       for q in runbook.queues.values()},
            "workers": {w.name: {"queue": w.queue, "pipeline": w.pipeline,
                                 "concurrency": w.concurrency}
                        for w in runbook.workers.values()}}


def _write_index(path: str, runbook: Runbook) -> None:
    atomic_write(path, json.dumps(index_of(runbook)).encode())


def check(root: str, exact: bool = True,
          missing_program: Callable[[str], str | None] | None = None
          ) -> tuple[Runbook, list[str]]:
    """Parse and validate without the cache (``oj runbook check``): the runbook and its
    warnings. Raises RunbookError listing every problem. ``exact``: see ``load``;
    ``missing_program``: see ``validate.build``."""
    import dataclasses  # lazy: it loads inspect (~5 ms); a push reads the JSON index

    warnings: list[str] = []
    sources, digest = _sources(root)
    runbook = dataclasses.replace(parse(sources, warnings, exact=exact,
                                        missing_program=missing_program), digest=digest)
    return runbook, warnings


def parse(sources: list[tuple[str, bytes]], warnings: list[str] | None = None, *,
          exact: bool = False,
          missing_program: Callable[[str], str | None] | None = None) -> Runbook:
    """Parse (by extension: HCL, TOML or JSON) and validate, shell scripts included."""
    # lazy: the parser loads only on a cache miss, never on a push or worker start
    from ojd.runbook import bashsyntax, validate

    parsed, problems = _parse_files(sources)
    if problems:
        raise RunbookError(problems)
    return validate.build(parsed, lambda scripts: bashsyntax.check(scripts, exact), warnings,
                          missing_program)


def _parse_files(sources: list[tuple[str, bytes]]) -> tuple[list, list[str]]:
    from ojd.runbook import formats, hcl  # lazy: as in parse

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
            if display.endswith(".hcl"):
                parsed.append((display, hcl.parse(text, display)))
            else:
                parsed.append((display, formats.parse(text, display)))
        except hcl.HclSyntaxError as e:
            problems.append(str(e))
        except RunbookError as e:
            problems.extend(e.problems)
    return parsed, problems


def _file_line(problem: str) -> tuple[str, int]:
    """``file:line: ...`` -> (file, line), to sort problems from different stages."""
    file, _, rest = problem.partition(":")
    line = rest.split(":", 1)[0]
    return file, int(line) if line.isdigit() else 0


def _read_cache(path: str) -> Runbook | None:
    # lazy: the pickled model is for commands that need the runbook, not for a push
    import pickle

    from ojd.runbook.model import Runbook

    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
        return None  # missing or written by another version: parse again
    return value if isinstance(value, Runbook) else None


def _write_cache(path: str, runbook: Runbook) -> None:
    import pickle  # lazy: as in _read_cache

    atomic_write(path, pickle.dumps(runbook, protocol=pickle.HIGHEST_PROTOCOL))


def atomic_write(path: str, data: bytes) -> None:
    """Best effort: a cache that cannot be written costs only a re-parse next time."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
