"""Running a job: one pass of a pipeline, step by step, every transition an event in the WAL.

A job's position lives only in the WAL, so a job interrupted mid-step (crash, kill -9)
resumes from that step when its owner (or a successor) calls ``run`` again.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ojd import bashrun, conf, notifications, paths
from ojd.duration import format_duration
from ojd.errors import LockTimeout, OjError, StoreUnavailable, quoted
from ojd.events import (
    QUEUE_FAILED,
    job_finished,
    job_locals,
    job_step_finished,
    job_step_started,
    queue_lease_renewed,
)
from ojd.identity import boot_id, elsewhere, host_name, proc_start_time
from ojd.notify import one_line
from ojd.routing import TIMEOUT_EXIT, route, visit_limit_error
from ojd.runbook.bashsyntax import needs_shell
from ojd.runbook.model import Pipeline, Runbook, Step
from ojd.runbook.template import LOCAL_PREFIX, TemplateError, render_shell, render_text
from ojd.runners import joblog, sources
from ojd.runners.approval import run_approval_step
from ojd.runners.jobrecords import fail_job as fail_job
from ojd.runners.jobrecords import job_created_event as job_created_event
from ojd.runners.jobrecords import settle_item
from ojd.runners.leftovers import STOP_GRACE
from ojd.runners.liveness import alive
from ojd.runners.notfound import NOT_FOUND_EXIT, missing_command, since
from ojd.runners.stepprocess import (
    Echo,
    StepCommand,
    cap_log,
    read_status,
    terminate_group,
    wait_step,
)
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store

# fail_job and job_created_event are imported "as" themselves: callers have them from here

# Progress callback: (job id, what, detail) e.g. ("3f9c", "step", "check ok in 1.2s");
# "step_failed", "agent_died" and the outcome "failed" are failures (logged as warnings);
# "at" says which step runs now ("merge/check"), for the job process's name
Progress = Callable[[str, str, str], None]


# what a full state disk raises: waited out, by a job's records and a worker's start
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


# seconds a job's end waits for its notifications still on their way
NOTIFY_WAIT_AT_END = 15.0

# seconds between a job process's attempts to renew its lease while its store is away
RENEW_RETRY = 1.0


class Stalled(Exception):
    """A job stopped while it waited to record its progress; it resumes where it stands."""


class Superseded(Exception):
    """The job is no longer this runner's: cancelled, or run by another process now."""


def _check_ours(job: dict | None) -> None:
    if job is None or job["status"] not in LIVE_JOB_STATES:
        raise Superseded("the job " + ("is gone" if job is None else f"is {job['status']}"))
    proc = job.get("process") or {}
    # reopened or its lease expired (none recorded yet), or another's now (on any host)
    host = elsewhere(proc)
    if proc.get("pid") != os.getpid() or host:
        where = f" on {host}" if host else ""
        if not proc:
            raise Superseded("the job has no process of its own now (its lease expired, or "
                             "it was reopened)")
        raise Superseded(f"the job is run by process {proc.get('pid')}{where} now")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def wait_for_exit(pid: int, start: str, stopping: threading.Event,
                  deadline: float | None = None) -> bool:
    """Wait until process ``pid`` (started at ``start``) is gone: it need not be our child.
    False when it still runs at ``deadline`` (epoch seconds)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if proc_start_time(pid) != start:
            return True  # the pid is another process's now
        while not select.select([fd], [], [], 1.0)[0]:
            if stopping.is_set():
                raise Stalled("stopped while waiting for a step")
            if deadline is not None and time.time() >= deadline:
                return False
    finally:
        os.close(fd)
    return True


class JobLog:
    """A job's log file whose writes never fail the job: on a full disk a lost log line is
    better than a job that dies after its step ran. Steps write to ``fileno()`` directly."""

    def __init__(self, raw) -> None:
        self._raw = raw

    def write(self, data: bytes) -> None:
        try:
            self._raw.write(data)
        except OSError:
            pass

    def fileno(self) -> int:
        return self._raw.fileno()


class JobRunner:
    """Runs jobs of one project's runbook. Thread-safe: a worker runs several at once."""

    def __init__(self, store: Store, runbook: Runbook, *, progress: Progress | None = None,
                 tee: bool = False) -> None:
        self.store = store
        self.runbook = runbook
        self.progress = progress or (lambda job, what, detail: None)
        self.tee = tee  # steps' output is echoed to this process's stdout (the journal)
        self.stopping = threading.Event()
        self._step_pids: dict[str, int] = {}  # job -> its running step's process group
        self._leased: set[str] = set()  # jobs whose item is leased: another host may take it
        self._job_deadlines: dict[str, tuple[float, str]] = {}  # job -> (when, its limit)
        self._log_limit = joblog.DEFAULT_LIMIT  # oj.conf's job_log_limit, read per job
        self.dispatch = notifications.Dispatcher()  # notify messages and decisions, sent

    # -- the job loop -------------------------------------------------------------------

    def run(self, job_id: str) -> str:
        """Run (or resume) a job to its end. Returns "done", "failed" or "interrupted".
        A job whose item is leased (a shared store) renews the lease while it runs."""
        state = self.store.refresh()
        job = state.jobs.get(job_id) or {}
        item = state.items.get(job.get("item") or "")
        if item is None or not item.get("lease") or item.get("job") != job_id:
            return self._run(job_id)
        done = threading.Event()
        self._leased.add(job_id)
        renewer = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True,
                                   args=(job_id, item["id"], float(item["lease"]), done))
        renewer.start()
        try:
            return self._run(job_id)
        finally:
            done.set()
            renewer.join(timeout=10)
            self._leased.discard(job_id)

    def _renew(self, job_id: str, item_id: str, lease: float, done: threading.Event) -> None:
        """Renew the item's lease every third of it while the job runs here, and every
        RENEW_RETRY while the store does not answer, so that the renewal after an outage
        comes before other hosts' workers expire the lease (they wait for it). A lease that
        moved (this process was stopped or cut off past it, and another host took the item)
        is lost for good: the step is stopped, and the runner's next append is refused."""
        wait = lease / 3
        while not done.wait(wait):
            wait = RENEW_RETRY
            try:
                with self.store.transaction() as tx:
                    _check_ours(tx.state.jobs.get(job_id))
                    item = tx.state.items.get(item_id)
                    if item is None or item["status"] != "active" or item.get("job") != job_id:
                        return  # settled
                    tx.append(queue_lease_renewed(id=item_id, job=job_id))
                wait = lease / 3
            except Superseded as e:
                self.progress(job_id, "stalled", f"lease of item {item_id} lost: {e}")
                pid = self._step_pids.get(job_id)
                if pid is not None:
                    terminate_group(pid)
                return
            except Exception as e:  # the database away: try again; the lease may run out
                self.progress(job_id, "stalled", f"could not renew the lease: {e}")

    def _run(self, job_id: str) -> str:
        job = self.store.state.jobs[job_id]  # refreshed by run()
        if job["status"] not in LIVE_JOB_STATES:
            return job["status"]
        pipeline = self.runbook.pipeline(job["pipeline"])
        if pipeline is None:
            return self._finish(job, "failed", f"pipeline '{job['pipeline']}' is no longer "
                                "defined in the runbook")
        try:
            limit = pipeline.timeout or conf.duration(self.store.root, "job_timeout")
            self._log_limit = joblog.limit_for(self.store.root)
        except OjError as e:
            return self._finish(job, "failed", str(e))
        if limit:  # counted from the job's creation: resumes do not start it again
            self._job_deadlines[job_id] = (job["created_at"] + limit,
                                           f"the job's timeout ({format_duration(limit)})")
        try:
            return self._run_job(job, pipeline)
        finally:
            self._job_deadlines.pop(job_id, None)

    def _run_job(self, job: dict, pipeline: Pipeline) -> str:
        job_id = job["id"]
        if pipeline.git_branch is not None:  # source = { git = true }: a worktree
            try:
                sources.make_worktree(job, pipeline, self._env(job))
            except OjError as e:
                return self._finish(job, "failed", str(e))
        os.makedirs(job["cwd"], exist_ok=True)
        log_path = self.log_path(job_id)
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
        with open(log_path, "ab", buffering=0) as raw:
            log = JobLog(raw)
            if job["step"] is None and not job.get("locals_done"):
                self._notify(job, pipeline, "on_start", log)
            try:
                ctx = self._context(job, pipeline, log)
            except OjError as e:
                return self._finish(job, "failed", str(e), pipeline, log)
            step = self._resume_point(job, pipeline)
            if job["step"] is not None and step is not None:  # it ran before: a resume
                log.write(f"==> resumed at step {step} "
                          f"({time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
            if step is not None and job["step"] == step and job["step_status"] == "running" \
                    and pipeline.steps.get(step) is not None \
                    and pipeline.steps[step].run is not None:
                # the step outlived the runner that started it: wait for it, never rerun it
                # beside itself; one that ended is recorded with its exit status
                code, why = self._outlived_step(job, pipeline.steps[step], log)
                if code is not None:
                    step, outcome = self._record_step_end(job, pipeline, step, code, why, log,
                                                          self._past_job_deadline(job_id))
                    if outcome is not None:
                        return outcome
            while step is not None:
                job = self.store.state.jobs[job_id]
                error = visit_limit_error(pipeline, step, job["visits"].get(step, 0))
                if error:
                    return self._finish(job, "failed", error, pipeline, log)
                if self.stopping.is_set():  # no new step once a stop was asked for
                    return "interrupted"
                past = self._past_job_deadline(job_id)
                if past:
                    return self._finish(job, "failed", f"timeout: {past}", pipeline, log)
                exit_code, why = self._run_step(job, pipeline, step, ctx, log)
                if exit_code is None:  # stopped from outside: leave the job resumable
                    return "interrupted"
                step, outcome = self._record_step_end(self.store.state.jobs[job_id], pipeline,
                                                      step, exit_code, why, log,
                                                      self._past_job_deadline(job_id))
                if outcome is not None:
                    return outcome
        return job["status"]

    def _record_step_end(self, job: dict, pipeline: Pipeline, step: str, exit_code: int,
                         why: str | None, log, past: str | None = None
                         ) -> tuple[str | None, str | None]:
        """Record a step's end: (the next step, None), or (None, the job's outcome).
        ``past``: the job ran past its time limit, which ends it whatever the route."""
        failures = 1 + sum(1 for h in job["history"][:-1]  # this run's is not recorded yet
                           if h["step"] == step and h["exit"] not in (0, None))
        r = route(pipeline, step, exit_code, failures)
        if past is not None:
            r = r._replace(next=None, failing=True)
        finished = job_step_finished(id=job["id"], step=step, exit=exit_code, next=r.next,
                                     failing=r.failing)
        started = job["history"][-1]["started_at"] if job["history"] else time.time()
        verdict = "ok" if exit_code == 0 else f"failed (exit {exit_code})"
        line = f"{step} {verdict} in {time.time() - started:.1f}s"
        log.write(f"==> step {line}\n".encode())
        self.progress(job["id"], "step" if exit_code == 0 else "step_failed", line)
        # the status file its wrapper wrote goes only once its end is durable: a runner
        # killed in between must find it, or the finished step would run again
        status = self.status_path(job["id"], len(job["history"]))
        if r.next is None:
            # the last step's end, the job's end and its item's settlement: one append
            if past is not None:
                outcome = self._finish(job, "failed", f"timeout: {past}", pipeline, log,
                                       [finished])
            elif exit_code == 0 and not job.get("failing"):
                outcome = self._finish(job, "done", None, pipeline, log, [finished])
            else:
                error = _failure(job, step, exit_code) + (f": {why}" if why else "")
                outcome = self._finish(job, "failed", error, pipeline, log, [finished])
            _remove(status)
            return None, outcome
        self._durably(job["id"], self._record, job["id"], finished)
        _remove(status)
        return r.next, None

    def _record(self, job_id: str, *events: dict, sync: bool = True) -> None:
        """Append a job's events while it is still this runner's: a job cancelled (or taken
        over by another runner) meanwhile is left alone (Superseded)."""
        with self.store.transaction() as tx:
            _check_ours(tx.state.jobs.get(job_id))
            tx.append(*events, sync=sync)

    def _record_when(self, job_id: str, events_for: Callable[[Any], list[dict]],
                     taken: list[bool]) -> None:
        """Append the events ``events_for`` makes of the state, in the same transaction (so
        what they depend on cannot change meanwhile, on any host); ``taken`` gets whether
        there were any."""
        with self.store.transaction() as tx:
            _check_ours(tx.state.jobs.get(job_id))
            events = events_for(tx.state)
            if events:
                tx.append(*events)
            taken.append(bool(events))

    def _durably(self, job_id: str, write: Callable[..., object], *args: object) -> None:
        """Record what a job did, waiting out a full state disk, a state lock held too long
        (a stopped process) or a state database out of reach: the job stalls (said once)
        and goes on when it can write again, instead of dying with its item left active
        (a shared store's lease bounds the wait). A stop while waiting gives up (Stalled):
        the job is resumed where it stands at the worker's next start."""
        delay, told = 0.5, False
        while True:
            try:
                write(*args)
            except (OSError, LockTimeout, StoreUnavailable) as e:
                if isinstance(e, OSError) and e.errno not in DISK_FULL:
                    raise
                why = e.strerror if isinstance(e, OSError) else str(e)
                if self.stopping.is_set():
                    raise Stalled(why) from None
                if not told:
                    told = True
                    self.progress(job_id, "stalled", f"cannot write the state: {why}; the job "
                                  "waits and goes on when it can")
                if self.stopping.wait(delay):
                    raise Stalled(why) from None
                delay = min(delay * 2, 5.0)
                continue
            if told:
                self.progress(job_id, "unstalled", "the state is writable again; going on")
            return

    def _past_job_deadline(self, job_id: str) -> str | None:
        """The job's time limit when it has run past it."""
        deadline = self._job_deadlines.get(job_id)
        if deadline is not None and time.time() >= deadline[0]:
            return f"it ran past {deadline[1]}"
        return None

    def step_deadline(self, job_id: str, step: Step) -> tuple[float | None, str]:
        """When a step starting now must be over (epoch seconds, None: never) and the limit
        that says so: its own ``timeout`` or the job's, whichever comes first."""
        when, what = self._job_deadlines.get(job_id, (None, ""))
        if step.timeout and (when is None or time.time() + step.timeout < when):
            when = time.time() + step.timeout
            what = f"its timeout ({format_duration(step.timeout)})"
        return when, what

    def _resume_point(self, job: dict, pipeline: Pipeline) -> str | None:
        if job["step"] is None:
            return pipeline.first_step
        if job["step_status"] == "running":
            return job["step"]  # interrupted mid-step: run that step again
        return job.get("next")

    def _context(self, job: dict, pipeline: Pipeline, log) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "var": job["vars"],
            "args": job["vars"],
            "invoke": {"dir": job.get("invoke") or job["cwd"]},
            "workspace": {"root": job["cwd"], "nonce": job["id"]},
            "source": sources.context(job, pipeline),
            "local": {},
        }
        if job.get("locals_done"):
            ctx["local"] = job["locals"]
            return ctx
        for name, template in pipeline.locals:
            ctx["local"][name] = self._eval_local(job, name, template, ctx)
        if pipeline.locals:  # nothing to keep for a resume otherwise: spare the fsync
            self._durably(job["id"], self._record, job["id"],
                          job_locals(id=job["id"], locals=ctx["local"]))
        return ctx

    def _eval_local(self, job: dict, name: str, template: str, ctx: dict[str, Any]) -> str:
        env = self._env(job)
        try:
            if not needs_shell(template):
                return render_text(template, ctx, env=env)
            # an assignment's status is its last command substitution's: with -e a failing
            # $(...) fails the local instead of quietly giving ""
            script = render_shell(LOCAL_PREFIX + template + '"\nprintf "%s" "$__oj_local"', ctx)
        except TemplateError as e:
            raise OjError(f"local '{name}': {e}") from None
        proc = bashrun.run(script, "-e", "-o", "pipefail", cwd=job["cwd"], env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise OjError(f"local '{name}' failed: {detail[0]}")
        return proc.stdout

    def _run_step(self, job: dict, pipeline: Pipeline, step: str, ctx: dict[str, Any],
                  log) -> tuple[int | None, str | None]:
        """The step's exit status (None when stopped from outside), and why it did not run."""
        s = pipeline.steps[step]
        self.progress(job["id"], "at", f"{pipeline.name}/{step}")
        log.write(f"==> step {step} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        if s.approve is not None:
            return run_approval_step(self, job, pipeline, step, ctx, log)
        if s.run is None:
            # lazy: tmux and trust checks, for agent steps only, not every job process
            from ojd.agents.step import run_agent_step

            self._started(job["id"], step)
            return run_agent_step(self, self.store.state.jobs[job["id"]], pipeline, step,
                                  ctx, log)
        try:
            script = render_shell(s.run, ctx)
        except TemplateError as e:  # a value that cannot go where the script puts it
            self._started(job["id"], step)
            why = one_line(str(e))
            log.write(f"{why}\n".encode())
            self.progress(job["id"], "step_failed", f"{step}: {why}")
            return 2, why
        if self.stopping.is_set():
            return None, None
        job_id = job["id"]
        n = len(job["history"]) + 1  # this run's place in the job's history
        status = self.status_path(job_id, n)
        os.makedirs(os.path.dirname(status), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(status)  # a run of this place that never started its script
        sync_r, sync_w = os.pipe()
        log_start = os.fstat(log.fileno()).st_size  # its output from here on
        echo = Echo(self.log_path(job_id)) if self.tee else None
        try:
            # a leased job's step must not outlive this process: the host that takes the
            # job over once the lease runs out cannot see it, and would run it beside
            # itself; on this host a successor sees it alive and waits for it
            fence = "1" if job_id in self._leased else "0"
            with StepCommand(job_id, step, sync_r, status, fence, script) as command:
                # its own session: a stop signals the step's whole process group
                proc = subprocess.Popen(command.argv, pass_fds=command.fds, cwd=job["cwd"],
                                        env=self._env(job), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        except BaseException:
            if echo is not None:
                echo.close()
            raise
        finally:
            os.close(sync_r)
        try:
            # recorded before it runs: a runner that dies now leaves nothing running (the
            # wrapper reads end-of-file and exits unrun)
            self._started(job_id, step, proc.pid, say=False)
            os.write(sync_w, b"go\n")
        except BaseException:
            os.close(sync_w)
            raise
        self._step_pids[job_id] = proc.pid  # for the lease's renewer, should it be lost
        deadline, limit = self.step_deadline(job_id, s)
        # the step writes the log itself: it is cut from here while it grows past its cap
        log_path, log_limit = self.log_path(job_id), self._log_limit
        cap = (lambda: cap_log(log_path, log_limit)) if log_limit else None
        try:
            self.progress(job_id, "step", f"{step} started")  # said once it runs
            code = wait_step(proc, echo, deadline, cap)
            if code is None:  # past its time: stopped, and failed as timed out
                terminate_group(proc.pid, proc, grace=STOP_GRACE)
                why = f"timeout: stopped after {limit}"
                log.write(f"==> step {step}: {why}\n".encode())
                self.progress(job_id, "step_failed", f"{step}: {why}")
                return TIMEOUT_EXIT, why
        except BaseException:
            # this runner was told to stop (a cancel, a shutdown): the step goes with it
            terminate_group(proc.pid, proc)
            raise
        finally:
            if cap is not None:
                cap()
            self._step_pids.pop(job_id, None)
            with contextlib.suppress(OSError):  # the fence's reader ends without a kill
                os.write(sync_w, b"done\n")
            os.close(sync_w)
            if echo is not None:
                echo.close()
        if code == NOT_FOUND_EXIT:  # say which program, not only the status
            name = missing_command(since(self.log_path(job_id), log_start))
            if name is not None:
                return code, f"command {quoted(name)} not found"
        return code, None  # its status file goes once its end is recorded

    def _started(self, job_id: str, step: str, pid: int | None = None, say: bool = True
                 ) -> None:
        if pid is None:
            event = job_step_started(id=job_id, step=step)
        else:  # the step's process group, for a runner that takes over
            event = job_step_started(id=job_id, step=step, pid=pid, start=proc_start_time(pid),
                                     boot=boot_id(), host=host_name())
        # not synced: every process sees it at once, which is what keeps a step from ever
        # running twice at once; a power cut that loses it also ended the step, which runs
        # again (its end, when recorded, is synced and takes this record with it)
        self._durably(job_id, partial(self._record, sync=False), job_id, event)
        if say:
            self.progress(job_id, "step", f"{step} started")

    def _outlived_step(self, job: dict, step: Step, log) -> tuple[int | None, str | None]:
        """A step whose runner died: wait while it still runs (within its time limits,
        counted from its start), then its exit status from the file its wrapper wrote. None
        when it left none (killed with its runner, a power cut): the step runs again."""
        proc = job.get("step_proc") or {}
        status = self.status_path(job["id"], len(job["history"]))
        pid = proc.get("pid")
        if alive(proc):
            line = f"{job['step']} still running (process {pid}): waiting for it"
            log.write(f"==> step {line}\n".encode())
            self.progress(job["id"], "step", line)
            deadline, limit = self.step_deadline(job["id"], step)
            if step.timeout and job["history"]:
                # its own limit runs from when it started, not from this wait
                deadline = min(deadline or math.inf,
                               job["history"][-1]["started_at"] + step.timeout)
            try:
                if not wait_for_exit(pid, proc["start"], self.stopping, deadline):
                    terminate_group(pid)
                    why = f"timeout: stopped after {limit}"
                    log.write(f"==> step {job['step']}: {why}\n".encode())
                    return TIMEOUT_EXIT, why
            except BaseException:
                terminate_group(pid)
                raise
        return read_status(status), None  # the file goes once the end is recorded

    def fail(self, job_id: str, error: str) -> str:
        """End a job that cannot go on (a bug in a runner must not leave it running)."""
        return self._finish(self.store.state.jobs[job_id], "failed", error)

    def _finish(self, job: dict, outcome: str, error: str | None,
                pipeline: Pipeline | None = None, log=None, before: list[dict] | None = None
                ) -> str:
        said: list[bool] = []

        def record() -> None:
            with self.store.transaction() as tx:
                _check_ours(tx.state.jobs.get(job["id"]))
                events = [*(before or ()),
                          job_finished(id=job["id"], outcome=outcome, error=error)]
                # the job's queue item is settled in the same append
                settled = settle_item(self.runbook, tx.state, job["id"], outcome, error)
                if log is not None and not said:  # once, however often this is tried
                    said.append(True)
                    for line in item_lines(settled):
                        log.write(line)
                tx.append(*events, *settled)

        # The log's last words go in before the record that ends the job: a follower
        # (oj run, oj job logs -f) stops at the end it reads in the log of events.
        notice = None
        if pipeline is not None and log is not None:
            log.write(f"==> job {outcome}{': ' + one_line(error) if error else ''}\n".encode())
            notice = self._notify(job, pipeline, "on_done" if outcome == "done" else "on_fail",
                                  log, report=False)
        self._durably(job["id"], record)
        self.progress(job["id"], outcome, error or "")
        if notice is not None:
            self.progress(job["id"], "notify", notice)
        # the job's last notifications get a bounded time before its process ends or
        # runs the next job (and stops what the job left running)
        self.dispatch.wait(NOTIFY_WAIT_AT_END)
        if outcome == "done" and job.get("workspace") == "ephemeral":
            if pipeline is not None and pipeline.git_branch is not None:
                try:
                    sources.remove_worktree(job, self._env(job))
                except OjError as e:  # the directory goes below all the same
                    self.progress(job["id"], "notify", str(e))
            shutil.rmtree(job["cwd"], ignore_errors=True)
        return outcome

    def _notify(self, job: dict, pipeline: Pipeline, when: str, log,
                report: bool = True) -> str | None:
        """Write the pipeline's ``when`` message to the job's log (and, with ``report``, to
        the progress callback); the message, or None where the pipeline has none."""
        template = pipeline.notify.get(when)
        if not template:
            return None
        ctx = {"var": job["vars"], "workspace": {"root": job["cwd"], "nonce": job["id"]},
               "source": sources.context(job, pipeline),
               "invoke": {"dir": job.get("invoke") or job["cwd"]},
               "local": job.get("locals") or {}}
        try:
            message = render_text(template, ctx)
        except TemplateError as e:
            message = f"({when} message: {e})"
        message = one_line(message)  # item text must not forge lines of the log
        log.write(f"==> notify: {message}\n".encode())
        self.announce(job, pipeline.notify, "notify", f"oj: {job['name']}: {when}", message,
                      when=when)
        if report:
            self.progress(job["id"], "notify", message)
        return message

    def announce(self, job: dict, where: dict[str, str], kind: str, title: str,
                 message: str, **extra: object) -> None:
        """Send a notification to what ``oj.conf`` and the pipeline's ``notify`` block
        (``where``) configure, in threads: the step goes on at once."""
        try:
            to = notifications.targets(self.store.root, where)
        except OjError as e:
            self.progress(job["id"], "notify_failed", f"notifications: {e}")
            return
        if to:
            self.dispatch.send(notifications.payload(kind, job, title, message, **extra), to)

    def announce_decision(self, job: dict, made: dict) -> None:
        """A new decision (its ``decision:created`` event), to the person who resolves it."""
        pipeline = self.runbook.pipeline(job["pipeline"])
        options = [o["label"] for o in made["options"]]
        message = (f"{made['reason']} (oj decision resolve {made['id']} N: "
                   + ", ".join(f"{n} {label}" for n, label in enumerate(options, 1)) + ")")
        self.announce(job, pipeline.notify if pipeline else {}, "decision",
                      f"oj: {job['name']} needs a decision", message,
                      decision={k: made[k] for k in ("id", "source", "step", "agent",
                                                     "reason", "screen")}
                      | {"options": options})

    # -- processes ------------------------------------------------------------------------

    def _env(self, job: dict) -> dict[str, str]:
        env = dict(os.environ)
        env["OJ_PROJECT"] = job["project"]
        env["OJ_STATE_DIR"] = self.store.root
        env["OJ_JOB"] = job["id"]
        # steps call `oj`: make this installation's scripts findable even under systemd
        bindir = os.path.dirname(os.path.abspath(sys.argv[0]))
        if os.path.exists(os.path.join(bindir, "oj")):
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        return env

    def log_path(self, job_id: str) -> str:
        return paths.job_log(self.store.root, job_id)

    def status_path(self, job_id: str, n: int) -> str:
        return os.path.join(paths.steps_dir(self.store.root), f"{job_id}.{n}")


def item_lines(settled: list[dict]) -> list[bytes]:
    """The job log's lines on what its item's settlement does: a retry after the queue's
    cooldown, or an item dead with its attempts spent."""
    lines = []
    for ev in settled:
        if ev["type"] != QUEUE_FAILED:
            continue
        if ev["dead"]:
            lines.append(f"==> item {ev['id']} is dead (no retries left); oj queue retry "
                         "brings it back\n")
        else:
            wait = format_duration(max(0.0, (ev["retry_at"] or 0.0) - time.time()))
            lines.append(f"==> item {ev['id']} is retried in {wait}, by a new job\n")
    return [line.encode() for line in lines]


def _failure(job: dict, last_step: str, last_exit: int) -> str:
    """The job's error, naming the step that failed (and the handler that ran after it)."""
    if last_exit != 0:
        return f"step '{last_step}' failed (exit {last_exit})"
    failed = [h for h in job["history"] if h["exit"] not in (0, None)]
    if not failed:
        return f"step '{last_step}' failed"
    return (f"step '{failed[-1]['step']}' failed (exit {failed[-1]['exit']}); "
            f"'{last_step}' ran as the failure handler")
