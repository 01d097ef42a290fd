"""Telling systemd what a service is doing: READY=1, STATUS=, WATCHDOG=1, STOPPING=1.

Everything is a no-op outside a unit (no ``$NOTIFY_SOCKET``), so the same loop runs in the
foreground for development.
"""

from __future__ import annotations

import os
import sys
import time

from ojd.errors import escaped


def one_line(text: str) -> str:
    """`text` with its control characters written as escapes (`\\n`, `\\x1b`, `\\u2028`).

    For messages that carry runbook or item text into a log: a newline in one must not start a
    line of its own (a forged `==> job done`), an escape sequence must not reach a terminal.
    """
    return escaped(text, backslashes=False)


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = None
        if self.enabled:
            import sdnotify  # lazy: ~8 ms, only under systemd (NOTIFY_SOCKET set)

            self._sd = sdnotify.SystemdNotifier()
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # ping at half the interval, as sd_watchdog_enabled(3) advises
        self.watchdog_interval: float | None = int(usec) / 2e6 if watched else None
        self._last_ping = 0.0
        self._last_status = ""

    def send(self, message: str) -> None:
        if self._sd is not None:
            self._sd.notify(message)

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nSTATUS={one_line(status)}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            # one line: a newline from runbook or item text would be read as another
            # assignment (MAINPID=, WATCHDOG=trigger) by the manager
            self.send(f"STATUS={one_line(status)}")

    def watchdog(self) -> None:
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")


class Log:
    """Service logs on stderr; under systemd each line carries an sd-daemon priority prefix
    so journald keeps its level (sd-daemon(3))."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))

    def _emit(self, level: int, tag: str, message: str) -> None:
        message = one_line(message)  # one message, one line (a journal entry each)
        if self.journal:
            line = f"<{level}>{message}"
        else:
            line = f"{time.strftime('%H:%M:%S')} {self.name} {tag}: {message}"
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:
            pass  # nowhere to say it (a closed journal stream): the work goes on

    def info(self, message: str) -> None:
        self._emit(6, "info", message)

    def warning(self, message: str) -> None:
        self._emit(4, "warning", message)

    def error(self, message: str) -> None:
        self._emit(3, "error", message)
