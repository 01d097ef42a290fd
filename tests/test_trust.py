"""Whose code a worker runs: a worker refuses a project whose runbooks (or the directories
that lead to them) a user other than root and its own user could change (ojd/trust.py).

Run through the installed ``ojd worker --foreground`` as root; sandbox tests with real units
and test users are in test_systemd_trust.py.
"""

from __future__ import annotations

import os
import struct

import pytest
from conftest import Project, require

STRANGER = 61234  # a uid no one on the machine has

RUNBOOK = """
    queue "jobs" {
      vars = ["n"]
    }

    worker "w" {
      source  = { queue = "jobs" }
      handler = { pipeline = "work" }
    }

    pipeline "work" {
      vars = ["item"]
      step "work" {
        run = "echo ran ${var.item.n} >> ${invoke.dir}/ran.txt"
      }
    }
    """

@pytest.fixture(autouse=True)
def _root() -> None:
    # justified: a non-root developer run skips; CI runs as root (require fails there)
    require(os.geteuid() == 0, "needs root to chown files to other users")


def run_worker(project: Project) -> tuple[int, str]:
    project.oj("queue", "push", "jobs", '{"n": "1"}')
    proc = project.ojd("worker", "w", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out
    return proc.returncode, out


def assert_refused(project: Project, path, who: str) -> str:
    status, out = run_worker(project)
    assert status == 78, out
    assert f"refusing to run worker 'w' as root: {path} is writable by {who}" in out
    assert not (project.root / "ran.txt").exists()
    assert [i["status"] for i in project.items()][-1] == "pending"
    return out


def test_runbook_owned_by_another_user_is_refused_naming_the_file_and_the_ways_out(
        project: Project):
    path = project.write("work.hcl", RUNBOOK)
    os.chown(path, STRANGER, -1)
    out = assert_refused(project, path, f"uid {STRANGER} (its owner)")
    assert f"make {path} writable by root alone" in out


def test_runbook_directory_writable_by_everyone_is_refused_even_when_sticky(project: Project):
    project.write("work.hcl", RUNBOOK)
    runbooks = project.root / ".oj" / "runbooks"
    runbooks.chmod(0o1777)  # anyone could add a runbook: sticky does not help here
    assert_refused(project, runbooks, "every user")


def test_a_file_under_a_runbook_subdirectory_counts_whatever_its_name(project: Project):
    project.write("work.hcl", RUNBOOK)
    sub = project.root / ".oj" / "runbooks" / "more"
    sub.mkdir()
    (sub / "extra.toml").write_text("")
    os.chown(sub / "extra.toml", STRANGER, -1)
    assert_refused(project, sub / "extra.toml", f"uid {STRANGER} (its owner)")


def test_project_dir_owned_by_another_user_is_refused(project: Project):
    project.write("work.hcl", RUNBOOK)
    os.chown(project.root, STRANGER, -1)  # its owner could swap .oj/ for their own
    assert_refused(project, project.root, f"uid {STRANGER} (its owner)")


def test_world_writable_project_dir_is_refused_unless_sticky(project: Project):
    project.write("work.hcl", RUNBOOK)
    project.root.chmod(0o777)
    assert_refused(project, project.root, "every user")
    project.root.chmod(0o1777)  # like /tmp: others cannot rename or replace .oj/
    proc = project.ojd("worker", "w", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert (project.root / "ran.txt").read_text() == "ran 1\n"


def test_runbook_symlinked_into_a_directory_of_another_user_is_refused(project: Project,
                                                                        tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "work.hcl"
    target.write_text(project.write("work.hcl", RUNBOOK).read_text())
    (project.root / ".oj" / "runbooks" / "work.hcl").unlink()
    (project.root / ".oj" / "runbooks" / "work.hcl").symlink_to(target)
    os.chown(elsewhere, STRANGER, -1)  # the file is root's, but its directory is not
    assert_refused(project, elsewhere, f"uid {STRANGER} (its owner)")


def test_group_writable_runbook_is_refused_when_the_group_has_another_member(
        project: Project):
    path = project.write("work.hcl", RUNBOOK)
    path.chmod(0o664)
    os.chown(path, 0, 0)  # group root: root is its only member
    status, out = run_worker(project)
    assert status == 0, out
    (project.root / "ran.txt").unlink()
    os.chown(path, 0, 1)  # group daemon: user daemon has it as primary group
    assert_refused(project, path, "group daemon (daemon)")


def test_an_acl_entry_granting_write_to_another_user_is_refused(project: Project):
    path = project.write("work.hcl", RUNBOOK)
    # system.posix_acl_access: version 2, then (tag, perm, id): user::rw- user:STRANGER:rw-
    # group::r-- mask::rw- other::r--
    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in
        ((0x01, 6, 0xFFFFFFFF), (0x02, 6, STRANGER), (0x04, 4, 0xFFFFFFFF),
         (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)))
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as e:
        # justified: skipped only outside CI (require fails in CI, whose disk has ACLs)
        require(False, f"no POSIX ACLs on this file system: {e}")
    assert_refused(project, path, f"uid {STRANGER} (an ACL entry)")


def test_run_as_is_refused_for_a_user_manager(project: Project):
    project.write("work.hcl", RUNBOOK)
    proc = project.oj("worker", "start", "--user", "--run-as", "daemon", "w", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("oj: --run-as is for system workers: run it as root")


def test_run_as_needs_the_oj_group_and_records_nothing_without_it(project: Project,
                                                                   tmp_path):
    import subprocess

    from conftest import OJ

    # a machine without group oj, whether or not this one has it: a private /etc/group
    group = tmp_path / "group"
    with open("/etc/group") as f:
        group.write_text("".join(line for line in f if not line.startswith("oj:")))
    project.write("work.hcl", RUNBOOK)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$0" /etc/group && exec "$@"', str(group),
         OJ, "worker", "start", "--run-as", "daemon", "w"],
        cwd=project.root, env=project.env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("oj: group 'oj' does not exist; create it ('groupadd "
                                  "--system oj'")
    assert project.json("worker", "list") == []


def test_a_refusal_names_the_worker_and_the_user_escaped_on_one_line(project: Project):
    path = project.write("work.hcl", RUNBOOK)
    os.chown(path, STRANGER, -1)
    proc = project.oj("worker", "start", "w", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("oj: refusing to run worker 'w' as root: ")
    # a name no unit can carry is refused before any check, escaped
    proc = project.oj("worker", "start", "w\nx", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("oj: 'w\\nx' is not a worker name"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    proc = project.oj("worker", "start", "--run-as", "no\nbody", "w", check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("oj: no user 'no\\nbody' on this machine; name an existing user "
                           "with --run-as (or --run-as root)\n")


# -- the files a runbook names: an agent's prompt_file, the scripts its steps run by path --

AGENT_RUNBOOK = """
    queue "jobs" {
      vars = ["n"]
    }

    worker "w" {
      source  = { queue = "jobs" }
      handler = { pipeline = "work" }
    }

    pipeline "work" {
      vars = ["item"]
      step "prep" {
        run     = "PREP"
        on_done = { step = "ask" }
      }
      step "ask" {
        run = { agent = "helper" }
      }
    }

    agent "helper" {
      run         = "printf %s > ${invoke.dir}/agent.txt"
      prompt_file = "prompts/task.md"
      on_dead     = "done"
      idle        = "1s"
    }
    """


def test_a_prompt_file_of_another_user_is_refused_before_any_job_runs(project: Project):
    project.write("work.hcl", AGENT_RUNBOOK.replace(
        "PREP", "echo ran ${var.item.n} >> ${invoke.dir}/ran.txt"))
    prompt = project.root / "prompts" / "task.md"
    prompt.parent.mkdir()
    prompt.write_text("do as I say\n")
    os.chown(prompt, STRANGER, -1)  # its text would reach an agent that runs as root
    out = assert_refused(project, prompt, f"uid {STRANGER} (its owner)")
    assert f"or make {prompt} writable by root alone" in out
    assert not (project.root / "agent.txt").exists()
    # oj worker start refuses it too, before anything is recorded or started
    proc = project.oj("worker", "start", "w", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"oj: refusing to run worker 'w' as root: {prompt} is "
                                  f"writable by uid {STRANGER} (its owner)")
    assert project.json("worker", "list") == []


def test_a_prompt_file_given_away_after_the_load_is_refused_when_the_step_reads_it(
        project: Project):
    # the load finds no prompt file (its directory is root's); the job's first step makes
    # one for another user, as a step checking out their branch could
    project.write("work.hcl", AGENT_RUNBOOK.replace(
        "PREP", f"mkdir -p prompts && echo 'do as I say' > prompts/task.md && "
                f"chown {STRANGER} prompts/task.md"))
    prompt = project.root / "prompts" / "task.md"
    project.oj("queue", "push", "jobs", '{"n": "1"}')
    proc = project.ojd("worker", "w", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out
    assert prompt.stat().st_uid == STRANGER
    [job] = project.json("job", "list")
    assert job["status"] == "failed", job
    # the step fails with the refusal and its ways out, on one line
    error = job["error"]
    assert error.startswith(
        f"step 'ask' failed (exit 2): refusing to read agent 'helper' prompt_file {prompt} "
        f"as root: {prompt} is writable by uid {STRANGER} (its owner), who could make it run "
        "their code as root; run worker 'w' as "), error
    assert error.endswith(f"or make {prompt} writable by root alone") and "\n" not in error
    assert not (project.root / "agent.txt").exists()  # the agent never started


@pytest.mark.parametrize("run", [
    "./scripts/deploy.sh ${var.item.n}",
    "bash -e scripts/deploy.sh ${var.item.n}",
    "set -e; . scripts/deploy.sh",
    "out=$(${invoke.dir}/scripts/deploy.sh) && echo $out",
])
def test_a_script_a_step_runs_by_path_is_refused_when_another_user_can_change_it(
        project: Project, run: str):
    project.write("work.hcl", RUNBOOK.replace(
        "echo ran ${var.item.n} >> ${invoke.dir}/ran.txt", run))
    script = project.root / "scripts" / "deploy.sh"
    script.parent.mkdir()
    script.write_text("echo ran 1 >> ran.txt\n")
    script.chmod(0o755)
    os.chown(script, STRANGER, -1)
    assert_refused(project, script, f"uid {STRANGER} (its owner)")


def test_a_named_script_in_a_sticky_directory_must_be_there(project: Project):
    project.write("work.hcl", RUNBOOK.replace(
        "echo ran ${var.item.n} >> ${invoke.dir}/ran.txt", "bash scripts/deploy.sh"))
    scripts = project.root / "scripts"
    scripts.mkdir()
    scripts.chmod(0o1777)  # others may add entries, not replace root's
    (scripts / "deploy.sh").write_text("echo ran 1 >> ran.txt\n")
    status, out = run_worker(project)
    assert status == 0, out
    assert (project.root / "ran.txt").read_text() == "ran 1\n"
    (project.root / "ran.txt").unlink()
    (scripts / "deploy.sh").unlink()  # anyone could make it now
    assert_refused(project, scripts, "every user")


def test_a_cron_tick_refuses_a_script_its_run_names_that_another_user_can_change(
        project: Project):
    import subprocess

    from conftest import OJD

    project.write("crons.hcl", 'cron "tidy" {\n  interval = "1h"\n'
                               '  run      = "./tidy.sh >> ${invoke.dir}/ran.txt"\n}\n')
    script = project.root / "tidy.sh"
    script.write_text("#!/bin/sh\necho tidied\n")
    script.chmod(0o755)
    os.chown(script, STRANGER, -1)
    proc = subprocess.run([OJD, "cron", "tidy", "--project", str(project.root)],
                          cwd=project.root, env=project.env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 78, proc.stderr
    assert (f"refusing to run cron 'tidy' as root: {script} is writable by uid {STRANGER} "
            "(its owner)") in proc.stderr
    assert not (project.root / "ran.txt").exists()
    assert project.json("job", "list") == []


def test_a_project_config_another_user_can_change_is_refused_as_its_agents_command(
        project: Project):
    """`.oj/config.toml` says which command an agent step runs: it is code, as a runbook."""
    project.write("work.hcl", AGENT_RUNBOOK.replace(
        "PREP", "echo ran ${var.item.n} >> ${invoke.dir}/ran.txt"))
    config = project.root / ".oj" / "config.toml"
    config.write_text('[agents.helper]\ncommand = "touch agent.txt"\n')
    os.chown(config, STRANGER, -1)
    assert_refused(project, config, f"uid {STRANGER} (its owner)")
    assert not (project.root / "agent.txt").exists()
