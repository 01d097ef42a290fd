"""`oj job list` says where a running job is (step k/n, time in that step) and filters by
worker, name and the newest N; `oj run` with no command lists the project's commands."""

from __future__ import annotations

import json

import pytest
from conftest import Project, wait_until
from test_foreground import Foreground

from oj import joblisting

RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    pipeline "p" {
      vars = ["item"]
      name = "build-${var.item.n}"
      step "one" {
        run     = "true"
        on_done = { step = "two" }
      }
      step "two" {
        run     = "while [ ! -e gate-${var.item.n} ]; do sleep 0.05; done"
        on_done = { step = "three" }
      }
      step "three" {
        run = "true"
      }
    }
    command "hello" {
      args = "<name> [--loud]"
      run  = "echo hello ${args.name}"
    }
    command "deploy" {
      args = "<env>"
      run  = { pipeline = "deploy" }
    }
    pipeline "deploy" {
      vars = ["env"]
      step "go" { run = "true" }
    }
    """


def test_a_running_job_shows_its_step_as_k_of_n_and_its_time_in_it(project: Project):
    project.write("w.hcl", RUNBOOK)
    project.oj("queue", "push", "q", '{"n": "a"}')
    worker = Foreground(project, "w")
    try:
        wait_until(lambda: [j["step"] for j in project.json("job", "list")] == ["two"],
                   "the job in step two")
        [job] = project.json("job", "list")
        assert (job["step_number"], job["step_count"]) == (2, 3)
        assert job["in_step"] is not None and job["in_step"] >= 0
        header, row = project.oj("job", "list").stdout.splitlines()
        assert header.split() == ["ID", "NAME", "STATUS", "STEP", "IN", "STEP", "WORKER",
                                  "CREATED"]
        assert row.split()[:5] == [job["id"], "build-a", "running", "two", "2/3"]
        (project.root / "gate-a").touch()
        wait_until(lambda: project.json("job", "list")[0]["status"] == "done", "the job done")
        [done] = project.json("job", "list")
        assert done["in_step"] is None  # only a running job is in a step
    finally:
        (project.root / "gate-a").touch()  # the job ends, whatever the test found
        worker.stop()


def job(id_: str, name: str, worker: str | None, created: float) -> dict:
    return {"id": id_, "name": name, "worker": worker, "created_at": created}


JOBS = [job("1", "build-a", "w", 1), job("2", "deploy", None, 2), job("3", "build-b", "w", 3),
        job("4", "build-c", "x", 4)]


@pytest.mark.parametrize("filters,ids", [
    ({"worker": "w"}, ["1", "3"]),
    ({"name": "build"}, ["1", "3", "4"]),
    ({"name": "build-?"}, ["1", "3", "4"]),
    ({"name": "b*-b"}, ["3"]),
    ({"last": 2}, ["3", "4"]),
    ({"worker": "w", "name": "build", "last": 1}, ["3"]),
])
def test_job_list_filters_compose(filters, ids):
    assert [j["id"] for j in joblisting.select(JOBS, **filters)] == ids


def test_job_list_filters_on_the_command_line(project: Project):
    project.write("w.hcl", RUNBOOK)
    for n in ("a", "b", "c"):
        (project.root / f"gate-{n}").touch()
        project.oj("queue", "push", "q", json.dumps({"n": n}))
    project.ojd("worker", "w", "--foreground", "--until-idle").communicate(timeout=60)
    project.oj("run", "deploy", "prod")
    names = lambda *args: [j["name"] for j in project.json("job", "list", *args)]  # noqa: E731
    assert names() == ["build-a", "build-b", "build-c", "deploy"]
    assert names("--worker", "w") == ["build-a", "build-b", "build-c"]
    assert names("--name", "deploy") == ["deploy"]
    assert names("--worker", "w", "-n", "2") == ["build-b", "build-c"]
    assert names("--status", "done", "--name", "build-*", "-n", "1") == ["build-c"]
    rows = project.oj("job", "list", "--worker", "w", "-n", "1").stdout.splitlines()[1:]
    assert [r.split()[1] for r in rows] == ["build-c"]


def test_oj_run_without_a_command_lists_the_commands(project: Project):
    project.write("w.hcl", RUNBOOK)
    proc = project.oj("run")
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["COMMAND", "RUNS", "DEFINED", "AT"]
    assert lines[1].split() == ["deploy", "<env>", "pipeline", "deploy",
                                ".oj/runbooks/w.hcl:29"]
    assert lines[2].split() == ["hello", "<name>", "[--loud]", "shell", "script",
                                ".oj/runbooks/w.hcl:25"]
    assert "oj run COMMAND" in proc.stderr


def test_oj_run_without_a_command_in_a_project_without_commands_says_how_to_add_one(
        project: Project):
    project.write("w.hcl", 'pipeline "p" {\n  step "s" { run = "true" }\n}\n')
    proc = project.oj("run")
    assert proc.stdout.startswith("no commands in this project's runbooks; add one: ")
