"""What a worker runs, shared by the parts of its loop (``ojd.worker``): the runbook, the
worker's block and its queue as the runbook says now (a reload replaces them), and who it
takes items as."""

from __future__ import annotations

from dataclasses import dataclass

from ojd.runbook.model import Queue, Runbook, Worker
from ojd.state.limits import Window, queue_window, worker_window


@dataclass
class Assignment:
    runbook: Runbook
    worker: Worker
    project: str
    owner: str  # the lease holder of what it takes (``ojd.worker.owner_id``)
    shared: bool  # its store is shared by hosts (PostgreSQL): items are leased

    @property
    def queue(self) -> Queue:
        return self.runbook.queues[self.worker.queue]

    @property
    def lease(self) -> float | None:
        """Items are leased only in a shared store: one host's worker alone (the WAL
        directory) adopts or resumes its own jobs instead."""
        return self.worker.lease if self.shared else None

    @property
    def windows(self) -> list[Window]:
        """The rates its takes count against: its queue's and its own."""
        out: list[Window] = []
        if self.queue.rate is not None:
            out.append((queue_window(self.project, self.queue.name), *self.queue.rate))
        if self.worker.rate is not None:
            out.append((worker_window(self.project, self.worker.name), *self.worker.rate))
        return out

    def vars_for(self, data: dict) -> dict:
        """A new job's vars: the item is its pipeline's first var."""
        pipeline = self.runbook.pipelines[self.worker.pipeline]
        return {pipeline.vars[0]: data}
