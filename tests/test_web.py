"""The dashboard (`oj web`) driven in a real headless Chromium (Debian's, through
Playwright): live updates without a reload, a cancel from the page, actions refused
without the token, item data shown as text. The page's pure parts (token rules, HTML
escaping, rates) are checked without a browser at the end."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import OJ, Project, require, wait_until
from test_foreground import Foreground

from ojd.web import actions, html
from ojd.web.history import EventHistory

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-token"

RUNBOOK = """
queue "jobs" {
  type = "persisted"
  vars = ["n"]
}
worker "w" {
  source = { queue = "jobs" }
  handler = { pipeline = "build" }
}
pipeline "build" {
  vars = ["n"]
  step "run" {
    run = <<-SH
      echo "building ${var.n.n}"
      until [ -e '${var.n.n}.gate' ]; do sleep 0.05; done
      echo "past the gate"
      sleep 600
    SH
  }
}
"""


class Web:
    """`oj web` on a free port of 127.0.0.1, as a terminal runs it."""

    def __init__(self, project: Project) -> None:
        probe = socket.create_server(("127.0.0.1", 0))  # a port no one holds now
        port = probe.getsockname()[1]
        probe.close()
        self.proc = subprocess.Popen([OJ, "web", "--listen", f"127.0.0.1:{port}"],
                                     cwd=project.root,
                                     env=project.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, f"no address in {line!r}"
        self.url = f"http://127.0.0.1:{found.group(1)}"
        self.updates = self.proc.stderr.readline()  # where its live updates come from
        # the rest of stderr is read as it comes, so the server never blocks on it
        self.errors: list[str] = []
        threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True
                         ).start()

    def post(self, path: str, headers: dict[str, str] | None = None,
             body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, method="POST",
                                         data=json.dumps(body or {}).encode(),
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert not any("Traceback" in line for line in self.errors), "".join(self.errors)


@pytest.fixture
def web_project(project: Project):
    project.write("build.hcl", RUNBOOK)
    web = Web(project)
    yield project, web
    web.stop()


@pytest.fixture(scope="module")
def browser():
    require(os.path.exists(CHROMIUM), "Debian's chromium is not installed "
                                      "(packaging/dev-setup.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "Playwright is not installed (the test extra has it)")
    with sync_playwright() as p:
        # as root, Chromium's own sandbox cannot start: the test machine is the sandbox
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    p = context.new_page()
    p.on("dialog", lambda dialog: dialog.accept())  # the Cancel button's confirmation
    yield p
    context.close()


def open_live(page, url: str) -> None:
    """Open the page and wait until its event stream is connected."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#conn")).to_have_text("live", timeout=10_000)


def set_token(project: Project, token: str) -> None:
    project.state.mkdir(parents=True, exist_ok=True)
    (project.state / "oj.conf").write_text(f"web_token = {token}\n")


def running_job(project: Project, worker: Foreground, data: str) -> tuple[str, str]:
    """Push an item and wait until the worker's job for it runs its step: (item, job)."""
    item = project.oj("queue", "push", "jobs", json.dumps({"n": data})).stdout.strip()

    def job_of_item() -> dict | None:
        jobs = [j for j in project.json("job", "list") if j["item"] == item]
        return jobs[0] if jobs and jobs[0]["step"] == "run" else None

    wait_until(lambda: job_of_item() is not None, "the item's job to run its step")
    return item, job_of_item()["id"]


@pytest.fixture
def worker(web_project):
    project, _ = web_project
    w = Foreground(project, "w")
    yield w
    for j in project.json("job", "list", "--status", "running"):
        project.oj("job", "cancel", j["id"], check=False)
    w.signal(signal.SIGTERM)
    w.wait()


@pytest.mark.both_stores  # inotify on the WAL directory; PostgreSQL's notifications
def test_a_pushed_item_shows_within_a_second_without_a_reload(web_project, page):
    from playwright.sync_api import expect

    project, web = web_project
    assert web.updates.strip() == ("live updates from notifications from PostgreSQL (LISTEN)"
                                   if project.url else "live updates from inotify on the "
                                   "state dir"), web.updates
    project.oj("queue", "push", "jobs", '{"n": "first"}')
    open_live(page, web.url + "/")
    page.evaluate("window.__same_page = true")  # gone if the page were loaded again
    item = project.oj("queue", "push", "jobs", '{"n": "second"}').stdout.strip()
    pushed = time.monotonic()
    expect(page.locator(f"li[data-item='{item}']")).to_be_visible(timeout=1000)
    assert time.monotonic() - pushed < 1.0
    assert page.evaluate("window.__same_page") is True


def test_a_running_jobs_log_tail_follows_its_output(web_project, worker, page):
    from playwright.sync_api import expect

    project, web = web_project
    _, job = running_job(project, worker, "tail")
    open_live(page, web.url + "/")
    tail = page.locator(f"tr[data-job='{job}'] + tr.tail pre")
    expect(tail).to_contain_text("building tail")
    assert "past the gate" not in tail.inner_text()
    (project.root / "tail.gate").touch()
    expect(tail).to_contain_text("past the gate", timeout=1500)


def test_cancel_from_the_page_cancels_the_job(web_project, worker, page):
    from playwright.sync_api import expect

    project, web = web_project
    set_token(project, TOKEN)
    item, job = running_job(project, worker, "to cancel")
    open_live(page, web.url + f"/?token={TOKEN}")
    assert "token=" not in page.url  # kept for the tab's actions, taken out of the URL
    page.locator(f"tr[data-job='{job}'] button[data-action=cancel]").first.click()
    expect(page.locator("#notice")).to_contain_text(f"job {job} cancelled", timeout=10_000)
    shown = project.json("job", "show", job)
    assert shown["status"] == "cancelled"
    assert project.json("queue", "show", item)["status"] == "dead"
    # and the page shows it without a reload: the job is no longer listed as running
    expect(page.locator(f"table.running tr[data-job='{job}']")).to_have_count(0,
                                                                           timeout=2000)


def test_a_waiting_job_is_highlighted_and_answered_from_the_page(web_project, worker, page):
    from playwright.sync_api import expect

    from ojd.events import job_waiting
    from ojd.store import Store

    project, web = web_project
    set_token(project, TOKEN)
    _, job = running_job(project, worker, "asks")
    # what an agent step that escalates records
    Store(str(project.state), on_problem=None).append(
        job_waiting(id=job, reason="which branch?"))
    open_live(page, web.url + f"/?token={TOKEN}")
    row = page.locator(f"table.waiting tr.attention[data-job='{job}']")
    expect(row).to_contain_text("which branch?")
    expect(row).to_contain_text(f"oj job resume {job} -m")
    row.locator("input[name=message]").fill("main, please")
    row.locator("form.answer button").click()
    expect(page.locator("#notice")).to_contain_text(f"job {job} answered", timeout=10_000)
    assert [e["message"] for e in project.events("job:answered")
            if e["id"] == job] == ["main, please"]
    expect(page.locator(f"table.waiting tr[data-job='{job}']")).to_have_count(0, timeout=2000)


SHIP = """
command "ship" {
  args = "<branch>"
  run  = { pipeline = "ship" }
}
pipeline "ship" {
  vars = ["branch"]
  step "ask" {
    approve = "Deploy ${var.branch} to production?"
    on_fail = { step = "undo" }
  }
  step "undo" {
    run = "echo rolled back"
  }
}
"""


@pytest.fixture
def approval(web_project):
    """A job of `oj run ship v9` waiting at its approval step: (project, web, decision)."""
    project, web = web_project
    project.write("ship.hcl", SHIP)
    run = subprocess.Popen([OJ, "run", "ship", "v9"], cwd=project.root, env=project.env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found: list[dict] = []

    def one_open() -> bool:
        found[:] = project.json("decision", "list")  # type: ignore[assignment]
        return len(found) == 1
    try:
        wait_until(one_open, "the approval step's decision")
        yield project, web, found[0], run
    finally:
        run.kill()
        run.wait()


def test_a_decision_shows_its_options_and_is_resolved_from_the_page(approval, page):
    from playwright.sync_api import expect

    project, web, d, run = approval
    set_token(project, TOKEN)
    open_live(page, web.url + f"/?token={TOKEN}")
    box = page.locator(f"table.waiting tr.attention .decision[data-decision='{d['id']}']")
    expect(box).to_contain_text("Deploy v9 to production?")
    expect(box.locator(".source")).to_have_text("approval")
    expect(box.locator("button[name=option]")).to_have_text(
        [re.compile(r"^1\. Approve"), re.compile(r"^2\. Reject")])
    box.locator("input[name=message]").fill("not on a Friday")
    box.locator("input[name=message]").press("Enter")  # Enter alone chooses nothing
    box.locator("button[name=option][value='2']").click()
    expect(page.locator("#notice")).to_contain_text(f"decision {d['id']} resolved",
                                                    timeout=10_000)
    (event,) = project.events("decision:resolved")
    assert (event["id"], event["option"], event["message"]) == (d["id"], 2, "not on a Friday")
    assert event["by"].startswith("web:")
    assert run.wait(timeout=30) == 0  # rejected: on_fail's step recovered
    expect(page.locator(f".decision[data-decision='{d['id']}']")).to_have_count(0,
                                                                               timeout=2000)
    # the job's page keeps its decisions: who chose what
    page.goto(web.url + f"/job/{d['job']}")
    done = page.locator(f".decisions .decision.done[data-decision='{d['id']}']")
    expect(done).to_contain_text("resolved by web:")
    expect(done).to_contain_text("2. Reject")
    expect(done).to_contain_text("not on a Friday")


def test_a_waiting_jobs_page_resolves_its_open_decision(approval, page):
    from playwright.sync_api import expect

    project, web, d, run = approval
    set_token(project, TOKEN)
    open_live(page, web.url + f"/job/{d['job']}?token={TOKEN}")
    page.locator(f".decision[data-decision='{d['id']}'] button[name=option][value='1']").click()
    expect(page.locator("#notice")).to_contain_text(f"decision {d['id']} resolved",
                                                    timeout=10_000)
    assert run.wait(timeout=30) == 0
    assert [(e["id"], e["option"]) for e in project.events("decision:resolved")] == \
        [(d["id"], 1)]


def test_resolving_a_decision_without_the_token_is_refused(approval, page):
    from playwright.sync_api import expect

    project, web, d, _ = approval
    path = f"/api/decisions/{d['id']}/resolve"
    assert web.post(path, body={"option": 1})[0] == 403  # no web_token set
    set_token(project, TOKEN)
    open_live(page, web.url + "/")  # opened without the token
    page.locator(f".decision[data-decision='{d['id']}'] button[name=option][value='1']").click()
    expect(page.locator("#notice")).to_contain_text("needs the token", timeout=10_000)
    assert web.post(path, body={"option": 1})[0] == 401
    assert web.post(path, {"Authorization": "Bearer wrong"}, {"option": 1})[0] == 401
    assert project.events("decision:resolved") == []
    assert project.json("decision", "show", d["id"])["status"] == "open"  # type: ignore[index]
    # with it: a bad choice is one line, the good one resolves
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, answer = web.post(path, bearer, {"option": 3})
    assert status == 409 and "has options 1-2" in answer["message"]
    assert web.post(path, bearer, {"option": 1}) == (200, {
        "ok": True, "message": f"decision {d['id']} resolved: job {d['job']} runs on"})
    status, answer = web.post(path, bearer, {"option": 2})
    assert status == 409 and "already resolved by web:" in answer["message"]


def test_an_action_without_the_token_is_refused(web_project, worker, page):
    from playwright.sync_api import expect

    project, web = web_project
    _, job = running_job(project, worker, "stays")
    # no web_token configured: refused, saying how to set one
    open_live(page, web.url + "/")
    page.locator(f"tr[data-job='{job}'] button[data-action=cancel]").first.click()
    expect(page.locator("#notice")).to_contain_text("no web_token is set", timeout=10_000)
    status, answer = web.post(f"/api/jobs/{job}/cancel")
    assert status == 403 and "web_token = " in answer["message"]
    # configured, but the page was opened without it, or with a wrong one
    set_token(project, TOKEN)
    page.locator(f"tr[data-job='{job}'] button[data-action=cancel]").first.click()
    expect(page.locator("#notice")).to_contain_text("needs the token", timeout=10_000)
    open_live(page, web.url + "/?token=wrong")
    page.locator(f"tr[data-job='{job}'] button[data-action=cancel]").first.click()
    expect(page.locator("#notice")).to_contain_text("wrong token", timeout=10_000)
    # from 127.0.0.1 too: the address earns nothing
    assert web.post(f"/api/jobs/{job}/cancel")[0] == 401
    assert web.post(f"/api/jobs/{job}/cancel",
                    {"Authorization": "Bearer wrong"})[0] == 401
    assert web.post(f"/api/jobs/{job}/cancel?token=wrong")[0] == 401
    # the right token from another site's page (a cross-site POST): refused
    assert web.post(f"/api/jobs/{job}/cancel", {"Authorization": f"Bearer {TOKEN}",
                                                "Origin": "http://elsewhere.example"})[0] == 403
    assert project.json("job", "show", job)["status"] == "running"


def test_item_data_is_shown_as_text(web_project, page):
    from playwright.sync_api import expect

    project, web = web_project
    data = "<script>a</script><img src=x onerror=window.__ran=2><b>b</b>"
    item = project.oj("queue", "push", "jobs", json.dumps({"n": data})).stdout.strip()
    open_live(page, web.url + "/")
    shown = page.locator(f"li[data-item='{item}'] code.data")
    expect(shown).to_contain_text(data)
    assert shown.locator("script, img, b").count() == 0
    assert page.evaluate("window.__ran") is None
    # and in what the event stream swaps in
    other = project.oj("queue", "push", "jobs", json.dumps({"n": data + "!"})).stdout.strip()
    expect(page.locator(f"li[data-item='{other}'] code.data")).to_contain_text(data + "!")
    assert page.locator("ul.items script, ul.items img, ul.items b").count() == 0


# -- without a browser -----------------------------------------------------------------------


def test_token_rules(tmp_path: Path):
    with pytest.raises(actions.Refused) as e:
        actions.check_token(str(tmp_path), TOKEN)
    assert e.value.status == 403 and "web_token = SECRET" in str(e.value)
    (tmp_path / "oj.conf").write_text("web_token = right\n")
    for sent in (None, "wrong", "righ", "right "):
        with pytest.raises(actions.Refused) as e:
            actions.check_token(str(tmp_path), sent)
        assert e.value.status == 401
    actions.check_token(str(tmp_path), "right")
    assert actions.sent_token("Bearer abc", None) == "abc"
    assert actions.sent_token(None, "q") == "q"
    assert actions.same_origin(None, "h:1")
    assert actions.same_origin("http://h:1", "h:1")
    assert not actions.same_origin("http://evil:1", "h:1")


def test_rates_count_the_recent_takes_and_completions_per_queue():
    h = EventHistory()
    now = 10_000.0
    q = ("/p", "jobs")
    h.add(1, {"type": "queue:taken", "id": "a", "job": "j1", "ts": now - 400}, q)
    h.add(2, {"type": "queue:taken", "id": "b", "job": "j2", "ts": now - 60}, q)
    h.add(3, {"type": "queue:completed", "id": "b", "ts": now - 30}, q)
    h.add(4, {"type": "queue:failed", "id": "c", "ts": now - 10}, ("/p", "other"))
    assert h.rates(now, 5) == {q: {"taken": 1, "completed": 1, "failed": 0},
                               ("/p", "other"): {"taken": 0, "completed": 0, "failed": 1}}
    assert [ev["pos"] for ev in h.job_events("j2")] == [2]


def test_everything_from_the_state_is_escaped():
    evil = "<script>x</script>\"'&"
    report = {"systemd": {"problem": None}, "rate_minutes": 5, "projects": [{
        "project": evil, "attention": {"waiting_jobs": 1, "failed_jobs": 0, "dead_items": 0,
                                       "failed_units": 0},
        "workers": [{"host": evil, "name": evil, "state": evil, "queue": evil, "active": 0,
                     "concurrency": 1, "pending": 0, "last_poll": None,
                     "needs_person": False}],
        "jobs": {"running": [], "failed": [], "waiting": [
            {"id": "j1", "name": evil, "step": evil, "updated_at": 1.0, "reason": evil,
             "answer": evil}]},
        "queues": [{"project": evil, "name": evil, "pending": 1, "active": 0, "dead": 0,
                    "workers": [evil], "needs_person": False,
                    "rates": {"taken": 0, "completed": 0, "failed": 0},
                    "waiting_items": [{"id": "i1", "status": "pending", "data": {"k": evil},
                                       "error": None}], "dead_items": []}],
        "crons": []}]}
    text = html.dashboard(report)
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_an_address_oj_web_cannot_listen_on_is_one_line(project: Project):
    proc = project.oj("web", "--listen", "nonsense", check=False)
    assert proc.returncode == 1
    assert proc.stderr == "oj: cannot listen on 'nonsense': give HOST:PORT, e.g. " \
                          "127.0.0.1:9464\n"
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        proc = project.oj("web", "--listen", f"127.0.0.1:{port}", check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"oj: cannot listen on 127.0.0.1:{port}: ")
        assert len(proc.stderr.splitlines()) == 1
    finally:
        busy.close()
