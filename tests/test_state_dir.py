"""The state directory through the CLI: damage is reported, never crashes a listing, and
the WAL stays usable."""

from __future__ import annotations

import os

from conftest import Project

RUNBOOK = """
    queue "q" {
      vars = ["n"]
    }
    """


def segment(project: Project) -> str:
    wal = project.state / "wal"
    [name] = [n for n in os.listdir(wal) if n.startswith("seg-")]
    return str(wal / name)


def test_torn_tail_is_moved_aside_and_the_next_push_appends_cleanly(project: Project):
    project.write("q.hcl", RUNBOOK)
    for n in range(3):
        project.oj("queue", "push", "q", f'{{"n": "{n}"}}')
    path = segment(project)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # a write cut short by a power loss
        f.truncate(size - 7)
    proc = project.oj("queue", "push", "q", '{"n": "3"}')
    assert "torn-tail" in proc.stderr and "damaged-" in proc.stderr
    assert [i["data"]["n"] for i in project.items()] == ["0", "1", "3"]
    assert any(n.startswith("damaged-") for n in os.listdir(project.state / "wal"))
    assert project.json("state", "check")["ok"]


def test_corrupt_middle_record_is_reported_with_its_position_and_listing_goes_on(
        project: Project):
    project.write("q.hcl", RUNBOOK)
    for n in range(3):
        project.oj("queue", "push", "q", f'{{"n": "{n}"}}')
    path = segment(project)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    at = data.index(b'"n":"1"')
    data[at + 5] ^= 0x01  # one flipped bit in the second record's payload
    with open(path, "wb") as f:
        f.write(bytes(data))
    listing = project.oj("queue", "list", "-o", "json")
    assert "position 2" in listing.stderr
    check = project.oj("state", "check", check=False)
    assert check.returncode == 1 and "corrupt" in check.stdout and "position 2" in check.stdout
    project.oj("queue", "push", "q", '{"n": "3"}')
    assert [i["data"]["n"] for i in project.items()] == ["0", "2", "3"]


def test_state_dir_is_private_to_its_user(project: Project):
    project.write("q.hcl", RUNBOOK)
    project.oj("queue", "push", "q", '{"n": "0"}')
    assert os.stat(project.state).st_mode & 0o777 == 0o700
    assert os.stat(project.state / "wal").st_mode & 0o077 == 0
