"""Serving HTTP for oj's on-demand services (``oj-metrics.socket``, ``oj-web.socket``): over
the listening sockets systemd passes (socket activation), or over an address given on the
command line in the foreground. Standard library only: ``http.server``'s threading server
over a socket made elsewhere, one thread per connection.

The interface an application plugs into::

    app(request: Request) -> Response | Stream

- ``Request``: ``method``, ``path`` (percent-decoded, without the query), ``query``
  (``{name: [values]}``), ``headers`` (case-insensitive ``.get``), ``body`` (bytes, at most
  ``MAX_BODY``), ``client`` (the peer's address) and ``closing``, a ``threading.Event`` set
  when the server stops.
- ``Response(status, body, content_type, headers)``: a whole answer, sent with its length.
- ``Stream(chunks, content_type, headers)``: an open answer (server-sent events): each bytes
  object of the iterable ``chunks`` is written and flushed as it comes, until the iterable
  ends, the client goes away (seen at the next write) or the server stops. A producer waits
  for news with ``request.closing.wait(timeout)`` and yields ``sse_comment()`` at least
  every ``KEEPALIVE`` seconds, so a client gone is noticed and a stop is not held up.
  ``sse(data, event=..., id=...)`` formats one event.
- ``HttpError(status, message)`` raised by a handler answers ``status`` with ``message``;
  any other exception is logged and answered 500.
- ``Routes`` is an app made of a route table: ``routes.add("GET", "/metrics", handler)``; a
  path ending in ``/`` serves every path under it; an unknown path is 404, another method
  405 with ``Allow``; ``HEAD`` is served by the ``GET`` handler without the body.

``serve(app, sockets, idle_timeout=...)`` runs until SIGTERM or SIGINT, or, with an idle
timeout, until that long has passed with no connection open (a request in flight or an open
stream both hold it): socket-activated services exit when nobody looks, and systemd, which
keeps the listening socket, starts them again at the next connection (the connection waits
in the socket's backlog meanwhile, so none is lost). ``activation_sockets()`` takes the
sockets systemd passed (sd_listen_fds(3)); ``listen(address)`` binds ``HOST:PORT``.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ojd import __version__
from ojd.errors import OjError

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
MAX_BODY = 1 << 20  # a form or a JSON action; nothing oj serves takes more
KEEPALIVE = 15.0  # seconds between a stream's writes at most (see the docstring)
CLIENT_TIMEOUT = 30.0  # a client that stalls a read or a write is dropped after this
DEFAULT_IDLE = 60.0  # a socket-activated service's idle time before it exits


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client: str
    closing: threading.Event


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    chunks: Iterable[bytes]
    content_type: str = "text/event-stream; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


App = Callable[[Request], "Response | Stream"]


class ErrorLog(Protocol):
    def error(self, message: str) -> None: ...


def sse(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """One server-sent event; each line of ``data`` becomes a ``data:`` line."""
    lines = [f"event: {event}"] if event else []
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str = "") -> bytes:
    """A comment line: ignored by the browser, it keeps the connection known to be open."""
    return f": {text}\n\n".encode()


class Routes:
    """A route table that is itself an app (see the module docstring)."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, App]] = {}
        self._prefix: list[tuple[str, dict[str, App]]] = []

    def add(self, method: str, path: str, handler: App) -> None:
        if path.endswith("/") and path != "/":
            table = next((t for p, t in self._prefix if p == path), None)
            if table is None:
                table = {}
                self._prefix.append((path, table))
                self._prefix.sort(key=lambda pt: -len(pt[0]))  # the longest prefix wins
        else:
            table = self._exact.setdefault(path, {})
        table[method.upper()] = handler

    def __call__(self, request: Request) -> Response | Stream:
        table = self._exact.get(request.path) or next(
            (t for p, t in self._prefix if request.path.startswith(p)), None)
        if table is None:
            return Response(404, b"not found\n")
        method = "GET" if request.method == "HEAD" else request.method
        handler = table.get(method)
        if handler is None:
            allow = sorted({*table, "HEAD"} if "GET" in table else table)
            return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allow)})
        return handler(request)


def activation_sockets(environ: dict[str, str] | None = None) -> list[tuple[str, socket.socket]]:
    """The listening sockets systemd passed this process, with their names
    (``FileDescriptorName=``, by default the socket unit's name), in the socket unit's
    order; none when it passed none. The variables are removed, as sd_listen_fds(1) does, so
    no child takes them for its own."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    found = []
    for n in range(int(count)):
        fd = LISTEN_FDS_START + n
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != socket.SOCK_STREAM or not listening:
            raise OjError(f"file descriptor {fd} passed by systemd is not a listening stream "
                          "socket; give the socket unit ListenStream= and Accept=no")
        found.append((names[n] if n < len(names) and names[n] else f"fd{fd}", sock))
    return found


def listen(address: str) -> socket.socket:
    """A socket listening on ``HOST:PORT`` (``[::1]:PORT`` for IPv6, ``:PORT`` for every
    address)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise OjError(f"cannot listen on {address!r}: give HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family)
    except OSError as e:
        raise OjError(f"cannot listen on {address}: {e.strerror or e}") from None


class _Activity:
    """Connections open and the time the last one closed: what the idle timeout reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._since = time.monotonic()

    def opened(self) -> None:
        with self._lock:
            self._open += 1

    def closed(self) -> None:
        with self._lock:
            self._open -= 1
            self._since = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._open else time.monotonic() - self._since


def _handler_class(app: App, activity: _Activity, closing: threading.Event,
                   log: ErrorLog | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a connection open is a request in flight
        # and a stream needs no chunked encoding
        server_version = f"oj/{__version__}"
        sys_version = ""
        timeout = CLIENT_TIMEOUT

        def handle(self) -> None:
            activity.opened()
            try:
                super().handle()
            finally:
                activity.closed()

        def log_message(self, format: str, *args: object) -> None:
            pass  # a line per request would fill the journal of a scraped service

        def _serve(self) -> None:
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding"):
                return self._send(Response(411, b"send the body with a Content-Length\n"))
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                return self._send(Response(413, b"request body too large\n"))
            body = self.rfile.read(int(length)) if length else b""
            url = urlsplit(self.path)
            peer = self.client_address  # a (host, port) pair, or a path on a Unix socket
            request = Request(self.command, unquote(url.path), parse_qs(url.query),
                              self.headers, body, peer[0] if isinstance(peer, tuple)
                              else "local", closing)
            try:
                answer = app(request)
            except HttpError as e:
                answer = Response(e.status, f"{e}\n".encode())
            except Exception as e:  # one failing page must not end the service
                if log is not None:
                    log.error(f"{self.command} {url.path}: {type(e).__name__}: {e}")
                answer = Response(500, b"internal error; see the service's log\n")
            if isinstance(answer, Stream):
                self._stream(answer)
            else:
                self._send(answer)

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def _stream(self, stream: Stream) -> None:
            chunks = iter(stream.chunks)
            try:
                self.send_response(200)
                self.send_header("Content-Type", stream.content_type)
                self.send_header("Cache-Control", "no-store")
                for name, value in stream.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.flush()
                for chunk in chunks:
                    if closing.is_set():
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except OSError:
                pass  # the client went away (a closed tab): the stream simply ends
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # a generator's finally runs now, not at garbage collection

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    return Handler


def serve(app: App, sockets: list[socket.socket], idle_timeout: float | None = None,
          log: ErrorLog | None = None) -> int:
    """Serve ``app`` on ``sockets`` until SIGTERM or SIGINT, or ``idle_timeout`` seconds
    with no connection open. Returns the exit status (0, or 130 after SIGINT)."""
    activity = _Activity()
    closing = threading.Event()
    handler = _handler_class(app, activity, closing, log)
    servers = []
    for sock in sockets:
        server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.daemon_threads = False
        server.block_on_close = True  # server_close() waits for the requests in flight
        servers.append(server)
    # the handlers only record; the loop below acts (within its half-second poll)
    received: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: received.append(n))
                for s in (signal.SIGTERM, signal.SIGINT)}
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.25},
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        while not received:
            if idle_timeout is not None and activity.idle_for() >= idle_timeout:
                break
            time.sleep(0.25)
    finally:
        closing.set()  # open streams end at their next chunk
        for server in servers:
            server.shutdown()  # nothing new is accepted; a waiting connection stays queued
        for server in servers:
            server.server_close()  # our copy of the socket; systemd keeps its own
        for s, h in previous.items():
            signal.signal(s, h)
    return 130 if signal.SIGINT in received else 0
