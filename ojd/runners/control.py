"""Acting on jobs from outside: cancel, reopen, dismiss, follow.

A cancel is recorded before the job's process is stopped, in one append with its item's
fate, so the job process (fenced by ``jobs.Superseded``) can record nothing after it and
the item is never left active.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from ojd import paths
from ojd.agents import session
from ojd.decisions import choose
from ojd.errors import OjError
from ojd.events import (
    agent_suspended,
    decision_resolved,
    job_answered,
    job_dismissed,
    job_finished,
    job_reopened,
    queue_failed,
    queue_released,
)
from ojd.identity import elsewhere, host_name, user_name
from ojd.notify import one_line
from ojd.runners.cleanup import run_cleanup
from ojd.runners.jobprocess import alive
from ojd.runners.leftovers import STOP_GRACE
from ojd.runners.stepprocess import terminate_group
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store
from ojd.systemd import Systemd, SystemdUnavailable
from ojd.unitcontrol import stop_and_wait

# what `oj job wait` and `oj run` exit with for each outcome
OUTCOME_EXIT = {"done": 0, "failed": 1, "cancelled": 4}


def cancel(store: Store, job_id: str, *, reason: str = "cancelled",
           release: bool = False, cleanup: bool = False) -> dict:
    """Record the job cancelled and stop what runs of it. Its queue item goes ``dead``
    with the reason (``oj queue retry`` brings it back), or back to pending without an
    attempt counted when ``release`` (a worker stopped with --cancel). With ``cleanup``,
    then run its cleanup step (``on_cancel``; ``ojd.runners.cleanup``)."""
    with store.transaction() as tx:
        job = tx.state.jobs.get(job_id)
        if job is None:
            raise OjError(f"no job with id {job_id}")
        if job["status"] not in LIVE_JOB_STATES:
            raise OjError(f"job {job_id} is {job['status']}; only a running or waiting job "
                          "can be cancelled")
        tx.append(*cancel_events(store, tx.state, job, reason, release))
    stop(job)
    if cleanup:
        run_cleanup(store, job)
    return job


def cancel_events(store: Store, state, job: dict, reason: str, release: bool = False
                  ) -> list[dict]:
    """The events that cancel a live ``job``, its item's fate with them; its log says so
    first (the record a follower stops at comes after). Then ``stop(job)``."""
    job_id = job["id"]
    events: list[dict] = [job_finished(id=job_id, outcome="cancelled", error=reason)]
    _say(store, job_id, "==> job cancelled" + ("" if reason == "cancelled"
                                                 else f": {one_line(reason)}"))
    item = state.items.get(job.get("item") or "")
    if item is not None and item["status"] == "active" and item.get("job") == job_id:
        if release:
            events.append(queue_released(id=item["id"]))
        else:
            events.append(queue_failed(id=item["id"], error=reason, dead=True,
                                       retry_at=None))
    return events


def _say(store: Store, job_id: str, line: str) -> None:
    """A line in the job's existing log from outside its process; a log that cannot be
    written (a full disk, another user's) does not stop what is done to the job."""
    try:  # never created here: a log made by root would be closed to a --run-as worker
        fd = os.open(paths.job_log(store.root, job_id), os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:
        os.write(fd, line.encode() + b"\n")
    except OSError:
        pass
    finally:
        os.close(fd)


def stop(job: dict, timeout: float = 3 * STOP_GRACE) -> None:
    """Stop the job's process (its scope, with everything in it) and its step's process
    group; wait up to ``timeout`` for the job process to be gone, and its scope with all
    that ran in it (a scope's stop kills what ignores SIGTERM after STOP_GRACE; without
    one, the job process stops its step and what its steps left, the same way)."""
    proc = job.get("process")
    if alive(proc):
        stopped = False
        if proc.get("unit"):
            stopped = _stop_unit(proc["unit"], timeout)
        if not stopped:
            try:
                os.kill(proc["pid"], signal.SIGTERM)  # it stops its step and exits
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + timeout
        while alive(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(proc):
            raise OjError(f"job {job['id']} is recorded cancelled, but its process "
                          f"{proc['pid']} could not be stopped (not yours to signal?); stop "
                          f"it as its owner: kill {proc['pid']}")
    step = job.get("step_proc")
    if alive(step):  # a step whose job process was gone already
        terminate_group(step["pid"], grace=2.0)
    _stop_agent(job)


def _stop_unit(unit: str, timeout: float) -> bool:
    """Stop the scope and wait until nothing runs in it (or ``timeout``)."""
    for user in ((False, True) if os.geteuid() == 0 else (True,)):
        try:
            stop_and_wait(Systemd(user=user), unit, timeout)
            return True
        except SystemdUnavailable:
            continue
    return False


def _stop_agent(job: dict) -> None:
    """An agent's tmux server: in the job's scope under systemd, else in a session of its
    own that the job process's end does not reach."""
    agent = job.get("agent")
    if agent and agent.get("socket"):
        session.end_job(agent["socket"])


def reopen(store: Store, job_id: str, vars_: dict[str, str]) -> dict:
    """Make a failed or cancelled job run again from the step it stopped at."""
    with store.transaction() as tx:
        job = tx.state.jobs.get(job_id)
        if job is None:
            raise OjError(f"no job with id {job_id}")
        if job["status"] in LIVE_JOB_STATES or job["status"] == "done":
            raise OjError(f"job {job_id} is {job['status']}; only a failed or cancelled job "
                          "is reopened")
        item = tx.state.items.get(job.get("item") or "")
        if item is not None and (item.get("job") != job_id or item["status"] == "completed"):
            raise OjError(f"job {job_id}'s item {item['id']} was "
                          + ("completed" if item["status"] == "completed"
                             else f"taken by job {item.get('job')}")
                          + " since; its queue moved on, nothing to resume")
        failed = [h for h in job["history"] if h["exit"] not in (0, None)]
        if job["status"] == "cancelled" or not failed:
            step = job["history"][-1]["step"] if job["history"] else None
        else:
            step = failed[-1]["step"]
        tx.append(job_reopened(id=job_id, step=step, vars=vars_))
        return tx.state.jobs[job_id]


# what `oj job dismiss` takes: what may need a person (a cancelled job's item is dead)
DISMISSIBLE = ("failed", "waiting", "cancelled")


def dismiss(store: Store, job_ids: list[str]) -> list[str]:
    """Record the jobs seen to: out of what needs a person, kept in the history. All of
    them or none: a running or done one is refused, naming it. The ids dismissed now (one
    dismissed before is not recorded again)."""
    with store.transaction() as tx:
        todo = []
        for job_id in job_ids:
            job = tx.state.jobs.get(job_id)
            if job is None:
                raise OjError(f"no job with id {job_id}")
            if job["status"] not in DISMISSIBLE:
                fix = f"cancel it first: oj job cancel {job_id}" if job["status"] == \
                    "running" else "nothing about it needs a person"
                raise OjError(f"job {job_id} is {job['status']}; only a failed, waiting or "
                              f"cancelled job is dismissed ({fix})")
            if not job.get("dismissed"):
                todo.append(job_id)
        if todo:
            tx.append(*(job_dismissed(id=job_id) for job_id in todo))
    return todo


RESUME_MESSAGE = ("You were suspended and have been started again; carry on with the task "
                  "from where you stopped.")


def transcript_path(root: str, job_id: str, session_name: str) -> str:
    """Where a suspended agent's transcript is kept: in the state dir, beside the job logs
    (not next to its socket: the job's end removes those)."""
    return os.path.join(paths.logs_dir(root), f"{job_id}.{session_name}.transcript")


def suspend(store: Store, job_id: str, by: str) -> str:
    """``oj job suspend``: keep the agent's transcript, record the suspension (the job
    waits; its workspace stays) and stop the agent. The transcript's path."""
    j = store.refresh().jobs.get(job_id) or {}
    a = j.get("agent")
    if j.get("status") != "running" or not a or a.get("step") != j.get("step") or \
            a.get("suspended"):
        what = "waiting" if j.get("status") == "waiting" else j.get("status") or "gone"
        raise OjError(f"job {job_id} has no running agent to suspend (it is {what})")
    text = session.transcript(a["socket"], a["session"])
    if text is None:
        raise OjError(f"the agent of job {job_id} has exited; nothing to suspend")
    path = transcript_path(store.root, job_id, a["session"])
    fd = paths.open_state_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    with store.transaction() as tx:
        now = tx.state.jobs.get(job_id) or {}
        if now.get("status") != "running" or (now.get("agent") or {}).get("session") \
                != a["session"]:
            raise OjError(f"job {job_id} changed meanwhile; look again: oj job show {job_id}")
        tx.append(agent_suspended(id=job_id, transcript=path, by=by))
    session.kill(a["socket"], a["session"])
    return path


def answer(store: Store, job_id: str, message: str) -> None:
    """``oj job resume ID -m MESSAGE`` on a waiting job: record the answer; the job's runner
    types it into the agent and watches on."""
    with store.transaction() as tx:
        j = tx.state.jobs.get(job_id)
        if j is None or j["status"] != "waiting":
            status = j["status"] if j else "gone"
            raise OjError(f"job {job_id} is {status}, not waiting for an answer")
        d = tx.state.decisions.get(j.get("decision") or "")
        if d is not None and d["status"] == "open":  # the answer resolves its decision
            choose(d, None, message)  # one an answer can resolve (not an approval step's)
            tx.append(decision_resolved(id=d["id"], option=None, message=message,
                                        by=user_name(), host=host_name()))
        else:
            tx.append(job_answered(id=job_id, message=message))


def follow(store: Store, job_id: str, write: Callable[[bytes], None],
           interval: float = 0.01) -> str:
    """Copy the job's log to ``write`` as it grows, until the job ends; its outcome, or
    "lost" when its process ended without ending it."""
    path = paths.job_log(store.root, job_id)
    offset = 0
    quiet_polls = 0
    while True:
        job = store.refresh().jobs.get(job_id) or {}
        before, offset = offset, _copy_from(path, offset, write)
        if offset != before:
            interval = 0.01
        status = job.get("status")
        if status not in LIVE_JOB_STATES:
            return status or "lost"
        if job.get("process") and not alive(job["process"]) and not elsewhere(
                job["process"]):
            quiet_polls += 1
            if quiet_polls > 3:  # the process is gone and its last word is in
                return "lost"
        else:
            quiet_polls = 0
        time.sleep(interval)
        interval = min(interval * 1.2, 0.2)  # quick for a short job, light for a long one


def _copy_from(path: str, offset: int, write: Callable[[bytes], None]) -> int:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:  # its middle was cut (job_log_limit): on from its end
                offset = size
                write(b"==> oj: the log was cut here (job_log_limit); following on\n")
            f.seek(offset)
            while chunk := f.read(65536):
                write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    return offset
