"""Imports: libraries shipped with oj (``oj/NAME``) and project files by relative path."""

from __future__ import annotations

import os

import pytest

from ojd import project
from ojd.errors import RunbookError
from ojd.project import parse

GIT = """
const "check" { default = "true" }

queue "merges" {
  vars = ["branch"]
}

worker "merge" {
  source = { queue = "merges" }
  run    = { job = "merge" }
}

job "merge" {
  vars = ["mr"]
  step "merge" {
    run     = "git merge ${var.mr.branch}"
    on_done = { step = "check" }
  }
  step "check" { run = "${raw(const.check)}" }
}
"""

WOK = """
const "prefix" {}

command "fix" {
  args = "<description>"
  run  = "wok new bug ${args.description} -p ${const.prefix}"
}

job "merge" {
  step "s" { run = "true" }
}
"""


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A library directory with libraries 'git' and 'wok'."""
    for name, text in (("git", GIT), ("wok", WOK)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.hcl").write_text(text)
    monkeypatch.setattr(project, "LIBRARY_DIR", str(tmp_path))
    return tmp_path


def load(*files: tuple[str, str]):
    return parse([(name, text.encode()) for name, text in files])


def problems(*files: tuple[str, str]) -> list[str]:
    with pytest.raises(RunbookError) as e:
        load(*files)
    return e.value.problems


def test_an_import_with_an_alias_names_its_entities_alias_colon_name(library):
    rb = load(("rb.hcl", 'import "oj/git" {\n  alias = "git"\n'
                         '  const "check" { value = "make check" }\n}\n'))
    assert set(rb.workers) == {"git:merge"}
    assert rb.workers["git:merge"].queue == "git:merges"
    assert rb.workers["git:merge"].pipeline == "git:merge"
    assert set(rb.pipelines) == {"git:merge"}
    assert rb.pipelines["git:merge"].steps["check"].run == "make check"


def test_an_import_without_an_alias_keeps_names_and_defaults(library):
    rb = load(("rb.hcl", 'import "oj/git" {}\n'))
    assert set(rb.queues) == {"merges"}
    assert rb.pipelines["merge"].steps["check"].run == "true"


def test_a_required_const_missing_from_the_import_is_an_error_at_the_import(library):
    out = problems(("rb.hcl", '\nimport "oj/wok" { alias = "wok" }\n'))
    assert out == ["rb.hcl:2: const 'prefix' is required by oj/wok/main.hcl:2; set it in the "
                   'import: const "prefix" { value = "..." }']


def test_a_const_the_library_does_not_declare_is_an_error_at_its_line(library):
    out = problems(("rb.hcl", 'import "oj/git" {\n  const "chek" { value = "x" }\n}\n'))
    assert out == ["rb.hcl:2: const 'chek' is not declared by oj/git/main.hcl (its consts: "
                   "check)"]


def test_a_name_two_imports_define_is_an_error_at_the_second_import(library):
    out = problems(("rb.hcl", 'import "oj/git" {}\n\nimport "oj/wok" {\n'
                              '  const "prefix" { value = "oj" }\n}\n'))
    assert out == ["rb.hcl:3: import 'oj/wok' defines job 'merge', which rb.hcl:1 defines "
                   "too; give one of the imports an alias"]


def test_an_alias_settles_the_clash(library):
    rb = load(("rb.hcl", 'import "oj/git" {}\n\nimport "oj/wok" {\n  alias = "wok"\n'
                         '  const "prefix" { value = "oj" }\n}\n'))
    assert set(rb.pipelines) == {"merge", "wok:merge"}
    assert rb.commands["wok:fix"].run == "wok new bug ${args.description} -p oj"


def test_an_unknown_library_lists_the_available_ones(library):
    out = problems(("rb.hcl", 'import "oj/gti" {}\n'))
    assert out == ["rb.hcl:1: no library 'oj/gti'; available: oj/git, oj/wok"]


def test_a_project_file_is_imported_by_relative_path_and_not_loaded_twice():
    shared = ('const "greeting" {}\n'
              'job "hello" {\n  step "s" { run = "echo ${const.greeting}" }\n}\n')
    rb = load((".oj/runbooks/lib/hello.hcl", shared),
              (".oj/runbooks/main.hcl", 'import "./lib/hello.hcl" {\n  alias = "h"\n'
                                        '  const "greeting" { value = "hi" }\n}\n'))
    assert set(rb.pipelines) == {"h:hello"}
    assert rb.pipelines["h:hello"].steps["s"].run == "echo hi"


def test_an_import_cycle_is_an_error_at_the_import():
    out = problems(("a.hcl", 'import "./b.hcl" {}\njob "a" {\n  step "s" { run = "true" }\n}\n'),
                   ("b.hcl", 'job "b" {\n  step "s" { run = "true" }\n}\nimport "./a.hcl" {}\n'))
    assert out == ["b.hcl:4: import cycle: a.hcl -> b.hcl -> a.hcl; remove one of the imports"]


def test_an_import_of_a_missing_project_file_is_an_error():
    out = problems(("rb.hcl", 'import "./nope.hcl" {}\n'))
    assert out == ["rb.hcl:1: import './nope.hcl' names nope.hcl, which is not a runbook file "
                   "of the project; import a file beside the runbooks by its relative path, or "
                   'a library as "oj/NAME"']


def test_the_library_directory_ships_in_the_package():
    assert os.path.isdir(project.LIBRARY_DIR)
