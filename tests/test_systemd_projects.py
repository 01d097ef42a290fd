"""Projects side by side in one state directory: each has a ``merge`` worker and a
``janitor`` cron, run as units named after the project (``oj-worker@shop:merge.service``),
and ``oj worker start merge`` in each project (or in its job steps) reaches its own."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import sandbox_oj

RUNBOOK = r"""
    queue "merges" {
      type = "persisted"
      vars = ["n"]
    }

    worker "merge" {
      source      = { queue = "merges" }
      handler     = { pipeline = "merge" }
      concurrency = 1
      poll        = "60s"
    }

    pipeline "merge" {
      vars = ["item"]
      step "merge" {
        run = <<-SHELL
          echo "merged ${var.item.n}" >> "${invoke.dir}/ran.txt"
          oj worker start merge
        SHELL
      }
    }

    cron "janitor" {
      interval = "1s"
      run      = "echo swept >> ran.txt"
    }
    """


class Project:
    def __init__(self, sb: Sandbox, root: Path, state: Path, config: str | None) -> None:
        self.sb, self.root, self.state = sb, root, state
        (root / ".oj" / "runbooks").mkdir(parents=True)
        (root / ".oj" / "runbooks" / "merge.hcl").write_text(textwrap.dedent(RUNBOOK))
        if config is not None:
            (root / ".oj" / "config.toml").write_text(config)

    def oj(self, *args: str, check: bool = True):
        return sandbox_oj(self.sb, self.state, *args, cwd=self.root, check=check)

    def ran(self, what: str) -> list[str]:
        path = self.root / "ran.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line for line in lines if line.startswith(what)]


@pytest.fixture
def projects(installed: Sandbox, sandbox_dir: Path):
    state = sandbox_dir / "state"
    # the shop's directory is named otherwise: its config gives its name
    shop = Project(installed, sandbox_dir / "checkout", state, 'project = "shop"\n')
    blog = Project(installed, sandbox_dir / "blog", state, None)
    yield shop, blog
    for p in (shop, blog):
        p.oj("cron", "stop", "janitor", check=False)
        p.oj("worker", "stop", "merge", check=False)
    forget_units("shop", "blog", sb=installed)


def forget_units(*projects: str, sb: Sandbox) -> None:
    """The drop-ins of the projects' units go with the test: they name its state dir, which
    a later test's unit of the same name must not inherit."""
    units = "/etc/systemd/system"
    sb.run(["rm", "-rf", *(f"{units}/oj-{unit}.d" for p in projects
                           for unit in (f"worker@{p}:merge.service", f"cron@{p}:janitor.timer",
                                        f"cron@{p}:janitor.service"))])
    sb.systemctl("daemon-reload")


def test_two_projects_each_run_their_own_merge_worker_and_janitor_cron(projects):
    shop, blog = projects
    sb = shop.sb
    for p in (shop, blog):
        assert p.oj("worker", "start", "merge").stdout == "Worker 'merge' started\n"
        p.oj("cron", "start", "janitor")
    for unit in ("oj-worker@shop:merge.service", "oj-worker@blog:merge.service",
                 "oj-cron@shop:janitor.timer", "oj-cron@blog:janitor.timer"):
        assert sb.unit_property(unit, "ActiveState") == "active", unit
    # readable where operators look: the unit's own name and its journal
    status = sb.systemctl("status", "--no-pager", "oj-worker@shop:merge.service", check=False)
    assert "oj worker shop:merge" in status
    for n in range(3):
        shop.oj("queue", "push", "merges", json.dumps({"n": f"s{n}"}))
        blog.oj("queue", "push", "merges", json.dumps({"n": f"b{n}"}))
    for p, prefix in ((shop, "s"), (blog, "b")):
        sb.wait_for(lambda p=p: len(p.ran("merged")) == 3, timeout=60,
                    what="each project's worker to drain its own queue")
        assert sorted(p.ran("merged")) == [f"merged {prefix}{n}" for n in range(3)]
        sb.wait_for(lambda p=p: p.ran("swept"), timeout=30, what="each project's cron to tick")
    assert "Worker 'merge' was already running; woken" in shop.oj("worker", "start",
                                                                  "merge").stdout
    # the job steps' 'oj worker start merge' woke their own project's worker: it is
    # running, once, under its own unit
    rows = json.loads(shop.oj("worker", "list", "--all", "-o", "json").stdout)
    assert sorted((r["full_name"], r["name"], r["project"]) for r in rows) == [
        ("blog:merge", "merge", str(blog.root)), ("shop:merge", "merge", str(shop.root))]
    listing = shop.oj("worker", "list", "--all").stdout
    assert "\nmerge " in listing and "\nblog:merge " in listing, listing
    # another project's worker by its full name
    assert "was already running" in shop.oj("worker", "start", "blog:merge").stdout


def test_a_second_directory_claiming_a_recorded_project_name_is_refused(projects, sandbox_dir):
    shop, _ = projects
    shop.oj("worker", "start", "merge")
    clone = Project(shop.sb, sandbox_dir / "clone", shop.state, 'project = "shop"\n')
    proc = clone.oj("worker", "start", "merge", check=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"oj: project name 'shop' already belongs to {shop.root} in this state directory; "
        f"set project = \"OTHER\" in {clone.root}/.oj/config.toml to give this project a "
        "name of its own\n")


def test_project_option_takes_a_recorded_project_name(projects):
    shop, blog = projects
    blog.oj("worker", "start", "merge")
    # from the shop's directory, the blog's queue by the blog's name
    blog_item = shop.oj("--project", "blog", "queue", "push", "merges", '{"n": "x"}'
                        ).stdout.strip()
    # the blog's worker runs it; ${invoke.dir} is where the push ran: the shop's directory
    shop.sb.wait_for(lambda: shop.ran("merged x"), timeout=30, what="the blog's worker")
    assert blog.ran("merged x") == []
    items = json.loads(blog.oj("queue", "list", "--items", "-o", "json").stdout)
    assert blog_item in {i["id"] for i in items}
    proc = shop.oj("--project", "nosuch", "worker", "list", check=False)
    assert proc.returncode == 1 and "nor is 'nosuch' the name of a project" in proc.stderr


def test_a_worker_enabled_before_projects_had_names_hands_over_to_its_new_unit(
        installed: Sandbox, sandbox_dir: Path):
    """An upgraded machine: the state holds worker 'merge' recorded the old way, and
    oj-worker@merge.service is enabled with its state drop-in, as the old oj left them."""
    from ojd.events import queue_pushed, worker_recorded
    from ojd.store import Store

    sb = installed
    state = sandbox_dir / "state"
    shop = Project(sb, sandbox_dir / "shop", state, None)
    store = Store(str(state))
    store.load()
    store.append(worker_recorded(name="merge", project=str(shop.root), runbook="old",
                                 queue="merges", pipeline="merge", concurrency=1),
                 queue_pushed(id="old1", project=str(shop.root), queue="merges",
                              data={"n": "before"}, key="k-old1"))
    old, new = "oj-worker@merge.service", "oj-worker@shop:merge.service"
    dropin = f"/etc/systemd/system/{old}.d"
    sb.run(["mkdir", "-p", dropin])
    sb.run(["sh", "-c", f"cat > {dropin}/50-oj-state.conf"],
           input=f'[Service]\nEnvironment="OJ_STATE_DIR={state}"\n')
    sb.systemctl("daemon-reload")
    sb.systemctl("enable", old)
    try:
        sb.systemctl("start", old, check=False)  # as oj-workers.target does at boot
        sb.wait_for(lambda: sb.unit_property(new, "ActiveState") == "active", timeout=30,
                    what="the new unit to take over")
        sb.wait_for(lambda: shop.ran("merged before"), timeout=30,
                    what="the item pushed before the upgrade")
        assert sb.systemctl("is-active", old, check=False) == "inactive"
        assert sb.systemctl("is-enabled", old, check=False) == "disabled"
        assert sb.systemctl("is-enabled", new) == "enabled"
        assert "renamed: worker merge is shop:merge from now on" in sb.journal(old)
        shop.oj("queue", "push", "merges", '{"n": "after"}')
        sb.wait_for(lambda: shop.ran("merged after"), timeout=30, what="a push after")
        rows = json.loads(shop.oj("worker", "list", "-o", "json").stdout)
        assert [(r["name"], r["full_name"], r["active_state"]) for r in rows] == [
            ("merge", "shop:merge", "active")]
    finally:
        shop.oj("worker", "stop", "merge", check=False)
        sb.systemctl("disable", new, check=False)
        sb.run(["rm", "-rf", dropin, f"/etc/systemd/system/{new}.d"])


WAITING_RUNBOOK = r"""
    queue "merges" {
      type = "persisted"
      vars = ["n"]
    }

    worker "merge" {
      source      = { queue = "merges" }
      handler     = { pipeline = "merge" }
      concurrency = 1
      poll        = "60s"
    }

    pipeline "merge" {
      vars = ["item"]
      step "merge" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> "${invoke.dir}/ran.txt"
          while [ ! -e "${invoke.dir}/go" ]; do sleep 0.1; done
          echo "end ${var.item.n}" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


def test_a_job_running_under_the_old_unit_finishes_once_under_the_new_one(
        installed: Sandbox, sandbox_dir: Path):
    """An upgrade while a job runs: oj-worker@merge.service (its worker as the old oj ran
    it, by its bare name) runs a step that waits on a file; the upgrade restarts the unit,
    which hands over to oj-worker@shop:merge.service. The job's step, in its own scope,
    runs on; the new worker watches it to its end: one run, one job, its item done once."""
    import os
    import sys

    from ojd.events import queue_pushed, worker_recorded
    from ojd.store import Store

    sb = installed
    state = sandbox_dir / "state"
    shop = Project(sb, sandbox_dir / "shop", state, None)
    (shop.root / ".oj" / "runbooks" / "merge.hcl").write_text(textwrap.dedent(WAITING_RUNBOOK))
    store = Store(str(state))
    store.load()
    store.append(worker_recorded(name="merge", project=str(shop.root), runbook="old",
                                 queue="merges", pipeline="merge", concurrency=1),
                 queue_pushed(id="old1", project=str(shop.root), queue="merges",
                              data={"n": "before"}, key="k-old1"))
    old, new = "oj-worker@merge.service", "oj-worker@shop:merge.service"
    dropin = f"/etc/systemd/system/{old}.d"
    ojd = os.path.join(os.path.dirname(sys.executable), "ojd")
    sb.run(["mkdir", "-p", dropin])
    sb.run(["sh", "-c", f"cat > {dropin}/50-oj-state.conf"],
           input=f'[Service]\nEnvironment="OJ_STATE_DIR={state}"\n')
    # the worker as it ran before the upgrade: under its bare name, taking items itself
    sb.run(["sh", "-c", f"cat > {dropin}/90-before-the-upgrade.conf"],
           input=f"[Service]\nExecStart=\nExecStart={ojd} worker merge --project {shop.root}\n")
    sb.systemctl("daemon-reload")
    sb.systemctl("enable", old)
    try:
        sb.systemctl("start", old)
        sb.wait_for(lambda: shop.ran("start before"), timeout=30, what="the job's step to start")
        [job] = json.loads(shop.oj("job", "list", "-o", "json").stdout)
        # the upgrade: the unit's next start is the new oj's (as the package's try-restart)
        sb.run(["rm", f"{dropin}/90-before-the-upgrade.conf"])
        sb.systemctl("daemon-reload")
        sb.systemctl("restart", old, check=False)
        sb.wait_for(lambda: sb.unit_property(new, "ActiveState") == "active", timeout=30,
                    what="the new unit to take over")
        assert sb.systemctl("is-active", old, check=False) == "inactive"
        assert sb.unit_property(f"oj-job-{job['id']}.scope", "ActiveState") == "active"
        (shop.root / "go").touch()
        sb.wait_for(lambda: shop.ran("end before"), timeout=30, what="the step to end")
        sb.wait_for(lambda: [i["status"] for i in json.loads(
            shop.oj("queue", "list", "--items", "-o", "json").stdout)] == ["completed"],
            timeout=30, what="the item to complete")
        jobs = json.loads(shop.oj("job", "list", "-o", "json").stdout)
        assert [(j["id"], j["status"]) for j in jobs] == [(job["id"], "done")]
        assert shop.ran("start") == ["start before"] and shop.ran("end") == ["end before"]
        assert sb.systemctl("is-enabled", new) == "enabled"
    finally:
        (shop.root / "go").touch()
        shop.oj("worker", "stop", "merge", check=False)
        sb.systemctl("disable", new, old, check=False)
        sb.run(["rm", "-rf", dropin, f"/etc/systemd/system/{new}.d"])


@pytest.mark.parametrize("by", ["its tick", "oj cron start"])
def test_a_cron_timer_enabled_before_projects_had_names_hands_over_to_its_new_timer(
        installed: Sandbox, sandbox_dir: Path, by: str):
    """An upgraded machine: cron 'janitor' recorded the old way, oj-cron@janitor.timer
    enabled and running with its drop-ins. Its next tick, or `oj cron start janitor` in its
    project, leaves oj-cron@shop:janitor.timer enabled and ticking in its place."""
    from ojd.events import cron_recorded
    from ojd.store import Store
    from ojd.unitcontrol import state_text

    sb = installed
    state = sandbox_dir / "state"
    shop = Project(sb, sandbox_dir / "shop", state, None)
    store = Store(str(state))
    store.load()
    store.append(cron_recorded(name="janitor", project=str(shop.root), runbook="old"))
    old, new = "oj-cron@janitor.timer", "oj-cron@shop:janitor.timer"
    units = "/etc/systemd/system"
    # the old timer ticks each second, or not before an hour (the start hands it over)
    every = "1s" if by == "its tick" else "1h"
    for path, text in ((f"{units}/{old}.d/50-oj-schedule.conf",
                        f"# state dir: {state}\n[Timer]\nOnActiveSec={every}\n"
                        f"OnUnitActiveSec={every}\n"),
                       (f"{units}/oj-cron@janitor.service.d/50-oj-state.conf",
                        state_text("cron", str(state)))):
        sb.run(["mkdir", "-p", str(Path(path).parent)])
        sb.run(["sh", "-c", f"cat > {path}"], input=text)
    sb.systemctl("daemon-reload")
    sb.systemctl("enable", old)
    sb.systemctl("start", old)
    try:
        if by == "oj cron start":
            proc = shop.oj("cron", "start", "janitor")
            assert f"oj: renamed: cron janitor is shop:janitor from now on; its timer is " \
                   f"{new} (enabled in its place), the old {old} disabled and stopped" \
                   in proc.stderr
        sb.wait_for(lambda: sb.unit_property(new, "ActiveState") == "active", timeout=30,
                    what="the new timer to take over")
        assert sb.systemctl("is-enabled", new) == "enabled"
        assert sb.systemctl("is-active", old, check=False) == "inactive"
        assert sb.systemctl("is-enabled", old, check=False) == "disabled"
        # the new timer ticks, with the state drop-in moved (or written) to its service
        sb.wait_for(lambda: len(shop.ran("swept")) >= 2, timeout=30, what="ticks")
        crons = json.loads(shop.oj("cron", "list", "-o", "json").stdout)
        assert [(c["name"], c["full_name"]) for c in crons] == [("janitor", "shop:janitor")]
        assert not Path(f"{units}/{old}.d").exists()
        if by == "its tick":
            assert "renamed: cron janitor is shop:janitor from now on" in sb.journal(
                "oj-cron@janitor.service")
    finally:
        shop.oj("cron", "stop", "janitor", check=False)
        sb.systemctl("disable", new, old, check=False)
        sb.systemctl("stop", old, check=False)
        sb.run(["rm", "-rf", f"{units}/{old}.d", f"{units}/{new}.d",
                f"{units}/oj-cron@janitor.service.d", f"{units}/oj-cron@shop:janitor.service.d"])


def test_oj_worker_start_hands_over_an_old_unit_still_running_the_old_code(
        installed: Sandbox, sandbox_dir: Path):
    """After a pip upgrade nothing restarts oj-worker@merge.service: it runs on, on the
    code before (here: its worker by its bare name, from a runtime drop-in the handover
    does not move). `oj worker start merge` in the project stops and disables it, and
    starts oj-worker@shop:merge.service, enabled in its place; a push runs once, there."""
    import os
    import sys

    from ojd.events import worker_recorded
    from ojd.store import Store

    sb = installed
    state = sandbox_dir / "state"
    shop = Project(sb, sandbox_dir / "shop", state, None)
    store = Store(str(state))
    store.load()
    store.append(worker_recorded(name="merge", project=str(shop.root), runbook="old",
                                 queue="merges", pipeline="merge", concurrency=1))
    old, new = "oj-worker@merge.service", "oj-worker@shop:merge.service"
    dropin, runtime = f"/etc/systemd/system/{old}.d", f"/run/systemd/system/{old}.d"
    ojd = os.path.join(os.path.dirname(sys.executable), "ojd")
    sb.run(["mkdir", "-p", dropin, runtime])
    sb.run(["sh", "-c", f"cat > {dropin}/50-oj-state.conf"],
           input=f'[Service]\nEnvironment="OJ_STATE_DIR={state}"\n')
    sb.run(["sh", "-c", f"cat > {runtime}/90-before-the-upgrade.conf"],
           input=f"[Service]\nExecStart=\nExecStart={ojd} worker merge --project {shop.root}\n")
    sb.systemctl("daemon-reload")
    sb.systemctl("enable", old)
    try:
        sb.systemctl("start", old)
        proc = shop.oj("worker", "start", "merge")
        assert proc.stdout == "Worker 'merge' started\n"
        assert proc.stderr == (f"oj: renamed: worker merge is shop:merge from now on; {new} "
                               f"takes the place of {old} (enabled in its place), which was "
                               "stopped\n")
        assert sb.systemctl("is-active", old, check=False) == "inactive"
        assert sb.systemctl("is-enabled", old, check=False) == "disabled"
        assert sb.systemctl("is-enabled", new) == "enabled"
        assert sb.unit_property(new, "ActiveState") == "active"
        shop.oj("queue", "push", "merges", '{"n": "after"}')
        sb.wait_for(lambda: shop.ran("merged after"), timeout=30, what="the push to run")
        assert shop.ran("merged") == ["merged after"]
        # the next start finds nothing left to hand over
        assert shop.oj("worker", "start", "merge").stderr == ""
    finally:
        shop.oj("worker", "stop", "merge", check=False)
        sb.systemctl("disable", new, old, check=False)
        sb.systemctl("stop", old, check=False)
        sb.run(["rm", "-rf", dropin, runtime, f"/etc/systemd/system/{new}.d"])
        sb.systemctl("daemon-reload")
