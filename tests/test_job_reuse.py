"""A worker's job process runs several jobs in a row: each starts with the process as it was
forked (rlimits, nice, oom_score_adj), whatever a step did to its parent (``$PPID``)."""

from __future__ import annotations

import shutil
import subprocess
import threading

from conftest import OJD, Project, require, wait_until
from test_foreground import Foreground

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
      step "one" {
        run = <<-EOT
          echo "$PPID $(ulimit -Sn) $(ulimit -Hn) $(nice) $(cat /proc/self/oom_score_adj)" \
            >> ${invoke.dir}/out.txt
          if [ "${var.item.n}" = 1 ]; then
            CHANGE
          fi
        EOT
      }
    }
    """

CAP_SYS_NICE, CAP_SYS_RESOURCE = 23, 24


class Wrapped(Foreground):
    """A foreground worker started through ``wrapper`` (setpriv: fewer capabilities)."""

    def __init__(self, project: Project, *wrapper: str) -> None:
        self.proc = subprocess.Popen([*wrapper, OJD, "worker", "w", "--foreground"],
                                     cwd=project.root, env=project.env(), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def run_two(project: Project, change: str, *wrapper: str
            ) -> tuple[list[str], list[str], str]:
    """Job 1 makes ``change`` to its process, then job 2 runs (one slot: a backlog runs in
    one process where it can): what each step saw (its parent's pid, soft and hard nofile,
    nice, oom_score_adj), and the worker's output."""
    project.write("w.hcl", RUNBOOK.replace("CHANGE", change))
    for n in (1, 2):  # both waiting at the start: the runner freed by job 1 takes job 2
        project.oj("queue", "push", "q", f'{{"n": "{n}"}}')
    out = project.root / "out.txt"
    worker = Wrapped(project, *wrapper)
    try:
        wait_until(lambda: [j["status"] for j in project.json("job", "list")]  # type: ignore[union-attr]
                   == ["done", "done"], "both jobs to end")
        assert worker.proc.poll() is None, worker.output
    finally:
        worker.stop()
    first, second = (line.split() for line in out.read_text().splitlines())
    return first, second, worker.output


def capable(cap: int) -> bool:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("CapEff:"))
    return bool(int(line.split()[1], 16) >> cap & 1)


def test_a_reused_job_process_sets_back_what_a_step_changed_in_it(project: Project):
    first, second, output = run_two(
        project, "prlimit --pid $PPID --nofile=64: && renice -n 5 -p $PPID >/dev/null"
                 " && echo 500 > /proc/$PPID/oom_score_adj")
    # not soft nofile 64, not nice 5, not oom_score_adj 500
    assert second[1:] == first[1:], (first, second, output)
    assert first[3:] == ["0", "0"]
    # a priority raised back needs CAP_SYS_NICE: without it the runner is not reused
    assert (second[0] == first[0]) == capable(CAP_SYS_NICE), output


def test_a_job_process_that_cannot_be_set_back_is_not_reused(project: Project):
    # justified: dropping capabilities for the worker needs root and setpriv
    require(shutil.which("setpriv") is not None and capable(8),  # CAP_SETPCAP
            "dropping a capability needs setpriv and CAP_SETPCAP")
    first, second, output = run_two(
        project, "prlimit --pid $PPID --nofile=64:64",
        "setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource")
    assert second[1:] == first[1:], output
    assert second[0] != first[0], output  # a fresh fork ran job 2
    assert "its process is not reused: a step changed its nofile limit, which cannot be " \
        "set back without privilege" in output
