"""A private PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` package,
``initdb`` into a temporary directory as an unprivileged user, listening on a Unix socket only,
removed at the end. Each user of it gets a database of its own (``new_database``)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager

RUN_AS = "nobody"  # postgres refuses to run as root


def server_bin() -> str | None:
    """The newest installed server's bin directory, or None without the package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def have_driver() -> bool:
    """libpq, which oj's PostgreSQL store calls."""
    from ojd.store import libpq

    try:
        libpq.library()
    except libpq.Error:
        return False
    return True


@contextmanager
def session(url: str, transaction: bool = False):
    """A connection of the test's own (another host's session): in one transaction,
    committed at the end, when ``transaction``."""
    from ojd.store.libpq import Connection

    conn = Connection(url)
    try:
        if transaction:
            conn.execute("BEGIN")
        yield conn
        if transaction:
            conn.execute("COMMIT")
    finally:
        conn.close()


class PrivatePostgres:
    """``start()`` it, ``url(db)`` for a database made by ``new_database()``, ``stop()``."""

    def __init__(self, base: str | None = None, durable: bool = False) -> None:
        bindir = server_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt install postgresql)")
        self.bin = bindir
        self.dir = tempfile.mkdtemp(prefix="oj-pg-", dir=base)
        os.chmod(self.dir, 0o755)  # the socket is reached by the tests' other users too
        shutil.chown(self.dir, RUN_AS)
        self.data = os.path.join(self.dir, "data")
        self.durable = durable
        self.proc: subprocess.Popen | None = None

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, user=RUN_AS, cwd=self.dir, check=True, capture_output=True,
                       timeout=120)

    def start(self) -> PrivatePostgres:
        self._run(f"{self.bin}/initdb", "-D", self.data, "-U", "oj", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        settings = ["-c", "listen_addresses=", "-k", self.dir, "-c", "max_connections=200",
                    "-c", "shared_buffers=32MB"]
        if not self.durable:  # tests: a crash of the machine loses nothing worth keeping
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        log = open(os.path.join(self.dir, "server.log"), "w")  # noqa: SIM115
        shutil.chown(log.name, RUN_AS)
        self.proc = subprocess.Popen([f"{self.bin}/postgres", "-D", self.data, *settings],
                                     user=RUN_AS, cwd=self.dir, stdout=log, stderr=log)
        log.close()
        sock = os.path.join(self.dir, ".s.PGSQL.5432")
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start:\n" + self.log_text())
            time.sleep(0.05)
        time.sleep(0.1)  # the socket appears a moment before connections are accepted
        return self

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.dir, "server.log")) as f:
                return f.read()
        except OSError:
            return ""

    def url(self, db: str = "postgres") -> str:
        return f"postgresql:///{db}?host={self.dir}&user=oj"

    def new_database(self, prefix: str = "oj") -> str:
        from ojd.store.libpq import Error

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        for attempt in range(50):
            try:
                with session(self.url()) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                break
            except Error:
                if attempt == 49:
                    raise
                time.sleep(0.1)  # still starting up
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(3)  # SIGQUIT: immediate shutdown, nothing to keep
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
