"""Loading runbooks through the CLI: hostile files are one-line errors, runbooks may
live in subdirectories and be TOML or JSON, shell scripts are checked with bash -n, and
problems point at the field they are about."""

from __future__ import annotations

import json
import os

import pytest
from conftest import Project

QUEUE = 'queue "q" {}\n'


@pytest.fixture
def project(cli_project: Project) -> Project:
    """`oj` in-process: these pin what `oj runbook check` says, not how the script starts."""
    return cli_project


def check(project: Project, *args: str, timeout: float = 20):
    return project.oj("runbook", "check", *args, check=False, timeout=timeout)


# -- hostile files ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, where, message", [
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", "2:37", "lists and objects nested more than 32"),
    ("x = " + "{ a = " * 3000 + "1" + " }" * 3000 + "\n", "2:197", "nested more than 32 deep"),
    ('b "x" {\n' * 3000 + "}\n" * 3000, "34:7", "blocks nested more than 32 deep"),
    ('x = "' + '${"' * 3000 + "\n", "2:102", "template sequences nested more than 32"),
    ("x = " + "9" * 5000 + "\n", "2:5", "number '99999999999999999...' is too large"),
    ("x = 1e999\n", "2:5", "number '1e999' is too large"),
])
def test_deep_nesting_and_huge_numbers_are_one_line_errors(project: Project, text, where,
                                                           message):
    project.write("a.hcl", QUEUE)
    project.write("bad.hcl", "\n" + text)
    proc = check(project)
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f".oj/runbooks/bad.hcl:{where}: ") and message in first, first
    assert len(proc.stderr.splitlines()) == 2  # the problem and the count


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_a_fifo_runbook_is_refused_everywhere_without_hanging(project: Project):
    project.write("a.hcl", 'queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
                  '  handler = { pipeline = "p" }\n}\npipeline "p" {\n  vars = ["x"]\n'
                  '  step "s" { run = "true" }\n}\n')
    os.mkfifo(project.root / ".oj" / "runbooks" / "pipe.hcl")
    expected = ".oj/runbooks/pipe.hcl:1: a FIFO, not a regular file"
    for args in (("runbook", "check"), ("queue", "push", "q", "{}"), ("run", "x")):
        proc = project.oj(*args, check=False, timeout=10)
        assert proc.returncode == 1 and expected in proc.stderr, (args, proc.stderr)
    worker = project.ojd("worker", "w", "--foreground")
    out, _ = worker.communicate(timeout=10)
    assert worker.returncode == 78 and expected in out


def test_a_symlink_to_a_device_and_an_oversized_file_are_refused(project: Project):
    os.symlink("/dev/zero", project.root / ".oj" / "runbooks" / "zero.hcl")
    project.write("big.hcl", "# padding\n" * 120_000)
    proc = check(project, timeout=10)
    assert proc.returncode == 1
    assert ".oj/runbooks/big.hcl:1: larger than the 1024 KiB limit" in proc.stderr
    assert ".oj/runbooks/zero.hcl:1: a character device, not a regular file" in proc.stderr


# -- where and how runbooks are written ----------------------------------------------------------

def test_runbooks_in_subdirectories_are_read(project: Project):
    (project.root / ".oj" / "runbooks" / "merge").mkdir()
    project.write("merge/local.hcl", 'queue "local" {}\n')
    project.write("merge/github.hcl", 'queue "github" {}\n')
    proc = check(project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["read .oj/runbooks/merge/github.hcl",
                                            "read .oj/runbooks/merge/local.hcl"]
    project.oj("queue", "push", "local", "{}")
    assert project.json("runbook", "list") == {".oj/runbooks/merge/github.hcl": ["queue github"],
                                               ".oj/runbooks/merge/local.hcl": ["queue local"]}


TOML = '''\
[command.build]
args = "<name>"
run = { pipeline = "build" }

[queue.jobs]
vars = ["name"]
retry = { attempts = 1, cooldown = "5s" }

[pipeline.build]
vars = ["name"]

[pipeline.build.locals]
greeting = "hello ${var.name}"

[[pipeline.build.step]]
name = "first"
run = """
echo "${local.greeting}" > "${invoke.dir}/first.txt"
"""
on_done = { step = "second" }

[[pipeline.build.step]]
name = "second"
run = "echo second >> first.txt"
'''


def test_toml_runbook_runs_like_hcl(project: Project):
    project.write("build.toml", TOML)
    project.oj("run", "build", "it's")
    assert (project.root / "first.txt").read_text() == "hello it's\nsecond\n"
    project.oj("queue", "push", "jobs", "--var", "name=x")
    assert project.json("runbook", "list") == {".oj/runbooks/build.toml": [
        "command build", "queue jobs", "pipeline build"]}


def test_json_runbook_runs_like_hcl(project: Project):
    project.write("build.json", json.dumps({
        "command": {"hi": {"args": "<who>", "run": "echo hi ${args.who} > out.txt"}},
        "pipeline": {"p": {"vars": ["x"], "step": {"only": {"run": "true"}}}},
        "queue": {"q": {"vars": ["x"]}}}, indent=2))
    project.oj("run", "hi", "there")
    assert (project.root / "out.txt").read_text() == "hi there\n"
    project.oj("queue", "push", "q", '{"x": 1}')


def test_toml_and_json_problems_point_at_their_lines(project: Project):
    project.write("a.toml", '[queue.q]\nvars = ["x"]\n\n[queue.q.retry]\nattempts = "2"\n'
                  '\n[[pipeline.p.step]]\nname = "s"\nrun = "echo ${var.nope}"\n')
    project.write("b.json", '{\n  "queue": {\n    "r": {\n      "type": "elsewhere"\n    }\n'
                  '  }\n}\n')
    project.write("c.toml", "[queue.q\n")
    project.write("d.json", '{\n  "queue": {"q": {}},\n  "queue": {}\n}\n')
    proc = check(project)
    assert proc.stderr.splitlines() == [
        ".oj/runbooks/c.toml:1:9: invalid TOML: Expected ']' at the end of a table declaration",
        ".oj/runbooks/d.json:3:3: key 'queue' is already set at line 2",
        "2 problem(s) in 4 runbook file(s)"]
    (project.root / ".oj" / "runbooks" / "c.toml").unlink()
    (project.root / ".oj" / "runbooks" / "d.json").unlink()
    proc = check(project)
    assert proc.stderr.splitlines() == [
        ".oj/runbooks/a.toml:5: retry attempts is a string, expected a whole number >= 0",
        ".oj/runbooks/a.toml:9: ${var.nope}: 'nope' is not defined",
        ".oj/runbooks/b.json:4: queue 'r' type must be \"persisted\" or \"external\", not "
        "\"elsewhere\"",
        "3 problem(s) in 2 runbook file(s)"]


def test_check_says_what_it_read_and_warns_about_what_it_skipped(project: Project):
    project.write("a.hcl", QUEUE)
    project.write("notes.md", "# not a runbook\n")
    os.mkfifo(project.root / ".oj" / "runbooks" / "pipe")
    proc = check(project)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "read .oj/runbooks/a.hcl",
        "ok: 1 file(s), 0 commands, 1 queues, 0 workers, 0 pipelines, 0 agents"]
    assert proc.stderr.splitlines() == [
        "warning: skipped .oj/runbooks/notes.md: a file, not a runbook (.hcl, .toml or .json)",
        "warning: skipped .oj/runbooks/pipe: a FIFO, not a runbook (.hcl, .toml or .json)"]


def test_check_of_a_project_without_runbooks_says_so(project: Project):
    project.write("README", "nothing here\n")
    proc = check(project)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "warning: skipped .oj/runbooks/README: a file, not a runbook (.hcl, .toml or .json)",
        "oj: no runbooks in .oj/runbooks/ (looked for .hcl, .toml and .json files, in "
        "subdirectories too); add one, or check the project directory"]


# -- shell scripts -------------------------------------------------------------------------------

SYNTAX = '''\
command "c" {
  run = <<-SHELL
    touch ran-command
    if true; then
      echo no fi
  SHELL
}
pipeline "p" {
  locals {
    ok = "$(echo fine)"
    bad = "$(echo ${var.x}"
  }
  step "s" {
    run = <<-SHELL
      touch ran-step
      echo )
    SHELL
  }
  vars = ["x"]
}
command "p" {
  args = "<x>"
  run = { pipeline = "p" }
}
'''


def test_bash_syntax_errors_are_reported_at_their_line_and_nothing_runs(project: Project):
    project.write("s.hcl", SYNTAX)
    proc = check(project)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        ".oj/runbooks/s.hcl:5: command 'c': bash: syntax error: unexpected end of file",
        ".oj/runbooks/s.hcl:11: local 'bad': bash: unexpected EOF while looking for matching "
        "`\"'",
        ".oj/runbooks/s.hcl:16: step 's' of pipeline 'p': bash: syntax error near unexpected "
        "token `)'",
        "3 problem(s) in 1 runbook file(s)"]
    for args in (("run", "c"), ("run", "p", "x")):
        proc = project.oj(*args, check=False)
        assert proc.returncode == 1 and "s.hcl:5: command 'c': bash:" in proc.stderr
    assert not (project.root / "ran-command").exists()
    assert not (project.root / "ran-step").exists()


def test_template_references_do_not_trip_the_bash_check(project: Project):
    project.write("t.hcl", '''\
        command "c" {
          args = "<x>"
          run = <<-SHELL
            echo ${args.x} "${var.x}" '${args.x}' $${HOME} ${HOME:-none} > out.txt
            shopt -s extglob
            case ${args.x} in @(a|b)) echo ab;; esac
          SHELL
        }
        ''')
    assert check(project).returncode == 0
    project.oj("run", "c", "a b")


# -- values ------------------------------------------------------------------------------------

# a zero retry cooldown: tests/test_interrupts.py, with the one-second one


def test_problems_point_at_the_field_say_the_type_and_come_in_line_order(project: Project):
    project.write("b.hcl", '''\
        worker "w" {
          source      = { queue = "nope" }
          handler     = { pipeline = "p" }
          concurrency = 1.5
        }
        queue "q" {
          retry = {
            attempts = "2"
            cooldown = "soon"
          }
        }
        ''')
    project.write("a.hcl", 'pipeline "p" {\n  vars = "x"\n  step "s" {\n    run = "true"\n'
                  '    on_done = { step = "t" }\n  }\n}\n')
    proc = check(project)
    assert proc.stderr.splitlines() == [
        ".oj/runbooks/a.hcl:2: pipeline field 'vars' is a string, expected a list",
        ".oj/runbooks/a.hcl:5: step 's' on_done step 't' is not defined in pipeline 'p'",
        ".oj/runbooks/b.hcl:2: worker 'w' source queue 'nope' is not defined",
        ".oj/runbooks/b.hcl:3: worker 'w' handler pipeline 'p' needs vars = [\"NAME\"] to "
        "receive the queue item",
        ".oj/runbooks/b.hcl:4: worker field 'concurrency' is a number with a fraction, expected "
        "a whole number",
        ".oj/runbooks/b.hcl:8: retry attempts is a string, expected a whole number >= 0",
        ".oj/runbooks/b.hcl:9: retry cooldown: invalid duration 'soon'; use e.g. \"30s\", "
        "\"5m\", \"1h30m\"",
        "7 problem(s) in 2 runbook file(s)"]
