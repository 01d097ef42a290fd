"""``oj queue logs QUEUE``: the log lines of the jobs of a queue's items, job after job in the
order they were created, each line after its job's id. A job log is a file of the host that
ran its steps: a job with no log here is named, not skipped silently."""

from __future__ import annotations

from collections.abc import Iterator

from ojd import paths
from ojd.state import State


def jobs_of_queue(state: State, project: str | None, queue: str) -> list[dict]:
    """Jobs of the queue's items still in the state, oldest first (a retried item's jobs all)."""
    ids = {i["id"] for i in state.queue_items(project, queue)}
    return sorted((j for j in state.jobs.values() if j.get("item") in ids),
                  key=lambda j: j["created_at"])


def log_lines(root: str, jobs: list[dict]) -> Iterator[tuple[str, bytes | None]]:
    """(job id, a line of its log without its newline); (job id, None) for a job whose log
    is not on this host (yet)."""
    for job in jobs:
        try:
            with open(paths.job_log(root, job["id"]), "rb") as f:
                for line in f:
                    yield job["id"], line.rstrip(b"\n")
        except FileNotFoundError:
            yield job["id"], None
