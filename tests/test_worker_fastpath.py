"""``oj worker start|wake NAME`` without click (oj/fastpath.py, oj/start.py).

The errors here are raised before systemd is asked anything, so these run without one; the
last tests start and wake a real unit in the sandbox of tests/sandbox.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_systemd_workers
from conftest import Project
from test_systemd_workers import UnitProject

# the sandbox's fixtures of test_systemd_workers: oj's units installed, one unit per test
unit_project = test_systemd_workers.unit_project

RUNBOOK = """
queue "jobs" {
  vars = ["n"]
}
worker "beta" {
  source  = { queue = "jobs" }
  handler = { pipeline = "p" }
}
worker "alpha" {
  source      = { queue = "jobs" }
  handler     = { pipeline = "p" }
  concurrency = 2
}
pipeline "p" {
  vars = ["item"]
  step "s" { run = "true" }
}
"""

# Runs oj's entry point in-process, then reports the exit status and which of the heavy
# modules the command imported: the fast path must import none of them.
HEAVY = ("click", "ojd.runbook.model", "ojd.runbook.hcl", "ojd.runbook.validate", "pickle",
         "lxml", "pystemd.base", "pprint", "dataclasses")
PROBE = f"""
import json, sys
from oj.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r} or m in {HEAVY!r})
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def probe(run, args: list[str]) -> tuple[int, list[str], str, str]:
    """(exit status, heavy modules imported, stdout, the rest of stderr)"""
    proc = run([sys.executable, "-c", PROBE, *args])
    *rest, last = proc.stderr.splitlines()
    report = json.loads(last)
    return report["code"], report["heavy"], proc.stdout, "\n".join(rest)


@pytest.fixture
def workers_project(project: Project) -> Project:
    project.write("w.hcl", RUNBOOK)
    return project


def local_run(p: Project):
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=p.root, env=p.env(), capture_output=True, text=True,
                              timeout=60)
    return run


def wal_events(state: Path) -> list[dict]:
    from ojd.store.wal import WalDirectory

    wal = WalDirectory(state / "wal", on_problem=lambda p: None)
    return [r.event for r in wal.records()]


@pytest.mark.parametrize("verb", ["start", "wake"])
def test_unknown_worker_lists_the_defined_ones_without_click(workers_project: Project, verb):
    p = workers_project
    p.oj("worker", verb, "nope", check=False)  # parses once; its cached index is read after
    code, heavy, out, err = probe(local_run(p), ["worker", verb, "nope"])
    assert code == 2
    assert err == "oj: unknown worker 'nope'; this project defines: alpha, beta"
    assert out == "" and heavy == []
    proc = p.oj("worker", verb, "nope", check=False)
    assert (proc.returncode, proc.stderr) == (2, err + "\n")
    assert not [e for e in wal_events(p.state) if e["type"].startswith("worker:")]


def test_project_option_before_the_command_is_understood(workers_project: Project,
                                                          tmp_path: Path):
    p = workers_project
    for args in (["--project", str(p.root)], [f"--project={p.root}"]):
        proc = p.oj(*args, "worker", "start", "nope", check=False, cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr == "oj: unknown worker 'nope'; this project defines: alpha, beta\n"


def test_click_path_gives_the_same_errors(workers_project: Project):
    """``--enable`` and ``--system`` are left to click, which calls the same function."""
    p = workers_project
    fast = p.oj("worker", "start", "nope", check=False)
    for options in (["--enable"], ["--system"]):
        slow = p.oj("worker", "start", *options, "nope", check=False)
        assert (slow.returncode, slow.stdout, slow.stderr) == (
            fast.returncode, fast.stdout, fast.stderr)
    usage = p.oj("worker", "start", check=False)  # no NAME: click's usage message
    assert usage.returncode == 2 and "Missing argument 'NAME'" in usage.stderr


def test_invalid_runbook_fails_with_file_and_line_before_anything_starts(
        workers_project: Project):
    p = workers_project
    p.oj("worker", "start", "nope", check=False)  # caches the valid runbook's index
    p.write("w.hcl", RUNBOOK.replace("concurrency = 2", "concurrency = 0"))
    for verb in ("start", "wake"):
        proc = p.oj("worker", verb, "alpha", check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith(".oj/runbooks/w.hcl:"), proc.stderr
        assert "concurrency" in proc.stderr and proc.stdout == ""
    p.write("bad.hcl", 'worker "x" {\n  source = {\n')
    proc = p.oj("worker", "start", "alpha", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith(".oj/runbooks/bad.hcl:")
    assert not [e for e in wal_events(p.state) if e["type"].startswith("worker:")]


def test_index_carries_the_workers_and_the_digest(workers_project: Project, tmp_path: Path):
    from ojd import project as projects

    root = str(workers_project.root)
    index = projects.load_index(root, str(tmp_path / "cache"))
    assert index["digest"] == projects.load(root).digest
    assert index["workers"] == {"alpha": {"queue": "jobs", "pipeline": "p", "concurrency": 2},
                                "beta": {"queue": "jobs", "pipeline": "p", "concurrency": 1}}
    assert projects.load_index(root, str(tmp_path / "cache")) == index  # read from the file


def test_sd_bus_binding_imports_without_pystemd_init_which_still_works_later():
    code = """
import sys
from ojd.systemd import Systemd
path = Systemd.unit_path("oj-worker@a.service")
assert path == b"/org/freedesktop/systemd1/unit/oj_2dworker_40a_2eservice", path
assert not {"lxml", "pystemd.base", "pprint", "dataclasses"} & set(sys.modules)
import pystemd
from pystemd.systemd1 import Unit
import pprint
print(pystemd.SDUnit is Unit, pystemd.dbuslib is sys.modules["pystemd.dbuslib"],
      pprint.pformat([1]) == "[1]", pystemd.dbuslib.pformat([1]) == "[1]")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["True"] * 4


def test_sd_bus_binding_with_pystemd_already_imported():
    code = """
import sys, pystemd
from ojd.systemd import Systemd, _dbuslib
assert sys.modules["pystemd"] is pystemd and _dbuslib() is pystemd.dbuslib
print(Systemd.unit_path("x.service").decode())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "/org/freedesktop/systemd1/unit/x_2eservice\n"


# -- against a real unit -------------------------------------------------------------------


def sandbox_run(p: UnitProject, cwd: Path | None = None):
    bindir = os.path.dirname(sys.executable)

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return p.sb.run(argv, cwd=str(cwd or p.root), check=False, timeout=120,
                        env={"OJ_STATE_DIR": str(p.state),
                             "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin"})
    return run


def test_fast_start_then_wake_of_a_real_unit(unit_project: UnitProject):
    p = unit_project
    code, heavy, out, err = probe(sandbox_run(p), ["worker", "start", p.worker])
    assert (code, out, err) == (0, f"Worker '{p.worker}' started\n", "")
    assert p.prop("ActiveState") == "active"
    pid = p.prop("MainPID")
    # a wake from elsewhere, naming the project: the runbook model is never loaded
    code, heavy, out, err = probe(sandbox_run(p, cwd=p.state.parent),
                                  ["--project", str(p.root), "worker", "wake", p.worker])
    assert (code, out, err) == (0, f"Worker '{p.worker}' was already running; woken\n", "")
    assert heavy == []
    assert p.prop("MainPID") == pid
    assert len(p.events("worker:woken")) == 1
    assert len(p.events("worker:started")) == 1
    [recorded] = p.events("worker:recorded")
    assert (recorded["queue"], recorded["pipeline"], recorded["concurrency"]) == (
        "jobs", "work", 1)
