"""The demo's second half: the merge worker as a real unit, oj-worker@project:merge.service
(the demo project is named after its directory, project).

On a machine whose PID 1 is systemd, the host's system manager runs it. Elsewhere (a
container, a CI VM) a private systemd is booted for the demo (tests/sandbox.py) and
powered off at the end. Usage: demo_worker.py PROJECT_DIR STATE_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
BIN = os.path.dirname(sys.executable)


def main(project: str, state: str) -> int:
    env = {"OJ_STATE_DIR": state, "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    if os.path.isdir("/run/systemd/system"):
        def run(*args: str) -> str:
            proc = subprocess.run(args, cwd=project, env={**os.environ, **env}, text=True,
                                  capture_output=True, check=True)
            return proc.stdout
        return drive(run, where="the host's systemd")
    sys.path.insert(0, str(HERE / "tests"))
    from sandbox import Sandbox, remove_root

    root = Path("/var/lib/oj-sandbox") / f"demo-{uuid.uuid4().hex[:8]}"
    sb = Sandbox(root)
    try:
        sb.boot()

        def run(*args: str) -> str:
            return sb.run(list(args), cwd=project, env=env).stdout
        return drive(run, where="a private systemd (this machine's PID 1 is not systemd)")
    finally:
        sb.poweroff()
        remove_root(root)


def drive(run, where: str) -> int:
    say(f"install the units and start the merge worker on {where}")
    print(run(f"{BIN}/oj", "systemd", "install"), end="")
    print(run(f"{BIN}/oj", "worker", "start", "merge"), end="")
    say("oj worker start merge, again: it runs, so this start only wakes it (idempotent; "
        "the shipped runbooks' steps run it after every push)")
    print(run(f"{BIN}/oj", "worker", "start", "merge"), end="")
    say("push three branches; each push wakes the worker")
    for n in (1, 2, 3):
        run(f"{BIN}/oj", "queue", "push", "merges", "--var", f"branch=feature-{n}",
            "--var", f"title=Merge feature {n}")
    print(run(f"{BIN}/oj", "queue", "list"), end="")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        items = json.loads(run(f"{BIN}/oj", "queue", "list", "--items", "-o", "json"))
        if all(i["status"] in ("completed", "dead") for i in items):
            break
        time.sleep(0.2)
    say("systemctl status oj-worker@project:merge")
    print(_status(run), end="")
    say("oj worker list / oj queue list / oj job list")
    for args in (("worker", "list"), ("queue", "list"), ("job", "list")):
        print(run(f"{BIN}/oj", *args), end="")
    run(f"{BIN}/oj", "worker", "stop", "merge")
    return 0


def _status(run) -> str:
    try:
        return run("systemctl", "status", "--no-pager", "--lines=12",
                   "oj-worker@project:merge.service")
    except subprocess.CalledProcessError as e:  # status exits 3 when inactive
        return e.stdout
    except Exception as e:  # the sandbox's run raises its own error type
        return str(e)


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
