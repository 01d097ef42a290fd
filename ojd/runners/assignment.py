"""What a worker runs, shared by the parts of its loop (``ojd.worker``): the runbook, the
worker's block and its queue as the runbook says now (a reload replaces them), and who it
takes items as."""

from __future__ import annotations

from dataclasses import dataclass

from ojd.runbook.model import Queue, Runbook, Worker


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

    def vars_for(self, data: dict) -> dict:
        """A new job's vars: the item is its pipeline's first var."""
        pipeline = self.runbook.pipelines[self.worker.pipeline]
        return {pipeline.vars[0]: data}
