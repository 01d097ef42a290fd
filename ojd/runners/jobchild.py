"""The job process's side of its start (``ojd.runners.jobprocess``): forked, it waits for
its starter's ``ready JOB UNIT`` and ``go``, sets up its stdio in the job's scope, runs the
job (``run_here``) and, when reusable, sets back what a step changed in it and says
``free`` for the next job.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import sys
from dataclasses import dataclass

from ojd.errors import describe
from ojd.notify import Log
from ojd.runbook.model import Runbook
from ojd.runners import leftovers
from ojd.runners.jobs import JobRunner, Stalled, Superseded
from ojd.runners.jobscope import wait_in_scope
from ojd.runners.proctitle import set_title
from ojd.state import LIVE_JOB_STATES
from ojd.store import Store

# the environment a service hands its main process only: a job is not the worker
_SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                     "LISTEN_PID", "LISTEN_FDNAMES")


class Interrupted(BaseException):
    """The job process was told to stop (SIGTERM: a cancel, a shutdown, a scope stop)."""


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


def run_child(r: int, free: int | None, parent: Store, runbook: Runbook, *, journal: bool,
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
        set_title(f"ojd job {job_id}", f"oj-job-{job_id}")
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
            Log(f"job {job_id}").info(f"its process is not reused: a step changed its "
                                      f"{lost}, which cannot be set back without privilege")
            return code
        set_title("ojd job runner (free)", "oj-job-runner")
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
    log = Log(f"job {job_id}")

    def stop(signum, frame) -> None:
        runner.stopping.set()
        raise Interrupted()

    def progress(job: str, what: str, detail: str) -> None:
        if what == "at":  # the step it runs now: its name in ps
            set_title(f"ojd job {job} {detail}")
        elif what in ("step", "notify", "unstalled"):
            log.info(detail)
        elif what in ("step_failed", "agent_died", "notify_failed"):  # journalctl -p warning
            log.warning(detail)
        elif what == "failed":
            log.warning(f"failed: {detail}")
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
    if outcome != "failed":  # a failure was said, with its error, as it was recorded
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
