"""A stand-in for the shared HTTP server module, with its interface (Request, Response,
Stream, Routes, sse, listen, serve), for the foreground server only. Goes once
``ojd.httpserve`` is in."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from ojd.errors import OjError


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: object
    body: bytes
    client: str
    closing: threading.Event


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict = field(default_factory=dict)


@dataclass
class Stream:
    chunks: object
    content_type: str = "text/event-stream; charset=utf-8"
    headers: dict = field(default_factory=dict)


def sse(data: str, event: str | None = None, id: str | None = None) -> bytes:
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str = "") -> bytes:
    return f": {text}\n\n".encode()


class Routes:
    def __init__(self) -> None:
        self._routes: list[tuple[str, str, object]] = []

    def add(self, method: str, path: str, handler) -> None:
        self._routes.append((method, path, handler))

    def __call__(self, request: Request):
        for method, path, handler in sorted(self._routes, key=lambda r: -len(r[1])):
            under = path.endswith("/") and path != "/" and request.path.startswith(path)
            if (request.path == path or under) and method == request.method:
                return handler(request)
        return Response(404, b"not found\n")


DEFAULT_IDLE = 60.0


def activation_sockets() -> list:
    return []  # the shared module takes systemd's sockets


def listen(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    try:
        return socket.create_server((host.strip("[]"), int(port)))
    except (OSError, ValueError) as e:
        raise OjError(f"cannot listen on {address}: {e}") from None


def serve(app, sockets: list[socket.socket], idle_timeout: float | None = None,
          log=None) -> int:
    closing = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urlsplit(self.path)
            req = Request(self.command, unquote(url.path), parse_qs(url.query), self.headers,
                          body, self.client_address[0], closing)
            try:
                answer = app(req)
            except HttpError as e:
                answer = Response(e.status, f"{e}\n".encode())
            self.send_response(getattr(answer, "status", 200))
            self.send_header("Content-Type", answer.content_type)
            for k, v in answer.headers.items():
                self.send_header(k, v)
            if isinstance(answer, Stream):
                self.end_headers()
                try:
                    for chunk in answer.chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:
                    pass
                return
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = _serve

    server = ThreadingHTTPServer(sockets[0].getsockname(), Handler, bind_and_activate=False)
    server.socket = sockets[0]
    server.daemon_threads = True
    try:
        server.serve_forever(0.25)
    except KeyboardInterrupt:
        return 130
    finally:
        closing.set()
    return 0
