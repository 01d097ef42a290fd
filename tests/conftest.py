"""Shared fixtures: a project directory with runbooks, its own state dir, and `oj` run as a
subprocess of the installed console script (what users and shell steps run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A run started as a background job of a script (`tests/run.sh &`) inherits SIGINT ignored,
# and so would every oj it starts: the Ctrl-C tests need it delivered as a terminal does.
signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["systemd_plugin"]

BIN = os.path.dirname(sys.executable)
OJ = os.path.join(BIN, "oj")
OJD = os.path.join(BIN, "ojd")


class Project:
    """A project dir with `.oj/runbooks/` and a private state dir; with ``url``, its events
    are in that PostgreSQL database instead of the state dir's WAL."""

    def __init__(self, root: Path, state: Path, url: str | None = None) -> None:
        self.root = root
        self.state = state
        self.url = url
        (root / ".oj" / "runbooks").mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, OJ_STATE_DIR=str(self.state), PATH=BIN + ":" + os.environ["PATH"])
        env.pop("OJ_PROJECT", None)
        env.pop("OJ_STATE_URL", None)
        if self.url:
            env["OJ_STATE_URL"] = self.url
        env.update(extra)
        return env

    def write(self, name: str, text: str) -> Path:
        path = self.root / ".oj" / "runbooks" / name
        path.write_text(textwrap.dedent(text))
        return path

    def oj(self, *args: str, check: bool = True, cwd: Path | None = None,
           timeout: float = 60, input: str | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([OJ, *args], cwd=cwd or self.root, env=self.env(**env),
                              input=input, capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"oj {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self.oj(*args, "-o", "json").stdout)

    def ojd(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([OJD, *args], cwd=self.root, env=self.env(**env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def items(self, queue: str | None = None) -> list[dict]:
        return self.json("queue", "list", *([queue] if queue else ["--items"]))  # type: ignore[return-value]

    def events(self, kind: str) -> list[dict]:
        """The log's events of one type, read directly (from the WAL or PostgreSQL)."""
        if self.url:
            from ojd.store.postgres import PgLog

            log = PgLog(self.url)
            return [r.event for r in log.records() if r.event.get("type") == kind]
        from ojd.store.wal import WalDirectory

        wal = WalDirectory(str(self.state / "wal"), on_problem=lambda p: None)
        return [r.event for r in wal.records() if r.event.get("type") == kind]


def wait_until(predicate, what: str = "", timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def asleep_in(pid: int, call: str, any_thread: bool = False) -> bool:
    """Whether process ``pid`` (its main thread, or with ``any_thread`` any of them) sleeps in
    the kernel in ``call`` (part of /proc's wchan: "nanosleep" for time.sleep, "poll" for
    select, "lock_inode" for flock) with no signal pending: a positive sign that it got as
    far as that wait and has done what it was woken for, where a fixed sleep only hopes so."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        shared = Path(f"/proc/{pid}/status").read_text()
        threads = sorted(tasks.iterdir()) if any_thread else [tasks / str(pid)]
        for task in threads:
            status = shared if task.name == str(pid) else (task / "status").read_text()
            pending = [line.split()[1] for line in (shared + status).splitlines()
                       if line.startswith(("SigPnd:", "ShdPnd:"))]
            if call in (task / "wchan").read_text() and not any(int(p, 16) for p in pending):
                return True
    except OSError:  # gone, or going
        return False
    return False


def require(condition: bool, reason: str) -> None:
    """Go on only when ``condition`` holds: root, a file system with ACLs... Outside CI a
    test that cannot run here is skipped (justified: a developer's non-root run); in CI,
    which runs as root on a machine like this one, it fails, so no test silently stops
    running."""
    if condition:
        return
    from systemd_plugin import ci_enabled

    if ci_enabled():
        pytest.fail(f"cannot be skipped in CI: {reason}")
    pytest.skip(reason)  # justified: outside CI only (see above); CI fails instead


STORES = ["wal", "postgresql"]

# Fixtures that start real processes: `oj` as a subprocess, ojd, PostgreSQL, a systemd sandbox.
# A test that uses none of them (directly or through another fixture) and is not marked
# ``end_to_end`` is in the quick tier (`tests/run.sh --quick`): a new pure test lands there
# by itself, and a test that starts processes some other way says so with the mark.
END_TO_END_FIXTURES = frozenset({"project", "ap", "postgres", "sandbox", "sandbox_dir",
                                 "make_sandbox", "installed"})


def is_quick(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if "cli_project" in names:
        names.discard("project")  # a module's project bound to the in-process one
    callspec = getattr(item, "callspec", None)
    on_postgres = callspec is not None and callspec.params.get("store_kind") == "postgresql"
    return not (names & END_TO_END_FIXTURES or on_postgres
                or item.get_closest_marker("end_to_end") or item.get_closest_marker("systemd"))


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the mark, and xdist on the group
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # not at the top: imported before pytest loads it as a plugin, its asserts stay unrewritten
    from systemd_plugin import needs_systemd

    for item in items:
        if is_quick(item):
            item.add_marker(pytest.mark.quick)
        if needs_systemd(item):
            # under `--dist loadgroup`, one xdist worker runs every sandbox test, one at a
            # time on its one sandbox, while the other workers take the rest
            item.add_marker(pytest.mark.xdist_group("sandbox"))


def pytest_generate_tests(metafunc) -> None:
    """Tests (or modules) marked ``both_stores`` run once per store: the WAL directory and
    PostgreSQL (a private server, see tests/pgserver.py); ``wal_only`` takes a test of such a
    module out (it pins down what only the WAL directory does)."""
    definition = metafunc.definition
    if "store_kind" in metafunc.fixturenames and definition.get_closest_marker(
            "both_stores") and not definition.get_closest_marker("wal_only"):
        metafunc.parametrize("store_kind", STORES)


@pytest.fixture
def store_kind() -> str:
    return "wal"


@pytest.fixture(scope="session")
def postgres():
    """One private PostgreSQL server for the session; tests take a database each. Missing
    PostgreSQL or libpq fails in CI (tests/run.sh installs both) and skips elsewhere."""
    from pgserver import PrivatePostgres, have_driver, server_bin

    # justified: skipped only outside CI (require fails in CI, where run.sh installs these)
    require(server_bin() is not None, "PostgreSQL is not installed (apt install postgresql)")
    require(have_driver(), "libpq is not installed (apt install libpq5)")
    require(os.geteuid() == 0, "starting a private PostgreSQL as another user needs root")
    server = PrivatePostgres().start()
    yield server
    server.stop()


@pytest.fixture
def state_url(store_kind: str, request) -> str | None:
    """A fresh database for this test under PostgreSQL; None for the WAL directory."""
    if store_kind == "wal":
        return None
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def project(tmp_path: Path, state_url: str | None) -> Project:
    return Project(tmp_path / "project", tmp_path / "state", url=state_url)


class InProcessProject(Project):
    """A Project whose ``oj`` runs in this process: ``oj.cli.main``, the console script's
    own entry point (fast paths included), under click's ``CliRunner`` isolation for its
    streams and environment. No process start: for CLI behaviour that needs no worker."""

    def oj(self, *args: str, check: bool = True, cwd: Path | None = None,
           timeout: float = 60, input: str | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
        from click.testing import CliRunner

        from oj.cli import main

        wanted = self.env(**env)
        # the runner's env is laid over os.environ: None takes out what the project's drops
        overlay = {name: wanted.get(name) for name in {*os.environ, *wanted}}
        here = os.getcwd()
        os.chdir(cwd or self.root)
        try:
            with CliRunner().isolation(input=input, env=overlay) as (out, err, _):
                try:
                    code = main(list(args))
                except SystemExit as e:  # click's own exits (--help, --version)
                    code = e.code if isinstance(e.code, int) else 1
                sys.stdout.flush()
                sys.stderr.flush()
                stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
        finally:
            os.chdir(here)
        proc = subprocess.CompletedProcess([OJ, *args], code, stdout, stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"oj {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def cli_project(tmp_path: Path, state_url: str | None) -> InProcessProject:
    """A project whose ``oj`` runs in-process (see InProcessProject): the quick tier's CLI.
    A module that pins CLI behaviour needing no worker binds its ``project`` to this."""
    return InProcessProject(tmp_path / "project", tmp_path / "state", url=state_url)
