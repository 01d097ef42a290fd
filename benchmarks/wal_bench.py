"""Throughput of the WAL directory: durable appends and replay, each against a baseline.

    python benchmarks/wal_bench.py [--events N] [--seconds S]

Appends: processes appending one event per call (one fdatasync each) for S seconds, against
raw ``os.write`` + ``os.fdatasync`` of 120 bytes. Replay: ``records()`` of a fresh
WalDirectory over an N-event log, against ``json.loads`` of the same payloads one by one.
Everything happens in a temporary directory under /var/tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ojd.store.wal import WalDirectory  # noqa: E402


def event(i: int) -> dict:
    # ~100 bytes of JSON, the shape of a typical queue event.
    return {
        "type": "queue:pushed",
        "q": "merges",
        "id": f"{i:08x}",
        "data": {"branch": f"b{i % 1000}"},
        "ts": 1764161234.123 + i / 1000,
    }


def _append_worker(path: str, start: float, seconds: float, wid: int) -> int:
    wal = WalDirectory(path)
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    end = start + seconds
    while time.time() < end:
        wal.append({**event(n), "w": wid})
        n += 1
    return n


def appends_per_second(root: Path, writers: int, seconds: float) -> float:
    path = root / f"appends-{writers}"
    ctx = mp.get_context("spawn")
    start = time.time() + 1.0  # time for the spawned interpreters to start
    with ctx.Pool(writers) as pool:
        counts = pool.starmap(
            _append_worker, [(str(path), start, seconds, w) for w in range(writers)]
        )
    total = sum(counts)
    assert len(list(WalDirectory(path).records())) == total
    return total / seconds


def raw_fsync_per_second(root: Path, seconds: float) -> float:
    fd = os.open(root / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"x" * 119 + b"\n"
    n = 0
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            os.write(fd, record)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
    return n / seconds


def build_log(path: Path, events: int) -> float:
    wal = WalDirectory(path)
    t = time.perf_counter()
    batch = 10_000
    for first in range(0, events, batch):
        wal.append(*(event(i) for i in range(first, min(events, first + batch))))
    return time.perf_counter() - t


def replay_seconds(path: Path, events: int) -> float:
    t = time.perf_counter()
    n = sum(1 for _ in WalDirectory(path).records())
    dt = time.perf_counter() - t
    assert n == events, (n, events)
    return dt


def baseline_decode_seconds(events: int) -> float:
    payloads = [json.dumps(event(i), separators=(",", ":")).encode() for i in range(events)]
    t = time.perf_counter()
    decoded = [json.loads(p) for p in payloads]
    dt = time.perf_counter() - t
    assert len(decoded) == events
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="replay log size")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of append runs")
    ap.add_argument("--runs", type=int, default=3, help="replay runs (median reported)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="oj-wal-bench-", dir="/var/tmp"))
    try:
        print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} dir={root}")
        raw = raw_fsync_per_second(root, args.seconds)
        print(f"baseline  raw write(120 B)+fdatasync: {raw:10,.0f} /s")
        for writers in (1, 4):
            rate = appends_per_second(root, writers, args.seconds)
            print(
                f"appends   {writers} writer process(es), 1 event + fdatasync per call: "
                f"{rate:10,.0f} /s  ({rate / raw:.2f}x raw)"
            )

        log = root / "replay"
        built = build_log(log, args.events)
        size = sum(p.stat().st_size for p in log.glob("seg-*.wal"))
        print(
            f"build     {args.events:,} events in batches of 10,000: {built:.1f} s "
            f"({args.events / built:,.0f} /s, {size / 1e6:.0f} MB)"
        )
        base = baseline_decode_seconds(args.events)
        print(f"baseline  json.loads one payload at a time: {args.events / base:10,.0f} events/s")
        runs = [replay_seconds(log, args.events) for _ in range(args.runs)]
        med = statistics.median(runs)
        print(
            f"replay    records() of a fresh WalDirectory: {args.events / med:10,.0f} events/s "
            f"(median of {args.runs}; best {args.events / min(runs):,.0f}) "
            f"({base / med:.2f}x baseline)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
