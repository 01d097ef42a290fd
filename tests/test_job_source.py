"""Upstream's `source`: "folder" (a fresh directory per job) and { git = true } (a git
worktree of the invoking repository on a branch of its own), with ${source.*}."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Project

RUNBOOK = """
command "feat" {
  args = "<name> [--fail <fail>]"
  defaults = { fail = "no" }
  run  = { job = "feat" }
}

job "feat" {
  vars = ["name", "fail"]
  source {
    git    = true
    branch = "feat/${var.name}-${source.nonce}"
  }
  step "work" {
    run = <<-SHELL
      echo "root=${source.root} branch=${source.branch} pwd=$PWD"
      git rev-parse --abbrev-ref HEAD
      echo hello > feature.txt
      git add feature.txt
      git -c user.name=t -c user.email=t@t commit -qm "add feature"
      test ${var.fail} = no
    SHELL
  }
}

command "scratch" {
  run = { job = "scratch" }
}

job "scratch" {
  source = "folder"
  step "look" { run = "echo root=${source.root} nonce=${source.nonce} pwd=$PWD; ls -A | wc -l" }
}
"""


def git(project: Project, *args: str) -> str:
    return subprocess.run(["git", "-C", str(project.root), *args], check=True,
                          capture_output=True, text=True).stdout


def repo(project: Project) -> None:
    git(project, "init", "-q", "-b", "main")
    (project.root / "README").write_text("x\n")
    git(project, "add", "README")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")


def test_a_git_source_runs_in_a_worktree_on_its_own_branch_removed_when_done(project: Project):
    project.write("feat.hcl", RUNBOOK)
    repo(project)
    project.oj("run", "feat", "login")
    [job] = project.json("job", "list")
    assert job["status"] == "done", project.oj("job", "logs", job["id"]).stdout
    log = project.oj("job", "logs", job["id"]).stdout
    branch = f"feat/login-{job['id']}"
    assert f"root={job['cwd']} branch={branch} pwd={job['cwd']}" in log
    assert f"\n{branch}\n" in log  # the worktree is on that branch
    assert git(project, "log", "--format=%s", "-1", branch).strip() == "add feature"
    assert str(job["cwd"]) not in git(project, "worktree", "list")  # removed when done
    assert not (project.root / "feature.txt").exists()  # the checkout is untouched


def test_a_failed_jobs_worktree_is_kept_for_a_person_to_look_at(project: Project):
    project.write("feat.hcl", RUNBOOK)
    repo(project)
    project.oj("run", "feat", "broken", "--fail", "yes", check=False)
    [job] = project.json("job", "list")
    assert job["status"] == "failed"
    assert job["cwd"] in git(project, "worktree", "list")
    assert Path(job["cwd"], "feature.txt").read_text() == "hello\n"


def test_a_git_source_outside_a_repository_fails_the_job_saying_why(project: Project):
    project.write("feat.hcl", RUNBOOK)
    project.oj("run", "feat", "x", check=False)
    [job] = project.json("job", "list")
    assert job["status"] == "failed"
    assert job["error"].startswith("could not make the job's git worktree (in "), job["error"]


def test_a_folder_source_is_a_fresh_directory_per_job(project: Project):
    project.write("feat.hcl", RUNBOOK)
    project.oj("run", "scratch")
    [job] = project.json("job", "list")
    assert job["status"] == "done"
    log = project.oj("job", "logs", job["id"]).stdout
    assert f"root={job['cwd']} nonce={job['id']} pwd={job['cwd']}\n0\n" in log
    assert job["cwd"] != str(project.root)


def test_workspace_prune_removes_a_kept_worktree_and_its_repository_forgets_it(
        project: Project):
    project.write("feat.hcl", RUNBOOK)
    repo(project)
    project.oj("run", "feat", "kept", "--fail", "yes", check=False)
    [job] = project.json("job", "list")
    assert job["cwd"] in git(project, "worktree", "list")
    project.oj("workspace", "prune", "--older-than", "0s")
    assert not Path(job["cwd"]).exists()
    assert job["cwd"] not in git(project, "worktree", "list")
