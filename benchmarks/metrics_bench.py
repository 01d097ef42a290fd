"""How long a scrape of ``/metrics`` takes at 50 workers and 10,000 items, against baselines of
the same run.

    python benchmarks/metrics_bench.py [--workers N] [--items M] [--runs K]

Builds the state of benchmarks/status_bench.py through the store API (N workers, M items:
running, failed, waiting, done and pending jobs and items). Then, each K times, round-robin:

- the scrape as ``oj-metrics.service`` serves it: ``ojd metrics --listen`` started once,
  ``GET /metrics`` timed from this process. The service keeps its state caught up between
  scrapes, so this is the figure a Prometheus scraping every 15 s sees. Also with 50 new
  events appended before each scrape (the append not timed), and against a service over an
  empty state dir (the baseline: HTTP and the process, no state);
- ``oj metrics`` (a process that loads the whole state, as a node_exporter textfile timer
  runs it), against ``oj queue list`` of the same state and ``python -c pass``.

Medians and p90s, and the warm scrape's p90 against the aim of 100 ms. Everything happens
in a temporary directory under /var/tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli_bench import find_oj  # noqa: E402 - the same oj as the CLI benchmark times
from status_bench import build, p90, run_once, runbook  # noqa: E402 - the same state

from ojd.store import Store  # noqa: E402

AIM_MS = 100.0


def free_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def serve(ojd: str, state: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([ojd, "metrics", "--listen", f"127.0.0.1:{port}"],
                            env=dict(env, OJ_STATE_DIR=str(state)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            scrape(port)
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"metrics_bench: ojd metrics did not answer: "
                         f"{proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)


def scrape(port: int) -> float:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    dt = time.perf_counter() - t
    if resp.status != 200 or not body.endswith(b"# EOF\n"):
        sys.exit(f"metrics_bench: scrape answered {resp.status}: {body[:200]!r}")
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    oj, python = find_oj()
    ojd = str(Path(oj).with_name("ojd"))
    tmp = Path(tempfile.mkdtemp(prefix="oj-metrics-bench-", dir="/var/tmp"))
    servers: list[subprocess.Popen] = []
    try:
        root = tmp / "project"
        (root / ".oj" / "runbooks").mkdir(parents=True)
        (root / ".oj" / "runbooks" / "bench.hcl").write_text(runbook(args.workers))
        project = os.path.realpath(root)
        state, empty = tmp / "state", tmp / "empty"
        t = time.perf_counter()
        counts = build(state, project, args.workers, args.items)
        print(f"state: {args.workers} workers, {args.items} items "
              f"({', '.join(f'{v} {k}' for k, v in counts.items())}); built in "
              f"{time.perf_counter() - t:.1f} s")
        env = {k: v for k, v in os.environ.items() if k not in ("OJ_PROJECT", "OJ_STATE_URL")}
        full, port = serve(ojd, state, env)
        bare, empty_port = serve(ojd, empty, env)
        servers += [full, bare]
        size = len(subprocess.run([oj, "metrics"], env=dict(env, OJ_STATE_DIR=str(state)),
                                  capture_output=True, check=True).stdout)
        print(f"oj metrics prints {size / 1024:.0f} KiB")
        store = Store(str(state))
        store.load()
        pushes = 0

        def after_appends() -> float:
            nonlocal pushes
            events = [{"type": "queue:pushed", "id": f"x{pushes + n}", "p": project,
                       "q": f"q{n % args.workers}", "data": {"n": str(n)},
                       "key": f"x{pushes + n}"} for n in range(50)]
            pushes += 50
            store.append(*events)
            return scrape(port)

        cli_env = dict(env, OJ_STATE_DIR=str(state))
        cases = {
            "scrape, empty state": lambda: scrape(empty_port),
            "scrape": lambda: scrape(port),
            "scrape after 50 appends": after_appends,
            "python -c pass": lambda: run_once([python, "-c", "pass"], project, cli_env),
            "oj queue list": lambda: run_once([oj, "queue", "list"], project, cli_env),
            "oj metrics": lambda: run_once([oj, "metrics"], project, cli_env),
        }
        for case in cases.values():  # warm: the runbook cache, the page cache
            case()
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, case in cases.items():
                times[name].append(case())
        base = statistics.median(times["scrape, empty state"])
        print(f"{args.runs} runs each, interleaved; median / p90:")
        for name, xs in times.items():
            med = statistics.median(xs)
            print(f"  {name:<24} {med * 1e3:7.1f} ms / {p90(xs) * 1e3:7.1f} ms   "
                  f"{med / base:6.1f}x empty scrape")
        worst = max(p90(times["scrape"]), p90(times["scrape after 50 appends"])) * 1e3
        print(f"scrape p90 {worst:.1f} ms against an aim of {AIM_MS:.0f} ms: "
              f"{'PASS' if worst <= AIM_MS else 'MISS'}")
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
