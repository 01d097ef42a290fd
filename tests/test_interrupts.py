"""Interruptions and timing edges: Ctrl-C on `oj run`, retries due before the fallback poll."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import pytest
from conftest import OJ, Project


def test_ctrl_c_on_oj_run_detaches_and_the_job_runs_on_until_cancelled(project: Project):
    marker = f"oj-test-{uuid.uuid4().hex[:8]}"
    project.write("slow.hcl", f"""
        command "slow" {{
          args = ""
          run  = {{ pipeline = "slow" }}
        }}
        pipeline "slow" {{
          step "wait" {{
            run = "echo started > ${{invoke.dir}}/ran.txt; exec -a {marker} sleep 300"
          }}
        }}
        """)
    proc = subprocess.Popen([OJ, "run", "slow"], cwd=project.root, env=project.env(),
                            stderr=subprocess.PIPE, text=True)
    ran = project.root / "ran.txt"
    deadline = time.monotonic() + 20
    while not ran.exists():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process group
    assert proc.wait(timeout=20) == 130
    [job] = project.json("job", "list")
    assert f"follow it: oj job logs -f {job['id']}; cancel it: oj job cancel {job['id']}" \
        in proc.stderr.read()
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left != "", "the step stopped with oj run"
    assert job["status"] == "running"
    project.oj("job", "cancel", job["id"])
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == "", f"step still running: {left}"
    assert project.json("job", "list")[0]["status"] == "cancelled"
    waited = project.oj("job", "wait", job["id"], check=False)
    assert waited.returncode == 4


def _starting_its_job(pid: int) -> bool:
    """Whether ``oj run`` (``pid``) is starting its job's process: SIGINT alone blocked (a
    subprocess's spawn blocks every signal for a moment), and the job's process forked."""
    try:
        with open(f"/proc/{pid}/status") as f:
            blocked = next(line for line in f if line.startswith("SigBlk:"))
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except (OSError, StopIteration):
        return False
    return int(blocked.split()[1], 16) == 1 << (signal.SIGINT - 1) and bool(children)


def test_ctrl_c_held_back_while_the_jobs_process_starts_still_says_the_job_runs_on(
        project: Project):
    """Ctrl-C while `oj run` starts its job's process waits until the process runs, then
    lands after the start: it says so as a Ctrl-C while following does."""
    project.write("slow.hcl", """
        command "slow" {
          args = ""
          run  = { pipeline = "slow" }
        }
        pipeline "slow" {
          step "wait" {
            run = "sleep 300"
          }
        }
        """)
    caught = None
    for _ in range(20):  # each try catches oj run inside its start, or lets it go by
        proc = subprocess.Popen([OJ, "run", "slow"], cwd=project.root, env=project.env(),
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while proc.poll() is None and not _starting_its_job(proc.pid) \
                and time.monotonic() < deadline:
            pass  # a busy look: the window is milliseconds long
        proc.send_signal(signal.SIGSTOP)
        if _starting_its_job(proc.pid):
            caught = proc
            break
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert caught is not None, "oj run was never caught starting its job's process"
    caught.send_signal(signal.SIGINT)  # pending: SIGINT is blocked
    caught.send_signal(signal.SIGCONT)
    assert caught.wait(timeout=20) == 130
    err = caught.stderr.read()
    jobs = project.json("job", "list")
    running = [j for j in jobs if j["status"] == "running"]
    assert any(f"keeps running; follow it: oj job logs -f {j['id']}" in err for j in running), \
        err
    project.oj("job", "cancel", *[j["id"] for j in running])


@pytest.mark.parametrize("cooldown", ["1s", "0s"])  # "0s": retried at once
def test_a_failed_item_is_retried_when_its_cooldown_ends_not_at_the_next_poll(
        project: Project, cooldown: str):
    project.write("w.hcl", r"""
        queue "q" {
          vars  = ["n"]
          retry = { attempts = 1, cooldown = "COOLDOWN" }
        }
        worker "w" {
          source  = { queue = "q" }
          handler = { pipeline = "p" }
          poll    = "1h"
        }
        pipeline "p" {
          vars = ["item"]
          step "s" {
            run = "if [ -e ${invoke.dir}/seen ]; then exit 0; fi; touch ${invoke.dir}/seen; exit 1"
          }
        }
        """.replace("COOLDOWN", cooldown))
    project.oj("queue", "push", "q", json.dumps({"n": "1"}))
    proc = project.ojd("worker", "w", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=30)  # an hour-long poll would time this out
    assert proc.returncode == 0, out
    [item] = project.items()
    assert (item["status"], item["attempts"]) == ("completed", 2)
