"""``oj-metrics.service`` (``ojd metrics``) and ``oj metrics --listen``: ``/metrics`` over HTTP.

The service keeps one store caught up between scrapes, so a scrape reads only what was
appended since the last one rather than loading the whole state again. It only reads: a
state dir that does not exist yet is served as an empty state, not created.
"""

from __future__ import annotations

import os
import threading
import time

from ojd import httpserve, paths
from ojd.duration import parse_duration
from ojd.errors import OjError
from ojd.metrics import OPENMETRICS_TYPE, PROMETHEUS_TYPE, families, render
from ojd.notify import Log
from ojd.state import State
from ojd.store import Store

IDLE_ENV = "OJ_IDLE_TIMEOUT"  # how long the socket-activated service waits for a request


class MetricsSource:
    """The state of one state dir, kept caught up, as exposition text."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or paths.state_dir()
        self._store: Store | None = None
        self._lock = threading.Lock()

    def state(self) -> State:
        if self._store is None:
            if not (os.path.lexists(self.root) or os.environ.get("OJ_STATE_URL")):
                return State()  # nothing recorded yet; a reader does not create the dir
            self._store = Store(self.root)
            return self._store.load()
        return self._store.refresh()

    def text(self, openmetrics: bool, now: float | None = None) -> str:
        with self._lock:  # one scrape at a time folds the log; the state is not shared
            state = self.state()
            return render(families(state, time.time() if now is None else now), openmetrics)


def wants_openmetrics(accept: str | None) -> bool:
    """Whether a scraper's Accept header asks for OpenMetrics (Prometheus does; curl and
    older scrapers get text format 0.0.4)."""
    return "application/openmetrics-text" in (accept or "")


def app(source: MetricsSource) -> httpserve.Routes:
    def metrics(request: httpserve.Request) -> httpserve.Response:
        openmetrics = wants_openmetrics(request.headers.get("Accept"))
        try:
            text = source.text(openmetrics)
        except OjError as e:  # a store out of reach: the scrape fails, the service stays
            raise httpserve.HttpError(503, str(e)) from None
        return httpserve.Response(
            body=text.encode("utf-8", "backslashreplace"),
            content_type=OPENMETRICS_TYPE if openmetrics else PROMETHEUS_TYPE)

    def index(request: httpserve.Request) -> httpserve.Response:
        return httpserve.Response(body=b"oj metrics: see /metrics\n")

    routes = httpserve.Routes()
    routes.add("GET", "/metrics", metrics)
    routes.add("GET", "/", index)
    return routes


def idle_timeout(text: str | None = None) -> float:
    """The idle time of a socket-activated service: ``text``, else ``$OJ_IDLE_TIMEOUT``, else
    a minute."""
    text = text or os.environ.get(IDLE_ENV)
    if not text:
        return httpserve.DEFAULT_IDLE
    try:
        return parse_duration(text)
    except OjError as e:
        raise OjError(f"idle timeout: {e}") from None


def serve(listen: str | None = None, idle: str | None = None) -> int:
    """Serve ``/metrics`` on ``listen`` (HOST:PORT), or on the sockets systemd passed, then
    exiting after the idle time."""
    log = Log("metrics")
    if listen is not None:
        timeout = idle_timeout(idle) if idle else None  # by hand: until Ctrl-C
        sockets = [httpserve.listen(listen)]
    else:
        timeout = idle_timeout(idle)
        sockets = [sock for _, sock in httpserve.activation_sockets()]
        if not sockets:
            raise OjError("no socket to serve: start oj-metrics.socket, or give --listen "
                          "HOST:PORT (e.g. 127.0.0.1:9464)")
    return httpserve.serve(app(MetricsSource()), sockets, idle_timeout=timeout, log=log)
