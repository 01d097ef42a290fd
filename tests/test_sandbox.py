"""The systemd sandbox: boots, isolates the host, persists enablement, cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from sandbox import Sandbox, cgroup_mounts

VENV_PYTHON = "/opt/oj-venv/bin/python"
TESTS_DIR = Path(__file__).resolve().parent
MakeSandbox = Callable[..., Sandbox]

NOTIFY_SCRIPT = textwrap.dedent(
    """\
    import time, sdnotify
    print("hello from the notify probe", flush=True)
    sdnotify.SystemdNotifier().notify("READY=1\\nSTATUS=hello")
    time.sleep(600)
    """
)


def _mount_points() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _new_mounts(before: list[str], sb: Sandbox) -> list[str]:
    """Mounts added since ``before`` that this sandbox could have made: other suites on the
    machine boot and stop sandboxes of their own meanwhile, each under its own root."""
    def others(m: str) -> bool:
        return m.startswith("/var/lib/oj-") and not m.startswith(str(sb.root))
    return sorted(m for m in set(_mount_points()) - set(before) if not others(m))


def _sandbox_inits() -> set[int]:
    out = subprocess.run(
        ["pgrep", "-f", "--", "--unit=oj-test.target"], capture_output=True, text=True
    ).stdout
    return {int(pid) for pid in out.split()}


def _pids_in_namespace(ns: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == ns:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _assert_gone(sb: Sandbox, pid: int, ns: str, inits: set[int], mounts: list[str]) -> None:
    """Nothing of a stopped sandbox remains: processes, mounts, cgroups."""
    assert sb.pid is None
    assert not Path(f"/proc/{pid}").exists()
    # the kernel kills the rest of a namespace whose init died, and they exit in their own
    # time: on a loaded machine a moment after the init was reaped
    wait_until(lambda: _pids_in_namespace(ns) == [], "the sandbox's processes to be gone",
               timeout=60)
    # other suites on the machine boot and stop sandboxes of their own meanwhile: only what
    # is this one's counts (its init, mounts under its root)
    assert pid not in _sandbox_inits() - inits
    assert _new_mounts(mounts, sb) == []
    assert sb.cgroup
    assert [m for m in cgroup_mounts() if (m / sb.cgroup).exists()] == []


@pytest.fixture(scope="module")
def notify_unit(sandbox: Sandbox) -> Iterator[str]:
    """A transient Type=notify service that reports READY=1 and STATUS=hello."""
    unit = f"oj-notify-probe-{uuid.uuid4().hex[:8]}.service"
    # systemd-run waits for the start job, so READY=1 has arrived when it returns.
    sandbox.run(
        ["systemd-run", f"--unit={unit}", "-p", "Type=notify",
         VENV_PYTHON, "-c", NOTIFY_SCRIPT],
        timeout=60,
    )
    yield unit
    sandbox.systemctl("stop", unit, check=False)


def test_boots_running_and_pid1_is_systemd(sandbox: Sandbox) -> None:
    assert sandbox.systemctl("is-system-running", check=False) in ("running", "degraded")
    assert sandbox.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert sandbox.unit_property("systemd-journald.service", "ActiveState") == "active"


def test_pystemd_reads_active_state_over_system_bus(sandbox: Sandbox) -> None:
    code = (
        "from pystemd.systemd1 import Unit; u = Unit(b'dbus.socket'); u.load(); "
        "print(u.Unit.ActiveState.decode())"
    )
    assert sandbox.run([VENV_PYTHON, "-c", code]).stdout.strip() == "active"


def test_notify_service_becomes_active_with_status_text(
    sandbox: Sandbox, notify_unit: str
) -> None:
    assert sandbox.unit_property(notify_unit, "ActiveState") == "active"
    assert sandbox.unit_property(notify_unit, "StatusText") == "hello"


def test_journal_shows_transient_unit_output(sandbox: Sandbox, notify_unit: str) -> None:
    # journald may still be writing the line when the unit reports ready.
    sandbox.wait_for(
        lambda: "hello from the notify probe" in sandbox.journal(notify_unit),
        timeout=15, what="the probe's line in the journal",
    )


def test_sandbox_dir_is_shared_with_the_host(sandbox: Sandbox, sandbox_dir: Path) -> None:
    sandbox.run(["sh", "-c", f"echo inside > {sandbox_dir}/from-sandbox"])
    assert (sandbox_dir / "from-sandbox").read_text() == "inside\n"


def test_boot_leaves_host_tmp_mounts_and_processes_untouched(
    make_sandbox: MakeSandbox,
) -> None:
    # An old file: what a boot-time /tmp clean-up would remove first.
    marker = Path("/tmp") / f"oj-sandbox-marker-{uuid.uuid4().hex}"
    marker.write_text("host")
    old = time.time() - 90 * 86400
    os.utime(marker, (old, old))
    mounts_before = _mount_points()
    inits_before = _sandbox_inits()
    try:
        sb = make_sandbox()
        sb.boot()
        assert sb.pid is not None
        pid, ns = sb.pid, os.readlink(f"/proc/{sb.pid}/ns/pid")
        # The sandbox has its own /tmp: the host's marker is invisible inside.
        assert sb.run(["test", "-e", str(marker)], check=False).returncode == 1
        assert _new_mounts(mounts_before, sb) == []
        sb.poweroff()
        assert marker.read_text() == "host"
        _assert_gone(sb, pid, ns, inits_before, mounts_before)
    finally:
        marker.unlink(missing_ok=True)


def test_kill_leaves_nothing_behind(make_sandbox: MakeSandbox) -> None:
    mounts_before = _mount_points()
    inits_before = _sandbox_inits()
    sb = make_sandbox()
    sb.boot()
    assert sb.pid is not None
    pid, ns = sb.pid, os.readlink(f"/proc/{sb.pid}/ns/pid")
    sb.run(["systemd-run", "--unit=oj-sleeper", "sleep", "600"])
    sb.kill()
    _assert_gone(sb, pid, ns, inits_before, mounts_before)
    # The same object boots again on the same root, as after a power loss.
    sb.boot()
    assert sb.systemctl("is-system-running", check=False) in ("running", "degraded")


CRASHING_OWNER = """\
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from sandbox import Sandbox
sb = Sandbox(Path(sys.argv[2]))
sb.boot()
print(sb.pid, sb.cgroup, flush=True)
time.sleep(600)
"""


def _dead_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_crashed_owner_does_not_block_a_new_sandbox(make_sandbox: MakeSandbox) -> None:
    sb = make_sandbox()
    owner = subprocess.Popen(
        [sys.executable, "-c", CRASHING_OWNER, str(TESTS_DIR), str(sb.root)],
        stdout=subprocess.PIPE, text=True,
    )
    assert owner.stdout is not None
    booted = owner.stdout.readline().split()
    assert booted, "the owner process failed to boot its sandbox"
    stale_pid, stale_cgroup = int(booted[0]), booted[1]
    owner.kill()
    owner.wait()
    # The owner's death takes its sandbox down (parent-death signal on unshare and systemd).
    sb.wait_for(lambda: _dead_or_zombie(stale_pid), timeout=10, what="stale systemd to die")
    sb.boot()
    assert sb.systemctl("is-system-running", check=False) in ("running", "degraded")
    # Booting reaped the stale sandbox's cgroups.
    assert [m for m in cgroup_mounts() if (m / stale_cgroup).exists()] == []


def test_enabled_unit_survives_reboot(make_sandbox: MakeSandbox) -> None:
    first = make_sandbox()
    first.boot()
    # Written inside the sandbox: lands in the root's private /etc/systemd/system.
    first.run(
        ["tee", "/etc/systemd/system/oj-workers.target"],
        input="[Unit]\nDescription=oj workers\n",
    )
    first.run(
        ["tee", "/etc/systemd/system/oj-probe.service"],
        input=(
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
            "[Install]\nWantedBy=oj-workers.target\n"
        ),
    )
    first.systemctl("daemon-reload")
    first.systemctl("enable", "oj-probe.service")
    first.poweroff()
    assert (first.root / "etc-systemd-system/oj-workers.target.wants/oj-probe.service").is_symlink()
    assert not Path("/etc/systemd/system/oj-probe.service").exists()

    second = make_sandbox(first.root)
    second.boot()
    assert second.systemctl("is-enabled", "oj-probe.service") == "enabled"
    # The boot target wants oj-workers.target, so enabled workers start again at boot.
    assert second.unit_property("oj-probe.service", "ActiveState") == "active"


# A probe test file run in a child pytest: its skips are what the CI hook must turn into
# failures (the systemd ones) or leave alone (the unrelated one). Justified: they are the
# data of the test that proves a skipped systemd test fails CI.
PLUGIN_PROBE = textwrap.dedent(
    """\
    import pytest

    @pytest.mark.systemd
    def test_marked():
        pytest.skip("no systemd here")  # justified: probe data, must fail CI

    def test_uses_fixture(sandbox):
        pass

    def test_unrelated_skip():
        pytest.skip("unrelated")  # justified: probe data, must stay a skip
    """
)


@pytest.mark.end_to_end  # runs pytest itself, twice
@pytest.mark.parametrize("ci", ["true", ""])
def test_ci_turns_skipped_systemd_tests_into_failures(tmp_path: Path, ci: str) -> None:
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
        'pytest_plugins = ["systemd_plugin"]\n'
    )
    (tmp_path / "test_probe.py").write_text(PLUGIN_PROBE)
    env = dict(os.environ, CI=ci, OJ_SANDBOX="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, out
        # A skip in setup (the fixture) becomes an error, one in the test body a failure.
        assert "1 failed, 1 skipped, 1 error" in out, out
        assert "no systemd here" in out
        assert "disabled by OJ_SANDBOX=0" in out
    else:
        assert proc.returncode == 0, out
        assert "3 skipped" in out, out
