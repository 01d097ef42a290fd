"""``oj metrics``: the state as OpenMetrics text, read back with prometheus_client's parsers
and each figure checked against the state it describes; the running totals survive
snapshots and compaction."""

from __future__ import annotations

import json

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_004_families

from ojd import events as ev
from ojd.metrics import families, render
from ojd.state import State

P = "/srv/project"
NOW = 300.0


def fold(*evs: tuple[float, dict]) -> State:
    state = State()
    for pos, (ts, event) in enumerate(evs, start=1):
        state.apply({**event, "ts": ts}, pos)
    return state


def samples(text: str, openmetrics: bool = True) -> dict[tuple, float]:
    """Every sample, keyed by (name, sorted labels)."""
    parse = text_string_to_metric_families if openmetrics else text_004_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in parse(text) for s in fam.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def take(ts: float, item: str, job: str, *, step_at: float | None = None,
         pipeline: str = "p1") -> list[tuple[float, dict]]:
    out = [(ts, ev.queue_taken(id=item, by="w", job=job)),
           (ts, ev.job_created(id=job, project=P, pipeline=pipeline, name=job, vars={},
                               cwd=None, workspace=None, invoke=None, item=item,
                               worker="w", by="w"))]
    if step_at is not None:
        out.append((step_at, ev.job_step_started(id=job, step="build")))
    return out


def step_end(ts: float, job: str, exit: int = 0) -> tuple[float, dict]:
    return (ts, ev.job_step_finished(id=job, step="build", exit=exit, next=None,
                                     failing=exit != 0))


def push(ts: float, item: str, queue: str = "q", project: str = P) -> tuple[float, dict]:
    return (ts, ev.queue_pushed(id=item, project=project, queue=queue, data={"n": item},
                                key=item))


def history() -> list[tuple[float, dict]]:
    """a completes; b fails, is retried and dies; c's job waits for a person; d, e pend."""
    return [
        push(100, "a"), push(101, "b"), push(102, "c"), push(103, "d"), push(110, "e"),
        *take(100.5, "a", "j1", step_at=100.7), step_end(103.7, "j1"),
        (103.7, ev.queue_completed(id="a")),
        (103.7, ev.job_finished(id="j1", outcome="done", error=None)),
        *take(102, "b", "j2", step_at=102.05), step_end(102.55, "j2", exit=1),
        (102.6, ev.queue_failed(id="b", error="exit 1", dead=False, retry_at=200)),
        (102.6, ev.job_finished(id="j2", outcome="failed", error="exit 1")),
        *take(201, "b", "j3", step_at=201.1), step_end(201.2, "j3", exit=1),
        (201.2, ev.queue_failed(id="b", error="exit 1", dead=True, retry_at=None)),
        (201.2, ev.job_finished(id="j3", outcome="failed", error="exit 1")),
        *take(103, "c", "j4", step_at=104),
        (105, ev.job_waiting(id="j4", reason="needs a look")),
        (90, ev.worker_recorded(name="w", project=P, runbook="w.hcl", queue="q",
                                pipeline="p1", concurrency=2)),
        (91, ev.worker_started(name="w", invocation="i1", pid=10, host="h1")),
        (92, ev.worker_started(name="w", invocation="i2", pid=11, host="h2")),
        (93, ev.worker_stopped(name="w", invocation="i2", host="h2")),
        (94, ev.cron_recorded(name="nightly", project=P, runbook="c.hcl")),
        (95, ev.cron_tick(name="nightly", job="j5")),
        (95, ev.job_created(id="j5", project=P, pipeline="p2", name="j5", vars={}, cwd=None,
                            workspace=None, invoke=None, item=None, worker=None, by="cron",
                            cron="nightly")),
        (96, ev.job_finished(id="j5", outcome="done", error=None)),
        (94, ev.cron_recorded(name="hourly", project=P, runbook="c.hcl")),
        (97, ev.cron_tick(name="hourly", job="j9")),
        (98, ev.cron_skipped(name="hourly", running=1)),
    ]


def test_each_figure_matches_the_state_it_describes():
    found = samples(render(families(fold(*history()), NOW)))
    q = {"project": P, "queue": "q"}
    assert {s: value(found, "oj_queue_items", **q, status=s)
            for s in ("pending", "active", "failed", "dead", "completed")} == {
        "pending": 2, "active": 1, "failed": 0, "dead": 1, "completed": 1}
    assert value(found, "oj_queue_oldest_pending_age_seconds", **q) == NOW - 103
    assert value(found, "oj_queue_takes_total", **q) == 4  # a, b twice, c
    assert value(found, "oj_queue_completions_total", **q) == 1
    assert value(found, "oj_queue_failures_total", **q) == 2
    # push to first step: a 0.7 s, b 1.05 s, c 2 s; b's retry is no push's start
    latency = "oj_queue_push_to_start_seconds"
    assert value(found, f"{latency}_count", **q) == 3
    assert value(found, f"{latency}_sum", **q) == pytest.approx(3.75)
    assert [value(found, f"{latency}_bucket", **q, le=le) for le in ("0.5", "1.0", "2.5")] \
        == [0, 1, 3]
    # steps of p1/build: 3 s, 0.5 s, 0.1 s
    step = {"project": P, "pipeline": "p1", "step": "build"}
    assert value(found, "oj_step_duration_seconds_count", **step) == 3
    assert value(found, "oj_step_duration_seconds_sum", **step) == pytest.approx(3.6)
    assert [value(found, "oj_step_duration_seconds_bucket", **step, le=le)
            for le in ("0.1", "0.5", "1.0", "5.0", "+Inf")] == [1, 2, 2, 3, 3]
    assert {s: value(found, "oj_jobs", project=P, status=s)
            for s in ("running", "waiting", "done", "failed", "cancelled")} == {
        "running": 0, "waiting": 1, "done": 2, "failed": 2, "cancelled": 0}
    assert value(found, "oj_waiting_for_person", project=P, source="job") == 1
    assert value(found, "oj_workers_up", project=P, worker="w", host="h1") == 1
    assert value(found, "oj_workers_up", project=P, worker="w", host="h2") == 0
    assert value(found, "oj_cron_last_run_timestamp_seconds", project=P, cron="nightly") == 95
    assert value(found, "oj_cron_last_outcome", project=P, cron="nightly", status="done") == 1
    assert value(found, "oj_cron_last_outcome", project=P, cron="hourly",
                 status="skipped") == 1


def test_a_dismissed_waiting_job_no_longer_waits_for_a_person():
    state = fold(*history(), (106, ev.job_dismissed(id="j4")))
    found = samples(render(families(state, NOW)))
    assert value(found, "oj_waiting_for_person", project=P, source="job") == 0
    assert value(found, "oj_jobs", project=P, status="waiting") == 1


def test_totals_survive_a_snapshot_and_the_items_falling_out_of_the_state():
    state = fold(*history())
    again = State.from_dict(json.loads(json.dumps(state.to_dict())))
    assert render(families(again, NOW)) == render(families(state, NOW))
    # the completed item is pruned: it leaves the gauges, not the counters
    again.apply({**ev.queue_pruned(ids=["a"]), "ts": 250}, state.pos + 1)
    found = samples(render(families(again, NOW)))
    q = {"project": P, "queue": "q"}
    assert value(found, "oj_queue_items", **q, status="completed") == 0
    assert value(found, "oj_queue_completions_total", **q) == 1
    assert value(found, "oj_queue_push_to_start_seconds_count", **q) == 3


def test_a_resumed_step_and_a_late_word_on_a_settled_item_count_nothing_twice():
    state = fold(push(1, "a"), *take(2, "a", "j1", step_at=3), (4, ev.queue_completed(id="a")),
                 (5, ev.queue_completed(id="a")), (6, ev.job_step_started(id="j1", step="x")))
    found = samples(render(families(state, NOW)))
    q = {"project": P, "queue": "q"}
    assert value(found, "oj_queue_completions_total", **q) == 1
    assert value(found, "oj_queue_push_to_start_seconds_count", **q) == 1


def test_prometheus_text_format_carries_the_same_figures():
    state = fold(*history())
    om = samples(render(families(state, NOW)))
    old = render(families(state, NOW), openmetrics=False)
    assert "# EOF" not in old and "# UNIT" not in old
    assert "# TYPE oj_queue_takes_total counter" in old
    assert samples(old, openmetrics=False) == om


def test_label_values_are_escaped_and_read_back_as_they_were():
    odd = '/srv/a "quoted"\\dir\nnext'
    state = fold(push(1, "a", project=odd, queue='q"1'))
    found = samples(render(families(state, NOW)))
    assert value(found, "oj_queue_items", project=odd, queue='q"1', status="pending") == 1


def test_an_empty_state_is_valid_openmetrics():
    text = render(families(State(), NOW))
    assert text.endswith("# EOF\n")
    assert list(text_string_to_metric_families(text))  # parses: the families, no samples
