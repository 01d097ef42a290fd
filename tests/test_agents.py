"""Agent steps through the installed CLI: a fake agent (tests/fake_agent.py) in real tmux,
watched for idleness and death, answered, peeked at, typed to and attached to."""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OJ, OJD, Project, wait_until

FAKE = str(Path(__file__).with_name("fake_agent.py"))

RUNBOOK = r"""
    command "go" {
      run = { pipeline = "p" }
    }
    pipeline "p" {
      step "work" {
        run     = { agent = "helper" }
        on_done = { step = "after" }
      }
      step "after" {
        run = "echo after >> ${invoke.dir}/after.txt"
      }
    }
    agent "helper" {
      run    = "no-such-agent-program"
      prompt = "work in ${workspace.root}"
      idle   = "IDLE"
      HANDLERS
    }
    """


def fake(*args: str) -> str:
    return shlex.join([sys.executable, FAKE, *args])


class AgentProject(Project):
    """A project whose agent 'helper' is the fake agent, standing in by the environment."""

    def setup(self, handlers: str, *fake_args: str, idle: str = "1s") -> None:
        self.write("a.hcl", RUNBOOK.replace("HANDLERS", handlers).replace("IDLE", idle))
        self.log = self.root / "agent.jsonl"
        self.command = fake(*fake_args)

    def env(self, **extra: str) -> dict[str, str]:
        env = super().env(**extra)
        env["OJ_AGENT_HELPER_COMMAND"] = getattr(self, "command", "")
        env["FAKE_AGENT_LOG"] = str(self.root / "agent.jsonl")
        return env

    def seen(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def starts(self) -> list[dict]:
        return [e for e in self.seen() if e["event"] == "start"]

    def inputs(self) -> list[str]:
        return [e["line"] for e in self.seen() if e["event"] == "input"]

    def background(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([OJ, *args], cwd=self.root, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def job(self) -> dict:
        jobs = self.json("job", "list")
        assert len(jobs) == 1, jobs
        return jobs[0]

    def status(self) -> str | None:
        jobs = self.json("job", "list")
        return jobs[0]["status"] if jobs else None  # type: ignore[index]

    def agents(self) -> list[dict]:
        return self.json("agent", "list")  # type: ignore[return-value]

    def log_text(self, job_id: str) -> str:
        return self.oj("job", "logs", job_id).stdout

    def runner(self, job_id: str) -> int:
        """The PID of the job's process, which runs it (`oj run` only follows it)."""
        return self.json("job", "show", job_id)["process"]["pid"]  # type: ignore[index]

    def kill_runner(self, job_id: str) -> int:
        """kill -9 the job's process, no chance to stop anything; its PID, once it is gone."""
        pid = self.runner(job_id)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not running(pid), f"process {pid} to die")
        return pid


def running(pid: int) -> bool:
    """Whether ``pid`` runs: neither gone nor a zombie its parent has yet to reap."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


@pytest.fixture
def ap(tmp_path: Path):
    p = AgentProject(tmp_path / "project", tmp_path / "state")
    yield p
    # jobs a test left running (a background `oj run` only follows its job): cancelled,
    # which ends their agents too
    if p.state.exists():
        live = [j["id"] for j in p.json("job", "list") if j["status"] in ("running", "waiting")]
        if live:
            p.oj("job", "cancel", *live)
    # whatever a failed test left running: this test's tmux servers only
    for sock in (tmp_path / "state" / "agents").glob("*") if (tmp_path / "state").exists() \
            else ():
        if sock.is_socket():
            subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, err


def test_idle_agent_is_nudged_and_its_exit_then_counts_as_done(ap: AgentProject):
    ap.setup('''
      prime   = ["echo primed one", "echo primed two"]
      env     = { FAKE_AGENT_ENV = "from the agent block" }
      on_idle = { action = "nudge", message = "exit 0" }
      on_dead = "done"
    ''')
    started = time.monotonic()
    ap.oj("run", "go")
    assert time.monotonic() - started < 15
    (start,) = ap.starts()
    assert start["prompt"] == f"primed one\n\nprimed two\n\nwork in {ap.root}"
    assert start["env"] == "from the agent block"
    assert start["cwd"] == str(ap.root)
    assert ap.inputs() == ["exit 0"]
    job = ap.job()
    assert job["status"] == "done"
    assert [h["step"] for h in job["history"]] == ["work", "after"]
    log = ap.log_text(job["id"])
    assert "is idle: nudge" in log and "exited (status 0): done" in log
    assert ap.agents() == []  # the session ended with the step


def test_dead_agent_fails_the_step_with_its_exit_status(ap: AgentProject):
    ap.setup('on_dead = "fail"', "--exit", "7")
    proc = ap.oj("run", "go", check=False)
    assert proc.returncode == 1
    assert "step 'work' failed (exit 7): agent 'helper' exited (status 7)" in proc.stderr
    assert not (ap.root / "after.txt").exists()


def test_dead_agent_is_resumed_with_the_message_until_its_attempts_run_out(ap: AgentProject):
    ap.setup('''
      on_dead = { action = "resume", message = "try again", attempts = 2, cooldown = "1s" }
    ''', "--exit", "3")
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    prompts = [s["prompt"] for s in ap.starts()]
    base = f"work in {ap.root}"
    assert prompts == [base, f"{base}\n\ntry again", f"{base}\n\ntry again"]
    job = ap.job()
    assert job["waiting_reason"] == "on_dead: resume already tried 2 times"
    listed = ap.oj("job", "list").stdout
    assert "waiting" in listed
    assert "on_dead: resume already tried 2 times" in ap.oj("job", "show", job["id"]).stdout
    ap.oj("job", "cancel", job["id"])  # `oj run` following it says so
    code, err = finish(run)
    assert code == 4 and f"job {job['id']} cancelled" in err
    assert ap.job()["status"] == "cancelled"


def test_resume_replace_starts_the_agent_on_the_message_alone(ap: AgentProject):
    ap.setup('''
      on_dead = { action = "recover", message = "exit 0", replace = true }
    ''', "--exit", "4")
    run = ap.background("run", "go")
    wait_until(lambda: len(ap.starts()) == 2, "the agent to start again", timeout=30)
    assert ap.starts()[1]["prompt"] == "exit 0"
    ap.oj("job", "cancel", ap.job()["id"])
    finish(run)


def test_escalated_job_waits_until_an_answer_reaches_the_agent(ap: AgentProject):
    ap.setup('''
      on_idle = "escalate"
      on_dead = "done"
    ''')
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    job = ap.job()
    assert job["waiting_reason"] == "agent 'helper' is idle"
    (agent,) = ap.agents()
    assert (agent["job"], agent["step"], agent["agent"], agent["status"]) == \
        (job["id"], "work", "helper", "waiting")
    assert "waiting" in ap.oj("agent", "list").stdout
    out = ap.oj("job", "resume", job["id"][:4], "-m", "exit 0")
    assert "answered" in out.stderr
    code, err = finish(run)
    assert code == 0, err
    assert ap.inputs() == ["exit 0"]
    assert ap.job()["status"] == "done"
    again = ap.oj("job", "resume", job["id"], "-m", "more", check=False)
    assert again.returncode == 1
    assert again.stderr == f"oj: job {job['id']} is done, not waiting for an answer\n"


def test_gate_that_passes_ends_the_step_done(ap: AgentProject):
    ap.setup('''
      on_idle = { action = "gate", run = "test -e gate-open" }
    ''')
    (ap.root / "gate-open").touch()
    ap.oj("run", "go")
    assert ap.job()["status"] == "done"
    assert (ap.root / "after.txt").read_text() == "after\n"


def test_gate_that_fails_escalates_and_the_answer_goes_on(ap: AgentProject):
    ap.setup('''
      on_idle = { action = "gate", run = "exit 3" }
      on_dead = "done"
    ''')
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    assert ap.job()["waiting_reason"] == "on_idle: gate failed (exit 3): exit 3"
    ap.oj("job", "resume", ap.job()["id"], "-m", "exit 0")
    code, err = finish(run)
    assert code == 0, err
    assert ap.job()["status"] == "done"


def detach(fd: int) -> None:
    """C-b, then d, apart as typed (tmux reads the prefix key on its own). On a loaded
    machine tmux has once handed the keys to the pane instead, as if the prefix had been
    pressed twice: like a user, the test presses them again."""
    for attempt in range(3):
        os.write(fd, b"\x02")
        time.sleep(0.3)  # keys typed apart, as a person types them; load only spaces them more
        os.write(fd, b"d")
        try:
            read_until(fd, b"detached", timeout=5)
            return
        except AssertionError:
            if attempt == 2:
                raise
            os.write(fd, b"\x15")  # C-u: the pane's line forgets the keys it got


def read_until(fd: int, text: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} in {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def test_peek_send_and_attach_reach_the_running_agent(ap: AgentProject):
    ap.setup('on_dead = "done"', "--print", "ready for input", idle="60s")
    run = ap.background("run", "go")
    wait_until(lambda: ap.agents() and "ready for input" in
               ap.oj("agent", "peek", ap.job()["id"]).stdout, "the agent's screen")
    job_id = ap.job()["id"]
    assert ap.agents()[0]["status"] == "running"
    ap.oj("agent", "send", job_id[:3], "hello there")
    wait_until(lambda: "got: hello there" in ap.oj("agent", "peek", job_id).stdout,
               "the sent line on the screen")
    assert ap.inputs() == ["hello there"]

    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal user running `oj agent attach`
        env = ap.env(TERM="xterm")
        env.pop("TMUX", None)
        os.chdir(ap.root)
        os.execve(OJ, [OJ, "agent", "attach", job_id], env)
    try:
        read_until(fd, b"got: hello there")
        os.write(fd, b"typed at the terminal\r")
        wait_until(lambda: "typed at the terminal" in ap.inputs(), "the typed line")
        detach(fd)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert ap.agents()[0]["status"] == "running"  # detaching left it running
    ap.oj("agent", "send", job_id, "exit 0")
    code, err = finish(run)
    assert code == 0, err
    gone = ap.oj("agent", "peek", job_id, check=False)
    assert gone.returncode == 1
    assert gone.stderr == f"oj: job {job_id} is done; its agent is no longer running\n"
    unknown = ap.oj("agent", "send", "zzzz", "hi", check=False)
    assert unknown.returncode == 1 and unknown.stderr == \
        "oj: no job with id 'zzzz'; see 'oj job list'\n"


def test_a_runner_resumed_after_its_job_process_was_killed_watches_the_same_agent(
        ap: AgentProject):
    ap.setup('on_dead = "done"', idle="60s")
    run = ap.background("run", "go")
    wait_until(lambda: len(ap.starts()) == 1 and ap.agents(), "the agent to start")
    session = ap.agents()[0]["session"]
    job_id = ap.job()["id"]
    killed = ap.kill_runner(job_id)
    code, err = finish(run)  # the follower sees its job stop unfinished
    assert code == 1
    assert f"job {job_id} stopped without finishing; resume it: oj job resume {job_id}" in err
    assert ap.job()["status"] == "running"
    assert [a["session"] for a in ap.agents()] == [session]  # the agent outlived its runner
    resumed = ap.background("job", "resume", job_id)
    wait_until(lambda: f"watching session {session} again" in ap.log_text(job_id),
               "the new runner to watch")
    assert ap.runner(job_id) != killed
    assert [a["session"] for a in ap.agents()] == [session]
    ap.oj("agent", "send", job_id, "exit 0")
    code, err = finish(resumed)
    assert code == 0, err
    assert len(ap.starts()) == 1  # one agent, never a second
    assert ap.job()["status"] == "done"


@pytest.mark.end_to_end  # the installed `oj`, its worker and tmux as processes
def test_a_state_dir_too_long_for_a_socket_path_still_runs_agents(tmp_path: Path):
    state = tmp_path / ("s" * 60) / ("t" * 60)
    ap = AgentProject(tmp_path / "project", state)
    ap.setup('''
      on_idle = { action = "nudge", message = "exit 0" }
      on_dead = "done"
    ''')
    ap.oj("run", "go")
    assert ap.job()["status"] == "done"
    assert ap.inputs() == ["exit 0"]


def test_the_project_config_stands_in_for_the_agent_command(ap: AgentProject):
    ap.setup('on_dead = "done"')
    ap.command = ""  # no environment override: the project file decides
    (ap.root / ".oj" / "config.toml").write_text(
        f"[agents.helper]\ncommand = {json.dumps(fake('--exit', '0'))}\nidle = \"1s\"\n")
    ap.oj("run", "go")
    assert len(ap.starts()) == 1
    (ap.root / ".oj" / "config.toml").write_text("[agents.helper]\ncommand = 3\n")
    proc = ap.oj("run", "go", check=False)
    assert proc.returncode == 1
    assert "agents.helper.command must be a command line" in proc.stderr


CHECKED = """\
agent "a" {
  run     = "x"
  on_idle = { action = "resume" }
  on_dead = { action = "nudge", message = "hi" }
}
agent "b" {
  run      = "x"
  idle     = "soon"
  on_idle  = { action = "nudge", mesage = "hi", attempts = 0 }
  on_dead  = { action = "recover", attempts = "forever", cooldown = "30s" }
  on_error = { action = "explode" }
}
agent "c" {
  run     = "x"
  on_idle = { action = "gate" }
  on_dead = { action = "done", run = "true" }
}
"""


def test_runbook_check_refuses_actions_that_cannot_fit_their_trigger(project: Project):
    project.write("agents.hcl", CHECKED)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    f = ".oj/runbooks/agents.hcl"
    assert proc.stderr.splitlines()[:-1] == [
        f"{f}:3: agent 'a' on_idle action 'resume' cannot be used here: a running agent is "
        "not restarted; use one of nudge, done, escalate, gate, fail, auto",
        f"{f}:4: agent 'a' on_dead action 'nudge' cannot be used here: a dead agent cannot "
        "be nudged; use one of done, escalate, gate, fail, resume",
        f"{f}:8: agent idle: invalid duration 'soon'; use e.g. \"30s\", \"5m\", \"1h30m\"",
        f"{f}:9: agent 'b' on_idle has unknown field 'mesage'; did you mean 'message'?",
        f"{f}:9: agent 'b' on_idle attempts is 0, expected a whole number >= 1 or \"forever\"",
        f"{f}:11: agent 'b' on_error action 'explode' is not one of escalate, gate, fail, "
        "resume",
        f"{f}:15: agent 'c' on_idle action 'gate' needs run = \"COMMAND\" (exit 0 advances)",
        f"{f}:16: agent 'c' on_dead run is only for action 'gate', not 'done'",
    ]


def test_an_answer_given_while_no_runner_watched_reaches_the_agent_on_resume(ap: AgentProject):
    ap.setup('''
      on_idle = "escalate"
      on_dead = "done"
    ''')
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    job_id = ap.job()["id"]
    ap.kill_runner(job_id)
    resumed = ap.background("job", "resume", job_id)  # a new runner waits on
    wait_until(lambda: "watching session" in ap.log_text(job_id), "the new runner")
    ap.kill_runner(job_id)
    assert ap.status() == "waiting"
    out = ap.oj("job", "resume", job_id, "-m", "exit 0")  # recorded; nobody runs the job
    assert out.stderr.startswith(f"job {job_id} answered; ")
    assert ap.inputs() == []
    code, err = finish(ap.background("job", "resume", job_id))
    assert code == 0, err
    assert ap.inputs() == ["exit 0"] and len(ap.starts()) == 1
    assert ap.job()["status"] == "done"
    for follower in (run, resumed):  # they followed the job processes killed above
        follower.kill()
        follower.communicate()


def test_an_answer_to_a_job_whose_process_is_gone_says_to_resume_it(ap: AgentProject):
    ap.setup('''
      on_idle = "escalate"
      on_dead = "done"
    ''')
    run = ap.background("run", "go")
    try:
        wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
        job_id = ap.job()["id"]
        ap.kill_runner(job_id)
        out = ap.oj("job", "resume", job_id, "-m", "exit 0")
        assert out.stderr == \
            f"job {job_id} answered; its runner is gone: oj job resume {job_id}\n"
    finally:
        run.kill()
        run.communicate()


def test_oj_run_exits_1_when_the_process_of_its_waiting_job_is_killed(ap: AgentProject):
    ap.setup('''
      on_idle = "escalate"
      on_dead = "done"
    ''')
    run = ap.background("run", "go")
    try:
        wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
        job_id = ap.job()["id"]
        ap.kill_runner(job_id)
        code, err = finish(run, timeout=10)
        assert code == 1
        assert f"job {job_id} stopped without finishing; resume it: oj job resume {job_id}" \
            in err
    finally:
        run.kill()
        run.communicate()


WORKER_RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    pipeline "p" {
      vars = ["item"]
      step "work" {
        run = { agent = "helper" }
      }
    }
    agent "helper" {
      run     = "no-such-agent-program"
      idle    = "60s"
      on_dead = "done"
    }
    """


def test_a_stopping_worker_stops_at_once_and_its_job_and_agent_run_on_to_the_end(
        ap: AgentProject):
    ap.write("w.hcl", WORKER_RUNBOOK)
    ap.command = fake()
    ap.oj("queue", "push", "q", '{"n": "1"}')
    # a file, not a pipe, for its output: the job process it forks writes there too
    with open(ap.root / "worker.out", "w") as out:
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=ap.root,
                                  env=ap.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ap.agents(), "the agent to start")
        (agent,) = ap.agents()
        job_id = ap.job()["id"]
        runner = ap.runner(job_id)
        assert runner != worker.pid
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert worker.wait(timeout=30) == 0
        assert time.monotonic() - started < 5  # the stop does not wait for the agent
    finally:
        worker.kill()
    alive = subprocess.run(["tmux", "-S", agent["socket"], "has-session", "-t",
                            agent["session"]], capture_output=True)
    assert alive.returncode == 0  # a stop is not the job's end
    assert running(runner) and ap.job()["status"] == "running"
    ap.oj("agent", "send", job_id, "exit 0")  # the agent ends: on_dead = "done"
    wait_until(lambda: ap.job()["status"] == "done", "the job to end without its worker")
    assert [i["status"] for i in ap.items("q")] == ["completed"]  # settled by the job itself
    wait_until(lambda: not running(runner), "the job process to exit")


LEASED_AGENT = r"""
    queue "q" {
      vars = ["n"]
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "200ms"
      lease   = "3s"
    }
    pipeline "p" {
      vars = ["item"]
      step "work" {
        run = { agent = "helper" }
      }
    }
    agent "helper" {
      run     = "no-such-agent-program"
      prompt  = "work"
      idle    = "1s"
      on_idle = "escalate"
    }
    """


def test_an_agent_step_whose_job_lost_its_lease_records_nothing_more(postgres, tmp_path):
    """A job process frozen past its item's lease wakes to an idle agent: its escalation
    is refused (the job is no longer its own) instead of recorded."""
    ap = AgentProject(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    ap.write("a.hcl", LEASED_AGENT)
    ap.log = ap.root / "agent.jsonl"
    ap.command = fake()
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=ap.root,
                                  env=ap.env(), stdout=log, stderr=subprocess.STDOUT)
    frozen = pid = None
    try:
        ap.oj("queue", "push", "q", "--var", "n=1")
        wait_until(lambda: ap.events("agent:started"), "the agent to start", timeout=30)
        frozen = pid = ap.events("job:process")[0]["pid"]
        job_id = ap.events("job:process")[0]["id"]
        os.kill(frozen, signal.SIGSTOP)
        worker.terminate()  # nobody takes the job over: only the frozen process is left
        worker.wait(timeout=30)
        # its own host's worker never expires a lease of a process it sees alive: another
        # host's does, once the lease has run out
        taken = ap.events("queue:taken")[0]
        wait_until(lambda: time.time() > taken["ts"] + taken["lease"], "the lease to run out")
        from ojd.store import Store

        with Store(str(tmp_path / "host-b"), url=ap.url).transaction() as tx:
            tx.append({"type": "queue:lease_expired", "id": taken["id"], "job": job_id})
        time.sleep(1.5)  # its agent is idle by now
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        wait_until(lambda: not running(pid), "the job process to give up", timeout=30)
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        if pid is not None and running(pid):  # one that went on waiting for an answer
            os.kill(pid, signal.SIGKILL)
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        for sock in (tmp_path / "state" / "agents").glob("*"):
            subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)
    assert ap.events("job:waiting") == []
    assert ap.json("job", "show", job_id)["status"] == "running"  # the next take resumes it
    assert "stopped: " in (ap.state / "logs" / f"{job_id}.log").read_text() + \
        (tmp_path / "worker.log").read_text()


def test_item_text_in_an_agents_cwd_reaches_tmux_as_a_path_not_a_format(ap: AgentProject):
    """tmux format-expands `#(...)` in what it is given as a start directory (or a session
    name): an item's text there must stay a path, never a command run as the worker's user."""
    canary = ap.root / "CANARY"
    ap.write("a.hcl", '''
        command "go" {
          args = "<repo>"
          run  = { pipeline = "p" }
        }
        pipeline "p" {
          step "work" {
            run = { agent = "helper" }
          }
        }
        agent "helper" {
          run     = "no-such-agent-program"
          prompt  = "go"
          cwd     = "repos/${var.repo}"
          on_idle = { action = "nudge", message = "exit 0" }
          on_dead = "done"
          idle    = "1s"
        }
        ''')
    ap.log = ap.root / "agent.jsonl"
    ap.command = fake()
    repo = f"app#(touch {canary})#{{session_name}}"
    ap.oj("run", "go", repo)
    (start,) = ap.starts()
    assert start["cwd"] == str(ap.root / "repos" / repo)
    assert not canary.exists()
    assert ap.job()["status"] == "done"


def test_an_agent_step_past_its_timeout_is_stopped_and_fails_as_timed_out(ap: AgentProject):
    ap.write("a.hcl", '''
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "work" {
            run     = { agent = "helper" }
            timeout = "2s"
          }
        }
        agent "helper" {
          run     = "no-such-agent-program"
          prompt  = "go"
          idle    = "10m"
          on_idle = "escalate"
        }
        ''')
    ap.log = ap.root / "agent.jsonl"
    ap.command = fake()
    assert ap.oj("run", "go", check=False).returncode != 0
    job = ap.job()
    assert job["status"] == "failed"
    assert [(h["step"], h["exit"]) for h in job["history"]] == [("work", 124)]
    assert "timeout: stopped after its timeout (2s)" in ap.log_text(job["id"])
    assert ap.agents() == []


def test_an_agent_whose_program_is_missing_fails_naming_it_without_retries(ap: AgentProject):
    ap.setup('on_dead = { action = "resume", attempts = 3 }')
    ap.command = ""  # no stand-in: the runbook's own program, which is not installed
    proc = ap.oj("run", "go", check=False)
    assert proc.returncode == 1
    why = "agent 'helper': command 'no-such-agent-program' not found (exit 127)"
    assert f"step 'work' failed (exit 127): {why}" in proc.stderr
    log = ap.log_text(ap.job()["id"])
    assert f"==> {why}" in log
    assert log.count("started in tmux session") == 1  # no resume can find the program


def test_an_agents_last_screen_goes_into_the_job_log_when_it_exits(ap: AgentProject):
    ap.setup('on_dead = "fail"', "--print", "the answer is 42", "--exit", "7")
    assert ap.oj("run", "go", check=False).returncode == 1
    log = ap.log_text(ap.job()["id"]).splitlines()
    start = next(i for i, line in enumerate(log) if "its last screen" in line)
    end = log.index("==> agent helper: end of its screen")
    screen = log[start + 1:end]
    assert screen and all(line.startswith("  | ") for line in screen)
    assert "  | the answer is 42" in screen
