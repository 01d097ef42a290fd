"""The operator's queue commands through the installed CLI: the queue overview of `oj queue
list`, `drain`, `prune`, and `done`/`fail` of an item whose job is gone, against a real WAL
and real foreground workers."""

from __future__ import annotations

import glob
import json
import os
import signal

import pytest
from conftest import Project, require, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    queue "merges" {
      vars  = ["branch"]
      retry = { attempts = 1, cooldown = "0s" }
    }
    queue "fragile" {
      vars = ["branch"]
    }
    queue "outside" {
      type = "external"
      list = "echo '[]'"
      take = "true"
    }
    queue "patient" {
      vars  = ["branch"]
      retry = { attempts = 1, cooldown = "1h" }
    }
    queue "unused" {
      vars = ["n"]
    }
    worker "merge" {
      source  = { queue = "merges" }
      handler = { pipeline = "merge" }
      poll    = "1h"
    }
    worker "merge-too" {
      source  = { queue = "merges" }
      handler = { pipeline = "merge" }
      poll    = "1h"
    }
    worker "patient" {
      source  = { queue = "patient" }
      handler = { pipeline = "merge" }
      poll    = "1h"
    }
    worker "breaker" {
      source  = { queue = "fragile" }
      handler = { pipeline = "merge" }
      poll    = "1h"
    }
    pipeline "merge" {
      vars = ["item"]
      step "go" {
        run = <<-SH
          case "${var.item.branch}" in
            slow*) sleep 60 ;;
            bad*) exit 3 ;;
          esac
          echo "${var.item.branch}" >> ${invoke.dir}/ran.txt
        SH
      }
    }
    """


@pytest.fixture
def proj(cli_project: Project) -> Project:
    cli_project.write("q.hcl", RUNBOOK)
    return cli_project


def push(p: Project, queue: str, branch: str) -> str:
    return p.oj("queue", "push", queue, "--var", f"branch={branch}").stdout.strip()


def drain_worker(p: Project, name: str, **env: str) -> None:
    out, _ = p.ojd("worker", name, "--foreground", "--until-idle", **env).communicate(timeout=60)
    assert "Traceback" not in out, out


def clock_behind(offset: str) -> dict[str, str]:
    """The environment of a process whose clock is ``offset`` behind (libfaketime): what it
    records happened that long ago, however slowly the test runs."""
    faked = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
    # justified: skipped only outside CI (require fails in CI; dev-setup installs it)
    require(bool(faked), "libfaketime is not installed (apt install faketime)")
    return {"LD_PRELOAD": faked[0], "FAKETIME": f"-{offset}"}


def statuses(p: Project) -> dict[str, str]:
    return {i["id"]: i["status"] for i in p.items()}


def one_line_error(proc, code: int, *parts: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr


# -- oj queue list -----------------------------------------------------------------------------


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_list_without_a_name_shows_every_queue_of_the_runbook_with_counts_and_workers(
        proj: Project):
    for b in ("a", "b", "bad-1"):
        push(proj, "merges", b)
    push(proj, "fragile", "bad-2")
    drain_worker(proj, "breaker")  # bad-2 goes dead at once: no retries on fragile
    rows = {r["name"]: r for r in proj.json("queue", "list")}  # type: ignore[union-attr]
    assert list(rows) == ["fragile", "merges", "outside", "patient", "unused"]
    assert rows["merges"] | {"project": None} == {
        "project": None, "name": "merges", "type": "persisted", "pending": 3, "failed": 0,
        "active": 0, "completed": 0, "dead": 0, "workers": ["merge", "merge-too"],
        "paused": False}
    assert rows["merges"]["project"] == str(proj.root)
    assert (rows["fragile"]["dead"], rows["fragile"]["pending"]) == (1, 0)
    assert rows["outside"]["type"] == "external" and rows["unused"]["workers"] == []
    table = proj.oj("queue", "list").stdout.splitlines()
    assert table[0].split() == ["PROJECT", "NAME", "TYPE", "PENDING", "ACTIVE", "DEAD",
                                "WORKERS"]
    merges = next(line for line in table if " merges " in line).split()
    assert merges == [str(proj.root), "merges", "persisted", "3", "0", "0", "merge,",
                      "merge-too"]
    assert next(line for line in table if " unused " in line).split()[-4:] == \
        ["0", "0", "0", "-"]


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_list_outside_a_project_shows_every_projects_queues_known_from_the_state(
        proj: Project, tmp_path):
    push(proj, "merges", "a")
    other = Project(tmp_path / "other", proj.state, url=proj.url)
    other.write("o.hcl", 'queue "jobs" {\n  vars = ["branch"]\n}\n')
    push(other, "jobs", "x")
    push(other, "jobs", "y")
    drain_worker(proj, "breaker")  # records itself; its queue has no items
    outside = proj.state.parent
    rows = json.loads(proj.oj("queue", "list", "-o", "json", cwd=outside).stdout)
    assert [(r["project"], r["name"], r["type"], r["pending"], r["workers"]) for r in rows] == [
        (str(other.root), "jobs", "persisted", 2, []),
        (str(proj.root), "fragile", None, 0, ["breaker"]),
        (str(proj.root), "merges", "persisted", 1, [])]
    table = proj.oj("queue", "list", cwd=outside).stdout
    assert f"{proj.root}  fragile  -" in table


def test_list_with_a_broken_runbook_warns_and_lists_the_queues_of_the_state(proj: Project):
    push(proj, "merges", "a")
    proj.write("broken.hcl", 'queue "x" {\n  retyr = 1\n}\n')
    proc = proj.oj("queue", "list", "-o", "json")
    assert proc.stderr.startswith("oj: warning: the runbook is invalid: ")
    assert "broken.hcl:2:" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert [(r["name"], r["type"], r["pending"]) for r in json.loads(proc.stdout)] == [
        ("merges", "persisted", 1)]


def test_list_with_a_name_or_items_flag_still_lists_items(proj: Project):
    a = push(proj, "merges", "a")
    f = push(proj, "fragile", "x")
    assert [i["id"] for i in proj.json("queue", "list", "merges")] == [a]  # type: ignore
    assert [i["id"] for i in proj.json("queue", "list", "--items")] == [a, f]  # type: ignore
    only = proj.json("queue", "list", "--status", "pending")  # --status lists items too
    assert [i["id"] for i in only] == [a, f]  # type: ignore[union-attr]


def test_an_unknown_queue_suggests_the_closest_name(proj: Project):
    for args in (("list", "merge"), ("drain", "merge"), ("prune", "merge")):
        proc = proj.oj("queue", *args, check=False)
        one_line_error(proc, 2, "unknown queue 'merge' (did you mean 'merges'?); this "
                       "project defines: fragile, merges, outside, patient, unused")


# -- oj queue drain -------------------------------------------------------------------------


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_drain_drops_pending_and_retry_waiting_items_in_one_append_and_keeps_the_rest(
        proj: Project):
    done = push(proj, "patient", "ok")
    failed = push(proj, "patient", "bad-1")  # retried in an hour
    worker = proj.ojd("worker", "patient", "--foreground")
    try:
        wait_until(lambda: statuses(proj) == {done: "completed", failed: "failed"},
                   "one item done, one failed waiting for its retry")
    finally:
        worker.kill()
        worker.wait()
    pending = [push(proj, "patient", b) for b in ("d", "e")]
    other = push(proj, "merges", "c")
    before = len(proj.events("queue:dropped"))

    dry = proj.oj("queue", "drain", "patient", "--dry-run")
    assert dry.stdout.splitlines()[-1] == "would drain 3 items from queue 'patient'"
    assert f"would drop {failed} (failed)" in dry.stdout
    assert len(proj.events("queue:dropped")) == before

    out = proj.oj("queue", "drain", "patient").stdout.splitlines()
    assert out[-1] == "drained 3 items from queue 'patient'"
    assert out[:-1] == [f"dropped {failed} (failed) {{\"branch\":\"bad-1\"}}",
                        f"dropped {pending[0]} (pending) {{\"branch\":\"d\"}}",
                        f"dropped {pending[1]} (pending) {{\"branch\":\"e\"}}"]
    dropped = proj.events("queue:dropped")[before:]
    assert len(dropped) == 3 and len({e["ts"] for e in dropped}) == 1  # one append
    assert statuses(proj) == {done: "completed", other: "pending"}
    assert proj.oj("queue", "drain", "patient").stdout == \
        "drained 0 items from queue 'patient'\n"
    # the dedup index forgot them: the same data is queued again as a new item
    assert push(proj, "patient", "d") not in pending


def test_drain_refuses_an_external_queue(proj: Project):
    proc = proj.oj("queue", "drain", "outside", check=False)
    one_line_error(proc, 2, "queue 'outside' is external")


# -- oj queue prune ---------------------------------------------------------------------------


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_prune_removes_completed_and_dead_items_settled_long_enough_ago(proj: Project):
    old_done = push(proj, "merges", "old")
    old_dead = push(proj, "fragile", "bad-old")
    # settled by workers an hour in the past: the window below cannot close under load
    drain_worker(proj, "merge", **clock_behind("1h"))
    drain_worker(proj, "breaker", **clock_behind("1h"))
    new_done = push(proj, "merges", "new")
    drain_worker(proj, "merge")
    waiting = push(proj, "merges", "later")
    assert statuses(proj) == {old_done: "completed", old_dead: "dead",
                              new_done: "completed", waiting: "pending"}

    dry = proj.oj("queue", "prune", "--older-than", "30m", "--dry-run").stdout.splitlines()
    assert dry[-1] == "would prune 2 items"
    assert dry[0].startswith(f"would remove {old_done} from queue 'merges' (completed, ")
    assert dry[1].startswith(f"would remove {old_dead} from queue 'fragile' (dead, ")
    assert proj.events("queue:pruned") == []

    assert proj.oj("queue", "prune").stdout == "pruned 0 items\n"  # default: 12h
    out = proj.oj("queue", "prune", "merges", "--older-than", "30m").stdout.splitlines()
    assert out[-1] == "pruned 1 item" and out[0].startswith(f"removed {old_done} ")
    assert statuses(proj) == {old_dead: "dead", new_done: "completed", waiting: "pending"}
    assert len(proj.events("queue:pruned")) == 1

    as_json = json.loads(proj.oj("queue", "prune", "--all", "-o", "json").stdout)
    assert as_json["dry_run"] is False
    assert [i["id"] for i in as_json["items"]] == [old_dead, new_done]
    assert statuses(proj) == {waiting: "pending"}
    # the same in a state rebuilt from a snapshot
    proj.oj("state", "compact")
    assert statuses(proj) == {waiting: "pending"}
    row = next(r for r in proj.json("queue", "list") if r["name"] == "merges")  # type: ignore
    assert (row["pending"], row["completed"], row["dead"]) == (1, 0, 0)


@pytest.mark.parametrize("args, code, message", [
    (["--older-than", "12x"], 2, "--older-than: invalid duration '12x'"),
    (["--older-than", "1h", "--all"], 2, "give --older-than or --all, not both"),
    (["outside"], 2, "queue 'outside' is external"),
])
def test_bad_prune_input_is_one_line(proj: Project, args, code, message):
    one_line_error(proj.oj("queue", "prune", *args, check=False), code, message)


# -- oj queue done / fail -------------------------------------------------------------------


class Orphan:
    """An item taken by a job whose worker and job process were killed -9 (a crash): the
    item stays active, its job recorded running with no live process."""

    def __init__(self, p: Project, queue: str, worker: str) -> None:
        started = len(p.events("job:step_started"))
        self.item = push(p, queue, "slow")
        self.worker = p.ojd("worker", worker, "--foreground")
        wait_until(lambda: len(p.events("job:step_started")) > started, "the step to start")
        self.job = p.events("job:created")[-1]["id"]
        self.process = p.events("job:process")[-1]["pid"]
        self.step = p.events("job:step_started")[-1]["pid"]

    def kill_worker_and_job(self) -> None:
        self.worker.kill()
        self.worker.wait()
        os.kill(self.process, signal.SIGKILL)

    def kill_step(self) -> None:
        os.killpg(self.step, signal.SIGKILL)

    def cleanup(self) -> None:
        for kill in (self.kill_worker_and_job, self.kill_step):
            try:
                kill()
            except ProcessLookupError:
                pass


@pytest.fixture
def orphans():
    made: list[Orphan] = []
    yield lambda *a: made.append(Orphan(*a)) or made[-1]
    for o in made:
        o.cleanup()


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def job_status(p: Project, job_id: str) -> str:
    return p.json("job", "show", job_id)["status"]  # type: ignore[index]


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_done_is_refused_while_the_job_or_its_step_runs_then_settles_the_item(
        proj: Project, orphans):
    o = orphans(proj, "merges", "merge")
    refused = proj.oj("queue", "done", o.item, check=False)
    one_line_error(refused, 1, f"its job {o.job} is still running",
                   f"oj job cancel {o.job}")
    o.kill_worker_and_job()
    wait_until(lambda: not running(o.process), "the job process to die")
    if proj.url:  # a leased job's step dies with its job process (another host may take it)
        wait_until(lambda: not running(o.step), "the step to die with its job's process")
    else:
        still = proj.oj("queue", "done", o.item, check=False)  # its step outlived it
        one_line_error(still, 1, f"its job {o.job} is still running (process {o.step})")
        o.kill_step()
    wait_until(lambda: proj.oj("queue", "done", o.item, check=False).returncode == 0,
               "the item to be settled once the step is gone")
    assert statuses(proj)[o.item] == "completed"
    assert job_status(proj, o.job) == "cancelled"
    # a worker started later does not resume the job on a settled item
    drain_worker(proj, "merge")
    assert job_status(proj, o.job) == "cancelled"
    assert not (proj.root / "ran.txt").exists()


def test_fail_follows_the_retry_policy_then_goes_dead(proj: Project, orphans):
    o = orphans(proj, "merges", "merge")  # one retry: the first fail is retried
    o.kill_worker_and_job()
    o.kill_step()
    said = []
    wait_until(lambda: said.append(proj.oj("queue", "fail", o.item, check=False)) or
               said[-1].returncode == 0, "the fail to be accepted")
    assert said[-1].stdout == (f"{o.item} in queue 'merges': failed; retried by its worker's "
                               f"next poll (job {o.job} had no live process; recorded it "
                               "cancelled)\n")
    item = proj.json("queue", "show", o.item)
    assert item["status"] == "failed" and "marked failed by 'oj queue fail'" in item["error"]
    assert job_status(proj, o.job) == "cancelled"

    second = orphans(proj, "merges", "merge")  # the retry: the same item, a new job
    assert second.item == o.item and second.job != o.job
    second.kill_worker_and_job()
    second.kill_step()
    said.clear()
    wait_until(lambda: said.append(proj.oj("queue", "fail", o.item, check=False)) or
               said[-1].returncode == 0, "the second fail to be accepted")
    assert statuses(proj)[o.item] == "dead"
    assert f"dead (no retries left); bring it back with 'oj queue retry merges {o.item}'" \
        in said[-1].stdout


def test_fail_of_an_item_of_a_queue_without_retries_makes_it_dead_and_says_how_to_retry(
        proj: Project, orphans):
    o = orphans(proj, "fragile", "breaker")
    o.kill_worker_and_job()
    o.kill_step()
    wait_until(lambda: statuses(proj)[o.item] == "active" and
               proj.oj("queue", "fail", o.item[:5], check=False).returncode == 0,
               "the fail to be accepted")
    assert statuses(proj)[o.item] == "dead"


@pytest.mark.parametrize("command", ["done", "fail"])
def test_done_and_fail_refuse_what_is_not_active_and_unknown_ids(proj: Project, command):
    item = push(proj, "merges", "a")
    one_line_error(proj.oj("queue", command, item, check=False), 1,
                   f"item {item} is pending; only an active item")
    one_line_error(proj.oj("queue", command, "zzzz", check=False), 1,
                   "no queue item with id 'zzzz'")
