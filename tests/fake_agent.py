"""A stand-in for an AI agent in tests: behaves as its options say, logs what it saw.

    fake_agent.py [--exit N] [--commit FILE [--commit-on TEXT]] [--print TEXT] [--ask] [PROMPT]

It prints "fake agent: started" and its prompt, then (with --commit) writes FILE and
commits it (with --commit-on, once a line holding TEXT is read instead), then exits N
(--exit) or reads lines from the terminal: each is logged and echoed as "got: LINE";
"exit N" makes it exit N; anything else it answers then goes quiet again. With --ask it
first shows a permission prompt as coding agents draw them (a question, then numbered
choices) and reads the answer. Every start, prompt, answer and line read is appended to
$FAKE_AGENT_LOG as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def note(**entry: object) -> None:
    path = os.environ.get("FAKE_AGENT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**entry, "cwd": os.getcwd()}) + "\n")


def commit(path: str, prompt: str) -> None:
    with open(path, "w") as f:
        f.write(f"made for: {prompt}\n")
    subprocess.run(["git", "add", path], check=True)
    subprocess.run(["git", "-c", "user.name=fake", "-c", "user.email=fake@example.com",
                    "commit", "-q", "-m", f"fake agent: {path}"], check=True)
    print(f"committed {path}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exit", type=int)
    ap.add_argument("--commit")
    ap.add_argument("--commit-on")
    ap.add_argument("--print", dest="text")
    ap.add_argument("--ask", action="store_true")
    ap.add_argument("prompt", nargs="?", default="")
    a = ap.parse_args()
    note(event="start", prompt=a.prompt, env=os.environ.get("FAKE_AGENT_ENV"))
    print("fake agent: started", flush=True)
    print(f"prompt: {a.prompt}", flush=True)
    if a.text:
        print(a.text, flush=True)
    if a.commit and not a.commit_on:
        commit(a.commit, a.prompt)
    if a.exit is not None:
        return a.exit
    if a.ask:
        print("Bash command: rm -rf build/", flush=True)
        print("Do you want to proceed?", flush=True)
        print("\u276f 1. Yes", flush=True)
        print("  2. No, and tell me what to do differently", flush=True)
        line = sys.stdin.readline().rstrip("\n")
        note(event="answer", line=line)
        print(f"answered: {line}", flush=True)
    for line in sys.stdin:
        line = line.rstrip("\n")
        note(event="input", line=line)
        print(f"got: {line}", flush=True)
        if a.commit and a.commit_on and a.commit_on in line:
            commit(a.commit, a.prompt)
        if line.startswith("exit "):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
