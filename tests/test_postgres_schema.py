"""oj's tables in PostgreSQL carry their version: a new database gets the version row, one
made by an oj from before it is migrated with its data kept, and one a newer oj has changed
is refused in one line that says to upgrade oj."""

from __future__ import annotations

import threading

from conftest import Project
from pgserver import session

from ojd.store.pgschema import SCHEMA_VERSION
from ojd.store.postgres import PgLog

RUNBOOK = """
    queue "q" {
      vars = ["n"]
    }
    """
# The tables as an oj without the version row made them, word for word.
UNVERSIONED = """
CREATE TABLE IF NOT EXISTS oj_events (pos bigint PRIMARY KEY, event text NOT NULL);
CREATE TABLE IF NOT EXISTS oj_snapshots (
    pos bigint PRIMARY KEY, state text NOT NULL, damaged boolean NOT NULL DEFAULT false);
"""


def versions(url: str) -> list[tuple]:
    with session(url) as conn:
        return conn.execute("SELECT version FROM oj_schema").rows


def columns(url: str) -> list[tuple]:
    with session(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_name LIKE 'oj\\_%' "
            "ORDER BY table_name, ordinal_position").rows


def test_a_new_database_gets_oj_tables_at_this_version(postgres):
    url = postgres.new_database()
    assert PgLog(url).append({"type": "test"}) == [1]
    assert versions(url) == [(SCHEMA_VERSION,)]


def test_tables_made_without_the_version_row_are_migrated_and_keep_their_data(postgres,
                                                                              tmp_path):
    fresh = postgres.new_database()
    PgLog(fresh).connect()
    url = postgres.new_database()
    with session(url) as conn:
        conn.execute(UNVERSIONED)
        conn.execute("INSERT INTO oj_events VALUES (1, '{\"type\":\"a\"}'), "
                     "(2, '{\"type\":\"b\"}')")
        conn.execute("INSERT INTO oj_snapshots (pos, state) VALUES (1, '{}')")
    # several processes meet the old tables at once: one migrates, the others find it done
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            PgLog(url).connect()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert versions(url) == [(SCHEMA_VERSION,)]
    assert columns(url) == columns(fresh)  # the same tables as a new database's
    log = PgLog(url)
    assert [r.event["type"] for r in log.records()] == ["a", "b"]
    assert log.snapshot_positions() == [1]
    assert log.append({"type": "c"}) == [3]
    # and the CLI works on it as on any other
    p = Project(tmp_path / "project", tmp_path / "state", url=url)
    p.write("q.hcl", RUNBOOK)
    p.oj("queue", "push", "q", "--var", "n=1")
    assert len(p.items()) == 1


def test_tables_of_a_newer_oj_are_refused_in_one_line_naming_the_fix(postgres, tmp_path):
    url = postgres.new_database()
    p = Project(tmp_path / "project", tmp_path / "state", url=url)
    p.write("q.hcl", RUNBOOK)
    p.oj("queue", "push", "q", "--var", "n=1")
    with session(url) as conn:
        conn.execute(f"UPDATE oj_schema SET version = {SCHEMA_VERSION + 1}")
    proc = p.oj("queue", "list", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"oj: state database {PgLog(url).path} holds oj's tables at version "
        f"{SCHEMA_VERSION + 1}, newer than this oj knows ({SCHEMA_VERSION}): a newer oj has "
        "upgraded it; upgrade oj on this host"]
    assert versions(url) == [(SCHEMA_VERSION + 1,)]  # left as it was
    with session(url) as conn:
        assert conn.execute("SELECT count(*) FROM oj_events").rows == [(1,)]
