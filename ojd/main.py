"""``ojd``: the program systemd runs. ``ojd worker NAME`` is the body of oj-worker@NAME.service."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

from ojd import __version__
from ojd.errors import OjError

# Exit status for a worker that can never start as configured (unknown worker, invalid
# runbook): the unit lists it in RestartPreventExitStatus= so systemd does not loop it.
EXIT_CONFIG = 78  # EX_CONFIG


def run_worker(name: str, project: str | None, foreground: bool, until_idle: bool = False
               ) -> int:
    from ojd import paths, wake, workers
    from ojd import project as projects
    from ojd.notify import Log, Notifier
    from ojd.store import Store
    from ojd.worker import DRAIN_GRACE, WorkerLoop

    log = Log(f"worker {name}")
    notifier = Notifier()
    store = Store()
    state = store.load()
    try:
        if project is None and not foreground:
            record = state.workers.get(name)
            if record is None:
                raise OjError(f"worker '{name}' is not recorded in {store.root}; start it with "
                              f"'oj worker start {name}' from its project")
            root = record["project"]
        else:
            root = projects.find_root(override=project)
        runbook = projects.load(root, paths.cache_dir(store.root))
        worker = runbook.workers.get(name)
        if worker is None:
            known = ", ".join(sorted(runbook.workers)) or "none"
            raise OjError(f"project {root} defines no worker '{name}' (workers: {known})")
    except OjError as e:
        for line in str(e).splitlines():
            log.error(line)
        notifier.send(f"STATUS=failed: {str(e).splitlines()[0]}")
        return EXIT_CONFIG
    lock_path = wake.lock_path(store.root, name)
    os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
    lock = open(lock_path, "a")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error(f"worker '{name}' is already running (lock {lock.name} is held)")
        return EXIT_CONFIG
    # the lock file doubles as the pid file: pushes wake a worker that has no unit through it
    lock.truncate(0)
    lock.write(wake.pid_file_text(os.getpid()))
    lock.flush()
    if project is not None or foreground:
        # a worker started by hand binds its name to this project, as 'oj worker start'
        # does, so pushes and listings find it
        try:
            workers.record(store, runbook, root, name)
        except OjError as e:
            log.error(str(e))
            return EXIT_CONFIG
    grace = float(os.environ.get("OJ_DRAIN_GRACE", DRAIN_GRACE))
    loop = WorkerLoop(store, runbook, root, worker, log=log, notifier=notifier,
                      until_idle=until_idle, drain_grace=grace)
    loop.install_signals()
    return loop.run()


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
    args = parser.parse_args(argv)
    try:
        return run_worker(args.name, args.project, args.foreground, args.until_idle)
    except OjError as e:
        print(f"ojd: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
