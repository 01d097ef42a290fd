"""The state: a log of events replayed into a ``State``, kept caught up.

The log is one of two stores behind one small interface, so the State fold, the runbook
model, the worker loop and the CLI never know which is in use:

* the WAL directory (``ojd.store.wal``, under the state dir): the embedded default;
* PostgreSQL (``ojd.store.postgres``), for several hosts sharing one state; chosen by
  ``OJ_STATE_URL=postgresql://...`` or a ``state_url = ...`` line in ``STATE_DIR/oj.conf``.

What a log offers, ``WalDirectory`` and ``PgLog`` both, is the ``Log`` protocol of
``ojd.store.log``: ``locked()`` (a block holding the log's exclusive lock, giving a writer whose
``append(*events)`` returns positions; a decision made on the caught-up state and its events
are atomic), ``reader(after)`` / ``records(after)`` (events after a position, lock-free),
snapshots, compaction and a check.

Reads are lock-free (snapshot + tail). Decisions that read and then write (take an item,
dedupe a push) run inside ``transaction()``, which holds the log's exclusive lock, catches up
to the true tail and applies what it appends, so two processes never decide on stale state.
The state dir stays local either way: job logs, step status files, workspaces, caches.
"""

from __future__ import annotations

import json
import os
import sys
import time
from _thread import RLock
from contextlib import contextmanager

from ojd import conf, paths
from ojd.conf import CONFIG_FILE  # where a state_url is set (its users name it)
from ojd.errors import OjError, escaped
from ojd.events import state_loss_acknowledged, state_repaired
from ojd.state import Event, State
from ojd.store.wal import CheckReport, WalDirectory, WalProblem, start_pos_problem
from ojd.store.walsegments import lost_problem, positions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ojd.store.log import Listener, Log, Reader, Writer

# A snapshot is written when this many events have accumulated past the last one, so a
# CLI call replays at most this tail.
SNAPSHOT_EVERY = 2000
# Loads that meet a compaction racing them retry from the newer snapshot; the last try holds
# the lock, so no compaction can move the log under it.
_LOAD_TRIES = 4


def warn_to_stderr(problem: WalProblem) -> None:
    if problem.kind == "lost":
        print(f"oj: warning: {problem.detail}; see 'oj state check'", file=sys.stderr)
        return
    print(f"oj: warning: state {problem.kind} in {problem.segment} at byte {problem.offset}"
          f"{'' if problem.pos is None else f' (position {problem.pos})'}: {problem.detail}",
          file=sys.stderr)


def state_dir_error(root: str | None, error: OSError) -> OjError:
    where = root or paths.state_dir()
    if isinstance(error, PermissionError):
        why = (f"permission denied ({error.filename}); it belongs to another user, or "
               "needs root")
    else:
        why = f"{error.strerror or error} ({error.filename}); set OJ_STATE_DIR to a directory"
    return OjError(escaped(f"cannot use state dir {where}: {why}"))  # paths on one line


def configured_url(root: str) -> str | None:
    """Where the state lives when not in the WAL directory: ``$OJ_STATE_URL``, else the
    ``state_url = ...`` line of ``ROOT/oj.conf`` (found by every process that knows the state
    dir: CLI, worker units, steps). None (or empty): the WAL directory."""
    url = os.environ.get("OJ_STATE_URL")
    if url is None:
        try:
            found = conf.read(root).get("state_url")
        except OSError as e:
            raise state_dir_error(root, e) from None
        url = found[1] if found else None
    if not url:
        return None
    if not url.startswith(("postgresql:", "postgres:")):
        where = "OJ_STATE_URL" if os.environ.get("OJ_STATE_URL") else os.path.join(
            root, CONFIG_FILE)
        raise OjError(escaped(f"state url in {where} is not a postgresql:// URL; unset it to "
                              "use the state dir's WAL"))
    return url


def open_log(root: str, on_problem: Callable[[WalProblem], None] | None, url: str | None
             ) -> Log:
    """The log behind a store: PostgreSQL when a URL is configured, else the WAL directory."""
    if url:
        from ojd.store.postgres import PgLog  # lazy: libpq is loaded only for PostgreSQL

        return PgLog(url, on_problem=on_problem)
    return WalDirectory(paths.wal_dir(root), on_problem=on_problem)


def same_state(ours: dict, theirs: dict) -> bool:
    """Whether two folded states agree: the same items, jobs, workers and crons, and in each
    of them the same value for every field both have. A field only one has is a fold of
    another version (an upgrade between the snapshots: a job's ``resumes``, a step's
    ``host``), not an event that was missed."""
    for section in ours.keys() & theirs.keys():
        a, b = ours[section], theirs[section]
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys() or not all(_same_record(a[k], b[k]) for k in a):
                return False
        elif not _same_record(a, b):
            return False
    return True


def _same_record(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_record(a[k], b[k]) for k in a.keys() & b.keys())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_record, a, b))
    return a == b


EXPORT_FORMAT = 1


def export_state(store: Store) -> str:
    """The whole state as one JSON document: what ``import_state`` reads into any store."""
    with store.lock:
        state = store.refresh()
        return json.dumps({"oj_state": EXPORT_FORMAT, "pos": state.pos,
                           "state": state.to_dict()}, separators=(",", ":"))


def import_state(store: Store, text: str) -> int:
    """Start ``store``, which must hold nothing yet, from an exported document; returns its
    position (appends continue after it)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("oj_state") != EXPORT_FORMAT:
            raise ValueError("not a document of 'oj state export'")
        pos, data = doc.get("pos"), doc.get("state")
        # (a JSON true is an int to Python: not a position)
        if not isinstance(pos, int) or isinstance(pos, bool) or pos < 0 \
                or not isinstance(data, dict):
            raise ValueError("no position and state in it")
        if (problem := start_pos_problem(pos)) is not None:  # before the store is touched
            raise ValueError(problem)
        State.from_dict(json.loads(json.dumps(data)))  # refuse what the fold cannot load
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise OjError(f"cannot import: {escaped(str(e))}; give the output of "
                      "'oj state export' on stdin") from None
    with store.lock:
        store.load()
        if store.state.pos or store.log.snapshot_positions():
            raise OjError(f"cannot import: this store already holds a state (position "
                          f"{store.state.pos}); import into a new state dir or an empty "
                          "database")
        try:
            store.log.start_at(pos, data)
        except ValueError as e:
            raise OjError(f"cannot import: {e}") from None
        store.load()
    return pos


class Transaction:
    """What a decision sees and does while it holds the log's lock."""

    def __init__(self, store: Store, writer: Writer) -> None:
        self.state = store.state
        self._store = store
        self._writer = writer

    def append(self, *events: Event, sync: bool = True) -> list[int]:
        """``sync=False``: durable with the next synced append (``WalWriter.append``)."""
        ts = time.time()
        for ev in events:
            ev.setdefault("ts", ts)
        positions = self._writer.append(*events, sync=sync)
        for ev, pos in zip(events, positions, strict=True):
            self.state.apply(ev, pos)
        return positions


class Store:
    def __init__(self, root: str | None = None,
                 on_problem: Callable[[WalProblem], None] | None = warn_to_stderr,
                 url: str | None = None) -> None:
        """``url``: the store's PostgreSQL URL; None reads the configuration (``""`` forces
        the WAL directory)."""
        try:
            self.root = paths.ensure_state_dir(root)
            self.url = configured_url(self.root) if url is None else url or None
            self.log: Log = open_log(self.root, on_problem, self.url)
        except OSError as e:
            raise state_dir_error(root, e) from None
        self._on_problem = on_problem
        self._told_lost: set[tuple[int, int]] = set()
        self.state = State()
        self._snapshot_pos = 0
        self._reader: Reader | None = None
        # flock does not exclude threads of one process that share the lock file: this does
        self.lock = RLock()

    def load(self) -> State:
        """Newest readable snapshot plus every record after it."""
        with self.lock:
            for attempt in range(_LOAD_TRIES):
                if self.log.holds_lock():
                    self._load_once(final=True)  # nothing can move under us: what is, is
                    break
                if attempt == _LOAD_TRIES - 1:
                    with self.log.locked():
                        self._load_once(final=True)
                    break
                if self._load_once(final=False):
                    break
            self._tell_lost()
            return self.state

    def _load_once(self, final: bool) -> bool:
        snap = self.log.load_snapshot()
        if snap is not None:
            self._snapshot_pos, data = snap
            self.state = State.from_dict(data)  # type: ignore[arg-type]
            self.state.pos = self._snapshot_pos
        else:
            self._snapshot_pos = 0
            self.state = State()
        self._reader = self.log.reader(after=self.state.pos)
        return self._catch_up(self._reader.read_new(), final)

    def take_over(self, other: Store) -> State:
        """Start from ``other``'s state (a forked job process has its starter's in memory)
        instead of loading the snapshot again; what came after it is read by the next
        refresh (the runner's first), not here: one read less between push and step."""
        with self.lock:
            self.state = other.state
            self._snapshot_pos = other._snapshot_pos
            self._reader = self.log.reader(after=self.state.pos)
        return self.state

    def refresh(self) -> State:
        """Apply what other processes appended since the last read."""
        with self.lock:
            if self._reader is None or not self._catch_up(self._reader.read_new(), False):
                return self.load()
            self._tell_lost()
            return self.state

    def _catch_up(self, records, final: bool) -> bool:
        """Apply records. Positions the records skip were either compacted away under this
        reader (a newer snapshot holds them: return False, the caller reloads from it) or
        are lost (corrupt, or removed with nothing covering them): noted in the state, so
        every snapshot after this one still names them, and reported."""
        state = self.state
        apply = state.apply
        for rec in records:
            if rec.pos > state.pos + 1:
                if not final and self._snapshot_beyond(state.pos):
                    return False
                state.note_lost(state.pos + 1, rec.pos - 1)
            if rec.pos > state.pos:
                apply(rec.event, rec.pos)
        return True

    def _snapshot_beyond(self, pos: int) -> bool:
        return any(p > pos for p in self.log.snapshot_positions())

    def _tell_lost(self) -> None:
        """Say so, once per process, for every lost range nobody has acknowledged."""
        for first, last in self.state.unacknowledged_loss():
            if (first, last) in self._told_lost:
                continue
            self._told_lost.add((first, last))
            if self._on_problem is not None:
                self._on_problem(lost_problem(first, last))

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.lock:
            if self._reader is None:
                self.load()
            try:
                with self.log.locked() as writer:
                    # the lock is held: reading to the end now gives the true tail
                    # (a gap a newer snapshot covers reloads from it: under the lock, for good)
                    if not self._catch_up(self._reader.read_new(), False):
                        self.load()
                    yield Transaction(self, writer)
                    self._reader.read_new()  # step the cursor past our own appends
            except BaseException:
                if self.log.rolled_back:
                    # a database transaction that did not commit: what this state applied
                    # of it never happened; the next use reloads
                    self._reader = None
                raise
            self._tell_lost()
            if self.state.pos - self._snapshot_pos >= SNAPSHOT_EVERY:
                try:
                    self.snapshot()
                except (OSError, OjError) as e:
                    # What was appended is durable: a failed snapshot (a full disk) must not
                    # make the caller report it as not done. The next append tries again.
                    why = e.strerror if isinstance(e, OSError) and e.strerror else e
                    print(f"oj: warning: could not write a state snapshot: {why}",
                          file=sys.stderr)

    def append(self, *events: Event) -> list[int]:
        with self.transaction() as tx:
            return tx.append(*events)

    @property
    def shared(self) -> bool:
        """Whether other hosts may use this store too (PostgreSQL): items then carry leases,
        and workers elsewhere are woken by the database, not by a signal from here."""
        return self.url is not None

    def warm_up(self) -> None:
        """Open what the first read or append would (a database connection), ahead of need;
        failures are left to that first use, which reports them."""
        try:
            self.log.connect()
        except Exception:
            pass

    def change_listener(self) -> Listener | None:
        """Something to wait on for others' appends, or None where only signals tell (the
        WAL directory: a push signals the workers of its queue itself). With PostgreSQL a
        connection LISTENing to commits on every host: ``fileno()`` becomes readable and
        ``drain()`` says how many ask for a wake."""
        return self.log.listener()

    def snapshot(self) -> int:
        """Write a snapshot of the current state and drop the segments it makes redundant."""
        with self.lock:
            pos = self.state.pos
            self.log.save_snapshot(pos, self.state.to_dict())
            self._snapshot_pos = pos
            self.log.compact()
            return pos

    def check(self) -> CheckReport:
        """The WAL's own check, plus what only a replay can tell: positions the state knows
        are lost, and snapshots that disagree with the log they summarise (a snapshot written
        by a process that missed events)."""
        with self.lock, self.log.locked():
            report = self.log.check()
            self.load()
            acked = [(first, last) for first, last, ok in self.state.lost if ok]
            report.acknowledged = acked

            def accepted(pos: int | None) -> bool:
                return pos is not None and any(a <= pos <= b for a, b in acked)

            # damage an operator has acknowledged is history, not a problem
            report.problems = [p for p in report.problems
                               if not (accepted(p.pos) and (p.kind == "lost" or (
                                   p.kind == "corrupt" and p.segment.startswith("seg-"))))]
            report.lost = [r for r in report.lost if not accepted(r[0])]
            for first, last in self.state.unacknowledged_loss():
                if (first, last) not in report.lost:
                    report.lost.append((first, last))
                    report.problems.append(lost_problem(first, last))
            report.problems.extend(self._check_snapshots())
        return report

    def _check_snapshots(self) -> list[WalProblem]:
        """Replay the older kept snapshot up to the newer one and compare (under the lock)."""
        snaps = []
        for pos in reversed(self.log.snapshot_positions()):
            snap = self.log.read_snapshot(pos)
            if snap is not None:
                snaps.append(snap)
            if len(snaps) == 2:
                break
        if len(snaps) < 2:
            return []
        (new_pos, new_data), (old_pos, old_data) = snaps
        replayed = State.from_dict(json.loads(json.dumps(old_data)))
        replayed.pos = old_pos
        for rec in self.log.records(after=old_pos):
            if rec.pos > new_pos:
                break
            if rec.pos > replayed.pos + 1:
                return []  # a hole in the log (reported as such): the replay proves nothing
            replayed.apply(rec.event, rec.pos)
        if replayed.pos != new_pos:
            return []
        ours = json.loads(json.dumps(replayed.to_dict()))
        theirs = dict(new_data)  # type: ignore[call-overload]
        ours.pop("lost", None)
        theirs.pop("lost", None)
        if same_state(ours, theirs):
            return []
        missing = sorted(set(ours.get("items", {})) - set(theirs.get("items", {})))
        jobs = sorted(set(ours.get("jobs", {})) - set(theirs.get("jobs", {})))
        what = []
        if missing:
            what.append(f"{len(missing)} item(s) missing, e.g. {', '.join(missing[:3])}")
        if jobs:
            what.append(f"{len(jobs)} job(s) missing, e.g. {', '.join(jobs[:3])}")
        name = f"snapshot-{new_pos:016d}.json"
        return [WalProblem(
            "mismatch", new_pos, name, 0,
            f"disagrees with snapshot {old_pos} plus the log after it"
            f"{': ' + '; '.join(what) if what else ''}")]

    def repair_plan(self, report: CheckReport) -> list[tuple[str, Callable[[], object]]]:
        """What ``oj state check --repair`` would do about ``report``: (what, do) pairs. Never
        deletes: a bad snapshot is moved aside; a loss is acknowledged by an event."""
        plan: list[tuple[str, Callable[[], object]]] = []
        bad_snaps = sorted({p.pos for p in report.problems
                            if p.kind in ("corrupt", "mismatch") and p.segment.startswith(
                                "snapshot-") and p.pos is not None})
        for pos in bad_snaps:
            name = f"snapshot-{pos:016d}.json"
            plan.append((f"move {name} aside to damaged-{name} (loading then replays the log "
                         "from the snapshot before it)",
                         lambda name=name: self.log.set_aside(name)))
        if bad_snaps:
            plan.append(("write a new snapshot from the log, once the bad ones are aside",
                         self._resnapshot))
        elif report.covered:
            plan.append((f"write a new snapshot, so that the damaged part of the log "
                         f"({positions(report.covered)}, which the newest snapshot holds) is no "
                         "longer needed and leaves with compaction", self._resnapshot_twice))
        if report.lost:
            upto = max(last for _first, last in report.lost)
            plan.append((f"record that the loss of {positions(report.lost)} is acknowledged, so "
                         "commands stop warning ('oj state check' keeps listing it)",
                         lambda: self.append(state_loss_acknowledged(upto=upto))))
        return plan

    def _resnapshot_twice(self) -> int:
        # the first new snapshot makes the covering one the older of the two kept; the
        # second lets compaction drop every segment up to it
        self._resnapshot()
        self.append(state_repaired())
        return self._resnapshot()

    def _resnapshot(self) -> int:
        with self.lock:
            self._told_lost.clear()
            self.load()
            return self.snapshot()

