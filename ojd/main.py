"""``ojd``: the program systemd runs. ``ojd worker NAME`` is the body of oj-worker@NAME.service,
``ojd cron NAME`` the body of oj-cron@NAME.service, ``ojd metrics`` of oj-metrics.service;
``ojd up`` runs a whole project in the foreground without systemd (``ojd.up``)."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

from ojd import __version__, cron_tick, crons, identity, paths, unitcontrol, wake
from ojd import project as projects
from ojd.duration import DurationError, parse_duration
from ojd.errors import OjError, escaped, quoted
from ojd.notify import Log, Notifier
from ojd.runners.jobprocess import own_manager
from ojd.store import Store
from ojd.unitnames import is_legacy, short, split

# Exit status for a worker that can never start as configured (unknown worker, invalid
# runbook): the unit lists it in RestartPreventExitStatus= so systemd does not loop it.
EXIT_CONFIG = 78  # EX_CONFIG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store_wait import StartSignals


def run_worker(name: str, project: str | None, foreground: bool, until_idle: bool = False
               ) -> int:
    # lazy: the worker loop and its store wait, ~25 ms that a cron tick (ojd cron) never uses
    from ojd.store_wait import StartSignals, Stopped

    # a start waits out its store being away (a database down, a full disk) instead of
    # exiting into the unit's start limit: SIGTERM and Ctrl-C end that wait
    signals = StartSignals()
    signals.install()
    try:
        return _run_worker(name, project, foreground, until_idle, signals)
    except Stopped:
        return signals.exit_code()
    finally:
        signals.close()


def _run_worker(name: str, project: str | None, foreground: bool, until_idle: bool,
                signals: StartSignals) -> int:
    # lazy: as in run_worker, off a cron tick's start
    from ojd import trust, worker_control
    from ojd.store_wait import StoreWait
    from ojd.worker import WorkerLoop

    log = Log(f"worker {escaped(name)}")
    notifier = Notifier()
    store = Store()
    # STATUS= says the runbook's name, as the loop's does: the unit's name holds the project
    wait = StoreWait(store, escaped(short(name)), log, notifier, signals.wake_r,
                     signals.stopped)
    state = wait(store.load)
    try:
        if project is None and not foreground:
            # its unit's instance: PROJECT:NAME, or a NAME from before projects had names
            record = recorded(state.workers, name)
            if record is None:
                raise OjError(f"worker {quoted(name)} is not recorded in {store.root}; start "
                              f"it with 'oj worker start {escaped(short(name))}' from its "
                              f"project, or without systemd with 'ojd worker "
                              f"{escaped(short(name))} --foreground' there")
            root = record["project"]
        else:
            root = projects.find_root(override=project)
        legacy = name if is_legacy(name) and project is None and not foreground else None
        name = in_project(root, name)
        full = projects.full_name(root, name)
        if project is None and not foreground:
            rename_legacy(store, "worker", full, root)
        if legacy is not None and os.environ.get("INVOCATION_ID"):
            # a unit enabled before projects had names: its new one runs the worker
            from ojd.handover import hand_over_worker  # lazy: once per legacy unit

            log.info(hand_over_worker(legacy, full))
            notifier.send("READY=1")  # a notify unit that exits unready would fail
            return 0
        trust.require(root, name, os.geteuid())  # before the runbook is read at all
        runbook = projects.load(root, paths.cache_dir(store.root))
        trust.require(root, name, os.geteuid(), runbook)  # and the files it names
        worker = runbook.workers.get(name)
        if worker is None:
            known = ", ".join(sorted(runbook.workers)) or "none"
            raise OjError(f"project {root} defines no worker {quoted(name)} (workers: {known})")
    except OjError as e:
        for line in str(e).splitlines():
            log.error(line)
        notifier.send(f"STATUS=failed: {str(e).splitlines()[0]}")
        return EXIT_CONFIG
    lock_path = wake.lock_path(store.root, full)

    def open_lock() -> tuple[int, bool]:
        paths.make_state_dir(os.path.dirname(lock_path))
        # held for the process's life; it doubles as the pid file (below)
        flags = os.O_CREAT | os.O_CLOEXEC
        try:
            return paths.open_state_file(lock_path, os.O_RDWR | flags), True
        except PermissionError:
            # read-only is enough for flock: a lock file left by the worker's root
            # incarnation serves it when it runs as a user (--run-as)
            return paths.open_state_file(lock_path, os.O_RDONLY | flags), False

    def write_pid() -> None:
        os.ftruncate(lock, 0)
        os.pwrite(lock, identity.pid_file_text(os.getpid()).encode(), 0)

    try:
        lock, writable = wait(open_lock)  # a full disk is waited out
    except OSError as e:  # a directory or a file where the lock belongs: a repair, not a retry
        log.error(f"cannot open the worker lock {e.filename or lock_path}: "
                  f"{e.strerror or e}; remove or fix it")
        return EXIT_CONFIG
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error(f"worker {quoted(full)} is already running (lock {lock_path} is held)")
        return EXIT_CONFIG
    # the lock file doubles as the pid file: pushes wake a worker that has no unit through
    # it. A unit's worker that cannot write it (a user's, on root's lock file) is woken
    # through its unit's main PID; what the file holds then names a process that is gone.
    if writable:
        try:
            wait(write_pid)
        except OSError as e:
            log.error(f"cannot write the worker lock {lock_path}: {e.strerror or e}")
            return EXIT_CONFIG
    if project is not None or foreground:
        # a worker started by hand binds its name to this project, as 'oj worker start'
        # does, so pushes and listings find it
        try:
            wait(lambda: worker_control.record(store, runbook, root, name))
        except OjError as e:
            log.error(str(e))
            return EXIT_CONFIG
    manager = None if foreground else own_manager()
    if manager is None and not foreground and os.environ.get("INVOCATION_ID"):
        # a --run-as worker: a user may not make units in the system manager
        log.warning("jobs run inside this worker's unit, not in units of their own: a stop "
                    "or restart of the worker interrupts them (they resume at the "
                    "interrupted step)")
    loop = WorkerLoop(store, runbook, root, worker, log=log, notifier=notifier,
                      until_idle=until_idle, manager=manager,
                      # before each poll's reload: the files named by the runbook it loads
                      check=lambda: trust.require(root, name, os.geteuid(), loop.runbook,
                                                  paths.cache_dir(store.root)))
    loop.install_signals()
    if signals.stopped():  # a stop between the last wait and the loop's own handlers
        loop.request_stop(signals.signum)
    return loop.run()


def run_cron(name: str, project: str | None) -> int:
    """One tick of cron ``name`` (the body of oj-cron@NAME.service): its project from the
    WAL (recorded by ``oj cron start``), or ``--project`` (a tick by hand, which records the
    binding as ``oj cron start`` does)."""
    log = Log(f"cron {escaped(name)}")
    store = Store()
    state = store.load()
    try:
        if project is None:
            record = recorded(state.crons, name)
            if record is None:
                raise OjError(f"cron {quoted(name)} is not recorded in {store.root}; start "
                              f"it with 'oj cron start {escaped(short(name))}' from its "
                              "project")
            root = record["project"]
        else:
            root = projects.find_root(override=project)
        legacy = name if is_legacy(name) and project is None else None
        name = in_project(root, name)
        if project is None:
            rename_legacy(store, "cron", projects.full_name(root, name), root)
        if legacy is not None and os.environ.get("INVOCATION_ID"):
            # a timer started before projects had names: its new one ticks from now on
            # (this tick runs, under the new name)
            from ojd.handover import hand_over_cron  # lazy: once per legacy timer
            from ojd.systemd import Systemd  # lazy: as hand_over_cron

            said = hand_over_cron(Systemd(), legacy, projects.full_name(root, name), True)
            if said is not None:
                log.info(said)
        crons.require_trusted_uid(root, name, os.geteuid())  # before the runbook is read
        runbook = projects.load(root, paths.cache_dir(store.root))
        crons.require_trusted_uid(root, name, os.geteuid(), runbook)  # the files it names
        cron = runbook.crons.get(name)
        if cron is None:
            known = ", ".join(sorted(runbook.crons)) or "none"
            raise OjError(f"project {root} defines no cron {quoted(name)} (crons: {known})")
        if project is not None:
            crons.record(store, runbook, root, name)
    except OjError as e:
        for line in str(e).splitlines():
            log.error(line)
        return EXIT_CONFIG
    # by hand, the job runs in a session of its own; in the unit, in a scope of its own
    manager = own_manager() if project is None else None
    try:
        cron_tick.tick(store, runbook, root, cron, manager=manager, log=log)
    except cron_tick.TickFailed as e:
        log.error(str(e))
        return 1
    return 0


def rename_legacy(store: Store, kind: str, full: str, root: str) -> None:
    """A unit of a NAME from before projects had names renames its record once."""
    with store.transaction() as tx:
        unitcontrol.rename_legacy(tx, kind, full, root)


def recorded(records: dict, name: str) -> dict | None:
    """The record a unit's instance name stands for: ``PROJECT:NAME``'s own, and for a
    ``NAME`` from before projects had names (a unit enabled then), that record, or the one
    it was renamed to."""
    found = records.get(name)
    if found is None and is_legacy(name):
        found = next((r for r in records.values() if r.get("was") == name), None)
    return found


def in_project(root: str, name: str) -> str:
    """The runbook's name of worker or cron ``name`` (short or full) of the project at
    ``root``; a full name of another project is refused."""
    if is_legacy(name):
        return name
    wanted, rest = split(name)
    if wanted != projects.project_name(root):
        raise OjError(f"{quoted(name)} is not of project {quoted(projects.project_name(root))}"
                      f" ({escaped(root)}); give its name there ({quoted(rest)}), or run it "
                      f"in project {quoted(wanted)}")
    return rest


def _grace(text: str) -> float:
    """``ojd up --grace``: a duration, zero for no wait; a bad one is argparse's one line."""
    try:
        return parse_duration(text, allow_zero=True)
    except DurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ojd", description="oj's service program")
    parser.add_argument("--version", action="version", version=f"ojd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run a worker: drain its queue into its pipeline")
    w.add_argument("name")
    w.add_argument("--project", help="project directory (default: recorded by oj worker start)")
    w.add_argument("--foreground", action="store_true",
                   help="run outside systemd, finding the project from the current directory")
    w.add_argument("--until-idle", action="store_true",
                   help="exit once the queue has nothing pending, failed or running")
    c = sub.add_parser("cron", help="one tick of a cron: start its job unless too many run")
    c.add_argument("name")
    c.add_argument("--project", help="project directory (default: recorded by oj cron start)")
    u = sub.add_parser("up", help="run every worker and cron of a project in the foreground "
                                  "(a container's one process)")
    u.add_argument("--project", help="project directory (default: found from the current "
                                     "directory)")
    u.add_argument("--until-idle", action="store_true",
                   help="exit once nothing can run without a person")
    u.add_argument("--grace", type=_grace, metavar="DURATION",
                   help="at a stop, wait at most this long for running jobs (default: until "
                        "they end; a container's stop timeout bounds it)")
    m = sub.add_parser("metrics", help="serve /metrics: on the sockets systemd passes "
                       "(oj-metrics.socket), or on --listen")
    m.add_argument("--listen", metavar="HOST:PORT", help="serve this address in the foreground")
    m.add_argument("--idle-timeout", metavar="DURATION",
                   help="exit after this long without a request (default: $OJ_IDLE_TIMEOUT, "
                        "else 60s; with --listen: never)")
    web = sub.add_parser("web", help="the dashboard (oj-web.service): on systemd's sockets, "
                         "or on --listen")
    web.add_argument("--listen", metavar="HOST:PORT",
                     help="serve here when systemd passed no socket")
    web.add_argument("--idle-timeout", metavar="DURATION",
                     help="exit after this long with no connection (default: $OJ_IDLE_TIMEOUT, "
                          "else 1m, on systemd's sockets; never on --listen)")
    args = parser.parse_args(argv)
    try:
        if args.command == "web":
            from ojd.web.app import run_service  # lazy: the dashboard, for ojd web alone

            return run_service(args.listen, args.idle_timeout)
        if args.command == "up":
            from ojd import up  # lazy: ojd up alone runs it, off a worker's and a tick's start

            return up.run(args.project, args.until_idle, args.grace)
        if args.command == "cron":
            return run_cron(args.name, args.project)
        if args.command == "metrics":
            # lazy: the HTTP server, only for the metrics service
            from ojd import metrics_http

            return metrics_http.serve(args.listen, args.idle_timeout)
        return run_worker(args.name, args.project, args.foreground, args.until_idle)
    except OjError as e:
        print(f"ojd: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the last resort for files ojd cannot use: one line, no traceback
        where = f": {e.filename}" if e.filename else ""
        print(f"ojd: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
