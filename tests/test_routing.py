"""Step routing: on_done / on_fail, pipeline fallbacks, the visit limit."""

from __future__ import annotations

from ojd.routing import Route, route, visit_limit_error
from ojd.runbook.model import Pipeline, Step, Where

W = Where("t.hcl", 1)


def pipeline(*steps: Step, on_done: str | None = None, on_fail: str | None = None,
             max_visits: int = 10) -> Pipeline:
    return Pipeline("p", ("v",), {}, (), None, {}, on_done, on_fail, max_visits,
                    {s.name: s for s in steps}, W)


def step(name: str, on_done: str | None = None, on_fail: str | None = None) -> Step:
    return Step(name, "true", None, on_done, on_fail, W)


def test_success_follows_on_done_and_ends_without_it():
    p = pipeline(step("a", on_done="b"), step("b"))
    assert route(p, "a", 0) == Route("b", False)
    assert route(p, "b", 0) == Route(None, False)


def test_failure_follows_step_on_fail_as_recovery():
    p = pipeline(step("merge", on_fail="resolve"), step("resolve"))
    assert route(p, "merge", 3) == Route("resolve", False)


def test_failure_without_on_fail_ends_the_job_failing():
    p = pipeline(step("a"))
    assert route(p, "a", 1) == Route(None, True)


def test_pipeline_on_fail_is_a_failure_handler_not_a_recovery():
    p = pipeline(step("a"), step("cleanup"), on_fail="cleanup")
    assert route(p, "a", 1) == Route("cleanup", True)
    assert route(p, "cleanup", 1) == Route(None, True)  # never loops into itself


def test_pipeline_on_done_runs_after_a_successful_path():
    p = pipeline(step("a"), step("final"), on_done="final")
    assert route(p, "a", 0) == Route("final", False)
    assert route(p, "final", 0) == Route(None, False)


def test_visit_limit_stops_cycles():
    p = pipeline(step("a", on_fail="a"), max_visits=3)
    assert visit_limit_error(p, "a", 2) is None
    assert "max_visits = 3" in visit_limit_error(p, "a", 3)


def test_on_fail_with_attempts_recovers_from_that_many_failures_then_fails():
    push = Step("push", "false", None, None, "init", W, on_fail_attempts=2)
    p = pipeline(step("init", on_done="push"), push, on_fail="cleanup")
    p.steps["cleanup"] = step("cleanup")
    assert route(p, "push", 1, failures=1) == Route("init", False)
    assert route(p, "push", 1, failures=2) == Route("init", False)
    assert route(p, "push", 1, failures=3) == Route("cleanup", True)
