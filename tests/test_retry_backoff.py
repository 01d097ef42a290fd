"""Retry backoff: a queue's ``retry = { ..., backoff = "exponential", max, jitter }`` makes the
nth retry wait cooldown·2ⁿ⁻¹, capped at max, a uniform draw below it with jitter; the time is
recorded in the failure event and listings show it."""

from __future__ import annotations

import re

import pytest
from conftest import Project, wait_until
from test_runbook import load, problems

from ojd.backoff import retry_delay
from ojd.queues import failure_event


def test_exponential_backoff_doubles_each_retry_up_to_its_max():
    waits = [retry_delay(n, 10.0, "exponential", 60.0) for n in range(1, 7)]
    assert waits == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert retry_delay(500, 10.0, "exponential") > 1e18  # no overflow on a long chain


def test_a_fixed_backoff_waits_the_cooldown_every_time():
    assert [retry_delay(n, 30.0) for n in (1, 2, 5)] == [30.0, 30.0, 30.0]


def test_full_jitter_draws_between_zero_and_the_capped_wait():
    assert retry_delay(4, 10.0, "exponential", 60.0, True, draw=0.5) == 30.0
    assert retry_delay(4, 10.0, "exponential", 60.0, True, draw=0.0) == 0.0
    drawn = {retry_delay(3, 10.0, "exponential", None, True) for _ in range(200)}
    assert all(0.0 <= w < 40.0 for w in drawn) and len(drawn) > 100


def test_the_failure_event_records_the_next_try_of_the_items_attempt():
    rb = load('queue "q" {\n  retry = { attempts = 9, cooldown = "1m", backoff = "exponential",'
              ' max = "1h" }\n}\n')
    queue = rb.queues["q"]
    waits = [failure_event(queue, {"id": "i", "attempts": n}, "boom", 1000.0)["retry_at"] - 1000
             for n in (1, 2, 3, 7, 8)]
    assert waits == [60.0, 120.0, 240.0, 3600.0, 3600.0]
    dead = failure_event(queue, {"id": "i", "attempts": 10}, "boom", 1000.0)
    assert dead["dead"] and dead["retry_at"] is None


@pytest.mark.parametrize("retry, line_of, says", [
    ('{ attempts = 1, backoff = "linear" }', 2, 'backoff must be "fixed" or "exponential"'),
    ('{ attempts = 1, backoff = "exponential",\n    max = "soon" }', 3, "retry max"),
    ('{ attempts = 1, max = "1h" }', 2, 'add backoff = "exponential" or remove max'),
    ('{ attempts = 1,\n    jitter = "yes" }', 3, "jitter is a string, expected true or false"),
    ('{ attempts = 1, jiter = true }', 2, "unknown retry field 'jiter'"),
])
def test_runbook_check_refuses_a_bad_retry_policy_at_its_line(retry, line_of, says):
    out = problems(f'queue "q" {{\n  retry = {retry}\n}}\n')
    assert len(out) == 1 and out[0].startswith(f"rb.hcl:{line_of}:") and says in out[0], out


RUNBOOK = r"""
    queue "flaky" {
      vars  = ["n"]
      retry = { attempts = 3, cooldown = "1s", backoff = "exponential", max = "3s" }
    }
    queue "patient" {
      vars  = ["n"]
      retry = { attempts = 3, cooldown = "1h", backoff = "exponential", jitter = true }
    }
    worker "flaky" {
      source  = { queue = "flaky" }
      handler = { pipeline = "fail" }
    }
    worker "patient" {
      source  = { queue = "patient" }
      handler = { pipeline = "fail" }
    }
    pipeline "fail" {
      vars = ["item"]
      step "go" { run = "exit 3" }
    }
"""


@pytest.mark.both_stores
def test_a_failing_item_is_retried_after_doubling_waits_then_dies(project: Project):
    project.write("rb.hcl", RUNBOOK)
    item = project.oj("queue", "push", "flaky", '{"n": 1}').stdout.strip()
    proc = project.ojd("worker", "flaky", "--foreground", "--until-idle")
    proc.communicate(timeout=60)
    failures = [e for e in project.events("queue:failed") if e["id"] == item]
    assert [e["dead"] for e in failures] == [False, False, False, True]
    waits = [e["retry_at"] - e["ts"] for e in failures[:3]]
    assert [round(w) for w in waits] == [1, 2, 3], waits  # 1s, 2s, then 4s capped at 3s
    takes = [e["ts"] for e in project.events("queue:taken") if e["id"] == item]
    assert all(later >= f["retry_at"] for later, f in zip(takes[1:], failures[:3], strict=True))


@pytest.mark.both_stores
def test_listings_show_when_a_failed_items_next_try_is(project: Project):
    project.write("rb.hcl", RUNBOOK)
    item = project.oj("queue", "push", "patient", '{"n": 1}').stdout.strip()
    proc = project.ojd("worker", "patient", "--foreground")
    try:
        wait_until(lambda: project.items("patient")[0]["status"] == "failed", "the failure")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    retry_at = project.items("patient")[0]["retry_at"]
    failed = [e for e in project.events("queue:failed") if e["id"] == item][0]
    assert retry_at == failed["retry_at"] and 0 <= retry_at - failed["ts"] <= 3600
    listed = project.oj("queue", "list", "patient").stdout
    row = next(line for line in listed.splitlines() if line.startswith(item))
    # its DUE column says when the next try is: "in 59m" (the cooldown is an hour)
    assert re.search(r" failed .* in \d+m", row), row
