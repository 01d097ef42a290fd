"""Workers as systemd units: wake cost, push-to-step latency, throughput and idle memory.

    python benchmarks/worker_bench.py [--runs K] [--pushes P] [--items N]

Everything runs inside the private systemd of tests/sandbox.py (booted on a root under
/var/lib/oj-sandbox, powered off and removed at the end), with oj's units installed by
``oj systemd install`` and one project whose state directory lives under the sandbox root.
Each figure comes with a baseline measured in the same run:

1. Wake: ``oj worker start NAME`` on a running worker (ActiveState over D-Bus, KillUnit
   SIGUSR1, one WAL append) against ``systemctl reload`` of the same unit (ExecReload sends
   SIGUSR1); K runs each, interleaved, every one a whole nsenter'd subprocess. Context:
   ``systemctl kill --kill-whom=main -s SIGUSR1`` (oj's KillUnit call without a Python
   start-up), ``/bin/true``, ``python -c pass`` and ``python -c 'import click,
   pystemd.dbuslib'``.
2. Push -> step start: P pushes to a running worker (concurrency 1, fallback poll 60 s) from a
   driver process inside the sandbox that calls ``queues.push`` and ``wake_queue_workers``
   as ``oj queue push`` does; latency runs from the moment the durable push returned to the
   ``$EPOCHREALTIME`` the step's first command records. Each job completes before the next
   push, so this is latency, not queueing. Context: ``subprocess.run(["bash", "-c", "true"])``.
3. Throughput: N items pushed to a stopped worker's queue, then the worker is started and
   timed until every item is completed (concurrency 1 and 4, step ``true``). Baseline:
   ``bash -c true`` run one at a time from Python; context: one write + fdatasync in the
   state directory (every WAL append pays one) and WAL records written per item.
4. Idle RSS of a worker's main process, against ``python -c 'import time; time.sleep(5)'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from sandbox import Sandbox, SandboxError, remove_root  # noqa: E402

from ojd.store import Store  # noqa: E402
from ojd.store.wal import WalDirectory  # noqa: E402

SANDBOX_BASE = Path(os.environ.get("OJ_SANDBOX_BASE", "/var/lib/oj-sandbox"))
WAKE_AIM = 2.0  # oj worker start (wake) at most this many times systemctl reload
LATENCY_P50_AIM_MS = 5.0
LATENCY_P99_AIM_MS = 20.0
THROUGHPUT_AIM = 150.0  # items/s
RSS_AIM_MB = 40.0
WARMUP_PUSHES = 3  # pushes before the measured ones (first job creates logs dir, caches)

LAT_WORKER = "benchlat"
TP_WORKERS = {1: "benchtp1", 4: "benchtp4"}

RUNBOOK = """\
queue "lat" {
  type = "persisted"
  vars = ["n"]
}

queue "tp1" {
  vars = ["n"]
}

queue "tp4" {
  vars = ["n"]
}

worker "LAT" {
  source      = { queue = "lat" }
  handler     = { pipeline = "stamp" }
  concurrency = 1
  poll        = "60s"
}

worker "TP1" {
  source      = { queue = "tp1" }
  handler     = { pipeline = "noop" }
  concurrency = 1
  poll        = "60s"
}

worker "TP4" {
  source      = { queue = "tp4" }
  handler     = { pipeline = "noop" }
  concurrency = 4
  poll        = "60s"
}

pipeline "stamp" {
  vars = ["item"]
  step "stamp" {
    run = <<-SHELL
      echo "${var.item.n} $EPOCHREALTIME" >> STAMPS
    SHELL
  }
}

pipeline "noop" {
  vars = ["item"]
  step "noop" {
    run = "true"
  }
}
"""

# Runs inside the sandbox with the venv's interpreter; prints one JSON document.
DRIVER = r'''
import json, os, subprocess, sys, time

from ojd import project, queues
from ojd.store import Store

try:
    from ojd.wake import wake_queue_workers
except ImportError:  # older layout: the wake lived in ojd.workers
    from ojd.workers import wake_queue_workers


def bash_true(runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["bash", "-c", "true"], stdin=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def wait_stamp(path, n, offset, deadline):
    """The stamp the step wrote for item ``n``; reads on from ``offset``."""
    while True:
        try:
            with open(path) as f:
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
                return float(ts), offset
        if time.monotonic() > deadline:
            raise SystemExit(f"no stamp for item {n} within the timeout")
        time.sleep(0.0005)


def wait_completed(store, item_id, deadline):
    while store.refresh().items.get(item_id, {}).get("status") != "completed":
        if time.monotonic() > deadline:
            raise SystemExit(f"item {item_id} did not complete within the timeout")
        time.sleep(0.001)


def latency(root, queue_name, stamps, pushes, warmup, settle):
    store = Store()
    queue = project.load(root).queues[queue_name]
    tag = os.urandom(3).hex()
    offset, lat, woken_all = 0, [], True
    # where the time goes, from the WAL's append times: push -> take (the take's append),
    # take -> step (job:step_started's append), step -> the script's first command
    parts = {"push->take": [], "take->step": [], "step->script": []}
    for i in range(warmup + pushes):
        n = f"{tag}-{i}"
        item_id, created = queues.push(store, root, queue, {"n": n})
        pushed = time.time()  # the push is durable (fdatasync'd) from here on
        woken, _ = wake_queue_workers(store, root, queue_name)
        woken_all = woken_all and bool(woken)
        deadline = time.monotonic() + 30
        started, offset = wait_stamp(stamps, n, offset, deadline)
        wait_completed(store, item_id, deadline)
        if i >= warmup:
            lat.append(started - pushed)
            job = store.state.jobs.get(store.state.items[item_id].get("job") or "")
            if job and job["history"]:
                step = job["history"][0]["started_at"]
                parts["push->take"].append(job["created_at"] - pushed)
                parts["take->step"].append(step - job["created_at"])
                parts["step->script"].append(started - step)
        time.sleep(settle)  # let the loop go back to select() after the job's own wake
    return {"latency": lat, "woken_all": woken_all, "bash_true": bash_true(100),
            "parts": parts}


def fsync_times(directory, runs):
    """write(120 B) + fdatasync, as one durable WAL append does, in the state directory."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            os.write(fd, b"x" * 120)
            os.fdatasync(fd)
            out.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def push_only(root, queue_name, count):
    store = Store()
    queue = project.load(root).queues[queue_name]
    tag = os.urandom(3).hex()
    t = time.perf_counter()
    ids = [queues.push(store, root, queue, {"n": f"{tag}-{i}"})[0] for i in range(count)]
    return {"ids": ids, "seconds": time.perf_counter() - t}


mode, args = sys.argv[1], sys.argv[2:]
if mode == "latency":
    result = latency(args[0], args[1], args[2], int(args[3]), int(args[4]), float(args[5]))
elif mode == "push":
    result = push_only(args[0], args[1], int(args[2]))
elif mode == "bash":
    result = {"bash_true": bash_true(int(args[0])), "fsync": fsync_times(args[1], 200)}
else:
    raise SystemExit(f"unknown mode {mode}")
print(json.dumps(result))
'''


# -- small statistics --------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def pct(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(xs)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# -- the sandbox and the project ---------------------------------------------------------------


def find_oj() -> tuple[str, str]:
    """The ``oj`` script and the interpreter of its shebang (also the baselines' python)."""
    for script in (Path(sys.executable).parent / "oj", Path("/opt/oj-venv/bin/oj")):
        if script.is_file() and os.access(script, os.X_OK):
            first = script.read_text().splitlines()[0]
            python = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
            return str(script), python
    sys.exit("worker_bench: no `oj` script found; install the package (pip install -e .)")


class Bench:
    """One booted sandbox holding one project with the benchmark's workers."""

    def __init__(self, sb: Sandbox, root: Path, oj: str, python: str) -> None:
        self.sb = sb
        self.oj_path = oj
        self.python = python
        self.project = root / "project"
        self.state = root / "state"
        self.stamps = root / "stamps.txt"
        self.driver = root / "driver.py"
        bindir = os.path.dirname(oj)
        self.env = {"OJ_STATE_DIR": str(self.state),
                    "PATH": f"{bindir}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        runbooks = self.project / ".oj" / "runbooks"
        runbooks.mkdir(parents=True)
        text = (RUNBOOK.replace("LAT", LAT_WORKER).replace("TP1", TP_WORKERS[1])
                .replace("TP4", TP_WORKERS[4]).replace("STAMPS", str(self.stamps)))
        (runbooks / "bench.hcl").write_text(text)
        self.driver.write_text(textwrap.dedent(DRIVER))

    def run(self, args: Sequence[str], timeout: float = 120) -> str:
        return self.sb.run(list(args), env=self.env, cwd=str(self.project),
                           timeout=timeout).stdout

    def timed(self, args: Sequence[str]) -> float:
        t = time.perf_counter()
        self.run(args)
        return time.perf_counter() - t

    def oj(self, *args: str) -> str:
        return self.run([self.oj_path, *args])

    def drive(self, *args: str, timeout: float = 300) -> dict:
        return json.loads(self.run([self.python, str(self.driver), *args], timeout=timeout))

    def unit(self, worker: str) -> str:
        return f"oj-worker@{worker}.service"

    def main_pid(self, worker: str) -> int:
        return int(self.sb.unit_property(self.unit(worker), "MainPID"))

    def rss_mb(self, pid: int) -> float:
        """VmRSS of a process inside the sandbox (its PID namespace), in MB."""
        for line in self.run(["cat", f"/proc/{pid}/status"]).splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SandboxError(f"no VmRSS for pid {pid}")


def time_interleaved(cases: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Every case once per round, so drift (page cache, CPU frequency) hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case()  # warm-up, not counted
    for _ in range(runs):
        for name, case in cases.items():
            out[name].append(case())
    return out


# -- the four measurements ---------------------------------------------------------------------


def bench_wake(b: Bench, runs: int) -> None:
    print(f"\n1. Waking a running worker ({runs} runs each, interleaved; whole nsenter'd "
          "subprocess)")
    unit = b.unit(LAT_WORKER)
    pid = b.main_pid(LAT_WORKER)
    cases: dict[str, Callable[[], float]] = {
        f"oj worker start {LAT_WORKER}": lambda: b.timed([b.oj_path, "worker", "start",
                                                          LAT_WORKER]),
        f"systemctl reload {unit}": lambda: b.timed(["systemctl", "reload", unit]),
        # the same KillUnit call oj makes, from systemd's own client: no ExecReload process
        "systemctl kill --kill-whom=main -s USR1":
            lambda: b.timed(["systemctl", "kill", "--kill-whom=main", "-s", "SIGUSR1", unit]),
        "/bin/true (nsenter alone)": lambda: b.timed(["/bin/true"]),
        "python -c pass": lambda: b.timed([b.python, "-c", "pass"]),
        "python -c 'import click, pystemd.dbuslib'":
            lambda: b.timed([b.python, "-c", "import click, pystemd.dbuslib"]),
    }
    times = time_interleaved(cases, runs)
    width = max(len(n) for n in times)
    for name, xs in times.items():
        print(f"   {name:<{width}}  median {ms(median(xs))}  p90 {ms(pct(xs, 90))}")
    start, reload, kill = (times[n] for n in list(times)[:3])
    ratio_med = median(start) / median(reload)
    ratio_p90 = pct(start, 90) / pct(reload, 90)
    print(f"   ratio start/reload: median {ratio_med:.2f}x, p90 {ratio_p90:.2f}x "
          f"(aim <= {WAKE_AIM:.1f}x): {verdict(ratio_med <= WAKE_AIM)}")
    print(f"   ratio start/systemctl kill: median {median(start) / median(kill):.2f}x")
    if b.main_pid(LAT_WORKER) != pid:
        print("   WARNING: the worker's MainPID changed during the wakes (it restarted)")


def bench_latency(b: Bench, pushes: int) -> None:
    print(f"\n2. Push -> step start ({pushes} pushes, concurrency 1, fallback poll 60s; "
          f"{WARMUP_PUSHES} warm-up pushes not counted)")
    res = b.drive("latency", str(b.project), "lat", str(b.stamps), str(pushes),
                  str(WARMUP_PUSHES), "0.01")
    lat = res["latency"]
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(f"   latency        p50 {ms(p50)}  p90 {ms(pct(lat, 90))}  p99 {ms(p99)}  "
          f"max {ms(max(lat))}  min {ms(min(lat))}")
    bt = res["bash_true"]
    print(f"   bash -c true   median {ms(median(bt))}  p99 {ms(pct(bt, 99))}  "
          "(subprocess.run from Python, inside the sandbox)")
    print(f"   p50 / bash -c true: {p50 / median(bt):.1f}x")
    if not res["woken_all"]:
        print("   WARNING: some pushes woke no worker (wake_queue_workers found none running)")
    print(f"   aim p50 <= {LATENCY_P50_AIM_MS:.0f} ms: {verdict(p50 * 1000 <= LATENCY_P50_AIM_MS)}"
          f"; aim p99 <= {LATENCY_P99_AIM_MS:.0f} ms: "
          f"{verdict(p99 * 1000 <= LATENCY_P99_AIM_MS)}")


def throughput_run(b: Bench, worker: str, queue: str, items: int
                   ) -> tuple[float, float, float]:
    """Items/s from ``oj worker start`` to the last completion, and from the first take to
    the last completion (WAL timestamps); WAL records written per item (push included).

    Completion is decided on the replayed state (a Store reloads across compactions, and
    completed items pruned from it count as done); the WAL reader only supplies timestamps.
    """
    store = Store(str(b.state), on_problem=None)
    wal = WalDirectory(b.state / "wal", on_problem=lambda p: None)
    reader = wal.reader()
    reader.read_new()  # skip what is there already
    start_pos = reader.position
    ids = b.drive("push", str(b.project), queue, str(items))["ids"]
    wanted = set(ids)
    first_take: float | None = None
    last_done = 0.0
    t0 = time.perf_counter()
    b.oj("worker", "start", worker)
    deadline = time.monotonic() + 120
    while True:
        for rec in reader.read_new():
            ev = rec.event
            if ev.get("id") not in wanted:
                continue
            if ev["type"] == "queue:taken" and first_take is None:
                first_take = ev["ts"]
            elif ev["type"] == "queue:completed":
                last_done = max(last_done, ev["ts"])
        state = store.refresh()
        statuses = [state.items[i]["status"] for i in ids if i in state.items]
        if any(s not in ("pending", "active", "completed") for s in statuses):
            raise SandboxError(f"{worker}: an item ended {sorted(set(statuses))}")
        if all(s == "completed" for s in statuses):
            break
        if time.monotonic() > deadline:
            left = sum(s != "completed" for s in statuses)
            raise SandboxError(f"{worker}: {left}/{items} items not done after 120s")
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    end_pos = state.pos
    b.sb.systemctl("stop", b.unit(worker))
    if first_take is None or last_done <= first_take:
        raise SandboxError(f"{worker}: no take/completion timestamps read from the WAL")
    return items / wall, items / (last_done - first_take), (end_pos - start_pos) / items


def bench_throughput(b: Bench, items: int) -> None:
    print(f"\n3. Throughput of a `true` pipeline ({items} items queued first, then the worker "
          "is started)")
    res = b.drive("bash", "200", str(b.state))
    bash, fsync = res["bash_true"], res["fsync"]
    rate = 1 / median(bash)
    print(f"   baseline: bash -c true one at a time   {rate:7.0f}/s  "
          f"(median {ms(median(bash))})")
    print(f"   context: write(120 B) + fdatasync in the state dir: median {ms(median(fsync))}"
          f", p90 {ms(pct(fsync, 90))}")
    for conc, worker in TP_WORKERS.items():
        e2e, steady, per_item = throughput_run(b, worker, f"tp{conc}", items)
        print(f"   concurrency {conc}: {steady:6.1f} items/s first take -> last completion, "
              f"{e2e:6.1f}/s incl. unit start; {steady / rate:.2f}x baseline; "
              f"{per_item:.1f} WAL records/item; aim > {THROUGHPUT_AIM:.0f}/s: "
              f"{verdict(steady > THROUGHPUT_AIM)}")


def idle_rss(b: Bench, worker: str) -> float:
    time.sleep(2)
    return b.rss_mb(b.main_pid(worker))


def bench_rss(b: Bench, fresh: float, after: float) -> None:
    print("\n4. Idle RSS of a worker (VmRSS of MainPID after 2 s idle)")
    script = (f"{b.python} -c 'import time; time.sleep(5)' & p=$!; sleep 2; "
              "grep VmRSS /proc/$p/status; kill $p")
    base = int(b.run(["sh", "-c", script]).split()[1]) / 1024
    print(f"   worker, freshly started            {fresh:6.1f} MB")
    print(f"   worker, after the latency run      {after:6.1f} MB")
    print(f"   python -c 'import time; time.sleep(5)'  {base:6.1f} MB")
    print(f"   fresh worker / bare python: {fresh / base:.2f}x; aim <= {RSS_AIM_MB:.0f} MB: "
          f"{verdict(max(fresh, after) <= RSS_AIM_MB)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per wake command")
    parser.add_argument("--pushes", type=int, default=200, help="pushes for the latency run")
    parser.add_argument("--items", type=int, default=400, help="items per throughput run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("worker_bench: needs root (the sandbox uses namespaces, mounts and cgroups)")
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            sys.exit(f"worker_bench: {tool} not found")
    oj, python = find_oj()
    root = SANDBOX_BASE / f"bench-{uuid.uuid4().hex[:12]}"
    sb = Sandbox(root)
    began = time.perf_counter()
    try:
        sb.boot()
        print(f"sandbox booted in {time.perf_counter() - began:.1f}s at {root}; "
              f"oj: {oj}; {os.cpu_count()} CPUs")
        b = Bench(sb, root, oj, python)
        where = b.run([python, "-c", "import ojd; print(ojd.__file__)"])
        print(f"ojd inside the sandbox: {where.strip()}")
        b.oj("systemd", "install")
        b.oj("worker", "start", LAT_WORKER)
        fresh = idle_rss(b, LAT_WORKER)
        bench_wake(b, args.runs)
        bench_latency(b, args.pushes)
        after = idle_rss(b, LAT_WORKER)
        bench_throughput(b, args.items)
        bench_rss(b, fresh, after)
    finally:
        try:
            sb.poweroff()
        except SandboxError as e:
            print(f"worker_bench: {e}", file=sys.stderr)
        remove_root(root)
    print(f"\ntotal {time.perf_counter() - began:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
