"""Notifications that reach a person: an exec hook gets the event as JSON on stdin, a webhook
gets it as a POST (again after a failed attempt), and a desktop's notification server on the
session bus gets Notify; a job's notify messages reach them without holding up its steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Project, require, wait_until

from ojd import notifications
from ojd.errors import OjError

JOB = {"id": "j1", "name": "fix bug 12", "pipeline": "fix", "project": "/srv/p"}


def event(message: str = "fixed") -> dict:
    return notifications.payload("notify", JOB, "oj: fix bug 12: on_done", message,
                                 when="on_done")


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
        else []


def test_an_exec_hook_gets_the_event_as_json_on_stdin(tmp_path: Path):
    got = tmp_path / "got.jsonl"
    (tmp_path / "oj.conf").write_text(f"notify_exec = cat >> {got}; echo >> {got}\n")
    to = notifications.targets(str(tmp_path))
    assert to.execs and not to.webhooks
    d = notifications.Dispatcher()
    d.send(event(), to)
    d.wait(10)
    (sent,) = lines_of(got)
    assert (sent["kind"], sent["job"], sent["message"], sent["when"]) == \
        ("notify", "j1", "fixed", "on_done")
    assert sent["title"] == "oj: fix bug 12: on_done" and sent["host"]


def test_a_failing_hook_is_said_and_does_not_raise(tmp_path: Path):
    said: list[str] = []
    d = notifications.Dispatcher(said.append)
    d.send(event(), notifications.Targets(execs=("echo broken >&2; exit 3",)))
    d.wait(10)
    assert said == ["notification not delivered: exec 'echo broken >&2; exit 3': exit 3: "
                    "broken"]


def test_a_slow_hook_does_not_hold_up_the_sender(tmp_path: Path):
    d = notifications.Dispatcher(lambda line: None)
    started = time.monotonic()
    d.send(event(), notifications.Targets(execs=("sleep 5",), timeout=1.0))
    assert time.monotonic() - started < 0.5  # sent from a thread of its own
    d.wait(10)
    assert time.monotonic() - started < 4  # and stopped at its timeout


class Hook(BaseHTTPRequestHandler):
    failures = 0  # answer 503 to this many requests first
    bodies: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.failures > 0:
            Hook.failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        Hook.bodies.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    Hook.failures, Hook.bodies = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_a_webhook_gets_the_json_posted_again_after_a_failed_attempt(tmp_path: Path,
                                                                     http_server: str):
    Hook.failures = 1
    said: list[str] = []
    d = notifications.Dispatcher(said.append)
    d.send(event("retried"), notifications.targets(str(tmp_path), {"webhook": http_server}))
    d.wait(15)
    (got,) = Hook.bodies
    assert got["type"] == "application/json"
    assert (got["json"]["kind"], got["json"]["message"]) == ("notify", "retried")
    assert said == []


def test_a_webhook_that_keeps_failing_is_said_after_its_attempts(http_server: str):
    Hook.failures = 10
    with pytest.raises(OjError, match=r"HTTP 503 \(2 attempts\)"):
        notifications.post(http_server, b"{}", 5, attempts=2, backoff=0.05)


def test_a_bad_webhook_url_or_desktop_setting_is_one_clear_line(tmp_path: Path):
    with pytest.raises(OjError, match="notify webhook 'ftp://x' is not an http"):
        notifications.targets(str(tmp_path), {"webhook": "ftp://x"})
    (tmp_path / "oj.conf").write_text("notify_desktop = maybe\n")
    with pytest.raises(OjError, match=r"oj.conf:1: notify_desktop: 'maybe'; use yes or no"):
        notifications.targets(str(tmp_path))


LISTENER = '''
import json, sys
import dbus, dbus.service, dbus.mainloop.glib
from gi.repository import GLib

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(sys.argv[1])


class Server(dbus.service.Object):
    @dbus.service.method("org.freedesktop.Notifications",
                         in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app, replaces, icon, summary, body, actions, hints, expire):
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"app": str(app), "summary": str(summary),
                                "body": str(body)}) + "\\n")
        return dbus.UInt32(1)


name = dbus.service.BusName("org.freedesktop.Notifications", bus)
Server(bus, "/org/freedesktop/Notifications")
print("ready", flush=True)
GLib.MainLoop().run()
'''


@pytest.fixture
def session_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private session bus with a notification server that writes down each Notify."""
    have = subprocess.run(["/usr/bin/python3", "-c", "import dbus, gi"],
                          capture_output=True).returncode == 0
    # the listener's packages, not oj's: dev-setup installs them; outside CI a machine
    # without them skips, in CI it fails (conftest.require)
    require(bool(have and shutil.which("dbus-daemon") and shutil.which("busctl")),
            "dbus-daemon, busctl or python3-dbus/python3-gi missing (packaging/dev-setup.sh)")
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                           stdout=subprocess.PIPE, text=True)
    address = bus.stdout.readline().strip()
    got = tmp_path / "notified.jsonl"
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    listener = subprocess.Popen(["/usr/bin/python3", str(script), address, str(got)],
                                stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    yield got
    listener.kill()
    bus.kill()
    listener.wait()
    bus.wait()


def test_a_desktop_notification_reaches_the_session_bus(tmp_path: Path, session_bus: Path):
    (tmp_path / "oj.conf").write_text("notify_desktop = yes\n")
    to = notifications.targets(str(tmp_path))
    assert to.desktop
    said: list[str] = []
    d = notifications.Dispatcher(said.append)
    d.send(notifications.payload("decision", JOB, "oj: fix bug 12 needs a decision",
                                 "-its gate failed (oj decision resolve d1 N)"), to)
    d.wait(10)
    assert said == []
    assert lines_of(session_bus) == [{"app": "oj", "summary": "oj: fix bug 12 needs a decision",
                                      "body": "-its gate failed (oj decision resolve d1 N)"}]


def test_desktop_notifications_are_off_for_root_unless_asked(tmp_path: Path,
                                                             session_bus: Path):
    assert os.geteuid() != 0 or not notifications.targets(str(tmp_path)).desktop
    (tmp_path / "oj.conf").write_text("notify_desktop = no\n")
    assert not notifications.targets(str(tmp_path)).desktop


RUNBOOK = """
command "greet" {
  args = "<who>"
  run  = { pipeline = "greet" }
}

pipeline "greet" {
  vars = ["who"]
  notify {
    on_start = "greeting ${var.who}"
    on_done  = "greeted ${var.who}"
    exec     = "cat >> HOOK; echo >> HOOK"
  }
  step "hello" { run = "echo hello ${var.who}" }
}
"""


def test_a_jobs_notify_messages_reach_the_runbooks_exec_hook_and_the_webhook(
        project: Project, http_server: str):
    hook = project.root / "hook.jsonl"
    project.write("greet.hcl", RUNBOOK.replace("HOOK", str(hook)))
    project.state.mkdir(parents=True, exist_ok=True)
    (project.state / "oj.conf").write_text(f"notify_webhook = {http_server}\n")
    project.oj("run", "greet", "ann")
    wait_until(lambda: len(lines_of(hook)) == 2, "both notify messages at the hook")
    assert [(e["when"], e["message"]) for e in lines_of(hook)] == \
        [("on_start", "greeting ann"), ("on_done", "greeted ann")]
    wait_until(lambda: len(Hook.bodies) == 2, "both at the webhook")
    assert sorted(b["json"]["message"] for b in Hook.bodies) == ["greeted ann", "greeting ann"]
