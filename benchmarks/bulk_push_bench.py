"""Bulk pushes and take order, each against its baseline, in one run.

    python benchmarks/bulk_push_bench.py [--items N] [--sample S] [--state-url URL]

1. Pushes: N items (default 10,000) by one ``oj queue push Q --lines FILE``, against single
   ``oj queue push`` calls. The single pushes are a measured sample of S calls (default 200)
   into a near-empty state, extrapolated to N (said so in the output): N cold processes
   would take minutes, and more as the state grows (one push after the bulk shows by how
   much).
2. Takes: the time a take spends choosing its item and folding its ``queue:taken``
   (``State.next_takeable`` and ``State.apply``, what runs inside the take's transaction on
   both stores), with N pending items of mixed priorities and due times (a fifth delayed,
   half of those already due), against the same N items pushed plain (FIFO); 1,000 takes
   each, the median per take.

The project and state live in a temporary directory under /var/tmp, removed at the end; with
``--state-url`` the pushes go to that PostgreSQL database instead of the state dir's WAL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ojd import events  # noqa: E402
from ojd.state import State  # noqa: E402

OJ = shutil.which("oj") or str(Path(sys.executable).with_name("oj"))
RUNBOOK = 'queue "q" {\n  vars = ["n"]\n}\n'


def bench_pushes(items: int, sample: int, url: str | None) -> None:
    top = Path(tempfile.mkdtemp(prefix="oj-bulk-bench-", dir="/var/tmp"))
    try:
        (top / "p" / ".oj" / "runbooks").mkdir(parents=True)
        (top / "p" / ".oj" / "runbooks" / "q.hcl").write_text(RUNBOOK)
        env = dict(os.environ, OJ_STATE_DIR=str(top / "state"))
        env.pop("OJ_STATE_URL", None)
        if url:
            env["OJ_STATE_URL"] = url

        def oj(*args: str, **kw) -> None:
            subprocess.run([OJ, *args], cwd=top / "p", env=env, check=True,
                           stdout=subprocess.DEVNULL, **kw)

        oj("queue", "push", "q", "--var", "n=warm-up")  # the runbook's cache, the state dir
        # the single pushes first, into a state of a few items: a state of thousands makes
        # each cold push load it all, so this is their best case
        times = []
        for i in range(sample):
            started = time.perf_counter()
            oj("queue", "push", "q", "--var", f"n=single-{i}")
            times.append(time.perf_counter() - started)
        lines = top / "items.jsonl"
        lines.write_text("".join(json.dumps({"n": f"bulk-{i}"}) + "\n" for i in range(items)))
        started = time.perf_counter()
        oj("queue", "push", "q", "--lines", str(lines))
        bulk = time.perf_counter() - started
        started = time.perf_counter()
        oj("queue", "push", "q", "--var", "n=after")
        after = time.perf_counter() - started
        per = statistics.mean(times)
        singles = per * items
        store = "PostgreSQL" if url else "WAL directory"
        print(f"pushes ({store}), {items:,} items:")
        print(f"  --lines, one process:   {bulk:8.3f} s  ({bulk / items * 1e6:.0f} us/item)")
        print(f"  single pushes:          {singles:8.1f} s  (extrapolated from {sample} calls: "
              f"mean {per * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f} ms)")
        print(f"  ratio:                  {singles / bulk:8.0f}x")
        print(f"  (one more single push, into the state of {items + sample + 1:,} items: "
              f"{after * 1000:.0f} ms)")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def fold(items: int, mixed: bool, now: float) -> State:
    rng = random.Random(19)
    state = State()
    for pos in range(1, items + 1):
        opts: dict = {}
        if mixed:
            opts["priority"] = rng.choice((0, 0, 0, 1, 2, 5, 10, -1))
            if rng.random() < 0.2:  # delayed: half already due, half an hour or more away
                opts["due"] = now + rng.choice((-1, 1)) * rng.uniform(1, 3600)
        ev = events.queue_pushed(id=f"{pos:08x}", project="/p", queue="q",
                                 data={"n": pos}, key=f"k{pos}", **opts)
        ev["ts"] = now - items + pos
        state.apply(ev, pos)
    return state


def bench_takes(items: int, takes: int) -> None:
    now = time.time()
    print(f"takes, {items:,} pending items, median of {takes:,} takes (choose + fold):")
    results = {}
    for name, mixed in (("plain FIFO", False), ("mixed priority/due", True)):
        state = fold(items, mixed, now)
        pos = state.pos
        times = []
        for n in range(takes):
            started = time.perf_counter()
            item = state.next_takeable("/p", "q", now)
            assert item is not None
            pos += 1
            state.apply({**events.queue_taken(id=item["id"], by="w/1", job=f"j{n}"),
                         "ts": now}, pos)
            times.append(time.perf_counter() - started)
        results[name] = statistics.median(times)
        print(f"  {name:<20} {results[name] * 1e6:7.1f} us/take")
    ratio = results["mixed priority/due"] / results["plain FIFO"]
    print(f"  ratio:               {ratio:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--takes", type=int, default=1_000)
    parser.add_argument("--state-url", default=None)
    args = parser.parse_args()
    bench_pushes(args.items, args.sample, args.state_url)
    bench_takes(args.items, args.takes)


if __name__ == "__main__":
    main()
