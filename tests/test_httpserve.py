"""ojd.httpserve: serving an app over a socket passed as systemd passes it, exiting when idle
(but never under an open stream), and the route table's answers."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from email.message import Message
from pathlib import Path

import pytest

from ojd import httpserve
from ojd.errors import OjError

APP = str(Path(__file__).with_name("httpserve_app.py"))


def activated(sock: socket.socket, idle: float) -> subprocess.Popen[str]:
    """The app with ``sock`` passed as fd 3 and LISTEN_* set, as systemd starts a service."""
    fd = sock.fileno()
    script = (f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web '
              'exec "$0" "$@"')
    proc = subprocess.Popen(["bash", "-c", script, sys.executable, APP, str(idle)],
                            pass_fds=[fd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first == "serving\n", first + proc.stdout.read()
    return proc


def get(port: int, path: str, method: str = "GET", body: bytes | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_exit(proc: subprocess.Popen[str], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture
def listening():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def procs():
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_activated_app_answers_and_survives_a_failing_page(listening, procs):
    port = listening.getsockname()[1]
    procs.append(activated(listening, 0))
    assert get(port, "/hello")[::2] == (200, b"hello\n")
    status, _, body = get(port, "/boom")
    assert status == 500 and b"internal error" in body
    assert get(port, "/teapot")[::2] == (418, b"short and stout\n")
    status, _, body = get(port, "/echo/a%20b?x=1&x=2", "POST", b"payload")
    assert (status, body) == (200, b"POST /echo/a b {'x': ['1', '2']} payload")
    assert get(port, "/hello")[0] == 200  # still serving after the failure
    status, headers, body = get(port, "/hello", "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "6")


def test_idle_service_exits_and_a_connection_meanwhile_waits_for_the_next_start(
        listening, procs):
    port = listening.getsockname()[1]
    started = time.monotonic()
    proc = activated(listening, 1)
    procs.append(proc)
    assert get(port, "/hello")[0] == 200
    assert wait_exit(proc, 10) == 0
    assert time.monotonic() - started >= 1
    # the socket stays with its holder (systemd): a client connecting now is queued and
    # answered by the next start
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
    procs.append(activated(listening, 1))
    answer = b""
    while chunk := client.recv(4096):
        answer += chunk
    client.close()
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"hello\n")


def test_an_open_stream_keeps_an_idle_service_up_until_it_closes(listening, procs):
    port = listening.getsockname()[1]
    proc = activated(listening, 0.5)
    procs.append(proc)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    events = []
    deadline = time.monotonic() + 2  # four times the idle time
    while time.monotonic() < deadline:
        line = resp.readline()
        if line.startswith(b"data: "):
            events.append(line)
    assert proc.poll() is None
    assert events[:2] == [b"data: tick 0\n", b"data: tick 1\n"]
    resp.close()
    conn.close()  # the next writes fail, the stream ends, and idleness starts
    assert wait_exit(proc, 10) == 0


def test_sigterm_ends_open_streams_and_exits_zero(listening, procs):
    port = listening.getsockname()[1]
    proc = activated(listening, 0)
    procs.append(proc)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.readline().startswith(b"event: tick")
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 10) == 0
    rest = resp.read()  # the server closed the stream: read returns, it does not hang
    assert isinstance(rest, bytes)
    conn.close()


def test_foreground_address_is_served(procs):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([sys.executable, APP, "0", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "serving\n"
    assert get(port, "/hello")[::2] == (200, b"hello\n")
    proc.send_signal(signal.SIGINT)
    assert wait_exit(proc, 10) == 130


def test_a_passed_socket_that_is_not_listening_is_refused_in_one_line(procs):
    left, right = socket.socketpair()
    fd = left.fileno()
    script = f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"'
    proc = subprocess.run(["bash", "-c", script, sys.executable, APP, "0"], pass_fds=[fd],
                          capture_output=True, text=True, timeout=30)
    left.close()
    right.close()
    assert proc.returncode == 1
    assert proc.stdout == ("error: file descriptor 3 passed by systemd is not a listening "
                           "stream socket; give the socket unit ListenStream= and "
                           "Accept=no\n")


def test_activation_variables_for_another_process_pass_nothing_and_are_removed():
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert httpserve.activation_sockets(env) == []
    assert env == {}


@pytest.mark.parametrize("address", ["9464", "localhost:http", "127.0.0.1:0", "h:70000"])
def test_listen_names_the_address_it_cannot_use(address):
    with pytest.raises(OjError, match=f"cannot listen on '{address}': give HOST:PORT"):
        httpserve.listen(address)


def request(method: str, path: str) -> httpserve.Request:
    return httpserve.Request(method, path, {}, Message(), b"", "127.0.0.1", threading.Event())


def test_routes_answer_by_path_and_method():
    routes = httpserve.Routes()
    routes.add("GET", "/metrics", lambda r: httpserve.Response(body=b"m"))
    routes.add("GET", "/job/", lambda r: httpserve.Response(body=r.path.encode()))
    routes.add("POST", "/job/", lambda r: httpserve.Response(201))
    routes.add("GET", "/job/special/", lambda r: httpserve.Response(body=b"special"))
    assert routes(request("GET", "/metrics")).body == b"m"
    assert routes(request("HEAD", "/metrics")).body == b"m"  # the server drops the body
    assert routes(request("GET", "/job/abc")).body == b"/job/abc"
    assert routes(request("GET", "/job/special/x")).body == b"special"
    assert routes(request("POST", "/job/abc")).status == 201
    assert routes(request("GET", "/nothing")).status == 404
    refused = routes(request("DELETE", "/metrics"))
    assert refused.status == 405 and refused.headers == {"Allow": "GET, HEAD"}


def test_sse_formats_each_line_of_data():
    assert httpserve.sse("a\nb", event="log", id="7") == b"event: log\nid: 7\ndata: a\ndata: b\n\n"
    assert httpserve.sse_comment("keepalive") == b": keepalive\n\n"
