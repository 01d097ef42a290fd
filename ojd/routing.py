"""Step routing: where a job goes after a step exits. Pure."""

from __future__ import annotations

from typing import NamedTuple

from ojd.runbook.model import Pipeline

# the exit status of a step stopped at its time limit (shell or agent), as timeout(1)'s
TIMEOUT_EXIT = 124


class Route(NamedTuple):
    next: str | None  # the step to run next; None ends the job
    failing: bool  # the job is now handling a failure it does not recover from


def route(pipeline: Pipeline, step: str, exit_code: int, failures: int = 1) -> Route:
    """A step's own ``on_done``/``on_fail`` win; the pipeline's are the fallback.

    A step-level ``on_fail`` is recovery (the job can still end done); the pipeline-level
    ``on_fail`` is a failure handler: the job runs it and still ends failed. A step's
    ``on_fail`` with ``attempts = N`` recovers from its first N failures (``failures``
    counts this one); past them, the step fails as if it had no ``on_fail``.
    """
    s = pipeline.steps[step]
    if exit_code == 0:
        target = s.on_done or (pipeline.on_done if pipeline.on_done != step else None)
        return Route(target, False)
    if s.on_fail and (s.on_fail_attempts is None or failures <= s.on_fail_attempts):
        return Route(s.on_fail, False)
    if pipeline.on_fail and pipeline.on_fail != step:
        return Route(pipeline.on_fail, True)
    return Route(None, True)


def visit_limit_error(pipeline: Pipeline, step: str, visits: int) -> str | None:
    """A step run more than ``max_visits`` times fails the job: a cycle cannot spin forever."""
    if visits >= pipeline.max_visits:
        return (f"step '{step}' already ran {visits} times (max_visits = {pipeline.max_visits} "
                f"in pipeline '{pipeline.name}')")
    return None
