"""oj's tables in a PostgreSQL database, and the version row that lets a newer oj change them.

``oj_schema (version integer)`` holds one row: the version of oj's tables. ``MIGRATIONS`` are
the steps from one version to the next, in order; a database with no oj tables is at version
0, and so is one made by an oj from before the version row (its tables are version 1's, which
the first step makes only where they are missing). ``prepare`` runs, in one transaction, the
steps a database lacks; it refuses a database at a version newer than this oj knows, which a
newer oj has changed in ways this one cannot read.
"""

from __future__ import annotations

from ojd.errors import OjError, escaped

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store.libpq import Connection

# (version, statements): what brings a database at the version before to this one. Append a
# step to change the tables; never edit one that has shipped.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE IF NOT EXISTS oj_events (pos bigint PRIMARY KEY, event text NOT NULL);
CREATE TABLE IF NOT EXISTS oj_snapshots (
    pos bigint PRIMARY KEY, state text NOT NULL, damaged boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS oj_schema (version integer NOT NULL);
"""),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# The version, in the same round trip as a new session's settings: where the table is
# missing the server answers UNDEFINED_TABLE.
READ_VERSION = "SELECT max(version) FROM oj_schema"
UNDEFINED_TABLE = "42P01"
_LOCK = 0x6F6A0001  # pg_advisory_xact_lock key: two first users create or migrate once


def newer_error(path: str, version: int) -> OjError:
    return OjError(escaped(
        f"state database {path} holds oj's tables at version {version}, newer than this oj "
        f"knows ({SCHEMA_VERSION}): a newer oj has upgraded it; upgrade oj on this host"))


def prepare(conn: Connection, path: str) -> int:
    """Bring the database of ``conn`` to SCHEMA_VERSION (or refuse a newer one, with
    OjError), under a lock that makes a second process wait and then find it done; returns
    the version found. An error leaves the transaction open: the caller closes the session,
    which ends it, so a failed step changes nothing."""
    conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_LOCK})")
    found = version(conn)
    if found > SCHEMA_VERSION:
        raise newer_error(path, found)
    steps = [sql for step, sql in MIGRATIONS if step > found]
    if steps:
        conn.execute("".join(steps) + "DELETE FROM oj_schema; "
                     f"INSERT INTO oj_schema (version) VALUES ({SCHEMA_VERSION})")
    conn.execute("COMMIT")
    return found


def version(conn: Connection) -> int:
    """The version of oj's tables in the database: 0 with no version row."""
    if not conn.execute("SELECT to_regclass('oj_schema') IS NOT NULL").rows[0][0]:
        return 0
    found = conn.execute(READ_VERSION).rows[0][0]
    return 0 if found is None else int(found)
