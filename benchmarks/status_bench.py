"""How long ``oj status`` takes with 50 workers and 10,000 items, against baselines of the same run.

    python benchmarks/status_bench.py [--workers N] [--items M] [--runs K]

Builds, through the store API (not the CLI), a state dir for one project whose runbook
defines N workers, each on a queue of its own: M items spread over the queues, two running
jobs per worker (their items active), a hundred failed jobs with their items dead, a few
jobs waiting for a person, a thousand items done, the rest pending; a lock file per worker
names a live process (this one), so every worker takes the foreground check a running
worker takes. Then K runs each, round-robin, of ``oj status``, ``oj status -o json`` and the
baselines ``python -c pass`` (the interpreter ``oj`` runs on), ``oj queue list`` and
``oj worker list`` (the same state, read the same way), with median, p90 and ratios.

Without a systemd manager the D-Bus call is not part of the figure. ``--systemd`` (root)
runs every command, baselines too, inside the private systemd of tests/sandbox.py with the N
worker units installed and enabled (so loaded): ``oj status`` then asks the manager once
(``ListUnitsByPatterns``, N rows back) and reads N enablement links.
Everything happens in a temporary directory (under /var/tmp, or the sandbox's shared
directory), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli_bench import find_oj  # noqa: E402 - the same oj as the CLI benchmark times

from ojd import identity, wake  # noqa: E402
from ojd.store import Store  # noqa: E402

AIM_MS = 200.0
BATCH = 2000  # events per store append


def runbook(workers: int) -> str:
    parts = []
    for n in range(workers):
        parts.append(f'queue "q{n}" {{\n  type = "persisted"\n  vars = ["n"]\n}}\n'
                     f'worker "w{n}" {{\n  source = {{ queue = "q{n}" }}\n'
                     f'  handler = {{ pipeline = "p" }}\n  concurrency = 2\n}}\n')
    parts.append('pipeline "p" {\n  vars = ["item"]\n  step "one" {\n    run = "true"\n  }\n}\n')
    return "".join(parts)


def build(state: Path, project: str, workers: int, items: int) -> dict[str, int]:
    """The state, through ``Store.append``; returns how many of each kind it holds."""
    store = Store(str(state))
    store.load()
    now = time.time()
    events: list[dict] = []
    counts = {"running": 0, "failed": 0, "waiting": 0, "done": 0, "pending": 0}

    def flush() -> None:
        if events:
            store.append(*events)
            events.clear()

    def add(*evs: dict) -> None:
        events.extend(evs)
        if len(events) >= BATCH:
            flush()

    for n in range(workers):
        add({"type": "worker:recorded", "name": f"w{n}", "p": project, "runbook": "0" * 32,
             "queue": f"q{n}", "pipeline": "p", "concurrency": 2, "ts": now - 3600},
            {"type": "worker:started", "name": f"w{n}", "invocation": None,
             "pid": os.getpid(), "ts": now - 3600})
    for i in range(items):
        n = i % workers
        item, job = f"i{i:07d}", f"j{i:07d}"
        add({"type": "queue:pushed", "id": item, "p": project, "q": f"q{n}",
             "data": {"n": str(i)}, "key": f"k{i}", "ts": now - 3000 + i * 0.1})
        rank = i // workers  # the i-th item of its queue
        if rank >= 2 and i >= 1000 + 100 + 2 * workers + 5:
            counts["pending"] += 1
            continue
        kind = ("running" if rank < 2 else "failed" if i < 2 * workers + 100
                else "waiting" if i < 2 * workers + 105 else "done")
        counts[kind] += 1
        ts = now - 600 + i * 0.01
        add({"type": "job:created", "id": job, "p": project, "pipeline": "p", "name": "p",
             "vars": {"item": {"n": str(i)}}, "cwd": project, "ws": None, "invoke": project,
             "item": item, "worker": f"w{n}", "by": f"w{n}@bench", "ts": ts},
            {"type": "queue:taken", "id": item, "by": f"w{n}@bench", "job": job, "ts": ts},
            {"type": "job:step_started", "id": job, "step": "one", "ts": ts})
        if kind == "failed":
            add({"type": "job:step_finished", "id": job, "step": "one", "exit": 1,
                 "next": None, "failing": True, "ts": ts},
                {"type": "job:finished", "id": job, "outcome": "failed",
                 "error": "step 'one' failed (exit 1)", "ts": ts},
                {"type": "queue:failed", "id": item, "error": "step 'one' failed (exit 1)",
                 "dead": True, "retry_at": None, "ts": ts})
        elif kind == "waiting":
            add({"type": "job:waiting", "id": job, "reason": "agent 'a' is idle", "ts": ts})
        elif kind == "done":
            add({"type": "job:step_finished", "id": job, "step": "one", "exit": 0,
                 "next": None, "failing": False, "ts": ts},
                {"type": "job:finished", "id": job, "outcome": "done", "ts": ts},
                {"type": "queue:completed", "id": item, "ts": ts})
    flush()
    store.snapshot()
    # every worker "runs": its lock file names this process, as a running worker's does
    os.makedirs(state / "workers", exist_ok=True)
    for n in range(workers):
        Path(wake.lock_path(str(state), f"w{n}")).write_text(identity.pid_file_text(os.getpid()))
    return counts


def run_once(argv: list[str], cwd: str, env: dict[str, str], sb=None) -> float:
    if sb is not None:
        argv, env = sb.command(argv, env=env, cwd=cwd)
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"status_bench: {' '.join(argv)} exited {proc.returncode}: "
                 f"{proc.stderr.decode(errors='replace').strip()}")
    return dt


def time_cases(cases: dict[str, list[str]], runs: int, cwd: str, env: dict[str, str],
               sb=None) -> dict[str, list[float]]:
    """``runs`` timings of each case, interleaved (a drift of the machine hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, argv in cases.items():
            times[name].append(run_once(argv, cwd, env, sb))
    return times


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--systemd", action="store_true",
                        help="run inside a private systemd with the worker units enabled")
    args = parser.parse_args()
    oj, python = find_oj()
    sb = None
    where = Path("/var/tmp")
    if args.systemd:
        sys.path.insert(0, str(REPO / "tests"))
        from sandbox import Sandbox
        from systemd_plugin import new_root

        sb = Sandbox(new_root())
        sb.boot()
        where = sb.root / "shared"
        where.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="oj-status-bench-", dir=where))
    try:
        root = tmp / "project"
        (root / ".oj" / "runbooks").mkdir(parents=True)
        (root / ".oj" / "runbooks" / "bench.hcl").write_text(runbook(args.workers))
        project = os.path.realpath(root)
        state = tmp / "state"
        t = time.perf_counter()
        counts = build(state, project, args.workers, args.items)
        print(f"state: {args.workers} workers, {args.items} items "
              f"({', '.join(f'{v} {k}' for k, v in counts.items())}); built in "
              f"{time.perf_counter() - t:.1f} s")
        env = {k: v for k, v in os.environ.items() if k not in ("OJ_PROJECT", "NO_COLOR")}
        env["OJ_STATE_DIR"] = str(state)
        if sb is not None:
            env = {"OJ_STATE_DIR": str(state)}
            sb.run([oj, "systemd", "install"])
            sb.systemctl("enable", *(f"oj-worker@w{n}.service" for n in range(args.workers)))
            loaded = sb.systemctl("list-units", "--all", "--no-legend", "--plain",
                                  "oj-worker@*").splitlines()
            print(f"inside a private systemd: {len(loaded)} worker units loaded and enabled")
        cases = {
            "python -c pass": [python, "-c", "pass"],
            "oj queue list": [oj, "queue", "list"],
            "oj worker list": [oj, "worker", "list"],
            "oj status": [oj, "status"],
            "oj status -o json": [oj, "status", "-o", "json"],
        }
        for argv in cases.values():  # warm: the runbook cache, the page cache
            run_once(argv, project, env, sb)
        # what the timed command sees: proof that the figure covers the systemd part
        argv, full_env = (sb.command(cases["oj status -o json"], env=env, cwd=project)
                          if sb is not None else (cases["oj status -o json"], env))
        report = json.loads(subprocess.run(argv, cwd=project, env=full_env, check=True,
                                           capture_output=True, text=True).stdout)
        ws = report["projects"][0]["workers"]
        states = sorted({w["state"] for w in ws})
        print(f"oj status sees {len(ws)} workers ({', '.join(states)}; "
              f"{sum(bool(w['enabled']) for w in ws)} enabled); systemd asked: "
              f"{report['systemd']['asked']}")
        times = time_cases(cases, args.runs, project, env, sb)
        base = statistics.median(times["python -c pass"])
        listing = statistics.median(times["oj queue list"])
        print(f"{args.runs} runs each, interleaved; median / p90:")
        for name, xs in times.items():
            med = statistics.median(xs)
            print(f"  {name:<20} {med * 1e3:7.1f} ms / {p90(xs) * 1e3:7.1f} ms   "
                  f"{med / base:5.1f}x pass   {med / listing:4.2f}x queue list")
        worst = max(p90(times["oj status"]), p90(times["oj status -o json"])) * 1e3
        print(f"oj status p90 {worst:.1f} ms against an aim of {AIM_MS:.0f} ms: "
              f"{'PASS' if worst < AIM_MS else 'MISS'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if sb is not None:
            from sandbox import remove_root

            try:
                sb.poweroff()
            finally:
                remove_root(sb.root)


if __name__ == "__main__":
    main()
