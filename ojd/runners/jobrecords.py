"""The records that begin and end a job outside its runner: the ``job:created`` of a new
job (in the append of its item's take), the settlement of its item with its end, and a
job failed by whoever gives up on it (a worker, a cron tick)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

from ojd import paths, queues
from ojd.errors import OjError
from ojd.events import job_created, job_finished, queue_completed, queue_failed
from ojd.notify import one_line
from ojd.project import project_name
from ojd.runbook.jobnames import display_name
from ojd.runbook.model import Pipeline, Runbook
from ojd.runbook.template import TemplateError, render_text
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store, Transaction


def workspace_path(state_root: str, pipeline: Pipeline, job_id: str, project: str) -> str | None:
    if pipeline.workspace == "ephemeral":
        return os.path.join(paths.workspaces_dir(state_root), job_id)
    if pipeline.workspace == "persistent":
        tag = hashlib.sha256(project.encode()).hexdigest()[:8]
        return os.path.join(paths.workspaces_dir(state_root), f"{pipeline.name}-{tag}")
    return None


def job_created_event(tx: Transaction, state_root: str, runbook: Runbook, project: str,
                      pipeline_name: str, vars_: dict[str, Any], invoke_dir: str, *,
                      item: str | None = None, worker: str | None = None,
                      owner: str | None = None, name: str | None = None,
                      job_id: str | None = None, cron: str | None = None,
                      rerun_of: str | None = None, invoked_from: str | None = None) -> dict:
    """The ``job:created`` event of a new job (appended by the caller, in the same append
    as the take of its item, so a crash cannot leave one without the other). Without a
    workspace it runs in ``invoke_dir``; its ``${invoke.dir}`` is ``invoked_from`` (where
    its item was pushed from), else ``invoke_dir``."""
    pipeline = runbook.pipeline(pipeline_name)
    if pipeline is None:
        raise OjError(f"pipeline '{pipeline_name}' is not defined")
    if job_id is None:
        job_id = queues.new_id(tx.state.jobs)
    values = {**pipeline.defaults, **vars_}
    missing = [v for v in pipeline.vars if v not in values]
    if missing:
        raise OjError(f"pipeline '{pipeline_name}' needs var '{missing[0]}'")
    cwd = workspace_path(state_root, pipeline, job_id, project) or invoke_dir
    invoke_dir = invoked_from or invoke_dir
    if pipeline.job_name is not None:
        # a label, not a reason to refuse work: a template that cannot render (a key the
        # item lacks) falls back to the usual name, with a warning
        ctx = {"var": values, "invoke": {"dir": invoke_dir},
               "workspace": {"root": cwd, "nonce": job_id},
               "source": {"root": cwd, "nonce": job_id}}
        try:
            name = one_line(render_text(pipeline.job_name, ctx, env={})).strip()[:200] or name
            if pipeline.spelling == "job":  # upstream's names: slug and nonce
                name = display_name(name or "", job_id, project_name(project))
        except TemplateError as e:
            print(f"oj: warning: pipeline '{pipeline_name}' name: {one_line(str(e))}; the "
                  f"job is named '{one_line(name or pipeline_name)}'", file=sys.stderr)
    return job_created(id=job_id, project=project, pipeline=pipeline_name,
                       name=name or pipeline_name, vars=values, cwd=cwd,
                       workspace=pipeline.workspace, invoke=invoke_dir, item=item,
                       worker=worker, by=owner, cron=cron, rerun_of=rerun_of)


def settle_item(runbook: Runbook, state, job_id: str, outcome: str, error: str | None
                ) -> list[dict]:
    """The end of a job's queue item, appended with the job's: completed, or failed/dead
    as its queue's retry policy says (dead when the runbook no longer has the queue)."""
    job = state.jobs.get(job_id) or {}
    item = state.items.get(job.get("item") or "")
    if item is None or item["status"] != "active" or item.get("job") != job_id:
        return []  # settled already, or taken by another job since
    if outcome == "done":
        return [queue_completed(id=item["id"])]
    queue = runbook.queues.get(item["queue"])
    if queue is None:
        return [queue_failed(id=item["id"], error=error or "job failed", dead=True,
                             retry_at=None)]
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
        tx.append(job_finished(id=job_id, outcome="failed", error=error),
                  *settle_item(runbook, tx.state, job_id, "failed", error))
    return True
