"""The WAL directory against real files and real concurrent processes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import asleep_in, wait_until

from ojd.store.wal import Record, WalDirectory, WalProblem

ROOT = Path(__file__).resolve().parents[1]


def run_processes(code: str, args: list[list[str]]) -> None:
    """Start one ``python -c code`` per argument list at once, and wait for all of them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *a], env=env) for a in args
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.wal"))


def open_wal(path: Path, **kw: object) -> tuple[WalDirectory, list[WalProblem]]:
    problems: list[WalProblem] = []
    return WalDirectory(path, on_problem=problems.append, **kw), problems  # type: ignore[arg-type]


def test_directory_is_created_private_and_an_existing_mode_is_kept(tmp_path: Path) -> None:
    WalDirectory(tmp_path / "new")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    (tmp_path / "shared").mkdir(mode=0o750)
    os.chmod(tmp_path / "shared", 0o750)
    WalDirectory(tmp_path / "shared").append({"a": 1})
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o750


@pytest.mark.end_to_end  # eight processes, seconds of them
def test_eight_processes_appending_concurrently_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    code = """
        import sys
        from ojd.store.wal import WalDirectory
        wal = WalDirectory(sys.argv[1], segment_bytes=16 << 10)
        for seq in range(500):
            wal.append({"w": int(sys.argv[2]), "seq": seq})
    """
    run_processes(code, [[str(tmp_path), str(w)] for w in range(8)])
    wal, problems = open_wal(tmp_path)
    recs = list(wal.records())
    assert [r.pos for r in recs] == list(range(1, 4001))
    assert sorted((r.event["w"], r.event["seq"]) for r in recs) == [
        (w, s) for w in range(8) for s in range(500)
    ]
    for w in range(8):  # each writer's own events stay in its order
        assert [r.event["seq"] for r in recs if r.event["w"] == w] == list(range(500))
    assert len(segments(tmp_path)) > 1
    report = wal.check()
    assert report.ok and report.records == 4000 and report.last_pos == 4000
    assert problems == []


def test_decisions_under_the_lock_see_every_other_process(tmp_path: Path) -> None:
    # 4 processes x 6 attempts race to claim one of 10 slots: read-then-append under the
    # lock must hand out exactly 10, however the attempts interleave.
    code = """
        import sys
        from ojd.store.wal import WalDirectory
        wal = WalDirectory(sys.argv[1])
        claimed = 0
        for attempt in range(6):
            with wal.locked() as w:
                claimed += sum(1 for r in w.read_new() if r.event["type"] == "claim")
                if claimed < 10:
                    pos, = w.append({"type": "claim", "by": sys.argv[2], "n": attempt})
                    assert pos == w.last_pos
                    claimed += 1
    """
    run_processes(code, [[str(tmp_path), str(w)] for w in range(4)])
    recs = list(WalDirectory(tmp_path).records())
    assert len(recs) == 10
    assert [r.pos for r in recs] == list(range(1, 11))


def test_reader_is_incremental_and_locked_read_sees_other_processes(tmp_path: Path) -> None:
    wal, problems = open_wal(tmp_path)
    reader = wal.reader()
    assert reader.read_new() == [] and reader.position == 0
    assert wal.append({"n": 1}, {"n": 2}) == [1, 2]  # one call, one batch
    assert reader.read_new() == [Record(1, {"n": 1}), Record(2, {"n": 2})]
    assert reader.read_new() == []
    wal.append({"n": 3})
    assert reader.read_new() == [Record(3, {"n": 3})]
    assert reader.position == 3
    assert [r.pos for r in wal.reader(after=1).read_new()] == [2, 3]

    # The cursor keeps its byte offset: damage behind it is not re-read (no rescan).
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[25] ^= 0xFF
    seg.write_bytes(bytes(data))
    wal.append({"n": 4})
    assert reader.read_new() == [Record(4, {"n": 4})]
    assert problems == []

    code = """
        import sys
        from ojd.store.wal import WalDirectory
        WalDirectory(sys.argv[1]).append({"n": 5}, {"n": 6})
    """
    run_processes(code, [[str(tmp_path)]])
    with wal.locked() as w:
        # This instance handed out 1..4 (its reader, its appends): only the others' are new.
        assert [r.event["n"] for r in w.read_new()] == [5, 6]
        assert w.read_new() == []
        assert w.last_pos == 6
        assert w.append({"n": 7}) == [7]
    assert [r.pos for r in reader.read_new()] == [5, 6, 7]
    with pytest.raises(RuntimeError):
        w.append({"n": 8})


def test_append_rejects_bad_events_without_writing(tmp_path: Path) -> None:
    wal = WalDirectory(tmp_path)
    wal.append({"ok": 1})
    with pytest.raises(TypeError):
        wal.append({"ok": 2}, {"bad": object()})
    with pytest.raises(TypeError):
        wal.append(["not", "a", "dict"])  # type: ignore[arg-type]
    assert wal.append({"ok": 3}) == [2]
    assert [r.event["ok"] for r in wal.records()] == [1, 3]


def test_torn_tail_at_every_byte_of_the_last_record_is_repaired(tmp_path: Path) -> None:
    src = tmp_path / "src"
    wal = WalDirectory(src)
    for n in range(4):
        wal.append({"type": "job:added", "n": n})
    seg = segments(src)[0]
    start = seg.stat().st_size
    wal.append({"type": "job:added", "n": 4, "name": "the last one"})
    end = seg.stat().st_size
    assert end - start > 19
    for cut in range(start, end):
        work = tmp_path / f"cut-{cut}"
        shutil.copytree(src, work)
        with open(work / seg.name, "r+b") as f:
            f.truncate(cut)
        wal, problems = open_wal(work)
        if cut % 2:  # a reader finds it first: it waits for the lock, then has it repaired
            assert [r.pos for r in wal.records()] == [1, 2, 3, 4]
            assert wal.append({"type": "after"}) == [5]
        else:  # a writer finds it first, while catching up under the lock
            assert wal.append({"type": "after"}) == [5]
        recs = list(WalDirectory(work).records())
        assert [r.pos for r in recs] == [1, 2, 3, 4, 5]
        assert recs[-1].event == {"type": "after"}
        damaged = list(work.glob("damaged-*.bin"))
        if cut == start:  # the whole record is gone: nothing is damaged
            assert damaged == [] and problems == []
            continue
        assert [d.name for d in damaged] == [f"damaged-{seg.stem}-{start}.bin"]
        assert damaged[0].read_bytes() == seg.read_bytes()[start:cut]
        assert len(problems) == 1, problems
        (p,) = problems
        assert (p.kind, p.pos, p.segment, p.offset) == ("torn-tail", 5, seg.name, start)
        assert damaged[0].name in p.detail
        assert WalDirectory(work).check().ok


def test_unlocked_reader_treats_an_incomplete_tail_as_not_written_yet(tmp_path: Path) -> None:
    writer, problems = open_wal(tmp_path)
    writer.append({"n": 1}, {"n": 2})
    seg = segments(tmp_path)[0]
    whole = seg.read_bytes()
    half_written = threading.Event()

    def slow_append() -> None:
        # What a concurrent append looks like half-way, with the lock held meanwhile.
        with writer.locked():
            seg.write_bytes(whole[: len(whole) - 5])
            half_written.set()
            # until the reader waits for the lock, not for a time it may not have started in
            wait_until(lambda: asleep_in(os.getpid(), "lock_inode", any_thread=True),
                       "the reader to wait for the lock")
            seg.write_bytes(whole)

    t = threading.Thread(target=slow_append)
    t.start()
    half_written.wait()
    reader, reader_problems = open_wal(tmp_path)
    assert [r.pos for r in reader.records()] == [1, 2]  # waited on LOCK_SH for the rest
    t.join()
    assert problems == [] and reader_problems == []
    assert list(tmp_path.glob("damaged-*")) == []


@pytest.mark.parametrize(
    "field,at",
    [("magic", 0), ("length", 4), ("crc", 8), ("position", 12), ("payload", 25)],
)
def test_corrupt_middle_record_is_reported_once_and_skipped(
    tmp_path: Path, field: str, at: int
) -> None:
    wal, problems = open_wal(tmp_path)
    offsets = []
    for n in range(1, 6):
        offsets.append(segments(tmp_path)[0].stat().st_size if n > 1 else 0)
        wal.append({"type": "job:added", "n": n, "pad": "x" * 20})
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[offsets[2] + at] ^= 0x5A  # record 3
    seg.write_bytes(bytes(data))

    wal, problems = open_wal(tmp_path)
    assert [r.pos for r in wal.records()] == [1, 2, 4, 5]
    assert [r.event["n"] for r in wal.records()] == [1, 2, 4, 5]  # read twice: one report
    assert [(p.kind, p.pos, p.segment, p.offset) for p in problems] == [
        ("corrupt", 3, seg.name, offsets[2])
    ]
    report = wal.check()
    assert not report.ok
    assert [(p.kind, p.pos) for p in report.problems] == [("corrupt", 3)]
    assert report.records == 4 and report.last_pos == 5
    assert len(problems) == 1  # check() lists it without reporting it again
    assert wal.append({"n": 6}) == [6]  # the damage is not at the tail: appends go on
    assert [r.pos for r in wal.records(after=2)] == [4, 5, 6]


def test_corrupt_tail_of_a_closed_segment_is_skipped_not_truncated(tmp_path: Path) -> None:
    wal, problems = open_wal(tmp_path, segment_bytes=100)
    for n in range(6):
        wal.append({"n": n, "pad": "y" * 40})
    first = segments(tmp_path)[0]
    size = first.stat().st_size
    with open(first, "r+b") as f:
        f.seek(size - 3)
        f.write(b"\xff\xff\xff")
    assert [r.pos for r in wal.records()] == [1, 3, 4, 5, 6]
    assert wal.append({"n": 6}) == [7]
    assert [(p.kind, p.pos, p.segment) for p in problems] == [("corrupt", 2, first.name)]
    assert first.stat().st_size == size


def test_snapshot_roundtrip_compaction_and_replay(tmp_path: Path) -> None:
    def fold(state: dict, recs: list[Record]) -> dict:
        out = dict(state)
        for r in recs:
            out[str(r.pos)] = r.event["n"]
        return out

    wal, problems = open_wal(tmp_path)
    assert wal.load_snapshot() is None
    wal.append(*({"n": n} for n in range(1, 11)))
    state10 = fold({}, list(wal.records()))
    path = wal.save_snapshot(10, state10)
    assert path.name == "snapshot-0000000000000010.json"
    assert json.loads(path.read_text()) == {"pos": 10, "state": state10}
    assert wal.load_snapshot() == (10, state10)
    wal.append(*({"n": n} for n in range(11, 16)))
    wal.save_snapshot(15, fold({}, list(wal.records())))
    wal.append(*({"n": n} for n in range(16, 19)))
    assert [s.name for s in segments(tmp_path)] == [
        "seg-0000000000000001.wal",
        "seg-0000000000000011.wal",
        "seg-0000000000000016.wal",
    ]
    full = fold({}, list(wal.records()))

    # Only what the older snapshot (10) covers goes: if the newest turns out unreadable, the
    # fallback replays from 10. The tail always stays.
    assert wal.compact() == 1
    assert [s.name for s in segments(tmp_path)] == [
        "seg-0000000000000011.wal",
        "seg-0000000000000016.wal",
    ]
    pos, state = WalDirectory(tmp_path).load_snapshot()  # type: ignore[misc]
    assert pos == 15
    assert fold(state, list(WalDirectory(tmp_path).records(after=pos))) == full  # type: ignore[arg-type]
    assert wal.compact() == 0
    assert wal.append({"n": 19}) == [19]
    report = wal.check()
    assert report.ok and report.snapshot_pos == 15 and report.last_pos == 19
    assert problems == []

    for p in (16, 17, 18):  # only the newest two snapshots are kept
        wal.save_snapshot(p, {"p": p})
    assert sorted(s.name for s in tmp_path.glob("snapshot-*")) == [
        "snapshot-0000000000000017.json",
        "snapshot-0000000000000018.json",
    ]
    with pytest.raises(ValueError):
        wal.save_snapshot(99, {})


def test_corrupt_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path) -> None:
    wal, problems = open_wal(tmp_path)
    wal.append(*({"n": n} for n in range(1, 6)))
    wal.save_snapshot(3, {"upto": 3})
    newest = wal.save_snapshot(5, {"upto": 5})
    wal.append({"n": 6})
    newest.write_text('{"pos": 5, "state": {"upto"')  # cut short
    assert wal.load_snapshot() == (3, {"upto": 3})
    assert wal.load_snapshot() == (3, {"upto": 3})
    assert [(p.kind, p.pos, p.segment) for p in problems] == [("corrupt", 5, newest.name)]
    # Compaction trusts only the readable snapshot: positions 4.. stay replayable.
    wal.compact()
    assert [r.pos for r in wal.records(after=3)] == [4, 5, 6]
    report = WalDirectory(tmp_path).check()
    assert not report.ok and report.snapshot_pos == 3


def test_segment_rollover_keeps_positions_continuous(tmp_path: Path) -> None:
    a, problems = open_wal(tmp_path, segment_bytes=300)
    b = WalDirectory(tmp_path, segment_bytes=300)
    expected = []
    for i in range(60):
        w = a if i % 3 else b
        batch = [{"i": i, "k": k} for k in range(i % 4 + 1)]
        expected += batch
        w.append(*batch)
    recs = list(WalDirectory(tmp_path).records())
    assert [r.pos for r in recs] == list(range(1, len(expected) + 1))
    assert [r.event for r in recs] == expected
    segs = segments(tmp_path)
    assert len(segs) > 5
    firsts = [int(s.stem.split("-")[1]) for s in segs]
    by_pos = {r.pos for r in recs}
    assert all(f in by_pos for f in firsts)
    assert [r.pos for r in a.reader(after=firsts[3] - 1).read_new()][:1] == [firsts[3]]
    report = a.check()
    assert report.ok and report.segments == len(segs) and report.records == len(expected)
    assert problems == []


class Syncs:
    """Which files fdatasync was called on (a spy: the calls still happen)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        real = os.fdatasync

        def spy(fd: int) -> None:
            self.files.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        monkeypatch.setattr(os, "fdatasync", spy)

    def take(self) -> list[str]:
        files, self.files = self.files, []
        return files


def test_an_unsynced_append_is_seen_at_once_and_synced_by_the_next_synced_append(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = Syncs(monkeypatch)
    writer, other = WalDirectory(tmp_path), WalDirectory(tmp_path)
    writer.append({"n": 0})
    syncs.take()
    with writer.locked() as w:
        w.append({"n": 1}, sync=False)
    assert syncs.take() == []
    assert [r.event for r in other.records()] == [{"n": 0}, {"n": 1}]  # no sync needed
    other.append({"n": 2})  # another writer's sync writes the whole segment, ours included
    assert syncs.take() == [segments(tmp_path)[-1].name]


def test_a_new_segment_or_a_snapshot_first_syncs_what_was_appended_unsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = Syncs(monkeypatch)
    wal = WalDirectory(tmp_path, segment_bytes=200)
    wal.append({"n": 0})
    first = segments(tmp_path)[-1].name
    with wal.locked() as w:
        w.append({"pad": "x" * 250}, sync=False)  # fills the segment
    syncs.take()
    with wal.locked() as w:
        w.append({"n": 1}, sync=False)  # rolls to a new segment
    assert syncs.take()[:1] == [first]
    assert len(segments(tmp_path)) == 2
    with wal.locked() as w:
        pos = w.append({"n": 2}, sync=False)[0]
    syncs.take()
    wal.save_snapshot(pos, {"n": 2})
    assert syncs.take()[:1] == [segments(tmp_path)[-2].name]
