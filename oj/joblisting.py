"""What ``oj job list`` shows: which jobs (worker, name and last-N filters) and, for each,
where it is in its pipeline (step k/n) and how long it has been in that step. Pure: the
jobs and the project's runbook come in, rows go out."""

from __future__ import annotations

import fnmatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.runbook.model import Pipeline, Runbook


def select(jobs: list[dict], *, worker: str | None = None, name: str | None = None,
           last: int | None = None) -> list[dict]:
    """``jobs`` (oldest first) of ``worker``, whose name matches ``name`` (a glob when it has
    ``*?[``, else a substring), the newest ``last`` of them."""
    if worker is not None:
        jobs = [j for j in jobs if j.get("worker") == worker]
    if name is not None:
        glob = any(c in name for c in "*?[")
        jobs = [j for j in jobs if (fnmatch.fnmatchcase(j["name"] or "", name) if glob
                                    else name in (j["name"] or ""))]
    if last is not None:
        jobs = jobs[-last:] if last > 0 else []
    return jobs


def pipeline_of(runbook: Runbook | None, job: dict) -> Pipeline | None:
    """The pipeline a job runs, when this project's runbook still defines it (a cron's shell
    ``run`` is a pipeline of its own)."""
    if runbook is None:
        return None
    name = job["pipeline"]
    found = runbook.pipelines.get(name)
    if found is None and job.get("cron") in runbook.crons:
        own = runbook.crons[job["cron"]].own
        found = own if own is not None and own.name == name else None
    return found


def step_position(job: dict, pipeline: Pipeline | None) -> tuple[int | None, int | None]:
    """(k, n): the job's step is the kth of the pipeline's n (None when unknown)."""
    if pipeline is None:
        return None, None
    steps = list(pipeline.steps)
    k = steps.index(job["step"]) + 1 if job.get("step") in steps else None
    return k, len(steps)


def in_step(job: dict, now: float) -> float | None:
    """Seconds since a running job's current step started (None for any other job)."""
    history = job.get("history") or []
    if job["status"] != "running" or not history or history[-1].get("finished_at"):
        return None
    return max(0.0, now - history[-1]["started_at"])


def step_cell(job: dict, k: int | None, n: int | None) -> str | None:
    if not job.get("step"):
        return None
    return f"{job['step']} {k}/{n}" if k is not None else job["step"]
