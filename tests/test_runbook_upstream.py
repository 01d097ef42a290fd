"""Upstream Odd Jobs' spelling of the runbook language loads into oj's one model."""

from __future__ import annotations

import pytest

from ojd.errors import RunbookError
from ojd.project import parse


def problems(text: str, name: str = "rb.hcl") -> list[str]:
    with pytest.raises(RunbookError) as e:
        parse([(name, text.encode())])
    return e.value.problems


def load(text: str, name: str = "rb.hcl"):
    return parse([(name, text.encode())])


UPSTREAM = """
queue "merges" {
  vars = ["branch"]
}

worker "merge" {
  source = { queue = "merges" }
  run    = { job = "merge" }
}

command "build" {
  args = "<name>"
  run  = { job = "build" }
}

cron "tidy" {
  interval = "1h"
  run      = { job = "tidy" }
}

job "merge" {
  vars = ["mr"]
  step "merge" { run = "echo ${var.mr.branch}" }
}

job "build" {
  vars = ["name"]
  step "go" { run = "echo ${var.name}" }
}

job "tidy" {
  step "go" { run = "true" }
}
"""


def test_job_blocks_load_as_pipelines_and_run_job_references_them():
    rb = load(UPSTREAM)
    assert set(rb.pipelines) == {"merge", "build", "tidy"}
    assert rb.pipelines["merge"].first_step == "merge"
    assert rb.pipelines["merge"].spelling == "job"
    assert rb.workers["merge"].pipeline == "merge"
    assert rb.commands["build"].pipeline == "build"
    assert rb.crons["tidy"].pipeline == "tidy"
    assert rb.files["rb.hcl"][-1] == "job tidy"


def test_both_spellings_load_into_one_model():
    oj = load('pipeline "p" {\n  vars = ["x"]\n  step "s" { run = "true" }\n}\n')
    upstream = load('job "p" {\n  vars = ["x"]\n  step "s" { run = "true" }\n}\n')
    assert oj.pipelines["p"].steps == upstream.pipelines["p"].steps
    assert oj.pipelines["p"].vars == upstream.pipelines["p"].vars


def test_handler_and_run_can_be_mixed_with_either_word():
    rb = load('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
              '  handler = { job = "p" }\n}\npipeline "p" {\n  vars = ["x"]\n'
              '  step "s" { run = "true" }\n}\n')
    assert rb.workers["w"].pipeline == "p"


def test_toml_job_tables_load_as_pipelines():
    rb = load('[job.build]\nvars = ["name"]\n\n[[job.build.step]]\nname = "go"\n'
              'run = "echo ${var.name}"\n\n[command.build]\nargs = "<name>"\n'
              'run = { job = "build" }\n', "rb.toml")
    assert rb.commands["build"].pipeline == "build"
    assert rb.pipelines["build"].spelling == "job"


def test_problems_speak_the_job_spelling_the_file_used():
    out = problems('job "j" {\n  vars = ["x"]\n}\n')
    assert out == ["rb.hcl:1: job 'j' has no steps; add step \"NAME\" { run = \"...\" }"]
    out = problems('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
                   '  run = { job = "nope" }\n}\n')
    assert out == ["rb.hcl:4: worker 'w' handler job 'nope' is not defined"]
    out = problems('job "j" {\n  step "a" {\n    run = "true"\n    on_done = { step = "b" }\n'
                   '  }\n}\n')
    assert out == ["rb.hcl:4: step 'a' on_done step 'b' is not defined in job 'j'"]


def test_a_job_and_a_pipeline_of_one_name_collide():
    out = problems('pipeline "p" {\n  step "s" { run = "true" }\n}\n'
                   'job "p" {\n  step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:4: job 'p' is already defined at rb.hcl:1; rename one of them"]


def test_worker_with_both_handler_and_run_is_refused():
    out = problems('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n'
                   '  handler = { pipeline = "p" }\n  run = { job = "p" }\n}\n'
                   'job "p" {\n  vars = ["x"]\n  step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:5: worker 'w' has both 'handler' and 'run'; keep one of them"]


def test_worker_without_handler_names_both_spellings():
    out = problems('queue "q" {}\nworker "w" {\n  source = { queue = "q" }\n}\n')
    assert out == ["rb.hcl:2: worker 'w' needs 'handler' ({ pipeline = \"NAME\" }) or "
                   "'run' ({ job = \"NAME\" })"]


def test_run_reference_with_an_unknown_key_names_both_words():
    out = problems('command "c" {\n  run = { task = "p" }\n}\n')
    assert out == ["rb.hcl:2: 'run' must be { pipeline = \"NAME\" } or { job = \"NAME\" }; "
                   "it has 'task'"]


def load_warned(text: str) -> tuple[object, list[str]]:
    warnings: list[str] = []
    return parse([("rb.hcl", text.encode())], warnings), warnings


def test_const_default_is_pasted_quoted_and_raw():
    rb = load('const "check" { default = "make check" }\n'
              'job "j" {\n  step "s" {\n    run = "echo ${const.check}; ${raw(const.check)}"\n'
              '  }\n}\n')
    assert rb.pipelines["j"].steps["s"].run == "echo 'make check'; make check"


def test_const_value_of_one_word_stays_unquoted():
    rb = load('const "prefix" { value = "oj" }\n'
              'queue "q" {\n  type = "external"\n  list = "wok ready -p ${const.prefix}"\n'
              '  take = "true"\n}\n')
    assert rb.queues["q"].list_cmd == "wok ready -p oj"


def test_const_conditionals_keep_the_branch_whose_condition_holds():
    text = ('const "check" { default = "true" }\n'
            'job "j" {\n  step "s" {\n    run = <<-SHELL\n'
            '%{ if const.check != "true" ~}\n    ${raw(const.check)}\n'
            '%{ else ~}\n    echo no check\n%{ endif ~}\n    SHELL\n  }\n}\n')
    rb = load(text)
    assert rb.pipelines["j"].steps["s"].run.strip() == "echo no check"
    rb = load(text.replace('default = "true"', 'default = "make test"'))
    assert rb.pipelines["j"].steps["s"].run.strip() == "make test"


def test_a_required_const_of_a_file_not_imported_renders_empty_with_a_warning():
    rb, warnings = load_warned('\nconst "prefix" {}\njob "j" {\n'
                               '  step "s" { run = "wok ready -p ${const.prefix}" }\n}\n')
    assert rb.pipelines["j"].steps["s"].run == "wok ready -p ''"
    assert warnings == ["rb.hcl:2: warning: const 'prefix' has no value and renders empty; "
                        "import the file and set it, or give it value = \"...\" or "
                        "default = \"...\""]


def test_const_with_an_unknown_field_is_an_error():
    out = problems('const "c" {\n  valeu = "x"\n  default = "y"\n}\n'
                   'job "j" {\n  step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:2: unknown field 'valeu' in const; use value (fixed) or default "
                   "(an import may set it)"]


def test_a_const_only_a_sibling_defines_renders_empty_with_a_warning():
    rb, warnings = load_warned('job "j" {\n  step "s" {\n    run = <<-SHELL\n'
                               '      ${raw(const.blocked)}\n      true\n    SHELL\n  }\n}\n')
    assert rb.pipelines["j"].steps["s"].run.strip() == "true"
    assert warnings == ["rb.hcl:4: warning: const 'blocked' is not defined in this file; it "
                        "renders empty (a file that only a sibling's consts complete is "
                        "meant to be imported with them)"]


def test_slugs_drop_filler_words_and_cut_at_a_word_end():
    from ojd.runbook.jobnames import slug

    assert slug("Fix: the Login button!") == "fix-login-button"
    assert slug("fix fix  FIX") == "fix"
    assert slug("implement the new authentication subsystem everywhere") == \
        "implement-new-authentication"


def test_a_job_blocks_name_is_its_slug_and_nonce_without_the_project_name():
    from ojd.runbook.jobnames import display_name

    assert display_name("Merge: fix the login", "ab12cd34", "shop") == "merge-fix-login-ab12cd34"
    assert display_name("shop fix login", "ab12cd34", "shop") == "fix-login-ab12cd34"
    assert display_name("the", "ab12cd34", "shop") == "ab12cd34"


def test_a_command_names_its_job_after_its_name_argument_else_its_first():
    from ojd.runbook.jobnames import command_job_name

    assert command_job_name({"task": "x", "name": "test-feat"}, ("task", "name")) == "test-feat"
    assert command_job_name({"task": "x"}, ("task",)) == "x"
    assert command_job_name({}, ()) is None


def test_substrings_of_references_cut_by_characters():
    from ojd.runbook.template import references, render_shell, render_text

    ctx = {"var": {"title": "fix: the login button", "n": "ab"}}
    assert render_text("${var.title:0:3}|${var.title:5}|${var.n:1:9}", ctx) == \
        "fix|the login button|b"
    assert render_shell("git commit -m ${var.title:0:10}", ctx) == "git commit -m 'fix: the l'"
    assert references("${var.title:0:72} ${var.n}") == ["var.title", "var.n"]


def test_a_substring_of_an_unknown_var_is_reported_at_load():
    out = problems('job "j" {\n  vars = ["title"]\n'
                   '  step "s" { run = "echo ${var.titel:0:5}" }\n}\n')
    assert out == ["rb.hcl:3: ${var.titel}: 'titel' is not defined; did you mean 'title'?"]


def test_a_queues_poll_serves_its_workers_that_set_none():
    rb = load('queue "q" {\n  type = "external"\n  list = "echo []"\n  take = "true"\n'
              '  poll = "5s"\n}\nworker "a" {\n  source = { queue = "q" }\n'
              '  run = { job = "j" }\n}\nworker "b" {\n  source = { queue = "q" }\n'
              '  run = { job = "j" }\n  poll = "1m"\n}\n'
              'job "j" {\n  vars = ["x"]\n  step "s" { run = "true" }\n}\n')
    assert (rb.workers["a"].poll, rb.workers["b"].poll) == (5.0, 60.0)


def test_agent_triggers_in_block_form_and_a_gates_command():
    rb = load('agent "a" {\n  run = "claude"\n  on_idle {\n    action  = "nudge"\n'
              '    message = "keep going"\n  }\n'
              '  on_dead = { action = "gate", command = "test -f done" }\n}\n')
    agent = rb.agents["a"]
    assert (agent.on_idle["action"], agent.on_idle["message"]) == ("nudge", "keep going")
    assert (agent.on_dead["action"], agent.on_dead["run"]) == ("gate", "test -f done")


def test_on_fail_attempts_loads_and_a_bad_count_is_refused():
    text = ('job "j" {\n  step "a" {\n    run = "true"\n'
            '    on_fail = { step = "a", attempts = N }\n  }\n}\n')
    step = load(text.replace("N", "3")).pipelines["j"].steps["a"]
    assert (step.on_fail, step.on_fail_attempts) == ("a", 3)
    assert problems(text.replace("N", "0")) == [
        "rb.hcl:4: on_fail attempts must be at least 1, not 0"]


def test_a_steps_child_job_is_refused_in_one_line_naming_what_to_do():
    out = problems('job "a" {\n  step "s" {\n    run = { job = "b" }\n  }\n}\n'
                   'job "b" {\n  step "s" { run = "true" }\n}\n')
    assert out == ["rb.hcl:3: step 's' run = { job = ... } (a child job) is not something oj "
                   "runs yet; run it from the step instead: run = \"oj run COMMAND ...\" or oj "
                   "queue push"]
