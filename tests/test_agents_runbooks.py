"""The shipped runbooks (runbooks/build.hcl, bugfix.hcl, merge.hcl) end to end, with the
fake agent standing in for the AI through the project's .oj/config.toml: workers run as
real units of the sandbox's systemd, whose environment is not the test's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import sandbox_oj

OJ = os.path.join(os.path.dirname(sys.executable), "oj")
FAKE = str(Path(__file__).with_name("fake_agent.py"))
RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"


@pytest.fixture(scope="module")
def units(sandbox: Sandbox) -> Sandbox:
    sandbox.run([OJ, "systemd", "install"])
    return sandbox


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


class GitProject:
    """A bare origin, a clone of it as the project, the repo's runbooks in .oj/runbooks/."""

    def __init__(self, sb: Sandbox, base: Path) -> None:
        self.sb = sb
        self.origin = base / "origin.git"
        self.root = base / "project"
        self.state = base / "state"
        git("init", "-q", "--bare", "-b", "main", str(self.origin), cwd=base)
        git("clone", "-q", str(self.origin), str(self.root), cwd=base)
        for key, value in (("user.name", "Test"), ("user.email", "test@example.com")):
            git("config", key, value, cwd=self.root)
        (self.root / "README").write_text("a project\n")
        (self.root / ".gitignore").write_text(".oj/\n")
        git("add", "-A", cwd=self.root)
        git("commit", "-q", "-m", "start", cwd=self.root)
        git("push", "-q", "origin", "HEAD:main", cwd=self.root)
        shutil.copytree(RUNBOOKS, self.root / ".oj" / "runbooks")
        config = ""
        for agent, made in (("builder", "feature.txt"), ("bugs", "fix.txt")):
            command = shlex.join([sys.executable, FAKE, "--commit", made])
            config += f"[agents.{agent}]\ncommand = {json.dumps(command)}\nidle = \"1s\"\n"
        (self.root / ".oj" / "config.toml").write_text(config)

    def oj(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sandbox_oj(self.sb, self.state, *args, cwd=self.root, check=check)

    def main_log(self) -> list[str]:
        return git("log", "--format=%s", "main", cwd=self.origin).splitlines()

    def stop(self, *workers: str) -> None:
        """Stop the workers and take their drop-ins away: other tests of the sandbox count
        the drop-ins they find."""
        for name in workers:  # the project is named after its directory
            unit = f"oj-worker@{self.root.name}:{name}.service"
            self.sb.systemctl("stop", unit, check=False)
            self.sb.systemctl("reset-failed", unit, check=False)
        self.oj("systemd", "uninstall")
        self.sb.run([OJ, "systemd", "install"])  # the template, for the tests after


@pytest.fixture
def repo(units: Sandbox, sandbox_dir: Path):
    p = GitProject(units, sandbox_dir)
    yield p
    p.stop("merge", "fix")


def test_build_commits_through_the_agent_and_the_merge_worker_merges_it(repo: GitProject):
    repo.oj("run", "build", "search", "add full-text search")
    assert "fake agent: feature.txt" in git("log", "--format=%s", "feature/search",
                                            cwd=repo.origin)
    repo.sb.wait_for(lambda: "feat(search): add full-text search" in repo.main_log(),
                     timeout=60, what="the merge worker to merge feature/search")
    assert sorted(repo.main_log()) == ["fake agent: feature.txt",
                                       "feat(search): add full-text search", "start"]
    parents = git("log", "-1", "--format=%P", "main", cwd=repo.origin).split()
    assert len(parents) == 2  # merged by the merge pipeline, --no-ff
    tree = git("ls-tree", "--name-only", "main", cwd=repo.origin).split()
    assert "feature.txt" in tree
    shown = git("show", "main:feature.txt", cwd=repo.origin)
    assert shown == "made for: Build search: add full-text search\n"


def test_bugfix_worker_runs_the_agent_and_its_fix_is_merged(repo: GitProject):
    repo.oj("run", "fix", "login fails on an empty password")
    repo.sb.wait_for(lambda: "fix: login fails on an empty password" in repo.main_log(),
                     timeout=90, what="the fix to be merged")
    shown = git("show", "main:fix.txt", cwd=repo.origin)
    assert shown.startswith("made for: Fix this bug, with a test that fails before the fix: "
                            "login fails on an empty password")
    jobs = json.loads(repo.oj("job", "list", "-o", "json").stdout)
    assert {j["name"]: j["status"] for j in jobs} == {"bugfix": "done", "merge": "done"}


def test_bugfix_gate_fails_a_decision_is_resolved_and_the_fix_is_merged(repo: GitProject):
    """The stand-in agent goes idle without a commit: the runbook's gate fails, the job
    waits on a decision (sent to the exec hook too); resolving it with option 1 types the
    message into the agent, which commits, and the job runs on to the merge."""
    command = shlex.join([sys.executable, FAKE, "--commit", "fix.txt", "--commit-on",
                          "try again"])
    (repo.root / ".oj" / "config.toml").write_text(
        f"[agents.bugs]\ncommand = {json.dumps(command)}\nidle = \"1s\"\n")
    hook = repo.root.parent / "hook.jsonl"
    repo.state.mkdir(mode=0o750, exist_ok=True)
    (repo.state / "oj.conf").write_text(f"notify_exec = cat >> {hook}; echo >> {hook}\n")
    repo.oj("run", "fix", "login fails on an empty password")

    def decisions() -> list[dict]:
        return json.loads(repo.oj("decision", "list", "-o", "json").stdout)

    repo.sb.wait_for(lambda: decisions(), timeout=60, what="a decision")
    (d,) = decisions()
    assert (d["source"], d["step"], d["agent"]) == ("gate", "fix", "bugs")
    assert d["reason"].startswith("on_idle: gate failed (exit 1)")
    assert any("fake agent: started" in line for line in d["screen"])
    jobs = json.loads(repo.oj("job", "list", "-o", "json").stdout)
    assert [(j["status"], j["decision"]) for j in jobs] == [("waiting", d["id"])]
    assert "waiting: decision " + d["id"] in repo.oj("job", "list").stdout
    repo.sb.wait_for(lambda: hook.exists() and hook.read_text().strip(), timeout=30,
                     what="the decision at the exec hook")
    sent = json.loads(hook.read_text().splitlines()[0])
    assert (sent["kind"], sent["decision"]["id"]) == ("decision", d["id"])

    out = repo.oj("decision", "resolve", d["id"], "1", "-m", "try again").stdout
    assert out.startswith(f"decision {d['id']} resolved: job {d['job']} runs on")
    repo.sb.wait_for(lambda: "fix: login fails on an empty password" in repo.main_log(),
                     timeout=90, what="the fix to be merged")
    jobs = json.loads(repo.oj("job", "list", "-o", "json").stdout)
    assert {j["name"]: j["status"] for j in jobs} == {"bugfix": "done", "merge": "done"}
    shown = json.loads(repo.oj("decision", "show", d["id"], "-o", "json").stdout)
    assert (shown["status"], shown["option"], shown["message"]) == ("resolved", 1, "try again")
    again = repo.oj("decision", "resolve", d["id"], "2", check=False)
    assert again.returncode == 1 and "was already resolved by root@" in again.stderr
