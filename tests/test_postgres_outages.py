"""The PostgreSQL store when the database is slow or away: a state lock held too long or a
lost connection stalls a job until the database answers again, and never ends a worker."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import OJ, OJD, Project, asleep_in, wait_until

GATED = r"""
    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      poll        = "200ms"
    }

    pipeline "p" {
      vars = ["item"]
      step "work" {
        run     = <<-SHELL
          while [ ! -e "${invoke.dir}/go" ]; do sleep 0.05; done
        SHELL
        on_done = { step = "after" }
      }
      step "after" {
        run = "echo after >> '${invoke.dir}/ran.txt'"
      }
    }
    """


def start_worker(p: Project, tmp_path: Path, **env: str) -> subprocess.Popen:
    with open(tmp_path / "worker.log", "w") as log:
        return subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                env=p.env(**env), stdout=log, stderr=subprocess.STDOUT)


def stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    worker.wait(timeout=30)


def test_a_step_end_waits_out_a_state_lock_held_past_the_lock_timeout(postgres, tmp_path):
    from pgserver import session

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    worker = start_worker(p, tmp_path, OJ_LOCK_TIMEOUT="1")
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.events("job:step_started"), "the first step to start")
        job_id = p.events("job:step_started")[0]["id"]
        with session(p.url, transaction=True) as conn:  # another host's decision, frozen
            conn.execute("LOCK TABLE oj_events IN EXCLUSIVE MODE")
            (p.root / "go").touch()
            # the step's end timed out on the lock, said so, and tries again
            said = [tmp_path / "worker.log", p.state / "logs" / f"{job_id}.log"]
            wait_until(lambda: any("cannot write the state" in f.read_text() for f in said),
                       "the step's end to stall on the lock", timeout=30)

            def waiting_on_the_lock() -> bool:  # a session of its own: a transaction's view
                with session(p.url) as other:  # of pg_stat_activity does not change
                    return other.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name LIKE 'oj%'").rows[0][0] > 0

            wait_until(waiting_on_the_lock, "oj to wait on the lock again")
            assert p.json("job", "show", job_id)["status"] == "running"
            assert not (p.root / "ran.txt").exists()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete once the lock is released", timeout=30)
        assert worker.poll() is None
    finally:
        stop(worker)
    assert p.json("job", "show", job_id)["status"] == "done"
    assert (p.root / "ran.txt").read_text() == "after\n"
    log = (p.state / "logs" / f"{job_id}.log").read_text()
    assert "Traceback" not in (tmp_path / "worker.log").read_text() + log


def test_a_worker_and_its_job_outlive_their_database_connections_being_cut(postgres,
                                                                           tmp_path):
    from pgserver import session

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    worker = start_worker(p, tmp_path)
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.events("job:step_started"), "the first step to start")
        job_id = p.events("job:step_started")[0]["id"]
        with session(p.url) as conn:
            cut = conn.execute("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name LIKE 'oj%' AND pid <> pg_backend_pid()"
                               ).rows
        assert cut
        cut_pids = {row[0] for row in cut}

        def reconnected() -> bool:  # the worker's status refreshes met the cut connection
            with session(p.url) as conn:
                return bool({r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'oj%' "
                    "AND pid <> pg_backend_pid()").rows} - cut_pids)

        wait_until(reconnected, "the worker to connect again")
        (p.root / "go").touch()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete over new connections", timeout=30)
        assert worker.poll() is None
        second = p.oj("queue", "push", "q", "--var", "n=2").stdout.strip()
        wait_until(lambda: p.json("queue", "show", second)["status"] == "completed",
                   "the worker to take the next item")
    finally:
        stop(worker)
    assert p.json("job", "show", job_id)["status"] == "done"
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


def test_a_session_frozen_while_holding_the_state_lock_blocks_other_writers_only_briefly(
        postgres, tmp_path):
    """The server ends a session idle in its transaction: a writer on another host waits
    seconds, not until the frozen one wakes (nor past its lock timeout)."""
    from ojd.errors import StoreUnavailable
    from ojd.store.postgres import IDLE_IN_TRANSACTION_TIMEOUT, PgLog

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    p.oj("queue", "push", "q", "--var", "n=1")
    frozen = PgLog(p.url)
    with pytest.raises(StoreUnavailable), \
            frozen.locked() as w:  # noqa: PT012
            w.append({"type": "worker:woken", "name": "w"})
            started = time.monotonic()
            pushed = p.oj("queue", "push", "q", "--var", "n=2", OJ_LOCK_TIMEOUT="20")
            assert pushed.returncode == 0
            assert time.monotonic() - started < IDLE_IN_TRANSACTION_TIMEOUT + 5
            w.append({"type": "worker:woken", "name": "w"})  # it wakes: its session is gone
    assert len(p.items("q")) == 2
    assert p.events("worker:woken") == []  # nothing of the frozen decision was kept
    assert frozen.last_pos() == 2  # and its next use reconnects


def test_client_keepalives_and_connect_timeout_are_added_unless_the_url_sets_them(postgres):
    from ojd.store.postgres import PgLog

    url = postgres.new_database()
    log = PgLog(url)
    log.connect()
    params = log._conn.parameters()
    assert params["connect_timeout"] == "10" and params["keepalives"] == "1"
    own = PgLog(url + "&connect_timeout=3&keepalives=0")
    own.connect()
    params = own._conn.parameters()
    assert params["connect_timeout"] == "3" and params["keepalives"] == "0"
    assert params["keepalives_idle"] == "10"


class CommitCutter:
    """A Unix-socket proxy in front of the test server that ends the first session to send
    a COMMIT (or whatever ``cut_at`` says) without its answer: having passed the COMMIT on
    (the server commits, the client never hears) or not (the server rolls back)."""

    def __init__(self, server_dir: str, directory: Path, deliver: bool,
                 cut_at: bytes = b"COMMIT") -> None:
        import socket

        self.server = f"{server_dir}/.s.PGSQL.5432"
        self.dir = directory
        directory.mkdir()
        self.deliver = deliver
        self.cut_at = cut_at
        self.cuts = 0
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(directory / ".s.PGSQL.5432"))
        self._listener.listen(16)

    def __enter__(self) -> CommitCutter:
        import threading

        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.server)
            muted = threading.Event()
            threading.Thread(target=self._down, args=(upstream, client, muted),
                             daemon=True).start()
            threading.Thread(target=self._up, args=(client, upstream, muted),
                             daemon=True).start()

    def _up(self, client, upstream, muted) -> None:
        while data := _recv(client):
            if self.cuts == 0 and self.cut_at in data:
                self.cuts += 1
                muted.set()  # the answer is not passed back
                if self.deliver:  # and at once: the client asks while it may still commit
                    upstream.sendall(data)
                client.close()
                upstream.close()
                return
            upstream.sendall(data)
        upstream.close()

    @staticmethod
    def _down(upstream, client, muted) -> None:
        while data := _recv(upstream):
            if not muted.is_set():
                client.sendall(data)
        client.close()


def _recv(sock) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "rolled-back"])
def test_a_push_whose_commit_goes_unanswered_is_told_by_the_log_whether_it_happened(
        postgres, tmp_path, committed):
    """The session ends during COMMIT: asked over a new one, the log says whether the push
    happened. A push that did is not reported failed (to be pushed again); one that did not
    is one line, and nothing of it is there."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    p.oj("queue", "push", "q", "--var", "n=1")  # the tables exist: no COMMIT to make them
    from pgserver import session

    with session(p.url) as conn:  # a COMMIT that takes a while: asked, it is still going on
        conn.execute("""
            CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON oj_events
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow();""")
    with CommitCutter(postgres.dir, tmp_path / "proxy", deliver=committed) as cutter:
        via = p.url.replace(f"host={postgres.dir}", f"host={cutter.dir}")
        pushed = p.oj("queue", "push", "q", "--var", "n=2", check=False, OJ_STATE_URL=via)
        assert cutter.cuts == 1
    assert "Traceback" not in pushed.stderr
    ns = [i["data"]["n"] for i in p.items("q")]
    if committed:
        assert pushed.returncode == 0, pushed.stderr
        assert ns == ["1", "2"]
        assert pushed.stdout.strip() == p.items("q")[1]["id"]
    else:
        assert pushed.returncode == 1 and len(pushed.stderr.splitlines()) == 1, pushed.stderr
        assert "did not commit" in pushed.stderr
        assert ns == ["1"]
    assert p.json("state", "check")["ok"]


def test_a_session_lost_while_a_command_opens_it_is_an_unreachable_database(postgres,
                                                                           tmp_path):
    """The session ends right after the server accepted it (a restart, a proxy or the
    network cutting it) as the command sets it up: one line saying the database cannot be
    reached, naming the URL without its password and what to do; not that it cannot hold
    oj's tables."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    with CommitCutter(postgres.dir, tmp_path / "proxy", deliver=False,
                      cut_at=b"SET lock_timeout") as cutter:  # the first query of a session
        via = p.url.replace(f"host={postgres.dir}", f"host={cutter.dir}") + "&password=hunter2"
        proc = p.oj("queue", "push", "q", "--var", "n=1", check=False, OJ_STATE_URL=via)
        assert cutter.cuts == 1
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    shown = via.replace("password=hunter2", "password=***")
    assert proc.stderr.startswith(f"oj: state database {shown} cannot be reached: server "
                                  "closed the connection"), proc.stderr
    assert proc.stderr.endswith("; check that the server is up and reachable from this host, "
                                "then try again\n"), proc.stderr
    assert "hunter2" not in proc.stderr and "oj's tables" not in proc.stderr
    assert p.items() == []


def test_a_database_that_never_answers_is_given_up_on_at_connect_timeout_or_ctrl_c(
        postgres, tmp_path):
    """A socket that takes the connection and says nothing (a hung server, a black-holed
    host): ``connect_timeout`` ends the wait with one line, and Ctrl-C ends it at once."""
    import signal
    import socket

    silent = tmp_path / "silent"
    silent.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(silent / ".s.PGSQL.5432"))
    listener.listen(16)  # never accepted, never answered
    try:
        p = Project(tmp_path / "project", tmp_path / "state",
                    url=f"postgresql:///oj?host={silent}&user=oj&connect_timeout=2")
        p.write("w.hcl", GATED)
        started = time.monotonic()
        proc = p.oj("queue", "list", check=False)
        # at connect_timeout, not before; the bound above it only says it did not hang
        # (oj's own start-up under load counts too)
        assert 2 <= time.monotonic() - started < 30
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "cannot be reached: timeout expired" in proc.stderr
        waiting = subprocess.Popen([OJ, "queue", "list"], cwd=p.root, stderr=subprocess.PIPE,
                                   env=p.env(OJ_STATE_URL=p.url.replace("=2", "=60")),
                                   text=True)
        # into its connect: blocked in poll() on the socket that never answers
        wait_until(lambda: asleep_in(waiting.pid, "poll"), "oj to wait on the silent server")
        started = time.monotonic()
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=30)
        assert time.monotonic() - started < 2
        assert waiting.returncode == 130 and "Traceback" not in err, err
    finally:
        listener.close()


def test_a_worker_whose_clock_is_off_the_databases_says_so_at_start(postgres, tmp_path):
    """Leases run out by the clock of the host that looks: a host 30 s ahead (its clock
    moved by libfaketime) is told at start, a host in time is not."""
    import glob
    import re

    from conftest import require

    faked = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
    # justified: skipped only outside CI (require fails in CI; dev-setup installs it)
    require(bool(faked), "libfaketime is not installed (apt install faketime)")
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    logs = {}
    for name, clock in (("ahead", {"LD_PRELOAD": faked[0], "FAKETIME": "+30s"}),
                        ("in-time", {})):
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "w") as log:
            worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                      env=p.env(OJ_HOST=name, **clock), stdout=log,
                                      stderr=subprocess.STDOUT)
        try:
            wait_until(lambda path=log_path: "ready:" in path.read_text(),
                       f"the {name} worker to start")
        finally:
            stop(worker)
        logs[name] = log_path.read_text()
    assert re.search(r"warning: this host's clock is \+(29|30|31)\.\ds off the state "
                     r"database's; leases \(60s\) need every host's clock to agree",
                     logs["ahead"]), logs["ahead"]
    assert "clock" not in logs["in-time"], logs["in-time"]


def test_an_outage_longer_than_the_lease_ends_with_the_renewal_not_the_expiry(postgres,
                                                                              tmp_path):
    """The database is away for longer than a lease: when it is back, the job's process
    renews its lease, and its own host's worker (which sees that process alive) never
    expires it under the running step."""
    from pgserver import session

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED.replace('poll        = "200ms"',
                                   'poll        = "200ms"\n      lease = "3s"'))
    db = p.url.split("///", 1)[1].split("?")[0]
    worker = start_worker(p, tmp_path)
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.events("job:step_started"), "the first step to start")
        step = p.events("job:step_started")[0]
        with session(postgres.url()) as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         f"datname = '{db}'")
        cut_at = time.time()
        try:
            # the outage outlasts the lease (3 s) by more than a lease
            wait_until(lambda: time.time() > cut_at + 7, "the lease to run out", timeout=60)
        finally:
            with session(postgres.url()) as conn:
                conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        wait_until(lambda: any(e["id"] == item for e in p.events("queue:lease_renewed")
                               if e["ts"] > cut_at + 7), "the lease to be renewed")
        (p.root / "go").touch()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete", timeout=60)
    finally:
        (p.root / "go").touch()  # a failed test leaves no step waiting
        stop(worker)
    assert p.events("queue:lease_expired") == []
    assert [h["step"] for h in p.json("job", "show", step["id"])["history"]] == ["work",
                                                                                 "after"]
    assert (p.root / "ran.txt").read_text() == "after\n"
