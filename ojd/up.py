"""``ojd up``: one foreground process that runs a whole project, for containers (``CMD
["ojd", "up"]``) and terminals, as huey's consumer or sidekiq do.

Each worker of the runbook runs as it does in the foreground today, in a child process of
its own (``ojd worker NAME --project ROOT --foreground``): its lock file names its PID, so
pushes, ``oj worker start|stop|list`` and ``oj status`` find it as they find any
foreground worker. A child that crashes is restarted with a backoff, as ``Restart=`` would;
one that exits 78 (it cannot run as configured) or 0 (``oj worker stop``) is left stopped
until the runbook changes or ``oj worker start NAME`` asks for it (a ``worker:woken``
record, then SIGUSR1 here). Crons tick here on their schedules (``ojd.runbook.elapse``),
each tick a child ``ojd cron NAME --project ROOT``, with the timers' catch-up of a calendar
tick missed while nothing ran them. The runbook is read again every few seconds and on
SIGHUP or SIGUSR1: workers and crons it gained start, those it lost stop.

Signal handlers only record and write to a self-pipe; the loop acts. The first SIGTERM or
SIGINT stops taking work: the workers are sent SIGTERM (they take nothing new and exit), no
tick starts, and ``ojd up`` then waits for the jobs its workers and ticks started to end
(they run in processes of their own), bounded by ``--grace`` if given, and exits 0. It waits
as a terminal's process too: the prompt comes back when the work is done, as with huey or
sidekiq. A second signal kills the workers still stopping and stops waiting: the jobs left
end with a container (everything in its PID namespace does) and go on by themselves
elsewhere; either way the next start resumes them. ``ojd up`` is a child subreaper and
reaps every child it is given, so as a container's PID 1 it leaves no zombie.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import time

from ojd import identity, paths, wake
from ojd import project as projects
from ojd.duration import format_duration
from ojd.errors import OjError, describe, escaped, quoted
from ojd.notify import Log
from ojd.runbook.elapse import first_tick, next_tick
from ojd.runners import leftovers
from ojd.runners.liveness import alive
from ojd.store import Store
from ojd.unitnames import qualify

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.runbook.model import Runbook

EXIT_CONFIG = 78  # a worker that can never run as configured: not restarted
RELOAD_EVERY = 2.0  # seconds between looks at the runbook files
IDLE_EVERY = 0.5  # seconds between looks at the state with --until-idle
BACKOFF_MAX = 60.0  # the longest wait before a crashed worker starts again
STEADY = 60.0  # a worker that ran this long before crashing starts again at once
DRAIN_EVERY = 0.5  # seconds between looks at the jobs a stop waits for (a child's end wakes too)


class WorkerChild:
    """One worker of the project as ``ojd up`` runs it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid: int | None = None
        self.started = 0.0  # monotonic
        self.failures = 0  # crashes in a row
        self.restart_at: float | None = None  # monotonic: a crashed worker's next start
        self.held: str | None = None  # why it is not restarted ("stopped", "config")
        self.held_at = 0.0  # wall clock: a later worker:woken releases it
        self.gone = False  # the runbook no longer defines it: not restarted


class CronClock:
    """One cron: when it ticks next, and the tick under way."""

    def __init__(self, name: str, schedule: str | None, interval: float | None) -> None:
        self.name = name
        self.schedule = schedule
        self.interval = interval
        self.due: float | None = None  # wall clock
        self.tick_pid: int | None = None


class Up:
    def __init__(self, store: Store, root: str, runbook: Runbook, log: Log,
                 until_idle: bool = False, grace: float | None = None) -> None:
        self.store = store
        self.root = root
        self.runbook = runbook
        self.log = log
        self.until_idle = until_idle
        self.grace = grace  # the longest wait for running jobs at a stop; None: no bound
        self.project_name = projects.project_name(root)  # its records are PROJECT:NAME
        self.workers: dict[str, WorkerChild] = {}
        self.crons: dict[str, CronClock] = {}
        self.stopping = False
        self.forced = False  # a second signal: no more waiting
        self.waiting: dict[str, str] | None = None  # jobs a stop waits for: id -> their name
        self.wait_ends: float | None = None  # monotonic: when --grace is up
        self._signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._runbook_error: str | None = None
        self._state_error: str | None = None
        self._next_reload = 0.0

    # -- signals -----------------------------------------------------------------------

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                    signal.SIGCHLD):
            signal.signal(sig, self._record)

    def _full(self, name: str) -> str:
        """The record's name of this project's worker or cron ``name``."""
        return qualify(self.project_name, name)

    def _record(self, signum: int, _frame) -> None:
        self._signals.append(signum)
        try:
            os.write(self._wake_w, b"s")
        except BlockingIOError:
            pass

    def _take_signals(self) -> list[int]:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        taken, self._signals[:] = list(self._signals), []
        return taken

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        names = ", ".join(quoted(n) for n in sorted(self.runbook.workers)) or "none"
        cron_names = ", ".join(quoted(n) for n in sorted(self.runbook.crons)) or "none"
        self.log.info(f"running project {escaped(self.root)} (PID {os.getpid()}): workers "
                      f"{names}; crons {cron_names}")
        for name in sorted(self.runbook.workers):
            self._spawn_worker(self.workers.setdefault(name, WorkerChild(name)))
        self._schedule_crons(starting=True)
        self._next_reload = time.monotonic() + RELOAD_EVERY
        next_idle_check = 0.0
        while True:
            for signum in self._take_signals():
                self._on_signal(signum)
            self._reap()
            if (self.stopping and not self._running_workers()
                    and not any(c.tick_pid is not None for c in self.crons.values())
                    and (self.forced or self._jobs_ended())):
                break
            now = time.monotonic()
            if not self.stopping:
                if now >= self._next_reload:
                    self._reload()
                    self._next_reload = now + RELOAD_EVERY
                self._restart_due(now)
                self._tick_due(time.time())
                if self.until_idle and now >= next_idle_check:
                    next_idle_check = now + IDLE_EVERY
                    if self._idle():
                        self.log.info("nothing left that can run without a person; "
                                      "stopping (--until-idle)")
                        self._stop()
                        continue
            select.select([self._wake_r], [], [], self._timeout())
        self._reap()
        self.log.info("stopped")
        return 130 if self.forced else 0

    def _timeout(self) -> float:
        now = time.monotonic()
        if self.stopping:
            return DRAIN_EVERY
        ends = [self._next_reload]
        ends += [w.restart_at for w in self.workers.values() if w.restart_at is not None]
        if self.until_idle:
            ends.append(now + IDLE_EVERY)
        wall = time.time()
        ends += [now + (c.due - wall) for c in self.crons.values() if c.due is not None]
        return min(max(0.0, end - now) for end in ends)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                bound = (f", up to {format_duration(self.grace)} (--grace)"
                         if self.grace is not None else "")
                self.log.info(f"{name}: stopping; workers take no new work and running jobs "
                              f"are waited for{bound}; a second signal stops waiting")
                self._stop()
            elif not self.forced:
                self.forced = True
                left = [w for w in self.workers.values() if w.pid is not None]
                if left:
                    self.log.warning(f"second {name}: killing worker(s) "
                                     f"{', '.join(quoted(w.name) for w in left)} now")
                    for w in left:
                        _kill(w.pid, signal.SIGKILL)
                jobs = self.waiting if self.waiting is not None else self._running_jobs()
                if jobs:
                    self.log.warning(f"second {name}: no more waiting; "
                                     + _left_behind(list(jobs.values())))
        elif signum in (signal.SIGHUP, signal.SIGUSR1) and not self.stopping:
            # 'oj worker start' asks for a worker (SIGUSR1); SIGHUP rereads the runbook
            self._reload()
            self._release_woken()

    def _stop(self) -> None:
        self.stopping = True
        for w in self.workers.values():
            if w.pid is not None:
                _kill(w.pid, signal.SIGTERM)

    def _running_workers(self) -> list[WorkerChild]:
        return [w for w in self.workers.values() if w.pid is not None]

    def _running_jobs(self) -> dict[str, str] | None:
        """The jobs a stop waits for, by id, each named as the log says it: the project's
        jobs a worker or a tick started whose process runs. A job waiting for an answer
        needs a person, not a wait; ``oj run``'s jobs are their starter's. None: the state
        cannot be read."""
        state = self._state()
        if state is None:
            return None
        return {j["id"]: _job_name(j) for j in state.jobs.values()
                if j["project"] == self.root and (j.get("worker") or j.get("cron"))
                and j["status"] == "running" and alive(j.get("process"))}

    def _jobs_ended(self) -> bool:
        """Whether the jobs a stop waits for have ended (or --grace is up): which ones is
        said once, and each as it ends."""
        running = self._running_jobs()
        if self.waiting is None:
            if running is None:
                return False
            self.waiting = dict(running)
            if self.waiting:
                bound = (f"up to {format_duration(self.grace)}" if self.grace is not None
                         else "without bound")
                self.log.info(f"waiting ({bound}) for {len(self.waiting)} job(s) to end: "
                              f"{', '.join(self.waiting.values())}")
                if self.grace is not None:
                    self.wait_ends = time.monotonic() + self.grace
        if running is not None:
            state = self.store.state
            for job_id in [j for j in self.waiting if j not in running]:
                self.log.info(f"{self.waiting.pop(job_id)}: {_outcome(state.jobs.get(job_id))}")
        if not self.waiting:
            return True
        if self.wait_ends is not None and time.monotonic() >= self.wait_ends:
            self.log.warning(f"--grace {format_duration(self.grace or 0)} is up; "
                             + _left_behind(list(self.waiting.values())))
            return True
        return False

    def _state(self):
        """The state caught up, or None when it cannot be read (a database out of reach, a
        full disk): said once, and what needs it waits for the next look."""
        try:
            state = self.store.refresh()
        except Exception as e:
            why = describe(e)
            if why != self._state_error:
                self._state_error = why
                self.log.error(f"cannot read the state: {why}; trying again")
            return None
        if self._state_error is not None:
            self._state_error = None
            self.log.info("the state reads again")
        return state

    # -- workers -------------------------------------------------------------------------

    def _spawn_worker(self, w: WorkerChild) -> None:
        w.pid = _spawn(["worker", w.name, "--project", self.root, "--foreground"])
        w.started = time.monotonic()
        w.restart_at = None
        w.held = None
        self.log.info(f"worker {quoted(w.name)} started (PID {w.pid})")

    def _reap(self) -> None:
        """Every child that ended: workers and ticks by their PIDs, and whatever else was
        given to this subreaper (a job whose worker or tick is gone)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for w in self.workers.values():
                if w.pid == pid:
                    self._worker_ended(w, status)
                    break
            else:
                for c in self.crons.values():
                    if c.tick_pid == pid:
                        c.tick_pid = None
                        if status != 0:
                            self.log.warning(f"cron {quoted(c.name)}: its tick "
                                             f"{_how_ended(status)}")

    def _worker_ended(self, w: WorkerChild, status: int) -> None:
        w.pid = None
        w.held_at = time.time()  # a wake recorded after this end asks for it again
        name = quoted(w.name)
        if self.stopping or w.gone:
            if w.gone:
                self.workers.pop(w.name, None)
            return
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            w.held = "stopped"
            self.log.info(f"worker {name} stopped; 'oj worker start {escaped(w.name)}' "
                          "starts it again")
        elif code == EXIT_CONFIG:
            w.held = "config"
            self.log.error(f"worker {name} cannot run as configured (exit 78; its lines above "
                           "say why); it starts again when the runbook changes or on 'oj "
                           f"worker start {escaped(w.name)}'")
        else:
            ran = time.monotonic() - w.started
            w.failures = 1 if ran >= STEADY else w.failures + 1
            delay = 0.0 if ran >= STEADY else min(BACKOFF_MAX, 2.0 ** (w.failures - 1))
            w.restart_at = time.monotonic() + delay
            self.log.warning(f"worker {name} {_how_ended(status)}; starting it again in "
                             f"{delay:g}s")

    def _restart_due(self, now: float) -> None:
        for w in self.workers.values():
            if w.pid is None and w.restart_at is not None and now >= w.restart_at:
                self._spawn_worker(w)

    def _release_woken(self) -> None:
        """Start the workers ``oj worker start`` asked for since they stopped (it records
        ``worker:woken`` before it signals), and a crashed one without its backoff."""
        state = self._state()
        if state is None:
            return
        for w in list(self.workers.values()):
            if w.pid is not None or w.gone:
                continue
            rec = state.workers.get(self._full(w.name)) or {}
            woken = rec.get("woken_at") or 0.0
            if rec.get("project") == self.root and woken >= w.held_at:
                self._spawn_worker(w)

    # -- the runbook ---------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            runbook = projects.load_if_changed(self.root, paths.cache_dir(self.store.root),
                                               self.runbook.digest)
        except (OjError, OSError) as e:
            problem = str(e)
            if problem != self._runbook_error:
                self._runbook_error = problem
                for line in problem.splitlines():
                    self.log.error(line)
                self.log.error("runbook not reloaded: keeping the previous one; 'oj runbook "
                               "check' lists the problems")
            return
        self._runbook_error = None
        if runbook is None:
            return
        self.runbook = runbook
        self.log.info("runbook reloaded")
        for name in sorted(runbook.workers):
            w = self.workers.get(name)
            if w is None or w.gone:
                w = self.workers[name] = WorkerChild(name)
                self._spawn_worker(w)
            elif w.held == "config":  # the change may be its fix
                self._spawn_worker(w)
        for w in list(self.workers.values()):
            if w.name not in runbook.workers and not w.gone:
                w.gone = True
                self.log.info(f"worker {quoted(w.name)} is gone from the runbook; stopping it")
                if w.pid is not None:
                    _kill(w.pid, signal.SIGTERM)
                else:
                    self.workers.pop(w.name)
        self._schedule_crons(starting=False)

    # -- crons ---------------------------------------------------------------------------

    def _schedule_crons(self, starting: bool) -> None:
        """Each cron's next tick: at a start with the timers' catch-up; after a reload, a
        cron new or changed starts its schedule afresh, as a rewritten timer does."""
        now = time.time()
        state = self._state()
        for name, cron in sorted(self.runbook.crons.items()):
            clock = self.crons.get(name)
            if clock is not None and (clock.schedule, clock.interval) == (cron.schedule,
                                                                           cron.interval):
                continue
            if clock is None:
                clock = self.crons[name] = CronClock(name, cron.schedule, cron.interval)
            clock.schedule, clock.interval = cron.schedule, cron.interval
            rec = (state.crons.get(self._full(name)) if state is not None else None) or {}
            last = None
            if rec.get("project") == self.root:
                last = max(rec.get("last_tick") or 0.0, rec.get("last_skipped") or 0.0) or None
            clock.due, catch_up = first_tick(cron.schedule, cron.interval, now,
                                             last if starting else None)
            if catch_up:
                self.log.info(f"cron {quoted(name)}: a tick was due while nothing ran it; "
                              "ticking now")
            elif clock.due is None:
                self.log.warning(f"cron {quoted(name)}: its schedule "
                                 f"{quoted(cron.schedule or '')} elapses no more")
        for name in [n for n in self.crons if n not in self.runbook.crons]:
            self.log.info(f"cron {quoted(name)} is gone from the runbook; no more ticks")
            self.crons.pop(name)

    def _tick_due(self, now: float) -> None:
        for c in self.crons.values():
            if c.due is None or now < c.due:
                continue
            c.due = next_tick(c.schedule, c.interval, now)
            if c.tick_pid is not None:
                self.log.warning(f"cron {quoted(c.name)}: its previous tick is still under "
                                 "way; this one is skipped")
                continue
            c.tick_pid = _spawn(["cron", c.name, "--project", self.root])

    # -- --until-idle --------------------------------------------------------------------

    def _idle(self) -> bool:
        """Nothing can run without a person: no running job of the project, no tick under
        way, and no pending, active or retrying item in the queue of a worker that runs
        (or will start again by itself). Dead items, jobs waiting for an answer and
        workers left stopped need a person; crons alone keep nothing alive."""
        if any(c.tick_pid is not None for c in self.crons.values()):
            return False
        state = self._state()
        if state is None:
            return False
        if any(j["project"] == self.root and j["status"] == "running"
               for j in state.jobs.values()):
            return False
        queues = {self.runbook.workers[w.name].queue for w in self.workers.values()
                  if w.held is None and not w.gone and w.name in self.runbook.workers}
        return not any(i["status"] in ("pending", "active", "failed")
                       for q in queues for i in state.queue_items(self.root, q))


def _spawn(args: list[str]) -> int:
    """``ojd ARGS`` as a child in a process group of its own: a terminal's Ctrl-C reaches
    ``ojd up`` alone, which stops its children in order."""
    return os.posix_spawn(sys.executable, [sys.executable, "-m", "ojd.main", *args],
                          os.environ, setpgroup=0)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _job_name(job: dict) -> str:
    return (f"job {job['id'][:4]} {job['name']}"
            + (f" (step {job['step']})" if job.get("step") else ""))


def _outcome(job: dict | None) -> str:
    """How a job a stop waited for ended, as its log line says it."""
    status = (job or {}).get("status")
    if status in ("done", "failed", "cancelled"):
        return status
    if status == "waiting":
        return "waits for an answer (the next start runs it on)"
    return "its process ended first; the next start resumes it"


def _left_behind(jobs: list[str]) -> str:
    """What becomes of the jobs a stop no longer waits for."""
    one = len(jobs) == 1
    if os.getpid() == 1:  # a PID namespace's init: everything in it ends with it
        return (f"{', '.join(jobs)} {'ends' if one else 'end'} with this container; the next "
                f"start resumes {'it' if one else 'them'} at the step it was in")
    return (f"{', '.join(jobs)} {'goes' if one else 'go'} on in {'its' if one else 'their'} "
            f"own process{'' if one else 'es'}; the next start adopts {'it' if one else 'them'}"
            " if still running, or resumes at the step it was in")


def _how_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def run(project: str | None, until_idle: bool, grace: float | None = None) -> int:
    """``ojd up``: run every worker and cron of the project found from ``project`` (or
    the current directory) until SIGTERM or Ctrl-C (or, with ``until_idle``, until
    nothing can run without a person); a stop waits for running jobs up to ``grace``
    seconds (None: until they end)."""
    log = Log("up")
    store = Store()
    root = projects.find_root(override=project)
    try:
        runbook = projects.load(root, paths.cache_dir(store.root))
    except OjError as e:
        for line in str(e).splitlines():
            log.error(line)
        return EXIT_CONFIG
    lock_path = wake.up_lock_path(store.root, root)
    paths.make_state_dir(os.path.dirname(lock_path))
    lock = paths.open_state_file(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = wake.up_pid(store.root, root)
        log.error(f"'ojd up' already runs project {escaped(root)}"
                  + (f" (PID {pid})" if pid else "") + "; stop it first")
        return EXIT_CONFIG
    # the lock file names this process, as a worker's does: 'oj worker start' finds it
    os.ftruncate(lock, 0)
    os.pwrite(lock, identity.pid_file_text(os.getpid()).encode(), 0)
    if not leftovers.become_subreaper():
        log.warning("cannot become a child subreaper: jobs whose worker ended are reaped by "
                    "init, not here")
    up = Up(store, root, runbook, log, until_idle, grace)
    up.install_signals()
    try:
        return up.run()
    finally:
        os.ftruncate(lock, 0)
        os.close(lock)
