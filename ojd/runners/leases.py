"""A worker's side of item leases in a shared store: when the next lease it may expire runs
out, the expiry of leases whose job's process stopped renewing them, and whether a job's
lease was lost. A lease is expired only after a renewal had its chance since the store last
failed to answer (``expiry_wait``)."""

from __future__ import annotations

import time

from ojd.events import queue_lease_expired
from ojd.notify import Log
from ojd.runners.assignment import Assignment
from ojd.runners.jobs import RENEW_RETRY
from ojd.runners.liveness import alive
from ojd.store import Store


class Leases:
    def __init__(self, store: Store, work: Assignment, log: Log) -> None:
        self.store = store
        self.work = work
        self.log = log
        # since when the store has answered without a break (monotonic): leases are expired
        # only after a renewal had its chance since (see expiry_wait)
        self._reachable_since = time.monotonic()

    def store_failed(self) -> None:
        self._reachable_since = time.monotonic()

    def next_end(self) -> float | None:
        """When the next lease this worker may expire runs out (or becomes expirable)."""
        queue = self.work.queue
        if not self.work.lease or queue.type == "external":
            return None
        with self.store.lock:
            end = self.store.state.next_lease_end(self.work.project, queue.name,
                                                  unless=self._runs_here)
        return None if end is None else max(end, time.time() + self.expiry_wait())

    def _runs_here(self, item: dict) -> bool:
        """Whether the item's job runs in a live process on this host: its lease is renewed
        by that process as soon as the store answers it, and never expired from here."""
        proc = (self.store.state.jobs.get(item.get("job") or "") or {}).get("process")
        return alive(proc)

    def expiry_wait(self) -> float:
        """How long before leases may be expired: a job's process renews its lease a second
        after its store answers again (the worker may have been cut off too, or the database
        restarted), so an outage as long as a lease ends with the renewal, not the expiry."""
        lease = self.work.lease
        assert lease
        grace = lease / 3 + 2 * RENEW_RETRY
        return max(0.0, self._reachable_since + grace - time.monotonic())

    def expire(self) -> None:
        """Items whose job's process (on any host) stopped renewing their lease go back to
        pending, the attempt not counted; their jobs are resumed by the next take."""
        if self.expiry_wait() > 0:
            return
        now = time.time()
        project, queue = self.work.project, self.work.queue.name
        with self.store.lock:
            if not self.store.state.expired_leases(project, queue, now,
                                                   unless=self._runs_here):
                return
        with self.store.transaction() as tx:
            for item in tx.state.expired_leases(project, queue, now,
                                                unless=self._runs_here):
                proc = (tx.state.jobs.get(item["job"]) or {}).get("process") or {}
                self.log.warning(
                    f"item {item['id']}: the lease of job {item['job']} (process "
                    f"{proc.get('pid')} on {proc.get('host') or '?'}) expired "
                    f"{now - item['lease_until']:.0f}s ago; back to pending, its job to be "
                    "resumed here or on another host")
                tx.append(queue_lease_expired(id=item["id"], job=item["job"]))

    def lost(self, job: dict) -> bool:
        """Whether the job's lease expired: its item is pending again, for a take to resume
        the job."""
        with self.store.lock:
            item = self.store.state.items.get(job.get("item") or "")
        return item is not None and item["status"] == "pending" and item.get("job") == job["id"]
