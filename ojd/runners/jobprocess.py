"""A job's own process: forked by whoever starts the job (a worker, ``oj run``, ``oj job
resume``) and moved into a transient scope ``oj-job-ID.scope`` of the same systemd
manager, or into a session of its own where no manager is reachable.

A worker restart, an upgrade or a closed terminal therefore never touches running work:
the job process runs the job to its end and settles its queue item itself. Forking (not
exec'ing ``ojd``) keeps a job's start cheap (no interpreter start, no imports) and keeps
everything the worker unit set up for its processes: user, namespaces, no_new_privs,
capabilities and the system-call filter are inherited, not copied.

The start is a handshake: the child waits on a pipe until its parent has moved it into
its scope (``ready JOB UNIT``) and recorded it in the WAL (``job:process``, then ``go``).
A parent that dies first leaves a child that reads end-of-file and exits without running
anything, so a job never runs unrecorded, and a successor that finds the recorded process
alive waits for it instead of starting a second one.

A worker's job process, once it has recorded its job's end, says ``free`` and can be made
ready for another job (``again``): a backlog costs a fork per slot, not one per job. It
first sets back what a step may have changed in it (``prlimit --pid $PPID``, ``renice``):
each job starts as in a fresh fork, and a process that cannot be set back is not reused.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ojd.errors import OjError
from ojd.events import job_process, job_resumed
from ojd.identity import boot_id, host_name, proc_start_time
from ojd.runbook.model import Runbook
from ojd.runners.jobchild import run_child
from ojd.runners.jobscope import NoScope as NoScope
from ojd.runners.jobscope import into_scope
from ojd.runners.jobscope import manager_for_cli as manager_for_cli
from ojd.runners.jobscope import own_manager as own_manager
from ojd.runners.jobscope import wait_in_scope as wait_in_scope
from ojd.runners.liveness import alive as alive
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store

# the names imported "as" themselves are callers' to have from here (a job's scope, its
# process's liveness): ojd.runners.jobscope and ojd.runners.liveness hold them

# a job whose process keeps dying without ending it is failed after this many resumes
MAX_RESUMES = 3


@dataclass
class JobProcess:
    job_id: str
    pid: int
    start: str | None
    unit: str | None
    child: bool  # forked by this process: reap it
    w: int | None = None  # a reusable runner's pipes: the next "go", and its "free" line
    free: int | None = None
    runbook: Runbook | None = None  # the runbook a reusable runner holds (of its fork)


class NothingToRun(Exception):
    """The decision made with the job process ready found no work (another took it)."""


class TakenOver(OjError):
    """A job to resume has another process recorded since it was found without one."""


@dataclass
class Ready:
    """A job process forked (and put in its unit) ahead of its job, waiting to be given it:
    a worker keeps one while it has a free slot, so a push's job starts without a fork, a
    D-Bus call or a cgroup move on its path."""

    job_id: str
    pid: int
    start: str | None
    unit: str | None
    w: int  # the handshake pipe's end: "go" or end-of-file
    free: int | None = None  # a reusable runner says "free" here when its job has ended
    runbook: Runbook | None = None  # the one it runs: of its fork


def spawn(store: Store, runbook: Runbook, job_id: str, *, owner: str, manager=None,
          quiet: bool = False, warn: Callable[[str], None] | None = None,
          decide: Callable[..., list[dict]] | None = None, name: str | None = None,
          replaces: dict | None = None, scope_required: bool = False) -> JobProcess:
    """Start the job's process. ``manager``: the ``ojd.systemd.Systemd`` to make its scope
    in (None: its own session only). ``quiet``: its output goes nowhere but the job log
    (``oj run`` follows the log; a terminal must not hold the job). ``decide(tx)``: the
    events that create the job (a take, ``job:created``), decided in the transaction that
    records its process, so a new job costs one append; raising NothingToRun there leaves
    nothing behind. An existing job is resumed only if its recorded process is still
    ``replaces`` (the dead one its caller saw): two resumes at once start one process.
    ``scope_required``: under a manager, a job it makes no scope for is not started
    (NoScope, nothing recorded) rather than left in its starter's unit."""
    if decide is None:
        decide = _takeover(job_id, replaces, owner)
    ready = prepare(store, runbook, job_id, manager=manager, quiet=quiet,
                    warn=warn, name=name, scope_required=scope_required)
    try:
        return give(store, ready, owner=owner, decide=decide)
    except NothingToRun:
        discard(ready)
        raise


def _takeover(job_id: str, replaces: dict | None, owner: str) -> Callable[..., list[dict]]:
    """The resume of an existing job: refused unless its recorded process is still the dead
    one its caller saw; ``job:resumed`` goes in the append that records the new process."""
    def check(tx) -> list[dict]:
        job = tx.state.jobs.get(job_id)
        if job is None:
            raise OjError(f"no job with id {job_id}")
        if job["status"] not in LIVE_JOB_STATES:
            raise TakenOver(f"job {job_id} is {job['status']} now")
        if job.get("process") != replaces:
            raise TakenOver(f"job {job_id} was resumed meanwhile (process "
                            f"{(job.get('process') or {}).get('pid')})")
        return [job_resumed(id=job_id, by=owner)]
    return check


def prepare(store: Store, runbook: Runbook, job_id: str, *, manager=None, quiet: bool = False,
            warn: Callable[[str], None] | None = None, name: str | None = None,
            reusable: bool = False, scope_required: bool = False) -> Ready:
    """Fork the process that will run job ``job_id`` and ask for its scope; it waits for
    ``give`` (and runs the runbook and sees the state as they were at this fork).
    ``reusable``: when its job has ended it says "free" and waits for another (``again``)
    instead of exiting, so a worker with a backlog forks once per slot, not once per job."""
    name = name or (store.state.jobs.get(job_id) or {}).get("name") or job_id
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    free_r, free_w = os.pipe() if reusable else (None, None)
    # the child's garbage collector must not visit (and so copy) every page it shares with
    # its starter: what exists now is frozen out of collection, in the child for good
    gc.freeze()
    pid = os.fork()
    if pid != 0:
        gc.unfreeze()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 70
        try:
            os.close(w)
            if free_r is not None:
                os.close(free_r)
            code = run_child(r, free_w, store, runbook, journal=manager is not None,
                          quiet=quiet)
        finally:
            os._exit(code)
    os.close(r)
    if free_w is not None:
        os.close(free_w)
    ready = Ready(job_id, pid, None, None, w, free_r, runbook)
    try:
        if manager is not None:
            ready.unit = into_scope(manager, pid, job_id, name, warn, scope_required)
        ready.start = proc_start_time(pid)
        _announce(ready)
    except BaseException:
        discard(ready)
        raise
    return ready


def again(proc: JobProcess, job_id: str, *, manager=None,
          warn: Callable[[str], None] | None = None, name: str | None = None) -> Ready:
    """A reusable runner whose job has ended, made ready for job ``job_id``: moved into
    that job's scope (its previous one, empty now, is collected)."""
    assert proc.w is not None
    ready = Ready(job_id, proc.pid, proc.start, None, proc.w, proc.free, proc.runbook)
    try:
        if manager is not None:
            # no scope, no reuse: it would run the job in its previous job's scope
            ready.unit = into_scope(manager, proc.pid, job_id, name or job_id, warn,
                                     required=True)
        _announce(ready)
    except BaseException:
        discard(ready)
        raise
    return ready


def give(store: Store, ready: Ready, *, owner: str,
         decide: Callable[..., list[dict]] | None = None, sync: bool = True) -> JobProcess:
    """Record the ready process as its job's (with the events that create the job) and let
    it run. NothingToRun from ``decide`` leaves it ready; any other failure ends it.
    ``sync=False``: the record is durable with the job's first synced append (a worker's
    take: a power cut that loses it also ends the job, and the item is taken again)."""
    try:
        with store.transaction() as tx:
            events = decide(tx) if decide is not None else []
            tx.append(*events, job_process(id=ready.job_id, pid=ready.pid, start=ready.start,
                                           boot=boot_id(), unit=ready.unit, host=host_name(),
                                           by=owner), sync=sync)
        os.write(ready.w, b"go\n")
    except NothingToRun:
        raise
    except BaseException:
        discard(ready)
        raise
    if ready.free is None:
        os.close(ready.w)
        return JobProcess(ready.job_id, ready.pid, ready.start, ready.unit, True)
    return JobProcess(ready.job_id, ready.pid, ready.start, ready.unit, True, ready.w,
                      ready.free, ready.runbook)


def _announce(ready: Ready) -> None:
    os.write(ready.w, f"ready {ready.job_id} {ready.unit or '-'}\n".encode())


def discard(ready: Ready | JobProcess) -> None:
    """End a ready process (or a free runner) unused: it reads end-of-file and exits
    without running anything (its scope goes with it)."""
    for fd in (ready.w, ready.free):
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    # it exits at once; one that does not (stuck before its first read) was never recorded
    # and has nothing to lose: the stop of a worker must not wait on it
    try:
        fd = os.pidfd_open(ready.pid)
    except ProcessLookupError:
        fd = None
    try:
        if fd is not None and not select.select([fd], [], [], 1.0)[0]:
            os.kill(ready.pid, signal.SIGKILL)
        os.waitpid(ready.pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
    finally:
        if fd is not None:
            os.close(fd)
