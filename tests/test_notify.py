"""What a worker tells its manager over the notify socket."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ojd.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield s
    s.close()


def test_a_status_with_a_newline_stays_one_assignment(notify_socket: socket.socket):
    """sd_notify reads one assignment per line: text in a status (a step or item name) must
    not add MAINPID= or WATCHDOG=trigger of its own."""
    n = Notifier()
    n.status("merge: job 1 step x\nMAINPID=1\nWATCHDOG=trigger")
    message = notify_socket.recv(4096).decode()
    assert message.count("\n") == 0 and message.startswith("STATUS=merge: job 1 step x")
    n.ready("ready\nMAINPID=1")
    lines = notify_socket.recv(4096).decode().splitlines()
    assert [ln.split("=")[0] for ln in lines] == ["READY", "STATUS", "MAINPID"]
    assert lines[2] != "MAINPID=1"
