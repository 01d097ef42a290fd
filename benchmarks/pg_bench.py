"""The PostgreSQL store against the WAL directory, in one run on this machine.

    python benchmarks/pg_bench.py [--runs K] [--pushes N] [--items M] [--sections ...]

A private, durable PostgreSQL (tests/pgserver.py: Debian's server, initdb into a temporary
directory, Unix socket only, fsync on) and foreground workers (``ojd worker --foreground``).
A "host" here is a state directory and host name (``OJ_HOST``) of its own sharing the
database: its own worker lock, job logs and step files, and no way to signal the other's
worker; only the database's notification can wake it. Both share this machine's two CPUs. Figures:

1. cold ``oj queue push``: WAL vs PostgreSQL (aim: at most 2x);
2. push -> step start: WAL on one host (the push signals the worker) vs PostgreSQL across
   hosts (woken by NOTIFY), p50/p99 (aim <= 10 ms / <= 50 ms);
3. idle worker RSS: WAL vs PostgreSQL (aim: PostgreSQL <= 25 MB);
4. drain items/s, one host vs two on the same queue, for steps that sleep 0.5 s and 50 ms
   and for ``true`` steps;
5. decisions (appends) per second, WAL vs PostgreSQL: the store's own ceiling;
6. drain items/s again with each host a booted systemd sandbox (tests/sandbox.py, needs root)
   running its ``oj-worker@w.service``, one host vs two (aim for 50 ms steps: at least 1.6x).
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
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pgserver import PrivatePostgres  # noqa: E402

PUSH_RATIO_AIM = 2.0
LATENCY_P50_AIM_MS = 10.0
LATENCY_P99_AIM_MS = 50.0
RSS_AIM_MB = 25.0
SCALE_AIM = 1.6

RUNBOOK = """
queue "q" {
  vars = ["n"]
}

worker "w" {
  source      = { queue = "q" }
  handler     = { pipeline = "p" }
  concurrency = CONCURRENCY
  poll        = "60s"
}

pipeline "p" {
  vars = ["item"]
  step "s" {
    run = <<-SHELL
      echo "${var.item.n} $EPOCHREALTIME" >> STAMPS
      STEP
    SHELL
  }
}
"""

# In-process pushes (no interpreter start in the figure), as benchmarks/worker_bench.py does.
DRIVER = r'''
import json, os, sys, time
from ojd import project, queues
from ojd.store import Store
from ojd.wake import wake_queue_workers

root, stamps, pushes = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store()
store.load()
queue = project.load(root).queues["q"]
tag = os.urandom(3).hex()
lat, offset = [], 0
for i in range(pushes + 5):
    n = f"{tag}-{i}"
    item_id, _ = queues.push(store, root, queue, {"n": n})
    pushed = time.time()  # committed (WAL: fdatasync'd) from here on
    wake_queue_workers(store, root, "q")
    deadline = time.monotonic() + 30
    found = None
    while found is None:
        try:
            with open(stamps) as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = ""
        for line in data.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            offset += len(line)
            name, _, ts = line.strip().partition(" ")
            if name == n:
                found = float(ts)
        if found is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"item {n} did not start")
            time.sleep(0.0005)
    while store.refresh().items[item_id]["status"] != "completed":
        time.sleep(0.001)
    if i >= 5:
        lat.append(found - pushed)
    time.sleep(0.01)
print(json.dumps(lat))
'''


def pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


class Host:
    def __init__(self, base: Path, name: str, project: Path, url: str | None) -> None:
        self.state = base / f"state-{name}"
        self.project = project
        self.url = url
        self.worker: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        # a host name of its own: two hosts with one name would watch each other's jobs
        env = dict(os.environ, OJ_STATE_DIR=str(self.state), OJ_HOST=self.state.name)
        env.pop("OJ_STATE_URL", None)
        if self.url:
            env["OJ_STATE_URL"] = self.url
        return env

    def start_worker(self, log: Path) -> None:
        with open(log, "a") as out:
            self.worker = subprocess.Popen([OJD, "worker", "w", "--foreground"],
                                           cwd=self.project, env=self.env(), stdout=out,
                                           stderr=subprocess.STDOUT)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(timeout=60)
            self.worker = None

    def rss_mb(self) -> float:
        assert self.worker is not None
        with open(f"/proc/{self.worker.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def make_project(base: Path, name: str, step: str, concurrency: int) -> tuple[Path, Path]:
    project = base / name
    (project / ".oj" / "runbooks").mkdir(parents=True)
    stamps = base / f"{name}.stamps"
    text = (RUNBOOK.replace("STAMPS", str(stamps)).replace("STEP", step)
            .replace("CONCURRENCY", str(concurrency)))
    (project / ".oj" / "runbooks" / "w.hcl").write_text(textwrap.dedent(text))
    return project, stamps


def wait_started(host: Host, log: Path) -> None:
    deadline = time.monotonic() + 30
    while "ready:" not in log.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text()}")
        time.sleep(0.05)


def bench_push(base: Path, url: str, runs: int) -> None:
    print(f"\n1. Cold 'oj queue push' ({runs} runs each, interleaved)")
    project, _ = make_project(base, "push", "true", 1)
    hosts = {"wal": Host(base, "push-wal", project, None),
             "postgresql": Host(base, "push-pg", project, url)}
    times: dict[str, list[float]] = {k: [] for k in hosts}
    for i in range(runs + 2):
        for kind, host in hosts.items():
            t = time.perf_counter()
            subprocess.run([OJ, "queue", "push", "q", "--var", f"n={kind}-{i}"], cwd=project,
                           env=host.env(), check=True, capture_output=True)
            if i >= 2:  # the first runs parse the runbook and make the tables
                times[kind].append(time.perf_counter() - t)
    for kind, xs in times.items():
        print(f"   {kind:<11} median {statistics.median(xs) * 1000:6.1f} ms   "
              f"p90 {pct(xs, 90) * 1000:6.1f} ms")
    ratio = statistics.median(times["postgresql"]) / statistics.median(times["wal"])
    load = ("import time, ojd.store; t = time.perf_counter(); from ojd.store import libpq; "
            "libpq.library(); print(time.perf_counter() - t)")  # ctypes and dlopen
    took = float(subprocess.run([sys.executable, "-c", load], capture_output=True, text=True,
                                check=True).stdout)
    print(f"   loading libpq alone: {took * 1000:.1f} ms")
    print(f"   PostgreSQL / WAL: {ratio:.2f}x; aim <= {PUSH_RATIO_AIM:.0f}x: "
          f"{verdict(ratio <= PUSH_RATIO_AIM)}")


def bench_latency_and_rss(base: Path, url: str, pushes: int) -> None:
    print(f"\n2. Push -> step start ({pushes} pushes each, concurrency 1, fallback poll 60s)")
    results, rss = {}, {}
    for kind in ("wal", "postgresql"):
        project, stamps = make_project(base, f"lat-{kind}", "true", 1)
        # WAL: push and worker on one host; PostgreSQL: the worker on host b, pushes on a
        worker_host = Host(base, f"lat-{kind}-b", project, url if kind == "postgresql" else None)
        push_host = worker_host if kind == "wal" else Host(base, f"lat-{kind}-a", project, url)
        log = base / f"lat-{kind}.log"
        log.touch()
        worker_host.start_worker(log)
        try:
            wait_started(worker_host, log)
            time.sleep(2)
            rss[kind] = worker_host.rss_mb()
            out = subprocess.run([PYTHON, "-c", DRIVER, str(project), str(stamps), str(pushes)],
                                 cwd=project, env=push_host.env(), check=True,
                                 capture_output=True, text=True).stdout
            results[kind] = json.loads(out)
        finally:
            worker_host.stop_worker()
    for kind, lat in results.items():
        where = "one host, signalled" if kind == "wal" else "across hosts, NOTIFY"
        print(f"   {kind:<11} ({where:<20}) p50 {pct(lat, 50) * 1000:6.1f} ms  "
              f"p99 {pct(lat, 99) * 1000:6.1f} ms  max {max(lat) * 1000:6.1f} ms")
    lat = results["postgresql"]
    print(f"   PostgreSQL aim p50 <= {LATENCY_P50_AIM_MS:.0f} ms: "
          f"{verdict(pct(lat, 50) * 1000 <= LATENCY_P50_AIM_MS)}; p99 <= "
          f"{LATENCY_P99_AIM_MS:.0f} ms: {verdict(pct(lat, 99) * 1000 <= LATENCY_P99_AIM_MS)}")
    print("\n3. Idle worker RSS (VmRSS 2 s after ready)")
    for kind, mb in rss.items():
        print(f"   {kind:<11} {mb:6.1f} MB")
    print(f"   PostgreSQL aim <= {RSS_AIM_MB:.0f} MB: {verdict(rss['postgresql'] <= RSS_AIM_MB)}")


def drain(base: Path, url: str, name: str, step: str, hosts: int, items: int,
          concurrency: int) -> float:
    """Items/s from the first push to the last completion, with the workers already idle."""
    sys.path.insert(0, str(REPO))
    from ojd.store.postgres import PgLog

    project, _ = make_project(base, name, step, concurrency)
    pusher = Host(base, f"{name}-push", project, url)
    subprocess.run([OJ, "queue", "push", "q", "--var", "n=warm"], cwd=project,
                   env=pusher.env(), check=True, capture_output=True)
    workers = [Host(base, f"{name}-{k}", project, url) for k in range(hosts)]
    logs = [base / f"{name}-{k}.log" for k in range(hosts)]
    for w, log in zip(workers, logs, strict=True):
        log.touch()
        w.start_worker(log)
    reader = PgLog(url).reader()
    try:
        for w, log in zip(workers, logs, strict=True):
            wait_started(w, log)
        wait_completed(reader, 1, time.time(), name)  # the warm-up item, taken by a poll
        rate = timed_backlog(reader, project, pusher, items, name)
    finally:
        for w in workers:
            w.stop_worker()
    return rate


def bench_drain(base: Path, url: str, items: int) -> None:
    print("\n4. Drain items/s on PostgreSQL (concurrency 2 per host, idle workers, from the "
          "first push to the last completion; both 'hosts' share this machine's CPUs)")
    cases = (("sleep 0.5", items // 4), ("sleep 0.05", items), ("true", items))
    for n, (step, count) in enumerate(cases):
        one = drain(base, PrivateDb.new(url), f"drain1-{n}", step, 1, count, 2)
        two = drain(base, PrivateDb.new(url), f"drain2-{n}", step, 2, count, 2)
        print(f"   steps '{step}' ({count} items): one host {one:6.1f}/s   two hosts "
              f"{two:6.1f}/s   ratio {two / one:.2f}x")
        if step.startswith("sleep"):
            print(f"      aim two >= {SCALE_AIM}x one: {verdict(two / one >= SCALE_AIM)}")


def bench_decisions(base: Path, url: str, runs: int = 500) -> None:
    print(f"\n5. Decisions/s, one process, {runs} appends of one event each (the ceiling the "
          "store puts on a drain: an item of one step takes about four)")
    script = textwrap.dedent(f"""
        import time
        from ojd.store import Store
        s = Store(); s.load()
        t = time.perf_counter()
        for i in range({runs}):
            s.append({{"type": "bench:tick"}})
        print({runs} / (time.perf_counter() - t))
        """)
    for kind, db in (("wal", None), ("postgresql", url)):
        host = Host(base, f"decide-{kind}", base, db)
        rate = float(subprocess.run([PYTHON, "-c", script], env=host.env(), check=True,
                                    capture_output=True, text=True).stdout)
        print(f"   {kind:<11} {rate:7.0f}/s")


def sandbox_drain(base: Path, url: str, name: str, sandboxes: list, step: str, items: int,
                  concurrency: int) -> float:
    """As ``drain``, with each host a booted systemd (tests/sandbox.py) running the worker
    as its ``oj-worker@w.service``: a host's own PID 1, journald and job scopes."""
    from ojd.store.postgres import PgLog

    project, _ = make_project(base, name, step, concurrency)
    pusher = Host(base, f"{name}-push", project, url)
    states = []
    for k, sb in enumerate(sandboxes):
        state = base / f"state-{name}-{k}"
        state.mkdir()
        (state / "oj.conf").write_text(f"state_url = {url}\n")
        states.append(state)
        sb.run([OJ, "worker", "start", "w"], cwd=str(project), timeout=120,
               env={"OJ_STATE_DIR": str(state), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    reader = PgLog(url).reader()
    try:
        subprocess.run([OJ, "queue", "push", "q", "--var", "n=warm"], cwd=project,
                       env=pusher.env(), check=True, capture_output=True)
        wait_completed(reader, 1, time.time(), name)
        rate = timed_backlog(reader, project, pusher, items, name)
    finally:
        for sb, state in zip(sandboxes, states, strict=False):
            sb.run([OJ, "worker", "stop", "w"], cwd=str(project), timeout=120, check=False,
                   env={"OJ_STATE_DIR": str(state), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    return rate


def timed_backlog(reader, project: Path, pusher: Host, items: int, name: str) -> float:
    """Items/s of ``items`` pushed at once (from one process), from the first push to the
    last completion."""
    started = time.time()
    subprocess.run([PYTHON, "-c", textwrap.dedent(f"""
        from ojd import project, queues
        from ojd.store import Store
        store = Store(); store.load()
        q = project.load({str(project)!r}).queues["q"]
        for i in range({items}):
            queues.push(store, {str(project)!r}, q, {{"n": str(i)}})
        """)], cwd=project, env=pusher.env(), check=True)
    return items / (wait_completed(reader, items, started, name) - started)


def wait_completed(reader, items: int, started: float, name: str) -> float:
    """Read completions until ``items`` more are done; the last one's time."""
    done, last = 0, 0.0
    while done < items:
        for r in reader.read_new():
            if r.event["type"] == "queue:completed":
                done += 1
                last = r.event["ts"]
        if time.time() - started > 600:
            raise SystemExit(f"{name}: only {done} of {items} done in 600 s")
        time.sleep(0.05)
    return last


def bench_sandboxes(base: Path, items: int) -> None:
    print("\n6. Drain items/s on PostgreSQL with sandbox hosts (each a booted systemd with "
          "its own oj-worker@w.service, concurrency 2; both on this machine's CPUs)")
    from sandbox import Sandbox, remove_root

    roots = [Path("/var/lib/oj-sandbox") / f"pgbench-{os.getpid()}-{k}" for k in range(2)]
    sandboxes = [Sandbox(root) for root in roots]
    try:
        for k, sb in enumerate(sandboxes):
            sb.boot()
            sb.run(["hostname", f"oj-bench-{k}"])
            sb.run([OJ, "systemd", "install"], timeout=120)
        for n, (step, count) in enumerate((("sleep 0.05", items), ("true", items))):
            one = sandbox_drain(base, PrivateDb.new(""), f"sb1-{n}", sandboxes[:1], step,
                                count, 2)
            two = sandbox_drain(base, PrivateDb.new(""), f"sb2-{n}", sandboxes, step, count, 2)
            print(f"   steps '{step}' ({count} items): one host {one:6.1f}/s   two hosts "
                  f"{two:6.1f}/s   ratio {two / one:.2f}x")
            if step.startswith("sleep"):
                print(f"      aim two >= {SCALE_AIM}x one: {verdict(two / one >= SCALE_AIM)}")
    finally:
        for sb in sandboxes:
            try:
                sb.poweroff()
            except Exception as e:  # noqa: BLE001
                print(f"   (sandbox {sb.root}: {e})")
        for root in roots:
            remove_root(root)


class PrivateDb:
    server: PrivatePostgres | None = None

    @classmethod
    def new(cls, _url: str) -> str:
        assert cls.server is not None
        return cls.server.new_database("bench")


OJ = OJD = PYTHON = ""


def main() -> int:
    global OJ, OJD, PYTHON
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--pushes", type=int, default=100)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--sections", default="push,latency,drain,sandboxes",
                    help="which of push, latency, drain, sandboxes to run (decisions always "
                    "run)")
    args = ap.parse_args()
    OJ = shutil.which("oj") or str(Path(sys.executable).parent / "oj")
    OJD = str(Path(OJ).resolve().parent / "ojd")
    with open(Path(OJ).resolve()) as script:
        PYTHON = script.readline()[2:].strip()  # the script's interpreter
    print(f"oj: {OJ} ({PYTHON}); {os.cpu_count()} CPUs")
    # under /var/lib: seen at the same path by the sandboxes (their /tmp, /var/tmp are private)
    base = Path(tempfile.mkdtemp(prefix="oj-pg-bench-", dir="/var/lib"))
    base.chmod(0o755)
    server = PrivatePostgres(base=str(base), durable=True).start()
    PrivateDb.server = server
    try:
        if "push" in args.sections:
            bench_push(base, server.new_database("bench"), args.runs)
        if "latency" in args.sections:
            bench_latency_and_rss(base, server.new_database("bench"), args.pushes)
        if "drain" in args.sections:
            bench_drain(base, "", args.items)
        bench_decisions(base, server.new_database("bench"))
        if "sandboxes" in args.sections:
            bench_sandboxes(base, args.items)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
