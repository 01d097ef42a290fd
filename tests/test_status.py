"""`oj status` through the installed CLI: one screen per project of workers, running, waiting
and failed jobs, queues and agents; -o json with the same content; --watch under a terminal;
and a unit worker's state and enablement from the real systemd of the sandbox."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import time
import uuid
from pathlib import Path

import pytest
from conftest import OJ, Project, asleep_in, wait_until
from sandbox import Sandbox
from test_agents import AgentProject, ap  # noqa: F401 - the fixture, with its cleanup
from test_foreground import Foreground
from test_systemd_workers import UnitProject

WORKER = r"""
    queue "jobs" {
      type     = "persisted"
      vars     = ["n", "mode"]
      defaults = { mode = "ok" }
    }
    worker "w" {
      source      = { queue = "jobs" }
      handler     = { pipeline = "work" }
      concurrency = 2
      poll        = "1h"
    }
    pipeline "work" {
      vars = ["item"]
      step "one" {
        run = <<-SHELL
          if [ "${var.item.mode}" = fail ]; then exit 3; fi
          while [ ! -e "${invoke.dir}/go" ]; do sleep 0.05; done
        SHELL
      }
    }
    command "bad" {
      run = { pipeline = "broken" }
    }
    pipeline "broken" {
      step "only" {
        run = "exit 5"
      }
    }
    """
ANSI = "\x1b["


def jobs_by_status(p: Project) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for j in p.json("job", "list"):  # type: ignore[union-attr]
        out.setdefault(j["status"], []).append(j)
    return out


@pytest.fixture
def busy(ap: AgentProject):  # noqa: F811 - the fixture imported above
    """A foreground worker running one job, a failed job with its item dead, and a job whose
    agent escalated (waiting for a person)."""
    ap.setup('''
      on_idle = "escalate"
      on_dead = "done"
    ''')
    ap.write("w.hcl", WORKER)
    worker = Foreground(ap, "w")
    worker.wait_for("ready: queue 'jobs'")
    # "last poll" is the lock file's mtime: the start's must be told from the pushes' polls
    lock = ap.state / "workers" / f"{ap.root.name}:w.lock"
    wait_until(lambda: time.time() > lock.stat().st_mtime + 0.1, "the start's poll to age")
    ap.pushed_at = time.time()
    ap.oj("queue", "push", "jobs", '{"n": "1"}')
    ap.oj("queue", "push", "jobs", '{"n": "2", "mode": "fail"}')
    run = ap.background("run", "go")
    wait_until(lambda: {s: len(js) for s, js in jobs_by_status(ap).items()}
               == {"running": 1, "failed": 1, "waiting": 1},
               "a running, a failed and a waiting job", timeout=30)
    yield ap, worker
    (ap.root / "go").touch()
    worker.stop()
    live = [j["id"] for j in ap.json("job", "list") if j["status"] in ("running", "waiting")]
    if live:
        ap.oj("job", "cancel", *live, check=False)
    run.communicate(timeout=30)


def rows(text: str, title: str) -> list[list[str]]:
    """The rows (cells split on runs of 2+ spaces) of the table under ``title:``."""
    lines = text.splitlines()
    start = lines.index(f"{title}:") + 2  # the title, then the header
    out = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        out.append(re.split(r"\s{2,}", line.strip()))
    return out


def test_status_shows_workers_running_waiting_and_failed_jobs_queues_and_agents(busy):
    p, worker = busy
    by = jobs_by_status(p)
    (running,), (failed,), (waiting,) = by["running"], by["failed"], by["waiting"]
    out = p.oj("status").stdout
    assert ANSI not in out  # not a terminal: no colour
    assert out.splitlines()[0].startswith(f"── {p.root} ─")
    assert "needs a person: 1 failed, 1 waiting, 1 dead" in out
    (w,) = rows(out, "Workers")
    assert w[:5] == ["w", "foreground", "-", "1/2", "0"], w
    assert w[5].endswith("s ago") and w[6] == "jobs", w
    assert [r[:4] for r in rows(out, "Running")] == [[running["id"], "work", "one", "w"]]
    assert [r[:3] + r[4:] for r in rows(out, "Waiting for a person")] == \
        [[waiting["id"], waiting["name"], "work", "agent 'helper' is idle"]]
    assert [r[:3] + r[4:] for r in rows(out, "Failed in the last day")] == \
        [[failed["id"], "work", "one", "step 'one' failed (exit 3)"]]
    assert rows(out, "Queues") == [["jobs", "persisted", "0", "1", "1", "w"]]
    (agent,) = rows(out, "Agents")
    assert agent[:4] == [waiting["id"], "work", "helper", "waiting"], agent

    report = json.loads(p.oj("status", "-o", "json").stdout)
    (section,) = report["projects"]
    assert section["project"] == str(p.root)
    assert section["attention"] == {"failed_units": 0, "waiting_jobs": 1, "failed_jobs": 1,
                                    "dead_items": 1}
    (wj,) = section["workers"]
    assert (wj["name"], wj["state"], wj["main_pid"], wj["active"], wj["concurrency"],
            wj["pending"], wj["enabled"]) == ("w", "foreground", worker.proc.pid, 1, 2, 0, None)
    assert p.pushed_at - 0.05 <= wj["last_poll"] <= time.time()  # polled for the pushes
    jobs = section["jobs"]
    assert [j["id"] for j in jobs["running"]] == [running["id"]]
    assert [(j["id"], j["reason"]) for j in jobs["waiting"]] == \
        [(waiting["id"], "agent 'helper' is idle")]
    assert [(j["id"], j["error"]) for j in jobs["failed"]] == \
        [(failed["id"], "step 'one' failed (exit 3)")]
    (q,) = section["queues"]
    assert (q["name"], q["pending"], q["active"], q["dead"], q["workers"]) == \
        ("jobs", 0, 1, 1, ["w"])
    assert [(a["job"], a["status"]) for a in section["agents"]] == [(waiting["id"], "waiting")]
    assert section["crons"] == []
    assert report["systemd"] == {"asked": False, "problem": None}  # no manager here

    # a person answers: nothing is waiting any more, nothing is red about it
    (p.root / "go").touch()
    p.oj("job", "cancel", waiting["id"])
    wait_until(lambda: "running" not in jobs_by_status(p), "the running job to finish")
    section = json.loads(p.oj("status", "-o", "json").stdout)["projects"][0]
    assert section["jobs"]["running"] == [] and section["jobs"]["waiting"] == []
    assert section["agents"] == []
    assert section["attention"]["waiting_jobs"] == 0


def watch_in_a_terminal(p: Project, frames: int) -> tuple[str, int]:
    """`oj status --watch` on a pseudo-terminal until it drew ``frames`` screens, then
    Ctrl-C (SIGINT, as the terminal sends it); its whole output and exit status."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing of pytest runs here
        os.chdir(p.root)
        os.execve(OJ, [OJ, "status", "--watch"], p.env())
    out = b""
    deadline = time.monotonic() + 20
    try:
        while out.count(b"\x1b[H\x1b[2J") < frames:
            assert time.monotonic() < deadline, out.decode(errors="replace")
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        # Ctrl-C in the wait between frames, as a person watching would press it
        wait_until(lambda: asleep_in(pid, "nanosleep"), "the watch to wait for its next frame")
        os.kill(pid, signal.SIGINT)
        while select.select([fd], [], [], 5)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_watch_redraws_in_red_on_a_terminal_and_ctrl_c_ends_it_with_0(project: Project):
    project.write("w.hcl", WORKER)
    failed = project.oj("run", "bad", check=False)
    assert failed.returncode == 1
    (job,) = project.json("job", "list")  # type: ignore[misc]
    started = time.monotonic()
    out, code = watch_in_a_terminal(project, 2)
    assert time.monotonic() - started >= 2  # the second screen comes 2 s after the first
    assert code == 0, out
    assert "Traceback" not in out and "Aborted" not in out
    frame = out.split("\x1b[H\x1b[2J")[-1]
    assert f"── {project.root} ─" in frame
    assert f"\x1b[31m{job['id']}\x1b[0m" in frame  # the failed job, in red
    assert "\x1b[31mneeds a person: 1 failed\x1b[0m" in frame


def test_no_color_turns_colour_off_on_a_terminal_and_watch_refuses_json(project: Project):
    project.write("w.hcl", WORKER)
    project.oj("run", "bad", check=False)
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(project.root)
        os.execve(OJ, [OJ, "status"], project.env(NO_COLOR="1"))
    out = b""
    while select.select([fd], [], [], 5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    assert b"needs a person: 1 failed" in out and ANSI.encode() not in out
    proc = project.oj("status", "--watch", "-o", "json", check=False)
    assert proc.returncode == 2
    assert proc.stderr == "oj: --watch redraws a screen for people; -o json prints once\n"


@pytest.mark.end_to_end  # the installed `oj` as a subprocess
def test_outside_a_project_status_shows_every_project_of_the_state_dir(tmp_path: Path):
    state = tmp_path / "state"
    a = Project(tmp_path / "a", state)
    b = Project(tmp_path / "b", state)
    for p in (a, b):
        p.write("w.hcl", WORKER)
    a.oj("queue", "push", "jobs", '{"n": "1"}')
    b.oj("run", "bad", check=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = a.oj("status", cwd=elsewhere).stdout
    headers = [line for line in out.splitlines() if line.startswith("── ")]
    assert [h.split()[1] for h in headers] == [str(a.root), str(b.root)]
    section_a, section_b = out.split(f"── {b.root}")
    assert rows(section_a, "Queues") == [["jobs", "persisted", "1", "0", "0", "-"]]
    assert "Failed in the last day:" in section_b and "Queues:" not in section_b
    report = json.loads(a.oj("status", "-o", "json", cwd=elsewhere).stdout)
    assert [s["project"] for s in report["projects"]] == [str(a.root), str(b.root)]
    assert [len(s["jobs"]["failed"]) for s in report["projects"]] == [0, 1]
    # inside one project, only that one
    inside = json.loads(a.oj("status", "-o", "json").stdout)
    assert [s["project"] for s in inside["projects"]] == [str(a.root)]


@pytest.fixture
def enabled_worker(installed: Sandbox, sandbox_dir: Path):
    name = "s" + uuid.uuid4().hex[:8]
    p = UnitProject(installed, sandbox_dir / "project", name)
    yield p
    p.oj("worker", "stop", "--cancel", p.worker, check=False)
    p.oj("worker", "disable", p.worker, check=False)
    installed.systemctl("reset-failed", p.unit, check=False)
    installed.run(["rm", "-rf", f"/etc/systemd/system/{p.unit}.d"])
    installed.systemctl("daemon-reload")


def test_a_unit_worker_shows_active_and_enabled_and_its_job_scope_running(
        enabled_worker: UnitProject):
    p = enabled_worker
    p.oj("worker", "start", "--enable", p.worker)
    p.push(1, "hang")
    p.wait_for(lambda: p.ran() == ["start 1"], "the job's step to start")
    report = json.loads(p.oj("status", "-o", "json").stdout)
    assert report["systemd"] == {"asked": True, "problem": None}
    (section,) = report["projects"]
    (w,) = section["workers"]
    assert (w["name"], w["state"], w["enabled"], w["active"]) == \
        (p.worker, "active/running", True, 1), w
    assert w["main_pid"] == int(p.prop("MainPID"))
    (job,) = section["jobs"]["running"]
    assert job["unit"] == f"oj-job-{job['id']}.scope"
    assert job["unit_state"] == "active/running"
    (row,) = rows(p.oj("status").stdout, "Workers")
    assert row[:3] == [p.worker, "active/running", "enabled"], row
    p.oj("worker", "disable", p.worker)
    (w,) = json.loads(p.oj("status", "-o", "json").stdout)["projects"][0]["workers"]
    assert w["enabled"] is False

