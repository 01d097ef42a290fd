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

from ojd import decisions, trust
from ojd.agents import session as tmux
from ojd.agents.screens import (
    Prompt,
    ScreenError,
    find_context_reset,
    find_error,
    find_prompt,
)
from ojd.agents.watch import (
    DEFAULT_NUDGE,
    Action,
    Attempts,
    env_override_name,
    error_action,
    is_idle,
    prompt_settled,
    render_command,
    screen_lines,
)
from ojd.duration import DurationError, parse_duration
from ojd.errors import OjError
from ojd.events import agent_delivered, agent_started
from ojd.notify import one_line
from ojd.routing import TIMEOUT_EXIT
from ojd.runbook.model import Agent, Pipeline
from ojd.runbook.template import TemplateError, render_text
from ojd.runners.notfound import NOT_FOUND_EXIT, missing_command
from ojd.state import LIVE_JOB_STATES

POLL = 0.25  # seconds between looks at the screen
TRANSCRIPT_LINES = 40  # of a suspended agent's transcript, given to it when it resumes
SLOT_POLL = 1.0  # seconds between looks for a free slot under max_concurrency
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


def agents_running(state, project: str, agent: str, but: str) -> int:
    """How many of the project's live jobs (other than ``but``) have agent ``agent`` in the
    visit of the step they are in: the slots max_concurrency counts."""
    count = 0
    for job in state.jobs.values():
        a = job.get("agent")
        if not a or job["id"] == but or job["project"] != project or \
                job["status"] not in LIVE_JOB_STATES or a.get("agent") != agent:
            continue
        visit = 1 + sum(1 for h in job["history"] if h["step"] == job["step"]
                        and h["exit"] is not None)
        if a.get("step") == job["step"] and a.get("visit") == visit and \
                job.get("step_status") == "running":
            count += 1
    return count


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
        self.asked: Prompt | None = None  # the prompt on screen that fired on_prompt
        self.error: ScreenError | None = None  # the error that fired on_error
        self.errors_seen: set[tuple[str | None, str]] = set()  # (session, line) acted on

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
            if self.agent_limit():
                waited = self._wait_slot()
                if waited is not None:
                    return waited
            self._start(self.prompt, recorded=bool(self.agent_limit()))
        job = self.job()
        if job["status"] == "waiting":  # stopped while it waited: wait on
            answer = self._wait_answer()
            if answer is None:
                return self._stopped()
            outcome = self._carry_out(*answer)
        elif job.get("pending_answer") is not None:  # answered while no runner watched
            outcome = self._carry_out(job.get("pending_action") or decisions.SEND,
                                      job["pending_answer"])
        else:
            outcome = None
        return outcome if outcome is not None else self._watch()

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
                error = None
                if screen != last_screen:
                    last_screen, last_change = screen, now
                    error = find_error(screen)
                    if error is not None and (self.session, error.line) in self.errors_seen:
                        error = None  # still on screen: acted on once
                    self._after_reset(screen)
                prompt = find_prompt(screen) \
                    if error is None and prompt_settled(last_change, now, self.idle) else None
                if error is not None:
                    self.errors_seen.add((self.session, error.line))
                    trigger, dead_status, self.error = "on_error", None, error
                elif prompt is not None:
                    trigger, dead_status, self.asked = "on_prompt", None, prompt
                elif not is_idle(last_change, now, self.idle) or self._auto():
                    stopping.wait(POLL)  # auto: the agent itself says when it is done
                    continue
                else:
                    trigger, dead_status = "on_idle", None
            elif self.session and tmux.alive(self.socket, self.session):
                stopping.wait(POLL)  # between capture and now: look again
                continue
            else:
                if (self.runner.store.refresh().jobs.get(self.job_id, {}).get("agent")
                        or {}).get("suspended"):
                    # stopped by `oj job suspend`, not dead: wait for `oj job resume`
                    self.say("suspended; oj job resume starts it again")
                    answer = self._wait_answer()  # no decision: oj job resume answers
                    if answer is None:
                        return self._stopped()
                    self._deliver(answer[1])
                    self.attempts.reset()
                    last_screen, last_change = None, time.monotonic()
                    continue
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
                if dead_status == 0 and self._auto():  # it said it was done by exiting
                    self.say("exited (status 0): done (on_idle auto)")
                    self.end()
                    return 0, None
            if trigger == "on_error" and self.error:
                action = Action.of(error_action(getattr(self.agent, "on_error", None),
                                                self.error.type), trigger)
                plan = self.attempts.plan(f"on_error {self.error.type}", action)
            else:
                action = Action.of(getattr(self.agent, trigger, None), trigger)
                plan = self.attempts.plan(trigger, action)
            what = "is idle" if trigger == "on_idle" else \
                f"asks: {self.asked.summary()}" if trigger == "on_prompt" and self.asked else \
                f"shows an error ({self.error.type}): {one_line(self.error.line)}" \
                if trigger == "on_error" and self.error else \
                f"exited ({'status ' + str(dead_status) if dead_status is not None else 'killed'})"
            self.say(f"{what}: {plan.action.kind}"
                     + (f" after {plan.delay:g}s" if plan.delay else ""))
            if plan.delay:
                if stopping.wait(plan.delay):
                    return self._stopped()
                if trigger in ("on_idle", "on_prompt") and \
                        tmux.capture(self.socket, self.session) != last_screen:
                    last_change = time.monotonic()  # it went on by itself during the cooldown
                    continue
            outcome = self._act(plan.action, trigger, what, dead_status, plan.reason, screen)
            if outcome is not None:
                return outcome
            last_screen, last_change = None, time.monotonic()

    def _act(self, action: Action, trigger: str, what: str, dead_status: int | None,
             reason: str | None, screen: str | None) -> Outcome | None:
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
        if kind == "answer":
            tmux.send(self.socket, self.session, action.key or "")
            return None
        if kind == "resume" and trigger == "on_error" and self.session and \
                tmux.alive(self.socket, self.session):
            # it waited out the error in its session (a rate limit's reset): it goes on there
            tmux.send(self.socket, self.session, action.message or DEFAULT_NUDGE)
            return None
        if kind == "resume":
            tmux.kill(self.socket, self.session)
            extra = action.message or ""
            prompt = extra if action.replace else \
                "\n\n".join(p for p in (self._restart_prompt(), extra) if p)
            self._start(prompt)
            return None
        source = {"on_idle": "idle", "on_dead": "dead"}.get(trigger, "escalation")
        choices = None
        if trigger == "on_prompt" and self.asked is not None:
            # the person answers the agent's own prompt: its numbered choices, or y/n
            if self.asked.options:
                source, choices = "question", [label for _, label in self.asked.options]
            else:
                source = "approval"
        if kind == "gate":
            code = self._gate(action.run or "true")
            if code == 0:
                self.end()
                return 0, None
            reason = f"{trigger}: gate failed (exit {code}): {one_line(action.run or '')}"
            source = "gate"
        # escalate: a person chooses (oj decision resolve, or oj job resume ID -m ...)
        return self.ask(source, reason or f"agent '{self.agent.name}' {what}", screen, choices)

    def ask(self, source: str, reason: str, screen: str | None = None,
            choices: list[str] | None = None) -> Outcome | None:
        """Make the job wait on a new decision from ``source`` (``ojd.decisions``: its
        options follow from it; ``choices``: a question's own), then do what the person
        chose. An outcome ends the step; None watches on."""
        answer = self._wait_answer(source, reason, screen, choices)
        if answer is None:
            return self._stopped()
        self.attempts.reset()  # a person has looked: the handlers' counts start afresh
        return self._carry_out(*answer)

    def _carry_out(self, action: str, text: str) -> Outcome | None:
        """Do what a resolved decision (or an answer) says: an outcome ends the step."""
        if action == decisions.DONE:
            self.record(agent_delivered(id=self.job_id))
            self.say("marked done by a person")
            self.end()
            return 0, None
        if action == decisions.RESTART:
            if self.session:
                tmux.kill(self.socket, self.session)
            if not self.prompt:
                self.prompt = self._prompt()
            self._start("\n\n".join(p for p in (self.prompt, text) if p))
            self.record(agent_delivered(id=self.job_id))
            return None
        self._deliver(text or DEFAULT_NUDGE)
        return None

    def _auto(self) -> bool:
        return (self.agent.on_idle or {}).get("action") == "auto"

    def _after_reset(self, screen: str) -> None:
        """The agent cleared or compacted its context: its clear/compact prime's output is
        typed in, once per line that says so."""
        found = find_context_reset(screen)
        if found is None or (self.session, found[1]) in self.errors_seen:
            return
        self.errors_seen.add((self.session, found[1]))
        commands = self._prime_commands(found[0])
        if not commands:
            return
        text = "\n\n".join(p for p in (self._prime(c) for c in commands) if p)
        self.say(f"its context was {'cleared' if found[0] == 'clear' else 'compacted'}: "
                 f"{found[0]} prime typed in")
        if text:
            tmux.send(self.socket, self.session, text)

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

    def _prompt(self, source: str = "startup") -> str:
        """The prime commands' output (of ``source``: ``resume`` for a restart, when the
        agent has its own), then the rendered prompt."""
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
        commands = self._prime_commands(source) if source != "startup" else None
        parts = [self._prime(command) for command in
                 (commands if commands is not None else self.agent.prime)]
        return "\n\n".join(p for p in (*parts, prompt.strip()) if p)

    def _prime_commands(self, source: str) -> tuple[str, ...] | None:
        return (getattr(self.agent, "prime_sources", None) or {}).get(source)

    def _restart_prompt(self) -> str:
        """The prompt an agent started again gets: with its resume prime, when it has one,
        and the end of its transcript when it was suspended."""
        if self._prime_commands("resume") is not None:
            prompt = self._prompt("resume")
        else:
            if not self.prompt:
                self.prompt = self._prompt()
            prompt = self.prompt
        kept = (self.job().get("agent") or {}).get("suspended")
        if kept:
            try:
                with open(kept, encoding="utf-8", errors="replace") as f:
                    lines = f.read().rstrip().splitlines()[-TRANSCRIPT_LINES:]
            except OSError:
                lines = []
            if lines:
                prompt += "\n\nWhere your previous session stopped (its last lines):\n" + \
                    "\n".join(lines)
        return prompt

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

    def agent_limit(self) -> int | None:
        return getattr(self.agent, "max_concurrency", None)

    def _started_event(self) -> dict:
        return agent_started(id=self.job_id, step=self.step, visit=self.visit,
                             agent=self.agent.name, socket=self.socket,
                             session=tmux.session_name(self.job_id, self.step, self.visit,
                                                       self.starts), start=self.starts)

    def _wait_slot(self) -> Outcome | None:
        """Under ``max_concurrency``: wait until fewer of this agent run in the project's
        jobs, then take the slot by recording the session about to start, in one
        transaction of the store (two hosts cannot both take the last slot). None: taken;
        else the step's outcome (the runner stops, or the step ran out of time)."""
        limit = self.agent_limit() or 0
        told = False
        busy: list[int] = []

        def claim(state) -> list[dict]:
            busy.append(agents_running(state, self.project, self.agent.name, self.job_id))
            return [self._started_event()] if busy[-1] < limit else []

        while True:
            taken: list[bool] = []
            self.runner._durably(self.job_id, self.runner._record_when, self.job_id, claim,
                                 taken)
            if taken and taken[-1]:
                return None
            if not told:
                told = True
                self.say(f"waits for a slot: {busy[-1]} of max_concurrency {limit} running")
                self.runner.progress(self.job_id, "step", f"{self.step} waits for a slot of "
                                     f"agent '{self.agent.name}' ({busy[-1]}/{limit} running)")
            if self.deadline is not None and time.time() >= self.deadline:
                why = f"timeout: stopped after {self.limit} (no slot of the agent came free)"
                self.say(why)
                return TIMEOUT_EXIT, why
            if self.runner.stopping.wait(SLOT_POLL):
                return self._stopped()

    def _start(self, prompt: str, recorded: bool = False) -> None:
        """Start a session; ``recorded``: its ``agent:started`` is in the store already (a
        slot taken under max_concurrency)."""
        command = render_command(agent_command(self.agent, self.config, self.env), prompt)
        self.command = command
        self.session = tmux.session_name(self.job_id, self.step, self.visit, self.starts)
        os.makedirs(self.cwd, exist_ok=True)
        setenv = {k: v for k, v in self.env.items()
                  if k.startswith("OJ_") or k in self.agent.env}
        tmux.start(self.socket, self.session, command, self.cwd, self.env, setenv)
        if not recorded:
            self.record(self._started_event())
        self.say(f"started in tmux session {self.session} (oj agent attach {self.job_id})")
        self.starts += 1

    # -- gate and escalation ----------------------------------------------------------------

    def _gate(self, command: str) -> int:
        self.say(f"gate: {one_line(command)}")
        return subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env,
                              stdin=subprocess.DEVNULL, stdout=self.log,
                              stderr=subprocess.STDOUT).returncode

    def _wait_answer(self, source: str | None = None, reason: str = "",
                     screen: str | None = None, choices: list[str] | None = None
                     ) -> tuple[str, str] | None:
        """Record a decision from ``source`` and the job's wait on it in one append (none:
        wait on the one recorded), then wait until someone resolves it (or answers the
        job): the action and text chosen; None when the runner stops or the job ended
        meanwhile."""
        if source is not None:
            decision = os.urandom(4).hex()
            made = decisions.waiting_events(
                id=decision, job=self.job_id, project=self.project, source=source,
                step=self.step, agent=self.agent.name, reason=reason, screen=screen,
                choices=choices)
            self.runner._durably(self.job_id, self.runner._record, self.job_id, *made)
            self.log.write(f"==> job waiting for a person: {one_line(reason)} (decision "
                           f"{decision}: oj decision show {decision}; oj decision resolve "
                           f"{decision} N [-m ...])\n".encode())
            self.runner.progress(self.job_id, "step", f"{self.step} waiting: {reason} "
                                 f"(decision {decision})")
            self.runner.announce_decision(self.job(), made[0])
        while True:
            job = self.runner.store.refresh().jobs.get(self.job_id)
            if job is None or job["status"] not in LIVE_JOB_STATES:
                return None
            if job["status"] == "running" and job.get("pending_answer") is not None:
                return job.get("pending_action") or decisions.SEND, job["pending_answer"]
            if self.runner.stopping.wait(ANSWER_POLL):
                return None

    def _deliver(self, answer: str) -> None:
        """Type the answer into a live agent; a dead one starts again with it."""
        if self.session and tmux.alive(self.socket, self.session):
            tmux.send(self.socket, self.session, answer)
            self.say("answer typed into the session")
        else:
            self._start("\n\n".join(p for p in (self._restart_prompt(), answer) if p))
        self.record(agent_delivered(id=self.job_id))


def _first_word(command: str) -> str | None:
    """The program a command line starts, when it starts with a plain word."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[0] if words else None
