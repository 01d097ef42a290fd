"""Job control: `oj job wait`, `oj job prune`, `oj workspace list|prune`, job names, and what
`oj job show` prints of a job's vars and locals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import OJ, Project, asleep_in, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    command "slow" {
      args = "<tag>"
      run  = { pipeline = "slow" }
    }

    command "ok" {
      args = ""
      run  = { pipeline = "ok" }
    }

    command "fail" {
      args = ""
      run  = { pipeline = "fail" }
    }

    command "shared" {
      args = "<tag>"
      run  = { pipeline = "shared" }
    }

    # runs until ${invoke.dir}/go-TAG exists
    pipeline "slow" {
      vars      = ["tag"]
      workspace = "ephemeral"
      step "first" {
        run     = "echo first"
        on_done = { step = "second" }
      }
      step "second" {
        run = "until [ -e ${invoke.dir}/go-${var.tag} ]; do sleep 0.05; done"
      }
    }

    pipeline "ok" {
      workspace = "ephemeral"
      step "work" { run = "echo done" }
    }

    pipeline "fail" {
      workspace = "ephemeral"
      step "work" { run = "echo kept > evidence.txt; exit 3" }
    }

    pipeline "shared" {
      vars      = ["tag"]
      workspace = "persistent"
      step "work" {
        run = <<-SHELL
          echo ${var.tag} >> seen.txt
          until [ -e ${invoke.dir}/go-${var.tag} ]; do sleep 0.05; done
        SHELL
      }
    }
    """


@pytest.fixture
def p(project: Project) -> Project:
    project.write("jobs.hcl", RUNBOOK)
    return project


def jobs(p: Project) -> list[dict]:
    return p.json("job", "list")  # type: ignore[return-value]


def job_named(p: Project, name: str) -> dict:
    [j] = [j for j in jobs(p) if j["name"] == name]
    return j


class Background:
    """`oj run slow TAG` (or `shared TAG`) running until released."""

    def __init__(self, p: Project, command: str, tag: str, step: str) -> None:
        self.p, self.tag = p, tag
        before = {j["id"] for j in jobs(p)}
        self.proc = subprocess.Popen([OJ, "run", command, tag], cwd=p.root, env=p.env(),
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        found: list[dict] = []

        def started() -> bool:
            found[:] = [j for j in jobs(p) if j["id"] not in before and j["step"] == step]
            return bool(found)

        wait_until(started, f"job of 'oj run {command} {tag}' in step {step}")
        self.id = found[0]["id"]

    def release(self) -> int:
        (self.p.root / f"go-{self.tag}").touch()
        return self.proc.wait(timeout=30)

    def interrupt(self) -> int:
        """Ctrl-C on the `oj run` that follows the job."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def cancel(self) -> int:
        """`oj job cancel`; what the `oj run` following the job exits with."""
        self.p.oj("job", "cancel", self.id)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def background(p: Project):
    started: list[Background] = []

    def start(tag: str, command: str = "slow", step: str = "second") -> Background:
        b = Background(p, command, tag, step)
        started.append(b)
        return b

    yield start
    for b in started:
        b.kill()  # the follower only: the job runs in a process of its own
    live = [j["id"] for j in jobs(p) if j["status"] in ("running", "waiting")]
    if live:
        p.oj("job", "cancel", *live)


def run_ok(p: Project) -> str:
    p.oj("run", "ok")
    return jobs(p)[-1]["id"]


def run_fail(p: Project) -> str:
    assert p.oj("run", "fail", check=False).returncode == 1
    return jobs(p)[-1]["id"]


def wait(p: Project, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return p.oj("job", "wait", *args, check=False, timeout=timeout)


# -- oj job wait -------------------------------------------------------------------------------


def test_wait_blocks_until_the_job_ends_then_exits_0(p, background):
    b = background("a")
    waiter = subprocess.Popen([OJ, "job", "wait", b.id[:5]], cwd=p.root, env=p.env(),
                              stderr=subprocess.PIPE, text=True)
    # between its polls: it has found the job running, and stayed
    wait_until(lambda: asleep_in(waiter.pid, "nanosleep"), "the waiter to poll")
    assert waiter.poll() is None, "wait returned while the job was still running"
    assert b.release() == 0
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0
    assert err.startswith(f"{b.id} slow: done after ")


def test_wait_on_a_failed_job_exits_1_and_says_why(p):
    job_id = run_fail(p)
    proc = wait(p, job_id)
    assert proc.returncode == 1
    assert f"{job_id} fail: failed after" in proc.stderr
    assert "step 'work' failed (exit 3)" in proc.stderr


def test_wait_timeout_exits_2_and_says_where_the_job_stands(p, background):
    b = background("a")
    started = time.monotonic()
    proc = wait(p, b.id, "--timeout", "700ms")
    assert proc.returncode == 2
    assert 0.6 < time.monotonic() - started < 10
    assert proc.stderr == f"{b.id} slow: still running in step 'second' (timeout)\n"


def test_wait_for_an_unknown_job_exits_3(p):
    run_ok(p)
    proc = wait(p, "ffffffff")
    assert proc.returncode == 3
    assert proc.stderr == "ffffffff: not found (no such job; see 'oj job list')\n"


def test_wait_exits_4_on_a_job_cancelled_by_oj_job_cancel_not_by_ctrl_c_on_oj_run(
        p, background):
    b = background("a")
    assert b.interrupt() == 130  # Ctrl-C stops following, not the job
    assert wait(p, b.id, "--timeout", "300ms").returncode == 2
    follower = subprocess.Popen([OJ, "job", "wait", b.id], cwd=p.root, env=p.env(),
                                stderr=subprocess.PIPE, text=True)
    p.oj("job", "cancel", b.id)
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == 4
    assert err.startswith(f"{b.id} slow: cancelled")
    assert wait(p, b.id).returncode == 4


def test_wait_for_several_jobs_exits_with_the_worst_outcome(p, background):
    done, failed = run_ok(p), run_fail(p)
    cancelled = background("c")
    assert cancelled.cancel() == 4  # its `oj run` says so too
    assert wait(p, done, done).returncode == 0
    assert wait(p, done, cancelled.id).returncode == 4
    assert wait(p, cancelled.id, failed, done).returncode == 1
    running = background("r")
    proc = wait(p, done, running.id, "--timeout", "300ms")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 2  # one line per job
    assert wait(p, failed, running.id, "--timeout", "300ms").returncode == 1
    assert wait(p, done, "ffffffff", "--timeout", "300ms").returncode == 3


def test_wait_any_returns_with_the_first_job_that_ends(p, background):
    first, second = background("a"), background("b")
    assert wait(p, first.id, second.id, "--any", "--timeout", "300ms").returncode == 2
    waiter = subprocess.Popen([OJ, "job", "wait", "--any", first.id, second.id], cwd=p.root,
                              env=p.env(), stderr=subprocess.PIPE, text=True)
    wait_until(lambda: asleep_in(waiter.pid, "nanosleep"), "the waiter to poll")
    assert waiter.poll() is None  # it found both running, and stayed
    second.release()
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0
    assert f"{first.id} slow: still running in step 'second' (--any)" in err
    assert f"{second.id} slow: done after" in err
    assert first.proc.poll() is None  # the other job runs on


def test_wait_rejects_a_timeout_that_is_not_a_duration(p):
    proc = wait(p, "abc", "--timeout", "soon")
    assert proc.returncode == 2 and "--timeout: invalid duration 'soon'" in proc.stderr


# -- oj job prune ------------------------------------------------------------------------------


def state_files(p: Project) -> set[str]:
    return {str(f.relative_to(p.state)) for d in ("logs", "workspaces")
            for f in (p.state / d).glob("*")}


def test_prune_removes_old_finished_jobs_their_logs_and_workspaces_not_running_ones(
        p, background):
    done, failed = run_ok(p), run_fail(p)
    cancelled = background("c")
    cancelled.cancel()
    running = background("r")
    before = state_files(p)
    assert {f"workspaces/{failed}", f"workspaces/{cancelled.id}",
            f"workspaces/{running.id}"} <= before
    assert f"workspaces/{done}" not in before  # a done job's ephemeral workspace goes at once

    kept = p.oj("job", "prune")  # default: older than 7 days
    assert kept.stdout == "pruned 0 jobs\n"
    assert state_files(p) == before

    out = p.oj("job", "prune", "--older-than", "0s").stdout
    assert out.splitlines()[-1] == "pruned 3 jobs"
    assert f"removed job {failed} fail (failed, ended" in out
    assert f"workspace {p.state / 'workspaces' / failed}" in out
    assert state_files(p) == {f"logs/{running.id}.log", f"workspaces/{running.id}"}
    assert [j["id"] for j in jobs(p)] == [running.id]
    assert running.release() == 0
    assert wait(p, running.id).returncode == 0  # the running job was left to finish


def test_prune_removes_step_statuses_left_by_killed_runners_of_jobs_that_are_over(
        p, background):
    failed = run_fail(p)
    running = background("r")
    steps = p.state / "steps"
    steps.mkdir(exist_ok=True)
    for name in (f"{failed}.1", "0ffdead0.2", f"{running.id}.9"):
        (steps / name).write_text("0\n")
    assert p.oj("job", "prune").stdout == "pruned 0 jobs\n"  # no job old enough: only those
    assert sorted(f.name for f in steps.iterdir()) == [f"{running.id}.9"]
    assert running.release() == 0


def test_prune_dry_run_removes_nothing(p):
    failed = run_fail(p)
    before = state_files(p)
    out = p.oj("job", "prune", "--older-than", "0s", "--dry-run").stdout
    assert f"would remove job {failed} fail" in out
    assert out.splitlines()[-1] == "would prune 1 job"
    assert state_files(p) == before
    assert [j["id"] for j in jobs(p)] == [failed]


def test_prune_age_counts_from_when_the_job_ended(p):
    failed = run_fail(p)
    assert p.oj("job", "prune", "--older-than", "1h").stdout == "pruned 0 jobs\n"
    time.sleep(1.2)  # wall-clock age is the thing pruned by; load only makes the job older
    assert p.oj("job", "prune", "--older-than", "1s").stdout.endswith("pruned 1 job\n")
    assert jobs(p) == [] and failed not in str(state_files(p))


def test_a_persistent_workspace_stays_while_a_job_uses_it(p, background):
    first = background("one", "shared", "work")
    first.release()
    running = background("two", "shared", "work")
    [ws] = {j["cwd"] for j in jobs(p)}
    assert (Path(ws) / "seen.txt").read_text() == "one\ntwo\n"
    proc = p.oj("job", "prune", "--older-than", "0s")
    assert f"removed job {first.id} " in proc.stdout
    assert f"kept the workspace of job {first.id}: its workspace {ws} is shared with job " \
           f"{running.id} (running)" in proc.stderr
    assert p.oj("workspace", "prune", "--older-than", "0s").stdout == "pruned 0 workspaces\n"
    assert Path(ws).is_dir()
    running.release()
    out = p.oj("job", "prune", "--older-than", "0s").stdout
    assert f"removed job {running.id} shared (done, ended" in out
    assert f"workspace {ws}" in out  # the last of its jobs takes it along
    assert not Path(ws).exists()


def forge_job(p: Project, cwd: str) -> str:
    """A finished job whose recorded workspace is `cwd`: the WAL is data, and may say anything."""
    from ojd.store import Store

    store = Store(str(p.state), url=p.url or "")
    store.load()
    store.append({"type": "job:created", "id": "0badc0de", "p": str(p.root), "pipeline": "fail",
                  "name": "forged", "vars": {}, "cwd": cwd, "ws": "ephemeral",
                  "invoke": str(p.root), "item": None, "worker": None, "by": None},
                 {"type": "job:finished", "id": "0badc0de", "outcome": "failed", "error": "x"})
    return "0badc0de"


def test_prune_refuses_a_recorded_workspace_outside_the_workspaces_dir(p, tmp_path):
    run_ok(p)  # creates the state dir
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    for cwd in (str(outside), f"{p.state}/workspaces/../../precious"):
        job_id = forge_job(p, cwd)
        proc = p.oj("job", "prune", "--older-than", "0s")
        assert f"removed job {job_id} forged" in proc.stdout
        assert f"kept the workspace of job {job_id}: its workspace {cwd} is not inside " \
               f"{p.state / 'workspaces'}; oj removes nothing there" in proc.stderr
        assert (outside / "keep.txt").read_text() == "mine"


def test_a_workspace_that_became_a_symlink_is_never_followed(p, tmp_path):
    failed = run_fail(p)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    link = p.state / "workspaces" / failed
    for f in link.iterdir():
        f.unlink()
    link.rmdir()
    link.symlink_to(outside)
    proc = p.oj("job", "prune", "--older-than", "0s")
    assert f"its workspace {link} is a symlink; left alone" in proc.stderr
    proc = p.oj("workspace", "prune", "--older-than", "0s")
    assert f"skipped {link}: a symlink" in proc.stderr
    assert link.is_symlink() and (outside / "keep.txt").read_text() == "mine"


# -- oj workspace ------------------------------------------------------------------------------


def test_workspace_list_shows_job_pipeline_status_path_size_and_age(p, background):
    failed = run_fail(p)
    running = background("r")
    table = p.oj("workspace", "list").stdout.splitlines()
    assert table[0].split() == ["JOB", "PIPELINE", "STATUS", "PATH", "SIZE", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[failed][1:5] == ["fail", "failed", str(p.state / "workspaces" / failed), "5B"]
    assert rows[running.id][1:3] == ["slow", "running"]
    listed = {w["job"]: w for w in p.json("workspace", "list")}
    assert listed[failed]["size"] == len("kept\n")
    assert listed[failed]["path"] == str(p.state / "workspaces" / failed)


def test_workspace_prune_removes_those_of_finished_or_gone_jobs_only(p, background):
    failed = run_fail(p)
    running = background("r")
    stray = p.state / "workspaces" / "left-by-a-lost-job"
    (stray / "sub").mkdir(parents=True)
    (stray / "sub" / "f").write_text("x")
    assert p.oj("workspace", "prune").stdout == "pruned 0 workspaces\n"  # all recent
    dry = p.oj("workspace", "prune", "--older-than", "0s", "--dry-run").stdout
    assert dry.splitlines()[-1] == "would prune 2 workspaces"
    assert stray.exists()
    out = p.oj("workspace", "prune", "--older-than", "0s").stdout
    assert f"removed {p.state / 'workspaces' / failed}: job {failed} (failed)" in out
    assert f"removed {stray}: no recorded job" in out
    assert sorted(os.listdir(p.state / "workspaces")) == [running.id]
    assert [j["id"] for j in jobs(p)] == [failed, running.id]  # jobs stay recorded


# -- job names, vars and locals ----------------------------------------------------------------

NAMED = r"""
    queue "fixes" {}

    worker "fixer" {
      source = { queue = "fixes" }
      handler = { pipeline = "fix" }
      poll = "200ms"
    }

    command "fix" {
      args = "<title>"
      run  = { pipeline = "plain" }
    }

    pipeline "fix" {
      vars = ["mr"]
      name = "${var.mr.title}-fix"
      locals {
        branch = "fix/${var.mr.title}"
      }
      step "work" { run = "true" }
    }

    pipeline "plain" {
      vars = ["title"]
      step "work" { run = "true" }
    }
    """


def test_a_pipeline_name_template_names_worker_jobs_and_falls_back_when_it_cannot(
        project: Project):
    project.write("n.hcl", NAMED)
    project.oj("queue", "push", "fixes", json.dumps({"title": "login", "n": [1, 2]}))
    project.oj("queue", "push", "fixes", json.dumps({"branch": "no-title"}))
    worker = project.ojd("worker", "fixer", "--foreground", "--until-idle")
    out, _ = worker.communicate(timeout=60)
    assert [j["name"] for j in jobs(project)] == ["login-fix", "fix"]
    assert "pipeline 'fix' name: ${var.mr.title}: 'mr' has no key 'title'; the job is " \
           "named 'fix'" in out


def test_oj_run_jobs_are_named_by_their_command_without_a_template(project: Project):
    project.write("n.hcl", NAMED)
    project.oj("run", "fix", "x")
    assert [j["name"] for j in jobs(project)] == ["fix"]


def test_runbook_check_reports_a_bad_name_template_at_its_line(project: Project):
    project.write("n.hcl", NAMED.replace('"${var.mr.title}-fix"', '"${var.nope}"')
                  .replace('"fix/${var.mr.title}"', '"x"'))
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    line = next(i for i, text in enumerate(NAMED.splitlines(), 1) if "name =" in text)
    assert f".oj/runbooks/n.hcl:{line}: ${{var.nope}}: 'nope' is not defined" in proc.stderr
    project.write("n.hcl", NAMED.replace('"${var.mr.title}-fix"', '"${local.branch}"'))
    proc = project.oj("runbook", "check", check=False)
    assert f".oj/runbooks/n.hcl:{line}: ${{local.branch}} cannot be used here" in proc.stderr
    project.write("n.hcl", NAMED.replace('"${var.mr.title}-fix"', '" "'))
    proc = project.oj("runbook", "check", check=False)
    assert f".oj/runbooks/n.hcl:{line}: pipeline 'fix' name is empty" in proc.stderr


def test_job_list_cuts_long_names_and_json_keeps_them_whole(project: Project):
    project.write("n.hcl", NAMED)
    title = "a title far longer than any table column should ever be"
    project.oj("queue", "push", "fixes", json.dumps({"title": title}))
    project.ojd("worker", "fixer", "--foreground", "--until-idle").communicate(timeout=60)
    [row] = project.oj("job", "list").stdout.splitlines()[1:]
    assert "a title far longer than any tab… " in row
    assert [j["name"] for j in jobs(project)] == [f"{title}-fix"]


def test_job_show_prints_vars_and_locals_one_line_each(project: Project):
    project.write("n.hcl", NAMED)
    project.oj("queue", "push", "fixes", json.dumps({"title": "login", "n": [1, 2]}))
    project.ojd("worker", "fixer", "--foreground", "--until-idle").communicate(timeout=60)
    [job] = jobs(project)
    shown = project.oj("job", "show", job["id"]).stdout.splitlines()
    at = shown.index("vars:")
    assert shown[at + 1:at + 6] == ['  var.mr = {"title":"login","n":[1,2]}', "locals:",
                                    "  local.branch = fix/login", "invoke:",
                                    f"  invoke.dir = {project.root}"]
    data = project.json("job", "show", job["id"])
    assert data["vars"] == {"mr": {"title": "login", "n": [1, 2]}}
    assert data["locals"] == {"branch": "fix/login"}


def test_workspace_prune_finishes_what_an_interrupted_prune_left(p):
    run_ok(p)
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = p.state / "workspaces" / f".pruning-abc-{dead.pid}"
    busy = p.state / "workspaces" / f".pruning-def-{os.getpid()}"  # a prune still deleting
    for d in (left, busy):
        (d / "sub").mkdir(parents=True)
    out = p.oj("workspace", "prune").stdout  # whatever --older-than says
    assert out == f"removed {left}: left by an earlier prune\npruned 1 workspace\n"
    assert busy.is_dir() and not left.exists()


def test_the_pruned_event_drops_finished_jobs_and_keeps_the_others():
    from ojd.state import State

    state = State()
    for job_id in ("a", "b"):
        state.apply({"type": "job:created", "id": job_id, "p": "/p", "pipeline": "x", "ts": 1.0})
    state.apply({"type": "job:finished", "id": "a", "outcome": "done", "ts": 2.0})
    state.apply({"type": "job:pruned", "ids": ["a", "b", "gone"], "ts": 3.0})
    assert list(state.jobs) == ["b"] and list(state.finished_jobs) == []
    assert State.from_dict(state.to_dict()).jobs.keys() == {"b"}


def test_job_show_of_a_job_without_locals_says_so(project: Project):
    project.write("n.hcl", NAMED)
    project.oj("run", "fix", "some title")
    [job] = jobs(project)
    shown = project.oj("job", "show", job["id"]).stdout.splitlines()
    at = shown.index("vars:")
    assert shown[at + 1:at + 3] == ["  var.title = some title", "locals:   -"]
    assert project.json("job", "show", job["id"])["locals"] is None
