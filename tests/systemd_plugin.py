"""pytest fixtures and hooks for tests that need a real systemd (see tests/sandbox.py).

Load from tests/conftest.py with ``pytest_plugins = ["systemd_plugin"]``.

- ``sandbox``: one booted Sandbox per test session, always powered off, its root removed.
- ``sandbox_dir``: a fresh per-test directory seen at the same path on the host and inside.
- ``make_sandbox``: extra sandboxes on roots of their own (reboot and power-loss tests).
- Tests using these fixtures get the ``systemd`` mark. With ``CI`` true, a skipped ``systemd``
  test fails: CI has root and systemd, so a skip there means the tests silently stopped running.
- ``OJ_SANDBOX=0`` skips the systemd tests on purpose (outside CI).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import pytest
from sandbox import (
    SYSTEMD,
    Sandbox,
    SandboxError,
    owner_alive,
    reap_stale_sandboxes,
    remove_root,
)

SANDBOX_BASE = Path(os.environ.get("OJ_SANDBOX_BASE", "/var/lib/oj-sandbox"))
_FIXTURES = ("sandbox", "sandbox_dir", "make_sandbox")
_TOOLS = ("unshare", "nsenter", "setpriv", "mountpoint", "busctl", "systemctl")


def ci_enabled() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable_reason() -> str | None:
    """Why no sandbox can boot here, or None when it can."""
    if os.environ.get("OJ_SANDBOX", "1").strip().lower() in ("0", "false", "no"):
        return "systemd sandbox disabled by OJ_SANDBOX=0"
    if os.geteuid() != 0:
        return "systemd sandbox needs root (namespaces, mounts, cgroups)"
    for tool in _TOOLS:
        if shutil.which(tool) is None:
            return f"systemd sandbox needs {tool}, not found"
    if not os.access(SYSTEMD, os.X_OK):
        return f"systemd sandbox needs {SYSTEMD}, not found"
    return None


def _require_sandbox() -> None:
    reason = unavailable_reason()
    if reason is not None:
        # justified: a machine without root or systemd cannot boot the sandbox; with CI set,
        # pytest_runtest_makereport below turns this skip into a failure
        pytest.skip(reason)  # justified: see above; CI turns it into a failure


def reap_stale_roots(base: Path = SANDBOX_BASE) -> None:
    """Remove roots left by crashed runs: those whose owner process is gone."""
    reap_stale_sandboxes()
    if not base.is_dir():
        return
    for root in base.iterdir():
        try:
            tag = (root / "owner").read_text().strip()
        except OSError:
            continue
        if not owner_alive(tag):
            remove_root(root)


def new_root() -> Path:
    root = SANDBOX_BASE / uuid.uuid4().hex[:12]
    root.mkdir(parents=True)
    return root


def needs_systemd(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return item.get_closest_marker("systemd") is not None or any(f in names for f in _FIXTURES)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "systemd: needs a real systemd (the sandbox of tests/sandbox.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_systemd(item) and item.get_closest_marker("systemd") is None:
            item.add_marker(pytest.mark.systemd)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    skipped = report.skipped and not hasattr(report, "wasxfail")
    if skipped and ci_enabled() and needs_systemd(item):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (
            f"systemd test skipped while CI={os.environ['CI']}; CI must run it. "
            f"Skip reason: {reason}"
        )
    return report


OJ = os.path.join(os.path.dirname(sys.executable), "oj")
SANDBOX_PATH = f"{os.path.dirname(OJ)}:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="session")
def installed(sandbox: Sandbox) -> Sandbox:
    """The session's sandbox with oj's units installed (``oj systemd install``)."""
    out = sandbox.run([OJ, "systemd", "install"]).stdout
    assert "oj-worker@.service" in out
    return sandbox


def sandbox_oj(sb: Sandbox, state: Path | str, *args: str, cwd: Path | str | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """The installed ``oj`` run inside ``sb`` with state dir ``state``; never a traceback."""
    proc = sb.run([OJ, *args], cwd=None if cwd is None else str(cwd), check=False, timeout=120,
                  env={"OJ_STATE_DIR": str(state), "PATH": SANDBOX_PATH})
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"oj {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


@contextlib.contextmanager
def own_sandbox(users: Sequence[str] = ()) -> Iterator[Sandbox]:
    """A booted sandbox of a test module's own (with sandbox-only ``users``), powered off and
    its root removed at the end."""
    _require_sandbox()
    sb = Sandbox(new_root(), users=tuple(users))
    try:
        sb.boot()
        yield sb
    finally:
        try:
            sb.poweroff()
        finally:
            remove_root(sb.root)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The session's sandbox. Tests may kill() and boot() it again (same object, same root)."""
    _require_sandbox()
    reap_stale_roots()
    sb = Sandbox(new_root())
    try:
        sb.boot()
        yield sb
    finally:
        try:
            sb.poweroff()
        finally:
            remove_root(sb.root)


@pytest.fixture
def sandbox_dir(sandbox: Sandbox, request: pytest.FixtureRequest) -> Path:
    """A fresh directory under the sandbox root: same path on the host and inside."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60]
    path = sandbox.root / "shared" / f"{name}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    # Services running as other users inside the sandbox write here too; sticky, like /tmp,
    # so none of them can replace what another put here (a root worker refuses a project
    # that someone else could swap: ojd/trust.py)
    path.chmod(0o1777)
    return path


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Factory for unbooted sandboxes; each gets its own root unless one is passed.

    Every sandbox made is powered off and every root made removed after the test, so a test
    can boot, power off (or kill) and boot again on the same root freely.
    """
    _require_sandbox()
    made: list[Sandbox] = []
    roots: list[Path] = []

    def make(root: Path | None = None, wants: Sequence[str] = ("oj-workers.target",)) -> Sandbox:
        if root is None:
            root = new_root()
            roots.append(root)
        made.append(Sandbox(root, wants=wants))
        return made[-1]

    yield make
    errors: list[SandboxError] = []
    for sb in made:
        try:
            sb.poweroff()
        except SandboxError as exc:
            errors.append(exc)
    for root in roots:
        remove_root(root)
    if errors:
        raise errors[0]
