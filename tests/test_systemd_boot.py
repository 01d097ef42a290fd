"""Boot-time autostart: an enabled worker comes back after a power loss and resumes its queue.

The sandbox is booted, powered off hard mid-job, and booted again on the same root: its
/etc/systemd/system (enablement), /var/lib/systemd and the project's state dir persist.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

from sandbox import Sandbox

BIN = os.path.dirname(sys.executable)
OJ = os.path.join(BIN, "oj")

RUNBOOK = r"""
    queue "jobs" {
      vars = ["n", "mode"]
      defaults = { mode = "ok" }
    }

    worker "boot" {
      source  = { queue = "jobs" }
      handler = { pipeline = "work" }
      poll    = "60s"
    }

    pipeline "work" {
      vars = ["item"]
      step "work" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> "${invoke.dir}/ran.txt"
          if [ ${var.item.mode} = slow ] && [ ! -e "${invoke.dir}/rebooted" ]; then sleep 600; fi
          echo "done ${var.item.n}" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


BOOT_UNIT = "oj-worker@project:boot.service"  # worker 'boot' of the project in ./project


def test_enabled_worker_comes_back_after_power_loss_and_drains_its_queue(make_sandbox):
    sb: Sandbox = make_sandbox()
    sb.boot()
    project = sb.root / "shared" / "project"
    state = sb.root / "shared" / "state"
    (project / ".oj" / "runbooks").mkdir(parents=True)
    (project / ".oj" / "runbooks" / "work.hcl").write_text(textwrap.dedent(RUNBOOK))
    env = {"OJ_STATE_DIR": str(state), "PATH": f"{BIN}:/usr/bin:/bin"}

    def oj(*args: str) -> str:
        return sb.run([OJ, *args], cwd=str(project), env=env).stdout

    def ran() -> list[str]:
        path = project / "ran.txt"
        return path.read_text().splitlines() if path.exists() else []

    oj("systemd", "install")
    assert oj("worker", "start", "--enable", "boot") == "Worker 'boot' started\n"
    assert sb.systemctl("is-enabled", BOOT_UNIT) == "enabled"
    assert sb.systemctl("is-enabled", "oj-workers.target") == "enabled"
    rows = json.loads(oj("worker", "list", "-o", "json"))
    assert rows[0]["enabled"] is True
    oj("queue", "push", "jobs", '{"n": "1", "mode": "slow"}')
    sb.wait_for(lambda: "start 1" in ran(), timeout=20, what="the slow step to start")
    for n in (2, 3):
        oj("queue", "push", "jobs", json.dumps({"n": str(n)}))

    sb.kill()  # power loss: no stop, no drain
    (project / "rebooted").touch()
    sb.boot()

    # nobody runs oj: oj-workers.target brings the worker back, which resumes item 1
    sb.wait_for(lambda: sb.unit_property(BOOT_UNIT, "ActiveState") == "active",
                timeout=30, what="the worker to come back at boot")
    sb.wait_for(lambda: "done 3" in ran(), timeout=30, what="the queue to drain")
    items = json.loads(oj("queue", "list", "--items", "-o", "json"))
    assert [(i["data"]["n"], i["status"]) for i in items] == [
        ("1", "completed"), ("2", "completed"), ("3", "completed")]
    assert ran().count("done 1") == 1 and ran().count("start 1") == 2
    assert "resuming job" in sb.journal(BOOT_UNIT)


def test_disable_removes_the_worker_from_boot(make_sandbox):
    sb: Sandbox = make_sandbox()
    sb.boot()
    project = sb.root / "shared" / "project"
    (project / ".oj" / "runbooks").mkdir(parents=True)
    (project / ".oj" / "runbooks" / "work.hcl").write_text(textwrap.dedent(RUNBOOK))
    env = {"OJ_STATE_DIR": str(sb.root / "shared" / "state"), "PATH": f"{BIN}:/usr/bin:/bin"}
    sb.run([OJ, "systemd", "install"])
    sb.run([OJ, "worker", "enable", "boot"], cwd=str(project), env=env)
    assert sb.systemctl("is-active", BOOT_UNIT, check=False) == "inactive"
    sb.run([OJ, "worker", "disable", "boot"], cwd=str(project), env=env)
    assert sb.systemctl("is-enabled", BOOT_UNIT, check=False) == "disabled"
    sb.poweroff()
    sb.boot()
    assert sb.systemctl("is-active", BOOT_UNIT, check=False) == "inactive"
