"""Running an agent step: start the agent's command in tmux, watch it, act on its triggers.

Everything the step decides is recorded in the WAL (``agent:started``, ``job:waiting``,
``agent:delivered``), so a runner that resumes the job finds the session its predecessor
started and watches it on, rather than starting a second agent.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import Any

from ojd import trust
from ojd.agents import session as tmux
from ojd.agents.watch import (
    DEFAULT_NUDGE,
    Action,
    Attempts,
    env_override_name,
    is_idle,
    render_command,
    screen_lines,
)
from ojd.duration import DurationError, parse_duration
from ojd.errors import OjError
from ojd.events import agent_delivered, agent_started, job_waiting
from ojd.notify import one_line
from ojd.routing import TIMEOUT_EXIT
from ojd.runbook.model import Agent, Pipeline
from ojd.runbook.template import TemplateError, render_text
from ojd.runners.notfound import NOT_FOUND_EXIT, missing_command
from ojd.state import LIVE_JOB_STATES

POLL = 0.25  # seconds between looks at the screen
ANSWER_POLL = 0.5
PRIME_TIMEOUT = 60.0

Outcome = tuple[int | None, str | None]


def project_config(agent: Agent, project: str) -> dict[str, Any]:
    """``[agents.NAME]`` of the project's ``.oj/config.toml``: ``command`` and ``idle`` to
    use instead of the runbook's (read by whoever runs the job, so a stand-in for a test or
    a dry run also reaches a worker under systemd, whose environment is not the user's)."""
    path = os.path.join(project, ".oj", "config.toml")
    if not os.path.exists(path):
        return {}
    import tomllib  # lazy: read only when a project has a config.toml

    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise OjError(f"{path}: {e}") from None
    agents = config.get("agents") or {}
    entry = agents.get(agent.name) if isinstance(agents, dict) else None
    if entry is None:
        return {}
    where = f"{path}: agents.{agent.name}"
    if not isinstance(entry, dict):
        raise OjError(f"{where} must be a table: [agents.{agent.name}]")
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "command":
            if not isinstance(value, str) or not value.strip():
                raise OjError(f"{where}.command must be a command line")
            out["command"] = value
        elif key == "idle":
            try:
                out["idle"] = parse_duration(value)
            except DurationError as e:
                raise OjError(f"{where}.idle: {e}") from None
        else:
            raise OjError(f"{where}: unknown key '{key}'; use command or idle")
    return out


def agent_command(agent: Agent, config: dict[str, Any], environ: dict[str, str]) -> str:
    """``OJ_AGENT_<NAME>_COMMAND`` from the environment, else the project config's
    ``command``, else the runbook's ``run``."""
    return environ.get(env_override_name(agent.name)) or config.get("command") or agent.run


def run_agent_step(runner, job: dict, pipeline: Pipeline, step: str, ctx: dict[str, Any],
                   log) -> Outcome:
    """The step's exit status (None when the runner stops: the agent keeps running and the
    job resumes later), and why it failed."""
    name = pipeline.steps[step].agent
    agent = runner.runbook.agents.get(name or "")
    if agent is None:
        return 127, f"agent '{name}' is not defined"
    with runner.store.lock:  # other jobs' threads apply events to the same state
        ended = ended_agents(runner.store.state)
    for socket in ended:
        tmux.end_job(socket)
    watch = _Watch(runner, runner.store.state.jobs[job["id"]], step, agent, ctx, log)
    watch.deadline, watch.limit = runner.step_deadline(job["id"], pipeline.steps[step])
    try:
        return watch.run()
    except OjError as e:
        why = one_line(str(e))
        watch.say(why)
        watch.end()
        return 2, why
    except KeyboardInterrupt:  # Ctrl-C on `oj run` cancels the job: the agent goes with it
        watch.end()
        raise


def ended_agents(state) -> list[str]:
    """Sockets of agents whose job ended while its runner was away (a job cancelled after
    its runner stopped leaves its agent running): a job's end ends its agent."""
    return [a["socket"] for job in state.jobs.values() if (a := job.get("agent"))
            and job["status"] not in LIVE_JOB_STATES and os.path.exists(a["socket"])]


class _Watch:
    def __init__(self, runner, job: dict, step: str, agent: Agent, ctx: dict[str, Any],
                 log) -> None:
        self.runner = runner
        self.job_id = job["id"]
        self.step = step
        self.agent = agent
        self.ctx = ctx
        self.log = log
        # the step's visit: a resumed step (interrupted, so never finished) keeps its number
        self.visit = 1 + sum(1 for h in job["history"] if h["step"] == step
                             and h["exit"] is not None)
        self.env = {**runner._env(job), **agent.env}
        self.socket = tmux.socket_path(runner.store.root, self.job_id)
        self.session: str | None = None
        self.starts = 0
        self.attempts = Attempts()
        self.prompt = ""
        self.cwd = job["cwd"]
        self.project = job["project"]
        self.config: dict[str, Any] = {}
        self.idle = agent.idle
        self.deadline: float | None = None  # past it the agent is stopped and the step fails
        self.limit = ""
        self.command = ""  # the command line it was last started with
        self.screen_kept: str | None = None  # the session whose last screen is in the log

    # -- I/O helpers -----------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.log.write(f"==> agent {self.agent.name}: {line}\n".encode())

    def job(self) -> dict:
        return self.runner.store.state.jobs[self.job_id]

    def record(self, event: dict) -> None:
        """Through the runner's fenced append: a job cancelled, reopened or taken over (its
        lease lost) meanwhile records nothing more from here (Superseded)."""
        self.runner._durably(self.job_id, self.runner._record, self.job_id, event)

    def end(self) -> None:
        """The step is over: its agent and the job's tmux server go, its last screen into
        the job log."""
        if self.session:
            self.keep_screen(tmux.capture(self.socket, self.session))
        tmux.end_job(self.socket)

    def keep_screen(self, screen: str | None = None) -> str | None:
        """Write the agent's last screen into the job log, once per session: ``screen``
        when it still shows, else what its pane showed as it exited. The screen written."""
        if not self.session or self.screen_kept == self.session:
            return None
        screen = screen if screen is not None else tmux.last_screen(self.socket,
                                                                     self.session)
        lines = screen_lines(screen or "")
        if not lines:
            return None
        self.screen_kept = self.session
        self.say(f"its last screen (session {self.session}, last {len(lines)} lines):")
        self.log.write(("\n".join(lines) + "\n").encode())
        self.say("end of its screen")
        return screen

    # -- the watch -------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.config = project_config(self.agent, self.project)
        self.idle = self.config.get("idle", self.agent.idle)
        self.cwd = self._cwd()
        found = self.job().get("agent")
        if found and found.get("step") == self.step and found.get("visit") == self.visit:
            # a previous runner started this visit's agent: watch it on, never start another
            self.socket, self.session = found["socket"], found["session"]
            self.starts = int(found.get("start") or 0) + 1
            self.say(f"watching session {self.session} again")
        else:
            self.prompt = self._prompt()
            self._start(self.prompt)
        job = self.job()
        if job["status"] == "waiting":  # stopped while it waited: wait on
            answer = self._wait_answer(job.get("waiting_reason") or "waiting", record=False)
            if answer is None:
                return self._stopped()
            self._deliver(answer)
        elif job.get("pending_answer") is not None:  # answered while no runner watched
            self._deliver(job["pending_answer"])
        return self._watch()

    def _watch(self) -> Outcome:
        stopping = self.runner.stopping
        last_screen: str | None = None
        last_change = time.monotonic()
        while True:
            if stopping.is_set():
                return self._stopped()
            if self.deadline is not None and time.time() >= self.deadline:
                self.end()
                why = f"timeout: stopped after {self.limit}"
                self.say(why)
                return TIMEOUT_EXIT, why
            screen = tmux.capture(self.socket, self.session) if self.session else None
            now = time.monotonic()
            if screen is not None:
                if screen != last_screen:
                    last_screen, last_change = screen, now
                if not is_idle(last_change, now, self.idle):
                    stopping.wait(POLL)
                    continue
                trigger, dead_status = "on_idle", None
            elif self.session and tmux.alive(self.socket, self.session):
                stopping.wait(POLL)  # between capture and now: look again
                continue
            else:
                trigger = "on_dead"
                dead_status = tmux.exit_status(self.socket, self.session) \
                    if self.session else None
                screen = self.keep_screen()
                self.runner.progress(self.job_id, "agent_died", f"{self.step}: agent "
                                     f"'{self.agent.name}' exited "
                                     + (f"(status {dead_status})" if dead_status is not None
                                        else "(killed)"))
                if dead_status == NOT_FOUND_EXIT:  # no retry can find the program
                    return self._not_found(screen)
            action = Action.of(getattr(self.agent, trigger), trigger)
            plan = self.attempts.plan(trigger, action)
            what = "is idle" if trigger == "on_idle" else \
                f"exited ({'status ' + str(dead_status) if dead_status is not None else 'killed'})"
            self.say(f"{what}: {plan.action.kind}"
                     + (f" after {plan.delay:g}s" if plan.delay else ""))
            if plan.delay:
                if stopping.wait(plan.delay):
                    return self._stopped()
                if trigger == "on_idle" and \
                        tmux.capture(self.socket, self.session) != last_screen:
                    last_change = time.monotonic()  # it went on by itself during the cooldown
                    continue
            outcome = self._act(plan.action, trigger, what, dead_status, plan.reason)
            if outcome is not None:
                return outcome
            last_screen, last_change = None, time.monotonic()

    def _act(self, action: Action, trigger: str, what: str, dead_status: int | None,
             reason: str | None) -> Outcome | None:
        """Do ``action``; an outcome ends the step, None watches on."""
        kind = action.kind
        if kind == "done":
            self.end()
            return 0, None
        if kind == "fail":
            self.end()
            return (dead_status or 1), f"agent '{self.agent.name}' {what}"
        if kind == "nudge":
            tmux.send(self.socket, self.session, action.message or DEFAULT_NUDGE)
            return None
        if kind == "resume":
            tmux.kill(self.socket, self.session)
            extra = action.message or ""
            if not self.prompt:
                self.prompt = self._prompt()
            prompt = extra if action.replace else \
                "\n\n".join(p for p in (self.prompt, extra) if p)
            self._start(prompt)
            return None
        if kind == "gate":
            code = self._gate(action.run or "true")
            if code == 0:
                self.end()
                return 0, None
            reason = f"{trigger}: gate failed (exit {code}): {one_line(action.run or '')}"
        # escalate: a person answers with `oj job resume ID -m ...`
        reason = reason or f"agent '{self.agent.name}' {what}"
        answer = self._wait_answer(reason)
        if answer is None:
            return self._stopped()
        self._deliver(answer)
        self.attempts.reset()
        return None

    def _not_found(self, screen: str | None) -> Outcome:
        """The agent's program is not there: the step fails naming it."""
        name = missing_command(screen or "") or _first_word(self.command)
        why = f"agent '{self.agent.name}': " + (
            f"command '{one_line(name)}' not found" if name else "command not found") + \
            f" (exit {NOT_FOUND_EXIT})"
        self.log.write(f"==> {why}\n".encode())
        self.end()
        return NOT_FOUND_EXIT, why

    def _stopped(self) -> Outcome:
        """The runner stops: leave the agent running for the runner that resumes the job,
        unless the job itself ended (cancelled from outside)."""
        status = self.runner.store.refresh().jobs.get(self.job_id, {}).get("status")
        if status not in LIVE_JOB_STATES:
            self.end()
        return None, None

    # -- starting ---------------------------------------------------------------------------

    def _cwd(self) -> str:
        if not self.agent.cwd:
            return self.cwd
        try:
            cwd = render_text(self.agent.cwd, self.ctx, env=self.env)
        except TemplateError as e:
            raise OjError(f"agent cwd: {e}") from None
        return os.path.join(self.cwd, cwd)

    def _prompt(self) -> str:
        """The prime commands' output, then the rendered prompt."""
        text = self.agent.prompt
        if self.agent.prompt_file:
            path = os.path.join(self.project, self.agent.prompt_file)
            job = self.job()
            if job.get("worker") or job.get("cron"):
                # its text reaches the agent as the worker's user: checked as its runbooks
                # are, right before the read (``ojd.trust``); a refusal fails the step
                trust.require_input(path, os.geteuid(), f"agent '{self.agent.name}' "
                                    "prompt_file", job.get("worker"))
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise OjError(f"agent prompt_file {path}: {e.strerror}") from None
        try:
            prompt = render_text(text or "", self.ctx, env=self.env)
        except TemplateError as e:
            raise OjError(f"agent prompt: {e}") from None
        parts = [self._prime(command) for command in self.agent.prime]
        return "\n\n".join(p for p in (*parts, prompt.strip()) if p)

    def _prime(self, command: str) -> str:
        try:
            proc = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=PRIME_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.say(f"prime {one_line(command)!r} took over {PRIME_TIMEOUT:g}s; skipped")
            return ""
        if proc.returncode != 0:
            self.say(f"prime {one_line(command)!r} exited {proc.returncode}")
        return proc.stdout.strip()

    def _start(self, prompt: str) -> None:
        command = render_command(agent_command(self.agent, self.config, self.env), prompt)
        self.command = command
        self.session = tmux.session_name(self.job_id, self.step, self.visit, self.starts)
        os.makedirs(self.cwd, exist_ok=True)
        setenv = {k: v for k, v in self.env.items()
                  if k.startswith("OJ_") or k in self.agent.env}
        tmux.start(self.socket, self.session, command, self.cwd, self.env, setenv)
        self.record(agent_started(id=self.job_id, step=self.step, visit=self.visit,
                                  agent=self.agent.name, socket=self.socket,
                                  session=self.session, start=self.starts))
        self.say(f"started in tmux session {self.session} (oj agent attach {self.job_id})")
        self.starts += 1

    # -- gate and escalation ----------------------------------------------------------------

    def _gate(self, command: str) -> int:
        self.say(f"gate: {one_line(command)}")
        return subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env,
                              stdin=subprocess.DEVNULL, stdout=self.log,
                              stderr=subprocess.STDOUT).returncode

    def _wait_answer(self, reason: str, record: bool = True) -> str | None:
        """Wait until someone answers (``job:answered``); None when the runner stops or the
        job ended meanwhile."""
        if record:
            self.record(job_waiting(id=self.job_id, reason=reason))
            self.log.write(f"==> job waiting for a person: {one_line(reason)} (answer with: "
                           f"oj job resume {self.job_id} -m ...)\n".encode())
            self.runner.progress(self.job_id, "step", f"{self.step} waiting: {reason}")
        while True:
            job = self.runner.store.refresh().jobs.get(self.job_id)
            if job is None or job["status"] not in LIVE_JOB_STATES:
                return None
            if job["status"] == "running" and job.get("pending_answer") is not None:
                return job["pending_answer"]
            if self.runner.stopping.wait(ANSWER_POLL):
                return None

    def _deliver(self, answer: str) -> None:
        """Type the answer into a live agent; a dead one starts again with it."""
        if self.session and tmux.alive(self.socket, self.session):
            tmux.send(self.socket, self.session, answer)
            self.say("answer typed into the session")
        else:
            if not self.prompt:
                self.prompt = self._prompt()
            self._start("\n\n".join(p for p in (self.prompt, answer) if p))
        self.record(agent_delivered(id=self.job_id))


def _first_word(command: str) -> str | None:
    """The program a command line starts, when it starts with a plain word."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[0] if words else None
