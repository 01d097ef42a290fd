"""The runbook model: validated, immutable values that pipelines and workers read.

``ojd.runbook.validate.build`` makes one from parsed HCL; the project loader caches it by content
hash, so this module stays light (it is what unpickling a cached runbook imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ojd.runbook.argspec import ArgSpec


DEFAULT_AGENT_IDLE = 120.0  # an agent's `idle` when its block has none
DEFAULT_EXTERNAL_TIMEOUT = 60.0  # an external queue's list and take commands, seconds

@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Command:
    name: str
    args: ArgSpec
    defaults: dict[str, Any]
    run: str | None  # a shell script run in the foreground, or None when it starts a pipeline
    pipeline: str | None
    where: Where
    own: Pipeline | None = None  # run = { agent = ... }: a one-step pipeline (AGENT_PIPELINE)


@dataclass(frozen=True)
class Queue:
    name: str
    type: str  # "persisted" | "external"
    vars: tuple[str, ...]
    defaults: dict[str, Any]
    retry_attempts: int  # tries after the first failure; 0 = dead on first failure
    retry_cooldown: float
    list_cmd: str | None
    take_cmd: str | None
    where: Where
    timeout: float = DEFAULT_EXTERNAL_TIMEOUT  # its list and take commands, seconds
    priority: int = 0  # of its items pushed without --priority: the higher is taken first
    # how the retry cooldown grows (ojd.backoff): "fixed" or "exponential", capped at
    # retry_max seconds, a uniform draw below it with retry_jitter
    retry_backoff: str = "fixed"
    retry_max: float | None = None
    retry_jitter: bool = False
    rate: tuple[int, float] | None = None  # at most N takes per so many seconds, all hosts
    retain: dict[str, float] = field(default_factory=dict)  # done/dead/jobs -> seconds kept
    poll: float | None = None  # upstream's: how often its workers poll (theirs comes first)


@dataclass(frozen=True)
class Worker:
    name: str
    queue: str
    pipeline: str
    concurrency: int
    poll: float  # fallback poll interval, seconds
    where: Where
    # with a shared store (PostgreSQL): how long a taken item stays with a host whose job
    # process stopped renewing it, seconds
    lease: float = 60.0
    rate: tuple[int, float] | None = None  # at most N of its takes per so many seconds
    global_concurrency: int | None = None  # its jobs at once across every host
    retain: dict[str, float] = field(default_factory=dict)  # over its queue's, per kind


@dataclass(frozen=True)
class Step:
    name: str
    run: str | None  # shell script; None when the step hands over to an agent
    agent: str | None
    on_done: str | None
    on_fail: str | None
    where: Where
    timeout: float | None = None  # seconds; past it the step is stopped and fails
    on_cancel: str | None = None  # the cleanup step a cancel runs while this step runs
    on_fail_attempts: int | None = None  # upstream's attempts: on_fail taken at most N times
    # an approval step (no run, no agent): the question a person approves (on_done) or
    # rejects (on_fail), a template
    approve: str | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    vars: tuple[str, ...]
    defaults: dict[str, Any]
    locals: tuple[tuple[str, str], ...]  # evaluated once per job, in order
    workspace: str | None  # "ephemeral" | "persistent" | None (run in the invocation dir)
    notify: dict[str, str]
    on_done: str | None
    on_fail: str | None
    max_visits: int
    steps: dict[str, Step]  # in source order; the first is where a job starts
    where: Where
    job_name: str | None = None  # template naming its jobs (var, invoke, workspace contexts)
    timeout: float | None = None  # a job's whole run, seconds (None: oj.conf's job_timeout)
    spelling: str = "pipeline"  # the block's word in its file: "pipeline" or upstream's "job"
    on_cancel: str | None = None  # the cleanup step a cancel runs (a step's own comes first)
    # source = { git = true }: its jobs' directory is a git worktree of the invoking
    # repository, on branch (a template) made from ref (a template; may hold $(...))
    git_branch: str | None = None
    git_ref: str | None = None

    @property
    def first_step(self) -> str:
        return next(iter(self.steps))


@dataclass(frozen=True)
class Agent:
    name: str
    run: str
    prompt: str | None
    prompt_file: str | None
    env: dict[str, str]
    on_idle: dict[str, Any] | None
    on_dead: dict[str, Any] | None
    on_error: dict[str, Any] | None  # error type (or "*": any other) -> action
    where: Where
    # (defaults keep runbooks cached by older versions loadable)
    cwd: str | None = None  # template, relative to the job's directory
    prime: tuple[str, ...] = ()  # shell commands whose output starts the prompt
    idle: float = DEFAULT_AGENT_IDLE  # seconds without new screen output: the agent is idle
    on_prompt: dict[str, Any] | None = None  # a permission or question prompt on its screen
    max_concurrency: int | None = None  # its agents at once across the project's jobs
    # prime commands for "resume", "clear" and "compact" ("startup" is ``prime``)
    prime_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Cron:
    name: str
    interval: float | None  # seconds between ticks; or
    schedule: str | None  # a systemd calendar expression (OnCalendar=)
    pipeline: str  # the pipeline its jobs run: the runbook's, or its own (CRON_PIPELINE)
    run: str | None  # a shell `run`: the one step of its own pipeline
    concurrency: int  # a tick that finds this many of its jobs running is skipped
    where: Where
    own: Pipeline | None = None  # the pipeline of a shell `run`


# the pipeline name of a cron whose run is a shell string: no runbook pipeline has a colon
CRON_PIPELINE = "cron:"
# the pipeline of a command whose run is { agent = ... }: "agent:" + the command's name
AGENT_PIPELINE = "agent:"


@dataclass(frozen=True)
class Runbook:
    commands: dict[str, Command] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # file -> ["queue merges", ...]
    digest: str = ""  # content hash of the files it was built from
    crons: dict[str, Cron] = field(default_factory=dict)

    def pipeline(self, name: str) -> Pipeline | None:
        """The pipeline a job runs: a runbook pipeline, or a shell cron's own."""
        found = self.pipelines.get(name)
        if found is None and name.startswith(CRON_PIPELINE):
            cron = self.crons.get(name[len(CRON_PIPELINE):])
            found = cron.own if cron is not None else None
        elif found is None and name.startswith(AGENT_PIPELINE):
            command = self.commands.get(name[len(AGENT_PIPELINE):])
            found = command.own if command is not None else None
        return found
