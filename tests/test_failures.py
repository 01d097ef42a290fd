"""Failures a person can see and dismiss: a missing program named in the failure, the job
log's lifecycle lines, `oj job logs -f` exiting with the job's outcome, what counts as
needing a person, `oj job dismiss` and `oj job rerun`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OJ, Project, wait_until

from ojd import events
from ojd.agents.watch import screen_lines
from ojd.runners.jobs import item_lines
from ojd.runners.notfound import missing_command
from ojd.state import State
from ojd.status import job_rows

RUNBOOK = r"""
    command "ok"      { run = { pipeline = "ok" } }
    command "fail"    { run = { pipeline = "fail" } }
    command "missing" { run = { pipeline = "missing" } }
    command "slow" {
      args = "<tag>"
      run  = { pipeline = "slow" }
    }

    pipeline "ok" {
      step "work" { run = "echo worked >> ${invoke.dir}/ran.txt" }
    }
    pipeline "fail" {
      step "work" { run = "exit 3" }
    }
    pipeline "fail_item" {
      vars = ["it"]
      step "work" { run = "exit 3" }
    }
    pipeline "missing" {
      step "check" { run = "echo before; no-such-program-here --flag" }
    }
    pipeline "slow" {
      vars = ["tag"]
      step "wait" {
        run = "until [ -e ${invoke.dir}/go-${var.tag} ]; do sleep 0.05; done"
      }
    }

    queue "retrying" {
      type  = "persisted"
      vars  = ["n"]
      retry = { attempts = 2, cooldown = "1h" }
    }
    worker "retrier" {
      source  = { queue = "retrying" }
      handler = { pipeline = "fail_item" }
    }
    """


@pytest.fixture
def p(project: Project) -> Project:
    project.write("f.hcl", RUNBOOK)
    return project


def jobs(p: Project) -> list[dict]:
    return p.json("job", "list")  # type: ignore[return-value]


def last_job(p: Project) -> dict:
    return jobs(p)[-1]


def attention(p: Project) -> dict:
    [section] = p.json("status")["projects"]  # type: ignore[index]
    return section["attention"]


# -- the pure parts ------------------------------------------------------------------------------


def test_missing_command_is_read_from_bashs_message():
    assert missing_command(b"x\nbash: line 1: claude: command not found\n") == "claude"
    assert missing_command("/s/oj.sh: line 3: ./build.sh: No such file or directory") == \
        "./build.sh"
    assert missing_command(b"all fine\n") is None
    # the last one said is the one that failed the script
    assert missing_command(b"bash: a: command not found\nbash: line 2: b: command not found\n"
                           ) == "b"


def test_an_agents_last_screen_is_indented_bounded_and_cannot_forge_log_lines():
    screen = "\n".join(f"line {i}" for i in range(100)) + "\n==> job done\x1b[2J\n\n\n"
    lines = screen_lines(screen, limit=5)
    assert lines == ["  | line 96", "  | line 97", "  | line 98", "  | line 99",
                     "  | ==> job done\\x1b[2J"]
    assert screen_lines("\n\n  \n") == []


def test_item_lines_say_when_an_item_is_retried_or_dead():
    retry = events.queue_failed(id="i1", error="x", dead=False, retry_at=time.time() + 90)
    dead = events.queue_failed(id="i2", error="x", dead=True, retry_at=None)
    lines = [line.decode() for line in item_lines([retry, dead,
                                                    events.queue_completed(id="i3")])]
    assert lines[0].startswith("==> item i1 is retried in 1m")
    assert lines[1].startswith("==> item i2 is dead")
    assert len(lines) == 2


def _state(*evs: dict) -> State:
    state = State()
    for n, ev in enumerate(evs, 1):
        state.apply({**ev, "ts": float(n)}, n)
    return state


def _failed_job(item: str | None) -> list[dict]:
    return [events.job_created(id="j1", project="/p", pipeline="x", name="x", vars={},
                               cwd="/p", workspace=None, invoke="/p", item=item,
                               worker="w" if item else None, by="w/1"),
            events.job_finished(id="j1", outcome="failed", error="boom")]


def test_a_failure_waiting_out_its_retry_does_not_need_a_person():
    state = _state(events.queue_pushed(id="i1", project="/p", queue="q", data={}, key=""),
                   events.queue_taken(id="i1", by="w/1", job="j1"),
                   *_failed_job("i1"),
                   events.queue_failed(id="i1", error="boom", dead=False, retry_at=100.0))
    [row] = job_rows(list(state.jobs.values()), None, 10.0, state.items)["failed"]
    assert row["retry_at"] == 100.0 and row["needs_person"] is False
    # dead: nothing retries it, a person must look
    state.apply({**events.queue_failed(id="i1", error="boom", dead=True, retry_at=None),
                 "ts": 9.0})
    [row] = job_rows(list(state.jobs.values()), None, 10.0, state.items)["failed"]
    assert row["retry_at"] is None and row["needs_person"] is True


def test_a_dismissed_job_leaves_the_failed_list_until_it_is_reopened():
    state = _state(*_failed_job(None), events.job_dismissed(id="j1"))
    assert state.jobs["j1"]["dismissed"] and state.jobs["j1"]["status"] == "failed"
    assert job_rows(list(state.jobs.values()), None, 10.0, state.items)["failed"] == []
    state.apply({**events.job_reopened(id="j1", step=None, vars={}), "ts": 9.0})
    assert not state.jobs["j1"]["dismissed"]


def test_a_running_job_is_never_marked_dismissed_by_the_fold():
    state = _state(*_failed_job(None)[:1], events.job_dismissed(id="j1"))
    assert not state.jobs["j1"].get("dismissed")


# -- through the CLI -----------------------------------------------------------------------------


def test_a_step_whose_program_is_missing_says_which_command(p: Project):
    proc = p.oj("run", "missing", check=False)
    assert proc.returncode == 1
    err = "step 'check' failed (exit 127): command 'no-such-program-here' not found"
    assert err in proc.stderr
    j = last_job(p)
    assert p.json("job", "show", j["id"])["error"] == err  # type: ignore[index]
    assert f"==> job failed: {err}" in p.oj("job", "logs", j["id"]).stdout


def test_the_job_log_records_its_end_its_cancel_and_its_resume(p: Project):
    p.oj("run", "ok")
    log = p.oj("job", "logs", last_job(p)["id"]).stdout
    assert log.splitlines()[-1] == "==> job done"

    follower = subprocess.Popen([OJ, "run", "slow", "a"], cwd=p.root, env=p.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: jobs(p)[-1]["step"] == "wait", "the slow job in its step")
        job_id = last_job(p)["id"]
        p.oj("job", "cancel", job_id)
        assert follower.wait(timeout=30) == 4
    finally:
        follower.kill()
    assert "==> job cancelled" in p.oj("job", "logs", job_id).stdout.splitlines()

    (p.root / "go-a").touch()
    p.oj("job", "resume", job_id)
    log = p.oj("job", "logs", job_id).stdout.splitlines()
    resumed = [line for line in log if line.startswith("==> resumed at step wait")]
    assert resumed and log.index(resumed[0]) > log.index("==> job cancelled")
    assert log[-1] == "==> job done"


def test_job_logs_follow_exits_with_the_jobs_outcome(p: Project):
    p.oj("run", "ok")
    assert p.oj("job", "logs", "-f", last_job(p)["id"]).returncode == 0
    assert p.oj("run", "fail", check=False).returncode == 1
    failed = p.oj("job", "logs", "-f", last_job(p)["id"], check=False)
    assert failed.returncode == 1 and "==> job failed" in failed.stdout

    # a running job: followed until it ends, with its outcome
    p.oj("run", "-d", "slow", "b")
    job_id = last_job(p)["id"]
    follower = subprocess.Popen([OJ, "job", "logs", "-f", job_id], cwd=p.root, env=p.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: last_job(p)["step"] == "wait", "the slow job in its step")
    assert follower.poll() is None  # still following
    p.oj("job", "cancel", job_id)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 4, err
    assert "==> job cancelled" in out


def test_dismiss_takes_a_failure_out_of_what_needs_a_person_and_keeps_it(p: Project):
    p.oj("run", "fail", check=False)
    job_id = last_job(p)["id"]
    assert attention(p)["failed_jobs"] == 1
    assert p.oj("job", "dismiss", job_id).stdout == f"job {job_id} dismissed\n"
    assert attention(p)["failed_jobs"] == 0
    assert "needs a person" not in p.oj("status").stdout
    j = p.json("job", "show", job_id)
    assert j["status"] == "failed" and j["dismissed"]  # type: ignore[index]
    assert job_id in [j["id"] for j in jobs(p)]


def test_dismiss_all_and_its_refusals(p: Project):
    p.oj("run", "fail", check=False)
    p.oj("run", "fail", check=False)
    p.oj("run", "ok")
    done = last_job(p)["id"]
    refused = p.oj("job", "dismiss", done, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"oj: job {done} is done; only a failed, waiting or cancelled job is dismissed "
        "(nothing about it needs a person)"]
    assert attention(p)["failed_jobs"] == 2  # the refusal dismissed none
    assert p.oj("job", "dismiss", "--all").stdout.count("dismissed") == 2
    assert attention(p)["failed_jobs"] == 0
    assert p.oj("job", "dismiss", "--all").stdout == "nothing to dismiss\n"
    assert p.oj("job", "dismiss", check=False).returncode == 2


def test_dismissing_a_running_job_is_refused_in_one_line(p: Project):
    p.oj("run", "-d", "slow", "c")
    job_id = last_job(p)["id"]
    try:
        proc = p.oj("job", "dismiss", job_id, check=False)
        assert proc.returncode != 0
        assert proc.stderr == (f"oj: job {job_id} is running; only a failed, waiting or "
                               f"cancelled job is dismissed (cancel it first: oj job cancel "
                               f"{job_id})\n")
    finally:
        p.oj("job", "cancel", job_id)


def test_a_failed_worker_job_retrying_later_does_not_need_a_person(p: Project):
    p.oj("queue", "push", "retrying", '{"n": "1"}')
    proc = p.ojd("worker", "retrier", "--foreground")  # --until-idle would wait out the hour
    try:
        wait_until(lambda: [i["status"] for i in p.items("retrying")] == ["failed"],
                   "the item failed, waiting out its cooldown")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    [j] = jobs(p)
    assert j["status"] == "failed"
    [item] = p.items("retrying")
    assert item["status"] == "failed"  # waits out its cooldown of an hour
    assert attention(p)["failed_jobs"] == 0
    assert "retries in 59m" in p.oj("status").stdout
    log = p.oj("job", "logs", j["id"]).stdout
    assert f"==> item {item['id']} is retried in 59m" in log


def test_rerun_runs_a_job_again_as_a_new_linked_job(p: Project):
    p.oj("run", "ok")
    old = last_job(p)["id"]
    proc = p.oj("job", "rerun", old)
    assert proc.returncode == 0
    new = last_job(p)["id"]
    assert new != old
    assert f"job {new} (ok) started: a rerun of job {old}" in proc.stderr
    assert (p.root / "ran.txt").read_text() == "worked\nworked\n"
    assert p.json("job", "show", new)["rerun_of"] == old  # type: ignore[index]
    assert f"rerun as:  {new}" in p.oj("job", "show", old).stdout
    assert p.json("job", "show", old)["status"] == "done"  # type: ignore[index]
    # a failed one fails again, with its outcome as the exit status; -d prints the id only
    p.oj("run", "fail", check=False)
    assert p.oj("job", "rerun", last_job(p)["id"], check=False).returncode == 1
    detached = p.oj("job", "rerun", "-d", old)
    assert detached.stdout.strip() == last_job(p)["id"]


def test_rerun_of_a_running_job_is_refused(p: Project):
    p.oj("run", "-d", "slow", "d")
    job_id = last_job(p)["id"]
    try:
        proc = p.oj("job", "rerun", job_id, check=False)
        assert proc.returncode != 0
        assert proc.stderr.startswith(f"oj: job {job_id} is running; only a finished job")
    finally:
        p.oj("job", "cancel", job_id)


# -- readable processes ----------------------------------------------------------------------------


def test_the_step_wrapper_line_is_short_and_the_script_sees_none_of_its_fds(tmp_path):
    from ojd.runners.stepprocess import StepCommand

    status = str(tmp_path / "status")
    script = "echo $0 $#; ls /proc/self/fd | wc -l; " + "# padding\n" * 500 + "exit 3"
    r, w = os.pipe()
    with StepCommand("3f9c", "check", r, status, "0", script) as command:
        proc = subprocess.Popen(command.argv, pass_fds=command.fds, stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
    os.close(r)
    os.write(w, b"go\n")
    os.close(w)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert Path(status).read_text() == "3\n"
    name, nargs, fds = out.split()
    assert (name, nargs) == ("bash", "0")
    assert int(fds) == 4  # stdin, stdout, stderr and ls's own directory: no memory files left
    line = " ".join(command.argv)
    assert "oj-step:3f9c:check" in line and "padding" not in line, line
    assert len(line) - len(status) < 100, line  # the status file's path aside


def test_a_process_title_shows_in_ps(tmp_path):
    code = ("import os, sys; from ojd.runners.proctitle import set_title; "
            "set_title('ojd job 3f9c merge/check', 'oj-job-3f9c'); "
            "print(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[0].decode()); "
            "print(open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code, "a long enough argument list"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["ojd job 3f9c merge/check", "oj-job-3f9c"]
