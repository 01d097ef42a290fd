"""${invoke.dir}: where `oj run` or `oj queue push` was run from, recorded with the job."""

from __future__ import annotations

import json

from conftest import Project

RUNBOOK = """
queue "q" {
  vars = ["n"]
}

worker "w" {
  source = { queue = "q" }
  run    = { job = "where" }
}

job "where" {
  vars = ["item"]
  step "s" { run = "echo \\"from=${invoke.dir} cwd=$PWD\\"" }
}
"""


def test_a_pushed_items_job_sees_the_push_directory_and_runs_in_the_project(project: Project):
    project.write("w.hcl", RUNBOOK)
    sub = project.root / "src" / "deep"
    sub.mkdir(parents=True)
    project.oj("queue", "push", "q", json.dumps({"n": "1"}), cwd=sub)
    project.ojd("worker", "w", "--foreground", "--until-idle").communicate(timeout=60)
    [job] = project.json("job", "list")
    assert job["status"] == "done"
    log = project.oj("job", "logs", job["id"]).stdout
    assert f"from={sub} cwd={project.root}" in log
    shown = project.oj("job", "show", job["id"]).stdout.splitlines()
    assert f"  invoke.dir = {sub}" in shown
    assert '  var.item = {"n":"1"}' in shown


def test_a_rerun_keeps_the_push_directory_and_the_project_as_cwd(project: Project):
    project.write("w.hcl", RUNBOOK)
    sub = project.root / "src"
    sub.mkdir()
    project.oj("queue", "push", "q", json.dumps({"n": "2"}), cwd=sub)
    project.ojd("worker", "w", "--foreground", "--until-idle").communicate(timeout=60)
    [job] = project.json("job", "list")
    rerun = project.oj("job", "rerun", job["id"], "--detach").stdout.strip()
    project.oj("job", "wait", rerun, check=False)
    log = project.oj("job", "logs", rerun).stdout
    assert f"from={sub} cwd={project.root}" in log


NAMES = """
command "build" {
  args = "<name> <instructions>"
  run  = { job = "build" }
}

command "fix" {
  args = "<title>"
  run  = { job = "fix" }
}

job "build" {
  vars = ["name", "instructions"]
  step "s" { run = "true" }
}

job "fix" {
  name = "Fix: ${var.title}"
  vars = ["title"]
  step "s" { run = "true" }
}

pipeline "tidy" {
  name = "Tidy: ${var.title}"
  vars = ["title"]
  step "s" { run = "true" }
}

command "tidy" {
  args = "<title>"
  run  = { pipeline = "tidy" }
}
"""


def test_upstream_jobs_are_named_as_upstream_names_them(project: Project):
    project.write("names.hcl", NAMES)
    project.oj("run", "build", "test-feat", "do the thing")
    project.oj("run", "fix", "the Login button")
    project.oj("run", "tidy", "the Login button")
    names = {j["pipeline"]: (j["name"], j["id"]) for j in project.json("job", "list")}
    assert names["build"][0] == "test-feat"
    name, job_id = names["fix"]
    assert name == f"fix-login-button-{job_id}"
    assert names["tidy"][0] == "Tidy: the Login button"  # oj's own spelling keeps oj's names


CHAIN = """
queue "first" {
  vars = ["n"]
}

queue "second" {
  vars = ["n"]
}

worker "one" {
  source = { queue = "first" }
  run    = { job = "one" }
}

worker "two" {
  source = { queue = "second" }
  run    = { job = "two" }
}

job "one" {
  vars   = ["item"]
  source = "folder"
  step "s" { run = "oj queue push second '{\\"n\\": \\"2\\"}'" }
}

job "two" {
  vars = ["item"]
  step "s" { run = "echo from=${invoke.dir}" }
}
"""


def test_a_push_from_a_jobs_step_passes_on_the_jobs_invoke_dir(project: Project):
    project.write("chain.hcl", CHAIN)
    sub = project.root / "src"
    sub.mkdir()
    project.oj("queue", "push", "first", json.dumps({"n": "1"}), cwd=sub)
    project.ojd("worker", "one", "--foreground", "--until-idle").communicate(timeout=60)
    project.ojd("worker", "two", "--foreground", "--until-idle").communicate(timeout=60)
    [two] = [j for j in project.json("job", "list") if j["pipeline"] == "two"]
    assert f"from={sub}\n" in project.oj("job", "logs", two["id"]).stdout
