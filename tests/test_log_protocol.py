"""The store contract is code: both logs, the WAL directory and PostgreSQL, implement the
``Log`` protocol (and their readers and writers theirs) method by method and parameter by
parameter, and every operation oj's code uses of a store's log is in the protocol."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from ojd.store.log import Listener, Log, Reader, Writer
from ojd.store.postgres import PgListener, PgLog, PgReader, PgWriter
from ojd.store.wal import WalDirectory, WalReader, WalWriter

ROOT = Path(__file__).resolve().parent.parent

IMPLEMENTATIONS = [
    (Log, WalDirectory), (Log, PgLog),
    (Reader, WalReader), (Reader, PgReader),
    (Writer, WalWriter), (Writer, PgWriter),
    (Listener, PgListener),
]


def members(protocol: type) -> dict[str, object]:
    """The protocol's own methods and properties, by name."""
    return {name: value for name, value in vars(protocol).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def parameters(function: object) -> list[tuple[str, object, object, object]]:
    """Each parameter's name, kind, default and annotation (as written: the modules
    postpone annotations, so they are strings)."""
    return [(p.name, p.kind, p.default, p.annotation)
            for p in inspect.signature(function).parameters.values()]  # type: ignore[arg-type]


@pytest.mark.parametrize(("protocol", "cls"), IMPLEMENTATIONS,
                         ids=[f"{c.__name__}-{p.__name__}" for p, c in IMPLEMENTATIONS])
def test_each_store_class_has_every_operation_of_its_protocol_with_the_same_parameters(
        protocol: type, cls: type) -> None:
    for name, member in members(protocol).items():
        if isinstance(member, property):  # a property, or an attribute of each instance
            continue  # (PgReader.position): see the test on instances below
        assert hasattr(cls, name), f"{cls.__name__} lacks {protocol.__name__}.{name}"
        theirs = inspect.getattr_static(cls, name)
        assert callable(theirs), f"{cls.__name__}.{name} is not a method"
        assert parameters(theirs) == parameters(member), (
            f"{cls.__name__}.{name}{inspect.signature(theirs)} differs from "  # type: ignore[arg-type]
            f"{protocol.__name__}.{name}{inspect.signature(member)}")  # type: ignore[arg-type]


def test_both_logs_their_readers_and_writers_have_the_protocols_attributes(
        tmp_path: Path) -> None:
    # attributes (path, rolled_back, position) may be per instance: checked on one of each;
    # a PgLog connects on first use only
    wal = WalDirectory(tmp_path / "wal")
    pg = PgLog("postgresql:///nowhere?host=/nonexistent")
    for log in (wal, pg):
        assert isinstance(log, Log)
        assert isinstance(log.path, str) and log.rolled_back is False
        reader = log.reader(after=0)
        assert isinstance(reader, Reader) and reader.position == 0
    with wal.locked() as writer:
        assert isinstance(writer, Writer) and writer.last_pos == 0
    assert isinstance(inspect.getattr_static(PgWriter, "last_pos"), property)  # a query


def test_what_the_wal_says_for_what_only_a_shared_store_has() -> None:
    assert WalDirectory.rolled_back is False  # an append is never undone
    assert WalDirectory.listener(None) is None  # type: ignore[arg-type]  # signals wake
    assert WalDirectory.clock_offset(None) == 0.0  # type: ignore[arg-type]  # one host


# ``store.log.NAME`` anywhere in oj, and ``self.log.NAME`` in the Store itself
USES = re.compile(r"\bstore\.log\.(\w+)")
STORE_USES = re.compile(r"\bself\.log\.(\w+)")


def test_every_operation_oj_uses_of_a_stores_log_is_in_the_protocol() -> None:
    allowed = set(members(Log)) | set(Log.__annotations__)
    used: dict[str, str] = {}
    for path in sorted([*ROOT.glob("ojd/**/*.py"), *ROOT.glob("oj/**/*.py")]):
        text = path.read_text()
        found = USES.findall(text)
        if path == ROOT / "ojd" / "store" / "__init__.py":
            found += STORE_USES.findall(text)
        for name in found:
            used.setdefault(name, str(path.relative_to(ROOT)))
    assert "locked" in used and "reader" in used  # the scan sees the Store's uses
    outside = {name: where for name, where in used.items() if name not in allowed}
    assert not outside, f"used of a store's log but not in ojd.store.log.Log: {outside}"
