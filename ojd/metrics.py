"""What ``oj metrics`` and ``oj-metrics.service`` export: the state as metric families, in
the OpenMetrics text format or Prometheus' older text format 0.0.4. Pure: a ``State`` and the
time in, text out.

Gauges are read off the state as it is (items, jobs, workers, crons); counters and
histograms are the fold's running totals (``ojd/state/stats.py``), which survive compaction.
Every series carries ``project`` (the project's root path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ojd.state import State
from ojd.state.stats import LATENCY_BOUNDS, STEP_BOUNDS

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ITEM_STATUSES = ("pending", "active", "failed", "dead", "completed")
JOB_STATUSES = ("running", "waiting", "done", "failed", "cancelled")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str  # without the _total of a counter's samples
    kind: str  # gauge, counter, histogram
    help: str
    unit: str = ""
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)  # suffix, labels

    def add(self, labels: Labels, value: float, suffix: str = "") -> None:
        self.samples.append((suffix, labels, value))

    def add_histogram(self, labels: Labels, bounds: tuple[float, ...], hist: dict) -> None:
        total = 0
        for bound, count in zip((*bounds, float("inf")), hist["counts"], strict=True):
            total += count
            self.add((*labels, ("le", _bound(bound))), total, "_bucket")
        self.add(labels, total, "_count")
        self.add(labels, hist["sum"], "_sum")


def families(state: State, now: float) -> list[Family]:
    """The metric families of ``state`` at time ``now`` (seconds since the epoch)."""
    return [*_queue_families(state, now), *_job_families(state), _worker_family(state),
            *_cron_families(state)]


def _queue_families(state: State, now: float) -> list[Family]:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    oldest: dict[tuple[str, str], float] = {}
    for item in state.items.values():
        key = (item["project"], item["queue"])
        per = counts.get(key)
        if per is None:
            per = counts[key] = dict.fromkeys(ITEM_STATUSES, 0)
        per[item["status"]] = per.get(item["status"], 0) + 1
        if item["status"] == "pending" and item["created_at"] < oldest.get(key, now):
            oldest[key] = item["created_at"]
    totals = {(p, q): record for p, queues in state.stats.get("queues", {}).items()
              for q, record in queues.items()}
    recorded = {(w["project"], w["queue"]) for w in state.workers.values()
                if w.get("project") and w.get("queue")}
    items = Family("oj_queue_items", "gauge", "Items in the state by queue and status "
                   "(completed: the newest kept per queue)")
    age = Family("oj_queue_oldest_pending_age_seconds", "gauge", "Age of the queue's oldest "
                 "pending item (0: none pending)", "seconds")
    takes = Family("oj_queue_takes", "counter", "Items taken by a worker (each attempt)")
    done = Family("oj_queue_completions", "counter", "Items completed")
    failed = Family("oj_queue_failures", "counter", "Item attempts failed (retried or dead)")
    latency = Family("oj_queue_push_to_start_seconds", "histogram", "From an item's push to "
                     "the first step of its first job", "seconds")
    for key in sorted(counts.keys() | totals.keys() | recorded):
        labels = (("project", key[0]), ("queue", key[1]))
        per = counts.get(key) or dict.fromkeys(ITEM_STATUSES, 0)
        for status in sorted(per):
            items.add((*labels, ("status", status)), per[status])
        age.add(labels, round(now - oldest[key], 3) if key in oldest else 0)
        record = totals.get(key)
        if record is not None:
            takes.add(labels, record["taken"], "_total")
            done.add(labels, record["completed"], "_total")
            failed.add(labels, record["failed"], "_total")
            latency.add_histogram(labels, LATENCY_BOUNDS, record["latency"])
    steps = Family("oj_step_duration_seconds", "histogram", "Durations of finished steps",
                   "seconds")
    for project, pipelines in sorted(state.stats.get("steps", {}).items()):
        for pipeline, per_step in sorted(pipelines.items()):
            for step, hist in sorted(per_step.items()):
                labels = (("project", project), ("pipeline", pipeline), ("step", step))
                steps.add_histogram(labels, STEP_BOUNDS, hist)
    return [items, age, takes, done, failed, latency, steps]


def _job_families(state: State) -> list[Family]:
    counts: dict[str, dict[str, int]] = {}
    waiting: dict[str, int] = {}
    for job in state.jobs.values():
        per = counts.get(job["project"])
        if per is None:
            per = counts[job["project"]] = dict.fromkeys(JOB_STATUSES, 0)
            waiting[job["project"]] = 0
        per[job["status"]] = per.get(job["status"], 0) + 1
        if job["status"] == "waiting" and not job.get("dismissed"):
            waiting[job["project"]] += 1
    jobs = Family("oj_jobs", "gauge", "Jobs in the state by status (finished: the newest "
                  "kept)")
    person = Family("oj_waiting_for_person", "gauge", "What waits for a person to answer, by "
                    "source (job: a job waiting for an answer, not dismissed)")
    for project in sorted(counts):
        for status in sorted(counts[project]):
            jobs.add((("project", project), ("status", status)), counts[project][status])
        person.add((("project", project), ("source", "job")), waiting[project])
    return [jobs, person]


def _worker_family(state: State) -> Family:
    up = Family("oj_workers_up", "gauge", "Worker instances per host: 1 when recorded "
                "started and not stopped since")
    for name, w in sorted(state.workers.items()):
        project = w.get("project") or ""
        instances = w.get("hosts") or {"": {"started_at": w.get("started_at"),
                                            "stopped_at": w.get("stopped_at")}}
        for host, inst in sorted(instances.items()):
            started, stopped = inst.get("started_at"), inst.get("stopped_at")
            running = started is not None and (stopped is None or stopped < started)
            up.add((("project", project), ("worker", name), ("host", host)), int(running))
    return up


def _cron_families(state: State) -> list[Family]:
    last_run = Family("oj_cron_last_run_timestamp_seconds", "gauge", "When the cron's last "
                      "tick started a job", "seconds")
    outcome = Family("oj_cron_last_outcome", "gauge", "The status of the cron's last tick: "
                     "its job's status, skipped (too many running) or unknown (its job is "
                     "no longer in the state)")
    for name, c in sorted(state.crons.items()):
        labels = (("project", c.get("project") or ""), ("cron", name))
        if c.get("last_tick") is not None:
            last_run.add(labels, c["last_tick"])
        if (c.get("last_skipped") or 0) > (c.get("last_tick") or 0):
            status = "skipped"
        elif c.get("last_job"):
            status = (state.jobs.get(c["last_job"]) or {}).get("status", "unknown")
        else:
            continue
        outcome.add((*labels, ("status", status)), 1)
    return [last_run, outcome]


def render(fams: list[Family], openmetrics: bool = True) -> str:
    """The text exposition: OpenMetrics 1.0, or Prometheus text format 0.0.4."""
    out = []
    for fam in fams:
        # 0.0.4 names a counter by its samples' name and knows no units
        name = fam.name + ("_total" if fam.kind == "counter" and not openmetrics else "")
        out.append(f"# HELP {name} {_escape_help(fam.help)}\n")
        out.append(f"# TYPE {name} {fam.kind}\n")
        if fam.unit and openmetrics:
            out.append(f"# UNIT {name} {fam.unit}\n")
        for suffix, labels, value in fam.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            out.append(f"{fam.name}{suffix}{{{text}}} {_number(value)}\n")
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
