"""Decisions on a shared PostgreSQL state: a decision made on one host (its worker runs the
bugfix runbook's agent) is seen and resolved from another host (a state dir and OJ_HOST of
its own); the agent on the first host gets the message, and a resolve from the first host
after that is refused naming the second."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import Project, wait_until

FAKE = str(Path(__file__).with_name("fake_agent.py"))
RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def project_with_origin(base: Path) -> Path:
    origin, root = base / "origin.git", base / "project"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=base)
    git("clone", "-q", str(origin), str(root), cwd=base)
    for key, value in (("user.name", "Test"), ("user.email", "test@example.com")):
        git("config", key, value, cwd=root)
    (root / "README").write_text("a project\n")
    (root / ".gitignore").write_text(".oj/\n")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "start", cwd=root)
    git("push", "-q", "origin", "HEAD:main", cwd=root)
    (root / ".oj" / "runbooks").mkdir(parents=True)
    shutil.copy(RUNBOOKS / "bugfix.hcl", root / ".oj" / "runbooks")
    command = shlex.join([sys.executable, FAKE, "--commit", "fix.txt", "--commit-on",
                          "try again"])
    (root / ".oj" / "config.toml").write_text(
        f"[agents.bugs]\ncommand = {json.dumps(command)}\nidle = \"1s\"\n")
    return root


def test_a_decision_made_on_one_host_is_resolved_from_another(postgres, tmp_path: Path):
    url = postgres.new_database()
    root = project_with_origin(tmp_path)
    here = Project(root, tmp_path / "state-a", url=url)
    there = Project(root, tmp_path / "state-b", url=url)
    agent_log = tmp_path / "agent.jsonl"
    worker = here.ojd("worker", "fix", "--foreground", OJ_HOST="host-a",
                      FAKE_AGENT_LOG=str(agent_log))
    try:
        here.oj("queue", "push", "bugs", "--var", "title=login fails", OJ_HOST="host-a")

        def seen_there() -> list[dict]:
            return json.loads(there.oj("decision", "list", "-o", "json",
                                       OJ_HOST="host-b").stdout)

        wait_until(seen_there, "the decision, from the other host", timeout=60)
        (d,) = seen_there()
        assert (d["source"], d["step"]) == ("gate", "fix")
        assert d["id"] in there.oj("decision", "show", d["id"], OJ_HOST="host-b").stdout
        out = there.oj("decision", "resolve", d["id"], "1", "-m", "try again",
                       OJ_HOST="host-b").stdout
        # the job's runner is on host-a: not "gone" from here
        assert out.strip() == (f"decision {d['id']} resolved: job {d['job']} runs on, the "
                               "message goes to its agent")
        refused = here.oj("decision", "resolve", d["id"], "3", check=False, OJ_HOST="host-a")
        assert refused.returncode == 1
        assert refused.stderr == (f"oj: decision {d['id']} was already resolved by "
                                  "root@host-b (option 1); nothing to do\n")

        def fix_step_ok() -> bool:
            job = here.json("job", "show", d["job"])
            return any(h["step"] == "fix" and h["exit"] == 0 for h in job["history"])

        wait_until(fix_step_ok, "the agent step to end done on host-a", timeout=60)
        lines = [json.loads(line) for line in agent_log.read_text().splitlines()]
        assert {"event": "input", "line": "try again"} in [
            {k: e[k] for k in ("event", "line")} for e in lines if e["event"] == "input"]
        shown = here.json("decision", "show", d["id"])
        assert (shown["by"], shown["host"], shown["message"]) == \
            ("root", "host-b", "try again")
        assert "fake agent: fix.txt" in git("log", "--all", "--format=%s", cwd=root)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        live = [j["id"] for j in here.json("job", "list")
                if j["status"] in ("running", "waiting")]
        if live:
            here.oj("job", "cancel", *live, check=False)
        for sock in (tmp_path / "state-a" / "agents").glob("*"):
            subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)
