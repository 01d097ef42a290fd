"""A cancelled job's cleanup step: ``on_cancel = { step = "NAME" }`` of the step it was in,
else of its pipeline.

The cancel is recorded first (so the job's own process records nothing after it) and that
process stopped; then whoever cancelled runs the cleanup step, in the job's directory with
its vars and locals, bounded by the step's ``timeout`` (else ``DEFAULT_TIMEOUT``). Its output
goes to the job's log and its run to the job's history (``job:step_started`` and
``job:step_finished``), so ``oj job show`` lists it after the step that was cut short.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ojd import paths, project
from ojd.bashrun import Script
from ojd.errors import OjError
from ojd.events import job_step_finished, job_step_started
from ojd.runbook.model import Pipeline, Runbook, Step
from ojd.runbook.template import TemplateError, render_shell
from ojd.runners import sources
from ojd.runners.stepprocess import terminate_group
from ojd.store import Store

DEFAULT_TIMEOUT = 120.0  # seconds a cleanup step may run when it sets no timeout
EXIT_TIMEOUT = 124  # as timeout(1) says a command ran out of time
EXIT_TEMPLATE = 2  # a template that cannot render, as for any step


def cleanup_step(runbook: Runbook, job: dict) -> Step | None:
    """The step a cancel of ``job`` runs, or None."""
    pipeline = runbook.pipeline(job["pipeline"])
    if pipeline is None:
        return None
    current = pipeline.steps.get(job.get("step") or "")
    name = (current.on_cancel if current is not None else None) or pipeline.on_cancel
    return pipeline.steps.get(name or "")


def run_cleanup(store: Store, job: dict) -> int | None:
    """Run the cleanup step of the cancelled ``job`` (as it was before the cancel); its exit
    status, or None when it has none (or its project's runbook no longer loads: the cancel
    stands without it)."""
    try:
        runbook = project.load(job["project"], paths.cache_dir(store.root))
    except OjError:
        return None
    step = cleanup_step(runbook, job)
    pipeline = runbook.pipeline(job["pipeline"])
    if step is None or pipeline is None or step.run is None:
        return None  # an agent step cannot clean up: validation is what says so
    with store.transaction() as tx:
        tx.append(job_step_started(id=job["id"], step=step.name))
    try:  # the job's log, never created here (see control._say); else the output is lost
        fd = os.open(paths.job_log(store.root, job["id"]), os.O_WRONLY | os.O_APPEND)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    with open(fd, "ab") as log:
        log.write(f"==> cleanup step {step.name}\n".encode())
        log.flush()
        status = _run(store, pipeline, step, job, log)
        log.write(f"==> cleanup step {step.name}: "
                  f"{'ok' if status == 0 else f'exit {status}'}\n".encode())
    with store.transaction() as tx:
        tx.append(job_step_finished(id=job["id"], step=step.name, exit=status, next=None,
                                    failing=status != 0))
    return status


def _run(store: Store, pipeline: Pipeline, step: Step, job: dict, log) -> int:
    ctx = {"var": job["vars"], "args": job["vars"],
           "invoke": {"dir": job.get("invoke") or job["cwd"]},
           "workspace": {"root": job["cwd"], "nonce": job["id"]},
           "source": sources.context(job, pipeline),
           "local": job.get("locals") or {}}
    try:
        script = render_shell(step.run or "", ctx)
    except TemplateError as e:
        log.write(f"oj: {e}\n".encode())
        return EXIT_TEMPLATE
    env = dict(os.environ, OJ_PROJECT=job["project"], OJ_STATE_DIR=store.root,
               OJ_JOB=job["id"])
    bindir = os.path.dirname(os.path.abspath(sys.argv[0]))  # steps call this oj
    if os.path.exists(os.path.join(bindir, "oj")):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    cwd = job["cwd"] if os.path.isdir(job["cwd"]) else job["project"]
    timeout = step.timeout or DEFAULT_TIMEOUT
    with Script(script, "-e", "-o", "pipefail") as s:
        proc = subprocess.Popen(s.argv, pass_fds=s.fds, cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        log.write(f"oj: cleanup step {step.name} ran past {timeout:g}s; stopped\n".encode())
        terminate_group(proc.pid, proc)
        proc.wait()
        return EXIT_TIMEOUT
    code = proc.returncode
    return 128 - code if code < 0 else code  # killed by signal N: 128+N, as bash says
