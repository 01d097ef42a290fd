"""Jobs in processes of their own: drain rate against the in-process runner, per-item costs,
push-to-step latency, a worker restart under running steps, and ``oj run`` to first output.

    python benchmarks/job_bench.py [--items N] [--rounds R] [--trace-items M]
                                   [--profile-items M] [--pushes P] [--restarts K]
                                   [--runs K] [--old-ref REF] [--only 1234]

Defaults take about three minutes on 2 idle CPUs (longer on a busy machine: the new runner
spends several times the CPU per item of the old one, so it suffers more from load).

Everything runs inside the private systemd of tests/sandbox.py (booted on a root under
/var/lib/oj-sandbox, powered off and removed at the end), with oj's units installed by
``oj systemd install``. Each figure comes with a baseline measured in the same run:

1. Drain of a one-step ``true`` pipeline, concurrency 4 and 1: N items pushed to a stopped
   worker's queue, then the worker is started and timed until every item is completed.
   Baseline: the in-process runner of REF (default 7fc0fd8, where steps ran in threads of
   ``ojd worker``), built from ``git archive REF`` and installed with ``pip install
   --target`` under the sandbox root; its workers are the same unit with a drop-in that
   sets ExecStart= to the old ``ojd`` and OJ_STATE_DIR to a state dir of its own. Rounds
   alternate new and old. Per item, for both: WAL records, PIDs allocated in the sandbox
   (``ns_last_pid``; a worker start and stop without items subtracted), CPU time (the
   sandbox cgroup's account; the worker, PID 1 and journald from /proc), the phases of an
   item from the WAL's timestamps and, from a separate drain of M items under ``strace
   -f`` (slow, not timed): processes and threads created, execve, fdatasync/fsync, D-Bus
   messages (StartTransientUnit among them). Then an item's parts alone, new code: a scope
   for a forked child (StartTransientUnit until the child is in it), the step wrapper with
   and without tee against ``bash -c true``, a Store load, one WAL append. Last, when
   py-spy is installed, M items drained at concurrency 1 under ``py-spy record -s
   --idle``: milliseconds per item under the frames where the worker and its job processes
   spend their time.
2. Push -> step start on an idle worker (concurrency 1, fallback poll 60 s), as in
   worker_bench.py: latency from the durable push to the ``$EPOCHREALTIME`` the step's
   first command records, for the new and the old runner. Context: ``bash -c true``.
3. Worker restart with 4 running steps (each waits for a file): ``systemctl restart`` of
   the worker until its StatusText says ``4/4 running`` (READY=1 comes after the new worker
   adopted its jobs), K times; the step and job processes must be the same before and
   after, and each job must have started its step exactly once when they end. Baseline:
   the same restart of the same worker with nothing running.
4. ``oj run`` of a one-step job (``echo hi``), from exec to its first stdout line, to the
   line ``hi`` and to its exit, against ``systemd-run --wait --pipe -q echo hi``; K runs
   each, interleaved, from a driver inside the sandbox. Context: the old ``oj run hi``
   (the job ran inside the ``oj`` process).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

from sandbox import Sandbox, SandboxError, cgroup_mounts, remove_root  # noqa: E402
from worker_bench import (  # noqa: E402
    DRIVER,
    LATENCY_P50_AIM_MS,
    LATENCY_P99_AIM_MS,
    find_oj,
    median,
    ms,
    pct,
    verdict,
)

from ojd.store import Store  # noqa: E402
from ojd.store.wal import WalDirectory  # noqa: E402

SANDBOX_BASE = Path(os.environ.get("OJ_SANDBOX_BASE", "/var/lib/oj-sandbox"))
OLD_REF = "7fc0fd8"  # the last commit whose worker ran steps in its own threads
DRAIN_FLOOR = 150.0  # items/s, new runner, concurrency 4
WARMUP_PUSHES = 3
HOLD_JOBS = 4

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

queue "otp1" {
  vars = ["n"]
}

queue "otp4" {
  vars = ["n"]
}

queue "olat" {
  type = "persisted"
  vars = ["n"]
}

queue "hold" {
  vars = ["n"]
}

worker "jlat" {
  source      = { queue = "lat" }
  handler     = { pipeline = "stamp" }
  concurrency = 1
  poll        = "60s"
}

worker "jtp1" {
  source      = { queue = "tp1" }
  handler     = { pipeline = "noop" }
  concurrency = 1
  poll        = "60s"
}

worker "jtp4" {
  source      = { queue = "tp4" }
  handler     = { pipeline = "noop" }
  concurrency = 4
  poll        = "60s"
}

worker "otp1" {
  source      = { queue = "otp1" }
  handler     = { pipeline = "noop" }
  concurrency = 1
  poll        = "60s"
}

worker "otp4" {
  source      = { queue = "otp4" }
  handler     = { pipeline = "noop" }
  concurrency = 4
  poll        = "60s"
}

worker "olat" {
  source      = { queue = "olat" }
  handler     = { pipeline = "stamp" }
  concurrency = 1
  poll        = "60s"
}

worker "jhold" {
  source      = { queue = "hold" }
  handler     = { pipeline = "hold" }
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

pipeline "hold" {
  vars = ["item"]
  step "hold" {
    run = "while [ ! -e RELEASE ]; do sleep 0.05; done"
  }
}

command "hi" {
  run = { pipeline = "hi" }
}

pipeline "hi" {
  step "hi" {
    run = "echo hi"
  }
}
"""

# Runs inside the sandbox: K interleaved runs of each command, time to first line, to the
# line "hi" and to exit; prints one JSON document.
FIRSTLINE = r'''
import json, os, subprocess, sys, time

def once(case):
    env = dict(os.environ, **case.get("env", {}))
    t = time.perf_counter()
    p = subprocess.Popen(case["argv"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL, env=env)
    first = hi = None
    for line in p.stdout:
        now = time.perf_counter() - t
        if first is None:
            first = now
        if line.strip() == b"hi" and hi is None:
            hi = now
    code = p.wait()
    return {"first": first, "hi": hi, "exit": time.perf_counter() - t, "code": code}

cases = json.loads(sys.argv[1])
runs = int(sys.argv[2])
out = {name: [] for name in cases}
for case in cases.values():
    once(case)  # warm-up, not counted
for _ in range(runs):
    for name, case in cases.items():
        out[name].append(once(case))
print(json.dumps(out))
'''

# Runs inside the sandbox as root: what one item's parts cost, each alone; one JSON document.
COMPONENTS = r'''
import json, os, subprocess, sys, tempfile, time

from ojd import bashrun
from ojd.runners.stepprocess import StepCommand
from ojd.store import Store
from ojd.systemd import Systemd
from ojd.store.wal import WalDirectory

state, scratch, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])


def scope_once(manager, i):
    """A forked child moved into a new scope as jobprocess.spawn does: (reply, moved)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    unit = f"oj-bench-{os.getpid()}-{i}.scope"
    t = time.perf_counter()
    manager.start_scope(unit, pid, "oj bench scope")
    reply = time.perf_counter() - t
    while True:
        with open(f"/proc/{pid}/cgroup") as f:
            if unit in f.read():
                break
        time.sleep(0.0005)
    moved = time.perf_counter() - t
    os.close(w)
    os.waitpid(pid, 0)
    return reply, moved


def fork_once():
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - t


def step_once(tee, log, status):
    """The step wrapper around `true`, as JobRunner._run_step starts it; Popen to exit."""
    sync_r, sync_w = os.pipe()
    t = time.perf_counter()
    with StepCommand("bench", "step", sync_r, status, "0", "true") as command:
        with open(log, "ab", buffering=0) as out:
            proc = subprocess.Popen(command.argv, pass_fds=command.fds,
                                    stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL if tee else out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    os.close(sync_r)
    os.write(sync_w, b"go\n")
    os.close(sync_w)
    proc.wait()
    return time.perf_counter() - t


def bare_once():
    t = time.perf_counter()
    subprocess.run(["bash", "-e", "-o", "pipefail", "-c", "true"], stdin=subprocess.DEVNULL)
    return time.perf_counter() - t


def timed(f, *a):
    t = time.perf_counter()
    f(*a)
    return time.perf_counter() - t


manager = Systemd(user=False)
scope_once(manager, -1)  # connects
out = {"scope_reply": [], "scope_moved": [], "fork": [], "step_tee": [], "step_log": [],
       "bash_true": [], "store_load": [], "store_refresh": [], "append": []}
log, status = os.path.join(scratch, "step.log"), os.path.join(scratch, "step.status")
wal = WalDirectory(os.path.join(scratch, "wal"), on_problem=lambda p: None)
wal.append({"type": "bench:probe"})
for i in range(runs):
    reply, moved = scope_once(manager, i)
    out["scope_reply"].append(reply)
    out["scope_moved"].append(moved)
    out["fork"].append(fork_once())
    out["step_tee"].append(step_once(True, log, status))
    out["step_log"].append(step_once(False, log, status))
    out["bash_true"].append(bare_once())
    store = Store(state, on_problem=None)
    out["store_load"].append(timed(store.refresh))
    out["store_refresh"].append(timed(store.refresh))
    out["append"].append(timed(wal.append, {"type": "bench:probe", "i": i}))
out["state_pos"] = store.state.pos
print(json.dumps(out))
'''

SYSCALLS = "clone,clone3,fork,vfork,execve,fsync,fdatasync,sendmsg"
NOTIFY_RE = re.compile(r"(READY|STATUS|WATCHDOG|STOPPING)=")


class Runner:
    """One flavour of oj in the sandbox: its scripts, environment, state dir, and the
    prefix of its drain workers and queues (a worker unit runs one flavour's ojd)."""

    def __init__(self, label: str, oj: str, state: Path, env: dict[str, str],
                 prefix: str) -> None:
        self.prefix = prefix
        self.label = label
        self.oj = oj
        self.state = state
        self.env = env


class JobBench:
    def __init__(self, sb: Sandbox, root: Path, oj: str, python: str) -> None:
        self.sb = sb
        self.root = root
        self.python = python
        self.project = root / "project"
        self.stamps = root / "stamps.txt"
        self.release = root / "release"
        self.driver = root / "driver.py"
        self.firstline = root / "firstline.py"
        bindir = os.path.dirname(oj)
        path = f"{bindir}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.new = Runner("new", oj, root / "state",
                          {"OJ_STATE_DIR": str(root / "state"), "PATH": path}, "")
        self.old: Runner | None = None
        self.journald = 0  # its MainPID, once booted
        runbooks = self.project / ".oj" / "runbooks"
        runbooks.mkdir(parents=True)
        text = (RUNBOOK.replace("STAMPS", str(self.stamps))
                .replace("RELEASE", str(self.release)))
        (runbooks / "bench.hcl").write_text(text)
        self.driver.write_text(textwrap.dedent(DRIVER))
        self.firstline.write_text(FIRSTLINE)
        self.components = root / "components.py"
        self.components.write_text(COMPONENTS)

    # -- running things inside -----------------------------------------------------------

    def run(self, r: Runner, args: Sequence[str], timeout: float = 120) -> str:
        return self.sb.run(list(args), env=r.env, cwd=str(self.project),
                           timeout=timeout).stdout

    def oj(self, r: Runner, *args: str) -> str:
        return self.run(r, [r.oj, *args])

    def drive(self, r: Runner, *args: str, timeout: float = 300) -> dict:
        return json.loads(self.run(r, [self.python, str(self.driver), *args], timeout=timeout))

    def last_pid(self) -> int:
        return int(self.run(self.new, ["cat", "/proc/sys/kernel/ns_last_pid"]))

    def pid_max(self) -> int:
        return int(self.run(self.new, ["cat", "/proc/sys/kernel/pid_max"]))

    def cpu_total(self) -> float:
        """CPU seconds used by everything in the sandbox so far (its cgroup's account)."""
        for mount in cgroup_mounts():
            usage = mount / self.sb.cgroup / "cpuacct.usage"
            if usage.exists():
                return int(usage.read_text()) / 1e9
            stat = mount / self.sb.cgroup / "cpu.stat"
            if stat.exists() and mount.name not in ("cpu", "cpu,cpuacct"):
                for line in stat.read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
        raise SandboxError("no CPU account for the sandbox's cgroup")

    def proc_cpu(self, *pids: int) -> list[float]:
        """utime + stime of processes inside the sandbox, in seconds."""
        text = self.run(self.new, ["cat", *(f"/proc/{p}/stat" for p in pids)])
        tick = os.sysconf("SC_CLK_TCK")
        return [sum(int(x) for x in line.rsplit(")", 1)[1].split()[11:13]) / tick
                for line in text.splitlines()]

    def cpu_marks(self, worker: str | None = None) -> dict[str, float]:
        pids = {"systemd": 1, "journald": self.journald}
        if worker is not None:
            pids["worker"] = int(self.sb.unit_property(self.unit(worker), "MainPID"))
        marks = dict(zip(pids, self.proc_cpu(*pids.values()), strict=True))
        marks["total"] = self.cpu_total()
        return marks

    @staticmethod
    def unit(worker: str) -> str:
        return f"oj-worker@project:{worker}.service"  # the project is named after ./project

    def status_text(self, worker: str) -> str:
        return self.sb.unit_property(self.unit(worker), "StatusText")

    # -- the old runner -------------------------------------------------------------------

    def install_old(self, ref: str, workers: Sequence[str]) -> None:
        """The package of ``ref`` under the sandbox root, and drop-ins that make
        ``workers`` run its ``ojd`` on a state dir of their own."""
        src, pkg = self.root / "old-src", self.root / "old-pkg"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        pip = Path(self.python).parent / "pip"
        subprocess.run([str(pip), "install", "-q", "--no-deps", "--target", str(pkg),
                        str(src)], check=True, capture_output=True)
        state = self.root / "old-state"
        path = f"{pkg / 'bin'}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.old = Runner(f"old ({ref})", str(pkg / "bin" / "oj"), state,
                          {"OJ_STATE_DIR": str(state), "PYTHONPATH": str(pkg), "PATH": path}, "o")
        for worker in workers:
            d = Path("/etc/systemd/system") / f"{self.unit(worker)}.d"
            # /etc/systemd/system inside is a directory under the sandbox root
            host_dir = self.root / "etc-systemd-system" / d.name
            host_dir.mkdir(parents=True, exist_ok=True)
            (host_dir / "60-old-runner.conf").write_text(
                "[Service]\n"
                f"Environment=PYTHONPATH={pkg}\n"
                "ExecStart=\n"
                f"ExecStart={pkg / 'bin' / 'ojd'} worker %i\n")
        self.sb.systemctl("daemon-reload")
        where = self.run(self.old, [self.python, "-c", "import ojd.worker as w; "
                                    "print(w.__file__, hasattr(w, 'DRAIN_GRACE'))"])
        print(f"old runner: {where.strip()} (in-process runner: DRAIN_GRACE present)")


# -- 1. drain ------------------------------------------------------------------------------


def wait_done(store: Store, ids: Sequence[str], what: str, timeout: float = 180,
              reader=None, records: list | None = None) -> None:
    """Wait until every item is completed; meanwhile ``reader``'s new records go to
    ``records`` (read as they come: a compaction may drop segments read too late)."""
    deadline = time.monotonic() + timeout
    while True:
        if reader is not None and records is not None:
            records.extend(reader.read_new())
        state = store.refresh()
        statuses = [state.items[i]["status"] for i in ids if i in state.items]
        if any(s not in ("pending", "active", "completed") for s in statuses):
            raise SandboxError(f"{what}: an item ended {sorted(set(statuses))}")
        if all(s == "completed" for s in statuses):
            if reader is not None and records is not None:
                records.extend(reader.read_new())
            return
        if time.monotonic() > deadline:
            left = sum(s != "completed" for s in statuses)
            raise SandboxError(f"{what}: {left}/{len(ids)} items not done after {timeout}s")
        time.sleep(0.005)


def drain(b: JobBench, r: Runner, worker: str, queue: str, items: int) -> dict:
    """Push ``items`` to a stopped worker's queue, start it, time until all are completed."""
    store = Store(str(r.state), on_problem=None)
    store.refresh()
    wal = WalDirectory(r.state / "wal", on_problem=lambda p: None)
    reader = wal.reader()
    reader.read_new()
    start_pos = reader.position
    ids = b.drive(r, "push", str(b.project), queue, str(items))["ids"]
    wanted = set(ids)
    pid0 = b.last_pid()
    cpu0 = b.cpu_marks()
    t0 = time.perf_counter()
    b.oj(r, "worker", "start", worker)
    records: list = []
    wait_done(store, ids, f"{r.label} {worker}", reader=reader, records=records)
    wall = time.perf_counter() - t0
    cpu1 = b.cpu_marks(worker)
    end_pos = store.state.pos
    b.sb.systemctl("stop", b.unit(worker))
    pid1 = b.last_pid()
    first_take, last_done, scopes = None, 0.0, 0
    marks: dict[str, dict[str, float]] = {}  # job id -> event type -> its (first) ts
    if records and records[0].pos != start_pos + 1 or any(
            y.pos != x.pos + 1 for x, y in zip(records, records[1:], strict=False)):
        raise SandboxError(f"{r.label} {worker}: records missed while reading the WAL")
    for rec in records:
        ev = rec.event
        if ev["type"] == "job:process" and ev.get("unit"):
            scopes += 1
        if ev["type"] == "queue:taken" and ev.get("id") in wanted:
            marks.setdefault(ev["job"], {}).setdefault("take", ev["ts"])
        elif ev["type"] in PHASE_EVENTS and ev.get("id") in marks:
            marks[ev["id"]].setdefault(PHASE_EVENTS[ev["type"]], ev["ts"])
        if ev.get("id") not in wanted:
            continue
        if ev["type"] == "queue:taken" and first_take is None:
            first_take = ev["ts"]
        elif ev["type"] == "queue:completed":
            last_done = max(last_done, ev["ts"])
    if first_take is None or last_done <= first_take:
        raise SandboxError(f"{r.label} {worker}: no take/completion timestamps in the WAL")
    return {"e2e": items / wall, "steady": items / (last_done - first_take),
            "records": (end_pos - start_pos) / items, "pids": (pid1 - pid0) % b.pid_max(),
            "scopes": scopes / items, "phases": phases(marks),
            "cpu": {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}}


# the WAL events that mark a job's phases (their ts is the moment of the append)
PHASE_EVENTS = {"job:process": "process", "job:step_started": "step",
                "job:finished": "end"}


def phases(marks: dict[str, dict[str, float]]) -> dict[str, float]:
    """Median seconds between a job's marks, and from a job's end to the next take."""
    spans: dict[str, list[float]] = {}
    order = ("take", "process", "step", "end")
    for m in marks.values():
        present = [k for k in order if k in m]
        for a, z in zip(present, present[1:], strict=False):
            spans.setdefault(f"{a}->{z}", []).append(m[z] - m[a])
    jobs = sorted((m for m in marks.values() if "take" in m and "end" in m),
                  key=lambda m: m["take"])
    spans["end->next take"] = [n["take"] - m["end"] for m, n in
                                 zip(jobs, jobs[1:], strict=False)]
    return {k: median(v) for k, v in spans.items() if v}


def idle_start(b: JobBench, r: Runner, worker: str) -> tuple[int, dict[str, float]]:
    """PIDs a start and stop of an idle worker allocate (nsenter'd commands included), and
    the CPU its start costs, measured as ``drain`` measures it."""
    pid0 = b.last_pid()
    cpu0 = b.cpu_marks()
    b.oj(r, "worker", "start", worker)
    cpu1 = b.cpu_marks(worker)
    b.sb.systemctl("stop", b.unit(worker))
    return (b.last_pid() - pid0) % b.pid_max(), {k: v - cpu0.get(k, 0.0)
                                                 for k, v in cpu1.items()}


def traced_drain(b: JobBench, r: Runner, worker: str, queue: str, items: int) -> dict:
    """Syscall counts of a worker and everything it forks while it drains ``items``."""
    out = b.root / f"strace-{worker}-{uuid.uuid4().hex[:6]}.txt"
    store = Store(str(r.state), on_problem=None)
    b.oj(r, "worker", "start", worker)
    pid = int(b.sb.unit_property(b.unit(worker), "MainPID"))
    # and the job process it keeps ready, forked already: it runs job after job
    children = b.sb.run(["pgrep", "-P", str(pid)], check=False).stdout.split()
    tracer = b.sb.popen(["strace", "-f", "-qq", "-s", "512", "-e", f"trace={SYSCALLS}",
                         "-o", str(out), "-p", str(pid),
                         *(a for c in children for a in ("-p", c))],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    attached = ["grep", "-q", "TracerPid:[[:space:]]*[1-9]", f"/proc/{pid}/status"]
    while b.sb.run(attached, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SandboxError("strace did not attach")
        time.sleep(0.05)
    try:
        ids = b.drive(r, "push", str(b.project), queue, str(items))["ids"]
        b.oj(r, "worker", "start", worker)  # a wake
        wait_done(store, ids, f"traced {r.label} {worker}", timeout=300)
    finally:
        os.killpg(tracer.pid, signal.SIGINT)
        try:
            tracer.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(tracer.pid, signal.SIGKILL)
            tracer.wait()
        b.sb.systemctl("stop", b.unit(worker))
    counts: Counter[str] = Counter()
    for line in out.read_text(errors="replace").splitlines():
        # "PID name(args) = ret" or "PID name(args <unfinished ...>": arguments are
        # decoded at entry, so the first line of a call says all that is counted
        if re.match(r"\d+\s+<\.\.\. execve resumed>.* = -1 ", line):
            counts["execve_missed"] += 1  # its start line was counted as one that worked
            counts["execve"] -= 1
        m = re.match(r"\d+\s+(\w+)\((.*)$", line)
        if m is None:
            continue
        name, rest = m[1], m[2]
        if name in ("clone", "clone3"):
            counts["threads" if "CLONE_THREAD" in rest else "processes"] += 1
        elif name in ("fork", "vfork"):
            counts["processes"] += 1
        elif name == "execve":
            # a PATH search tries each directory: only the one that worked starts a program
            counts["execve_missed" if re.search(r"\) = -1 ", rest) else "execve"] += 1
        elif name in ("fsync", "fdatasync"):
            counts["fsync"] += 1
        elif name == "sendmsg":
            if NOTIFY_RE.search(rest):
                counts["sd_notify"] += 1
            else:
                counts["dbus"] += 1
                if "StartTransientUnit" in rest:
                    counts["StartTransientUnit"] += 1
    out.unlink()
    return {k: v / items for k, v in counts.items()}


# Frames whose samples say where an item's time goes (py-spy names them Class.method).
PROFILE_FRAMES = {
    "worker": ("spawn", "into_scope", "Systemd.start_scope", "ProcessPool._ended",
               "ProcessPool.adopt", "WorkerLoop.reload_runbook", "Store.refresh",
               "WalWriter.append"),
    "job process": ("run_child", "run_here", "Store.load", "JobRunner._run_step",
                    "Popen._execute_child", "Popen.wait", "JobRunner._finish",
                    "WalWriter.append"),
}


def profile_drain(b: JobBench, items: int) -> None:
    """py-spy samples (wall time, 500 Hz) of the worker and its job processes while a
    concurrency-1 worker drains ``items``: milliseconds per item under each frame."""
    spy = shutil.which("py-spy") or str(Path(b.python).parent / "py-spy")
    if not os.access(spy, os.X_OK):
        print("   (no py-spy profile: py-spy not found; pip install py-spy)")
        return
    r = b.new
    worker, queue = names(r, 1)
    store = Store(str(r.state), on_problem=None)
    b.oj(r, "worker", "start", worker)
    pid = int(b.sb.unit_property(b.unit(worker), "MainPID"))
    out, pidfile = b.root / "profile.txt", b.root / "py-spy.pid"
    rate = 500
    spy_proc = b.sb.popen(["sh", "-c", f'echo $$ > {pidfile}; exec "$0" "$@"', spy, "record",
                           "-s", "--idle", "-r", str(rate), "--format", "raw", "-o", str(out),
                           "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)  # attached
    ids = b.drive(r, "push", str(b.project), queue, str(items))["ids"]
    b.oj(r, "worker", "start", worker)
    wait_done(store, ids, "profiled drain")
    b.run(r, ["sh", "-c", f"kill -INT $(cat {pidfile})"])
    spy_proc.wait(60)
    b.sb.systemctl("stop", b.unit(worker))
    if not out.exists():
        print("   (no py-spy profile: py-spy wrote nothing)")
        return
    per: dict[str, Counter[str]] = {k: Counter() for k in PROFILE_FRAMES}
    busy: Counter[str] = Counter()
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        who = "job process" if sum(f.startswith("process ") for f in frames) > 1 else "worker"
        names_ = {re.sub(r" \(.*", "", f) for f in frames if not f.startswith("process ")}
        leaf = re.sub(r" \(.*", "", frames[-1])
        if who == "worker" and leaf == "WorkerLoop.run":
            continue  # waiting in select(): idle
        busy[who] += int(count)
        for frame in PROFILE_FRAMES[who]:
            if frame in names_:
                per[who][frame] += int(count)
    print(f"   where the time goes (py-spy, wall time at {rate} Hz, {items} items at "
          "concurrency 1, ms per item under each frame, nested frames included):")
    for who, frames in PROFILE_FRAMES.items():
        shown = ", ".join(f"{f} {per[who][f] / rate / items * 1000:.1f}" for f in frames
                          if per[who][f])
        print(f"     {who} (not idle {busy[who] / rate / items * 1000:.1f} ms): {shown}")


def names(r: Runner, conc: int) -> tuple[str, str]:
    """The drain worker and queue of a runner at a concurrency."""
    return (f"{r.prefix or 'j'}tp{conc}", f"{r.prefix}tp{conc}")


def bench_drain(b: JobBench, items: int, rounds: int, trace_items: int,
                profile_items: int) -> None:
    assert b.old is not None
    print(f"\n1. Drain of a one-step `true` pipeline ({items} items queued first, then the "
          f"worker is started; {rounds} round(s), new and old alternating)")
    runners = (b.new, b.old)
    rates: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for conc in (4, 1):
            for r in runners:
                rates.setdefault((r.label, conc), []).append(
                    drain(b, r, *names(r, conc), items))
    starts = {r.label: idle_start(b, r, names(r, 4)[0]) for r in runners}
    idle = {label: x[0] for label, x in starts.items()}
    for conc in (4, 1):
        best = {}
        for r in runners:
            runs = rates[(r.label, conc)]
            steady = [x["steady"] for x in runs]
            e2e = [x["e2e"] for x in runs]
            best[r.label] = median(steady)
            print(f"   concurrency {conc}, {r.label:<14} {median(steady):7.1f} items/s first "
                  f"take -> last completion (runs: {', '.join(f'{s:.1f}' for s in steady)}); "
                  f"{median(e2e):6.1f}/s incl. unit start")
        ratio = best[b.new.label] / best[b.old.label]
        line = f"   concurrency {conc}: new / old = {ratio:.2f}x"
        if conc == 4:
            line += (f"; floor {DRAIN_FLOOR:.0f} items/s for the new runner: "
                     f"{verdict(best[b.new.label] >= DRAIN_FLOOR)}")
        print(line)
    print("   per item (all runs; PIDs: sandbox ns_last_pid delta minus an idle start+stop "
          f"of the worker, {idle[b.new.label]} new / {idle[b.old.label]} old):")
    for r in runners:
        runs = [x for conc in (4, 1) for x in rates[(r.label, conc)]]
        recs = median([x["records"] for x in runs])
        pids = median([(x["pids"] - idle[r.label]) / items for x in runs])
        scopes = median([x["scopes"] for x in runs])
        print(f"     {r.label:<14} {recs:4.1f} WAL records, {pids:5.2f} PIDs (processes and "
              f"threads), {scopes:4.2f} job scopes (job:process with a unit)")
    print(f"   CPU per item (sandbox cgroup; per process from /proc; an idle worker start "
          f"subtracted; {os.cpu_count()} CPUs):")
    for r in runners:
        base = starts[r.label][1]
        for conc in (4, 1):
            per = {k: median([x["cpu"][k] for x in rates[(r.label, conc)]]) - base.get(k, 0.0)
                   for k in ("total", "worker", "systemd", "journald")}
            rest = per["total"] - per["worker"] - per["systemd"] - per["journald"]
            ceiling = (os.cpu_count() or 1) / (per["total"] / items)
            print(f"     {r.label:<14} concurrency {conc}: {per['total'] / items * 1000:5.1f} ms "
                  f"(worker {per['worker'] / items * 1000:4.1f}, systemd PID 1 "
                  f"{per['systemd'] / items * 1000:4.1f}, journald "
                  f"{per['journald'] / items * 1000:4.1f}, job processes, steps and the rest "
                  f"{rest / items * 1000:4.1f}); all CPUs busy would give "
                  f"{ceiling:5.0f} items/s")
    print("   phases of an item at concurrency 1 (medians of WAL append timestamps; take: "
          "the take's append, process: job:process, step: job:step_started, end: "
          "job:finished):")
    for r in runners:
        ph: dict[str, list[float]] = {}
        for x in rates[(r.label, 1)]:
            for k, v in x["phases"].items():
                ph.setdefault(k, []).append(v)
        print(f"     {r.label:<14} " + ", ".join(f"{k} {median(v) * 1000:.1f} ms"
                                                for k, v in ph.items()))
    scratch = b.root / "components"
    scratch.mkdir(exist_ok=True)
    c = json.loads(b.run(b.new, [b.python, str(b.components), str(b.new.state), str(scratch),
                                 "30"], timeout=300))
    print("   an item's parts alone (30 runs each, medians, inside the sandbox, new code):")
    print(f"     StartTransientUnit reply {ms(median(c['scope_reply']))}, until the process "
          f"is in the scope {ms(median(c['scope_moved']))} (p90 "
          f"{ms(pct(c['scope_moved'], 90))}); fork+exit+wait of the driver "
          f"{ms(median(c['fork']))}")
    print(f"     step wrapper around `true`: with tee {ms(median(c['step_tee']))}, straight to "
          f"the log {ms(median(c['step_log']))}; bash -e -o pipefail -c true "
          f"{ms(median(c['bash_true']))}")
    print(f"     Store load of the state dir ({c['state_pos']} records) "
          f"{ms(median(c['store_load']))}, refresh with nothing new "
          f"{ms(median(c['store_refresh']))}; one WAL append (lock, write, fdatasync) "
          f"{ms(median(c['append']))}")
    if profile_items > 0:
        profile_drain(b, profile_items)
    if trace_items <= 0 or shutil.which("strace") is None:
        print("   (no strace run: --trace-items 0 or strace missing)")
        return
    print(f"   per item under strace -f of the worker ({trace_items} items, concurrency 4, "
          "not timed):")
    for r in runners:
        c = traced_drain(b, r, *names(r, 4), trace_items)
        print(f"     {r.label:<14} processes {c.get('processes', 0):4.2f}, threads "
              f"{c.get('threads', 0):4.2f}, execve {c.get('execve', 0):4.2f} (+ "
              f"{c.get('execve_missed', 0):4.2f} PATH misses), "
              f"fdatasync/fsync {c.get('fsync', 0):4.2f}, D-Bus sendmsg "
              f"{c.get('dbus', 0):4.2f} (StartTransientUnit {c.get('StartTransientUnit', 0):4.2f})"
              f", sd_notify {c.get('sd_notify', 0):4.2f}")


# -- 2. push -> step ------------------------------------------------------------------------


def bench_latency(b: JobBench, pushes: int) -> None:
    print(f"\n2. Push -> step start on an idle worker ({pushes} pushes, concurrency 1, "
          f"fallback poll 60s; {WARMUP_PUSHES} warm-up pushes not counted)")
    results = {}
    for r in (b.new, b.old):
        if r is None:
            continue
        worker, queue = f"{r.prefix or 'j'}lat", f"{r.prefix}lat"
        b.oj(r, "worker", "start", worker)
        results[r.label] = b.drive(r, "latency", str(b.project), queue, str(b.stamps),
                                   str(pushes), str(WARMUP_PUSHES), "0.01")
        b.sb.systemctl("stop", b.unit(worker))
    for label, res in results.items():
        lat = res["latency"]
        print(f"   {label:<14} p50 {ms(pct(lat, 50))}  p90 {ms(pct(lat, 90))}  p99 "
              f"{ms(pct(lat, 99))}  max {ms(max(lat))}  min {ms(min(lat))}"
              + ("" if res["woken_all"] else "  WARNING: some pushes woke no worker"))
        parts = res.get("parts") or {}
        print(f"   {'':<14} medians: " + ", ".join(f"{k} {ms(median(v))}"
                                                   for k, v in parts.items() if v))
    res = results[b.new.label]
    lat, bt = res["latency"], res["bash_true"]
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(f"   bash -c true   median {ms(median(bt))}  p99 {ms(pct(bt, 99))}  "
          "(subprocess.run from Python, inside the sandbox)")
    line = f"   new p50 / bash -c true: {p50 / median(bt):.1f}x"
    if b.old is not None:
        old_p50 = pct(results[b.old.label]["latency"], 50)
        line += f"; new p50 / old p50: {p50 / old_p50:.1f}x"
    print(line)
    print(f"   new: aim p50 <= {LATENCY_P50_AIM_MS:.0f} ms: "
          f"{verdict(p50 * 1000 <= LATENCY_P50_AIM_MS)}; aim p99 <= "
          f"{LATENCY_P99_AIM_MS:.0f} ms: {verdict(p99 * 1000 <= LATENCY_P99_AIM_MS)}")


# -- 3. restart under running steps ---------------------------------------------------------


def job_procs(store: Store, ids: Sequence[str]) -> dict[str, tuple]:
    state = store.refresh()
    out = {}
    for item_id in ids:
        item = state.items[item_id]
        job = state.jobs.get(item.get("job") or "") or next(
            (j for j in state.jobs.values() if j.get("item") == item_id), None)
        if job is None:
            continue
        proc, step = job.get("process") or {}, job.get("step_proc") or {}
        out[job["id"]] = (job["status"], job.get("step_status"), proc.get("pid"),
                          proc.get("start"), step.get("pid"), step.get("start"))
    return out


def timed_restart(b: JobBench, worker: str, want: str) -> tuple[float, float]:
    """Seconds until ``systemctl restart`` returned, and until StatusText says ``want``."""
    # the unit's StartLimitBurst would refuse the restarts that follow
    b.sb.systemctl("reset-failed", b.unit(worker), check=False)
    t0 = time.perf_counter()
    b.sb.systemctl("restart", b.unit(worker))
    returned = time.perf_counter() - t0
    deadline = time.monotonic() + 30
    while want not in b.status_text(worker):
        if time.monotonic() > deadline:
            raise SandboxError(f"{worker}: StatusText never said {want!r}: "
                               f"{b.status_text(worker)!r}")
        time.sleep(0.002)
    return returned, time.perf_counter() - t0


def bench_restart(b: JobBench, restarts: int) -> None:
    r = b.new
    print(f"\n3. Worker restart with {HOLD_JOBS} running steps (each waits for a file), "
          f"{restarts} restarts; baseline: the same restart with nothing running")
    b.release.unlink(missing_ok=True)
    store = Store(str(r.state), on_problem=None)
    ids = b.drive(r, "push", str(b.project), "hold", str(HOLD_JOBS))["ids"]
    b.oj(r, "worker", "start", "jhold")
    deadline = time.monotonic() + 30
    while True:
        procs = job_procs(store, ids)
        if len(procs) == HOLD_JOBS and all(p[1] == "running" and p[4] for p in procs.values()):
            break
        if time.monotonic() > deadline:
            raise SandboxError(f"jhold: steps not all running: {procs}")
        time.sleep(0.02)
    before = procs
    busy = [timed_restart(b, "jhold", f"{HOLD_JOBS}/{HOLD_JOBS} running")
            for _ in range(restarts)]
    after = job_procs(store, ids)
    same = after == before
    journal = b.sb.journal(b.unit("jhold"))
    watching = sum(1 for ln in journal.splitlines() if ln.rstrip().endswith("watching it"))
    b.release.touch()
    wait_done(store, ids, "jhold after release")
    state = store.refresh()
    wal = WalDirectory(r.state / "wal", on_problem=lambda p: None)
    started: Counter[str] = Counter()
    resumed: Counter[str] = Counter()
    spawned: Counter[str] = Counter()
    for rec in wal.records():
        ev = rec.event
        if ev.get("id") in before:
            if ev["type"] == "job:step_started":
                started[ev["id"]] += 1
            elif ev["type"] == "job:resumed":
                resumed[ev["id"]] += 1
            elif ev["type"] == "job:process":
                spawned[ev["id"]] += 1
    outcomes = Counter(state.jobs[j]["status"] for j in before if j in state.jobs)
    idle = [timed_restart(b, "jhold", f"0/{HOLD_JOBS} running") for _ in range(restarts)]
    b.sb.systemctl("stop", b.unit("jhold"))
    for label, xs in ((f"{HOLD_JOBS} steps running", busy), ("nothing running", idle)):
        ret, adopted = [x[0] for x in xs], [x[1] for x in xs]
        print(f"   {label:<16} restart returned: median {ms(median(ret))}, max "
              f"{ms(max(ret))}; StatusText says adopted: median {ms(median(adopted))}, "
              f"max {ms(max(adopted))}")
    ratio = median([x[1] for x in busy]) / median([x[1] for x in idle])
    print(f"   restart with {HOLD_JOBS} running / idle restart: {ratio:.2f}x")
    print(f"   job and step processes (pid, start time) the same after {restarts} restarts: "
          f"{'yes' if same else 'NO'}; journal 'watching it' lines: {watching} "
          f"({HOLD_JOBS} per restart expected: {HOLD_JOBS * restarts})")
    print(f"   after release: jobs {dict(outcomes)}; step starts per job "
          f"{sorted(started.values())}, job processes per job {sorted(spawned.values())}, "
          f"resumes {sum(resumed.values())}: steps not restarted: "
          f"{verdict(same and set(started.values()) == {1} and not resumed)}")


# -- 4. oj run to first output --------------------------------------------------------------


def bench_oj_run(b: JobBench, runs: int) -> None:
    r = b.new
    print(f"\n4. `oj run hi` (one step: echo hi) from exec to output, {runs} runs each, "
          "interleaved, timed by a driver inside the sandbox")
    cases = {
        "oj run hi": {"argv": [r.oj, "run", "hi"]},
        "systemd-run --wait --pipe -q echo hi":
            {"argv": ["systemd-run", "--wait", "--pipe", "-q", "echo", "hi"]},
        "systemd-run --wait -q true": {"argv": ["systemd-run", "--wait", "-q", "true"]},
        "python -c pass": {"argv": [b.python, "-c", "pass"]},
    }
    if b.old is not None:  # context: the job ran inside the oj process
        cases[f"oj run hi, {b.old.label}"] = {"argv": [b.old.oj, "run", "hi"],
                                             "env": b.old.env}
    res = json.loads(b.run(r, [b.python, str(b.firstline), json.dumps(cases), str(runs)],
                           timeout=600))
    width = max(len(n) for n in res)
    for name, xs in res.items():
        bad = [x["code"] for x in xs if x["code"] != 0]
        first = [x["first"] for x in xs if x["first"] is not None]
        hi = [x["hi"] for x in xs if x["hi"] is not None]
        ex = [x["exit"] for x in xs]
        parts = [f"   {name:<{width}}"]
        if first:
            parts.append(f"first line {ms(median(first))} (p90 {ms(pct(first, 90))})")
        if hi:
            parts.append(f"'hi' {ms(median(hi))}")
        parts.append(f"exit {ms(median(ex))} (p90 {ms(pct(ex, 90))})")
        if bad:
            parts.append(f"NON-ZERO EXITS {bad}")
        print("  ".join(parts))
    oj_hi = median([x["hi"] for x in res["oj run hi"] if x["hi"] is not None] or [0])
    sr = res["systemd-run --wait --pipe -q echo hi"]
    sr_hi = median([x["hi"] for x in sr if x["hi"] is not None] or [1])
    print(f"   oj run / systemd-run --pipe, to 'hi': {oj_hi / sr_hi:.2f}x; to exit: "
          f"{median([x['exit'] for x in res['oj run hi']]) / median([x['exit'] for x in sr]):.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300, help="items per drain run")
    parser.add_argument("--rounds", type=int, default=2, help="drain runs per runner and "
                        "concurrency")
    parser.add_argument("--trace-items", type=int, default=40,
                        help="items of the strace'd drain (0: none)")
    parser.add_argument("--profile-items", type=int, default=100,
                        help="items of the py-spy profiled drain (0: none)")
    parser.add_argument("--pushes", type=int, default=100, help="pushes for the latency run")
    parser.add_argument("--restarts", type=int, default=5, help="restarts per case")
    parser.add_argument("--runs", type=int, default=20, help="runs per oj run case")
    parser.add_argument("--old-ref", default=OLD_REF, help="the in-process runner's commit")
    parser.add_argument("--only", default="1234", help="sections to run, e.g. 13")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("job_bench: needs root (the sandbox uses namespaces, mounts and cgroups)")
    for tool in ("unshare", "nsenter", "systemctl", "git"):
        if shutil.which(tool) is None:
            sys.exit(f"job_bench: {tool} not found")
    oj, python = find_oj()
    root = SANDBOX_BASE / f"jobbench-{uuid.uuid4().hex[:12]}"
    sb = Sandbox(root)
    began = time.perf_counter()
    try:
        sb.boot()
        print(f"sandbox booted in {time.perf_counter() - began:.1f}s at {root}; "
              f"oj: {oj}; {os.cpu_count()} CPUs; host load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        b = JobBench(sb, root, oj, python)
        where = b.run(b.new, [python, "-c", "import ojd; print(ojd.__file__)"])
        print(f"ojd inside the sandbox: {where.strip()}")
        b.oj(b.new, "systemd", "install")
        b.journald = int(sb.unit_property("systemd-journald.service", "MainPID"))
        b.install_old(args.old_ref, ("otp1", "otp4", "olat"))
        if "1" in args.only:
            bench_drain(b, args.items, args.rounds, args.trace_items, args.profile_items)
        if "2" in args.only:
            bench_latency(b, args.pushes)
        if "3" in args.only:
            bench_restart(b, args.restarts)
        if "4" in args.only:
            bench_oj_run(b, args.runs)
    finally:
        try:
            sb.poweroff()
        except SandboxError as e:
            print(f"job_bench: {e}", file=sys.stderr)
        remove_root(root)
    print(f"\ntotal {time.perf_counter() - began:.0f}s; host load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
