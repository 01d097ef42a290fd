"""`oj queue push --wait [--follow]`: the push waits for the item's job and exits with its
outcome; it says when no worker runs to take the item, and Ctrl-C stops only the waiting."""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest
from conftest import OJ, Project, wait_until
from test_foreground import Foreground

from ojd.item_wait import progress
from ojd.state import State

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    queue "q" {
      vars  = ["n"]
      retry = { attempts = 1, cooldown = "1s" }  # a retry the wait sees coming
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    pipeline "p" {
      vars = ["item"]
      step "one" {
        run = <<-SHELL
          echo "step one of ${var.item.n}"
          case ${var.item.n} in
            bad) exit 3 ;;
            flaky) [ -e flaked ] || { touch flaked; exit 5; } ;;
            slow) while [ ! -e gate ]; do sleep 0.05; done ;;
          esac
        SHELL
      }
    }
    """


@pytest.fixture
def worker(project: Project):
    project.write("w.hcl", RUNBOOK)
    w = Foreground(project, "w")
    w.wait_for("ready: queue 'q'")
    yield project
    w.stop()


def test_push_wait_exits_0_when_the_items_job_is_done(worker: Project):
    proc = worker.oj("queue", "push", "q", '{"n": "ok"}', "--wait")
    item_id = proc.stdout.splitlines()[0]
    [job] = worker.json("job", "list")
    assert f"oj: item {item_id} completed (job {job['id']})" in proc.stderr
    assert "step one of" not in proc.stdout  # the log only with --follow


def test_push_follow_prints_the_log_and_exits_1_when_the_item_dies(worker: Project):
    proc = worker.oj("queue", "push", "q", '{"n": "bad"}', "--follow", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "step one of bad" in proc.stdout
    assert "the item waits for its retry" in proc.stderr  # the first of two attempts
    assert proc.stderr.splitlines()[-1].startswith(
        f"oj: item {proc.stdout.splitlines()[0]} dead (job ")
    assert worker.items("q")[0]["status"] == "dead"


def test_push_wait_waits_through_a_retry_to_the_items_outcome(worker: Project):
    proc = worker.oj("queue", "push", "q", '{"n": "flaky"}', "--wait", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "failed" in proc.stderr and "the item waits for its retry" in proc.stderr
    assert worker.items("q")[0]["status"] == "completed"


def test_push_wait_without_a_running_worker_says_so_and_leaves_the_item_queued(
        project: Project):
    project.write("w.hcl", RUNBOOK)
    proc = project.oj("queue", "push", "q", '{"n": "ok"}', "--wait", check=False)
    assert proc.returncode == 3
    assert proc.stderr.startswith("oj: not waiting: no worker was woken: 'w' not running; ")
    assert proc.stderr.rstrip().endswith("the item stays queued")
    assert [i["status"] for i in project.items("q")] == ["pending"]


def test_ctrl_c_stops_waiting_and_leaves_the_job_running(worker: Project):
    waiting = subprocess.Popen([OJ, "queue", "push", "q", '{"n": "slow"}', "--wait"],
                               cwd=worker.root, env=worker.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(waiting.stderr), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(" is in job " in line for line in said), "the wait in the job")
        waiting.send_signal(signal.SIGINT)
        waiting.wait(timeout=20)
        reader.join(timeout=5)
        err = "".join(said)
        assert waiting.returncode == 130
        [job] = worker.json("job", "list")
        assert job["status"] == "running"
        assert f"stopped waiting; job {job['id']} keeps running" in err
        assert "Traceback" not in err
    finally:
        if waiting.poll() is None:
            waiting.kill()
        (worker.root / "gate").touch()  # the job ends, whatever the test found
    wait_until(lambda: worker.json("job", "list")[0]["status"] == "done", "the job done")


@pytest.mark.parametrize("item,job,phase", [
    (None, None, "dropped"),
    ({"status": "pending"}, None, "pending"),
    ({"status": "active", "job": "j"}, {"status": "running"}, "running"),
    ({"status": "active", "job": "j"}, {"status": "done"}, "settling"),
    ({"status": "failed", "job": "j"}, {"status": "failed"}, "retrying"),
    ({"status": "completed", "job": "j"}, {"status": "done"}, "completed"),
    ({"status": "dead", "job": "j"}, {"status": "failed"}, "dead"),
    ({"status": "dead", "job": "j"}, {"status": "cancelled"}, "cancelled"),
])
def test_an_items_progress_is_read_from_the_item_and_its_job(item, job, phase):
    state = State()
    if item is not None:
        state.items["i"] = item
    if job is not None:
        state.jobs["j"] = job
    assert progress(state, "i").phase == phase
