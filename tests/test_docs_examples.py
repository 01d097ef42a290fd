"""Every shell example in README.md and docs/*.md runs as written: each doc's ```sh and
```console blocks, in order, as one bash script (``set -euo pipefail``: every command must
exit 0) inside the systemd sandbox with oj's units installed, the way a reader pastes them
into a terminal. A block that cannot run here is marked in the doc's source with
``<!-- not run: REASON -->`` just before it, and NOT_RUN below lists those blocks, so they
stay few and deliberate.

What a reader brings is set up here, and only that: README's "Use" and OPERATIONS.md start
from a git repository `my-project` whose origin has `main` (the shipped runbooks merge and
push there), FIRST-RUNBOOK.md from an empty directory; CLI.md and OPERATIONS.md run in
`my-project` with the shipped runbooks in `.oj/runbooks/`. The AI agent the shipped
runbooks call is stood in for by tests/fake_agent.py through the project's `.oj/config.toml`
(RUNBOOKS.md, *Standing in for an agent*). `/path/to/oj` is this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import SANDBOX_PATH

REPO = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).with_name("fake_agent.py")
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(sh|console)\s*$")
NOT_RUN_MARK = re.compile(r"<!-- not run: (.+?) -->")

# (doc, the block's first line) of every block marked not run
NOT_RUN = {
    ("README.md", "packaging/demo.sh"),
    ("docs/OPERATIONS.md", "apt-get install gcc python3-dev libsystemd-dev pkg-config"),
    ("docs/OPERATIONS.md", "sudo loginctl enable-linger alice"),
    ("docs/OPERATIONS.md", "systemctl stop 'oj-worker@*' 'oj-job-*.scope'"),
    ("docs/OPERATIONS.md", "docker run -d --name shop -v shop-state:/var/lib/oj shop"),
    ("docs/OPERATIONS.md", "oj web"),
    ("docs/OPERATIONS.md", "systemctl enable --now oj-web.socket"),
    ("docs/OPERATIONS.md", "echo \"web_token = $(head -c 24 /dev/urandom | base64 "
                           "| tr '+/' '-_')\" >> /var/lib/oj/oj.conf"),
    ("docs/OPERATIONS.md", "systemctl enable --now oj-metrics.socket       # (--user for a "
                           "user's state dir)"),
    ("docs/OPERATIONS.md", "systemctl edit oj-metrics.socket     # [Socket] ListenStream=  "
                           "then  ListenStream=0.0.0.0:9464"),
}
# Commands that run until Ctrl-C: run for a moment, then interrupted; they must not have
# failed before that.
FOLLOWERS = re.compile(r"^(oj status .*--watch|oj (worker|cron) logs .*-f\b|"
                       r"ojd worker \S+ --foreground\s*(#|$))")
# Where each doc starts: "empty" (an empty directory), "repo" (my-project's parent, the repo
# without runbooks), "project" (in my-project, the shipped runbooks copied in)
START = {"README.md": "repo", "docs/FIRST-RUNBOOK.md": "empty"}


def blocks(doc: str) -> list[tuple[str, str | None]]:
    """The doc's shell blocks, in order: (text, why it is not run, or None)."""
    lines = (REPO / doc).read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            before = [line for line in lines[:i] if line.strip()][-1:]
            mark = NOT_RUN_MARK.search(before[0]) if before else None
            found.append(("\n".join(lines[i + 1:j]), mark.group(1) if mark else None))
            i = j
        i += 1
    return found


def script(doc: str) -> str:
    out = []
    for text, not_run in blocks(doc):
        if not_run:
            continue
        for line in text.replace("/path/to/oj", str(REPO)).splitlines():
            if FOLLOWERS.match(line):
                command = line.split("  #")[0].strip()
                line = (f"timeout -s INT 3 {command} >/dev/null || "
                        "{ rc=$?; [ $rc -eq 124 ] || [ $rc -eq 130 ]; }")
            out.append(line)
    return "\n".join(out) + "\n"


def test_not_run_blocks_are_the_listed_ones():
    marked = {(doc, text.splitlines()[0].split("  #")[0].strip())
              for doc in DOCS for text, why in blocks(doc) if why}
    listed = {(doc, first.split("  #")[0].strip()) for doc, first in NOT_RUN}
    assert marked == listed
    assert sum(1 for doc in DOCS for _ in blocks(doc)) > 15  # the docs' blocks are found


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def my_project(base: Path, runbooks: bool) -> Path:
    """A reader's repository: a clone of a bare origin with `main`, the agent stood in for."""
    origin, root = base / "origin.git", base / "my-project"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=base)
    git("clone", "-q", str(origin), str(root), cwd=base)
    for key, value in (("user.name", "Reader"), ("user.email", "reader@example.com")):
        git("config", key, value, cwd=root)
    (root / "check").write_text("#!/bin/sh\ntrue\n")
    (root / "check").chmod(0o755)
    (root / ".gitignore").write_text(".oj/\nitem.json\nstate.json\n")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "start", cwd=root)
    git("push", "-q", "origin", "HEAD:main", cwd=root)
    (root / ".oj").mkdir()
    config = ""
    for agent in ("builder", "bugs", "resolver"):
        command = shlex.join([sys.executable, str(FAKE), "--commit", f"{agent}.txt"])
        config += f"[agents.{agent}]\ncommand = {json.dumps(command)}\nidle = \"3s\"\n"
    (root / ".oj" / "config.toml").write_text(config)
    if runbooks:
        shutil.copytree(REPO / "runbooks", root / ".oj" / "runbooks")
    return root


@pytest.mark.parametrize("doc", [d for d in DOCS if any(not w for _, w in blocks(d))])
def test_shell_examples_run_as_written(doc: str, installed: Sandbox, sandbox_dir: Path):
    start = START.get(doc, "project")
    if start == "empty":
        cwd = sandbox_dir / "work"
        cwd.mkdir()
    else:
        root = my_project(sandbox_dir, runbooks=start == "project")
        cwd = root if start == "project" else sandbox_dir
    path = sandbox_dir / "example.sh"
    path.write_text("set -euo pipefail -x\n" + script(doc))
    env = {"OJ_STATE_DIR": str(sandbox_dir / "state"), "PATH": SANDBOX_PATH,
           "HOME": str(sandbox_dir)}
    try:
        proc = installed.run(["bash", str(path)], cwd=str(cwd), env=env, check=False,
                             timeout=240)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 0, f"{doc}: exited {proc.returncode}\n{proc.stderr[-4000:]}"
        if doc == "docs/FIRST-RUNBOOK.md":  # what its comments say the greetings are (the
            # service's greeting of ada again may come after them, or not yet)
            greetings = (cwd / "hello" / "greetings.txt").read_text()
            assert greetings.startswith("hello, ada\nhello, bob\n"), greetings
    finally:
        for unit in ("oj-worker@*", "oj-cron@*.timer", "oj-job-*.scope"):
            installed.systemctl("stop", unit, check=False)
        # what the examples enabled (oj systemd uninstall leaves instances' links): a later
        # test's oj-workers.target must not want a timer whose schedule is gone
        installed.run(["bash", "-c", "for l in /etc/systemd/system/*.wants/oj-worker@*.service "
                       "/etc/systemd/system/*.wants/oj-cron@*.timer; do [ -L \"$l\" ] && "
                       "systemctl disable \"${l##*/}\"; done; true"], check=False)
        installed.run(["env", f"OJ_STATE_DIR={env['OJ_STATE_DIR']}", "PATH=" + SANDBOX_PATH,
                       os.path.join(os.path.dirname(sys.executable), "oj"), "systemd",
                       "uninstall"], cwd=str(cwd), check=False)
        installed.run([os.path.join(os.path.dirname(sys.executable), "oj"), "systemd",
                       "install"], check=False)
