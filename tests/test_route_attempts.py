"""Upstream's on_fail = { step = ..., attempts = N } in a running job."""

from __future__ import annotations

from conftest import Project

RUNBOOK = """
command "flaky" {
  run = { job = "flaky" }
}

job "flaky" {
  step "try" {
    run     = "echo try >> tries.txt; false"
    on_fail = { step = "try", attempts = 2 }
  }
}
"""


def test_a_step_recovers_through_on_fail_attempts_times_then_the_job_fails(project: Project):
    project.write("flaky.hcl", RUNBOOK)
    project.oj("run", "flaky", check=False)
    [job] = project.json("job", "list")
    assert job["status"] == "failed"
    assert (project.root / "tries.txt").read_text().splitlines() == ["try"] * 3
    assert [h["step"] for h in job["history"]] == ["try"] * 3
