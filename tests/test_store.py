"""The store under compaction, damage and concurrency: every acknowledged event stays in the
state, and what cannot be kept is named, never silently dropped."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until

from ojd.state import State
from ojd.store import Store
from ojd.store.wal import WalProblem
from ojd.store.walframe import encode_frames


def pushed(n: int) -> dict:
    return {"type": "queue:pushed", "id": f"i{n}", "p": "/p", "q": "q", "data": {"n": n},
            "key": ""}


def push(store: Store, *ns: int) -> None:
    for n in ns:
        store.append(pushed(n))


def ids(state: State) -> set[str]:
    return set(state.items)


def quiet(root: Path) -> tuple[Store, list[WalProblem]]:
    problems: list[WalProblem] = []
    return Store(str(root), on_problem=problems.append), problems


def test_a_load_racing_compactions_keeps_every_event(tmp_path: Path) -> None:
    # The deterministic form of the lost-items race: process A reads the newest snapshot,
    # then B snapshots and compacts twice before A reads the log after it.
    b, _ = quiet(tmp_path)
    push(b, *range(1, 11))
    b.load()
    b.snapshot()
    push(b, *range(11, 21))
    a, problems = quiet(tmp_path)
    real_reader = a.log.reader

    def racing_reader(after: int = 0):
        a.log.reader = real_reader  # type: ignore[method-assign]  # race once
        push(b, *range(21, 26))
        b.snapshot()
        push(b, *range(26, 31))
        b.snapshot()
        return real_reader(after)

    a.log.reader = racing_reader  # type: ignore[method-assign]
    a.load()
    push(b, *range(31, 36))
    a.refresh()
    assert ids(a.state) == {f"i{n}" for n in range(1, 36)}
    assert a.state.lost == [] and problems == []
    a.snapshot()  # what A writes now is whole, so nobody after it loses anything either
    c, _ = quiet(tmp_path)
    assert ids(c.load()) == {f"i{n}" for n in range(1, 36)}


def test_a_slow_reader_whose_segments_were_compacted_reloads_from_the_snapshot(
        tmp_path: Path) -> None:
    slow, problems = quiet(tmp_path)
    push(slow, 1, 2)
    slow.load()
    other, _ = quiet(tmp_path)
    push(other, *range(3, 8))
    other.load()
    other.snapshot()
    push(other, 8, 9)
    other.snapshot()  # segments up to the older snapshot (7) are gone
    push(other, 10)
    assert ids(slow.refresh()) == {f"i{n}" for n in range(1, 11)}
    assert problems == [] and slow.state.lost == []


def test_corrupt_newest_snapshot_loses_nothing(tmp_path: Path) -> None:
    store, problems = quiet(tmp_path)
    push(store, 1, 2, 3)
    store.snapshot()
    push(store, 4, 5, 6)
    store.snapshot()
    push(store, 7, 8)
    newest = max(Path(store.log.path).glob("snapshot-*.json"))
    newest.write_bytes(b"garbage")
    fresh, fresh_problems = quiet(tmp_path)
    assert ids(fresh.load()) == {f"i{n}" for n in range(1, 9)}
    assert fresh.state.lost == []
    assert [p.kind for p in fresh_problems] == ["corrupt"]


def test_positions_nothing_holds_are_noted_reported_and_kept_in_later_snapshots(
        tmp_path: Path) -> None:
    store, _ = quiet(tmp_path)
    push(store, 1, 2, 3)
    store.snapshot()
    push(store, 4, 5, 6)
    store.snapshot()  # compacts seg 1..3 away: only the snapshot at 3 holds them
    push(store, 7, 8)
    for snap in Path(store.log.path).glob("snapshot-*.json"):
        snap.write_bytes(b"garbage")
    fresh, problems = quiet(tmp_path)
    state = fresh.load()
    assert ids(state) == {f"i{n}" for n in range(4, 9)}
    assert state.unacknowledged_loss() == [(1, 3)]
    assert [(p.kind, p.pos) for p in problems if p.kind == "lost"] == [("lost", 1)]
    assert "positions 1-3 are lost" in next(p.detail for p in problems if p.kind == "lost")
    fresh.snapshot()
    again, _ = quiet(tmp_path)
    assert again.load().unacknowledged_loss() == [(1, 3)]
    report = again.check()
    assert not report.ok
    assert any(p.kind == "lost" and p.pos == 1 for p in report.problems)
    again.append({"type": "state:loss_acknowledged", "upto": 3})
    later, later_problems = quiet(tmp_path)
    assert later.load().unacknowledged_loss() == []
    assert [p for p in later_problems if p.kind == "lost"] == []
    assert later.check().acknowledged == [(1, 3)]


def test_check_names_a_snapshot_that_missed_events(tmp_path: Path) -> None:
    # The footprint of the race: a process whose state skipped events wrote a snapshot.
    store, _ = quiet(tmp_path)
    push(store, *range(1, 6))
    store.load()
    store.snapshot()
    push(store, *range(6, 11))
    blind = State.from_dict(store.log.read_snapshot(5)[1])  # type: ignore[index,arg-type]
    blind.pos = 5
    for rec in store.log.records(after=5):
        if rec.event["id"] not in ("i7", "i8"):
            blind.apply(rec.event, rec.pos)
    store.log.save_snapshot(blind.pos, blind.to_dict())
    report = Store(str(tmp_path), on_problem=None).check()
    mismatch = [p for p in report.problems if p.kind == "mismatch"]
    assert len(mismatch) == 1 and "2 item(s) missing" in mismatch[0].detail
    assert "i7" in mismatch[0].detail
    store.snapshot()  # an honest one: check is clean again
    assert Store(str(tmp_path), on_problem=None).check().ok


def test_check_does_not_call_a_snapshot_of_another_fold_version_a_mismatch(
        tmp_path: Path) -> None:
    """Across an upgrade whose fold keeps a new field, one snapshot has the field where the
    replay of the other has not: not a snapshot that missed events. A value both have that
    differs still is."""
    store, _ = quiet(tmp_path)
    push(store, *range(1, 4))
    store.load()
    store.snapshot()
    push(store, 4, 5)
    newer = store.refresh().to_dict()
    for item in newer["items"].values():
        item["kept_by_a_newer_fold"] = True  # a field the replay will not have
    del newer["items"]["i1"]["attempts"]  # and one the older fold did not keep
    store.log.save_snapshot(newer["pos"], newer)
    assert Store(str(tmp_path), on_problem=None).check().ok
    newer["items"]["i4"]["status"] = "completed"  # an event the snapshot saw and the log not
    store.log.save_snapshot(newer["pos"], newer)
    report = Store(str(tmp_path), on_problem=None).check()
    assert [p.kind for p in report.problems] == ["mismatch"]


def test_a_record_too_deep_for_the_decoder_is_skipped_not_fatal(tmp_path: Path) -> None:
    store, problems = quiet(tmp_path)
    push(store, 1)
    deep: object = 1
    for _ in range(100_000):
        deep = {"k": deep}
    with pytest.raises(ValueError, match="nest at most"):
        store.append({"type": "queue:pushed", "id": "deep", "p": "/p", "q": "q", "data": deep})
    # A record an older writer let through: written by hand, it must not crash a reader.
    payload = b'{"type":"x","d":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    seg = max(Path(store.log.path).glob("seg-*.wal"))
    with open(seg, "ab") as f:
        f.write(encode_frames(2, [payload]))
    fresh, fresh_problems = quiet(tmp_path)
    push(fresh, 3)
    assert ids(fresh.load()) == {"i1", "i3"}
    assert [(p.kind, p.pos) for p in fresh_problems][:1] == [("corrupt", 2)]


def test_a_snapshot_that_cannot_be_written_does_not_fail_the_append(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from ojd import store as store_mod

    monkeypatch.setattr(store_mod, "SNAPSHOT_EVERY", 3)
    store, _ = quiet(tmp_path)

    tries = []

    def full(*_a, **_k):
        tries.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.log, "save_snapshot", full)
    push(store, 1, 2, 3, 4)  # the 3rd and 4th trigger a snapshot, which fails
    assert len(tries) == 2
    assert capsys.readouterr().err.count("could not write a state snapshot: No space") == 2
    assert ids(Store(str(tmp_path), on_problem=None).load()) == {"i1", "i2", "i3", "i4"}


@pytest.mark.end_to_end  # waits out lock timeouts against another process
def test_waiting_for_a_stopped_lock_holder_names_it_then_gives_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import fcntl
    import signal

    store, _ = quiet(tmp_path)
    push(store, 1)
    lock = os.path.join(store.log.path, "lock")
    pid = os.fork()
    if pid == 0:  # the holder: takes the lock, then is stopped by the parent
        fd = os.open(lock, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("T"):
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the lock holder never stopped")
        monkeypatch.setenv("OJ_LOCK_TIMEOUT", "1.5")
        from ojd.errors import OjError

        start = time.monotonic()
        with pytest.raises(OjError, match=f"still held by PID {pid}"):
            push(store, 2)
        assert 1.4 < time.monotonic() - start < 5
        assert f"held by PID {pid}" in capsys.readouterr().err
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    push(store, 2)  # the holder is gone: the lock is free again
    assert ids(store.refresh()) == {"i1", "i2"}


@pytest.mark.end_to_end  # waits out lock timeouts against another process
def test_a_lock_wait_given_up_on_never_releases_a_later_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A long-lived process (a worker) times out once, then locks again while the first wait
    # is still pending: when the outside holder lets go, the section must really hold it.
    import subprocess
    import sys

    from ojd.errors import LockTimeout

    store, _ = quiet(tmp_path)
    push(store, 1)
    lock = os.path.join(store.log.path, "lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time;f=open(sys.argv[1],'r+');"
         "fcntl.flock(f,fcntl.LOCK_EX);print('held',flush=True);sys.stdin.read()", lock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # holds until told
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    monkeypatch.setenv("OJ_LOCK_TIMEOUT", "1.5")
    with pytest.raises(LockTimeout):
        push(store, 2)
    probe = ("import fcntl,sys;f=open(sys.argv[1],'r+')\ntry:\n"
             " fcntl.flock(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n print('held')\n"
             "else:\n print('FREE')")
    seen = []
    assert holder.stdin is not None
    # the holder lets go once this process waits for the lock again, beside the given-up wait
    def waits_for_the_lock() -> int:  # this process's threads blocked in flock
        waiting = 0
        for task in Path("/proc/self/task").iterdir():
            try:
                waiting += "lock_inode" in (task / "wchan").read_text()
            except OSError:  # a thread that ended meanwhile
                pass
        return waiting

    def let_go() -> None:
        wait_until(lambda: waits_for_the_lock() >= 2, "the section to wait for the lock")
        holder.stdin.close()  # type: ignore[union-attr]

    letgo = threading.Thread(target=let_go)
    letgo.start()
    with store.log.locked():  # waits beside the given-up wait until the holder lets go
        assert holder.wait(timeout=5) == 0  # so the lock held from here on is ours alone
        for _ in range(3):
            time.sleep(0.3)  # the lock stays ours over time: held at each look
            seen.append(subprocess.run([sys.executable, "-c", probe, lock], capture_output=True,
                                       text=True, timeout=10).stdout.strip())
    holder.wait(10)
    letgo.join()
    assert seen == ["held"] * 3
    push(store, 3)
    assert ids(store.refresh()) == {"i1", "i3"}
