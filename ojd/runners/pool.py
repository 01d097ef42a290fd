"""A worker's job processes: those it watches (a pidfd each, readable when the job's
process ends), the runners that ended their job and wait for another ("free"), the one
kept ready for the next item, and the jobs a previous incarnation left (adopted while
their process runs, resumed where they stand when it is gone)."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable

from ojd import queues
from ojd.errors import describe
from ojd.identity import elsewhere, proc_start_time
from ojd.notify import Log
from ojd.runners import jobprocess
from ojd.runners.assignment import Assignment
from ojd.runners.jobprocess import MAX_RESUMES, JobProcess
from ojd.runners.jobrecords import fail_job
from ojd.runners.liveness import alive
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store


class ProcessPool:
    def __init__(self, store: Store, work: Assignment, log: Log, *, manager=None,
                 refresh: Callable[[], bool]) -> None:
        self.store = store
        self.work = work
        self.log = log
        self.manager = manager  # the systemd manager job scopes go to (None: sessions)
        self._refresh = refresh  # reads the state; False (said) when out of reach
        self.procs: dict[str, JobProcess] = {}  # job id -> its process, running
        self._ready: jobprocess.Ready | None = None  # a job process waiting for an item
        self._pidfds: dict[int, str] = {}  # pidfd -> job id: readable when the job ends
        # a runner's "free" pipe -> job id: readable when the runner has ended the job and
        # waits for another; freed runners are given the next items of the same poll
        self._frees: dict[int, str] = {}
        self._free: list[JobProcess] = []
        # job id -> how often its process ended with the job still live (a crash loop)
        self._deaths: dict[str, int] = {}

    def fds(self) -> list[int]:
        """What the loop waits on for the pool: a job's end, a runner's "free"."""
        return [*self._pidfds, *self._frees]

    # -- adoption -----------------------------------------------------------------------

    def adopt(self, concurrency: int, stopping: bool, lease_lost: Callable[[dict], bool]
              ) -> None:
        """Take over the jobs of this worker that no process here watches (in the state as
        last read): watch those whose process still runs, resume the others where they
        stand, into free slots only (the rest at a later poll)."""
        work = self.work
        with self.store.lock:
            mine = [j for j in self.store.state.jobs.values()
                    if j["status"] in LIVE_JOB_STATES and j["worker"] == work.worker.name
                    and j["project"] == work.project and j["id"] not in self.procs]
        orphans = []
        for job in mine:
            proc = job.get("process")
            if elsewhere(proc):
                continue  # another host's: its lease, not this host, says when it is lost
            if proc is None and work.lease and lease_lost(job):
                continue  # its item is pending again: the take resumes it
            if alive(proc):  # running anyway: it takes its slot
                self.log.info(f"job {job['id']} runs in process {proc['pid']}"
                              + (f" ({proc['unit']})" if proc.get("unit") else "")
                              + ": watching it")
                self.watch(JobProcess(job["id"], proc["pid"], proc["start"],
                                      proc.get("unit"), child=False))
            else:
                orphans.append(job)
        for job in orphans:  # resumed into free slots only; the rest at a later poll
            if stopping or len(self.procs) >= concurrency:
                break
            if self._deaths.get(job["id"], 0) > MAX_RESUMES:
                self.fail_job(job["id"], f"its process ended {MAX_RESUMES + 1} times "
                              "without finishing it")
                continue
            self.log.info(f"resuming job {job['id']} (item {job['item']}) at step "
                          f"'{job.get('next') or job['step'] or 'first'}'")
            self._start(job["id"], job.get("process"))

    def _start(self, job_id: str, replaces: dict | None) -> None:
        try:
            proc = jobprocess.spawn(self.store, self.work.runbook, job_id,
                                    owner=self.work.owner, manager=self.manager,
                                    warn=self.log.warning, replaces=replaces)
        except jobprocess.TakenOver as e:  # someone else resumed it: watched at next poll
            self.log.info(str(e))
            return
        except Exception as e:
            self.log.error(f"job {job_id} could not start: {describe(e)}")
            self.fail_job(job_id, f"oj could not start it: {describe(e)}")
            return
        self.watch(proc)

    def fail_job(self, job_id: str, error: str) -> None:
        try:
            fail_job(self.store, self.work.runbook, job_id, error)
        except Exception as e:
            self.log.error(f"job {job_id}: its failure could not be recorded ({describe(e)})")

    # -- watching -----------------------------------------------------------------------

    def watch(self, proc: JobProcess) -> None:
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            fd = None
        if fd is not None and proc.start and \
                proc_start_time(proc.pid) != proc.start and not proc.child:
            os.close(fd)  # the pid is another process's now
            fd = None
        self.procs[proc.job_id] = proc
        if fd is None:
            self._ended(proc.job_id)
            return
        self._pidfds[fd] = proc.job_id
        if proc.free is not None:
            self._frees[proc.free] = proc.job_id

    def reap(self) -> bool:
        """Free the slots of jobs that ended: their runner said "free", or their process
        is gone (its pidfd is readable). Whether any did."""
        if not self._pidfds:
            return False
        ready = select.select([*self._frees, *self._pidfds], [], [], 0)[0]
        for fd in ready:
            if fd in self._frees:
                self._freed(fd)
        for fd in ready:
            if fd in self._pidfds:
                job_id = self._pidfds.pop(fd)
                os.close(fd)
                self._ended(job_id)
        return bool(ready)

    def _freed(self, fd: int) -> None:
        job_id = self._frees.pop(fd)
        proc = self.procs.get(job_id)
        try:
            said = os.read(fd, 64)
        except OSError:
            said = b""
        if proc is None or said != b"free\n":
            return  # it died: its pidfd says so
        for pidfd, of in list(self._pidfds.items()):
            if of == job_id:
                del self._pidfds[pidfd]
                os.close(pidfd)
        self._ended(job_id, exited=False)
        self._free.append(proc)

    def _ended(self, job_id: str, exited: bool = True) -> None:
        proc = self.procs.pop(job_id, None)
        code = None
        if proc is not None and exited:
            for fd in (proc.w, proc.free):  # a runner's pipes
                if fd is not None:
                    self._frees.pop(fd, None)
                    os.close(fd)
        if proc is not None and proc.child and exited:
            try:
                code = os.waitstatus_to_exitcode(os.waitpid(proc.pid, 0)[1])
            except ChildProcessError:
                pass
        # a state out of reach: the job's end is seen by a later poll, no death counted
        seen = self._refresh()
        job = self.store.state.jobs.get(job_id) or {}
        status = job.get("status", "gone")
        if not seen:
            pass
        elif status in LIVE_JOB_STATES:
            self._deaths[job_id] = self._deaths.get(job_id, 0) + 1
        else:
            self._deaths.pop(job_id, None)
        item = job.get("item")
        how = f" (process exit {code})" if code not in (None, 0) else ""
        # a failure, or a process that died without ending its job, is a warning
        say = self.log.info if status in ("done", "cancelled") and not how else \
            self.log.warning
        say(f"job {job_id} {status}" + (f" (item {item})" if item else "") + how)
        # a job still live without its process: resumed by the adopt of the next poll

    # -- starting -----------------------------------------------------------------------

    def start_new(self, make: Callable) -> bool:
        """Start a job process (the ready one, else a new one) for a job that
        ``make(tx, job_id)`` creates in the same append as the process's record; False
        when there was nothing to create."""
        ready, self._ready = self._ready, None
        if ready is None:
            ready = self._reuse() or self._prepare()
        try:
            proc = jobprocess.give(self.store, ready, owner=self.work.owner,
                                   decide=lambda tx: make(tx, ready.job_id), sync=False)
        except jobprocess.NothingToRun:
            self._ready = ready  # for the next item
            return False
        self.watch(proc)
        return True

    def _prepare(self) -> jobprocess.Ready:
        with self.store.lock:
            job_id = queues.new_id(self.store.state.jobs)
        return jobprocess.prepare(self.store, self.work.runbook, job_id, manager=self.manager,
                                  warn=self.log.warning, name=self.work.worker.pipeline,
                                  reusable=True)

    def _reuse(self) -> jobprocess.Ready | None:
        """A runner that ended its job, made ready for a new one (no fork, no imports, its
        pages its own already); None when there is none."""
        while self._free:
            proc = self._free.pop()
            if proc.runbook is not self.work.runbook \
                    or not alive({"pid": proc.pid, "start": proc.start}):
                jobprocess.discard(proc)
                continue
            with self.store.lock:
                job_id = queues.new_id(self.store.state.jobs)
            try:
                return jobprocess.again(proc, job_id, manager=self.manager,
                                        warn=self.log.warning, name=self.work.worker.pipeline)
            except Exception as e:  # it is gone: a fork does instead
                self.log.warning(f"could not reuse job process {proc.pid}: {describe(e)}")
        return None

    def release_free(self) -> None:
        """Free runners that found no item end: a ready process waits in a fresh fork."""
        while self._free:
            jobprocess.discard(self._free.pop())

    def keep_ready(self, concurrency: int) -> None:
        """While a slot is free, one job process waits ready for the next item."""
        if self._ready is not None or len(self.procs) >= concurrency:
            return
        try:
            self._ready = self._reuse() or self._prepare()
        except Exception as e:  # the next item forks its own
            self.log.warning(f"could not prepare a job process: {describe(e)}")

    def drop_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            jobprocess.discard(ready)

    # -- the end ------------------------------------------------------------------------

    def close(self, interrupt: bool) -> None:
        """Let go of every job process: the ready one and free runners end; running jobs
        go on in their own processes, which find no worker to say "free" to when they end,
        and exit. ``interrupt``: they share this worker's unit, and are interrupted."""
        self.drop_ready()
        self.release_free()
        if interrupt:
            self._interrupt()
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        for proc in self.procs.values():
            for fd in (proc.w, proc.free):
                if fd is not None:
                    os.close(fd)
        self._frees.clear()

    def _interrupt(self, grace: float = 10.0) -> None:
        """Jobs that share this worker's unit (no unit of their own: a --run-as worker) would
        get only SIGKILL once the worker is gone (KillMode=mixed): SIGTERM them now, so each
        stops its step and stays resumable at it."""
        self.log.info(f"{len(self.procs)} job(s) run in this unit: interrupting them; they "
                      "resume at their step when the worker starts again")
        for proc in self.procs.values():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while self.procs and time.monotonic() < deadline:
            for job_id, proc in list(self.procs.items()):
                if not alive({"pid": proc.pid, "start": proc.start}):
                    self.procs.pop(job_id)
                    if proc.child:
                        try:
                            os.waitpid(proc.pid, os.WNOHANG)
                        except ChildProcessError:
                            pass
            time.sleep(0.05)
