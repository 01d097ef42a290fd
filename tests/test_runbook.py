"""Runbook validation: every problem at once, each with file:line and a fix."""

from __future__ import annotations

import os

import pytest

from ojd.errors import RunbookError
from ojd.project import parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def problems(text: str, name: str = "rb.hcl") -> list[str]:
    with pytest.raises(RunbookError) as e:
        parse([(name, text.encode())])
    return e.value.problems


def load(text: str):
    return parse([("rb.hcl", text.encode())])


GOOD = """
queue "merges" {
  type     = "persisted"
  vars     = ["branch", "title", "base"]
  defaults = { base = "main" }
  retry    = { attempts = 3, cooldown = "30s" }
}

worker "merge" {
  source      = { queue = "merges" }
  handler     = { pipeline = "merge" }
  concurrency = 2
  poll        = "1m"
}

pipeline "merge" {
  vars = ["mr"]
  locals {
    repo = "$(pwd)"
  }
  step "first" {
    run     = "echo ${var.mr.branch} ${local.repo}"
    on_done = { step = "second" }
  }
  step "second" {
    run = "true"
  }
}
"""


def test_valid_runbook_becomes_a_model():
    rb = load(GOOD)
    q = rb.queues["merges"]
    assert (q.vars, q.defaults, q.retry_attempts, q.retry_cooldown) == (
        ("branch", "title", "base"), {"base": "main"}, 3, 30.0)
    w = rb.workers["merge"]
    assert (w.queue, w.pipeline, w.concurrency, w.poll) == ("merges", "merge", 2, 60.0)
    p = rb.pipelines["merge"]
    assert p.first_step == "first" and p.steps["first"].on_done == "second"
    assert p.locals == (("repo", "$(pwd)"),)
    assert rb.files == {"rb.hcl": ["queue merges", "worker merge", "pipeline merge"]}


@pytest.mark.parametrize("name", ["merge.hcl", "bugfix.hcl", "build.hcl", "janitor.hcl"])
def test_example_runbooks_are_valid(name):
    with open(os.path.join(REPO, "runbooks", name), "rb") as f:
        parse([(name, f.read())])


def test_all_example_runbooks_load_together():
    sources = []
    for name in ("merge.hcl", "bugfix.hcl", "build.hcl"):
        with open(os.path.join(REPO, "runbooks", name), "rb") as f:
            sources.append((name, f.read()))
    rb = parse(sources)
    assert set(rb.workers) == {"merge", "fix"}


def test_unknown_field_is_reported_with_line_and_suggestion():
    out = problems('queue "q" {\n  type = "persisted"\n  retyr = { attempts = 1 }\n}\n')
    assert out == ["rb.hcl:3: unknown field 'retyr' in queue; did you mean 'retry'?"]


def test_unknown_block_is_reported():
    out = problems('pipelin "p" {\n}\n')
    assert out[0].startswith("rb.hcl:1: unknown block 'pipelin' at the top level")
    assert "did you mean 'pipeline'" in out[0]


def test_wrong_type_is_reported():
    out = problems('worker "w" {\n  source = { queue = "q" }\n  handler = { pipeline = "p" }\n'
                   '  concurrency = "two"\n}\nqueue "q" {}\n'
                   'pipeline "p" {\n vars = ["x"]\n step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:4: worker field 'concurrency' is a string, expected a whole number"]


def test_concurrency_zero_is_rejected():
    out = problems('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
                   '  handler = { pipeline = "p" }\n  concurrency = 0\n}\n'
                   'pipeline "p" {\n vars = ["x"]\n step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:5: worker 'w' concurrency must be at least 1, not 0"]


def test_zero_and_unparsable_durations_are_rejected():
    out = problems('worker "w" {\n  source = { queue = "q" }\n  handler = { pipeline = "p" }\n'
                   '  poll = "0s"\n}\nqueue "q" {}\npipeline "p" {\n  vars = ["x"]\n'
                   '  step "s" { run = "true" }\n}\n'
                   'queue "r" {\n  retry = { attempts = 1, cooldown = "soon" }\n}\n')
    assert [p.split(":")[1] for p in out] == ["4", "12"]
    assert "poll" in out[0] and "cooldown" in out[1]


def test_a_zero_retry_cooldown_means_retry_at_once():
    rb = load('queue "q" {\n  retry = { attempts = 1, cooldown = "0s" }\n}\n')
    assert rb.queues["q"].retry_cooldown == 0.0
    assert problems('queue "q" {\n  retry = { cooldown = "-1s" }\n}\n')[0].startswith("rb.hcl:2:")


def test_missing_references_are_reported_with_suggestions():
    text = ('queue "merges" {}\n'
            'worker "w" {\n  source = { queue = "merge" }\n  handler = { pipeline = "pipe" }\n}\n'
            'pipeline "pipeline" {\n  vars = ["x"]\n  step "a" {\n    run = "true"\n'
            '    on_done = { step = "bb" }\n    on_fail = { step = "c" }\n  }\n'
            '  step "b" {\n    run = { agent = "nobody" }\n  }\n}\n')
    out = problems(text)
    assert "rb.hcl:3: worker 'w' source queue 'merge' is not defined; did you mean 'merges'?" \
        in out
    assert any(p.startswith("rb.hcl:4: worker 'w' handler pipeline 'pipe' is not defined")
               for p in out)
    assert any(p.startswith("rb.hcl:10: step 'a' on_done step 'bb' is not defined") and
               "did you mean 'b'" in p for p in out)
    assert any(p.startswith("rb.hcl:11: step 'a' on_fail step 'c'") for p in out)
    assert any(p.startswith("rb.hcl:14: step 'b' agent 'nobody' is not defined") for p in out)


def test_duplicate_names_across_files_name_the_first_definition():
    with pytest.raises(RunbookError) as e:
        parse([("a.hcl", b'queue "q" {}\n'), ("b.hcl", b'\n\nqueue "q" {}\n')])
    assert e.value.problems == [
        "b.hcl:3: queue 'q' is already defined at a.hcl:1; rename one of them"]


def test_bad_args_spec_is_reported():
    out = problems('command "c" {\n  args = "[opt] <req>"\n  run = "true"\n}\n')
    assert out[0].startswith("rb.hcl:2: command 'c' args:")


def test_template_reference_to_undeclared_local_or_var_is_reported():
    out = problems('pipeline "p" {\n  vars = ["mr"]\n  step "s" {\n'
                   '    run = "echo ${local.nope} ${var.mrr.x} ${item.id}"\n  }\n}\n')
    assert any("${local.nope}: 'nope' is not defined" in p for p in out)
    assert any("${var.mrr.x}: 'mrr' is not defined; did you mean 'mr'?" in p for p in out)
    assert any("${item.id} cannot be used here" in p for p in out)


def test_every_problem_is_reported_at_once():
    text = ('queue "q" {\n  type = "weird"\n  bogus = 1\n}\n'
            'worker "w" {\n  source = { queue = "q" }\n  handler = { pipeline = "p" }\n'
            '  concurrency = 0\n}\n')
    assert len(problems(text)) >= 4


def test_syntax_error_is_reported_with_file_line_and_column():
    out = problems('queue "q" {\n  type = \n}\n', name=".oj/runbooks/x.hcl")
    assert out[0].startswith(".oj/runbooks/x.hcl:2:")


def test_worker_handler_pipeline_needs_a_var_for_the_item():
    out = problems('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
                   '  handler = { pipeline = "p" }\n}\npipeline "p" {\n'
                   '  step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:4: worker 'w' handler pipeline 'p' needs vars = [\"NAME\"] to "
                   "receive the queue item"]


def test_external_queue_needs_list_and_take():
    out = problems('queue "e" {\n  type = "external"\n  list = "echo []"\n}\n')
    assert out == ["rb.hcl:1: external queue 'e' needs both 'list' and 'take'"]


def test_agent_action_must_be_known():
    out = problems('agent "a" {\n  run = "x"\n  on_idle = { action = "nudg" }\n}\n')
    assert "did you mean 'nudge'" in out[0] and out[0].startswith("rb.hcl:3:")


@pytest.mark.parametrize("name", ["a/b", "w w", "-x", ""])
def test_worker_name_must_fit_a_unit_instance_name(name):
    out = problems(f'queue "q" {{}}\nworker "{name}" {{\n  source = {{ queue = "q" }}\n'
                   '  handler = { pipeline = "p" }\n}\npipeline "p" {\n  vars = ["x"]\n'
                   '  step "s" { run = "true" }\n}\n')
    assert any(p.startswith("rb.hcl:2:") and ("worker name" in p or "needs exactly one name"
                                              in p) for p in out)


def test_handler_pipeline_vars_after_the_first_need_defaults():
    text = ('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
            '  handler = { pipeline = "p" }\n}\npipeline "p" {\n  vars = ["item", "mode"]\n'
            '  step "s" { run = "true" }\n}\n')
    assert problems(text) == ["rb.hcl:4: worker 'w' handler pipeline 'p' var 'mode' needs a "
                              "default (only the first var receives the queue item)"]
    load(text.replace('vars = ["item", "mode"]', 'vars = ["item", "mode"]\n'
                      '  defaults = { mode = "fast" }'))


def warnings(text: str) -> list[str]:
    found: list[str] = []
    parse([("rb.hcl", text.encode())], found)
    return found


def test_check_warns_where_bash_reads_a_value_again_or_runs_it():
    text = """
command "c" {
  args = "<n> <cmd>"
  run  = "[[ ${args.n} -gt 0 ]] && ${args.cmd}"
}
queue "ext" {
  type = "external"
  list = "echo []"
  take = "let n=${item.n}"
}
pipeline "p" {
  vars = ["it"]
  locals {
    next  = "$(( ${var.it.n} + 1 ))"
    label = "n=${var.it.n}"
  }
  step "s" {
    run = <<-SHELL
      echo "${var.it.title}"
      ${raw(var.it.cmd)} | tee log
      printf -v ${var.it.name} %s x
      x=abc; echo "${x/b/${var.it.title}}"
    SHELL
  }
}
"""
    found = [w.split(": only")[0].split(": oj quotes")[0] for w in warnings(text)]
    assert found == [
        "rb.hcl:4: warning: command 'c': ${args.n} is in shell arithmetic ([[ ... -gt ... ]]),"
        " which bash evaluates again",
        "rb.hcl:4: warning: command 'c': ${args.cmd} is the first word of a command",
        "rb.hcl:9: warning: queue 'ext' take: ${item.n} is in shell arithmetic (let), which bash"
        " evaluates again",
        "rb.hcl:14: warning: pipeline 'p' local 'next': ${var.it.n} is in shell arithmetic "
        "($((...))), which bash evaluates again",
        "rb.hcl:21: warning: step 's': ${var.it.name} is a variable name (printf -v NAME), where "
        "bash evaluates an index a[...]",
        "rb.hcl:22: warning: step 's': ${var.it.title} is in a pattern or replacement "
        '(${x/...} in "..."), where bash runs <(...)',
    ]
    assert "write ${raw(args.cmd)}" in warnings(text)[1]
    assert "p" in load(text).pipelines  # warnings do not stop the runbook from loading


def test_check_warns_of_files_a_runbook_runs_or_reads_outside_the_project():
    text = """
pipeline "p" {
  step "s" {
    run = <<-SHELL
      ./scripts/ok.sh "$(scripts/version.sh)"
      ../tools/deploy.sh --now
      bash /opt/tools/x.sh
      /usr/bin/env true
      . ${invoke.dir}/../env.sh
    SHELL
  }
}
agent "a" {
  run         = "bash ../agent.sh"
  prompt_file = "/srv/prompts/task.md"
}
"""
    outside = (", outside the project: a worker refuses it when someone but root and the "
               "worker's user could change it; keep it in the project")
    assert warnings(text) == [
        f"rb.hcl:6: warning: step 's' of pipeline 'p' runs ../tools/deploy.sh{outside}",
        f"rb.hcl:7: warning: step 's' of pipeline 'p' runs /opt/tools/x.sh{outside}",
        f"rb.hcl:9: warning: step 's' of pipeline 'p' runs ${{invoke.dir}}/../env.sh{outside}",
        f"rb.hcl:14: warning: agent 'a' runs ../agent.sh{outside}",
        f"rb.hcl:15: warning: agent 'a' prompt_file /srv/prompts/task.md{outside}",
    ]


def test_example_runbooks_have_no_warnings():
    found: list[str] = []
    sources = []
    for name in ("merge.hcl", "bugfix.hcl", "build.hcl"):
        with open(os.path.join(REPO, "runbooks", name), "rb") as f:
            sources.append((name, f.read()))
    parse(sources, found)
    assert found == []


@pytest.mark.parametrize("value,got", [("0", "a whole number"), ("false", "true or false"),
                                       ('""', "an empty string"), ("1.5", "a number with a "
                                                                          "fraction")])
def test_a_list_of_names_holding_anything_but_a_name_is_refused(value: str, got: str):
    out = problems(f'queue "q" {{\n  vars = ["a", {value}]\n}}\n')
    assert out == [f"rb.hcl:2: 'vars' must be a list of names; it holds {got}"]


@pytest.mark.parametrize("name", ["rb.hcl", "rb.toml"])
def test_a_template_nested_50000_deep_is_one_problem_at_its_line(name: str):
    """Expansions nest at most 32 deep, as HCL's ``${...}`` do, in heredocs and TOML strings
    too: one line where the level past the limit opens, found in one pass over the text (as
    `oj runbook check` checks it: shell warnings included)."""
    deep = "${X:-" * 50_000 + "x" + "}" * 50_000
    if name == "rb.hcl":
        text, line = ('command "c" {\n  args = ""\n  run  = <<-SHELL\n    echo a\n'
                      f'    echo {deep}\n  SHELL\n}}\n'), 5
    else:
        text, line = f'[command.c]\nargs = ""\nrun = "echo {deep}"\n', 3
    found: list[str] = []
    with pytest.raises(RunbookError) as e:
        parse([(name, text.encode())], found)
    assert e.value.problems == [f"{name}:{line}: ${{...}} and $(...) nested more than 32 deep; "
                                "flatten it"]
    assert found == []
