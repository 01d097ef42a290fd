"""A small app over ojd.httpserve, run as its own process by tests/test_httpserve.py:
``httpserve_app.py IDLE_SECONDS [ADDRESS]`` serves ADDRESS, or the sockets systemd (or a
test standing in for it) passed."""

from __future__ import annotations

import sys

from ojd import httpserve
from ojd.errors import OjError
from ojd.notify import Log


def stream(request: httpserve.Request):
    n = 0
    while not request.closing.is_set():
        yield httpserve.sse(f"tick {n}", event="tick", id=str(n))
        n += 1
        request.closing.wait(0.2)


def boom(request: httpserve.Request) -> httpserve.Response:
    raise RuntimeError("this page is broken")


def echo(request: httpserve.Request) -> httpserve.Response:
    text = f"{request.method} {request.path} {request.query} {request.body.decode()}"
    return httpserve.Response(body=text.encode())


def teapot(request: httpserve.Request) -> httpserve.Response:
    raise httpserve.HttpError(418, "short and stout")


def main() -> int:
    routes = httpserve.Routes()
    routes.add("GET", "/hello", lambda r: httpserve.Response(body=b"hello\n"))
    routes.add("GET", "/stream", lambda r: httpserve.Stream(stream(r)))
    routes.add("GET", "/boom", boom)
    routes.add("GET", "/teapot", teapot)
    routes.add("POST", "/echo/", echo)
    idle = float(sys.argv[1])
    if len(sys.argv) > 2:
        sockets = [httpserve.listen(sys.argv[2])]
    else:
        try:
            sockets = [s for _, s in httpserve.activation_sockets()]
        except OjError as e:
            print(f"error: {e}", flush=True)
            return 1
    print("serving", flush=True)
    return httpserve.serve(routes, sockets, idle_timeout=idle or None, log=Log("app"))


if __name__ == "__main__":
    sys.exit(main())
