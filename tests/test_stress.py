"""Ordinary concurrency, many times over: pushers, a draining worker and compaction at once.
Every acknowledged push must run exactly once, and the state must say so afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import OJ, OJD, Project

RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      concurrency = 4
      poll        = "100ms"
    }

    pipeline "p" {
      vars = ["it"]
      step "s" {
        run = "echo ${var.it.n} >> \"${invoke.dir}/done.txt\""
      }
    }
    """

# Each push opens the state afresh, as the `oj queue push` of a shell step does.
PUSHER = r"""
import json, sys
from oj.push import do_push
tag, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    do_push("q", json.dumps({"n": f"{tag}-{i}"}), (), None)
    sys.stdout.flush()
"""

# Snapshots (and so compactions) as fast as it can, from yet another process.
COMPACTOR = r"""
import os, sys, time
from ojd.store import Store
n = 0
while not os.path.exists(sys.argv[1]):
    store = Store()
    store.load()
    store.snapshot()
    n += 1
    time.sleep(0.01)
print(n)
"""


@pytest.mark.both_stores
def test_pushers_a_draining_worker_and_compaction_lose_nothing(project: Project, tmp_path):
    project.write("w.hcl", RUNBOOK)
    stop = tmp_path / "stop"
    env = project.env(OJ_PROJECT=str(project.root))
    with open(tmp_path / "worker.log", "w") as log:  # a pipe nobody reads would fill up
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=project.root,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    # from the project, as a shell step's push is: ${invoke.dir} is where a push ran
    compactor = subprocess.Popen([sys.executable, "-c", COMPACTOR, str(stop)], env=env,
                                 cwd=project.root, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    pushers = [subprocess.Popen([sys.executable, "-c", PUSHER, f"p{k}", "300"], env=env,
                                cwd=project.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for k in range(4)]
    cli = []
    for i in range(30):  # and the real CLI, in between
        proc = subprocess.run([OJ, "queue", "push", "q", json.dumps({"n": f"cli-{i}"})],
                              cwd=project.root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        cli.append(proc.stdout.strip())
    acked: list[str] = list(cli)
    for p in pushers:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "Traceback" not in err, err
        acked += [line for line in out.splitlines() if line and not line.startswith("oj:")]
    stop.touch()
    compactions, err = compactor.communicate(timeout=60)
    assert compactor.returncode == 0, err
    assert int(compactions) > 20  # the race was really run
    assert len(acked) == len(set(acked)) == 4 * 300 + 30

    done = project.root / "done.txt"
    expected = sorted([f"p{k}-{i}" for k in range(4) for i in range(300)]
                      + [f"cli-{i}" for i in range(30)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ran = done.read_text().split() if done.exists() else []
        if len(ran) >= len(expected):
            break
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    statuses = [i["status"] for i in project.items()]
    assert sorted(ran) == expected, (  # each acknowledged push ran, and ran once
        {s: statuses.count(s) for s in set(statuses)}, (tmp_path / "worker.log").read_text())

    items = project.items()
    assert [i for i in items if i["status"] != "completed"] == []
    for item_id in acked[-5:]:  # the newest are still in the kept history
        assert project.json("queue", "show", item_id)["status"] == "completed"
    check = project.oj("state", "check", "-o", "json", check=False)
    report = json.loads(check.stdout)
    assert report["ok"], report["problems"]
    assert report["lost"] == [] and check.returncode == 0
    if project.url:  # the rows the older kept snapshot covers were deleted
        assert report["records"] < report["last_pos"]
    else:
        assert os.listdir(project.state / "wal")  # a real WAL on disk, compacted many times
