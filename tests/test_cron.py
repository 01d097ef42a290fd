"""Cron blocks through the installed CLI, without systemd: validation at file:line, a tick
by hand (`ojd cron NAME --project DIR`, what the timer's service runs), concurrency,
listings and `oj status`, and the errors of `oj cron` for bad input."""

from __future__ import annotations

import json
import subprocess

from conftest import OJD, Project, wait_until

RUNBOOK = """\
pipeline "cleanup" {
  step "sweep" {
    run = "echo swept >> ${invoke.dir}/ran.txt; sleep ${var.pause}"
  }
  vars = ["pause"]
  defaults = { pause = "0" }
}

pipeline "slow" {
  step "wait" {
    run = <<-SHELL
      touch ${invoke.dir}/slow.started
      while [ ! -e ${invoke.dir}/release ]; do sleep 0.05; done
    SHELL
  }
}

cron "janitor" {
  interval = "6h"
  run      = { pipeline = "cleanup" }
}

cron "hold" {
  schedule    = "Mon..Fri *-*-* 09:00"
  run         = { pipeline = "slow" }
  concurrency = 1
}

cron "say" {
  schedule = "daily"
  run      = "echo said in ${invoke.dir}"
}
"""


def cron_project(project: Project) -> Project:
    project.write("crons.hcl", RUNBOOK)
    return project


def tick(project: Project, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([OJD, "cron", name, "--project", str(project.root)],
                          cwd=project.root, env=project.env(**env), capture_output=True,
                          text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def jobs(project: Project) -> list[dict]:
    return project.json("job", "list")  # type: ignore[return-value]


def crons(project: Project) -> dict[str, dict]:
    return {r["name"]: r for r in project.json("cron", "list")}  # type: ignore[union-attr]


def test_runbook_check_reports_each_bad_cron_block_at_its_line(project: Project):
    project.write("bad.hcl", """\
        pipeline "needs" {
          vars = ["who"]
          step "s" { run = "true" }
        }
        cron "backwards" {
          schedule = "Sat..Mon 09:00"
          run      = "true"
        }
        cron "both" {
          interval = "1h"
          schedule = "daily"
          run      = "true"
        }
        cron "neither" {
          run = "true"
        }
        cron "typo" {
          interval = "1h"
          run      = { pipeline = "need" }
        }
        cron "novars" {
          interval    = "1h"
          run         = { pipeline = "needs" }
          concurrency = 0
        }
        cron "slow" {
          interval = "soon"
          run      = "echo ${var.x}"
        }
        cron "quick" {
          interval = "500ms"
          run      = "true"
        }
        cron "rare" {
          interval = "36600d"
          run      = "true"
        }
        """)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    f = ".oj/runbooks/bad.hcl"
    assert proc.stderr.splitlines()[:-1] == [
        f"{f}:6: cron 'backwards' schedule 'Sat..Mon 09:00': weekday range 'Sat..Mon' runs "
        "backwards; write it from the earlier day, or as a list (Sat,Sun,Mon) (systemd "
        "calendar syntax, e.g. \"Mon..Fri *-*-* 09:00\" or \"daily\"; 'systemd-analyze "
        "calendar EXPR' tries one)",
        f"{f}:11: cron 'both' has both 'interval' and 'schedule'; keep one of them",
        f"{f}:14: cron 'neither' needs 'interval' (a duration, \"6h\") or 'schedule' (a "
        "systemd calendar expression, \"daily\")",
        f"{f}:19: cron 'typo' pipeline 'need' is not defined; did you mean 'needs'?",
        f"{f}:23: cron 'novars' pipeline 'needs' var 'who' needs a default (a cron's jobs "
        "are given no vars)",
        f"{f}:24: cron 'novars' concurrency must be at least 1, not 0",
        f"{f}:27: cron 'slow' interval: invalid duration 'soon'; use e.g. \"30s\", \"5m\", "
        "\"1h30m\"",
        f"{f}:28: ${{var.x}} cannot be used here; available: invoke.",
        f"{f}:31: cron 'quick' interval '500ms' is shorter than 1s, the shortest a cron "
        "ticks at; use \"1s\" or more",
        f"{f}:35: cron 'rare' interval '36600d' is longer than 100 years, more than a timer "
        "holds; use a shorter one (or a calendar 'schedule')",
    ]


def test_runbook_check_counts_the_crons(project: Project):
    cron_project(project)
    out = project.oj("runbook", "check").stdout
    assert out.splitlines()[-1] == ("ok: 1 file(s), 0 commands, 0 queues, 0 workers, "
                                    "2 pipelines, 0 agents, 3 crons")


def test_a_tick_starts_the_crons_job_and_records_it(project: Project):
    cron_project(project)
    proc = tick(project, "janitor")
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: (project.root / "ran.txt").exists(), "the cron's job to run")
    [job] = project.events("job:created")
    assert (job["pipeline"], job["cron"], job["name"]) == ("cleanup", "janitor", "janitor")
    [ticked] = project.events("cron:tick")
    assert ticked["job"] == job["id"]
    wait_until(lambda: crons(project)["janitor"]["last_outcome"] == "done", "the job to end")
    row = crons(project)["janitor"]
    assert (row["schedule"], row["last_job"], row["ticks"], row["running"]) == (
        "every 6h", job["id"], 1, 0)
    assert f"started job {job['id']} (cleanup)" in proc.stderr


def test_a_tick_while_concurrency_jobs_of_its_cron_run_is_skipped_and_recorded(
        project: Project):
    cron_project(project)
    assert tick(project, "hold").returncode == 0
    wait_until(lambda: (project.root / "slow.started").exists(), "the first job to run")
    proc = tick(project, "hold")
    assert proc.returncode == 0, proc.stderr
    assert "skipped: 1 of its job(s) still running (concurrency 1)" in proc.stderr
    assert [e["running"] for e in project.events("cron:skipped")] == [1]
    assert len(project.events("job:created")) == 1
    row = crons(project)["hold"]
    assert (row["last_outcome"], row["skipped"], row["running"]) == ("skipped", 1, 1)
    (project.root / "release").touch()
    wait_until(lambda: crons(project)["hold"]["running"] == 0, "the job to end")
    assert tick(project, "hold").returncode == 0  # a free slot: the next tick runs
    assert len(project.events("job:created")) == 2


def test_a_shell_cron_runs_its_script_as_a_job_with_a_log(project: Project):
    cron_project(project)
    assert tick(project, "say").returncode == 0
    wait_until(lambda: crons(project)["say"]["last_outcome"] == "done", "the job to end")
    [job] = jobs(project)
    assert job["name"] == "say"
    log = project.oj("job", "logs", job["id"]).stdout
    assert f"said in {project.root}\n" in log


def test_status_shows_the_crons_in_text_and_json(project: Project):
    cron_project(project)
    assert tick(project, "janitor").returncode == 0
    wait_until(lambda: crons(project)["janitor"]["last_outcome"] == "done", "the job to end")
    report = project.json("status")
    rows = {c["name"]: c for c in report["projects"][0]["crons"]}  # type: ignore[index]
    assert sorted(rows) == ["hold", "janitor", "say"]
    assert rows["janitor"]["last_outcome"] == "done"
    assert rows["hold"]["last_outcome"] is None
    # a timer never started has no next run, whether or not a manager answers here
    assert (rows["say"]["next_run"], rows["say"]["schedule"]) == (None, "daily")
    text = project.oj("status").stdout
    assert "Crons:" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("janitor"))
    assert "every 6h" in line and "done (" in line


def test_ojd_cron_of_a_cron_not_recorded_exits_78_saying_how_to_start_it(project: Project):
    cron_project(project)
    proc = subprocess.run([OJD, "cron", "janitor"], cwd=project.root, env=project.env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "cron 'janitor' is not recorded in" in proc.stderr
    assert "'oj cron start janitor'" in proc.stderr


def test_an_unknown_cron_is_a_usage_error_naming_the_defined_ones(project: Project):
    cron_project(project)
    for verb in ("start", "once", "enable"):
        proc = project.oj("cron", verb, "janitr", check=False)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert proc.stderr == ("oj: unknown cron 'janitr' (did you mean 'janitor'?); this "
                               "project defines: hold, janitor, say\n"), verb
    proc = project.oj("cron", "logs", "nothing", check=False)
    assert (proc.returncode, proc.stderr) == (
        2, "oj: unknown cron 'nothing'; this project defines: hold, janitor, say\n")


def test_a_name_that_cannot_name_a_timer_is_refused_before_systemd(project: Project):
    cron_project(project)
    for verb in ("stop", "disable", "logs", "start"):
        proc = project.oj("cron", verb, "a\nb", check=False)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert proc.stderr == ("oj: 'a\\nb' is not a cron name; cron names are letters, "
                               "digits, '_', '-' or '.' (see 'oj cron list')\n"), verb


def test_without_a_manager_cron_control_says_what_works(project: Project, tmp_path):
    from test_foreground import without_systemd

    cron_project(project)
    proc = without_systemd(project, tmp_path, "cron", "start", "janitor")
    assert proc.returncode == 1
    assert "a cron is a systemd timer: without one, run a tick by hand with 'ojd cron " \
        "janitor --project DIR'" in proc.stderr
    assert project.events("cron:recorded") == []  # nothing written before a manager answers
    assert list((tmp_path / "etc-systemd-system").iterdir()) == []  # no drop-in


def test_cron_list_without_a_project_shows_the_recorded_crons(project: Project, tmp_path):
    cron_project(project)
    assert tick(project, "janitor").returncode == 0
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    rows = json.loads(project.oj("cron", "list", "-o", "json", cwd=outside).stdout)
    assert [(r["name"], r["project"]) for r in rows] == [("janitor", str(project.root))]


def test_a_toml_runbook_defines_crons_as_a_table_of_named_blocks(project: Project):
    project.write("crons.toml", """\
        [pipeline.tidy]
        [[pipeline.tidy.step]]
        name = "one"
        run = "true"

        [cron.tidy]
        schedule = "hourly"
        run = { pipeline = "tidy" }

        [cron.later]
        schedule = "Mon..Fri 25:00"
        run = "true"
        """)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        ".oj/runbooks/crons.toml:11: cron 'later' schedule 'Mon..Fri 25:00': hour 25 in "
        "'25:00' is out of range 0..23 (systemd calendar syntax, e.g. \"Mon..Fri *-*-* "
        "09:00\" or \"daily\"; 'systemd-analyze calendar EXPR' tries one)")
    project.write("crons.toml", (project.root / ".oj/runbooks/crons.toml").read_text()
                  .replace("25:00", "09:00"))
    assert project.oj("runbook", "check").stdout.splitlines()[-1].endswith(", 2 crons")


def test_a_tick_resumes_a_job_of_its_cron_whose_process_is_gone_and_counts_it(
        project: Project):
    import os
    import signal

    cron_project(project)
    assert tick(project, "hold").returncode == 0
    wait_until(lambda: (project.root / "slow.started").exists(), "the job to run")
    [job] = jobs(project)
    [first] = project.events("job:process")
    os.kill(first["pid"], signal.SIGKILL)  # its step runs on, orphaned
    from ojd.runners.jobprocess import alive

    wait_until(lambda: not alive(first), "the job process to die")
    proc = tick(project, "hold")
    assert f"resumed job {job['id']}: its process was gone" in proc.stderr
    assert "skipped: 1 of its job(s) still running (concurrency 1)" in proc.stderr
    assert [e["id"] for e in project.events("job:process")] == [job["id"], job["id"]]
    assert len(project.events("job:created")) == 1
    (project.root / "release").touch()
    wait_until(lambda: crons(project)["hold"]["running"] == 0, "the resumed job to end")
    assert project.json("job", "show", job["id"])["status"] == "done"  # type: ignore[index]


def test_a_tick_on_another_host_of_a_shared_state_leaves_a_running_job_alone(postgres,
                                                                             tmp_path):
    """Host a's job process cannot be seen from host b: b's tick neither resumes the job
    (it would run twice) nor starts another beside it (concurrency 1)."""
    project = cron_project(Project(tmp_path / "project", tmp_path / "state",
                                   url=postgres.new_database()))
    assert tick(project, "hold", OJ_HOST="host-a").returncode == 0
    wait_until(lambda: (project.root / "slow.started").exists(), "the job to run on a")
    [job] = jobs(project)
    proc = tick(project, "hold", OJ_HOST="host-b")
    assert "resumed" not in proc.stderr
    assert "skipped: 1 of its job(s) still running (concurrency 1)" in proc.stderr
    assert [e["id"] for e in project.events("job:process")] == [job["id"]]
    (project.root / "release").touch()
    wait_until(lambda: crons(project)["hold"]["running"] == 0, "the job to end on a")


def test_a_job_whose_process_keeps_dying_is_failed_by_a_tick_not_resumed_forever(
        project: Project):
    import os
    import signal

    from ojd.runners.jobprocess import MAX_RESUMES, alive

    cron_project(project)
    assert tick(project, "hold").returncode == 0
    wait_until(lambda: (project.root / "slow.started").exists(), "the job to run")
    [job] = jobs(project)
    for death in range(MAX_RESUMES + 1):
        procs = project.events("job:process")
        assert len(procs) == death + 1  # all of this job's
        os.kill(procs[-1]["pid"], signal.SIGKILL)
        wait_until(lambda p=procs[-1]: not alive(p), "the job process to die")
        proc = tick(project, "hold")
        if death < MAX_RESUMES:
            assert f"resumed job {job['id']}" in proc.stderr
            wait_until(lambda n=death + 2: len(project.events("job:process")) == n,
                       "the resumed process to be recorded")
    assert f"failed job {job['id']}: its process ended {MAX_RESUMES + 1} times without " \
        "finishing it" in proc.stderr
    assert project.json("job", "show", job["id"])["status"] == "failed"  # type: ignore[index]
    # no fifth process for it; the tick that failed it started the cron's next job
    assert [e["id"] for e in project.events("job:process")].count(job["id"]) == \
        MAX_RESUMES + 1
    (project.root / "release").touch()  # the orphaned step and the next job end
    wait_until(lambda: crons(project)["hold"]["running"] == 0, "the next job to end")


def test_a_schedule_on_more_than_one_line_is_refused_at_its_line(project: Project):
    project.write("lines.hcl", """\
        cron "split" {
          schedule = "Mon\\nOnBootSec=1"
          run      = "true"
        }
        """)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        ".oj/runbooks/lines.hcl:2: cron 'split' schedule 'Mon\\nOnBootSec=1': contains a "
        "newline (\\n); write it on one line with single spaces between its parts (systemd "
        "calendar syntax, e.g. \"Mon..Fri *-*-* 09:00\" or \"daily\"; 'systemd-analyze "
        "calendar EXPR' tries one)")


def test_a_state_dir_with_a_control_character_is_refused_before_anything_is_written(
        project: Project, tmp_path):
    cron_project(project)
    project.write("worker.hcl", """\
        queue "q" {
          vars = ["n"]
        }
        worker "w" {
          source  = { queue = "q" }
          handler = { pipeline = "cleanup" }
        }
        """)
    state = tmp_path / "state\n[Service]\nExecStartPre=touch"
    for args in (("cron", "start", "janitor"), ("cron", "enable", "janitor"),
                 ("cron", "once", "janitor"), ("worker", "start", "w"),
                 ("worker", "enable", "w"), ("worker", "restart", "w")):
        proc = project.oj(*args, check=False, OJ_STATE_DIR=str(state))
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr == (
            f"oj: the state directory '{tmp_path}/state\\n[Service]\\nExecStartPre=touch' has "
            "a control character, which a unit file cannot hold; set OJ_STATE_DIR to a path "
            "without one\n"), args
    # refused before anything was written (the state dir itself may exist)
    assert not (state / "wal").exists() or _events_at(state) == []


def _events_at(state) -> list[dict]:
    from ojd.store.wal import WalDirectory

    wal = WalDirectory(str(state / "wal"), on_problem=lambda p: None)
    return [r.event for r in wal.records()]


def test_a_cron_dropped_from_the_runbook_stays_listed_as_gone_with_how_to_stop_it(
        project: Project):
    cron_project(project)
    assert tick(project, "janitor").returncode == 0
    wait_until(lambda: crons(project)["janitor"]["last_outcome"] == "done", "the job to end")
    project.write("crons.hcl", RUNBOOK[:RUNBOOK.index('cron "janitor"')]
                  + RUNBOOK[RUNBOOK.index('cron "hold"'):])
    assert tick(project, "janitor").returncode == 78  # what its timer's ticks now do
    row = crons(project)["janitor"]
    assert (row["gone"], row["schedule"], row["last_outcome"], row["ticks"]) == (
        True, None, "done", 1)
    assert crons(project)["say"]["gone"] is False
    hint = "gone from the runbook (oj cron stop janitor)"
    line = next(x for x in project.oj("cron", "list").stdout.splitlines()
                if x.startswith("janitor"))
    assert hint in line
    report = project.json("status")
    rows = {c["name"]: c for c in report["projects"][0]["crons"]}  # type: ignore[index]
    assert rows["janitor"]["gone"] is True
    assert hint in project.oj("status").stdout


def test_a_cron_name_too_long_for_its_units_is_refused_at_its_line_and_by_oj(
        project: Project):
    longest, over = "c" * 237, "c" * 238  # oj-cron@NAME.service.d: at most 255 characters
    project.write("long.hcl", f"""\
        cron "{longest}" {{
          interval = "1h"
          run      = "true"
        }}

        cron "{over}" {{
          interval = "1h"
          run      = "true"
        }}
        """)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[:-1] == [
        f".oj/runbooks/long.hcl:6: cron name '{'c' * 16}...' is 238 characters long; at most "
        "237 fit the systemd units named after a cron (oj-cron@NAME.service)"]
    for verb in ("stop", "disable", "logs"):
        proc = project.oj("cron", verb, over, check=False)
        assert (proc.returncode, proc.stderr) == (
            2, f"oj: cron name '{'c' * 16}...' is 238 characters long; at most 237 fit the "
            "systemd units named after a cron (oj-cron@NAME.service)\n"), verb


def test_ticks_at_once_start_one_job_of_a_cron_with_concurrency_1(project: Project):
    cron_project(project)
    procs = [subprocess.Popen([OJD, "cron", "hold", "--project", str(project.root)],
                              cwd=project.root, env=project.env(), stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    said = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], said
    assert sum("started job" in s for s in said) == 1, said
    assert sum("skipped: 1 of its job(s) still running (concurrency 1)" in s
               for s in said) == 3, said
    held = [e for e in project.events("job:created") if e.get("cron") == "hold"]
    assert len(held) == 1
    assert [e["job"] for e in project.events("cron:tick")
            if e["name"] == f"{project.root.name}:hold"] == [
        held[0]["id"]]
    assert [e["running"] for e in project.events("cron:skipped")] == [1, 1, 1]
    row = crons(project)["hold"]
    assert (row["running"], row["ticks"], row["skipped"]) == (1, 1, 3)
    (project.root / "release").touch()
    wait_until(lambda: crons(project)["hold"]["running"] == 0, "the job to end")


def test_a_user_without_a_user_manager_is_told_about_linger_by_cron_start(
        project: Project, tmp_path):
    from test_foreground import without_systemd

    cron_project(project)
    proc = without_systemd(project, tmp_path, "cron", "start", "--user", "janitor",
                           manager_runs=True)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert "no systemd user manager runs for root" in line
    assert "'loginctl enable-linger root' starts one, or a cron is a systemd timer: without " \
        "one, run a tick by hand with 'ojd cron janitor --project DIR'" in line
    assert project.events("cron:recorded") == []
