"""`oj systemd uninstall` removes what this installation and state dir wrote, and only that:
other state dirs' workers keep their drop-ins, another installation keeps its units."""

from __future__ import annotations

import os
import uuid

import test_systemd_workers
from sandbox import Sandbox
from systemd_plugin import OJ, sandbox_oj
from test_systemd_workers import UnitProject

# the sandbox fixture of test_systemd_workers: one unit per test (systemd_plugin installs the units)
unit_project = test_systemd_workers.unit_project

UNITS = "/etc/systemd/system"


def uninstall(sb: Sandbox, state: str):
    return sandbox_oj(sb, state, "systemd", "uninstall", check=False)


def reinstall(sb: Sandbox) -> None:
    sb.run([OJ, "systemd", "install"])


def test_uninstall_keeps_the_drop_ins_of_other_state_dirs(unit_project: UnitProject,
                                                        sandbox_dir):
    p = unit_project
    other = UnitProject(p.sb, sandbox_dir / "other", "o" + uuid.uuid4().hex[:8])
    other.state = sandbox_dir / "other-state"
    try:
        p.oj("worker", "start", p.worker)
        other.oj("worker", "start", other.worker)
        p.oj("worker", "stop", p.worker)
        other.oj("worker", "stop", other.worker)
        mine = f"{UNITS}/{p.unit}.d/50-oj-state.conf"
        theirs = f"{UNITS}/{other.unit}.d/50-oj-state.conf"
        proc = uninstall(p.sb, str(p.state))
        assert proc.returncode == 0, proc.stderr
        removed = proc.stdout.splitlines()
        # the template stays: the other state dir's worker still runs from it
        assert removed == [f"removed {mine}"]
        assert f"oj: kept {theirs}: written for another state dir" in proc.stderr.splitlines()
        assert "still use them" in proc.stderr
        p.sb.run(["test", "-e", f"{UNITS}/oj-worker@.service"])
        other.oj("worker", "start", other.worker)
        other.oj("worker", "stop", other.worker)
        assert p.sb.run(["test", "-e", mine], check=False).returncode == 1
        assert p.sb.run(["test", "-d", os.path.dirname(mine)], check=False).returncode == 1
        assert str(other.state) in p.sb.run(["cat", theirs]).stdout
        # the last state dir's uninstall takes its own, and the unit files with it
        again = uninstall(p.sb, str(other.state))
        assert again.stdout.splitlines() == [f"removed {theirs}",
                                             f"removed {UNITS}/oj-worker@.service",
                                             f"removed {UNITS}/oj-workers.target",
                                             f"removed {UNITS}/oj-cron@.service",
                                             f"removed {UNITS}/oj-cron@.timer",
                                             f"removed {UNITS}/oj-metrics.socket",
                                             f"removed {UNITS}/oj-metrics.service",
                                             f"removed {UNITS}/oj-web.socket",
                                             f"removed {UNITS}/oj-web.service"], again.stderr
        assert uninstall(p.sb, str(other.state)).stdout == "nothing to remove\n"
        # with the template gone, a start says how to bring it back
        proc = p.oj("worker", "start", p.worker, check=False)
        assert proc.returncode == 1
        assert f"unit {p.unit} is not installed; run 'oj systemd install'" in proc.stderr
    finally:
        reinstall(p.sb)


def test_uninstall_keeps_units_another_installation_wrote(installed: Sandbox):
    service = f"{UNITS}/oj-worker@.service"
    text = installed.run(["cat", service]).stdout
    ours = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    foreign = text.replace(ours, "ExecStart=/opt/elsewhere/bin/ojd worker %i")
    try:
        installed.run(["sh", "-c", f"cat > {service}"], input=foreign)
        proc = uninstall(installed, "/var/lib/oj-uninstall-test")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "nothing to remove\n"
        assert (f"oj: kept {service} and oj-workers.target: written for "
                "/opt/elsewhere/bin/ojd, not this installation") in proc.stderr
        assert installed.run(["cat", service]).stdout == foreign
        assert installed.run(["test", "-e", f"{UNITS}/oj-workers.target"],
                             check=False).returncode == 0
    finally:
        reinstall(installed)
    assert installed.run(["cat", service]).stdout == text
