"""Start-up and listing cost of the ``oj`` command line, each against baselines of the same run.

    python benchmarks/cli_bench.py [--events N] [--runs K] [--replays R]

Cold start: wall time of K subprocesses per command (median and p90), against the bare
interpreter the ``oj`` script runs on (``python -c pass``) and against importing click and
the other runtime dependencies. ``oj queue push`` runs in a small project with
runbooks/merge.hcl, pushing distinct data each time so every run appends to the WAL.

Big log: a state dir whose WAL holds N events of queue traffic (pushes, takes, jobs,
completions) for one project, written straight through ``WalDirectory.append``; then
``oj queue list --items -o json`` with no snapshot (full replay), and after ``oj state compact``
(snapshot only, and snapshot plus the longest tail a CLI call replays before a transaction
writes a new snapshot). Also the in-process replay rate of ``Store.load()`` and the size of
the snapshot. Everything happens in a temporary directory under /var/tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ojd.state import KEEP_COMPLETED_PER_QUEUE, KEEP_FINISHED_JOBS  # noqa: E402
from ojd.store import SNAPSHOT_EVERY, Store  # noqa: E402
from ojd.store.wal import WalDirectory  # noqa: E402

PUSH_AIM = 3.0  # oj queue push: at most this many times `python -c pass`
LIST_AIM_MS = 150.0  # oj queue list --items -o json after compaction
QUEUE = "merges"
WORKER = "merge"
PIPELINE = "merge"
STEPS = ("init", "merge", "check", "push")
BATCH = 10_000  # events per WalDirectory.append call when building the big log

Argv = list[str]
# Builds the argv of run number i (a push needs distinct data per run).
ArgvFor = Callable[[int], Argv]
Case = tuple[ArgvFor, str, dict[str, str]]  # argv of run i, cwd, environment


# -- locating the command and its interpreter ------------------------------------------------


def find_oj() -> tuple[str, str]:
    """The ``oj`` script and the interpreter of its shebang (the baseline's interpreter)."""
    candidates = [Path(sys.executable).parent / "oj", Path("/opt/oj-venv/bin/oj")]
    found = shutil.which("oj")
    if found:
        candidates.append(Path(found))
    for script in candidates:
        if script.is_file() and os.access(script, os.X_OK):
            with open(script, "rb") as f:
                first = f.readline().decode(errors="replace").strip()
            python = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
            return str(script), python
    sys.exit("cli_bench: no `oj` script found; install the package (pip install -e .)")


def describe_interpreter(python: str, env: dict[str, str]) -> None:
    """Which oj the commands run, and whether site imports an editable-install finder (a cost
    every measurement here pays, baselines included)."""
    probe = ("import sys, oj; print(sys.version.split()[0], oj.__file__, "
             "any(m.startswith('__editable__') for m in sys.modules))")
    out = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    print(f"python {out[0]}; oj from {out[1]}; editable-install finder loaded by site: "
          f"{'yes' if out[2] == 'True' else 'no'}")


# -- timing -----------------------------------------------------------------------------------


def run_once(argv: Argv, cwd: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"cli_bench: {' '.join(argv)} exited {proc.returncode}: "
                 f"{proc.stderr.decode(errors='replace').strip()}")
    return dt


def time_interleaved(cases: dict[str, Case], runs: int) -> dict[str, list[float]]:
    """K runs of every case, round-robin, so drift (cpu frequency, caches, other load on the
    machine) hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(runs):
        for name, (argv_for, cwd, env) in cases.items():
            times[name].append(run_once(argv_for(i), cwd, env))
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p90(xs: Sequence[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- projects and state dirs ------------------------------------------------------------------


def make_project(root: Path) -> str:
    runbooks = root / ".oj" / "runbooks"
    runbooks.mkdir(parents=True)
    shutil.copy(REPO / "runbooks" / "merge.hcl", runbooks / "merge.hcl")
    # the CLI finds the project from os.getcwd(), which is symlink-free
    return os.path.realpath(root)


def cli_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OJ_PROJECT", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME")}
    env["OJ_STATE_DIR"] = str(state_dir)
    # measure this checkout, whatever copy of oj the interpreter has installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return env


def item_key(data: dict) -> str:
    # the dedup key of ojd.queues.item_key, without importing the queue module here
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def traffic(project: str, state_dir: str, start: int = 0, lag: int = 8) -> Iterator[dict]:
    """Events of a busy merge queue with one worker, in the shapes ojd/events.py makes.

    Per item: queue:pushed, job:created + queue:taken (one transaction), job:locals, a
    started/finished pair per step of the merge pipeline, job:finished, queue:completed.
    Pushes run ``lag`` items ahead of the worker, so the log ends with items pending; every
    50th item fails its check once and is taken again after its cooldown.
    """
    ts = 1_764_000_000.0 + start * 5.0
    owner = f"{WORKER}@host:4242"
    if start == 0:
        yield {"type": "worker:recorded", "name": WORKER, "p": project, "runbook": "0" * 32,
               "queue": QUEUE, "pipeline": PIPELINE, "concurrency": 1, "ts": ts}
        yield {"type": "worker:started", "name": WORKER, "invocation": "f" * 32, "pid": 4242,
               "ts": ts}
    i = start
    while True:
        ts += 1.0
        data = {"branch": f"feature/b{i}", "title": f"merge feature/b{i}", "base": "main"}
        yield {"type": "queue:pushed", "id": f"{i:08x}", "p": project, "q": QUEUE,
               "data": data, "key": item_key(data), "ts": ts}
        n = i - lag
        i += 1
        if n < 0:
            continue
        item_id = f"{n:08x}"
        mr = {"branch": f"feature/b{n}", "title": f"merge feature/b{n}", "base": "main"}
        tries = 2 if n % 50 == 49 else 1
        for attempt in range(tries):
            job_id = f"{n | 0x80000000:08x}" if attempt == 0 else f"{n | 0xC0000000:08x}"
            yield {"type": "job:created", "id": job_id, "p": project, "pipeline": PIPELINE,
                   "name": PIPELINE, "vars": {"mr": mr},
                   "cwd": f"{state_dir}/workspaces/{job_id}", "ws": "ephemeral",
                   "invoke": project, "item": item_id, "worker": WORKER, "by": owner, "ts": ts}
            yield {"type": "queue:taken", "id": item_id, "by": owner, "job": job_id, "ts": ts}
            yield {"type": "job:locals", "id": job_id, "locals": {"repo": project}, "ts": ts}
            failing = attempt + 1 < tries
            for k, step in enumerate(STEPS):
                ts += 0.5
                yield {"type": "job:step_started", "id": job_id, "step": step, "ts": ts}
                code = 1 if failing and step == "check" else 0
                nxt = STEPS[k + 1] if k + 1 < len(STEPS) and not code else None
                yield {"type": "job:step_finished", "id": job_id, "step": step, "exit": code,
                       "next": nxt, "failing": bool(code), "ts": ts}
                if code:
                    break
            if failing:
                yield {"type": "job:finished", "id": job_id, "outcome": "failed",
                       "error": "step 'check' failed", "ts": ts}
                yield {"type": "queue:failed", "id": item_id, "error": "step 'check' failed",
                       "dead": False, "retry_at": ts + 30.0, "ts": ts}
                ts += 30.0
            else:
                yield {"type": "job:finished", "id": job_id, "outcome": "done", "error": None,
                       "ts": ts}
                yield {"type": "queue:completed", "id": item_id, "ts": ts}


def write_events(wal: WalDirectory, events: Iterator[dict], count: int) -> int:
    """Append ``count`` events in batches of BATCH; returns the number of items pushed."""
    pushed = 0
    left = count
    while left > 0:
        batch = [next(events) for _ in range(min(BATCH, left))]
        pushed += sum(1 for ev in batch if ev["type"] == "queue:pushed")
        wal.append(*batch)
        left -= len(batch)
    return pushed


# -- the two parts ----------------------------------------------------------------------------


def cold_start(oj: str, python: str, tmp: Path, runs: int) -> None:
    project = make_project(tmp / "small")
    state = tmp / "small-state"
    env = cli_env(state)

    def push(i: int) -> Argv:
        return [oj, "queue", "push", QUEUE, json.dumps({"branch": f"b{i}", "title": "t"})]

    run_once(push(-1), project, env)  # creates the state dir and caches the parsed runbook
    argvs: dict[str, ArgvFor] = {
        "python -c pass": lambda i: [python, "-c", "pass"],
        "python -c 'import click'": lambda i: [python, "-c", "import click"],
        "python -c 'import click, platformdirs, sdnotify'":
            lambda i: [python, "-c", "import click, platformdirs, sdnotify"],
        "oj --help": lambda i: [oj, "--help"],
        "oj --version": lambda i: [oj, "--version"],
        "oj queue push merges JSON": push,
        "oj queue list --items": lambda i: [oj, "queue", "list", "--items"],
        "oj runbook check": lambda i: [oj, "runbook", "check"],
    }
    cases = {name: (argv_for, project, env) for name, argv_for in argvs.items()}
    for argv_for in argvs.values():  # warm the page cache and the .pyc files
        run_once(argv_for(runs + 1), project, env)
    times = time_interleaved(cases, runs)

    names = list(cases)
    base = median(times[names[0]])
    click_base = median(times[names[1]])
    deps_base = median(times[names[2]])
    print(f"\ncold start: wall time of one subprocess, median (p90) of {runs} runs")
    print(f"  {'':50} {'median':>10} {'p90':>10}   x pass  x click  x deps")
    for name in names:
        med = median(times[name])
        line = (f"  {name:50} {ms(med):>10} {ms(p90(times[name])):>10}   "
                f"{med / base:5.2f}x  {med / click_base:5.2f}x  {med / deps_base:5.2f}x")
        if name.startswith("oj queue push"):
            line += f"   aim < {PUSH_AIM:g}x pass: {verdict(med / base < PUSH_AIM)}"
        print(line)
    print(f"  ('deps' is click + platformdirs + sdnotify; the push list held {runs + 2} items "
          "at the end)")


def big_log(oj: str, python: str, tmp: Path, events: int, runs: int, replays: int) -> None:
    project = make_project(tmp / "big")
    state = tmp / "big-state"
    env = cli_env(state)
    wal_path = state / "wal"
    print(f"\nlisting on a big log: {events:,} events of queue '{QUEUE}' traffic, one project")

    t = time.perf_counter()
    stream = traffic(project, str(state))
    items = write_events(WalDirectory(wal_path), stream, events)
    built = time.perf_counter() - t
    size = sum(p.stat().st_size for p in wal_path.glob("seg-*.wal"))
    print(f"  build      {items:,} items pushed, batches of {BATCH:,}: {built:.1f} s "
          f"({events / built:,.0f} events/s), WAL {size / 1e6:.0f} MB")

    listing: ArgvFor = lambda i: [oj, "queue", "list", "--items", "-o", "json"]  # noqa: E731
    baselines: dict[str, Case] = {
        "pass": (lambda i: [python, "-c", "pass"], project, env),
        "small": (listing, str(tmp / "small"), cli_env(tmp / "small-state")),
    }
    big: Case = (listing, project, env)

    # in-process replay first: it also brings the segments into the page cache
    loads = []
    for _ in range(replays):
        store = Store(str(state))
        t = time.perf_counter()
        store.load()
        loads.append(time.perf_counter() - t)
        del store
    load_s = median(loads)
    print(f"  Store.load() in process, full replay: {events / load_s:,.0f} events/s "
          f"({ms(load_s).strip()}, median of {replays}; best {events / min(loads):,.0f})")

    full = time_interleaved({"pass": baselines["pass"], "big": big}, replays)
    full_med = median(full["big"])
    print(f"  oj queue list --items -o json, no snapshot (full replay): {ms(full_med).strip()} "
          f"median of {replays} (max {ms(max(full['big'])).strip()}), "
          f"{full_med / median(full['pass']):.0f}x pass")

    t = time.perf_counter()
    run_once([oj, "state", "compact"], project, env)
    compact_s = time.perf_counter() - t
    snaps = sorted(wal_path.glob("snapshot-*.json"))
    snap = snaps[-1]
    snap_size = snap.stat().st_size
    snap_state = json.loads(snap.read_bytes())["state"]
    statuses: dict[str, int] = {}
    for item in snap_state["items"].values():
        statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    bounded = (statuses.get("completed", 0) <= KEEP_COMPLETED_PER_QUEUE
               and len(snap_state["finished_jobs"]) <= KEEP_FINISHED_JOBS)
    left = sorted(p.name for p in wal_path.glob("seg-*.wal"))
    print(f"  oj state compact: {compact_s:.1f} s; snapshot {snap.name} {snap_size / 1e3:,.0f} kB "
          f"({len(snap_state['items'])} items: "
          f"{', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}; "
          f"{len(snap_state['jobs'])} jobs); {len(left)} segment(s) left")
    print(f"    snapshot bounded by KEEP_COMPLETED_PER_QUEUE={KEEP_COMPLETED_PER_QUEUE} and "
          f"KEEP_FINISHED_JOBS={KEEP_FINISHED_JOBS}: {'yes' if bounded else 'NO'}")

    snap_only = time_interleaved({**baselines, "big": big}, runs)
    tail = SNAPSHOT_EVERY - 1
    write_events(WalDirectory(wal_path), stream, tail)
    with_tail = time_interleaved({**baselines, "big": big}, runs)

    print(f"  oj queue list --items -o json, median (p90) of {runs} runs, each against "
          "python -c pass and the same listing on the small project, measured alongside")
    for label, times in (("snapshot, empty tail", snap_only),
                         (f"snapshot + {tail:,}-event tail", with_tail)):
        med = median(times["big"])
        base, small = median(times["pass"]), median(times["small"])
        print(f"    {label:30} {ms(med)} ({ms(p90(times['big'])).strip()})  "
              f"{med / base:5.2f}x pass ({ms(base).strip()})  "
              f"{med / small:5.2f}x small ({ms(small).strip()})  "
              f"aim < {LIST_AIM_MS:g} ms: {verdict(med * 1e3 < LIST_AIM_MS)}")
    print(f"    full replay vs snapshot + tail: {full_med / median(with_tail['big']):.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="big log size")
    ap.add_argument("--runs", type=int, default=30, help="subprocess runs per measurement")
    ap.add_argument("--replays", type=int, default=3,
                    help="runs of the full-replay measurements (each is slow)")
    args = ap.parse_args()
    if args.runs < 2 or args.replays < 1 or args.events < 1000:
        ap.error("need --runs >= 2, --replays >= 1, --events >= 1000")

    oj, python = find_oj()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="oj-cli-bench-", dir="/var/tmp"))
    try:
        print(f"cpus={os.cpu_count()} python={python} oj={oj} dir={tmp}")
        describe_interpreter(python, cli_env(tmp / "none"))
        cold_start(oj, python, tmp, args.runs)
        big_log(oj, python, tmp, args.events, args.runs, args.replays)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
