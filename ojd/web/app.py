"""The dashboard's routes: the page (``/``), a job's page (``/job/ID``), their live
updates (``/events``, server-sent events), its assets, and the actions (``POST
/api/...``). Served by the shared HTTP server: ``oj web`` in the foreground, or
``oj-web.socket`` / ``oj-web.service`` on demand."""

from __future__ import annotations

import json
import os
import time

from ojd import httpserve
from ojd.duration import DurationError, parse_duration
from ojd.errors import OjError
from ojd.httpserve import HttpError, Request, Response, Routes, Stream, sse, sse_comment
from ojd.notify import Log
from ojd.store import Store
from ojd.systemd import Systemd
from ojd.web import actions, html, view
from ojd.web.changes import ChangeFeed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
ASSETS = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}
RERENDER_EVERY = 2.0  # seconds: what the log does not tell (unit states) shows this late
KEEPALIVE = httpserve.KEEPALIVE
# no page of another site may frame this one or read what it sends; no referrer leaks a
# token in a URL
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store"}


class Dashboard:
    """The app: holds the store (kept caught up), its change feed and recorded events."""

    def __init__(self, store: Store, systemd: Systemd | None = None) -> None:
        self.store = store
        self.systemd = systemd
        self.feed = ChangeFeed(store)
        self.recorded = view.Recorded(store)
        self.routes = Routes()
        self.routes.add("GET", "/", self.index)
        self.routes.add("GET", "/job/", self.job)
        self.routes.add("GET", "/events", self.events)
        self.routes.add("GET", "/static/", self.static)
        self.routes.add("POST", "/api/", self.action)

    def start(self) -> None:
        self.store.load()
        self.feed.start()

    def __call__(self, request: Request) -> Response | Stream:
        return self.routes(request)

    # -- pages

    def _dashboard_html(self) -> str:
        now = time.time()
        with self.store.lock:  # the state must not move under the listing
            self.store.refresh()
            history = self.recorded.catch_up(now)
            return html.dashboard(view.dashboard(self.store, history, self.systemd, now))

    def _job_html(self, job_id: str) -> str | None:
        with self.store.lock:
            self.store.refresh()
            history = self.recorded.catch_up(time.time())
            data = view.job_page(self.store, history, job_id)
            return None if data is None else html.job(data)

    def index(self, request: Request) -> Response:
        return _page(html.page(f"oj · {self.store.root}", self._dashboard_html(),
                               "/events"))

    def job(self, request: Request) -> Response:
        job_id = request.path[len("/job/"):]
        body = self._job_html(job_id)
        if body is None:
            raise HttpError(404, f"no job {job_id} in this state dir")
        return _page(html.page(f"oj · job {job_id}", body, f"/events?job={job_id}"))

    def events(self, request: Request) -> Stream:
        job_id = (request.query.get("job") or [None])[0]
        render = (lambda: self._job_html(job_id) or "") if job_id else self._dashboard_html
        return Stream(self._stream(request, render), headers={"Cache-Control": "no-store"})

    def _stream(self, request: Request, render) -> Iterator[bytes]:
        """An update whenever the rendered part changes: on each change the feed reports,
        and every RERENDER_EVERY seconds; a comment at least every KEEPALIVE seconds."""
        yield b"retry: 1000\n\n"
        seen, last, quiet = -1, None, time.monotonic()
        while not request.closing.is_set():
            seen = self.feed.wait(seen, RERENDER_EVERY)
            text = render()
            if text != last:
                last, quiet = text, time.monotonic()
                yield sse(text, event="update")
            elif time.monotonic() - quiet >= KEEPALIVE:
                quiet = time.monotonic()
                yield sse_comment("still here")

    def static(self, request: Request) -> Response:
        name = request.path[len("/static/"):]
        if name not in ASSETS:
            raise HttpError(404, "no such file")
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            return Response(200, f.read(), ASSETS[name], {"Cache-Control": "max-age=3600"})

    # -- actions

    def action(self, request: Request) -> Response:
        """``POST /api/jobs/ID/cancel``, ``/api/jobs/ID/answer`` (``{"message": ...}``),
        ``/api/decisions/ID/resolve`` (``{"option": N, "message": ...}``),
        ``/api/items/ID/retry``; JSON in, ``{"ok": ..., "message": ...}`` out."""
        if not actions.same_origin(request.headers.get("Origin"), request.headers.get("Host")):
            return _json(403, False, "refused: the request comes from another site's page")
        try:
            actions.check_token(self.store.root, actions.sent_token(
                request.headers.get("Authorization"), (request.query.get("token") or [None])[0]))
        except actions.Refused as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
            return _json(e.status, False, str(e), headers)
        parts = request.path.strip("/").split("/")  # api, jobs|items, ID, verb
        if len(parts) != 4:
            return _json(404, False, "no such action")
        _, kind, ident, verb = parts
        try:
            body = json.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return _json(400, False, "send a JSON object")
        try:
            if (kind, verb) == ("jobs", "cancel"):
                message = actions.cancel(self.store, ident)
            elif (kind, verb) == ("jobs", "answer"):
                message = actions.answer(self.store, ident, str(body.get("message") or ""))
            elif (kind, verb) == ("decisions", "resolve"):
                message = actions.resolve(self.store, ident, body.get("option"),
                                          body.get("message"))
            elif (kind, verb) == ("items", "retry"):
                item = self.store.refresh().items.get(ident)
                if item is None:
                    return _json(404, False, f"no item with id {ident}")
                message = actions.retry(self.store, item["project"], item["queue"], ident)
            else:
                return _json(404, False, "no such action")
        except OjError as e:
            return _json(409, False, str(e))
        self.feed.bump()  # the page shows the outcome at once
        return _json(200, True, message)


def _page(text: str) -> Response:
    return Response(200, text.encode(), "text/html; charset=utf-8", dict(PAGE_HEADERS))


def _json(status: int, ok: bool, message: str, headers: dict | None = None) -> Response:
    body = json.dumps({"ok": ok, "message": message}).encode()
    return Response(status, body, "application/json", headers or {})


IDLE_ENV = "OJ_IDLE_TIMEOUT"  # the unit's idle time (a drop-in may change it)


def idle_time(text: str | None) -> float | None:
    """``text`` or ``$OJ_IDLE_TIMEOUT`` as seconds ("90s", "5m"), None when neither is set."""
    text = text or os.environ.get(IDLE_ENV)
    if not text:
        return None
    try:
        return parse_duration(text)
    except DurationError as e:
        raise OjError(f"idle timeout {text!r}: {e}") from None


def run_service(listen: str | None, idle_timeout: str | None) -> int:
    """``ojd web``: on the sockets systemd passed (exiting when idle), else on ``listen``."""
    idle = idle_time(idle_timeout)
    activated = [sock for _name, sock in httpserve.activation_sockets()]
    if activated:
        sockets = activated
        idle = httpserve.DEFAULT_IDLE if idle is None else idle
    elif listen:
        sockets = [httpserve.listen(listen)]
    else:
        raise OjError("no socket to serve on: run from oj-web.socket, or give --listen "
                      "HOST:PORT")
    log = Log("web")
    store = Store()
    log.info(f"serving the dashboard of {store.root}")
    return serve(store, sockets, idle, log)


def serve(store: Store, sockets: list, idle_timeout: float | None, log=None,
          say: Callable[[str], None] | None = None) -> int:
    app = Dashboard(store, Systemd())
    app.start()
    (say or (log.info if log is not None else print))(f"live updates from {app.feed.how}")
    try:
        return httpserve.serve(app, sockets, idle_timeout=idle_timeout, log=log)
    finally:
        app.feed.close()
