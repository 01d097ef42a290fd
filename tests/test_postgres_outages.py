"""The PostgreSQL store when the database is slow or away: a state lock held too long or a
lost connection stalls a job until the database answers again, and never ends a worker."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import OJD, Project, wait_until

GATED = r"""
    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      poll        = "200ms"
    }

    pipeline "p" {
      vars = ["item"]
      step "work" {
        run     = <<-SHELL
          while [ ! -e "${invoke.dir}/go" ]; do sleep 0.05; done
        SHELL
        on_done = { step = "after" }
      }
      step "after" {
        run = "echo after >> '${invoke.dir}/ran.txt'"
      }
    }
    """


def start_worker(p: Project, tmp_path: Path, **env: str) -> subprocess.Popen:
    with open(tmp_path / "worker.log", "w") as log:
        return subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                env=p.env(**env), stdout=log, stderr=subprocess.STDOUT)


def stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    worker.wait(timeout=30)


def test_a_step_end_waits_out_a_state_lock_held_past_the_lock_timeout(postgres, tmp_path):
    import psycopg

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    worker = start_worker(p, tmp_path, OJ_LOCK_TIMEOUT="1")
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.events("job:step_started"), "the first step to start")
        job_id = p.events("job:step_started")[0]["id"]
        with psycopg.connect(p.url) as conn:  # another host's decision, frozen
            conn.execute("LOCK TABLE oj_events IN EXCLUSIVE MODE")
            (p.root / "go").touch()
            time.sleep(3.5)  # three lock timeouts of the step's end
            assert p.json("job", "show", job_id)["status"] == "running"
            assert not (p.root / "ran.txt").exists()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete once the lock is released", timeout=30)
        assert worker.poll() is None
    finally:
        stop(worker)
    assert p.json("job", "show", job_id)["status"] == "done"
    assert (p.root / "ran.txt").read_text() == "after\n"
    log = (p.state / "logs" / f"{job_id}.log").read_text()
    assert "Traceback" not in (tmp_path / "worker.log").read_text() + log


def test_a_worker_and_its_job_outlive_their_database_connections_being_cut(postgres,
                                                                           tmp_path):
    import psycopg

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", GATED)
    worker = start_worker(p, tmp_path)
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.events("job:step_started"), "the first step to start")
        job_id = p.events("job:step_started")[0]["id"]
        with psycopg.connect(p.url, autocommit=True) as conn:
            cut = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                               "application_name LIKE 'oj%' AND pid <> pg_backend_pid()"
                               ).fetchall()
        assert cut
        time.sleep(0.5)  # the worker's status refreshes meet the cut connection
        (p.root / "go").touch()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete over new connections", timeout=30)
        assert worker.poll() is None
        second = p.oj("queue", "push", "q", "--var", "n=2").stdout.strip()
        wait_until(lambda: p.json("queue", "show", second)["status"] == "completed",
                   "the worker to take the next item")
    finally:
        stop(worker)
    assert p.json("job", "show", job_id)["status"] == "done"
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
