"""Delayed items, priorities, paused queues and bulk pushes through the installed CLI and
real foreground workers, on both stores."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Project, asleep_in, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }
    queue "urgent" {
      vars     = ["n"]
      priority = 3
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    pipeline "p" {
      vars = ["item"]
      step "go" {
        run = "echo ${var.item.n} >> ${invoke.dir}/ran.txt"
      }
    }
    """


@pytest.fixture
def proj(project: Project) -> Project:
    project.write("q.hcl", RUNBOOK)
    return project


def ran(p: Project) -> list[str]:
    path = p.root / "ran.txt"
    return path.read_text().split() if path.exists() else []


class Worker:
    """A foreground worker, stopped at the end."""

    def __init__(self, p: Project, tmp: Path) -> None:
        self.p = p
        self.proc = p.ojd("worker", "w", "--foreground")
        wait_until(lambda: p.events("worker:started"), "the worker to start")

    def idle(self) -> None:
        wait_until(lambda: asleep_in(self.proc.pid, "poll"), "the worker to wait")

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        assert "Traceback" not in out, out
        return out


@pytest.fixture
def worker(proj: Project, tmp_path: Path):
    w = Worker(proj, tmp_path)
    yield w
    w.stop()


def test_a_delayed_item_runs_when_due_though_the_worker_polls_hourly(proj, worker):
    worker.idle()
    pushed = time.time()
    item = proj.oj("queue", "push", "q", "--var", "n=1", "--in", "2s").stdout.strip()
    [listed] = proj.items("q")
    assert listed["id"] == item and listed["due"] == pytest.approx(pushed + 2, abs=1)
    table = proj.oj("queue", "list", "q").stdout
    assert "DUE" in table and re.search(r" in ([0-9]+ms|[12]s) ", table), table
    assert ran(proj) == []
    wait_until(lambda: ran(proj) == ["1"], "the item to run when due", timeout=10)
    assert time.time() >= listed["due"]


def test_an_earlier_delayed_push_wakes_the_worker_sleeping_for_a_later_one(proj, worker):
    proj.oj("queue", "push", "q", "--var", "n=late", "--in", "1h")
    worker.idle()
    proj.oj("queue", "push", "q", "--var", "n=soon", "--in", "1s")
    wait_until(lambda: ran(proj) == ["soon"], "the earlier item to run", timeout=10)
    assert [i["status"] for i in proj.items("q") if i["data"]["n"] == "late"] == ["pending"]


def test_a_time_already_past_runs_now_and_an_at_with_an_offset_is_kept(proj, worker):
    worker.idle()
    proj.oj("queue", "push", "q", "--var", "n=past", "--at", "2001-01-01T00:00")
    wait_until(lambda: ran(proj) == ["past"], "the past-due item to run", timeout=10)
    proj.oj("queue", "push", "q", "--var", "n=xmas", "--at", "2099-12-24T09:00+01:00")
    [item] = [i for i in proj.items("q") if i["data"]["n"] == "xmas"]
    assert item["due"] == datetime(2099, 12, 24, 8, tzinfo=UTC).timestamp()
    shown = proj.oj("queue", "show", item["id"]).stdout
    assert "due:" in shown and " in " in shown


def test_a_bad_time_is_one_line_naming_the_forms_and_queues_nothing(proj):
    r = proj.oj("queue", "push", "q", "--var", "n=1", "--at", "tomorrow", check=False)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "2026-12-24T09:00" in r.stderr, r.stderr
    r = proj.oj("queue", "push", "q", "--var", "n=1", "--in", "-5m", check=False)
    assert r.returncode != 0 and "--in expects a duration" in r.stderr, r.stderr
    assert proj.items("q") == []


def test_items_are_taken_by_priority_then_age_and_a_queue_has_a_default(proj):
    proj.oj("queue", "push", "q", "--var", "n=plain")
    proj.oj("queue", "push", "q", '{"n": "high"}', "--priority", "7")
    proj.oj("queue", "push", "q", "-", "--priority", "7", input='{"n": "high-too"}')
    proj.oj("queue", "push", "q", "--var", "n=low", "--priority", "-2")
    by_id = {i["data"]["n"]: i["priority"] for i in proj.items("q")}
    assert by_id == {"plain": 0, "high": 7, "high-too": 7, "low": -2}
    assert "PRIORITY" in proj.oj("queue", "list", "q").stdout
    proj.oj("queue", "push", "urgent", "--var", "n=u")
    assert [i["priority"] for i in proj.items("urgent")] == [3]
    # one slot, taken one at a time: the order of the takes is the order of the runs
    out, _ = proj.ojd("worker", "w", "--foreground", "--until-idle").communicate(timeout=60)
    assert "Traceback" not in out, out
    assert ran(proj) == ["high", "high-too", "plain", "low"]


def test_a_priority_that_is_not_a_whole_number_is_refused_and_queues_nothing(proj):
    r = proj.oj("queue", "push", "q", "--var", "n=1", "--priority", "high", check=False)
    assert r.returncode == 2 and "--priority" in r.stderr, r.stderr
    assert proj.items("q") == []


def test_a_paused_queue_takes_pushes_runs_nothing_and_drains_on_resume(proj, worker):
    worker.idle()
    assert "paused queue 'q'" in proj.oj("queue", "pause", "q").stdout
    assert "already paused" in proj.oj("queue", "pause", "q").stdout
    for n in range(3):
        proj.oj("queue", "push", "q", "--var", f"n={n}")
    [row] = [r for r in proj.json("queue", "list") if r["name"] == "q"]
    assert row["paused"] is True and row["pending"] == 3
    assert "q (paused)" in proj.oj("queue", "list").stdout
    assert "q (paused)" in proj.oj("status").stdout
    assert "q (paused)" in proj.oj("worker", "list").stdout
    # each push woke the worker, which polled and went back to sleep taking nothing
    wait_until(lambda: len(proj.events("queue:pushed")) == 3, "the pushes")
    worker.idle()
    assert ran(proj) == [] and {i["status"] for i in proj.items("q")} == {"pending"}
    proj.oj("queue", "resume", "q")
    wait_until(lambda: sorted(ran(proj)) == ["0", "1", "2"], "the queue to drain", timeout=15)
    assert "not paused" in proj.oj("queue", "resume", "q").stdout


def test_pausing_an_unknown_queue_is_one_line_naming_the_known_ones(proj):
    r = proj.oj("queue", "pause", "nope", check=False)
    assert r.returncode == 2 and "unknown queue 'nope'" in r.stderr, r.stderr


def test_lines_queue_every_item_in_one_append_each_deduplicated(proj):
    proj.oj("queue", "push", "q", "--var", "n=0")
    lines = '{"n": "0"}\n{"n": "1"}\n\n{"n": "2"}\n{"n": "1"}\n'
    r = proj.oj("queue", "push", "q", "--lines", "-", "--priority", "4", "--in", "1h",
                input=lines)
    ids = r.stdout.split()
    assert len(ids) == 4 and ids[1] == ids[3] and len(set(ids)) == 3
    assert "2 of the 4 items were already queued" in r.stderr, r.stderr
    pushed = proj.events("queue:pushed")[1:]
    assert [e["data"]["n"] for e in pushed] == ["1", "2"]
    assert len({e["ts"] for e in pushed}) == 1  # one append
    assert {e["priority"] for e in pushed} == {4} and all(e["due"] > time.time() for e in pushed)


def test_lines_from_a_file_take_each_var_and_a_bad_line_queues_nothing(proj):
    path = proj.root / "items.jsonl"
    path.write_text('{"n": "a"}\n{"n": "b"}\n')
    assert len(proj.oj("queue", "push", "q", "--lines", str(path)).stdout.split()) == 2
    path.write_text('{"n": "c"}\n{"n": "d", "extra": 1}\n')
    r = proj.oj("queue", "push", "q", "--lines", str(path), check=False)
    assert r.returncode == 2 and r.stderr.startswith("oj: line 2: "), r.stderr
    assert "no var 'extra'" in r.stderr and "nothing was queued" in r.stderr
    r = proj.oj("queue", "push", "q", "--lines", "-", input='{"x": 1}\n', check=False)
    assert r.returncode == 2 and "line 1: " in r.stderr
    assert sorted(i["data"]["n"] for i in proj.items("q")) == ["a", "b"]
    r = proj.oj("queue", "push", "q", "--lines", str(proj.root / "missing"), check=False)
    assert r.returncode == 2 and "cannot read" in r.stderr
