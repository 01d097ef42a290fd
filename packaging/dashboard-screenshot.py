#!/usr/bin/env python3
"""Regenerate docs/dashboard.png: the dashboard of a small, real state, shot in headless
Chromium. Two foreground workers take items from two queues; one job runs (its log tail
shows), one waits for a person, a release waits on its approval decision, one item is dead,
a few wait to be taken. As root it runs in a private mount namespace with a fresh /srv, so
the project shows as /srv/shop.

    packaging/dashboard-screenshot.py [OUTPUT]   (default: docs/dashboard.png)

Needs oj installed (oj and ojd on PATH, or beside this Python), Debian's chromium and
Playwright's Python package (the test extra). Everything it makes lives in a temporary
directory and is stopped and removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"

RUNBOOK = """
queue "builds" {
  type = "persisted"
  vars = ["repo", "ref"]
}
queue "deploys" {
  type = "persisted"
  vars = ["service", "env"]
}
worker "builder" {
  source = { queue = "builds" }
  handler = { pipeline = "build" }
  concurrency = 1
}
worker "deployer" {
  source = { queue = "deploys" }
  handler = { pipeline = "deploy" }
  concurrency = 1
}
pipeline "build" {
  name = "build ${var.b.repo}@${var.b.ref}"
  vars = ["b"]
  step "compile" {
    run = <<-SH
      echo "fetching ${var.b.repo} at ${var.b.ref}"
      echo "resolving 42 dependencies"
      echo "compiling 118 modules"
      sleep 600
    SH
  }
}
command "release" {
  args = "<service> <version>"
  run  = { pipeline = "release" }
}
pipeline "release" {
  name = "release ${var.service} ${var.version}"
  vars = ["service", "version"]
  step "approve" {
    approve = "Release ${var.service} ${var.version} to production? Staging ran it for 2 days."
    on_done = { step = "ship" }
  }
  step "ship" {
    run = "echo shipping ${var.service} ${var.version}"
  }
}
pipeline "deploy" {
  name = "deploy ${var.d.service} to ${var.d.env}"
  vars = ["d"]
  step "rollout" {
    run = <<-SH
      echo "rolling out ${var.d.service} to ${var.d.env}"
      test "${var.d.env}" != "broken" || { echo "health check failed" >&2; exit 3; }
      sleep 600
    SH
  }
}
"""


def program(name: str) -> str:
    beside = BIN / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


# set in the private mount namespace the script runs itself in (as root): a fresh /srv
IN_SRV = "OJ_SCREENSHOT_IN_SRV"


def tidy_paths() -> None:
    """As root, run again in a private mount namespace with an empty tmpfs on /srv, so the
    page shows the project as /srv/shop rather than a scratch directory; nothing outside
    changes. Elsewhere (or without unshare) the script goes on in a temporary directory."""
    if os.environ.get(IN_SRV) or os.geteuid() != 0 or shutil.which("unshare") is None \
            or not os.path.isdir("/srv"):
        return
    script = 'mount -t tmpfs oj-screenshot /srv && exec "$@"'
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script, "sh", sys.executable, *sys.argv],
                          env=dict(os.environ, **{IN_SRV: "1"}))
    sys.exit(proc.returncode)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE / "docs" / "dashboard.png").resolve()
    tidy_paths()
    base = Path("/srv") if os.environ.get(IN_SRV) else \
        Path(tempfile.mkdtemp(prefix="oj-dashboard-", dir=os.environ.get("TMPDIR")))
    project, state = base / "shop", base / "state"
    (project / ".oj" / "runbooks").mkdir(parents=True)
    (project / ".oj" / "runbooks" / "shop.hcl").write_text(textwrap.dedent(RUNBOOK))
    env = dict(os.environ, OJ_STATE_DIR=str(state))
    env.pop("OJ_STATE_URL", None)
    procs: list[subprocess.Popen] = []

    def oj(*args: str) -> str:
        return subprocess.run([program("oj"), *args], cwd=project, env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def jobs() -> list[dict]:
        return json.loads(oj("job", "list", "-o", "json"))

    def wait(what: str, predicate) -> None:
        deadline = time.monotonic() + 30
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"dashboard-screenshot: timed out waiting for {what}")
            time.sleep(0.1)

    try:
        oj("queue", "push", "deploys", '{"service": "billing", "env": "broken"}')
        for name in ("builder", "deployer"):
            procs.append(subprocess.Popen([program("ojd"), "worker", name, "--foreground"],
                                          cwd=project, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        wait("the failing deploy", lambda: any(j["status"] == "failed" for j in jobs()))
        oj("queue", "push", "builds", '{"repo": "shop-api", "ref": "v2.4.1"}')
        oj("queue", "push", "deploys", '{"service": "checkout", "env": "production"}')
        wait("the running jobs", lambda: sum(j["status"] == "running" and j["step"] is not None
                                             for j in jobs()) == 2)
        for ref in ("v2.4.2", "main", "feature/cart"):
            oj("queue", "push", "builds", json.dumps({"repo": "shop-web", "ref": ref}))
        oj("queue", "push", "deploys", '{"service": "search", "env": "staging"}')
        # a release waits at its approval step: a decision with its options
        procs.append(subprocess.Popen([program("oj"), "run", "release", "shop-api", "v2.4.0"],
                                      cwd=project, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait("the release's approval", lambda: oj("decision", "list", "-o", "json") != "[]")
        # the production deploy asks for a person, as an agent step that escalates does
        deploy = next(j for j in jobs() if j["pipeline"] == "deploy"
                      and j["status"] == "running")
        record_waiting(state, deploy["id"], "production rollout: 3 of 12 hosts done, error "
                       "rate 0.4% — go on with the rest?")
        probe = socket.create_server(("127.0.0.1", 0))  # a port no one holds now
        free = probe.getsockname()[1]
        probe.close()
        web = subprocess.Popen([program("oj"), "web", "--listen", f"127.0.0.1:{free}"],
                               cwd=project,
                               env=env, stderr=subprocess.PIPE, text=True)
        procs.append(web)
        line = web.stderr.readline()
        port = re.search(r":(\d+)/", line)
        if port is None:
            raise SystemExit(f"dashboard-screenshot: oj web said {line!r}")
        shoot(f"http://127.0.0.1:{port.group(1)}/", out)
        print(f"wrote {out}")
    finally:
        # the workers first, so that none takes a next item, then every job still live
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        for j in jobs() if state.exists() else []:
            if j["status"] in ("running", "waiting"):
                subprocess.run([program("oj"), "job", "cancel", j["id"]], cwd=project, env=env,
                               capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


def record_waiting(state: Path, job_id: str, reason: str) -> None:
    from ojd.events import job_waiting
    from ojd.store import Store

    Store(str(state), url="").append(job_waiting(id=job_id, reason=reason))


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"] if os.geteuid() == 0 else [])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
        expect(page.locator("table.running")).to_be_visible()
        expect(page.locator(".decision form.resolve")).to_be_visible()
        page.screenshot(path=str(out), full_page=True)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
