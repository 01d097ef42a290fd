"""Upstream Odd Jobs' own runbooks (tests/data/upstream, at d758f35) load unchanged, each in
a project of its own: no problems, only warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ojd.errors import RunbookError
from ojd.project import libraries, parse

DATA = Path(__file__).with_name("data") / "upstream"
FILES = sorted(p.relative_to(DATA).as_posix() for p in DATA.rglob("*.hcl"))
NEEDS_LIBRARIES = ".oj/runbooks/base.hcl"  # imports oj/claude, oj/git, oj/wok


def load(name: str) -> tuple[object, list[str]]:
    warnings: list[str] = []
    display = f".oj/runbooks/{Path(name).name}"
    return parse([(display, (DATA / name).read_bytes())], warnings), warnings


@pytest.mark.parametrize("name", [f for f in FILES if f != NEEDS_LIBRARIES])
def test_an_upstream_runbook_loads_without_problems(name: str):
    runbook, _warnings = load(name)
    assert runbook.commands or runbook.pipelines  # type: ignore[attr-defined]


def test_the_files_are_all_there():
    assert len(FILES) == 15


def test_sibling_consts_are_warnings_not_errors():
    _runbook, warnings = load("library/github/bug.hcl")
    assert any("const 'blocked' is not defined in this file" in w for w in warnings)


def test_upstreams_merge_queue_loads_as_jobs_workers_and_queues():
    runbook, _ = load("library/git/merge.hcl")
    assert set(runbook.pipelines) == {"merge", "merge-conflict"}  # type: ignore[attr-defined]
    assert runbook.workers["merge"].pipeline == "merge"  # type: ignore[attr-defined]
    merge = runbook.pipelines["merge"]  # type: ignore[attr-defined]
    assert (merge.workspace, merge.on_cancel) == ("ephemeral", "cleanup")
    assert (merge.steps["push"].on_fail, merge.steps["push"].on_fail_attempts) == ("init", 3)


def test_upstreams_project_runbook_loads_once_the_libraries_it_imports_ship():
    if {"claude", "git", "wok"} <= set(libraries()):
        load(NEEDS_LIBRARIES)
        return
    with pytest.raises(RunbookError) as e:  # until then, those are its only problems
        load(NEEDS_LIBRARIES)
    assert all("no library 'oj/" in p for p in e.value.problems), e.value.problems
