"""A job's own process: forked by whoever starts the job (a worker, ``oj run``, ``oj job
resume``) and moved into a transient scope ``oj-job-ID.scope`` of the same systemd
manager, or into a session of its own where no manager is reachable.

A worker restart, an upgrade or a closed terminal therefore never touches running work:
the job process runs the job to its end and settles its queue item itself. Forking (not
exec'ing ``ojd``) keeps a job's start cheap (no interpreter start, no imports) and keeps
everything the worker unit set up for its processes: user, namespaces, no_new_privs,
capabilities and the system-call filter are inherited, not copied.

The start is a handshake: the child waits on a pipe until its parent has moved it into
its scope and recorded it in the WAL (``job:process``). A parent that dies first leaves a
child that reads end-of-file and exits without running anything, so a job never runs
unrecorded, and a successor that finds the recorded process alive waits for it instead of
starting a second one.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ojd.errors import OjError
from ojd.runbook.model import Runbook
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store
from ojd.wake import boot_id, host_name, proc_start_time

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
    return bool(proc and proc.get("pid") and proc.get("start")
                and proc.get("host") in (None, host_name())
                and proc.get("boot", boot_id()) == boot_id()
                and proc_start_time(proc["pid"]) == proc["start"])


def elsewhere(proc: dict | None) -> str | None:
    """The host a recorded process runs on when that is not this one (a shared store): it
    can be neither seen nor signalled from here; its lease says when it is lost."""
    host = (proc or {}).get("host")
    return host if host not in (None, host_name()) else None


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


def spawn(store: Store, runbook: Runbook, job_id: str, *, owner: str, manager=None,
          quiet: bool = False, warn: Callable[[str], None] | None = None,
          decide: Callable[..., list[dict]] | None = None, name: str | None = None,
          replaces: dict | None = None) -> JobProcess:
    """Start the job's process. ``manager``: the ``ojd.systemd.Systemd`` to make its scope
    in (None: its own session only). ``quiet``: its output goes nowhere but the job log
    (``oj run`` follows the log; a terminal must not hold the job). ``decide(tx)``: the
    events that create the job (a take, ``job:created``), decided in the transaction that
    records its process, so a new job costs one append; raising NothingToRun there leaves
    nothing behind. An existing job is resumed only if its recorded process is still
    ``replaces`` (the dead one its caller saw): two resumes at once start one process."""
    if decide is None:
        decide = _takeover(job_id, replaces, owner)
    ready = prepare(store, runbook, job_id, manager=manager, quiet=quiet,
                    warn=warn, name=name)
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
            warn: Callable[[str], None] | None = None, name: str | None = None) -> Ready:
    """Fork the process that will run job ``job_id`` and ask for its scope; it waits for
    ``give`` (and runs the runbook and sees the state as they were at this fork)."""
    name = name or (store.state.jobs.get(job_id) or {}).get("name") or job_id
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
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
            code = _child(r, store, runbook, job_id,
                          journal=manager is not None, quiet=quiet)
        finally:
            os._exit(code)
    os.close(r)
    ready = Ready(job_id, pid, None, None, w)
    try:
        if manager is not None:
            ready.unit = _into_scope(manager, pid, job_id, name, warn)
        ready.start = proc_start_time(pid)
    except BaseException:
        discard(ready)
        raise
    return ready


def give(store: Store, ready: Ready, *, owner: str,
         decide: Callable[..., list[dict]] | None = None) -> JobProcess:
    """Record the ready process as its job's (with the events that create the job) and let
    it run. NothingToRun from ``decide`` leaves it ready; any other failure ends it."""
    try:
        with store.transaction() as tx:
            events = decide(tx) if decide is not None else []
            tx.append(*events, {"type": "job:process", "id": ready.job_id, "pid": ready.pid,
                                "start": ready.start, "boot": boot_id(), "unit": ready.unit,
                                "host": host_name(),
                                "by": owner})
        os.write(ready.w, f"go {ready.unit or '-'}\n".encode())
    except NothingToRun:
        raise
    except BaseException:
        discard(ready)
        raise
    os.close(ready.w)
    return JobProcess(ready.job_id, ready.pid, ready.start, ready.unit, True)


def discard(ready: Ready) -> None:
    """End a ready process unused: it reads end-of-file and exits without running anything
    (its scope goes with it)."""
    try:
        os.close(ready.w)
    except OSError:
        pass
    # it exits at once; one that does not (stuck before its first read) was never recorded
    # and has nothing to lose: the stop of a worker must not wait on it
    deadline = time.monotonic() + 1.0
    try:
        while os.waitpid(ready.pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                os.kill(ready.pid, signal.SIGKILL)
                os.waitpid(ready.pid, 0)
                break
            time.sleep(0.005)
    except (ChildProcessError, ProcessLookupError):
        pass


def _into_scope(manager, pid: int, job_id: str, name: str,
                warn: Callable[[str], None] | None) -> str | None:
    from ojd.systemd import SystemdUnavailable

    unit = job_unit(job_id)
    try:
        try:
            manager.start_scope(unit, pid, f"oj job {job_id} ({name})")
        except SystemdUnavailable as e:
            if "already" not in str(e) and "exists" not in str(e):
                raise
            # the scope of an earlier run of this job is still being collected
            unit = f"oj-job-{job_id}-{os.urandom(2).hex()}.scope"
            manager.start_scope(unit, pid, f"oj job {job_id} ({name})")
    except SystemdUnavailable as e:
        if warn is not None:
            warn(f"job {job_id} runs without a unit of its own ({e}); a stop of its "
                 "starter's unit stops it too")
        return None
    return unit


def _child(r: int, parent: Store, runbook: Runbook, job_id: str, *, journal: bool,
           quiet: bool) -> int:  # pragma: no cover - runs in the child
    os.setsid()  # no terminal, no job control: a closed terminal or Ctrl-C is not ours
    # nothing of the starter's stays open here: above all not the worker's lock (a held
    # flock would outlive the worker) nor its D-Bus connection
    _close_inherited(keep=r)
    # a stray SIGINT, SIGHUP or wake must not kill the job; handlers, not SIG_IGN, so that
    # steps (exec'd) start with the default dispositions, as in any shell
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, _ignore)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # a store that needs a connection (PostgreSQL) opens it while waiting: a ready process
    # then starts its job without a connection's set-up on the path from push to step
    store = Store(parent.root, url=parent.url or "")
    store.warm_up()
    try:
        go = os.read(r, 512).decode()
    except (OSError, UnicodeDecodeError):
        go = ""
    os.close(r)
    if not go.startswith("go ") or not go.endswith("\n"):
        return 0  # the starter died (or gave up) before recording this process
    unit = go[3:-1]
    try:
        if unit != "-":
            _wait_for_scope(unit)
        for key in _SERVICE_ONLY_ENV:
            os.environ.pop(key, None)
        _stdio(job_id, journal=journal, quiet=quiet)
    except Exception as e:  # said where its starter's log is; the job resumes later
        print(f"job {job_id}: could not set up its process: {e!r}", file=sys.stderr,
              flush=True)
        return 70
    return run_here(parent.root, runbook, job_id, tee=journal, parent=parent, store=store)


def run_here(root: str, runbook: Runbook, job_id: str, *,
             tee: bool = False, parent: Store | None = None,
             store: Store | None = None) -> int:
    """Run the job to its end in this process (the job process's body). 0 when it ended
    or was handed over; 1 when interrupted (it stays resumable)."""
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

    store = store or Store(root)
    if parent is not None:
        store.take_over(parent)  # its fds are closed here, its state is good
    runner = JobRunner(store, runbook, progress=progress, tee=tee)
    signal.signal(signal.SIGTERM, stop)
    try:
        outcome = runner.run(job_id)
    except (Interrupted, Stalled):
        log.info("stopped; the job resumes where it stands")
        return 1
    except Superseded as e:
        log.info(f"stopped: {e}")
        return 0
    except Exception as e:  # a bug or an unusable file must not leave the job running
        why = describe(e)
        log.error(f"failed: {why}")
        try:
            runner.fail(job_id, f"oj could not run it: {why}")
        except Exception as again:
            log.error(f"its failure could not be recorded either ({describe(again)})")
            return 1
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stdout.flush()
        sys.stderr.flush()
    log.info(outcome)
    return 0


def _close_inherited(keep: int) -> None:  # pragma: no cover - runs in the child
    """Close every fd but stdio and ``keep``, listed from /proc: closing all numbers up to
    the limit costs ~20 ms where the close_range call is filtered (a unit's syscall
    filter)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own fd, closed already


def _ignore(signum: int, frame) -> None:  # pragma: no cover - runs in the child
    pass


def _wait_for_scope(unit: str, timeout: float = 2.0) -> None:  # pragma: no cover
    """The manager moves this process into its scope after the starter's call returned:
    run nothing (no step, no journal stream) before it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/self/cgroup") as f:
                if unit in f.read():
                    return
        except OSError:
            return
        time.sleep(0.0005)


def _stdio(job_id: str, *, journal: bool, quiet: bool) -> None:  # pragma: no cover
    """stdin from /dev/null; stdout and stderr to the journal as the scope's own stream
    (``journalctl -u oj-job-ID.scope``), else nowhere when ``quiet``, else inherited."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = None
    if journal:
        out = _journal_stream(f"oj-job-{job_id}")
    if out is None and quiet:
        out = null
    if out is not None:
        os.dup2(out, 1)
        os.dup2(out, 2)
        if out != null:
            st = os.fstat(out)
            os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            os.close(out)
    os.close(null)


def _journal_stream(identifier: str) -> int | None:  # pragma: no cover - in the child
    """A stream to journald connected from this process (in its scope now), so journald
    files what it carries under the scope. sd-daemon level prefixes are understood."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("/run/systemd/journal/stdout")
        s.shutdown(socket.SHUT_RD)
        # identifier, unit id, priority, level prefix, to syslog, to kmsg, to console
        s.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
    except OSError:
        return None
    return s.detach()
