"""Damaged state through the installed CLI: a bad snapshot loses nothing, a loss nothing can
undo is named by every command and by `oj state check` until an operator acknowledges it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project

QUEUE = """
    queue "q" {
      vars = ["n"]
    }
    """


@pytest.fixture
def queued(project: Project) -> Project:
    project.write("q.hcl", QUEUE)
    return project


def push(project: Project, *ns: int) -> list[str]:
    return [project.oj("queue", "push", "q", json.dumps({"n": str(n)})).stdout.strip()
            for n in ns]


def snapshots(project: Project) -> list[Path]:
    return sorted((project.state / "wal").glob("snapshot-*.json"))


def three_compactions_apart(project: Project) -> list[str]:
    ids = push(project, 1, 2, 3)
    project.oj("state", "compact")
    ids += push(project, 4, 5, 6)
    project.oj("state", "compact")
    ids += push(project, 7, 8)
    return ids


def test_a_garbled_newest_snapshot_loses_no_item_and_repair_sets_it_aside(queued: Project):
    ids = three_compactions_apart(queued)
    newest = snapshots(queued)[-1]
    newest.write_bytes(b"\x00garbage")
    listing = queued.oj("queue", "list", "--items", "-o", "json")
    assert sorted(i["id"] for i in json.loads(listing.stdout)) == sorted(ids)
    assert "unreadable snapshot" in listing.stderr
    check = queued.oj("state", "check", check=False)
    assert check.returncode == 1 and newest.name in check.stdout
    repair = queued.oj("state", "check", "--repair", "--yes", check=False)
    assert repair.returncode == 0, repair.stderr
    assert f"move {newest.name} aside" in repair.stderr
    assert (newest.parent / f"damaged-{newest.name}").exists()
    assert queued.oj("state", "check").stdout.strip().endswith("ok")
    again = queued.oj("queue", "list", "--items", "-o", "json")
    assert sorted(i["id"] for i in json.loads(again.stdout)) == sorted(ids)
    assert again.stderr == ""


def test_a_loss_nothing_can_undo_is_named_everywhere_until_acknowledged(queued: Project):
    ids = three_compactions_apart(queued)
    for snap in snapshots(queued):
        snap.write_bytes(b"garbage")
    for args in (("queue", "list"), ("job", "list"), ("queue", "push", "q", '{"n": "9"}')):
        proc = queued.oj(*args)
        assert "state positions 1-3 are lost" in proc.stderr, (args, proc.stderr)
    listed = {i["id"] for i in queued.items()}
    assert listed >= set(ids[3:]) and not listed & set(ids[:3])
    check = queued.oj("state", "check", check=False)
    assert check.returncode == 1
    assert "lost: state positions 1-3 are lost" in check.stdout
    as_json = json.loads(queued.oj("state", "check", "-o", "json", check=False).stdout)
    assert as_json["ok"] is False and as_json["lost"] == [[1, 3]]
    # without a terminal and without --yes: the plan, and nothing done
    dry = queued.oj("state", "check", "--repair", check=False)
    assert dry.returncode == 1
    assert "acknowledged" in dry.stderr and "not repairing without --yes" in dry.stderr
    assert "positions 1-3 are lost" in queued.oj("queue", "list").stderr
    queued.oj("state", "check", "--repair", "--yes")
    quiet = queued.oj("queue", "list")
    assert "lost" not in quiet.stderr
    after = queued.oj("state", "check")
    assert "positions 1-3 were lost (acknowledged)" in after.stdout
    assert after.stdout.strip().endswith("ok")


@pytest.mark.parametrize("damage", ["bit-flip", "removed"])
def test_damage_that_the_newest_snapshot_covers_is_not_blamed_on_it_and_repair_keeps_all(
        queued: Project, damage: str):
    ids = push(queued, 1, 2, 3)
    queued.oj("state", "compact")
    ids += push(queued, 4, 5, 6)
    queued.oj("state", "compact")
    ids += push(queued, 7, 8)
    queued.oj("state", "compact")
    ids += push(queued, 9)
    segment = queued.state / "wal" / "seg-0000000000000007.wal"
    if damage == "bit-flip":
        data = bytearray(segment.read_bytes())
        data[40] ^= 0xFF
        segment.write_bytes(bytes(data))
    else:
        segment.unlink()
    assert sorted(i["id"] for i in queued.items()) == sorted(ids)
    check = queued.oj("state", "check", "-o", "json", check=False)
    report = json.loads(check.stdout)
    assert check.returncode == 1 and report["lost"] == []
    # the damage itself, where it is; the snapshot that holds it is not blamed
    if damage == "bit-flip":
        assert [(p["kind"], p["segment"]) for p in report["problems"]] == [
            ("corrupt", segment.name)]
    else:
        assert [(p["kind"], p["pos"]) for p in report["problems"]] == [("missing", 7)]
        assert "snapshot 8 holds them" in report["problems"][0]["detail"]
    repair = queued.oj("state", "check", "--repair", "--yes")
    assert "aside" not in repair.stderr and "new snapshot" in repair.stderr
    assert sorted(i["id"] for i in queued.items()) == sorted(ids)
    assert queued.oj("state", "check").stdout.strip().endswith("ok")
