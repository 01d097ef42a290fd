"""What a log is: the operations both stores offer (``WalDirectory`` in ojd.store.wal, the
embedded default; ``PgLog`` in ojd.store.postgres, several hosts sharing one database), and
all that the ``Store`` and its callers may use of either.

Structural (``typing.Protocol``): neither store names this module, and a test holds both to
it, method by method and parameter by parameter. Imported for typing only: ``typing`` costs
the CLI's start-up what no command needs at run time.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractContextManager

    from ojd.store.wal import CheckReport
    from ojd.store.walframe import Record


@runtime_checkable
class Reader(Protocol):
    """An incremental cursor over the log, lock-free."""

    @property
    def position(self) -> int:
        """The last position read."""
        ...

    def read_new(self) -> list[Record]:
        """The records committed after the last read, in position order."""
        ...


@runtime_checkable
class Writer(Protocol):
    """The log inside ``with log.locked() as w``: nobody else can append."""

    @property
    def last_pos(self) -> int:
        """The true tail: the last position in the log (or a snapshot past it)."""
        ...

    def append(self, *events: dict, sync: bool = True) -> list[int]:
        """Append ``events`` as one batch at the next positions, which are returned;
        ``sync=False`` may leave them durable only with the next synced append."""
        ...


@runtime_checkable
class Listener(Protocol):
    """Something to wait on for other processes' appends (``select`` on ``fileno()``)."""

    def fileno(self) -> int: ...

    def drain(self) -> int:
        """Consume what arrived; how many of the appends may give a worker work."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Log(Protocol):
    """Events at strictly increasing positions from 1, with snapshots of the state."""

    path: str  # what messages and ``oj state check`` name the log by
    # the last locked() block's transaction did not commit, and what it appended never
    # happened (a database's); an append to a WAL is never undone
    rolled_back: bool

    # -- reading, lock-free
    def reader(self, after: int = 0) -> Reader: ...

    def records(self, after: int = 0) -> Iterator[Record]: ...

    # -- deciding and writing
    def locked(self) -> AbstractContextManager[Writer]:
        """The log's exclusive lock for the block, re-entrant within a thread: what is read
        in it is the true tail, and what is decided on it and appended is atomic."""
        ...

    def holds_lock(self) -> bool:
        """Whether this thread is inside ``with log.locked()``."""
        ...

    def append(self, *events: dict) -> list[int]: ...

    def start_at(self, pos: int, state: object) -> None:
        """Begin an empty log with a snapshot at ``pos`` (an imported state); ValueError
        when the log is not empty or ``pos`` leaves no room after it."""
        ...

    # -- snapshots
    def save_snapshot(self, pos: int, state: object) -> object:
        """Keep ``state`` as the state after ``pos`` (the newest two are kept); returns where
        it went."""
        ...

    def load_snapshot(self) -> tuple[int, object] | None:
        """The newest readable snapshot, as (position, state)."""
        ...

    def read_snapshot(self, pos: int) -> tuple[int, object] | None: ...

    def snapshot_positions(self) -> list[int]:
        """Positions of the snapshots present (readable or not), oldest first."""
        ...

    def compact(self) -> int:
        """Drop the events the older of the two kept snapshots covers."""
        ...

    def set_aside(self, name: str) -> str:
        """Stop loading the snapshot ``name`` (``snapshot-POS.json``), keeping its data."""
        ...

    # -- checking
    def check(self, after: int | None = None) -> CheckReport:
        """Every event and snapshot, under the lock: damage, and positions lost past
        ``after`` (default: the oldest readable snapshot)."""
        ...

    # -- sharing with other hosts
    def connect(self) -> None:
        """Open ahead of need what the first read or append would."""
        ...

    def listener(self) -> Listener | None:
        """A Listener to others' appends, or None where only signals tell (the WAL)."""
        ...

    def clock_offset(self) -> float:
        """The log's clock minus this host's, in seconds (0 for a log on this host)."""
        ...
