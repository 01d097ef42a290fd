"""The CLI through the installed `oj` and `ojd` as subprocesses: queues, runs, jobs, errors."""

from __future__ import annotations

import json
import os
import select
import signal
import time

import pytest
from conftest import Project, wait_until

QUEUE_RUNBOOK = """
    queue "merges" {
      type     = "persisted"
      vars     = ["branch", "title", "base"]
      defaults = { base = "main" }
    }
    """


@pytest.fixture
def queued(project: Project) -> Project:
    project.write("merge.hcl", QUEUE_RUNBOOK)
    return project


def test_version_and_help_work_without_a_project(project: Project):
    assert project.oj("--version").stdout.strip().endswith("0.1.0")
    helptext = project.oj("--help", cwd=project.state.parent).stdout
    assert "queue" in helptext and "worker" in helptext


@pytest.mark.both_stores
def test_push_prints_an_id_and_list_shows_the_item(queued: Project):
    item_id = queued.oj("queue", "push", "merges", '{"branch": "b1", "title": "T"}').stdout
    items = queued.items("merges")
    assert [i["id"] for i in items] == [item_id.strip()]
    item = items[0]
    assert item["status"] == "pending" and item["attempts"] == 0
    assert item["data"] == {"branch": "b1", "title": "T", "base": "main"}
    assert {"id", "queue", "status", "data", "attempts", "created_at"} <= set(item)
    table = queued.oj("queue", "list", "--items").stdout
    assert item_id.strip() in table and "pending" in table


def test_push_with_vars_and_from_a_subdirectory(queued: Project):
    sub = queued.root / "deep" / "er"
    sub.mkdir(parents=True)
    queued.oj("queue", "push", "merges", "--var", "branch=b2", "--var=title=x y", cwd=sub)
    assert queued.items()[0]["data"] == {"branch": "b2", "title": "x y", "base": "main"}


@pytest.mark.both_stores
def test_push_of_live_duplicate_returns_the_same_id(queued: Project):
    first = queued.oj("queue", "push", "merges", '{"branch": "b", "title": "t"}')
    second = queued.oj("queue", "push", "merges", '{"title": "t", "branch": "b"}')
    assert first.stdout == second.stdout
    assert "already queued" in second.stderr
    assert len(queued.items()) == 1


@pytest.mark.parametrize("args, message", [
    (["merges", '{"branch": "b",'], "invalid JSON at line 1 column"),
    (["merges", '["b"]'], "must be a JSON object"),
    (["merges", '{"title": "t"}'], "missing var 'branch'"),
    (["merges", '{"branch": "b", "title": "t", "colour": "red"}'], "has no var 'colour'"),
    (["nope", '{"branch": "b"}'], "unknown queue 'nope'; this project defines: merges"),
    (["merges", "--var", "novalue"], "--var expects NAME=VALUE"),
    (["merges", '{"branch": NaN, "title": "t"}'], "NaN is not JSON"),
    (["merges", '{"branch": 1e999, "title": "t"}'], "1e999 is out of range"),
    (["merges", '{"branch": "\\ud800", "title": "t"}'], "not valid Unicode"),
])
def test_bad_push_is_one_line_exit_2_and_writes_nothing(queued: Project, args, message):
    proc = queued.oj("queue", "push", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert queued.items() == []


def test_unusable_state_dir_is_one_clear_line(queued: Project, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for args in (("queue", "push", "merges", '{"branch": "b", "title": "t"}'),
                 ("queue", "list"), ("state", "check")):
        proc = queued.oj(*args, check=False, OJ_STATE_DIR=str(not_a_dir))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith(f"oj: cannot use state dir {not_a_dir}:"), proc.stderr
        assert len(proc.stderr.splitlines()) == 1


def test_push_outside_a_project_says_how_to_fix_it(queued: Project):
    proc = queued.oj("queue", "push", "merges", "{}", check=False, cwd=queued.state.parent)
    assert proc.returncode == 1 and "not in an oj project" in proc.stderr


@pytest.mark.both_stores
def test_show_drop_and_prefixes(queued: Project):
    ids = [queued.oj("queue", "push", "merges", "--var", f"branch=b{n}", "--var",
                     "title=t").stdout.strip() for n in range(3)]
    shown = queued.json("queue", "show", ids[0][:6])
    assert shown["id"] == ids[0]
    queued.oj("queue", "drop", "merges", ids[1])
    assert [i["id"] for i in queued.items()] == [ids[0], ids[2]]
    missing = queued.oj("queue", "show", "zzzzzzzz", check=False)
    assert missing.returncode == 1 and "no queue item with id 'zzzzzzzz'" in missing.stderr


def test_ambiguous_prefix_is_an_error(queued: Project):
    for n in range(40):  # 40 random 8-hex ids: two share a first hex digit
        queued.oj("queue", "push", "merges", "--var", f"branch=b{n}", "--var", "title=t")
    firsts = [i["id"][0] for i in queued.items()]
    prefix = next(c for c in firsts if firsts.count(c) > 1)
    proc = queued.oj("queue", "show", prefix, check=False)
    assert proc.returncode == 1 and "ambiguous" in proc.stderr


def test_runbook_check_reports_every_problem_with_file_line(project: Project):
    project.write("a.hcl", 'queue "q" {\n  typo = 1\n}\nworker "w" {\n  concurrency = 0\n}\n')
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert any(line.startswith(".oj/runbooks/a.hcl:2: unknown field 'typo'") for line in lines)
    assert any(line.startswith(".oj/runbooks/a.hcl:5:") and "concurrency" in line
               for line in lines)


def test_runbook_syntax_error_names_file_and_line_for_any_command(project: Project):
    project.write("bad.hcl", 'queue "q" {\n  type = "persisted"\n  vars = [\n')
    proc = project.oj("queue", "push", "q", "{}", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(".oj/runbooks/bad.hcl:3:")


def test_runbook_list_shows_what_each_file_defines(queued: Project):
    out = queued.json("runbook", "list")
    assert out == {".oj/runbooks/merge.hcl": ["queue merges"]}


def test_example_runbooks_pass_runbook_check(project: Project):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("merge.hcl", "bugfix.hcl", "build.hcl"):
        with open(os.path.join(repo, "runbooks", name)) as f:
            project.write(name, f.read())
    assert project.oj("runbook", "check").stdout.splitlines()[-1].startswith("ok: 3 file(s)")


PIPELINES = r"""
    command "hello" {
      args = "<name> [--loud]"
      run  = "echo hello ${args.name} $([ ${args.loud} = true ] && echo '!')"
    }

    command "greet" {
      args = "<who>"
      run  = { pipeline = "greet" }
    }

    pipeline "greet" {
      vars      = ["who"]
      workspace = "ephemeral"
      locals {
        upper = "$(printf '%s' ${var.who} | tr a-z A-Z)"
      }
      notify {
        on_done = "greeted ${var.who}"
      }
      step "write" {
        run     = "printf '%s' ${local.upper} > greeting && cat greeting"
        on_done = { step = "check" }
      }
      step "check" {
        run     = "test -s greeting && echo workspace=${workspace.root}"
      }
    }

    command "fail" {
      args = ""
      run  = { pipeline = "failing" }
    }

    pipeline "failing" {
      vars      = []
      workspace = "ephemeral"
      step "broken" {
        run = "echo about to fail; false; echo never"
      }
    }

    command "loop" {
      args = ""
      run  = { pipeline = "loop" }
    }

    pipeline "loop" {
      max_visits = 3
      step "again" {
        run     = "false"
        on_fail = { step = "again" }
      }
    }
    """


def test_shell_command_runs_in_the_foreground_with_args(project: Project):
    project.write("cmds.hcl", PIPELINES)
    assert project.oj("run", "hello", "world").stdout == "hello world\n"
    assert project.oj("run", "hello", "--loud", "you").stdout == "hello you !\n"
    bad = project.oj("run", "hello", check=False)
    assert bad.returncode == 2 and "missing argument <name>" in bad.stderr


@pytest.mark.both_stores
def test_pipeline_command_runs_a_job_and_removes_its_workspace_on_success(project: Project):
    project.write("cmds.hcl", PIPELINES)
    proc = project.oj("run", "greet", "ada; touch pwned")
    assert "==> step write ok" in proc.stdout and "==> step check ok" in proc.stdout
    assert "==> notify: greeted ada; touch pwned" in proc.stdout
    assert proc.stderr.endswith(" done\n")
    job = project.json("job", "list")[0]
    assert job["status"] == "done" and [h["step"] for h in job["history"]] == ["write",
                                                                                "check"]
    logs = project.oj("job", "logs", job["id"]).stdout
    assert "ADA; TOUCH PWNED" in logs
    assert not os.path.exists(job["cwd"])  # ephemeral workspace removed on success
    assert not (project.root / "pwned").exists()


@pytest.mark.both_stores
def test_failed_pipeline_exits_1_and_keeps_its_workspace(project: Project):
    project.write("cmds.hcl", PIPELINES)
    proc = project.oj("run", "fail", check=False)
    assert proc.returncode == 1
    job = project.json("job", "list")[0]
    assert job["status"] == "failed" and os.path.isdir(job["cwd"])
    logs = project.oj("job", "logs", job["id"]).stdout
    assert "about to fail" in logs and "never" not in logs


def test_a_cycle_stops_at_max_visits(project: Project):
    project.write("cmds.hcl", PIPELINES)
    proc = project.oj("run", "loop", check=False)
    assert proc.returncode == 1
    job = project.json("job", "list")[0]
    assert len(job["history"]) == 3 and "max_visits = 3" in job["error"]


def test_unknown_command_lists_the_defined_ones(project: Project):
    project.write("cmds.hcl", PIPELINES)
    proc = project.oj("run", "nope", check=False)
    assert proc.returncode == 2
    assert "unknown command 'nope'; this project defines: fail, greet, hello, loop" in \
        proc.stderr
    proc = project.oj("run", "gret", check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("oj: unknown command 'gret' (did you mean 'greet'?); this project "
                           "defines: fail, greet, hello, loop\n")


WORKER_RUNBOOK = r"""
    queue "merges" {
      type     = "persisted"
      vars     = ["branch", "mode"]
      defaults = { mode = "ok" }
      retry    = { attempts = 1, cooldown = "1s" }
    }

    worker "merge" {
      source      = { queue = "merges" }
      handler     = { pipeline = "merge" }
      concurrency = 2
      poll        = "200ms"
    }

    pipeline "merge" {
      vars = ["mr"]
      step "work" {
        run = <<-SHELL
          echo "branch=${var.mr.branch}" >> "${invoke.dir}/ran.txt"
          if [ ${var.mr.mode} = slow ]; then sleep 30; fi
          [ ${var.mr.mode} != fail ]
        SHELL
      }
    }
    """


@pytest.mark.both_stores
def test_foreground_worker_drains_the_queue_and_quotes_item_data(project: Project, tmp_path):
    project.write("w.hcl", WORKER_RUNBOOK)
    pwned = tmp_path / "pwned"
    hostile = f"x; touch {pwned}"
    for branch in ("a", "b", hostile, '$(touch ' + str(pwned) + ')'):
        project.oj("queue", "push", "merges", json.dumps({"branch": branch}))
    proc = project.ojd("worker", "merge", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    statuses = {i["data"]["branch"]: i["status"] for i in project.items()}
    assert set(statuses.values()) == {"completed"}
    ran = (project.root / "ran.txt").read_text().splitlines()
    assert sorted(ran) == sorted(f"branch={b}" for b in statuses)
    assert not pwned.exists()


REREAD_RUNBOOK = r"""
    queue "counts" {
      vars = ["n", "note"]
    }

    worker "count" {
      source  = { queue = "counts" }
      handler = { pipeline = "count" }
      poll    = "200ms"
    }

    pipeline "count" {
      vars = ["it"]
      notify {
        on_done = "counted ${var.it.note}"
      }
      step "count" {
        run = <<-SHELL
          if [[ ${var.it.n} -gt 0 ]]; then
            let total=${var.it.n}*2
            echo "total=$total" >> "${invoke.dir}/ran.txt"
          fi
        SHELL
      }
    }

    command "count" {
      args = "<n>"
      run  = { pipeline = "count-one" }
    }

    pipeline "count-one" {
      vars = ["n"]
      step "count" {
        run = "(( ${var.n} > 0 )) && echo counted"
      }
    }
    """


def test_item_data_in_arithmetic_fails_the_step_and_never_runs(project: Project, tmp_path):
    project.write("count.hcl", REREAD_RUNBOOK)
    check = project.oj("runbook", "check")
    assert check.stdout.splitlines()[-1].startswith("ok: 1 file(s)")  # after the read FILE lines
    warnings = [line.split(", which")[0] for line in check.stderr.splitlines()]
    assert warnings == [
        ".oj/runbooks/count.hcl:19: warning: step 'count': ${var.it.n} is in shell arithmetic "
        "([[ ... -gt ... ]])",
        ".oj/runbooks/count.hcl:20: warning: step 'count': ${var.it.n} is in shell arithmetic "
        "(let)",
        ".oj/runbooks/count.hcl:35: warning: step 'count': ${var.n} is in shell arithmetic "
        "(((...)))",
    ]
    pwned = tmp_path / "pwned"
    payload = f"a[$(touch {pwned})]"
    project.oj("queue", "push", "counts", json.dumps({"n": payload, "note": "bad"}))
    project.oj("queue", "push", "counts", json.dumps({"n": 3, "note": "x\n==> job done"}))
    proc = project.ojd("worker", "count", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert not pwned.exists()
    statuses = {i["data"]["note"]: i["status"] for i in project.items()}
    assert statuses == {"bad": "dead", "x\n==> job done": "completed"}
    assert (project.root / "ran.txt").read_text() == "total=6\n"
    jobs = {j["vars"]["it"]["note"]: j for j in project.json("job", "list")}
    failed = jobs["bad"]
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "step 'count' failed (exit 2): ${var.it.n} is used in shell arithmetic "
        f"([[ ... -gt ... ]]) and must be an integer, got {payload[:37] + '...'!r}")
    assert "is used in shell arithmetic ([[ ... -gt ... ]])" in out  # the worker's log says why
    # a notify message cannot forge a line of the job's log
    log = project.oj("job", "logs", jobs["x\n==> job done"]["id"]).stdout
    assert "==> notify: counted x\\n==> job done\n" in log
    assert [line for line in log.splitlines() if line.startswith("==> job")] == [
        "==> job done"]
    assert "counted x\\n==> job done" in out  # ... nor of the worker's
    # the same through `oj run`: exit 1, the reason on stderr
    run = project.oj("run", "count", payload, check=False)
    assert run.returncode == 1
    assert "is used in shell arithmetic (((...))) and must be an integer" in run.stderr
    assert not pwned.exists()
    assert project.oj("run", "count", "2").returncode == 0


@pytest.mark.both_stores
def test_failing_item_retries_then_dies_and_retry_revives_it(project: Project):
    project.write("w.hcl", WORKER_RUNBOOK)
    item_id = project.oj("queue", "push", "merges", '{"branch": "f", "mode": "fail"}').stdout
    proc = project.ojd("worker", "merge", "--foreground", "--until-idle")
    proc.communicate(timeout=60)
    item = project.json("queue", "show", item_id.strip())
    assert item["status"] == "dead" and item["attempts"] == 2  # first try + 1 retry
    # the same data queues anew once its item is dead
    again = project.oj("queue", "push", "merges", '{"branch": "f", "mode": "fail"}').stdout
    assert again.strip() != item_id.strip()
    project.oj("queue", "drop", "merges", again.strip())
    project.oj("queue", "retry", "merges", "--all-dead")
    item = project.json("queue", "show", item_id.strip())
    assert (item["status"], item["attempts"]) == ("pending", 0)


@pytest.mark.both_stores
def test_same_data_queues_anew_after_completion(project: Project):
    project.write("w.hcl", WORKER_RUNBOOK)
    first = project.oj("queue", "push", "merges", '{"branch": "same"}').stdout
    project.ojd("worker", "merge", "--foreground", "--until-idle").communicate(timeout=60)
    second = project.oj("queue", "push", "merges", '{"branch": "same"}').stdout
    assert first != second


@pytest.mark.both_stores
def test_a_killed_worker_leaves_its_job_running_and_the_next_worker_adopts_it(
        project: Project):
    # the step runs until the test lets it end: once the next worker has adopted its job
    project.write("w.hcl", WORKER_RUNBOOK.replace(
        "sleep 30", 'until [ -e "${invoke.dir}/go" ]; do sleep 0.05; done'))
    project.oj("queue", "push", "merges", '{"branch": "s", "mode": "slow"}')
    proc = project.ojd("worker", "merge", "--foreground")
    wait_until(lambda: (project.root / "ran.txt").exists(), what="the step to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert project.items()[0]["status"] == "active"  # the lease outlives the worker
    again = project.ojd("worker", "merge", "--foreground", "--until-idle")
    assert again.stdout is not None
    said = b""
    try:
        deadline = time.monotonic() + 60
        while b"watching it" not in said:
            assert time.monotonic() < deadline, said
            if select.select([again.stdout.fileno()], [], [], 0.5)[0]:
                chunk = os.read(again.stdout.fileno(), 65536)
                assert chunk, said  # it exited without adopting the job
                said += chunk
    finally:
        (project.root / "go").touch()
    out, _ = again.communicate(timeout=60)
    out = said.decode() + out
    assert "watching it" in out and "resuming job" not in out
    items = project.items()
    assert [(i["status"], i["attempts"]) for i in items] == [("completed", 1)]
    assert [j["status"] for j in project.json("job", "list")] == ["done"]
    assert (project.root / "ran.txt").read_text().count("branch=s") == 1  # ran once


@pytest.mark.both_stores
def test_a_job_whose_process_and_step_died_is_resumed_at_that_step(project: Project):
    project.write("w.hcl", WORKER_RUNBOOK.replace("sleep 30", "sleep 2"))
    project.oj("queue", "push", "merges", '{"branch": "s", "mode": "slow"}')
    proc = project.ojd("worker", "merge", "--foreground")
    wait_until(lambda: (project.root / "ran.txt").exists(), what="the step to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [job] = project.json("job", "list")
    os.kill(job["process"]["pid"], signal.SIGKILL)  # a power cut, as far as the job knows
    step = project.events("job:step_started")[-1]
    os.killpg(step["pid"], signal.SIGKILL)
    again = project.ojd("worker", "merge", "--foreground", "--until-idle")
    out, _ = again.communicate(timeout=60)
    assert "resuming job" in out
    assert [(i["status"], i["attempts"]) for i in project.items()] == [("completed", 1)]
    assert (project.root / "ran.txt").read_text().count("branch=s") == 2  # step re-ran


@pytest.mark.both_stores
def test_sigterm_stops_the_worker_at_once_and_its_job_still_completes_its_item(
        project: Project):
    project.write("w.hcl", WORKER_RUNBOOK.replace("sleep 30", "sleep 2"))
    project.oj("queue", "push", "merges", '{"branch": "s", "mode": "slow"}')
    proc = project.ojd("worker", "merge", "--foreground")
    wait_until(lambda: (project.root / "ran.txt").exists(), what="the step to start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0, out
    assert "1 job(s) keep running" in out
    wait_until(lambda: project.items()[0]["status"] == "completed", what="the item to complete",
               timeout=20)
    assert project.json("job", "list")[0]["status"] == "done"


@pytest.mark.both_stores
def test_state_check_reports_a_healthy_state(queued: Project):
    queued.oj("queue", "push", "merges", '{"branch": "b", "title": "t"}')
    out = queued.json("state", "check")
    assert out["ok"] and out["records"] == 1 and out["last_pos"] == 1


@pytest.mark.both_stores
def test_finished_job_triggers_the_next_take_without_waiting_for_the_poll(project: Project):
    # concurrency 1 and an hour-long fallback poll: only the wake a finishing job sends can
    # get the next items taken before the timeout
    project.write("w.hcl", WORKER_RUNBOOK.replace('concurrency = 2', 'concurrency = 1')
                  .replace('poll        = "200ms"', 'poll        = "1h"'))
    for n in range(5):
        project.oj("queue", "push", "merges", json.dumps({"branch": f"b{n}"}))
    proc = project.ojd("worker", "merge", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert [i["status"] for i in project.items()] == ["completed"] * 5


EXTERNAL = r"""
    queue "files" {
      type = "external"
      list = "cat list.json"
      take = "mv inbox/${item.name} taken/"
    }

    worker "files" {
      source  = { queue = "files" }
      handler = { pipeline = "file" }
    }

    pipeline "file" {
      vars = ["f"]
      step "record" {
        run = "printf '%s\n' ${var.f.name} >> handled.txt"
      }
    }

    queue "broken" {
      type = "external"
      list = "echo not-json"
      take = "true"
    }

    worker "broken" {
      source  = { queue = "broken" }
      handler = { pipeline = "file" }
    }
    """


def test_external_queue_items_are_claimed_with_quoted_data(project: Project):
    project.write("ext.hcl", EXTERNAL)
    pwned = project.root / "pwned"
    names = ["a b", "x; touch pwned", "$(touch pwned)"]
    (project.root / "inbox").mkdir()
    (project.root / "taken").mkdir()
    for name in names:
        (project.root / "inbox" / name).write_text("")
    (project.root / "list.json").write_text(json.dumps([{"name": n} for n in names]))
    proc = project.ojd("worker", "files", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert sorted((project.root / "handled.txt").read_text().splitlines()) == sorted(names)
    assert sorted(os.listdir(project.root / "taken")) == sorted(names)
    assert not pwned.exists()


def test_external_queue_list_that_is_not_a_json_array_is_a_clear_error(project: Project):
    project.write("ext.hcl", EXTERNAL)
    proc = project.ojd("worker", "broken", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert "queue 'broken' list command must print a JSON array" in out
    assert "echo not-json" in out
