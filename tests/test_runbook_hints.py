"""`oj runbook check` catches mistakes before they run: a misspelt item field, a pipeline a
worker and a command cannot share, a crontab schedule, a program not on the worker's PATH."""

from __future__ import annotations

import os
import stat

import pytest

from ojd.errors import RunbookError
from ojd.project import parse
from ojd.runbook.crontab import NoTranslation, systemd_spelling
from ojd.runbook.programs import programs
from ojd.worker_path import missing_program


def problems(text: str) -> list[str]:
    with pytest.raises(RunbookError) as e:
        parse([("rb.hcl", text.encode())])
    return e.value.problems


WORKER = """
queue "merges" {
  vars = ["branch", "title"]
}
worker "merge" {
  source  = { queue = "merges" }
  handler = { pipeline = "merge" }
}
pipeline "merge" {
  vars = ["req"]
  step "check" {
    run = <<-SHELL
      git checkout ${var.req.branch}
      echo ${var.req.brnch}
    SHELL
  }
}
"""


def test_a_misspelt_item_field_names_the_queue_field_it_meant():
    assert problems(WORKER) == [
        "rb.hcl:14: ${var.req.brnch}: queue 'merges' items (worker 'merge') have no field "
        "'brnch'; did you mean 'branch'?"]


def test_an_unknown_item_field_lists_the_fields_when_none_is_close():
    assert problems(WORKER.replace("req.brnch", "req.zzz")) == [
        "rb.hcl:14: ${var.req.zzz}: queue 'merges' items (worker 'merge') have no field "
        "'zzz'; their fields: branch, title"]


def test_item_fields_are_not_checked_when_the_queue_accepts_any_object():
    parse([("rb.hcl", WORKER.replace('vars = ["branch", "title"]', "").encode())])


SHARED = WORKER.replace("echo ${var.req.brnch}", "echo ${var.req.title}") + """
command "fix" {
  args = "<branch> <title>"
  run  = { pipeline = "merge" }
}
"""


def test_a_pipeline_a_worker_and_a_command_cannot_share_names_both_and_the_fix():
    [problem] = problems(SHARED)
    assert problem.startswith(
        "rb.hcl:21: pipeline 'merge' cannot serve both worker 'merge' (the queue item as var "
        "'req') and command 'fix' (its arguments (branch, title) as vars): command 'fix' "
        "gives no 'req'; ")
    assert "oj queue push merges --var KEY=${args.KEY}" in problem
    assert "a pipeline of its own" in problem


def test_a_command_whose_arguments_miss_a_pipeline_var_is_refused_before_it_runs():
    text = """
pipeline "build" {
  vars = ["name"]
  step "s" { run = "echo ${var.name}" }
}
command "build" {
  args = "<nme>"
  run  = { pipeline = "build" }
}
"""
    assert problems(text) == [
        "rb.hcl:8: command 'build' runs pipeline 'build', which needs var 'name', but gives its "
        "arguments (nme); did you mean 'nme'?; add <name> to its args or a default for it to "
        "the pipeline"]
    parse([("rb.hcl", text.replace("<nme>", "<name>").encode())])


@pytest.mark.parametrize("crontab,spelled", [
    ("*/5 * * * *", "*:0/5"),
    ("0 * * * *", "hourly"),
    ("30 2 * * *", "02:30"),
    ("0 9 * * 1-5", "Mon..Fri 09:00"),
    ("0 0 * * 0", "Sun 00:00"),
    ("0 9 1 * *", "*-*-1 09:00"),
    ("@daily", "daily"),
    ("@weekly", "Sun 00:00"),
])
def test_a_crontab_schedule_gets_the_systemd_spelling(crontab, spelled):
    assert systemd_spelling(crontab) == spelled
    text = f'cron "tick" {{\n  schedule = "{crontab}"\n  run = "true"\n}}\n'
    assert problems(text) == [
        f"rb.hcl:2: cron 'tick' schedule '{crontab}': this is crontab syntax; systemd's "
        f"calendar spells it schedule = \"{spelled}\" ('systemd-analyze calendar' shows when "
        "it runs)"]
    parse([("rb.hcl", text.replace(crontab, spelled).encode())])  # the hint is valid


@pytest.mark.parametrize("crontab,why", [
    ("0 9 1 * 1", "either the day of month or the weekday"),
    ("0-30/5 * * * *", "a stepped range (0-30/5) in the minute"),
    ("@reboot", "@reboot is no calendar time"),
])
def test_a_crontab_schedule_without_a_systemd_spelling_says_so(crontab, why):
    with pytest.raises(NoTranslation, match=why.replace("(", r"\(").replace(")", r"\)")):
        systemd_spelling(crontab)
    text = f'cron "tick" {{\n  schedule = "{crontab}"\n  run = "true"\n}}\n'
    [problem] = problems(text)
    assert "crontab syntax, which systemd's calendar cannot say directly: " in problem
    assert why in problem


def test_program_words_skip_builtins_functions_expansions_heredocs_and_paths():
    script = """set -e
make check && git push origin "$b"
x=$(jq -r .a f); FOO=1 mkae build
cat <<EOF
notacmd here
EOF
f() { helper; }
f
${var.tool} arg
"$HOME/bin/x"
if grep -q x y; then ./local.sh; fi
command curl -s | tee out >/dev/null # comment
"""
    assert programs(script) == [("make", 1), ("git", 1), ("jq", 2), ("mkae", 2), ("cat", 3),
                                ("helper", 6), ("grep", 10), ("curl", 11), ("tee", 11)]


def test_check_warns_of_programs_not_on_the_workers_path(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    text = """
pipeline "p" {
  step "s" {
    run = <<-SHELL
      mytool --check
      no-such-tool-3f9c build
    SHELL
  }
}
agent "resolver" {
  run = "claude-missing-7e1a --print"
}
command "local" {
  run = "only-in-my-shell-5d2b"
}
"""
    found: list[str] = []
    path = str(bindir) + os.pathsep + "/usr/bin:/bin"
    parse([("rb.hcl", text.encode())], found,
          missing_program=missing_program(path, "the system manager's PATH"))
    note = "which is not on the system manager's PATH; install it or give its full path"
    assert found == [
        f"rb.hcl:6: warning: step 's' of pipeline 'p' runs 'no-such-tool-3f9c', {note}",
        f"rb.hcl:11: warning: agent 'resolver' runs 'claude-missing-7e1a', {note}",
    ]


def test_oj_runbook_check_warns_of_a_missing_program_and_names_the_path_checked(project):
    project.write("p.hcl", 'pipeline "p" {\n  step "s" { run = "no-such-tool-3f9c x" }\n}\n')
    proc = project.oj("runbook", "check")
    warning, note = proc.stderr.splitlines()
    assert warning.startswith(".oj/runbooks/p.hcl:2: warning: step 's' of pipeline 'p' runs "
                              "'no-such-tool-3f9c', which is not on ")
    assert note.startswith("note: programs were looked up on ") and "PATH: " in note
    assert proc.stdout.splitlines()[-1].startswith("ok: 1 file(s)")
