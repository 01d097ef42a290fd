"""Every event oj writes to its log: one constructor per type, named for it.

An event is the plain dict the log stores as JSON: ``type`` (one of the names below), the
fields of its type and ``ts``, which the store stamps on append (``Transaction.append``).
The fold (``ojd.state``) dispatches on the same names. The wire format is frozen: old logs
replay, so a field keeps its (sometimes terse) key; a constructor's keyword arguments are
named for what they hold and map onto those keys: ``project`` -> ``p``, ``queue`` -> ``q``
(of an item), ``workspace`` -> ``ws``. A field shown as optional below is left out of the
dict when it has no value, as it always was.

The TypedDicts exist for the type checker only: typing stays off the CLI's start-up path
(``oj queue push`` appends a ``queue:pushed`` without importing it).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal, NotRequired, TypedDict

Event = dict  # any event: {"type": ..., "ts": ..., the fields of its type}

# -- type names: the fold's keys and each constructor's ``type`` -------------------------------

QUEUE_PUSHED = "queue:pushed"
QUEUE_TAKEN = "queue:taken"
QUEUE_COMPLETED = "queue:completed"
QUEUE_FAILED = "queue:failed"
QUEUE_RELEASED = "queue:released"
QUEUE_LEASE_RENEWED = "queue:lease_renewed"
QUEUE_LEASE_EXPIRED = "queue:lease_expired"
QUEUE_DROPPED = "queue:dropped"
QUEUE_RETRIED = "queue:retried"
QUEUE_PRUNED = "queue:pruned"
QUEUE_PAUSED = "queue:paused"
QUEUE_RESUMED = "queue:resumed"
JOB_CREATED = "job:created"
JOB_STEP_STARTED = "job:step_started"
JOB_LOCALS = "job:locals"
JOB_STEP_FINISHED = "job:step_finished"
JOB_FINISHED = "job:finished"
JOB_RESUMED = "job:resumed"
JOB_PROCESS = "job:process"
JOB_REOPENED = "job:reopened"
JOB_PRUNED = "job:pruned"
JOB_WAITING = "job:waiting"
JOB_ANSWERED = "job:answered"
JOB_DISMISSED = "job:dismissed"
AGENT_STARTED = "agent:started"
AGENT_DELIVERED = "agent:delivered"
DECISION_CREATED = "decision:created"
DECISION_RESOLVED = "decision:resolved"
AGENT_SUSPENDED = "agent:suspended"
WORKER_RECORDED = "worker:recorded"
WORKER_STARTED = "worker:started"
WORKER_WOKEN = "worker:woken"
WORKER_STOPPED = "worker:stopped"
WORKER_RESIZED = "worker:resized"
WORKER_RUNBOOK = "worker:runbook"
WORKER_PRUNED = "worker:pruned"
WORKER_RENAMED = "worker:renamed"
CRON_RECORDED = "cron:recorded"
CRON_TICK = "cron:tick"
CRON_SKIPPED = "cron:skipped"
CRON_RENAMED = "cron:renamed"
STATE_LOSS_ACKNOWLEDGED = "state:loss_acknowledged"
STATE_REPAIRED = "state:repaired"

if TYPE_CHECKING:
    class QueuePushed(TypedDict):
        type: Literal["queue:pushed"]
        id: str
        p: str
        q: str
        data: dict[str, Any]
        key: str
        due: NotRequired[float]
        priority: NotRequired[int]
        ts: NotRequired[float]

    class QueueTaken(TypedDict):
        type: Literal["queue:taken"]
        id: str
        by: str
        job: str
        lease: NotRequired[float]
        windows: NotRequired[list[list]]
        ts: NotRequired[float]

    class ItemEvent(TypedDict):
        """queue:completed, queue:released, queue:dropped, queue:retried"""
        type: str
        id: str
        ts: NotRequired[float]

    class QueueFailed(TypedDict):
        type: Literal["queue:failed"]
        id: str
        error: str | None
        dead: bool
        retry_at: float | None
        ts: NotRequired[float]

    class ItemOfJob(TypedDict):
        """queue:lease_renewed, queue:lease_expired"""
        type: str
        id: str
        job: str
        ts: NotRequired[float]

    class QueuePause(TypedDict):
        """queue:paused, queue:resumed"""
        type: str
        p: str
        q: str
        ts: NotRequired[float]

    class Pruned(TypedDict):
        """queue:pruned, job:pruned"""
        type: str
        ids: list[str]
        ts: NotRequired[float]

    class JobCreated(TypedDict):
        type: Literal["job:created"]
        id: str
        p: str
        pipeline: str
        name: str
        vars: dict[str, Any]
        cwd: str | None
        ws: str | None
        invoke: str | None
        item: str | None
        worker: str | None
        by: str | None
        cron: NotRequired[str]
        rerun_of: NotRequired[str]
        ts: NotRequired[float]

    class JobStepStarted(TypedDict):
        type: Literal["job:step_started"]
        id: str
        step: str
        pid: NotRequired[int]
        start: NotRequired[int | None]
        boot: NotRequired[str | None]
        host: NotRequired[str | None]
        ts: NotRequired[float]

    class JobLocals(TypedDict):
        type: Literal["job:locals"]
        id: str
        locals: dict[str, str]
        ts: NotRequired[float]

    class JobStepFinished(TypedDict):
        type: Literal["job:step_finished"]
        id: str
        step: str
        exit: int
        next: str | None
        failing: bool
        ts: NotRequired[float]

    class JobFinished(TypedDict):
        type: Literal["job:finished"]
        id: str
        outcome: str
        error: str | None
        ts: NotRequired[float]

    class JobResumed(TypedDict):
        type: Literal["job:resumed"]
        id: str
        by: str
        ts: NotRequired[float]

    class JobProcess(TypedDict):
        type: Literal["job:process"]
        id: str
        pid: int
        start: int | None
        boot: str | None
        unit: str | None
        host: str | None
        by: str | None
        ts: NotRequired[float]

    class JobReopened(TypedDict):
        type: Literal["job:reopened"]
        id: str
        step: str | None
        vars: dict[str, Any]
        ts: NotRequired[float]

    class JobWaiting(TypedDict):
        type: Literal["job:waiting"]
        id: str
        reason: str
        ts: NotRequired[float]

    class JobAnswered(TypedDict):
        type: Literal["job:answered"]
        id: str
        message: str
        ts: NotRequired[float]

    class JobDismissed(TypedDict):
        type: Literal["job:dismissed"]
        id: str
        ts: NotRequired[float]

    class AgentStarted(TypedDict):
        type: Literal["agent:started"]
        id: str
        step: str
        visit: int
        agent: str
        socket: str
        session: str
        start: int
        ts: NotRequired[float]

    class AgentDelivered(TypedDict):
        type: Literal["agent:delivered"]
        id: str
        ts: NotRequired[float]

    class DecisionCreated(TypedDict):
        type: Literal["decision:created"]
        id: str
        job: str
        p: str
        source: str
        step: str | None
        agent: str | None
        reason: str
        screen: list[str]
        options: list[dict[str, Any]]
        ts: NotRequired[float]

    class DecisionResolved(TypedDict):
        type: Literal["decision:resolved"]
        id: str
        option: int | None
        message: str | None
        by: str
        host: str

    class AgentSuspended(TypedDict):
        type: Literal["agent:suspended"]
        id: str
        transcript: str
        by: str
        ts: NotRequired[float]

    class WorkerRecorded(TypedDict):
        type: Literal["worker:recorded"]
        name: str
        p: str
        runbook: str
        queue: str
        pipeline: str
        concurrency: int
        ts: NotRequired[float]

    class WorkerStarted(TypedDict):
        type: Literal["worker:started"]
        name: str
        invocation: str | None
        pid: int
        host: str
        ts: NotRequired[float]

    class WorkerWoken(TypedDict):
        type: Literal["worker:woken"]
        name: str
        ts: NotRequired[float]

    class WorkerStopped(TypedDict):
        type: Literal["worker:stopped"]
        name: str
        invocation: str | None
        host: str
        ts: NotRequired[float]

    class WorkerResized(TypedDict):
        type: Literal["worker:resized"]
        name: str
        concurrency: int | None
        ts: NotRequired[float]

    class WorkerRunbook(TypedDict):
        type: Literal["worker:runbook"]
        name: str
        problem: str | None
        ts: NotRequired[float]

    class WorkerPruned(TypedDict):
        type: Literal["worker:pruned"]
        names: list[str]
        ts: NotRequired[float]

    class WorkerRenamed(TypedDict):
        type: Literal["worker:renamed"]
        name: str
        to: str
        ts: NotRequired[float]

    class CronRenamed(TypedDict):
        type: Literal["cron:renamed"]
        name: str
        to: str
        ts: NotRequired[float]

    class CronRecorded(TypedDict):
        type: Literal["cron:recorded"]
        name: str
        p: str
        runbook: str
        ts: NotRequired[float]

    class CronTick(TypedDict):
        type: Literal["cron:tick"]
        name: str
        job: str
        ts: NotRequired[float]

    class CronSkipped(TypedDict):
        type: Literal["cron:skipped"]
        name: str
        running: int
        ts: NotRequired[float]

    class StateLossAcknowledged(TypedDict):
        type: Literal["state:loss_acknowledged"]
        upto: int
        ts: NotRequired[float]

    class StateRepaired(TypedDict):
        type: Literal["state:repaired"]
        ts: NotRequired[float]


# -- queue items ------------------------------------------------------------------------------

def queue_pushed(*, id: str, project: str, queue: str, data: dict, key: str,
                 due: float | None = None, priority: int = 0) -> QueuePushed:
    """An item queued; ``key``: the hash of its data, for dedup ("" for none); ``due``: not
    taken before this time (a delayed push; absent otherwise); ``priority``: the higher is
    taken first (absent: 0)."""
    event: QueuePushed = {"type": QUEUE_PUSHED, "id": id, "p": project, "q": queue,
                          "data": data, "key": key}
    if due:
        event["due"] = due
    if priority:
        event["priority"] = priority
    return event


def queue_taken(*, id: str, by: str, job: str, lease: float | None = None,
                windows: list[list] | None = None) -> QueueTaken:
    """An item leased to owner ``by`` for ``job``; ``lease`` (a shared store only): seconds
    it stays taken unless the job's process renews it; ``windows``: [key, N] of each rate
    the take counts against (``ojd.state.limits``)."""
    event: QueueTaken = {"type": QUEUE_TAKEN, "id": id, "by": by, "job": job}
    if windows:
        event["windows"] = windows
    if lease:
        event["lease"] = lease
    return event


def queue_completed(*, id: str) -> ItemEvent:
    return {"type": QUEUE_COMPLETED, "id": id}


def queue_failed(*, id: str, error: str | None, dead: bool, retry_at: float | None
                 ) -> QueueFailed:
    """A failed attempt: ``dead`` when attempts are exhausted, else retried after
    ``retry_at``."""
    return {"type": QUEUE_FAILED, "id": id, "error": error, "dead": dead, "retry_at": retry_at}


def queue_released(*, id: str) -> ItemEvent:
    """Back to pending; the attempt is not counted."""
    return {"type": QUEUE_RELEASED, "id": id}


def queue_lease_renewed(*, id: str, job: str) -> ItemOfJob:
    """A shared store: the job's process keeps its item's lease."""
    return {"type": QUEUE_LEASE_RENEWED, "id": id, "job": job}


def queue_lease_expired(*, id: str, job: str) -> ItemOfJob:
    """A shared store: the lease ran out; back to pending, its job's process cleared."""
    return {"type": QUEUE_LEASE_EXPIRED, "id": id, "job": job}


def queue_dropped(*, id: str) -> ItemEvent:
    return {"type": QUEUE_DROPPED, "id": id}


def queue_retried(*, id: str) -> ItemEvent:
    """Back to pending with attempts reset."""
    return {"type": QUEUE_RETRIED, "id": id}


def queue_pruned(*, ids: list[str]) -> Pruned:
    """Completed and dead items removed (an item in any other state stays)."""
    return {"type": QUEUE_PRUNED, "ids": ids}


def queue_paused(*, project: str, queue: str) -> QueuePause:
    """``oj queue pause``: no host takes the queue's items (pushes are still accepted)."""
    return {"type": QUEUE_PAUSED, "p": project, "q": queue}


def queue_resumed(*, project: str, queue: str) -> QueuePause:
    """``oj queue resume``: the queue's items are taken again."""
    return {"type": QUEUE_RESUMED, "p": project, "q": queue}


# -- jobs and their agents ------------------------------------------------------------------------

def job_created(*, id: str, project: str, pipeline: str, name: str, vars: dict,
                cwd: str | None, workspace: str | None, invoke: str | None,
                item: str | None, worker: str | None, by: str | None,
                cron: str | None = None, rerun_of: str | None = None) -> JobCreated:
    """A job of ``pipeline``; ``cron``: the cron whose tick made it, ``rerun_of``: the job
    ``oj job rerun`` ran again (each left out otherwise)."""
    event: JobCreated = {"type": JOB_CREATED, "id": id, "p": project, "pipeline": pipeline,
                         "name": name, "vars": vars, "cwd": cwd, "ws": workspace,
                         "invoke": invoke, "item": item, "worker": worker, "by": by}
    if cron is not None:
        event["cron"] = cron
    if rerun_of is not None:
        event["rerun_of"] = rerun_of
    return event


def job_step_started(*, id: str, step: str, pid: int | None = None, start: int | None = None,
                     boot: str | None = None, host: str | None = None) -> JobStepStarted:
    """A step started; ``pid`` (with its start time, boot and host): the step's process
    group, for a runner that takes the job over (left out when there is none)."""
    event: JobStepStarted = {"type": JOB_STEP_STARTED, "id": id, "step": step}
    if pid is not None:
        event.update(pid=pid, start=start, boot=boot, host=host)
    return event


def job_locals(*, id: str, locals: dict) -> JobLocals:
    """The job's locals, evaluated once and kept for a resume."""
    return {"type": JOB_LOCALS, "id": id, "locals": locals}


def job_step_finished(*, id: str, step: str, exit: int, next: str | None, failing: bool
                      ) -> JobStepFinished:
    return {"type": JOB_STEP_FINISHED, "id": id, "step": step, "exit": exit, "next": next,
            "failing": failing}


def job_finished(*, id: str, outcome: str, error: str | None) -> JobFinished:
    """``outcome``: "done", "failed" or "cancelled"."""
    return {"type": JOB_FINISHED, "id": id, "outcome": outcome, "error": error}


def job_resumed(*, id: str, by: str) -> JobResumed:
    """A new owner picks up an interrupted job."""
    return {"type": JOB_RESUMED, "id": id, "by": by}


def job_process(*, id: str, pid: int, start: int | None, boot: str | None, unit: str | None,
                host: str | None, by: str | None) -> JobProcess:
    """The process that runs the job now (and its transient unit under systemd)."""
    return {"type": JOB_PROCESS, "id": id, "pid": pid, "start": start, "boot": boot,
            "unit": unit, "host": host, "by": by}


def job_reopened(*, id: str, step: str | None, vars: dict) -> JobReopened:
    """``oj job resume`` of a failed or cancelled job: it runs again from ``step``."""
    return {"type": JOB_REOPENED, "id": id, "step": step, "vars": vars}


def job_pruned(*, ids: list[str]) -> Pruned:
    """Finished jobs removed (a job that is not finished stays)."""
    return {"type": JOB_PRUNED, "ids": ids}


def job_waiting(*, id: str, reason: str) -> JobWaiting:
    """An agent step escalated: a person must answer."""
    return {"type": JOB_WAITING, "id": id, "reason": reason}


def job_answered(*, id: str, message: str) -> JobAnswered:
    """``oj job resume ID -m``: the answer to a waiting job, which runs on."""
    return {"type": JOB_ANSWERED, "id": id, "message": message}


def job_dismissed(*, id: str) -> JobDismissed:
    """``oj job dismiss``: a failed or waiting job no longer counts as needing a person (it
    stays in the history as it was)."""
    return {"type": JOB_DISMISSED, "id": id}


def agent_started(*, id: str, step: str, visit: int, agent: str, socket: str, session: str,
                  start: int) -> AgentStarted:
    """An agent's tmux session; ``start`` counts its restarts."""
    return {"type": AGENT_STARTED, "id": id, "step": step, "visit": visit, "agent": agent,
            "socket": socket, "session": session, "start": start}


def agent_delivered(*, id: str) -> AgentDelivered:
    """The answer reached the agent."""
    return {"type": AGENT_DELIVERED, "id": id}


# -- decisions ----------------------------------------------------------------------------------

def decision_created(*, id: str, job: str, project: str, source: str, step: str | None,
                     agent: str | None, reason: str, screen: list[str], options: list[dict]
                     ) -> DecisionCreated:
    """A person must choose for ``job`` (``ojd.decisions``): its source, context (``reason``,
    the agent's last ``screen`` lines) and numbered ``options``."""
    return {"type": DECISION_CREATED, "id": id, "job": job, "p": project, "source": source,
            "step": step, "agent": agent, "reason": reason, "screen": screen,
            "options": options}


def decision_resolved(*, id: str, option: int | None, message: str | None, by: str,
                      host: str) -> DecisionResolved:
    """Option ``option`` (1-based; None: answered with ``message`` alone) chosen by user
    ``by`` on ``host``."""
    return {"type": DECISION_RESOLVED, "id": id, "option": option, "message": message,
            "by": by, "host": host}


def agent_suspended(*, id: str, transcript: str, by: str) -> AgentSuspended:
    """``oj job suspend``: the agent is stopped, its transcript kept at ``transcript``; the
    job waits until ``oj job resume`` starts it again."""
    return {"type": AGENT_SUSPENDED, "id": id, "transcript": transcript, "by": by}


# -- workers and crons ----------------------------------------------------------------------------

def worker_recorded(*, name: str, project: str, runbook: str, queue: str, pipeline: str,
                    concurrency: int) -> WorkerRecorded:
    """A worker bound to its project, with what its runs need to know."""
    return {"type": WORKER_RECORDED, "name": name, "p": project, "runbook": runbook,
            "queue": queue, "pipeline": pipeline, "concurrency": concurrency}


def worker_started(*, name: str, invocation: str | None, pid: int, host: str
                   ) -> WorkerStarted:
    return {"type": WORKER_STARTED, "name": name, "invocation": invocation, "pid": pid,
            "host": host}


def worker_woken(*, name: str) -> WorkerWoken:
    return {"type": WORKER_WOKEN, "name": name}


def worker_stopped(*, name: str, invocation: str | None, host: str) -> WorkerStopped:
    return {"type": WORKER_STOPPED, "name": name, "invocation": invocation, "host": host}


def worker_resized(*, name: str, concurrency: int | None) -> WorkerResized:
    """``oj worker resize``: the concurrency the worker keeps to (None: its runbook's)."""
    return {"type": WORKER_RESIZED, "name": name, "concurrency": concurrency}


def worker_runbook(*, name: str, problem: str | None) -> WorkerRunbook:
    """A running worker could not reload its changed runbook and keeps the previous one
    (``problem``: why), or reloaded it after such a problem (None)."""
    return {"type": WORKER_RUNBOOK, "name": name, "problem": problem}


def worker_pruned(*, names: list[str]) -> WorkerPruned:
    """Bindings removed by ``oj worker prune``."""
    return {"type": WORKER_PRUNED, "names": names}


def worker_renamed(*, name: str, to: str) -> WorkerRenamed:
    """A worker recorded before projects had names (``merge``) now goes by its full name
    (``shop:merge``)."""
    return {"type": WORKER_RENAMED, "name": name, "to": to}


def cron_renamed(*, name: str, to: str) -> CronRenamed:
    """As ``worker_renamed``, for a cron."""
    return {"type": CRON_RENAMED, "name": name, "to": to}


def cron_recorded(*, name: str, project: str, runbook: str) -> CronRecorded:
    """A cron bound to its project (its timer runs ``ojd cron NAME``)."""
    return {"type": CRON_RECORDED, "name": name, "p": project, "runbook": runbook}


def cron_tick(*, name: str, job: str) -> CronTick:
    """A tick started ``job``."""
    return {"type": CRON_TICK, "name": name, "job": job}


def cron_skipped(*, name: str, running: int) -> CronSkipped:
    """A tick found ``running`` of its jobs running (its concurrency) and started none."""
    return {"type": CRON_SKIPPED, "name": name, "running": running}


# -- the state itself ---------------------------------------------------------------------------

def state_loss_acknowledged(*, upto: int) -> StateLossAcknowledged:
    """An operator accepted the lost positions up to ``upto``."""
    return {"type": STATE_LOSS_ACKNOWLEDGED, "upto": upto}


def state_repaired() -> StateRepaired:
    """A repair wrote snapshots: a mark in the log, nothing of the state changes."""
    return {"type": STATE_REPAIRED}


# each type name with its constructor: what the fold and the docs are checked against
CONSTRUCTORS: dict[str, Callable[..., dict]] = {
    QUEUE_PUSHED: queue_pushed,
    QUEUE_TAKEN: queue_taken,
    QUEUE_COMPLETED: queue_completed,
    QUEUE_FAILED: queue_failed,
    QUEUE_RELEASED: queue_released,
    QUEUE_LEASE_RENEWED: queue_lease_renewed,
    QUEUE_LEASE_EXPIRED: queue_lease_expired,
    QUEUE_DROPPED: queue_dropped,
    QUEUE_RETRIED: queue_retried,
    QUEUE_PRUNED: queue_pruned,
    QUEUE_PAUSED: queue_paused,
    QUEUE_RESUMED: queue_resumed,
    JOB_CREATED: job_created,
    JOB_STEP_STARTED: job_step_started,
    JOB_LOCALS: job_locals,
    JOB_STEP_FINISHED: job_step_finished,
    JOB_FINISHED: job_finished,
    JOB_RESUMED: job_resumed,
    JOB_PROCESS: job_process,
    JOB_REOPENED: job_reopened,
    JOB_PRUNED: job_pruned,
    JOB_WAITING: job_waiting,
    JOB_ANSWERED: job_answered,
    JOB_DISMISSED: job_dismissed,
    AGENT_STARTED: agent_started,
    AGENT_DELIVERED: agent_delivered,
    DECISION_CREATED: decision_created,
    DECISION_RESOLVED: decision_resolved,
    AGENT_SUSPENDED: agent_suspended,
    WORKER_RECORDED: worker_recorded,
    WORKER_STARTED: worker_started,
    WORKER_WOKEN: worker_woken,
    WORKER_STOPPED: worker_stopped,
    WORKER_RESIZED: worker_resized,
    WORKER_RUNBOOK: worker_runbook,
    WORKER_PRUNED: worker_pruned,
    WORKER_RENAMED: worker_renamed,
    CRON_RECORDED: cron_recorded,
    CRON_TICK: cron_tick,
    CRON_SKIPPED: cron_skipped,
    CRON_RENAMED: cron_renamed,
    STATE_LOSS_ACKNOWLEDGED: state_loss_acknowledged,
    STATE_REPAIRED: state_repaired,
}
