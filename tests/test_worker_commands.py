"""`oj worker start --all | stop --all | resize | prune` and `oj queue push --start` with
workers in the foreground (`ojd worker NAME --foreground`), on a machine without systemd
(see test_foreground.py `without_systemd`). Units: test_systemd_worker_commands.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Project, asleep_in, wait_until
from test_foreground import Foreground, without_systemd

# each job writes "start N", then waits for the file go-N (or go-all) and writes "end N"
RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }
    worker "a" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      concurrency = CONCURRENCY
      poll        = "1h"
    }
    worker "b" {
      source  = { queue = "other" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    queue "other" {
      vars = ["n"]
    }
    pipeline "p" {
      vars = ["item"]
      step "one" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> "${invoke.dir}/ran.txt"
          while [ ! -e "${invoke.dir}/go-${var.item.n}" ] && [ ! -e "${invoke.dir}/go-all" ]; do
            sleep 0.05
          done
          echo "end ${var.item.n}" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


def write_runbook(project: Project, concurrency: int = 1) -> None:
    project.write("w.hcl", RUNBOOK.replace("CONCURRENCY", str(concurrency)))


def ran(project: Project) -> list[str]:
    path = project.root / "ran.txt"
    return path.read_text().splitlines() if path.exists() else []


def started_jobs(project: Project) -> list[str]:
    return sorted(line.split()[1] for line in ran(project) if line.startswith("start "))


def push(project: Project, *numbers: int, queue: str = "q") -> None:
    for n in numbers:
        project.oj("queue", "push", queue, json.dumps({"n": str(n)}))


def row(project: Project, name: str) -> dict:
    [found] = [r for r in project.json("worker", "list") if r["name"] == name]
    return found


@pytest.fixture
def workers(project: Project):
    """Worker "a" of the project running in the foreground; "b" started on demand."""
    write_runbook(project)
    running: list[Foreground] = []

    def start(name: str = "a") -> Foreground:
        worker = Foreground(project, name)
        worker.wait_for(f"ready: queue '{'q' if name == 'a' else 'other'}'")
        running.append(worker)
        return worker

    yield project, start
    (project.root / "go-all").touch()
    for worker in running:
        worker.stop()


# -- resize -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", ["0", "-1", "two", "1.5", "", "٣"])
def test_resize_to_anything_but_a_whole_number_of_at_least_one_is_refused_in_one_line(
        project: Project, n: str):
    write_runbook(project)
    proc = project.oj("worker", "resize", "a", "--", n, check=False)
    assert proc.returncode == 2, proc
    [line] = proc.stderr.splitlines()
    assert line.startswith("oj: concurrency must be a whole number of at least 1, not '"), line
    assert proc.stdout == ""
    assert project.events("worker:resized") == []


def test_resize_of_a_worker_the_runbook_does_not_define_names_the_defined_ones(
        project: Project):
    write_runbook(project)
    proc = project.oj("worker", "resize", "nope", "3", check=False)
    assert proc.returncode == 2
    assert proc.stderr == "oj: unknown worker 'nope'; this project defines: a, b\n"
    assert project.events("worker:resized") == []
    proc = project.oj("worker", "resize", "bb", "3", check=False)
    assert proc.stderr == ("oj: unknown worker 'bb' (did you mean 'b'?); this project defines: "
                           "a, b\n")


def test_resize_needs_a_number_or_reset_but_not_both(project: Project):
    write_runbook(project)
    for args in (["a"], ["a", "2", "--reset"]):
        proc = project.oj("worker", "resize", *args, check=False)
        assert proc.returncode == 2, args
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "--reset" in proc.stderr
    assert project.events("worker:resized") == []


def test_resize_up_fills_the_new_slots_of_a_running_worker_at_once(workers):
    project, start = workers
    worker = start()
    push(project, 1, 2, 3)
    wait_until(lambda: started_jobs(project) == ["1"], "the first job to start")
    # back in its wait with no wake pending: it has polled for each push
    wait_until(lambda: asleep_in(worker.proc.pid, "poll"), "the worker to poll")
    assert started_jobs(project) == ["1"]  # concurrency 1: the others wait
    proc = project.oj("worker", "resize", "a", "3")
    assert proc.stdout == ("Worker 'a' resized to 3 (the runbook says 1); running, it keeps "
                           "to it from now on\n")
    # the fallback poll is an hour away: only the resize's wake fills the slots this soon
    wait_until(lambda: started_jobs(project) == ["1", "2", "3"], "the new slots to fill",
               timeout=10)
    r = row(project, "a")
    assert (r["active"], r["concurrency"], r["runbook_concurrency"], r["resized"]) == (3, 3, 1, 3)
    table = project.oj("worker", "list").stdout.splitlines()
    assert table[1].split()[4] == "3/3", table


def test_resize_down_lets_running_jobs_finish_and_takes_no_new_one_until_below(workers):
    project, start = workers
    write_runbook(project, concurrency=2)
    worker = start()
    push(project, 1, 2, 3)
    wait_until(lambda: started_jobs(project) == ["1", "2"], "two jobs to start")
    project.oj("worker", "resize", "a", "1")
    worker.wait_for("concurrency now 1 (resized; the runbook says 2)")
    (project.root / "go-1").touch()
    wait_until(lambda: "end 1" in ran(project), "job 1 to end")
    [job_1] = [e["pid"] for e in project.events("job:process") for i in project.items()
               if i["job"] == e["id"] and i["data"]["n"] == "1"]
    wait_until(lambda: not Path(f"/proc/{job_1}").exists(), "job 1's process to be reaped")
    # back in its wait: the end of job 1 made it poll (one job still runs, 1 slot)
    wait_until(lambda: asleep_in(worker.proc.pid, "poll"), "the worker to poll")
    assert started_jobs(project) == ["1", "2"]
    assert "end 2" not in ran(project)  # never stopped by the resize
    (project.root / "go-2").touch()
    wait_until(lambda: started_jobs(project) == ["1", "2", "3"], "job 3 to start below 1")
    assert ran(project).index("end 2") < ran(project).index("start 3")


def test_resize_outlives_a_restart_of_the_worker_and_reset_goes_back_to_the_runbook(workers):
    project, start = workers
    assert project.oj("worker", "resize", "a", "4").stdout == (
        "Worker 'a' resized to 4 (the runbook says 1); it keeps to it when it starts\n")
    first = start()
    first.wait_for("concurrency 4 (resized; the runbook says 1)")
    first.signal(2)
    first.wait()
    second = start()
    second.wait_for("ready: queue 'q', pipeline 'p', concurrency 4 (resized; the runbook "
                    "says 1)")
    assert row(project, "a")["concurrency"] == 4
    proc = project.oj("worker", "resize", "a", "--reset")
    assert proc.stdout == ("Worker 'a' back to the runbook's concurrency 1; running, it keeps "
                           "to it from now on\n")
    second.wait_for("concurrency now 1")
    r = row(project, "a")
    assert (r["concurrency"], r["resized"]) == (1, None)
    assert [e["concurrency"] for e in project.events("worker:resized")] == [4, None]


def test_resize_to_the_same_value_records_nothing_new(project: Project):
    write_runbook(project)
    project.oj("worker", "resize", "a", "2")
    project.oj("worker", "resize", "a", "2")
    assert len(project.events("worker:resized")) == 1


# -- start --all / stop --all ---------------------------------------------------------------


def test_start_all_wakes_every_running_worker_and_says_which_could_not_start(workers,
                                                                            tmp_path: Path):
    project, start = workers
    start("a")
    proc = without_systemd(project, tmp_path, "worker", "start", "--all")
    assert proc.returncode == 1
    assert proc.stdout == "Worker 'a' was already running; woken\n"
    [line] = proc.stderr.splitlines()
    assert line.startswith("oj: worker 'b' did not start: no systemd system manager answers "
                           "here"), line
    assert "'ojd worker b --foreground'" in line
    start("b")
    woken = len(project.events("worker:woken"))
    proc = without_systemd(project, tmp_path, "worker", "start", "--all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Worker 'a' was already running; woken",
                                        "Worker 'b' was already running; woken"]
    assert len(project.events("worker:woken")) == woken + 2  # each really signalled


def test_stop_all_stops_every_running_worker_one_line_each(workers, tmp_path: Path):
    project, start = workers
    a, b = start("a"), start("b")
    proc = without_systemd(project, tmp_path, "worker", "stop", "--all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Worker 'a' stopped (inactive)",
                                        "Worker 'b' stopped (inactive)"]
    assert a.wait(timeout=5) == 0 and b.wait(timeout=5) == 0
    # once more: nothing runs anywhere, which is what stop --all asks for
    proc = without_systemd(project, tmp_path, "worker", "stop", "--all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"Worker '{n}' not running (no systemd here, nor in the foreground)" for n in "ab"]


def test_stop_all_cancel_sends_the_running_jobs_items_back_to_pending(workers, tmp_path: Path):
    project, start = workers
    worker = start("a")
    push(project, 1)
    wait_until(lambda: started_jobs(project) == ["1"], "the job to start")
    proc = without_systemd(project, tmp_path, "worker", "stop", "--all", "--cancel")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == ("Worker 'a' stopped (inactive); 1 job(s) "
                                           "cancelled, their items back to pending")
    assert worker.wait(timeout=5) == 0
    assert [i["status"] for i in project.items("q")] == ["pending"]


@pytest.mark.parametrize("command", ["start", "stop"])
def test_all_with_a_name_or_neither_is_refused_in_one_line(project: Project, command: str):
    write_runbook(project)
    for args in (["a", "--all"], []):
        proc = project.oj("worker", command, *args, check=False)
        assert proc.returncode == 2, proc
        [line] = proc.stderr.splitlines()
        assert "--all" in line, line
    assert project.events("worker:recorded") == []


# -- prune ----------------------------------------------------------------------------------


def other_project(project: Project, tmp_path: Path, worker: str) -> Project:
    """A second project in the same state dir whose worker is recorded (by a resize)."""
    other = Project(tmp_path / "other", project.state)
    other.write("w.hcl", RUNBOOK.replace('worker "a"', f'worker "{worker}"')
                .replace('worker "b"', 'worker "b2"').replace("CONCURRENCY", "1"))
    other.oj("worker", "resize", worker, "2")
    return other


def test_prune_removes_bindings_of_gone_projects_and_dropped_workers_and_keeps_the_rest(
        workers, tmp_path: Path):
    project, start = workers
    project.oj("worker", "resize", "a", "2")
    project.oj("worker", "resize", "b", "2")
    gone = other_project(project, tmp_path, "c")
    shutil.rmtree(gone.root)
    # "b" is dropped from the runbook
    write_runbook(project, concurrency=1)
    rb = project.root / ".oj" / "runbooks" / "w.hcl"
    text = rb.read_text()
    rb.write_text(text[:text.index('worker "b"')] + text[text.index('queue "other"'):])

    dry = project.oj("worker", "prune", "--dry-run")
    assert dry.stdout.splitlines() == [
        f"would remove worker 'b' of {project.root}: its project's runbook no longer defines it",
        f"would remove worker 'c' of {gone.root}: its project is gone"]
    assert project.events("worker:pruned") == []
    assert sorted(r["name"] for r in project.json("worker", "list", "--all")) == ["a", "b", "c"]

    proc = project.oj("worker", "prune")
    assert proc.stdout.splitlines() == [line.replace("would remove", "removed")
                                        for line in dry.stdout.splitlines()]
    assert [e["names"] for e in project.events("worker:pruned")] == [
        [f"{project.root.name}:b", f"{gone.root.name}:c"]]
    assert [r["name"] for r in project.json("worker", "list", "--all")] == ["a"]
    again = project.oj("worker", "prune")
    assert again.stdout.startswith("nothing to prune")
    assert len(project.events("worker:pruned")) == 1


def test_prune_never_removes_a_running_worker(workers):
    project, start = workers
    worker = start("b")
    write_runbook(project)
    rb = project.root / ".oj" / "runbooks" / "w.hcl"
    text = rb.read_text()
    rb.write_text(text[:text.index('worker "b"')] + text[text.index('queue "other"'):])
    proc = project.oj("worker", "prune")
    assert proc.stdout.startswith("nothing to prune")
    assert proc.stderr == (f"oj: kept worker 'b': its project's runbook no longer defines it, "
                           f"but it runs (PID {worker.proc.pid}); stop it first\n")
    assert project.events("worker:pruned") == []
    worker.signal(2)
    worker.wait()
    assert project.oj("worker", "prune").stdout.startswith("removed worker 'b'")


def test_prune_keeps_workers_whose_runbook_does_not_load(project: Project):
    write_runbook(project)
    project.oj("worker", "resize", "a", "2")
    project.write("broken.hcl", 'worker "x" {\n')
    proc = project.oj("worker", "prune")
    assert proc.stdout.startswith("nothing to prune")
    [line] = proc.stderr.splitlines()
    assert line.startswith("oj: kept worker 'a': the runbook of "), line
    assert "'oj runbook check' there lists the problems" in line
    assert project.events("worker:pruned") == []


def test_a_pruned_worker_starts_afresh_with_its_runbook_concurrency(workers):
    project, start = workers
    project.oj("worker", "resize", "a", "3")
    rb = project.root / ".oj" / "runbooks" / "w.hcl"
    saved = rb.read_text()
    rb.write_text(saved.replace('worker "a"', 'worker "renamed"'))
    project.oj("worker", "prune")
    rb.write_text(saved)
    start("a").wait_for("ready: queue 'q', pipeline 'p', concurrency 1")
    assert row(project, "a")["resized"] is None


# -- queue push --start -----------------------------------------------------------------------


def test_push_start_wakes_a_running_worker_and_starts_nothing(workers, tmp_path: Path):
    project, start = workers
    start("a")
    starts = len(project.events("worker:started"))
    proc = without_systemd(project, tmp_path, "queue", "push", "q", '{"n": "1"}', "--start")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    wait_until(lambda: started_jobs(project) == ["1"], "the pushed item to run")
    assert len(project.events("worker:started")) == starts  # woken, no second worker


def test_push_start_that_cannot_start_the_worker_says_the_item_is_queued(project: Project,
                                                                         tmp_path: Path):
    write_runbook(project)
    proc = without_systemd(project, tmp_path, "queue", "push", "q", '{"n": "1"}', "--start")
    assert proc.returncode == 1
    assert len(proc.stdout.split()) == 1  # the item's id, and nothing else on stdout
    [line] = proc.stderr.splitlines()
    assert line.startswith("oj: the item is queued, but worker 'a' did not start: no systemd "
                           "system manager answers here"), line
    assert [i["status"] for i in project.items("q")] == ["pending"]


def test_push_start_to_a_queue_no_worker_takes_from_says_so(project: Project):
    write_runbook(project)
    project.write("more.hcl", 'queue "lonely" {\n  vars = ["n"]\n}\n')
    proc = project.oj("queue", "push", "lonely", '{"n": "1"}', "--start")
    assert proc.stderr == ("oj: no worker of this project takes from queue 'lonely'; nothing "
                           "started\n")


def test_push_start_while_another_part_of_the_runbook_is_broken_queues_and_starts_nothing(
        project: Project):
    write_runbook(project)
    project.oj("queue", "push", "q", '{"n": "1"}')  # the runbook as last seen valid
    project.write("broken.hcl", 'worker "x" {\n')
    proc = project.oj("queue", "push", "q", '{"n": "2"}', "--start", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "oj: the item is queued, but no worker was started: the runbook is invalid; "
        "'oj runbook check' lists the problems")
    assert [i["status"] for i in project.items()] == ["pending", "pending"]
    assert project.events("worker:recorded") == []


def test_a_worker_name_too_long_for_its_unit_is_refused_at_its_line_and_by_oj(
        project: Project):
    over = "w" * 236  # oj-worker@NAME.service.d: at most 255 characters
    project.write("long.hcl", f"""\
        queue "q" {{
          vars = ["n"]
        }}
        pipeline "p" {{
          vars = ["n"]
          step "s" {{ run = "true" }}
        }}
        worker "{"w" * 235}" {{
          source  = {{ queue = "q" }}
          handler = {{ pipeline = "p" }}
        }}
        worker "{over}" {{
          source  = {{ queue = "q" }}
          handler = {{ pipeline = "p" }}
        }}
        """)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    said = (f"worker name '{'w' * 16}...' is 236 characters long; at most 235 fit the "
            "systemd units named after a worker (oj-worker@NAME.service)")
    assert proc.stderr.splitlines()[:-1] == [f".oj/runbooks/long.hcl:12: {said}"]
    proc = project.oj("worker", "stop", over, check=False)
    assert (proc.returncode, proc.stderr) == (2, f"oj: {said}\n")
