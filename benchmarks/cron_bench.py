"""How long ``oj cron list`` and ``oj status`` take with crons running, against
``systemctl list-timers`` in the same run.

    python benchmarks/cron_bench.py [--crons N] [--workers W] [--items M] [--runs K]

Needs root: everything runs inside the private systemd of tests/sandbox.py. The project
holds the state of ``status_bench.py`` (W workers, their units enabled, M items, jobs
running, failed and done) and N crons ticking every hour, their timers started with
``oj cron start``. Then K runs each, round-robin, of ``python -c pass``,
``systemctl list-timers`` (what an operator reads without oj), ``oj cron list`` (table and
JSON) and ``oj status``, with median, p90 and the ratio to ``systemctl list-timers``.
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
sys.path.insert(0, str(REPO / "tests"))

from cli_bench import find_oj  # noqa: E402 - the same oj as the CLI benchmark times
from status_bench import build, p90, run_once, runbook, time_cases  # noqa: E402 - the same state


def crons(n: int) -> str:
    return ('pipeline "tidy" {\n  step "one" {\n    run = "true"\n  }\n}\n'
            + "".join(f'cron "c{i}" {{\n  interval = "1h"\n  run = {{ pipeline = "tidy" }}\n}}\n'
                      for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crons", type=int, default=20)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    oj, python = find_oj()
    from sandbox import Sandbox, remove_root
    from systemd_plugin import new_root

    sb = Sandbox(new_root())
    sb.boot()
    where = sb.root / "shared"
    where.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="oj-cron-bench-", dir=where))
    try:
        root = tmp / "project"
        (root / ".oj" / "runbooks").mkdir(parents=True)
        (root / ".oj" / "runbooks" / "bench.hcl").write_text(runbook(args.workers)
                                                             + crons(args.crons))
        project = os.path.realpath(root)
        state = tmp / "state"
        counts = build(state, project, args.workers, args.items)
        print(f"state: {args.workers} workers, {args.items} items "
              f"({', '.join(f'{v} {k}' for k, v in counts.items())})")
        env = {"OJ_STATE_DIR": str(state)}
        sb.run([oj, "systemd", "install"])
        sb.systemctl("enable", *(f"oj-worker@w{n}.service" for n in range(args.workers)))
        t = time.perf_counter()
        for i in range(args.crons):
            sb.run([oj, "cron", "start", f"c{i}"], cwd=project, env=env)
        print(f"{args.crons} crons started in {time.perf_counter() - t:.1f} s "
              f"({(time.perf_counter() - t) / max(1, args.crons) * 1e3:.0f} ms each)")
        cases = {
            "python -c pass": [python, "-c", "pass"],
            "systemctl list-timers": ["systemctl", "list-timers", "--no-pager", "oj-cron@*"],
            "oj cron list": [oj, "cron", "list"],
            "oj cron list -o json": [oj, "cron", "list", "-o", "json"],
            "oj status": [oj, "status"],
        }
        for argv in cases.values():  # warm: the runbook cache, the page cache
            run_once(argv, project, env, sb)
        argv, full_env = sb.command(cases["oj cron list -o json"], env=env, cwd=project)
        rows = json.loads(subprocess.run(argv, cwd=project, env=full_env, check=True,
                                         capture_output=True, text=True).stdout)
        active = sum(r["active_state"] == "active" and r["next_run"] is not None
                     for r in rows)
        print(f"oj cron list sees {len(rows)} crons, {active} active with a next run")
        times = time_cases(cases, args.runs, project, env, sb)
        base = statistics.median(times["python -c pass"])
        timers = statistics.median(times["systemctl list-timers"])
        print(f"{args.runs} runs each, interleaved; median / p90:")
        for name, xs in times.items():
            med = statistics.median(xs)
            print(f"  {name:<22} {med * 1e3:7.1f} ms / {p90(xs) * 1e3:7.1f} ms   "
                  f"{med / base:5.1f}x pass   {med / timers:5.2f}x list-timers")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            sb.poweroff()
        finally:
            remove_root(sb.root)


if __name__ == "__main__":
    main()
