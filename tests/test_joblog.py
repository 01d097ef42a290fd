"""A job log's cap (ojd.runners.joblog): head and tail kept, one line saying what was cut,
while a step goes on appending; in place where the file system collapses a range (ext4,
XFS), by a copy of the tail elsewhere (tmpfs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require, wait_until

from ojd.errors import OjError
from ojd.runners import joblog

LIMIT = 256 << 10
MARKER = re.compile(rb"==> oj: (\d+) bytes of this log were cut \(job_log_limit = "
                    rb"(\w+)\) *\n")


def lines(first: int, count: int) -> bytes:
    """Numbered lines of varied lengths (a cut must find their ends)."""
    return b"".join(b"%08d %s\n" % (i, b"x" * (i * 37 % 151)) for i in range(first,
                                                                              first + count))


def numbers(text: bytes) -> list[int]:
    return [int(line[:8]) for line in text.splitlines()]


def split(log: bytes) -> tuple[bytes, int, bytes]:
    """The head, the count the one marker line gives, the tail. The head ends with its
    line end when it was cut at one, else a newline before the marker is the marker's."""
    [m] = MARKER.finditer(log)
    return log[:m.start()], int(m[1]), log[m.end():]


def check(log: bytes, written: bytes, limit: int = LIMIT) -> tuple[bytes, bytes]:
    """The log is ``written`` less one middle part, which its marker counts exactly."""
    assert len(log) <= limit
    head, cut, tail = split(log)
    if not written.startswith(head):  # the marker's own newline: a line cut mid-way
        assert head.endswith(b"\n")
        head = head[:-1]
    assert written.startswith(head) and written.endswith(tail)
    assert cut == len(written) - len(head) - len(tail)
    # about half of the limit each (the tail leaves room to grow before the next cut)
    assert limit // 2 - 4096 - 1200 <= len(head) <= limit // 2
    assert limit // 2 - limit // 16 - 4096 - 1200 <= len(tail) <= limit // 2
    return head, tail


@pytest.fixture
def collapses(monkeypatch) -> list[bool]:
    """What each attempt at collapsing a range answered."""
    seen: list[bool] = []
    real = joblog._collapse

    def spy(fd: int, offset: int, length: int) -> bool:
        seen.append(real(fd, offset, length))
        return seen[-1]

    monkeypatch.setattr(joblog, "_collapse", spy)
    return seen


def _scratch(where: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="oj-joblog-", dir=where))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def disk() -> Iterator[Path]:
    """A directory on a disk's file system (tmp_path may be a tmpfs) that collapses ranges."""
    for path in _scratch("/var/tmp"):
        probe = path / "probe"
        probe.write_bytes(b"x" * (1 << 20))
        fd = os.open(probe, os.O_RDWR)
        try:
            block = os.fstat(fd).st_blksize
            ok = joblog._collapse(fd, block, block)
        finally:
            os.close(fd)
        # justified: a machine whose /var/tmp is on a file system without the call
        # (btrfs, tmpfs) tests the copy only; CI's (ext4) fails instead
        require(ok, "the file system of /var/tmp cannot collapse a range")
        yield path


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    # justified: /dev/shm is a tmpfs on any systemd machine; skipped elsewhere, CI fails
    require(os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK),
            "no writable /dev/shm (a tmpfs)")
    yield from _scratch("/dev/shm")


@pytest.fixture(params=["collapse", "copy"])
def mode(request, disk: Path, collapses: list[bool]):
    """A log on a disk, cut in place (collapse) or by the copy of its tail."""
    return disk / "job.log", request.param == "collapse", collapses


def test_a_log_within_its_limit_is_left_alone(disk: Path):
    log = disk / "job.log"
    log.write_bytes(lines(0, 100))
    assert not joblog.cap(str(log), LIMIT)
    assert not joblog.cap(str(log), 0) and not joblog.cap(str(log), None)
    assert not joblog.cap(str(disk / "none.log"), LIMIT)
    assert log.read_bytes() == lines(0, 100)


def test_a_log_past_its_limit_keeps_head_and_tail(mode):
    log, collapse, collapses = mode
    written = lines(0, 20000)  # ~1.6 MB
    log.write_bytes(written)
    assert joblog.cap(str(log), LIMIT, collapse=collapse)
    assert collapses == ([True] if collapse else [])
    head, tail = check(log.read_bytes(), written)
    assert head.endswith(b"\n") and tail.startswith(b"000")  # cut at line ends
    assert numbers(head)[0] == 0 and numbers(tail)[-1] == 19999
    assert MARKER.search(log.read_bytes())[2] == b"256k"  # type: ignore[index]


def test_later_cuts_keep_the_same_head_and_count_every_cut_byte(mode):
    log, collapse, collapses = mode
    written = b""
    for n in range(5):
        more = lines(n * 7000, 7000)
        with open(log, "ab") as f:
            f.write(more)
        written += more
        assert joblog.cap(str(log), LIMIT, collapse=collapse)
        head, _ = check(log.read_bytes(), written)
    assert collapses == ([True] * 5 if collapse else [])
    assert numbers(head)[0] == 0 and numbers(log.read_bytes().splitlines()[-1])[0] == 34999


def test_a_line_too_long_to_end_near_the_cut_is_cut_with_the_marker_on_its_own_line(mode):
    log, collapse, collapses = mode
    written = b"a" * (1 << 20) + b"\nlast\n"
    log.write_bytes(written)
    assert joblog.cap(str(log), LIMIT, collapse=collapse)
    text = log.read_bytes()
    check(text, written)
    assert b"a\n==> oj: " in text and text.endswith(b"a\nlast\n")


def test_where_a_range_cannot_be_collapsed_the_tail_is_copied(tmpfs: Path,
                                                               collapses: list[bool]):
    log = tmpfs / "job.log"
    written = lines(0, 20000)
    log.write_bytes(written)
    assert joblog.cap(str(log), LIMIT)
    assert collapses == [False]  # tmpfs: EOPNOTSUPP
    check(log.read_bytes(), written)


WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
i = 0
while not os.path.exists(sys.argv[2]):
    for _ in range(500):
        os.write(fd, b"%08d %s\n" % (i, b"x" * (i * 37 % 151)))
        i += 1
print(i)
"""


@pytest.mark.parametrize("collapse", [True, False], ids=["collapse", "copy"])
def test_a_log_a_step_keeps_appending_to_is_capped_again_and_again(disk: Path,
                                                                   collapse: bool,
                                                                   monkeypatch):
    if not collapse:
        monkeypatch.setattr(joblog, "_collapse", lambda fd, offset, length: False)
    log, stop = disk / "job.log", disk / "stop"
    log.write_bytes(b"")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    cuts = []

    def cut() -> bool:  # as the job runner does, between its looks at the step
        if joblog.cap(str(log), LIMIT):
            cuts.append(1)
        return len(cuts) >= 5

    try:
        wait_until(cut, "five cuts while the writer writes")
        stop.touch()
        count = int(writer.communicate(timeout=30)[0])
        joblog.cap(str(log), LIMIT)  # the last look, once the step has ended
    finally:
        writer.kill()
        writer.wait()
    text = log.read_bytes()
    assert len(text) <= LIMIT
    head, cut, tail = split(text)
    assert numbers(head)[:3] == [0, 1, 2] and numbers(tail)[-1] == count - 1
    if collapse:  # nothing lost: the lines kept are the first and the last, the rest counted
        check(text, lines(0, count))
    else:  # a line written in the instant before a truncate is lost
        kept = numbers(head) + numbers(tail)
        assert len(set(kept)) == len(kept)
        missing = sum(len(lines(i, 1)) for i in set(range(count)) - set(kept))
        assert 0 <= missing - cut < missing // 10  # the marker counts all but those few


def test_no_limit_cuts_nothing(disk: Path):
    log = disk / "job.log"
    log.write_bytes(lines(0, 20000))
    for limit in (0, None):
        assert not joblog.cap(str(log), limit)
    assert log.read_bytes() == lines(0, 20000)


def test_the_limit_comes_from_the_state_dirs_oj_conf(tmp_path: Path):
    assert joblog.limit_for(str(tmp_path)) == 64 << 20
    for text, limit in (("1M", 1 << 20), ("512k", 512 << 10), ("0", 0), ("100000", 100000)):
        (tmp_path / "oj.conf").write_text(f"job_log_limit = {text}\n")
        assert joblog.limit_for(str(tmp_path)) == limit
    (tmp_path / "oj.conf").write_text("job_log_limit = lots\n")
    with pytest.raises(OjError, match=r"oj.conf:1: job_log_limit: invalid size"):
        joblog.limit_for(str(tmp_path))


def test_a_step_printing_without_end_leaves_a_log_within_the_cap(tmp_path):
    """The job runner caps the log while the step writes it: head, tail and the cut said."""
    from conftest import Project  # the CLI's fixtures: this file is mostly a unit test

    project = Project(tmp_path / "project", tmp_path / "state")
    project.state.mkdir(parents=True)
    (project.state / "oj.conf").write_text("job_log_limit = 64k\n")
    project.write("t.hcl", r"""
        command "go" {
          run = { pipeline = "p" }
        }
        pipeline "p" {
          step "loud" {
            run = "echo first; seq 1 2000000; echo last"
          }
        }
        """)
    project.oj("run", "--detach", "go")
    [job] = project.json("job", "list")
    wait_until(lambda: project.json("job", "show", job["id"])["status"] == "done",
               "the job to end", timeout=60)
    log = (project.state / "logs" / f"{job['id']}.log").read_bytes()
    assert len(log) <= 64 * 1024 + 8192
    assert b"\nfirst\n1\n2\n" in log
    assert b"\nlast\n" in log[-4096:]
    assert b"bytes of this log were cut (job_log_limit" in log
