"""`ojd up`: one foreground process runs every worker and cron of a project, as a container
runs it: pushes wake it, crons tick (with a missed calendar tick caught up), `oj worker start`
inside the project asks it for a worker, SIGTERM leaves running jobs to finish, and as a PID
namespace's init it leaves no zombie.

No systemd is needed or used: `oj` commands run as on a machine without a manager
(test_foreground.without_systemd)."""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import OJD, Project, require, wait_until
from test_foreground import without_systemd

pytestmark = pytest.mark.wal_only

RUNBOOK = r"""
    queue "q1" {
      vars = ["n"]
    }
    queue "q2" {
      vars = ["n"]
    }
    worker "w1" {
      source  = { queue = "q1" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    worker "w2" {
      source  = { queue = "q2" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    pipeline "p" {
      vars = ["item"]
      step "one" {
        run = "STEP"
      }
    }
    """
WRITE = "echo ${var.item.n} >> ${invoke.dir}/out.txt"
INTERVAL_CRON = """
    cron "c" {
      interval = "1s"
      run      = "echo tick >> ticks.txt"
    }
    """


def runbook(step: str = WRITE, extra: str = "") -> str:
    return RUNBOOK.replace("STEP", step) + extra


class UpProcess:
    """`ojd up` as a container or a terminal runs it; its output collected as it comes."""

    def __init__(self, project: Project, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([*prefix, OJD, "up", *args], cwd=project.root,
                                     env=project.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.output, f"{text!r} in ojd up's output:\n"
                   f"{self.output}", timeout)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def ups():
    started: list[UpProcess] = []
    yield started
    for up in started:
        up.stop()


def start_up(ups: list[UpProcess], project: Project, *args: str, **kw) -> UpProcess:
    up = UpProcess(project, *args, **kw)
    ups.append(up)
    return up


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def push(project: Project, tmp_path: Path, queue: str, n: str) -> None:
    proc = without_systemd(project, tmp_path, "queue", "push", queue, f'{{"n": "{n}"}}')
    assert proc.returncode == 0, proc.stderr
    assert "no worker was woken" not in proc.stderr


def test_two_workers_and_an_interval_cron_drain_their_queues_and_tick(
        project: Project, tmp_path: Path, ups):
    project.write("r.hcl", runbook(extra=INTERVAL_CRON))
    for n in ("1", "2"):  # waiting before it starts: its workers take them at once
        project.oj("queue", "push", "q1", f'{{"n": "a{n}"}}')
        project.oj("queue", "push", "q2", f'{{"n": "b{n}"}}')
    up = start_up(ups, project)
    wait_until(lambda: sorted(lines(project.root / "out.txt")) == ["a1", "a2", "b1", "b2"],
               "both queues drained")
    wait_until(lambda: len(lines(project.root / "ticks.txt")) >= 3, "three ticks of the cron")
    rows = {r["name"]: r for r in project.json("worker", "list")}
    assert {r["active_state"] for r in rows.values()} == {"foreground"}
    assert {r["sub_state"] for r in rows.values()} == {"ojd up"}
    assert "w1    foreground (ojd up)" in project.oj("worker", "list").stdout
    assert "worker 'w1' started (PID" in up.output and "worker 'w2' started (PID" in up.output
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait() == 0
    assert {e["name"] for e in project.events("worker:stopped")} == {"project:w1", "project:w2"}


def test_a_push_wakes_its_worker_at_once(project: Project, tmp_path: Path, ups):
    project.write("r.hcl", runbook())
    up = start_up(ups, project)
    up.wait_for("worker w2 info: ready")
    up.wait_for("worker w1 info: ready")
    push(project, tmp_path, "q2", "now")
    # the fallback poll is an hour away: only the push's wake-up runs the item this soon
    wait_until(lambda: lines(project.root / "out.txt") == ["now"], "the pushed item to run",
               timeout=10)


WAITS_FOR_GO = ("touch ${invoke.dir}/began; while [ ! -e ${invoke.dir}/go ]; do sleep 0.05; "
                "done; echo ${var.item.n} >> ${invoke.dir}/out.txt")


def test_sigterm_waits_for_the_running_job_then_exits_0(project: Project, tmp_path: Path,
                                                        ups):
    """A terminal's Ctrl-C, as huey's or sidekiq's: the prompt comes back when the job is
    done, though the job would run on without ojd up."""
    project.write("r.hcl", runbook(step=WAITS_FOR_GO))
    project.oj("queue", "push", "q1", '{"n": "1"}')
    up = start_up(ups, project)
    wait_until(lambda: (project.root / "began").exists(), "the job's step to start")
    up.proc.send_signal(signal.SIGTERM)
    up.wait_for("waiting (without bound) for 1 job(s) to end: job ")
    up.wait_for("worker w1 info: stopped")
    assert up.proc.poll() is None  # its workers have stopped; it stays for the job
    assert [i["status"] for i in project.items("q1")] == ["active"]
    (project.root / "go").touch()
    assert up.wait() == 0
    assert lines(project.root / "out.txt") == ["1"]
    assert [i["status"] for i in project.items("q1")] == ["completed"]
    assert re.search(r"job \w{4} p \(step one\): done", up.output), up.output


def test_as_a_pid_namespaces_init_sigterm_waits_for_the_running_job(project: Project, ups):
    """A container's stop: everything in the namespace ends with ojd up, so it stays until
    the job is done."""
    # justified: a PID namespace needs root and unshare; a developer's run skips, CI fails
    require(os.geteuid() == 0 and shutil.which("unshare") is not None,
            "a PID namespace needs root and unshare")
    project.write("r.hcl", runbook(step=WAITS_FOR_GO))
    project.oj("queue", "push", "q1", '{"n": "1"}')
    up = start_up(ups, project, prefix=("unshare", "--pid", "--fork", "--mount-proc"))
    wait_until(lambda: len(_children(up.proc.pid)) == 1, "ojd up as the namespace's init")
    [init] = _children(up.proc.pid)
    wait_until(lambda: (project.root / "began").exists(), "the job's step to start")
    os.kill(init, signal.SIGTERM)
    up.wait_for("waiting (without bound) for 1 job(s) to end: job ")
    assert up.proc.poll() is None
    (project.root / "go").touch()
    assert up.wait() == 0
    assert lines(project.root / "out.txt") == ["1"]
    assert [i["status"] for i in project.items("q1")] == ["completed"]


def test_grace_bounds_the_wait_and_the_job_goes_on(project: Project, tmp_path: Path, ups):
    project.write("r.hcl", runbook(step=WAITS_FOR_GO))
    project.oj("queue", "push", "q1", '{"n": "1"}')
    up = start_up(ups, project, "--grace", "1s")
    wait_until(lambda: (project.root / "began").exists(), "the job's step to start")
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait() == 0
    assert "--grace 1s is up; job " in up.output
    assert "goes on in its own process" in up.output
    assert lines(project.root / "out.txt") == []
    (project.root / "go").touch()  # outside a container the job outlives ojd up
    wait_until(lambda: [i["status"] for i in project.items("q1")] == ["completed"],
               "its item completed")


def test_a_bad_grace_is_one_line(project: Project):
    proc = subprocess.run([OJD, "up", "--grace", "soon"], cwd=project.root, env=project.env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "argument --grace: invalid duration 'soon'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_second_signal_stops_waiting_and_the_next_up_resumes_the_job(project: Project,
                                                                       tmp_path: Path, ups):
    """A container's stop that will not wait kills the jobs with it: the next `ojd up`
    resumes them."""
    project.write("r.hcl", runbook(
        step="echo run >> ${invoke.dir}/runs; while [ ! -e ${invoke.dir}/go ]; do "
             "sleep 0.05; done; echo ${var.item.n} >> ${invoke.dir}/out.txt"))
    project.oj("queue", "push", "q1", '{"n": "1"}')
    up = start_up(ups, project)
    wait_until(lambda: lines(project.root / "runs") == ["run"], "the job's step to start")
    [job] = project.json("job", "list")
    up.proc.send_signal(signal.SIGTERM)
    up.wait_for("waiting (without bound) for 1 job(s) to end")
    up.proc.send_signal(signal.SIGINT)
    assert up.wait() == 130
    assert "second SIGINT: no more waiting; job " in up.output
    os.kill(job["process"]["pid"], signal.SIGKILL)  # as the end of a container does
    (project.root / "go").touch()
    start_up(ups, project)
    wait_until(lambda: lines(project.root / "out.txt") == ["1"], "the job resumed")
    wait_until(lambda: [i["status"] for i in project.items("q1")] == ["completed"],
               "its item completed")
    assert len(project.json("job", "list")) == 1  # the same job, not a second one


def test_a_calendar_tick_missed_while_down_runs_once_at_start(project: Project,
                                                              tmp_path: Path, ups):
    # a daily tick a few seconds after a tick by hand: by the time `ojd up` starts it is
    # missed, and the next one is a day away, so every tick seen here is the catch-up
    due = time.gmtime(time.time() + 4)
    schedule = time.strftime("%H:%M:%S", due) + " UTC"
    project.write("r.hcl", f"""
        cron "daily" {{
          schedule = "{schedule}"
          run      = "echo tick >> ticks.txt"
        }}
        """)
    hand = subprocess.run([OJD, "cron", "daily", "--project", str(project.root)],
                          env=project.env(), capture_output=True, text=True, timeout=30)
    assert hand.returncode == 0, hand.stderr
    wait_until(lambda: lines(project.root / "ticks.txt") == ["tick"], "the tick by hand")
    wait_until(lambda: time.time() > calendar.timegm(due) + 1,
               "the daily tick to pass", timeout=10)
    up = start_up(ups, project)
    up.wait_for("cron 'daily': a tick was due while nothing ran it; ticking now")
    wait_until(lambda: lines(project.root / "ticks.txt") == ["tick", "tick"], "the catch-up")
    up.stop()
    # caught up once: a start right after finds nothing missed
    again = start_up(ups, project)
    again.wait_for("running project")
    wait_until(lambda: len(project.events("cron:tick")) == 2, "the catch-up's record")
    again.stop()
    assert "a tick was due" not in again.output
    assert len(project.events("cron:tick")) == 2


def test_oj_worker_start_inside_the_project_asks_ojd_up(project: Project, tmp_path: Path,
                                                          ups):
    # a step of w1 starts w2, as the shipped runbooks' 'oj worker start merge' lines do
    project.write("r.hcl", runbook(step="echo ${var.item.n} >> ${invoke.dir}/out.txt; "
                                        "oj worker start w2"))
    up = start_up(ups, project)
    up.wait_for("worker w2 info: ready")
    stop = without_systemd(project, tmp_path, "worker", "stop", "w2")
    assert stop.returncode == 0, stop.stderr
    up.wait_for("worker 'w2' stopped; 'oj worker start w2' starts it again")
    row = {r["name"]: r for r in project.json("worker", "list")}["w2"]
    assert (row["active_state"], row["sub_state"]) == ("stopped", "ojd up")
    project.oj("queue", "push", "q2", '{"n": "waits"}')
    push(project, tmp_path, "q1", "1")  # its step's 'oj worker start w2' asks ojd up
    wait_until(lambda: sorted(lines(project.root / "out.txt")) == ["1", "waits"],
               "w2 started by a step, its item run")
    # a worker the runbook gained since ojd up started: started on the same asking
    project.write("r2.hcl", """
        queue "q3" {
          vars = ["n"]
        }
        worker "w3" {
          source  = { queue = "q3" }
          handler = { pipeline = "p" }
          poll    = "1h"
        }
        """)
    started = without_systemd(project, tmp_path, "worker", "start", "w3")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() in ("Worker 'w3' started",
                                      "Worker 'w3' was already running; woken")
    push(project, tmp_path, "q3", "3")
    wait_until(lambda: "3" in lines(project.root / "out.txt"), "w3's item run")
    again = without_systemd(project, tmp_path, "worker", "start", "w1")
    assert again.stdout.strip() == "Worker 'w1' was already running; woken"


def test_until_idle_exits_once_nothing_can_run_without_a_person(project: Project, ups):
    project.write("r.hcl", runbook(
        step="test ${var.item.n} != bad; echo ${var.item.n} >> ${invoke.dir}/out.txt",
        extra=INTERVAL_CRON))
    for n in ("1", "bad"):
        project.oj("queue", "push", "q1", f'{{"n": "{n}"}}')
    project.oj("queue", "push", "q2", '{"n": "2"}')
    up = start_up(ups, project, "--until-idle")
    assert up.wait(timeout=60) == 0  # the cron ticking every second keeps nothing alive
    assert sorted(lines(project.root / "out.txt")) == ["1", "2"]
    statuses = sorted(i["status"] for q in ("q1", "q2") for i in project.items(q))
    assert statuses == ["completed", "completed", "dead"]  # the dead one needs a person
    assert "nothing left that can run without a person" in up.output


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _zombies(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] == "Z":
            found.append(child)
    return found


def test_as_a_pid_namespaces_init_it_leaves_no_zombie(project: Project, ups):
    # justified: a PID namespace needs root and unshare; a developer's run skips, CI fails
    require(os.geteuid() == 0 and shutil.which("unshare") is not None,
            "a PID namespace needs root and unshare")
    # each tick's job outlives its tick (`ojd cron`), so it is given to init, which must
    # reap it when it ends
    project.write("r.hcl", INTERVAL_CRON)
    up = start_up(ups, project, prefix=("unshare", "--pid", "--fork", "--mount-proc"))
    wait_until(lambda: len(_children(up.proc.pid)) == 1, "ojd up as the namespace's init")
    [init] = _children(up.proc.pid)
    up.wait_for(f"running project {project.root} (PID 1)")
    wait_until(lambda: len(lines(project.root / "ticks.txt")) >= 3, "three ticks")
    jobs = project.json("job", "list")
    assert len(jobs) >= 3
    # ticks go on, each leaving a job to reap: a zombie may be seen for an instant, never for
    # good
    wait_until(lambda: not _zombies(init), "no zombie among init's children")
    os.kill(init, signal.SIGTERM)
    assert up.wait() == 0


def test_a_worker_that_crashes_is_started_again(project: Project, tmp_path: Path, ups):
    project.write("r.hcl", runbook())
    up = start_up(ups, project)
    up.wait_for("worker w1 info: ready")
    [before] = [r["main_pid"] for r in project.json("worker", "list") if r["name"] == "w1"]
    os.kill(before, signal.SIGKILL)
    up.wait_for("worker 'w1' was killed by SIGKILL; starting it again in 1s")
    wait_until(lambda: [r["main_pid"] for r in project.json("worker", "list")
                        if r["name"] == "w1"] not in ([before], [None]), "a new w1")
    up.wait_for("worker 'w1' started (PID", timeout=5)
    push(project, tmp_path, "q1", "after")
    wait_until(lambda: lines(project.root / "out.txt") == ["after"], "the new w1 to run it")


def _next_daily(hour: int, now: float) -> float:
    """The next HH:00:00 UTC after ``now``."""
    day = time.gmtime(now)
    at = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, hour, 0, 0))
    return at if at > now else at + 86400


def test_cron_list_and_status_show_the_crons_ojd_up_ticks_with_their_next_run(
        project: Project, tmp_path: Path, ups):
    project.write("r.hcl", """
        cron "hourly" {
          interval = "1h"
          run      = "true"
        }
        cron "nightly" {
          schedule = "03:00 UTC"
          run      = "true"
        }
        """)
    before = time.time()
    up = start_up(ups, project)
    up.wait_for("running project")
    after = time.time()
    for listing in (project.json("cron", "list"),  # a host whose systemd runs no timer of it
                    json.loads(without_systemd(project, tmp_path, "cron", "list", "-o",
                                               "json").stdout)):  # a container's
        rows = {r["name"]: r for r in listing}
        assert {(r["active_state"], r["sub_state"]) for r in rows.values()} == {
            ("active", "ojd up")}
        # an interval one interval after ojd up's start (known to the second of the boot
        # time), a calendar at its next elapse
        assert before - 1.5 + 3600 <= rows["hourly"]["next_run"] <= after + 1.5 + 3600
        now = time.time()
        assert rows["nightly"]["next_run"] in (_next_daily(3, now - 5), _next_daily(3, now))
    text = project.oj("cron", "list").stdout
    assert "active (ojd up)" in text and "in 59m" in text
    [section] = project.json("status")["projects"]
    assert {c["name"]: c["sub_state"] for c in section["crons"]} == {"hourly": "ojd up",
                                                                     "nightly": "ojd up"}
    assert "active (ojd up)" in project.oj("status").stdout
    up.stop()
    # with ojd up gone, nothing ticks them
    assert {r["sub_state"] for r in project.json("cron", "list")} != {"ojd up"}


def test_a_push_to_a_stopped_worker_under_ojd_up_hints_oj_worker_start(
        project: Project, tmp_path: Path, ups):
    project.write("r.hcl", runbook())
    up = start_up(ups, project)
    up.wait_for("worker w2 info: ready")
    stop = without_systemd(project, tmp_path, "worker", "stop", "w2")
    assert stop.returncode == 0, stop.stderr
    up.wait_for("worker 'w2' stopped")
    for proc in (without_systemd(project, tmp_path, "queue", "push", "q2", '{"n": "1"}'),
                 project.oj("queue", "push", "q2", '{"n": "2"}')):  # no systemd, and systemd
        assert proc.returncode == 0, proc.stderr
        assert (f"oj: no worker was woken: 'w2' not running; 'ojd up' (PID {up.proc.pid}) "
                "runs this project: start it with 'oj worker start w2'") in proc.stderr
