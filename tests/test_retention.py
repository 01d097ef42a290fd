"""Retention: ``retain = { done, dead, jobs }`` on a queue or worker, over oj.conf's defaults,
applied by the worker's polls with the existing prunes; and ``oj queue logs QUEUE``, the log
lines of the jobs of its items."""

from __future__ import annotations

import time

import pytest
from conftest import Project, wait_until
from test_runbook import load, problems

from ojd import retention

RUNBOOK = r"""
    queue "q" {
      vars   = ["n"]
      RETAIN_QUEUE
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      RETAIN_WORKER
    }
    pipeline "p" {
      vars = ["item"]
      step "s" {
        run = <<-SH
          echo "hello ${var.item.n}"
          [ "${var.item.n}" != bad ]
        SH
      }
    }
"""


def runbook(queue: str = "", worker: str = "") -> str:
    return RUNBOOK.replace("RETAIN_QUEUE", queue).replace("RETAIN_WORKER", worker)


def drain(project: Project) -> None:
    proc = project.ojd("worker", "w", "--foreground", "--until-idle")
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out


def settled_over(project: Project, seconds: float) -> None:
    """Wait until every item settled at least ``seconds`` ago."""
    last = max(i["updated_at"] for i in project.items("q"))
    wait_until(lambda: time.time() >= last + seconds, "the items to age")


def test_the_workers_policy_wins_over_its_queues_over_the_conf_defaults():
    rb = load(runbook('retain = { done = "1h", dead = "2h" }', 'retain = { done = "1m" }')
              + 'command "x" { run = "true" }\n')
    keep = retention.policy({"done": 9.0, "jobs": 7.0}, rb.queues["q"], rb.workers["w"])
    assert keep == {"done": 60.0, "dead": 7200.0, "jobs": 7.0}


@pytest.mark.parametrize("retain, says", [
    ('{ done = "7d", finished = "1d" }', "unknown retain field 'finished'"),
    ('{ dead = "soon" }', "queue 'q' retain dead: invalid duration"),
])
def test_runbook_check_refuses_a_bad_retain_at_its_line(retain, says):
    out = problems(f'queue "q" {{\n  retain = {retain}\n}}\n')
    assert len(out) == 1 and out[0].startswith("rb.hcl:2:") and says in out[0], out


@pytest.mark.both_stores
def test_a_worker_removes_items_and_jobs_past_their_retention_as_it_polls(project: Project):
    project.write("rb.hcl", runbook('retain = { done = "1s", dead = "1s" }',
                                    'retain = { jobs = "1s" }'))
    for n in ("1", "bad", "2"):
        project.oj("queue", "push", "q", "--var", f"n={n}")
    drain(project)
    logs = [project.state / "logs" / f"{i['job']}.log" for i in project.items("q")]
    assert all(p.exists() for p in logs)
    settled_over(project, 1.0)
    drain(project)  # its first poll applies the policy
    assert project.items("q") == []
    pruned = [i for e in project.events("queue:pruned") for i in e["ids"]]
    assert len(pruned) == 3
    assert sum(len(e["ids"]) for e in project.events("job:pruned")) == 3
    assert not any(p.exists() for p in logs)


@pytest.mark.both_stores
def test_oj_conf_retention_defaults_apply_where_the_runbook_sets_none(project: Project):
    project.write("rb.hcl", runbook())
    project.state.mkdir(parents=True, exist_ok=True)
    conf = project.state / "oj.conf"
    conf.write_text(conf.read_text() if conf.exists() else "")
    with conf.open("a") as f:
        f.write("retain_done = 1s\n")
    for n in ("1", "bad"):
        project.oj("queue", "push", "q", "--var", f"n={n}")
    drain(project)
    settled_over(project, 1.0)
    drain(project)
    assert [i["status"] for i in project.items("q")] == ["dead"]  # dead: no default set
    assert project.events("job:pruned") == []  # nor for jobs


@pytest.mark.both_stores
def test_queue_logs_prints_each_jobs_lines_after_its_id_oldest_first(project: Project):
    project.write("rb.hcl", runbook())
    for n in ("a", "b"):
        project.oj("queue", "push", "q", "--var", f"n={n}")
    drain(project)
    items = sorted(project.items("q"), key=lambda i: i["created_at"])
    out = project.oj("queue", "logs", "q").stdout.splitlines()
    assert {line.split()[0] for line in out} == {i["job"] for i in items}
    hellos = [line for line in out if "hello" in line.split(" ", 1)[1]]
    assert hellos == [f"{items[0]['job']} hello a", f"{items[1]['job']} hello b"]
    firsts = [out.index(next(line for line in out if line.startswith(i["job"])))
              for i in items]
    lasts = [max(n for n, line in enumerate(out) if line.startswith(i["job"])) for i in items]
    assert lasts[0] < firsts[1]  # job after job, not interleaved
    assert project.oj("queue", "logs", "nope", check=False).returncode != 0
