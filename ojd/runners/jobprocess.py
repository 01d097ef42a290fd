"""A job's own process: forked by whoever starts the job (a worker, ``oj run``, ``oj job
resume``) and moved into a transient scope ``oj-job-ID.scope`` of the same systemd
manager, or into a session of its own where no manager is reachable.

A worker restart, an upgrade or a closed terminal therefore never touches running work:
the job process runs the job to its end and settles its queue item itself. Forking (not
exec'ing ``ojd``) keeps a job's start cheap (no interpreter start, no imports) and keeps
everything the worker unit set up for its processes: user, namespaces, no_new_privs,
capabilities and the system-call filter are inherited, not copied.

The start is a handshake: the child waits on a pipe until its parent has moved it into
its scope (``ready JOB UNIT``) and recorded it in the WAL (``job:process``, then ``go``).
A parent that dies first leaves a child that reads end-of-file and exits without running
anything, so a job never runs unrecorded, and a successor that finds the recorded process
alive waits for it instead of starting a second one.

A worker's job process, once it has recorded its job's end, says ``free`` and can be made
ready for another job (``again``): a backlog costs a fork per slot, not one per job. It
first sets back what a step may have changed in it (``prlimit --pid $PPID``, ``renice``):
each job starts as in a fresh fork, and a process that cannot be set back is not reused.
"""

from __future__ import annotations

import gc
import os
import resource
import select
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ojd.errors import OjError
from ojd.identity import boot_id, elsewhere, host_name, proc_start_time
from ojd.runbook.model import Runbook
from ojd.runners import leftovers
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store

# a job whose process keeps dying without ending it is failed after this many resumes
MAX_RESUMES = 3

# the environment a service hands its main process only: a job is not the worker
_SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                     "LISTEN_PID", "LISTEN_FDNAMES")


class Interrupted(BaseException):
    """The job process was told to stop (SIGTERM: a cancel, a shutdown, a scope stop)."""


@dataclass
class JobProcess:
    job_id: str
    pid: int
    start: str | None
    unit: str | None
    child: bool  # forked by this process: reap it
    w: int | None = None  # a reusable runner's pipes: the next "go", and its "free" line
    free: int | None = None
    runbook: Runbook | None = None  # the runbook a reusable runner holds (of its fork)


def job_unit(job_id: str) -> str:
    return f"oj-job-{job_id}.scope"


def own_manager():
    """The systemd manager this process runs under (its cgroup says which), for the scopes
    of the jobs it starts; None outside a manager's units."""
    from ojd.systemd import Systemd

    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    # the unified hierarchy's line, or (cgroup v1) systemd's named one
    path = next((ln.split(":", 2)[2] for ln in lines if ":name=systemd:" in ln),
                next((ln[3:] for ln in lines if ln.startswith("0::")), ""))
    if "/user@" in path:
        return Systemd(user=True) if os.geteuid() != 0 else None
    if "/system.slice/" in path and os.geteuid() == 0:
        return Systemd(user=False)
    return None  # a run-as worker cannot make units in the system manager


def manager_for_cli():
    """The manager ``oj run`` puts a job's scope in: the system's for root, the user's when
    it outlives the login (linger); else None, and the job runs in a session of its own,
    which a closed terminal does not stop either."""
    from ojd.systemd import Systemd
    from ojd.wake import manager_present

    user = os.geteuid() != 0
    if not manager_present(user):
        return None
    if user:
        import pwd

        name = pwd.getpwuid(os.geteuid()).pw_name
        if not os.path.exists(f"/var/lib/systemd/linger/{name}"):
            return None
    return Systemd(user=user)


def alive(proc: dict | None) -> bool:
    """Whether the recorded process (``job["process"]``, a step's ``step_proc``) still
    runs: same boot, same pid, same start time."""
    return bool(proc and proc.get("pid") and proc.get("start") and not elsewhere(proc)
                and proc.get("boot", boot_id()) == boot_id()
                and proc_start_time(proc["pid"]) == proc["start"])


class NothingToRun(Exception):
    """The decision made with the job process ready found no work (another took it)."""


class TakenOver(OjError):
    """A job to resume has another process recorded since it was found without one."""


@dataclass
class Ready:
    """A job process forked (and put in its unit) ahead of its job, waiting to be given it:
    a worker keeps one while it has a free slot, so a push's job starts without a fork, a
    D-Bus call or a cgroup move on its path."""

    job_id: str
    pid: int
    start: str | None
    unit: str | None
    w: int  # the handshake pipe's end: "go" or end-of-file
    free: int | None = None  # a reusable runner says "free" here when its job has ended
    runbook: Runbook | None = None  # the one it runs: of its fork


def spawn(store: Store, runbook: Runbook, job_id: str, *, owner: str, manager=None,
          quiet: bool = False, warn: Callable[[str], None] | None = None,
          decide: Callable[..., list[dict]] | None = None, name: str | None = None,
          replaces: dict | None = None, scope_required: bool = False) -> JobProcess:
    """Start the job's process. ``manager``: the ``ojd.systemd.Systemd`` to make its scope
    in (None: its own session only). ``quiet``: its output goes nowhere but the job log
    (``oj run`` follows the log; a terminal must not hold the job). ``decide(tx)``: the
    events that create the job (a take, ``job:created``), decided in the transaction that
    records its process, so a new job costs one append; raising NothingToRun there leaves
    nothing behind. An existing job is resumed only if its recorded process is still
    ``replaces`` (the dead one its caller saw): two resumes at once start one process.
    ``scope_required``: under a manager, a job it makes no scope for is not started
    (NoScope, nothing recorded) rather than left in its starter's unit."""
    if decide is None:
        decide = _takeover(job_id, replaces, owner)
    ready = prepare(store, runbook, job_id, manager=manager, quiet=quiet,
                    warn=warn, name=name, scope_required=scope_required)
    try:
        return give(store, ready, owner=owner, decide=decide)
    except NothingToRun:
        discard(ready)
        raise


def _takeover(job_id: str, replaces: dict | None, owner: str) -> Callable[..., list[dict]]:
    """The resume of an existing job: refused unless its recorded process is still the dead
    one its caller saw; ``job:resumed`` goes in the append that records the new process."""
    def check(tx) -> list[dict]:
        job = tx.state.jobs.get(job_id)
        if job is None:
            raise OjError(f"no job with id {job_id}")
        if job["status"] not in LIVE_JOB_STATES:
            raise TakenOver(f"job {job_id} is {job['status']} now")
        if job.get("process") != replaces:
            raise TakenOver(f"job {job_id} was resumed meanwhile (process "
                            f"{(job.get('process') or {}).get('pid')})")
        return [{"type": "job:resumed", "id": job_id, "by": owner}]
    return check


def prepare(store: Store, runbook: Runbook, job_id: str, *, manager=None, quiet: bool = False,
            warn: Callable[[str], None] | None = None, name: str | None = None,
            reusable: bool = False, scope_required: bool = False) -> Ready:
    """Fork the process that will run job ``job_id`` and ask for its scope; it waits for
    ``give`` (and runs the runbook and sees the state as they were at this fork).
    ``reusable``: when its job has ended it says "free" and waits for another (``again``)
    instead of exiting, so a worker with a backlog forks once per slot, not once per job."""
    name = name or (store.state.jobs.get(job_id) or {}).get("name") or job_id
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    free_r, free_w = os.pipe() if reusable else (None, None)
    # the child's garbage collector must not visit (and so copy) every page it shares with
    # its starter: what exists now is frozen out of collection, in the child for good
    gc.freeze()
    pid = os.fork()
    if pid != 0:
        gc.unfreeze()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 70
        try:
            os.close(w)
            if free_r is not None:
                os.close(free_r)
            code = _child(r, free_w, store, runbook, journal=manager is not None,
                          quiet=quiet)
        finally:
            os._exit(code)
    os.close(r)
    if free_w is not None:
        os.close(free_w)
    ready = Ready(job_id, pid, None, None, w, free_r, runbook)
    try:
        if manager is not None:
            ready.unit = _into_scope(manager, pid, job_id, name, warn, scope_required)
        ready.start = proc_start_time(pid)
        _announce(ready)
    except BaseException:
        discard(ready)
        raise
    return ready


def again(proc: JobProcess, job_id: str, *, manager=None,
          warn: Callable[[str], None] | None = None, name: str | None = None) -> Ready:
    """A reusable runner whose job has ended, made ready for job ``job_id``: moved into
    that job's scope (its previous one, empty now, is collected)."""
    assert proc.w is not None
    ready = Ready(job_id, proc.pid, proc.start, None, proc.w, proc.free, proc.runbook)
    try:
        if manager is not None:
            # no scope, no reuse: it would run the job in its previous job's scope
            ready.unit = _into_scope(manager, proc.pid, job_id, name or job_id, warn,
                                     required=True)
        _announce(ready)
    except BaseException:
        discard(ready)
        raise
    return ready


def give(store: Store, ready: Ready, *, owner: str,
         decide: Callable[..., list[dict]] | None = None, sync: bool = True) -> JobProcess:
    """Record the ready process as its job's (with the events that create the job) and let
    it run. NothingToRun from ``decide`` leaves it ready; any other failure ends it.
    ``sync=False``: the record is durable with the job's first synced append (a worker's
    take: a power cut that loses it also ends the job, and the item is taken again)."""
    try:
        with store.transaction() as tx:
            events = decide(tx) if decide is not None else []
            tx.append(*events, {"type": "job:process", "id": ready.job_id, "pid": ready.pid,
                                "start": ready.start, "boot": boot_id(), "unit": ready.unit,
                                "host": host_name(), "by": owner}, sync=sync)
        os.write(ready.w, b"go\n")
    except NothingToRun:
        raise
    except BaseException:
        discard(ready)
        raise
    if ready.free is None:
        os.close(ready.w)
        return JobProcess(ready.job_id, ready.pid, ready.start, ready.unit, True)
    return JobProcess(ready.job_id, ready.pid, ready.start, ready.unit, True, ready.w,
                      ready.free, ready.runbook)


def _announce(ready: Ready) -> None:
    os.write(ready.w, f"ready {ready.job_id} {ready.unit or '-'}\n".encode())


class _Lines:
    """The lines a starter writes to its job process (a read may bring more than one)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, b""

    def next(self) -> str:
        """The next line, or "" at end-of-file (the starter died or gave up)."""
        while b"\n" not in self.buf:
            try:
                data = os.read(self.fd, 512)
            except OSError:
                return ""
            if not data:
                return ""
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")


def discard(ready: Ready | JobProcess) -> None:
    """End a ready process (or a free runner) unused: it reads end-of-file and exits
    without running anything (its scope goes with it)."""
    for fd in (ready.w, ready.free):
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    # it exits at once; one that does not (stuck before its first read) was never recorded
    # and has nothing to lose: the stop of a worker must not wait on it
    try:
        fd = os.pidfd_open(ready.pid)
    except ProcessLookupError:
        fd = None
    try:
        if fd is not None and not select.select([fd], [], [], 1.0)[0]:
            os.kill(ready.pid, signal.SIGKILL)
        os.waitpid(ready.pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
    finally:
        if fd is not None:
            os.close(fd)


class NoScope(OjError):
    """The manager made no scope for a job whose starter needs one (``scope_required``)."""


def _into_scope(manager, pid: int, job_id: str, name: str,
                warn: Callable[[str], None] | None, required: bool = False) -> str | None:
    from ojd.systemd import SystemdUnavailable

    unit = job_unit(job_id)
    # a cancel stops the scope: what ignores SIGTERM is killed after a short grace
    stop_timeout = leftovers.STOP_GRACE
    try:
        try:
            manager.start_scope(unit, pid, f"oj job {job_id} ({name})", stop_timeout)
        except SystemdUnavailable as e:
            if "already" not in str(e) and "exists" not in str(e):
                raise
            # the scope of an earlier run of this job is still being collected
            unit = f"oj-job-{job_id}-{os.urandom(2).hex()}.scope"
            manager.start_scope(unit, pid, f"oj job {job_id} ({name})", stop_timeout)
    except SystemdUnavailable as e:
        if required:
            raise NoScope(f"the manager made no scope for job {job_id} ({e})") from None
        if warn is not None:
            warn(f"job {job_id} runs without a unit of its own ({e}); a stop of its "
                 "starter's unit stops it too")
        return None
    return unit


def _child(r: int, free: int | None, parent: Store, runbook: Runbook, *, journal: bool,
           quiet: bool) -> int:  # pragma: no cover - runs in the child
    os.setsid()  # no terminal, no job control: a closed terminal or Ctrl-C is not ours
    # what its steps leave behind comes back to it, to be stopped when the job is over
    leftovers.become_subreaper()
    # nothing of the starter's stays open here: above all not the worker's lock (a held
    # flock would outlive the worker) nor its D-Bus connection
    _close_inherited(keep=(r, free))
    # a stray SIGINT, SIGHUP or wake must not kill the job; handlers, not SIG_IGN, so that
    # steps (exec'd) start with the default dispositions, as in any shell
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, _ignore)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # waiting for a job: a stop ends it
    for key in _SERVICE_ONLY_ENV:
        os.environ.pop(key, None)
    # a store that needs a connection (PostgreSQL) opens it while waiting: a ready process
    # then starts its job without a connection's set-up on the path from push to step
    store = Store(parent.root, url=parent.url or "")
    store.warm_up()
    store.take_over(parent)  # its fds are closed here, its state is good
    said = _Lines(r)
    fresh = True
    # what a step may change in its parent (prlimit, renice, a write to its oom_score_adj):
    # each later job starts with these, as a freshly forked process would
    forked = _Attributes.now()
    while True:
        # "ready JOB UNIT": set up in the job's scope while waiting, so that "go" (the job
        # is recorded as this process's) finds nothing left to do but the job
        words = said.next().split()
        if len(words) != 3 or words[0] != "ready":
            return 0  # the starter died (or gave up)
        job_id, unit = words[1], "" if words[2] == "-" else words[2]
        try:
            if unit:
                wait_in_scope(unit)
            _stdio(job_id, unit, journal=journal, quiet=quiet, fresh=fresh)
        except Exception as e:  # said where its starter's log is; the job resumes later
            print(f"job {job_id}: could not set up its process: {e!r}", file=sys.stderr,
                  flush=True)
            return 70
        if said.next() != "go":
            return 0  # not recorded: it never runs
        code, ended = run_here(store, runbook, job_id, tee=journal)
        fresh = False
        if ended or not _resumable(store, job_id):
            # nothing of a job outlives it; an interrupted one keeps its agent for the
            # process that resumes it
            leftovers.stop(skip=_relays)
        if free is None or not ended:
            return code
        lost = forked.restore()
        if lost:  # exits unfreed: its worker forks a clean process for the next job
            from ojd.notify import Log

            Log(f"job {job_id}").info(f"its process is not reused: a step changed its "
                                      f"{lost}, which cannot be set back without privilege")
            return code
        try:
            os.write(free, b"free\n")
        except OSError:
            return code  # its worker is gone: a new one forks its own


@dataclass
class _Attributes:
    """The attributes of a process that a step (another process) can change in it, or the
    job's own code can: the rlimits, nice, oom_score_adj and umask."""

    rlimits: dict[int, tuple[int, int]]
    nice: int
    oom_score_adj: str | None
    umask: int

    @classmethod
    def now(cls) -> _Attributes:  # pragma: no cover - runs in the child
        rlimits = {}
        for name in dir(resource):
            if name.startswith("RLIMIT_"):
                which = getattr(resource, name)
                try:
                    rlimits[which] = resource.getrlimit(which)
                except (ValueError, OSError):
                    pass  # not known to this kernel
        umask = os.umask(0o022)
        os.umask(umask)
        return cls(rlimits, os.getpriority(os.PRIO_PROCESS, 0), _read_oom_score_adj(), umask)

    def restore(self) -> str:  # pragma: no cover - runs in the child
        """Set this process's attributes back to these; what could not be (a raise of a
        hard limit or of the priority, a lower oom_score_adj, each needing a capability),
        named, else ""."""
        lost = []
        for which, limits in self.rlimits.items():
            try:
                if resource.getrlimit(which) != limits:
                    resource.setrlimit(which, limits)
            except (ValueError, OSError):
                lost.append(_rlimit_name(which) + " limit")
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) != self.nice:
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        except OSError:
            lost.append("nice value")
        if self.oom_score_adj is not None and _read_oom_score_adj() != self.oom_score_adj:
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write(self.oom_score_adj)
            except OSError:
                lost.append("oom_score_adj")
        os.umask(self.umask)
        return ", ".join(lost)


def _read_oom_score_adj() -> str | None:  # pragma: no cover - runs in the child
    try:
        with open("/proc/self/oom_score_adj") as f:
            return f.read().strip()
    except OSError:
        return None


def _rlimit_name(which: int) -> str:  # pragma: no cover - runs in the child
    return next((n[len("RLIMIT_"):].lower() for n in dir(resource)
                 if n.startswith("RLIMIT_") and getattr(resource, n) == which), str(which))


def run_here(store: Store, runbook: Runbook, job_id: str, *,
             tee: bool = False) -> tuple[int, bool]:
    """Run the job to its end in this process (the job process's body): (0, True) when it
    recorded the job's end itself, (0, False) when another took it over or cancelled it,
    (1, False) when interrupted (it stays resumable)."""
    from ojd.notify import Log
    from ojd.runners.jobs import JobRunner, Stalled, Superseded
    from ojd.worker import describe

    log = Log(f"job {job_id}")

    def stop(signum, frame) -> None:
        runner.stopping.set()
        raise Interrupted()

    def progress(job: str, what: str, detail: str) -> None:
        if what in ("step", "notify", "unstalled"):
            log.info(detail)
        elif what == "stalled":
            log.error(detail)

    runner = JobRunner(store, runbook, progress=progress, tee=tee)
    signal.signal(signal.SIGTERM, stop)
    try:
        outcome = runner.run(job_id)
    except (Interrupted, Stalled):
        log.info("stopped; the job resumes where it stands")
        return 1, False
    except Superseded as e:
        log.info(f"stopped: {e}")
        return 0, False
    except Exception as e:  # a bug or an unusable file must not leave the job running
        why = describe(e)
        log.error(f"failed: {why}")
        try:
            runner.fail(job_id, f"oj could not run it: {why}")
        except Exception as again:
            log.error(f"its failure could not be recorded either ({describe(again)})")
            return 1, False
        return 0, False
    finally:
        # the end is recorded (or left resumable): a stop from now on just ends the process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.stdout.flush()
        sys.stderr.flush()
    log.info(outcome)
    # only a job whose end this process recorded frees it for another: a cancel that won
    # the race waits for this process to be gone
    return 0, outcome in ("done", "failed")


def _resumable(store: Store, job_id: str) -> bool:  # pragma: no cover - runs in the child
    """Whether the job stays this process's to resume (stopped, not cancelled nor taken
    over); True when the store cannot say: what runs of it is kept."""
    try:
        job = store.refresh().jobs.get(job_id)
    except Exception:
        return True
    return bool(job and job["status"] in LIVE_JOB_STATES
                and (job.get("process") or {}).get("pid") == os.getpid())


def _close_inherited(keep: tuple[int | None, ...]) -> None:  # pragma: no cover - child
    """Close every fd but stdio and ``keep``, listed from /proc: closing all numbers up to
    the limit costs ~20 ms where the close_range call is filtered (a unit's syscall
    filter)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own fd, closed already


def _ignore(signum: int, frame) -> None:  # pragma: no cover - runs in the child
    pass


def wait_in_scope(unit: str, pid: int | str = "self", timeout: float = 2.0) -> None:
    """The manager moves a process into its scope after the call that asked for it
    returned: wait until ``pid`` is there. A job process runs nothing (no step, no journal
    stream) before; a cron tick's service must not end before (its stop would kill what is
    left in it). A process already gone has nothing left to lose."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if unit in f.read():
                    return
        except OSError:
            return
        time.sleep(0.0005)


def _stdio(job_id: str, unit: str, *, journal: bool, quiet: bool, fresh: bool
           ) -> None:  # pragma: no cover - runs in the child
    """stdin from /dev/null; stdout and stderr to the journal as the scope's own stream
    (``journalctl -u oj-job-ID.scope``), else nowhere when ``quiet``, else inherited.
    ``fresh``: this process has run no job yet (see ``_relay``)."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out, direct = None, False
    os.environ.pop("JOURNAL_STREAM", None)
    if journal:
        identifier = f"oj-job-{job_id}"
        if fresh:
            out = _journal_stream(identifier, unit)
            direct = out is not None
        else:
            out = _relay(identifier, unit)
    if out is None and quiet:
        out = null
    if out is not None:
        os.dup2(out, 1)
        os.dup2(out, 2)
        if direct:
            st = os.fstat(out)
            os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        if out != null:
            os.close(out)
    os.close(null)
    _reap_relays()


def _journal_stream(identifier: str, unit: str) -> int | None:  # pragma: no cover - child
    """A stream to journald connected from this process (in its scope now), so journald
    files what it carries under the scope. sd-daemon level prefixes are understood."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("/run/systemd/journal/stdout")
        s.shutdown(socket.SHUT_RD)
        # identifier, unit id, priority, level prefix, to syslog, to kmsg, to console
        s.sendall(f"{identifier}\n{unit}\n6\n1\n0\n0\n0\n".encode())
    except OSError:
        return None
    return s.detach()


_relays: list[int] = []


def _relay(identifier: str, unit: str) -> int | None:  # pragma: no cover - runs in the child
    """A pipe to a ``cat`` that copies it to a new journal stream: the job's lines filed
    under the job's scope. journald files a line under the unit of the pid that wrote it,
    and trusts what it learnt about a pid for a second; a runner that ran the previous job
    in that job's scope would have this job's first lines filed there. ``cat`` is new (its
    pid unknown to journald), in this job's scope from its start, costs an exec where a
    fork of this process would make it copy its pages again, and ends with the pipe."""
    out = _journal_stream(identifier, unit)
    if out is None:
        return None
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(_CAT, ["cat"], {}, file_actions=[
            (os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2)])
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
        os.close(out)
    _relays.append(pid)
    return w


_CAT = shutil.which("cat") or "/bin/cat"


def _reap_relays() -> None:  # pragma: no cover - runs in the child
    """Collect the relays of earlier jobs (they end once their pipe is closed)."""
    for pid in list(_relays):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue
        except ChildProcessError:
            pass
        _relays.remove(pid)
