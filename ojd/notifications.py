"""Notifications that reach a person: each ``notify`` message of a job and each new decision,
sent to what the person configured, never holding up a step.

Where they go (any of them, each independent of the others):

* ``exec``: a command (``bash -c``) given the event as JSON on stdin;
* ``webhook``: an HTTP POST of the same JSON, tried again with a backoff;
* ``desktop``: ``org.freedesktop.Notifications.Notify`` on the user's session bus, through
  ``busctl --user`` (systemd's own client: nothing to install). On by default for a user's
  processes with a session bus; ``notify_desktop = yes|no`` decides otherwise.

Configured in the state dir's ``oj.conf`` (``notify_exec``, ``notify_webhook``,
``notify_desktop``, ``notify_timeout``) for every project, and per pipeline in the runbook's
``notify { exec = ..., webhook = ... }``; both apply. Each delivery runs in a thread of its
own with a timeout; a failure is a line in the journal (stderr), never the job's.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from ojd import conf
from ojd.errors import OjError
from ojd.identity import host_name
from ojd.notify import Log

DEFAULT_TIMEOUT = 10.0  # seconds a delivery may take (each attempt of a webhook)
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF = 1.0  # seconds before the second attempt; doubled for each one after
DESKTOP_EXPIRE_MS = -1  # the notification server's default


@dataclass(frozen=True)
class Targets:
    execs: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    desktop: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def __bool__(self) -> bool:
        return bool(self.execs or self.webhooks or self.desktop)


def _session_bus() -> bool:
    """A session bus to reach: its address set, or the user manager's socket there."""
    if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return os.path.exists(os.path.join(runtime, "bus"))


def targets(root: str, pipeline_notify: dict[str, str] | None = None) -> Targets:
    """What ``oj.conf`` of state dir ``root`` and a pipeline's ``notify`` block configure. A
    value that does not parse is an OjError naming its line."""
    values = conf.read(root)

    def get(key: str) -> str:
        return values.get(key, (0, ""))[1]

    execs = [v for v in (get("notify_exec"), (pipeline_notify or {}).get("exec")) if v]
    hooks = [v for v in (get("notify_webhook"), (pipeline_notify or {}).get("webhook")) if v]
    for url in hooks:
        if not url.startswith(("http://", "https://")):
            raise OjError(f"notify webhook {url!r} is not an http:// or https:// URL")
    desktop = get("notify_desktop").lower()
    if desktop not in ("", "yes", "no", "true", "false", "1", "0"):
        line = values["notify_desktop"][0]
        raise OjError(f"{os.path.join(root, conf.CONFIG_FILE)}:{line}: notify_desktop: "
                      f"{desktop!r}; use yes or no")
    on = desktop in ("yes", "true", "1") or (desktop == "" and os.geteuid() != 0
                                             and _session_bus())
    timeout = conf.duration(root, "notify_timeout") or DEFAULT_TIMEOUT
    return Targets(tuple(dict.fromkeys(execs)), tuple(dict.fromkeys(hooks)), on, timeout)


def payload(kind: str, job: dict, title: str, message: str, **extra: object) -> dict:
    """The JSON every target gets: ``kind`` ("notify" or "decision"), the job, a title and
    the message, and what the kind adds (the decision with its options)."""
    return {"kind": kind, "title": title, "message": message, "job": job["id"],
            "job_name": job.get("name"), "pipeline": job.get("pipeline"),
            "project": job.get("project"), "host": host_name(), "ts": time.time(), **extra}


class Dispatcher:
    """Sends each payload to the targets in threads; ``wait`` gives them a bounded time
    to finish before the process that sent them exits (a job process ends with its job)."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self._threads: list[threading.Thread] = []
        self._say = say or Log("oj-notify").warning

    def send(self, event: dict, to: Targets) -> None:
        body = json.dumps(event, ensure_ascii=False).encode()
        jobs: list[tuple[str, Callable[[], None]]] = []
        jobs += [(f"exec {cmd!r}", lambda c=cmd: run_exec(c, body, to.timeout))
                 for cmd in to.execs]
        jobs += [(f"webhook {url}", lambda u=url: post(u, body, to.timeout))
                 for url in to.webhooks]
        if to.desktop:
            jobs.append(("desktop notification",
                         lambda: desktop(event["title"], event["message"], to.timeout)))
        self._threads = [t for t in self._threads if t.is_alive()]
        for what, deliver in jobs:
            thread = threading.Thread(target=self._deliver, args=(what, deliver),
                                      name="notify", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _deliver(self, what: str, deliver: Callable[[], None]) -> None:
        try:
            deliver()
        except Exception as e:  # a person not reached is said, never the job's failure
            self._say(f"notification not delivered: {what}: {e}")

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def run_exec(command: str, body: bytes, timeout: float) -> None:
    try:
        proc = subprocess.run(["bash", "-c", command], input=body, timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        raise OjError(f"still running after {timeout:g}s; stopped") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise OjError(f"exit {proc.returncode}" + (f": {err[0]}" if err else ""))


def post(url: str, body: bytes, timeout: float, attempts: int = WEBHOOK_ATTEMPTS,
         backoff: float = WEBHOOK_BACKOFF) -> None:
    """POST ``body`` as JSON; a connection error, a timeout or a 5xx/429 answer is tried
    again after ``backoff`` seconds, doubled each time; a 4xx other than 429 is not."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "oj-notify"})
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                answer.read()
            return
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code}"
            if e.code < 500 and e.code != 429:
                raise OjError(why) from None
        except (urllib.error.URLError, OSError) as e:
            why = str(getattr(e, "reason", e))
        if attempt == attempts:
            raise OjError(f"{why} ({attempts} attempts)")
        time.sleep(backoff * 2 ** (attempt - 1))


def desktop(title: str, message: str, timeout: float) -> None:
    """``Notify`` on the session bus (susssasa{sv}i: app, replaces id, icon, summary,
    body, actions, hints, expiry)."""
    argv = ["busctl", "--user", f"--timeout={max(1, int(timeout))}", "--", "call",
            "org.freedesktop.Notifications", "/org/freedesktop/Notifications",
            "org.freedesktop.Notifications", "Notify", "susssasa{sv}i", "oj", "0", "",
            title, message, "0", "0", str(DESKTOP_EXPIRE_MS)]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout + 1)
    except subprocess.TimeoutExpired:
        raise OjError(f"no answer from the session bus in {timeout:g}s") from None
    except FileNotFoundError:
        raise OjError("busctl is not installed") from None
    if proc.returncode != 0:
        raise OjError(proc.stderr.decode(errors="replace").strip() or
                      f"busctl exited {proc.returncode}")
