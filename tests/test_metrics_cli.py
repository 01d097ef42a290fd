"""``oj metrics`` over a state a real worker made: each figure against what the listings say,
counters across ``oj state compact``, and ``oj metrics --listen`` answering a scraper in the
format its Accept header asks for."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time

import pytest
from conftest import OJ, Project, wait_until
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_004_families

from ojd import events
from ojd.store import Store

RUNBOOK = r"""
    queue "merges" {
      type = "persisted"
      vars = ["mode"]
    }

    worker "merge" {
      source  = { queue = "merges" }
      handler = { pipeline = "merge" }
      poll    = "200ms"
    }

    pipeline "merge" {
      vars = ["mr"]
      step "work" {
        run = "[ ${var.mr.mode} != fail ]"
      }
    }
    """


def scrape(project: Project) -> dict[tuple, float]:
    text = project.oj("metrics").stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def drain(project: Project) -> None:
    proc = project.ojd("worker", "merge", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_figures_match_the_listings_and_counters_survive_compaction(project: Project):
    project.write("w.hcl", RUNBOOK)
    root = str(project.root.resolve())
    for mode in ("a", "b", "fail"):  # distinct: equal data would be one item
        project.oj("queue", "push", "merges", json.dumps({"mode": mode}))
    drain(project)
    project.oj("queue", "push", "merges", json.dumps({"mode": "later"}))
    # a job waiting for a person, as an agent step's escalation records it
    store = Store(str(project.state))
    store.append(events.job_created(id="waiter", project=root, pipeline="merge", name="w",
                                    vars={}, cwd=None, workspace=None, invoke=None, item=None,
                                    worker=None, by="test"))
    store.append(events.job_waiting(id="waiter", reason="needs a look"))

    found = scrape(project)
    q = {"project": root, "queue": "merges"}
    items = project.items("merges")
    for status in ("pending", "completed", "dead", "active", "failed"):
        assert value(found, "oj_queue_items", **q, status=status) == sum(
            i["status"] == status for i in items), status
    pending = next(i for i in items if i["status"] == "pending")
    age = value(found, "oj_queue_oldest_pending_age_seconds", **q)
    assert 0 < age <= time.time() - pending["created_at"]
    assert value(found, "oj_queue_takes_total", **q) == 3
    assert value(found, "oj_queue_completions_total", **q) == 2
    assert value(found, "oj_queue_failures_total", **q) == 1
    assert value(found, "oj_queue_push_to_start_seconds_count", **q) == 3
    step = {"project": root, "pipeline": "merge", "step": "work"}
    assert value(found, "oj_step_duration_seconds_count", **step) == 3
    assert value(found, "oj_jobs", project=root, status="done") == 2
    assert value(found, "oj_jobs", project=root, status="failed") == 1
    assert value(found, "oj_jobs", project=root, status="waiting") == 1
    assert value(found, "oj_waiting_for_person", project=root, source="job") == 1

    project.oj("state", "compact")
    project.oj("queue", "drop", "merges", pending["id"])
    project.oj("queue", "push", "merges", json.dumps({"mode": "again"}))
    project.oj("state", "compact")
    drain(project)
    after = scrape(project)
    assert value(after, "oj_queue_takes_total", **q) == 4
    assert value(after, "oj_queue_completions_total", **q) == 3
    assert value(after, "oj_queue_failures_total", **q) == 1
    assert value(after, "oj_queue_push_to_start_seconds_count", **q) == 4
    assert value(after, "oj_step_duration_seconds_count", **step) == 4


def get(port: int, accept: str | None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", body


@pytest.fixture
def free_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_listen_serves_each_scraper_the_format_it_asks_for(project: Project, free_port: int):
    project.write("w.hcl", RUNBOOK)
    project.oj("queue", "push", "merges", json.dumps({"mode": "ok"}))
    server = subprocess.Popen([OJ, "metrics", "--listen", f"127.0.0.1:{free_port}"],
                              cwd=project.root, env=project.env(), stderr=subprocess.PIPE,
                              text=True)
    try:
        def answers() -> bool:
            try:
                return get(free_port, None)[0] == 200
            except OSError:
                return False

        wait_until(answers, "oj metrics --listen to answer")
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        status, kind, body = get(free_port, accept)
        assert (status, kind) == (200, "application/openmetrics-text; version=1.0.0; "
                                       "charset=utf-8")
        pending = [s for fam in text_string_to_metric_families(body) for s in fam.samples
                   if s.name == "oj_queue_items" and s.labels["status"] == "pending"]
        assert [s.value for s in pending] == [1]
        # a push is seen by the next scrape of the same server
        project.oj("queue", "push", "merges", json.dumps({"mode": "two"}))
        status, kind, body = get(free_port, "text/plain")
        assert (status, kind) == (200, "text/plain; version=0.0.4; charset=utf-8")
        pending = [s for fam in text_004_families(body) for s in fam.samples
                   if s.name == "oj_queue_items" and s.labels["status"] == "pending"]
        assert [s.value for s in pending] == [2]
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Traceback" not in err


def test_listen_on_an_address_it_cannot_use_says_so_in_one_line(project: Project):
    proc = project.oj("metrics", "--listen", "localhost", check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("oj: cannot listen on 'localhost': give HOST:PORT, e.g. "
                           "127.0.0.1:9464\n")


@pytest.mark.parametrize(("args", "message"), [
    ((), "ojd: no socket to serve: start oj-metrics.socket, or give --listen HOST:PORT "
         "(e.g. 127.0.0.1:9464)\n"),
    (("--listen", "127.0.0.1:1", "--idle-timeout", "soon"),
     'ojd: idle timeout: invalid duration \'soon\'; use e.g. "30s", "5m", "1h30m"\n'),
])
def test_ojd_metrics_without_what_it_needs_says_so_in_one_line(project: Project, args, message):
    proc = project.ojd("metrics", *args)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (1, message)
