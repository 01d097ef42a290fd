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
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ojd import bashrun, conf, paths
from ojd.duration import format_duration
from ojd.errors import LockTimeout, OjError, StoreUnavailable
from ojd.identity import boot_id, elsewhere, host_name, proc_start_time
from ojd.notify import one_line
from ojd.queues import new_id
from ojd.routing import TIMEOUT_EXIT, route, visit_limit_error
from ojd.runbook.bashsyntax import needs_shell
from ojd.runbook.model import Pipeline, Runbook, Step
from ojd.runbook.template import LOCAL_PREFIX, TemplateError, render_shell, render_text
from ojd.runners import joblog, leftovers
from ojd.runners.jobprocess import alive
from ojd.runners.leftovers import STOP_GRACE
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store, Transaction

# Progress callback: (job id, what, detail) e.g. ("3f9c", "step", "check ok in 1.2s")
Progress = Callable[[str, str, str], None]


def workspace_path(state_root: str, pipeline: Pipeline, job_id: str, project: str) -> str | None:
    if pipeline.workspace == "ephemeral":
        return os.path.join(paths.workspaces_dir(state_root), job_id)
    if pipeline.workspace == "persistent":
        import hashlib

        tag = hashlib.sha256(project.encode()).hexdigest()[:8]
        return os.path.join(paths.workspaces_dir(state_root), f"{pipeline.name}-{tag}")
    return None


def job_created_event(tx: Transaction, state_root: str, runbook: Runbook, project: str,
                      pipeline_name: str, vars_: dict[str, Any], invoke_dir: str, *,
                      item: str | None = None, worker: str | None = None,
                      owner: str | None = None, name: str | None = None,
                      job_id: str | None = None, cron: str | None = None) -> dict:
    """The ``job:created`` event of a new job (appended by the caller, in the same append
    as the take of its item, so a crash cannot leave one without the other)."""
    pipeline = runbook.pipeline(pipeline_name)
    if pipeline is None:
        raise OjError(f"pipeline '{pipeline_name}' is not defined")
    if job_id is None:
        job_id = new_id(tx.state.jobs)
    values = {**pipeline.defaults, **vars_}
    missing = [v for v in pipeline.vars if v not in values]
    if missing:
        raise OjError(f"pipeline '{pipeline_name}' needs var '{missing[0]}'")
    cwd = workspace_path(state_root, pipeline, job_id, project) or invoke_dir
    if pipeline.job_name is not None:
        # a label, not a reason to refuse work: a template that cannot render (a key the
        # item lacks) falls back to the usual name, with a warning
        ctx = {"var": values, "invoke": {"dir": invoke_dir},
               "workspace": {"root": cwd, "nonce": job_id}}
        try:
            name = one_line(render_text(pipeline.job_name, ctx, env={})).strip()[:200] or name
        except TemplateError as e:
            print(f"oj: warning: pipeline '{pipeline_name}' name: {one_line(str(e))}; the "
                  f"job is named '{one_line(name or pipeline_name)}'", file=sys.stderr)
    return {"type": "job:created", "id": job_id, "p": project, "pipeline": pipeline_name,
            "name": name or pipeline_name, "vars": values, "cwd": cwd,
            "ws": pipeline.workspace, "invoke": invoke_dir, "item": item, "worker": worker,
            "by": owner, **({"cron": cron} if cron is not None else {})}


def settle_item(runbook: Runbook, state, job_id: str, outcome: str, error: str | None
                ) -> list[dict]:
    """The end of a job's queue item, appended with the job's: completed, or failed/dead
    as its queue's retry policy says (dead when the runbook no longer has the queue)."""
    from ojd import queues

    job = state.jobs.get(job_id) or {}
    item = state.items.get(job.get("item") or "")
    if item is None or item["status"] != "active" or item.get("job") != job_id:
        return []  # settled already, or taken by another job since
    if outcome == "done":
        return [{"type": "queue:completed", "id": item["id"]}]
    queue = runbook.queues.get(item["queue"])
    if queue is None:
        return [{"type": "queue:failed", "id": item["id"], "error": error or "job failed",
                 "dead": True, "retry_at": None}]
    return [queues.failure_event(queue, item, error or "job failed", time.time())]


def fail_job(store: Store, runbook: Runbook, job_id: str, error: str, *,
             process: dict | None = None) -> bool:
    """Record a live job failed (its item settled with it) by someone other than its
    runner: a worker or a cron tick giving up on a job whose process keeps dying. Only if
    it is still live and, when ``process`` is given, still recorded with that process (not
    resumed meanwhile). True when recorded."""
    with store.transaction() as tx:
        job = tx.state.jobs.get(job_id)
        if job is None or job["status"] not in LIVE_JOB_STATES or \
                (process is not None and job.get("process") != process):
            return False
        tx.append({"type": "job:finished", "id": job_id, "outcome": "failed", "error": error},
                  *settle_item(runbook, tx.state, job_id, "failed", error))
    return True


# what a full state disk raises: waited out, by a job's records and a worker's start
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

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


# A step's wrapper, in the step's own session. It waits until its runner has recorded it
# (a runner that dies first leaves nothing running: end-of-file, exit unrun), runs the
# script, and leaves its exit status where a runner that takes the job over finds it. $0
# names the job and step in ps and systemctl status. Arguments: sync fd, status file, fence
# (1: the step dies with its runner), then ``-c SCRIPT`` or a script file. With the fence, a
# reader in the step's group keeps the sync pipe: its end-of-file without "done" means the
# runner died (kill -9, OOM), and the whole group is killed before another host can take
# the job over. The script runs in a subshell (a fork, no second bash to start) as
# ``bash -e -o pipefail -c`` would run it: $0 "bash", no positional parameters, none of the
# wrapper's variables, and the same line numbers, as the eval is on line 1.
STEP_WRAPPER = (
    'read -r -u "$1" _ || exit 125; __oj_status=$2; '
    'if [ "$3" = 1 ]; then { read -r -u "$1" __oj_w; [ "$__oj_w" = done ] || kill -KILL 0; '
    '} & fi; eval "exec $1<&-"; '
    'if [ "$4" = -c ]; then __oj_script=$5; else __oj_script=$(< "$4"); fi; '
    '(unset __oj_status; BASH_ARGV0=bash; set -e -o pipefail; '
    'eval "set --; unset __oj_script; $__oj_script"); '
    '__oj_rc=$?; printf "%d\\n" "$__oj_rc" >"$__oj_status"; exit "$__oj_rc"\n')

# bash by its path, found once: a PATH search per step costs an execve per miss
BASH = shutil.which("bash") or "/bin/bash"


class Echo:
    """Copies what a step adds to the job log to this process's stdout (the job's journal
    stream), so ``journalctl -u oj-job-ID.scope`` shows it too. The step writes the log
    itself: a job process that dies mid-step loses the journal's copy, never the step."""

    EVERY = 0.25  # seconds between copies while the step runs

    def __init__(self, log_path: str) -> None:
        self._f = open(log_path, "rb")  # noqa: SIM115 - closed by close()
        self._f.seek(0, os.SEEK_END)

    def copy(self) -> None:
        if os.fstat(self._f.fileno()).st_size < self._f.tell():
            self._f.seek(0, os.SEEK_END)  # its middle was cut (joblog): go on from its end
        while data := self._f.read(65536):
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(1, view):]
            except OSError:
                return  # the journal went away: the log has it all

    def close(self) -> None:
        self.copy()
        self._f.close()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_status(path: str) -> int | None:
    """A step's exit status from its status file; None when it wrote none (or half)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


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


def terminate_group(pgid: int, proc: subprocess.Popen | None = None, grace: float = STOP_GRACE
                    ) -> None:
    """SIGTERM a step's process group, SIGKILL it after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap the wrapper: a zombie would keep the group "alive"
            # and the step's processes that came back to this process (its subreaper);
            # the wrapper itself is its Popen's to collect
            leftovers.reap_group(pgid, keep=pgid)
            if not _group_alive(pgid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
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
                    tx.append({"type": "queue:lease_renewed", "id": item_id, "job": job_id})
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
        r = route(pipeline, step, exit_code)
        if past is not None:
            r = r._replace(next=None, failing=True)
        finished = {"type": "job:step_finished", "id": job["id"], "step": step,
                    "exit": exit_code, "next": r.next, "failing": r.failing}
        started = job["history"][-1]["started_at"] if job["history"] else time.time()
        verdict = "ok" if exit_code == 0 else f"failed (exit {exit_code})"
        line = f"{step} {verdict} in {time.time() - started:.1f}s"
        log.write(f"==> step {line}\n".encode())
        self.progress(job["id"], "step", line)
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
            "local": {},
        }
        if job.get("locals_done"):
            ctx["local"] = job["locals"]
            return ctx
        for name, template in pipeline.locals:
            ctx["local"][name] = self._eval_local(job, name, template, ctx)
        if pipeline.locals:  # nothing to keep for a resume otherwise: spare the fsync
            self._durably(job["id"], self._record, job["id"],
                          {"type": "job:locals", "id": job["id"], "locals": ctx["local"]})
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
        log.write(f"==> step {step} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        if s.run is None:
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
            self.progress(job["id"], "step", f"{step}: {why}")
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
        echo = Echo(self.log_path(job_id)) if self.tee else None
        try:
            with bashrun.Script(script) as bash:
                # a leased job's step must not outlive this process: the host that takes
                # the job over once the lease runs out cannot see it, and would run it
                # beside itself; on this host a successor sees it alive and waits for it
                fence = "1" if job_id in self._leased else "0"
                argv = [BASH, "-c", STEP_WRAPPER, f"oj-step:{job_id}:{step}", str(sync_r),
                        status, fence, *bash.argv[1:]]
                # its own session: a stop signals the step's whole process group
                proc = subprocess.Popen(argv, pass_fds=(sync_r, *bash.fds), cwd=job["cwd"],
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
        cap = (lambda: _cap(log_path, log_limit)) if log_limit else None
        try:
            self.progress(job_id, "step", f"{step} started")  # said once it runs
            code = _wait(proc, echo, deadline, cap)
            if code is None:  # past its time: stopped, and failed as timed out
                terminate_group(proc.pid, proc, grace=STOP_GRACE)
                why = f"timeout: stopped after {limit}"
                log.write(f"==> step {step}: {why}\n".encode())
                self.progress(job_id, "step", f"{step}: {why}")
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
        return code, None  # its status file goes once its end is recorded

    def _started(self, job_id: str, step: str, pid: int | None = None, say: bool = True
                 ) -> None:
        event = {"type": "job:step_started", "id": job_id, "step": step}
        if pid is not None:  # the step's process group, for a runner that takes over
            event.update(pid=pid, start=proc_start_time(pid), boot=boot_id(), host=host_name())
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
        def record() -> None:
            with self.store.transaction() as tx:
                _check_ours(tx.state.jobs.get(job["id"]))
                events = [*(before or ()), {"type": "job:finished", "id": job["id"],
                                             "outcome": outcome, "error": error}]
                # the job's queue item is settled in the same append
                events += settle_item(self.runbook, tx.state, job["id"], outcome, error)
                tx.append(*events)

        self._durably(job["id"], record)
        self.progress(job["id"], outcome, error or "")
        if pipeline is not None and log is not None:
            if error:
                log.write(f"==> job {outcome}: {one_line(error)}\n".encode())
            self._notify(job, pipeline, "on_done" if outcome == "done" else "on_fail", log)
        if outcome == "done" and job.get("workspace") == "ephemeral":
            shutil.rmtree(job["cwd"], ignore_errors=True)
        return outcome

    def _notify(self, job: dict, pipeline: Pipeline, when: str, log) -> None:
        template = pipeline.notify.get(when)
        if not template:
            return
        ctx = {"var": job["vars"], "workspace": {"root": job["cwd"], "nonce": job["id"]},
               "invoke": {"dir": job.get("invoke") or job["cwd"]},
               "local": job.get("locals") or {}}
        try:
            message = render_text(template, ctx)
        except TemplateError as e:
            message = f"({when} message: {e})"
        message = one_line(message)  # item text must not forge lines of the log
        log.write(f"==> notify: {message}\n".encode())
        self.progress(job["id"], "notify", message)

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


# seconds between looks at the size of a running step's log (``job_log_limit``)
CAP_EVERY = 0.5


def _cap(path: str, limit: int) -> None:
    try:
        joblog.cap(path, limit)
    except OSError:
        pass  # a cut that fails (a full disk) is tried again at the next look


def _wait(proc: subprocess.Popen, echo: Echo | None, deadline: float | None = None,
          cap: Callable[[], None] | None = None) -> int | None:
    """The step's exit status, its new output echoed and its log capped (``cap``)
    meanwhile; None when it still runs at ``deadline`` (epoch seconds). In this thread:
    a thread per step for the cap cost a PID (and CPU) per job."""
    if echo is None and deadline is None and cap is None:
        return proc.wait()
    fd = os.pidfd_open(proc.pid)
    next_cap = time.monotonic() + CAP_EVERY
    try:
        while True:
            wait = Echo.EVERY if echo is not None else CAP_EVERY if cap else 3600.0
            if deadline is not None:
                left = deadline - time.time()
                if left <= 0:
                    return None
                wait = min(wait, left)
            if select.select([fd], [], [], wait)[0]:
                break
            if cap is not None and time.monotonic() >= next_cap:
                cap()
                next_cap = time.monotonic() + CAP_EVERY
            if echo is not None:
                echo.copy()
    finally:
        os.close(fd)
    return proc.wait()


def _failure(job: dict, last_step: str, last_exit: int) -> str:
    """The job's error, naming the step that failed (and the handler that ran after it)."""
    if last_exit != 0:
        return f"step '{last_step}' failed (exit {last_exit})"
    failed = [h for h in job["history"] if h["exit"] not in (0, None)]
    if not failed:
        return f"step '{last_step}' failed"
    return (f"step '{failed[-1]['step']}' failed (exit {failed[-1]['exit']}); "
            f"'{last_step}' ran as the failure handler")
