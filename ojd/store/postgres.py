"""PostgreSQL as the log: the same events as the WAL directory, in a table several hosts share.

Its tables, made on first use and migrated by a newer oj (ojd.store.pgschema):

* ``oj_events (pos bigint primary key, event text)``: one row per event, the event as the
  same compact JSON the WAL frames hold (text, not jsonb: stored and read back byte for byte,
  with no parse on the server);
* ``oj_snapshots (pos, state, damaged)``: the State after event ``pos``, the newest two kept;
* ``oj_schema (version)``: the version of these tables.

A decision is one transaction: ``BEGIN; LOCK TABLE oj_events IN EXCLUSIVE MODE``, read the
events after our position, decide on the caught-up State, ``INSERT`` the new events at the
next positions, ``NOTIFY oj_events, 'POS'``, ``COMMIT``. The table lock is what makes it
simple and correct: writers are serialised, so positions are assigned by us (last + 1, never
a sequence, which leaves holes on rollback) and commit in position order; a reader that sees
position N+1 has therefore seen N, and readers need no lock (EXCLUSIVE still lets plain
SELECTs through). Row locks (``FOR UPDATE SKIP LOCKED``) would let takers run side by side,
but then the State fold could not be the single source of truth.

libpq is loaded (``ojd.store.libpq``, by ``ojd.store.pgconnect``) only when a postgresql://
URL is configured. The URL follows libpq's conventions (service files, PGHOST, ~/.pgpass). A forked
child (a job process) never touches its parent's connection: it opens its own.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from _thread import RLock

from ojd import events
from ojd.errors import LockTimeout, OjError, StoreUnavailable, escaped
from ojd.store.pgconnect import client_params, db_error, libpq, redacted, session_lost
from ojd.store.pgschema import READ_VERSION, SCHEMA_VERSION, UNDEFINED_TABLE, prepare
from ojd.store.wal import CheckReport, Record, WalProblem, start_pos_problem
from ojd.store.walframe import encode_events
from ojd.store.wallock import lock_timeout
from ojd.store.walsegments import lost_problem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CHANNEL = "oj_events"
# Events that may give a worker something to take: their NOTIFY payload says "wake", so that
# workers do not poll for every step of every job on every host. A completion frees a place
# under a worker's global_concurrency on every host.
WAKE_TYPES = frozenset({events.QUEUE_PUSHED, events.QUEUE_RELEASED, events.QUEUE_RETRIED,
                        events.QUEUE_FAILED, events.QUEUE_LEASE_EXPIRED, events.JOB_REOPENED,
                        events.WORKER_WOKEN, events.WORKER_RESIZED, events.WORKER_RECORDED,
                        events.QUEUE_RESUMED,
                        events.QUEUE_COMPLETED})
_KEEP_SNAPSHOTS = 2
# The next positions follow the last event, or the newest snapshot when the events it covers
# were compacted away (or the state was imported): positions are never reused.
_INSERT = """
WITH last AS (SELECT greatest((SELECT max(pos) FROM oj_events),
                              (SELECT max(pos) FROM oj_snapshots), 0) AS pos)
INSERT INTO oj_events (pos, event)
SELECT last.pos + e.n, e.event FROM last, unnest($1::text[]) WITH ORDINALITY AS e(event, n)
RETURNING pos
"""
_LAST = ("SELECT greatest((SELECT max(pos) FROM oj_events), "
         "(SELECT max(pos) FROM oj_snapshots), 0)")

# A session idle inside a transaction this long (its host frozen, stopped or cut off while
# holding the table lock) is ended by the server, which releases the lock: other hosts wait
# at most this, well under the shortest lease (3 s, renewed every second), instead of until
# the frozen host wakes. oj's decisions go from statement to statement without waiting.
IDLE_IN_TRANSACTION_TIMEOUT = 2.0


# every PgLog of this process, so a forked child can let go of them (weak: a store dropped
# closes its connection)
_LOGS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child holds copies of the parent's sockets: a Terminate message or a query sent on
    # one would end or confuse the parent's session. Point them at /dev/null and forget them.
    for log in list(_LOGS):
        log._forget_connection()


os.register_at_fork(after_in_child=_after_fork_in_child)
_ORPHANS: list = []  # connections of a parent process: kept, so they are never finalised


def _orphan(conn) -> None:
    if conn is None:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        null = -1
    if null >= 0:
        try:
            os.dup2(null, conn.fileno())
        except OSError:  # closed already: nothing of the parent's to protect
            pass
        os.close(null)
    _ORPHANS.append(conn)


class PgLog:
    """One PostgreSQL database as the log. Safe to share between threads; per process."""

    def __init__(self, url: str, on_problem: Callable[[WalProblem], None] | None = None) -> None:
        self.url = url
        self.path = redacted(url)  # what messages and ``oj state check`` name
        self._on_problem = on_problem
        self._conn = None
        self._mutex = RLock()
        self._depth = 0
        self._appended = 0  # the last position appended in the open transaction
        self._wakes = False  # and whether any of its events may give a worker work
        self._wrote = False  # and whether it wrote anything at all (a snapshot, a deletion)
        self._pending: list[tuple[int, str]] = []  # and its events, as (position, text)
        self.rolled_back = False
        _LOGS.add(self)

    # -- the connection ----------------------------------------------------------------------

    def _db(self):
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _connect(self):
        pq = libpq()
        # a bad OJ_LOCK_TIMEOUT is one line, as with the WAL; 0 ms would mean "no limit"
        millis = min(max(1, int(lock_timeout() * 1000)), 2**31 - 1)
        try:
            conn = pq.Connection(self.url, **client_params(self.url), application_name="oj",
                                 client_encoding="UTF8")
        except pq.Error as e:
            raise db_error(f"{self.path} cannot be reached", e, StoreUnavailable) from None
        settings = (f"SET lock_timeout = '{millis}ms'; "
                    "SET idle_in_transaction_session_timeout = "
                    f"'{int(IDLE_IN_TRANSACTION_TIMEOUT * 1000)}ms'; ")
        try:  # an error leaves the session, which is closed
            try:  # one round trip, where the tables are this oj's
                version = conn.execute(settings + READ_VERSION).rows[0][0]
            except pq.Error as e:
                if e.sqlstate != UNDEFINED_TABLE:
                    raise
                version = None  # a new database, or an older oj's tables
                conn.execute(settings)  # undone with the statement that failed
            if version != SCHEMA_VERSION:
                prepare(conn, self.path)  # made, migrated or refused
        except pq.Error as e:
            conn.close()
            if e.lost:  # the session ended (the server went, the network cut it), not a
                raise session_lost(self.path, e) from None  # refusal of the tables
            raise db_error(f"{self.path} cannot hold oj's tables", e) from None
        except OjError:
            conn.close()
            raise
        return conn

    def _forget_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._mutex = RLock()
        self._depth = 0
        _orphan(conn)

    def connect(self) -> None:
        with self._mutex:
            self._db()

    def _query(self, sql: str, params: tuple = ()) -> list:
        pq = libpq()
        with self._mutex:
            if self._depth and not sql.lstrip().upper().startswith("SELECT"):
                self._wrote = True  # its COMMIT must happen, or the caller must hear so
            try:
                return self._db().execute(sql, params).rows
            except pq.Error as e:
                # a lost session (some errors that end one, as an idle-in-transaction
                # timeout, are not of an unavailable class): nothing is written, try later
                if e.unavailable or self._conn is None or self._conn.closed:
                    if self._depth:  # the transaction is lost, and what was applied of it
                        self.rolled_back = True
                    self._drop_broken()
                    raise db_error(f"{self.path} failed", e, StoreUnavailable) from None
                raise db_error(f"{self.path} refused a query", e) from None

    def _drop_broken(self) -> None:
        if self._conn is not None and self._conn.closed and self._depth == 0:
            self._conn = None  # the next use reconnects

    # -- public API (as ojd.store.wal.WalDirectory) ------------------------------------------

    def reader(self, after: int = 0) -> PgReader:
        return PgReader(self, after)

    def records(self, after: int = 0) -> Iterator[Record]:
        return iter(self._records(after))

    def _records(self, after: int) -> list[Record]:
        rows = self._query("SELECT pos, event FROM oj_events WHERE pos > $1 ORDER BY pos",
                           (after,))
        out = []
        loads = json.loads
        for pos, text in rows:
            try:
                event = loads(text)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError) as e:
                self._report(WalProblem("corrupt", pos, "oj_events", 0,
                                        f"undecodable event: {e}"))
                continue
            out.append(Record(pos, event))
        return out

    def _report(self, problem: WalProblem, found: list[WalProblem] | None = None) -> None:
        if found is not None:
            found.append(problem)
        elif self._on_problem is not None:
            self._on_problem(problem)

    def locked(self) -> _Locked:
        """``with log.locked() as w``: the table lock, in one transaction; ``w.append``."""
        return _Locked(self)

    def append(self, *events: dict) -> list[int]:
        with self.locked() as w:
            return w.append(*events)

    def holds_lock(self) -> bool:
        return self._depth > 0 and self._mutex._is_owned()  # type: ignore[attr-defined]

    def last_pos(self) -> int:
        return int(self._query(_LAST)[0][0])

    def clock_offset(self) -> float:
        """The database's clock minus this host's, in seconds (at the middle of the round
        trip): leases are each writer's clock, so hosts must agree with one another."""
        before = time.time()
        db = float(self._query("SELECT extract(epoch FROM clock_timestamp())")[0][0])
        return db - (before + time.time()) / 2

    def save_snapshot(self, pos: int, state: object) -> str:
        data = json.dumps(state, separators=(",", ":"))
        with self.locked():
            last = self.last_pos()
            if not 0 <= pos <= last:
                raise ValueError(f"snapshot position {pos} is beyond the log (last {last})")
            self._query("INSERT INTO oj_snapshots (pos, state) VALUES ($1, $2) ON CONFLICT "
                        "(pos) DO UPDATE SET state = excluded.state, damaged = false "
                        "RETURNING pos", (pos, data))
            self._query("DELETE FROM oj_snapshots WHERE NOT damaged AND pos < ALL (SELECT pos "
                        "FROM oj_snapshots WHERE NOT damaged ORDER BY pos DESC LIMIT $1) "
                        "RETURNING pos", (_KEEP_SNAPSHOTS,))
        return f"snapshot-{pos:016d}"

    def load_snapshot(self) -> tuple[int, object] | None:
        for pos in reversed(self.snapshot_positions()):
            snap = self._read_snapshot(pos, None)
            if snap is not None:
                return snap
        return None

    def read_snapshot(self, pos: int) -> tuple[int, object] | None:
        return self._read_snapshot(pos, [])

    def _read_snapshot(self, pos: int, found: list[WalProblem] | None
                       ) -> tuple[int, object] | None:
        rows = self._query("SELECT state FROM oj_snapshots WHERE pos = $1 AND NOT damaged",
                           (pos,))
        if not rows:
            return None
        try:
            state = json.loads(rows[0][0])
            if not isinstance(state, dict):
                raise ValueError("not a state")
        except (ValueError, RecursionError) as e:
            self._report(WalProblem("corrupt", pos, f"snapshot-{pos:016d}.json", 0,
                                    f"unreadable snapshot: {e}"), found)
            return None
        return pos, state

    def snapshot_positions(self) -> list[int]:
        return [r[0] for r in self._query(
            "SELECT pos FROM oj_snapshots WHERE NOT damaged ORDER BY pos")]

    def compact(self) -> int:
        """Delete the events the older of the two kept snapshots covers (as the WAL drops its
        segments): should the newest be unreadable, the older one still replays."""
        with self.locked():
            snaps = self.snapshot_positions()
            if len(snaps) < _KEEP_SNAPSHOTS:
                return 0
            older = snaps[-_KEEP_SNAPSHOTS]
            if self._read_snapshot(older, None) is None:
                return 0
            return len(self._query("DELETE FROM oj_events WHERE pos <= $1 RETURNING pos",
                                   (older,)))

    def set_aside(self, name: str) -> str:
        """Mark a snapshot (named ``snapshot-POS.json``) damaged: loading no longer reads it;
        the row stays."""
        pos = int(name.removeprefix("snapshot-").split(".")[0])
        with self.locked():
            self._query("UPDATE oj_snapshots SET damaged = true WHERE pos = $1 RETURNING pos",
                        (pos,))
        return f"damaged-{name}"

    def start_at(self, pos: int, state: object) -> None:
        """Begin an empty log with a snapshot at ``pos`` (an imported state)."""
        problem = start_pos_problem(pos)
        if problem is not None:  # not the server's "bigint out of range", now or at appends
            raise ValueError(problem)
        with self.locked():
            if self._query("SELECT 1 FROM oj_events UNION ALL SELECT 1 FROM oj_snapshots "
                           "LIMIT 1"):
                raise ValueError("the log is not empty")
            self._query("INSERT INTO oj_snapshots (pos, state) VALUES ($1, $2) RETURNING pos",
                        (pos, json.dumps(state, separators=(",", ":"))))

    def check(self, after: int | None = None) -> CheckReport:
        """Every event and snapshot, under the table lock: undecodable rows, and positions
        missing past ``after`` (default: the oldest readable snapshot)."""
        report = CheckReport()
        with self.locked():
            readable = [pos for pos in reversed(self.snapshot_positions())
                        if self._read_snapshot(pos, report.problems)]
            report.snapshot_pos = readable[0] if readable else None
            last = after if after is not None else (readable[-1] if readable else 0)
            report.segments = 1
            batch = 10000
            start = 0
            while True:
                rows = self._query("SELECT pos, event FROM oj_events WHERE pos > $1 "
                                   "ORDER BY pos LIMIT $2", (start, batch))
                for pos, text in rows:
                    report.records += 1
                    try:
                        if not isinstance(json.loads(text), dict):
                            raise ValueError("not an object")
                    except (ValueError, RecursionError) as e:
                        report.problems.append(WalProblem("corrupt", pos, "oj_events", 0,
                                                          f"undecodable event: {e}"))
                    if pos > last + 1:
                        report.lost.append((last + 1, pos - 1))
                        report.problems.append(lost_problem(last + 1, pos - 1))
                    last = max(last, pos)
                if len(rows) < batch:
                    break
                start = rows[-1][0]
            report.last_pos = max(last, report.snapshot_pos or 0)
        return report

    # -- waiting for change ------------------------------------------------------------------

    def listener(self) -> PgListener:
        return PgListener(self.url)


class PgReader:
    """An incremental cursor: each read_new() returns only the events committed since."""

    def __init__(self, log: PgLog, after: int = 0) -> None:
        self._log = log
        self.position = after

    def read_new(self) -> list[Record]:
        out = self._log._records(self.position)
        if out:
            self.position = out[-1].pos
        return out


class _Locked:
    def __init__(self, log: PgLog) -> None:
        self._log = log

    def __enter__(self) -> PgWriter:
        log = self._log
        log._mutex.acquire()
        try:
            if log._depth == 0:
                log.rolled_back = False
                log._appended = 0
                log._wakes = False
                log._wrote = False
                log._pending = []
                self._begin(log)
            log._depth += 1
        except BaseException:
            log._mutex.release()
            raise
        return PgWriter(log)

    @staticmethod
    def _begin(log: PgLog) -> None:
        pq = libpq()
        conn = log._db()
        try:
            conn.execute("BEGIN; LOCK TABLE oj_events IN EXCLUSIVE MODE")
        except pq.Error as e:
            try:
                if e.sqlstate == "55P03":  # lock_not_available
                    conn.execute("ROLLBACK")
                    waited = conn.execute("SHOW lock_timeout").rows[0][0]
                    raise LockTimeout(escaped(
                        f"the state lock (table oj_events in {log.path}) is still held by "
                        f"{_holders(conn)} after {waited}; resume or stop that process (or "
                        "raise OJ_LOCK_TIMEOUT)")) from None
                if not (e.unavailable or conn.closed):
                    if conn.transaction_status != pq.TRANS_IDLE:  # a half-begun transaction
                        conn.execute("ROLLBACK")
                    raise db_error(f"{log.path} refused the state lock", e) from None
            except pq.Error as lost:  # the session went while it was being tidied
                e = lost
            log._conn = None
            raise db_error(f"{log.path} cannot be reached", e, StoreUnavailable) from None

    def __exit__(self, *exc) -> None:
        log = self._log
        try:
            log._depth -= 1
            if log._depth == 0:
                self._commit(log, failing=exc[0] is not None)
        finally:
            log._mutex.release()

    @staticmethod
    def _commit(log: PgLog, failing: bool = False) -> None:
        """``failing``: the block raised; a commit that then does not happen is noted
        (``rolled_back``) without hiding the block's error (a LockTimeout or
        StoreUnavailable a caller waits out, or the query the database refused)."""
        # Also after an error in the block: what was appended stands, as in the WAL.
        pq = libpq()
        conn = log._conn
        # the session was lost in the block: a new one has nothing to commit
        if conn is None or conn.closed or log.rolled_back:
            if conn is not None and conn.closed:
                log._conn = None
            elif conn is not None and conn.transaction_status != pq.TRANS_IDLE:
                try:  # an aborted transaction on a live session: end it
                    conn.execute("ROLLBACK")
                except pq.Error:
                    log._conn = None
            if log._wrote:
                log.rolled_back = True
                if not failing:
                    raise db_error(f"{log.path} did not commit", RuntimeError(
                        "the connection was lost"), StoreUnavailable) from None
            return
        sql = "COMMIT"
        if log._appended:  # wakes every listening worker, on every host, once committed
            payload = f"{log._appended}{' wake' if log._wakes else ''}"
            sql = f"NOTIFY {CHANNEL}, '{payload}'; COMMIT"
        error: Exception | None = None
        try:
            # COMMIT, not ROLLBACK (what an aborted transaction's COMMIT does)
            ok = conn.execute(sql).status == "COMMIT"
        except pq.Error as e:
            ok = False
            error = e
        if ok:
            return
        committed = None
        if isinstance(error, pq.Error) and error.lost:
            # The session ended during COMMIT: the server may have committed before it
            # could answer. Its events, if they are there, say so; told "failed", a caller
            # would do again what was done (push twice, start a step again).
            log._conn = None
            committed = _Locked._committed(log)
            if committed:
                return
        elif conn.transaction_status != pq.TRANS_IDLE:
            try:
                conn.execute("ROLLBACK")
            except pq.Error:
                log._conn = None
        if log._wrote:
            log.rolled_back = True
            if failing:
                return
            if committed is False:  # nothing was written: the same may be tried again
                raise db_error(f"{log.path} did not commit", error, StoreUnavailable) \
                    from None
            if committed is None and error is not None and error.lost:
                # not StoreUnavailable: that says "nothing written, do it again"
                unknown = "could not be asked whether it committed" if log._pending \
                    else "whether it committed is unknown"
                raise db_error(f"{log.path} lost the connection during COMMIT and {unknown} "
                               "(see 'oj state check')", error) from None
            raise db_error(f"{log.path} did not commit", error or RuntimeError(
                "the transaction was rolled back")) from None

    @staticmethod
    def _committed(log: PgLog) -> bool | None:
        """Whether the events of the transaction whose COMMIT went unanswered are in the
        log, asked over a new session; None when it cannot be asked (or wrote no events)."""
        if not log._pending:
            return None
        first, last = log._pending[0][0], log._pending[-1][0]
        try:
            conn = log._db()
        except OjError:
            return None
        try:
            # The old session may still be committing (or not yet aborted): a plain SELECT
            # would not see its rows yet. SHARE waits for its EXCLUSIVE lock to go, bounded
            # by lock_timeout (and a session idle in a transaction dies in seconds).
            rows = conn.execute("BEGIN; LOCK TABLE oj_events IN SHARE MODE; SELECT pos, event "
                                f"FROM oj_events WHERE pos >= {int(first)} AND "
                                f"pos <= {int(last)} ORDER BY pos").rows
            conn.execute("ROLLBACK")
        except libpq().Error:
            conn.close()
            log._conn = None
            return None
        return rows == log._pending


def _holders(conn) -> str:
    try:
        rows = conn.execute(
            "SELECT DISTINCT a.pid, coalesce(a.application_name, ''), "
            "coalesce(a.client_addr::text, 'local'), a.state FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.relation = 'oj_events'::regclass AND l.granted").rows
    except Exception:
        return "another session"
    if not rows:
        return "another session"
    return ", ".join(f"backend {pid} ({app or '?'} from {addr}, {state})"
                     for pid, app, addr, state in rows)


class PgWriter:
    """The view of the log inside ``with log.locked() as w``: nobody else can append."""

    def __init__(self, log: PgLog) -> None:
        self._log = log

    @property
    def last_pos(self) -> int:
        return self._log.last_pos()

    def append(self, *events: dict, sync: bool = True) -> list[int]:
        """Always durable at commit, ``sync`` or not: a database that loses a commit does
        not end the processes of other hosts that acted on it, as a power cut ends this
        host's (see the WAL's ``append``)."""
        if not events:
            return []
        # the same encoding and limits as a WAL frame's payload
        payloads = [p.decode() for p in encode_events(events)]
        rows = self._log._query(_INSERT, (libpq().text_array(payloads),))
        got = sorted(r[0] for r in rows)  # in the order given: position = last + n
        self._log._appended = got[-1]
        self._log._pending.extend(zip(got, payloads, strict=True))
        if not self._log._wakes:
            self._log._wakes = any(ev.get("type") in WAKE_TYPES for ev in events)
        return got


class PgListener:
    """A connection of its own that LISTENs to ``oj_events``: its fd becomes readable when
    another process (on any host) commits events. ``drain()`` reads what arrived."""

    def __init__(self, url: str) -> None:
        pq = libpq()
        try:
            self._conn = pq.Connection(url, **client_params(url),
                                       application_name="oj listener", client_encoding="UTF8")
            self._conn.execute(f"LISTEN {CHANNEL}")
        except pq.Error as e:
            raise db_error(f"{redacted(url)} cannot be listened to", e) from None
        _LOGS.add(self)

    def _forget_connection(self) -> None:
        _orphan(self._conn)

    def fileno(self) -> int:
        return self._conn.fileno()

    def drain(self) -> int:
        """Consume the notifications that arrived; how many ask for a wake (events that may
        give a worker work). A broken connection raises OjError: the caller polls instead."""
        pq = libpq()
        try:
            notes = self._conn.notifies()
        except pq.Error as e:
            raise db_error("the listening connection was lost", e) from None
        return sum(payload.endswith(" wake") for _channel, payload in notes)

    def close(self) -> None:
        self._conn.close()
