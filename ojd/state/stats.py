"""The fold's running totals, for ``oj metrics``: takes, completions and failures per queue,
and histograms of push→start latency (per queue) and step durations (per pipeline step).

They live in the state, and so in its snapshots, because the events they count are
compacted away: counted from the log alone they would drop at every compaction, and a
counter that goes down reads as a restart to Prometheus. Memory is bounded: one record per
queue and per pipeline step, each histogram a fixed list of bucket counts.

Pure, like all of ``ojd.state``. Observed *before* the event's own handler, so an item or a
job is seen as it was (a completed item may fall out of the state in its own handler).
"""

from __future__ import annotations

from bisect import bisect_left

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.events import Event

# Upper bounds (seconds) of the histograms' buckets; the last bucket is +Inf. Fixed: the
# counts are kept per bucket in snapshots, so a change here would need a fresh start.
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  300.0, 900.0, 3600.0)
STEP_BOUNDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
               21600.0)


def new_histogram(bounds: tuple[float, ...]) -> dict:
    """``counts[i]``: observations in bucket i alone (not cumulative); the last is +Inf."""
    return {"counts": [0] * (len(bounds) + 1), "sum": 0.0}


def observe(histogram: dict, bounds: tuple[float, ...], value: float) -> None:
    value = max(value, 0.0)  # clocks of two hosts may disagree by a little
    histogram["counts"][bisect_left(bounds, value)] += 1  # le: a value on a bound is in it
    histogram["sum"] += value


class StatsFold:
    """``State``'s running totals: a mixin, its slots are ``State``'s. ``stats`` is
    ``{"queues": {project: {queue: {...}}}, "steps": {project: {pipeline: {step: hist}}}}``,
    plain dicts with string keys, so a snapshot holds it as it is."""

    __slots__ = ()
    items: dict[str, dict]
    jobs: dict[str, dict]
    stats: dict

    def _queue_stats(self, project: str, queue: str) -> dict:
        queues = self.stats.setdefault("queues", {}).setdefault(project, {})
        record = queues.get(queue)
        if record is None:
            record = queues[queue] = {"taken": 0, "completed": 0, "failed": 0,
                                      "latency": new_histogram(LATENCY_BOUNDS)}
        return record

    def _count_taken(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is not None:
            self._queue_stats(item["project"], item["queue"])["taken"] += 1

    def _count_completed(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is not None and item["status"] not in ("completed", "dead"):
            self._queue_stats(item["project"], item["queue"])["completed"] += 1

    def _count_failed(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is not None and item["status"] not in ("completed", "dead"):
            self._queue_stats(item["project"], item["queue"])["failed"] += 1

    def _count_step_started(self, ev: Event) -> None:
        """The first step of an item's first job: the push→start latency of that item. A
        retry's job (the item's later attempts) and a resumed step are not a push's start."""
        job = self.jobs.get(ev["id"])
        if job is None or job["history"] or not job.get("item"):
            return
        item = self.items.get(job["item"])
        if item is None or item.get("job") != job["id"] or item["attempts"] != 1:
            return
        record = self._queue_stats(item["project"], item["queue"])
        observe(record["latency"], LATENCY_BOUNDS, ev["ts"] - item["created_at"])

    def _count_step_finished(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is None or not job["history"]:
            return
        last = job["history"][-1]
        if last["step"] != ev["step"] or last["finished_at"] is not None:
            return
        steps = self.stats.setdefault("steps", {}).setdefault(job["project"], {})
        per_step = steps.setdefault(job["pipeline"], {})
        histogram = per_step.get(ev["step"])
        if histogram is None:
            histogram = per_step[ev["step"]] = new_histogram(STEP_BOUNDS)
        observe(histogram, STEP_BOUNDS, ev["ts"] - last["started_at"])
