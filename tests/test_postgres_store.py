"""The PostgreSQL store on its own: hosts (here: state dirs) sharing one database never take
an item twice, dedup holds across processes, a state moves between the stores, and a broken
configuration or database is one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import OJ, OJD, Project, asleep_in, wait_until

from ojd.project import project_name

# workers and pushers as processes, also in its WAL-directory runs
pytestmark = pytest.mark.end_to_end

RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      concurrency = 3
      poll        = "200ms"
    }

    pipeline "p" {
      vars = ["item"]
      step "work" {
        run = <<-SHELL
          echo "${var.item.n} $OJ_STATE_DIR" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


def as_host(p: Project, tmp_path: Path, name: str) -> Project:
    """The same project and database, seen from another machine: a state dir of its own
    (worker lock, job logs, step status files), nothing else shared."""
    return Project(p.root, tmp_path / f"host-{name}", url=p.url)


def test_two_hosts_draining_one_queue_take_every_item_exactly_once(postgres, tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    hosts = [as_host(p, tmp_path, "a"), as_host(p, tmp_path, "b")]
    workers = []
    for h in hosts:
        log = open(tmp_path / f"{h.state.name}.log", "w")  # noqa: SIM115
        workers.append(subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                        env=h.env(OJ_HOST=h.state.name), stdout=log,
                                        stderr=subprocess.STDOUT))
        log.close()
    try:
        wait_until(lambda: len(p.events("worker:started")) == 2, "both workers to start")
        # every host's worker, seen from host a: its own live, b's from the shared state
        rows = json.loads(hosts[0].oj("worker", "list", "-o", "json",
                                      OJ_HOST="host-a").stdout)
        assert {(r["host"], r["main_pid"]) for r in rows} == {
            ("host-a", workers[0].pid), ("host-b", workers[1].pid)}
        assert {r["active_state"] for r in rows} == {"foreground", "running"}
        table = hosts[0].oj("worker", "list", OJ_HOST="host-a").stdout.splitlines()
        assert table[0].split()[:3] == ["NAME", "HOST", "STATE"]
        assert sorted(line.split()[1] for line in table[1:]) == ["host-a", "host-b"]
        count = 120
        for i in range(0, count, 40):  # pushes race the takes of both hosts
            pushers = [subprocess.Popen([OJ, "queue", "push", "q", "--var", f"n={n}"],
                                        cwd=p.root, env=p.env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL) for n in range(i, i + 40)]
            assert [x.wait(timeout=60) for x in pushers] == [0] * 40
        wait_until(lambda: sum(i["status"] == "completed" for i in p.items()) == count,
                   "every item to complete", timeout=120)
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=30)
    ran = (p.root / "ran.txt").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in ran) == list(range(count))  # once each
    taken = [e["id"] for e in p.events("queue:taken")]
    assert len(taken) == len(set(taken)) == count
    by_host = {line.split()[1] for line in ran}
    assert by_host == {str(h.state) for h in hosts}  # both hosts drained it


def test_the_same_item_pushed_by_many_processes_at_once_is_queued_once(postgres, tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    hosts = [as_host(p, tmp_path, str(k)) for k in range(8)]
    pushers = [subprocess.Popen([OJ, "queue", "push", "q", '{"n": "same"}'], cwd=p.root,
                                env=h.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for h in hosts]
    outs = [x.communicate(timeout=60) for x in pushers]
    assert all(x.returncode == 0 for x in pushers), outs
    assert len({out for out, _ in outs}) == 1
    assert sum("already queued" in err for _, err in outs) == 7
    assert len(p.events("queue:pushed")) == 1


def test_a_state_moves_from_the_wal_to_postgresql_and_back(postgres, tmp_path):
    wal = Project(tmp_path / "project", tmp_path / "state")
    wal.write("w.hcl", RUNBOOK)
    ids = [wal.oj("queue", "push", "q", "--var", f"n={n}").stdout.strip() for n in range(3)]
    wal.oj("queue", "drop", "q", ids[0])
    proc = wal.ojd("worker", "w", "--foreground", "--until-idle")
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    before = {i["id"]: i["status"] for i in wal.items()}
    jobs = {j["id"]: j["status"] for j in wal.json("job", "list")}
    dump = wal.oj("state", "export").stdout

    pg = Project(wal.root, tmp_path / "pg-state", url=postgres.new_database())
    done = pg.oj("state", "import", input=dump)
    assert "imported the state at position" in done.stderr
    assert {i["id"]: i["status"] for i in pg.items()} == before
    assert {j["id"]: j["status"] for j in pg.json("job", "list")} == jobs
    # appends go on after the imported position; dedup knows the imported items
    new = pg.oj("queue", "push", "q", "--var", "n=9").stdout.strip()
    assert pg.json("state", "check")["ok"]
    again = pg.oj("state", "import", input=dump, check=False)
    assert again.returncode == 1 and "already holds a state" in again.stderr

    back = Project(wal.root, tmp_path / "wal-again")
    back.oj("state", "import", input=pg.oj("state", "export").stdout)
    assert {i["id"] for i in back.items()} == set(before) | {new}
    back.oj("queue", "push", "q", "--var", "n=10")
    check = back.json("state", "check")
    assert check["ok"] and check["store"] == "wal"


def test_state_url_in_the_state_dirs_config_selects_postgresql(postgres, tmp_path):
    url = postgres.new_database()
    p = Project(tmp_path / "project", tmp_path / "state")
    p.write("w.hcl", RUNBOOK)
    p.state.mkdir()
    (p.state / "oj.conf").write_text(f"# where the state lives\nstate_url = {url}\n")
    item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
    assert not (p.state / "wal").exists()
    assert [e["id"] for e in Project(p.root, p.state, url=url).events("queue:pushed")] == [item]
    check = p.json("state", "check")
    assert check["store"] == "postgresql" and check["records"] == 1


def test_a_url_that_is_not_postgresql_or_cannot_be_reached_is_one_line(project: Project,
                                                                        tmp_path):
    project.write("w.hcl", RUNBOOK)
    proc = project.oj("queue", "push", "q", "--var", "n=1", check=False,
                      OJ_STATE_URL="mysql://db/oj")
    assert proc.returncode == 1
    assert proc.stderr == ("oj: state url in OJ_STATE_URL is not a postgresql:// URL; unset "
                           "it to use the state dir's WAL\n")
    proc = project.oj("queue", "list", check=False, OJ_STATE_URL=(
        f"postgresql://oj:secret@/oj?host={tmp_path}/nowhere"))
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("oj: state database postgresql://oj:***@/oj?host=")
    assert "cannot be reached" in proc.stderr and "secret" not in proc.stderr


def test_state_check_on_postgresql_names_a_missing_position_and_repair_acknowledges_it(
        postgres, tmp_path):
    from pgserver import session

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    for n in range(3):
        p.oj("queue", "push", "q", "--var", f"n={n}")
    assert p.json("state", "check")["ok"]
    with session(p.url) as conn:
        conn.execute("DELETE FROM oj_events WHERE pos = 2")
    proc = p.oj("state", "check", check=False)
    assert proc.returncode == 1
    assert "state: PostgreSQL" in proc.stdout.replace("state:     ", "state: ")
    assert "problem:   lost: state position 2 is lost" in proc.stdout
    p.oj("state", "check", "--repair", "--yes")
    out = p.json("state", "check")
    assert out["ok"] and out["acknowledged"] == [[2, 2]]


def test_a_listing_waits_for_no_lock_while_a_decision_holds_the_table(postgres, tmp_path):
    """Readers never lock: a transaction holding the table lock (a stopped writer) delays
    pushes, not listings."""
    from pgserver import session

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    p.oj("queue", "push", "q", "--var", "n=1")
    with session(p.url, transaction=True) as conn:
        conn.execute("LOCK TABLE oj_events IN EXCLUSIVE MODE")
        started = time.monotonic()
        assert len(p.items("q")) == 1
        assert time.monotonic() - started < 5
        proc = p.oj("queue", "push", "q", "--var", "n=2", check=False, OJ_LOCK_TIMEOUT="1")
        assert proc.returncode == 1
        assert "the state lock (table oj_events in" in proc.stderr
        assert "is still held by backend" in proc.stderr
    p.oj("queue", "push", "q", "--var", "n=2")
    assert len(p.items("q")) == 2
    assert json.loads(p.oj("state", "check", "-o", "json").stdout)["records"] == 2


def test_a_push_from_another_host_wakes_an_idle_worker_through_the_database(postgres,
                                                                           tmp_path):
    """The worker's fallback poll is an hour and the pushing host cannot signal it: only
    the NOTIFY of the push's commit can start the step in time."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK.replace('poll        = "200ms"', 'poll        = "1h"'))
    b = as_host(p, tmp_path, "b")
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root, env=b.env(),
                              stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_until(lambda: len(p.events("worker:started")) == 1, "the worker to start")
        wait_until(lambda: asleep_in(worker.pid, "poll"), "the worker to wait")
        ran = p.root / "ran.txt"
        for n in range(3):
            started = time.monotonic()
            p.oj("queue", "push", "q", "--var", f"n={n}")
            wait_until(lambda n=n: ran.exists() and len(ran.read_text().splitlines()) > n,
                       f"item {n} to run on the other host", timeout=10)
            assert time.monotonic() - started < 5
        assert {line.split()[1] for line in ran.read_text().splitlines()} == {str(b.state)}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


LEASED = r"""
    queue "q" {
      vars = ["n"]
    }

    worker "w" {
      source      = { queue = "q" }
      handler     = { pipeline = "p" }
      poll        = "200ms"
      lease       = "3s"
    }

    pipeline "p" {
      vars = ["item"]
      step "work" {
        run = <<-SHELL
          echo "$OJ_HOST start" >> "${invoke.dir}/ran.txt"
          if [ "$OJ_HOST" = a ]; then sleep 60; fi
          echo "$OJ_HOST end" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


def test_a_host_frozen_past_its_lease_loses_its_item_to_another_host_and_its_writes_after(
        postgres, tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", LEASED)
    a, b = as_host(p, tmp_path, "a"), as_host(p, tmp_path, "b")
    ran = p.root / "ran.txt"
    workers = {}

    def start(host: Project, name: str) -> None:
        with open(tmp_path / f"worker-{name}.log", "w") as log:
            workers[name] = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                             env=host.env(OJ_HOST=name), stdout=log,
                                             stderr=subprocess.STDOUT)

    start(a, "a")
    frozen: list[int] = []
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: ran.exists() and "a start" in ran.read_text(), "the step on a")
        job = p.events("job:process")[0]
        step = p.events("job:step_started")[0]
        assert job["host"] == step["host"] == "a"
        # host a freezes: its worker, its job process and its step stop answering
        frozen = [workers["a"].pid, job["pid"]]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        os.killpg(step["pid"], signal.SIGSTOP)
        refused = b.oj("job", "resume", job["id"], check=False, OJ_HOST="b")
        assert refused.returncode == 1
        assert f"job {job['id']} runs on host a (process {job['pid']})" in refused.stderr
        start(b, "b")
        wait_until(lambda: "b end" in ran.read_text(), "host b to run the step", timeout=30)
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete on b")
        assert len(p.events("queue:lease_expired")) == 1
        # host a wakes: its lease has moved, so nothing it does is recorded any more
        os.killpg(step["pid"], signal.SIGCONT)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        frozen = []
        wait_until(lambda: not os.path.exists(f"/proc/{job['pid']}"),
                   "a's job process to give up", timeout=30)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        for w in workers.values():
            w.terminate()
            w.wait(timeout=30)
    assert ran.read_text().splitlines() == ["a start", "b start", "b end"]
    assert [e["id"] for e in p.events("queue:completed")] == [item]
    assert len(p.events("job:finished")) == 1
    assert p.json("queue", "show", item)["attempts"] == 1  # the lost lease counted no attempt
    a_log = (a.state / "logs" / f"{job['id']}.log").read_text() + (
        tmp_path / "worker-a.log").read_text()
    assert "lease of item" in a_log and "lost" in a_log, a_log
    assert "stopped: " in a_log


def test_a_job_running_longer_than_its_lease_keeps_it_by_renewing(postgres, tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", LEASED.replace('"$OJ_HOST" = a ]; then sleep 60',
                                    '"$OJ_HOST" = a ]; then sleep 5'))
    proc = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                            env=p.env(OJ_HOST="a"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the item to complete", timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert p.events("queue:lease_expired") == []
    assert len([e for e in p.events("queue:lease_renewed") if e["id"] == item]) >= 3
    assert (p.root / "ran.txt").read_text().splitlines() == ["a start", "a end"]
    assert p.events("queue:taken")[0]["lease"] == 3


def test_job_logs_on_another_host_name_the_host_that_has_the_log(postgres, tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK.replace('echo "${var.item.n}', 'echo said; echo "${var.item.n}'))
    a, b = as_host(p, tmp_path, "a"), as_host(p, tmp_path, "b")
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                  env=a.env(OJ_HOST="host-a"), stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        b.oj("queue", "push", "q", "--var", "n=1", OJ_HOST="host-b")
        wait_until(lambda: p.events("job:finished"), "the job to end on host a")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    job_id = p.events("job:finished")[0]["id"]
    here = a.oj("job", "logs", job_id, OJ_HOST="host-a")
    assert "said\n" in here.stdout and here.stderr == ""
    there = b.oj("job", "logs", job_id, check=False, OJ_HOST="host-b")
    assert there.returncode == 1 and there.stdout == ""
    assert there.stderr.splitlines() == [
        f"oj: the log of job {job_id} is on host host-a: run 'oj job logs {job_id}' there"]
    shown = b.oj("job", "show", job_id, OJ_HOST="host-b").stdout
    assert re.search(r"^  work +ok +[0-9.]+s +on host-a$", shown, re.M), shown


def test_a_slot_freed_while_the_worker_reads_another_commit_is_filled_at_once(postgres,
                                                                             tmp_path):
    """Every commit wakes a listening worker; a job that ends in the moment the worker reads
    such a notification still gets its slot filled, not at the fallback poll a minute
    later. A backlog pushed at once (one wake) and run one by one: each end is that race."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK.replace('"200ms"', '"60s"').replace("concurrency = 3",
                                                                 "concurrency = 1"))
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                  env=p.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: p.events("worker:started"), "the worker to start")
        from ojd import project as projects
        from ojd import queues
        from ojd.store import Store

        store = Store(str(p.state), url=p.url)
        store.load()
        queue = projects.load(str(p.root)).queues["q"]
        for n in range(120):
            queues.push(store, str(p.root), queue, {"n": str(n)})
        wait_until(lambda: len(p.events("queue:completed")) == 120, "120 items in turn",
                   timeout=50)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_ctrl_c_stops_a_push_waiting_for_the_state_lock_at_once_and_pushes_nothing(
        postgres, tmp_path):
    from pgserver import session

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    p.oj("queue", "push", "q", "--var", "n=1")
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'oj' "
               "AND wait_event_type = 'Lock'")
    with session(p.url, transaction=True) as holder, session(p.url) as watcher:
        holder.execute("LOCK TABLE oj_events IN EXCLUSIVE MODE")
        push = subprocess.Popen([OJ, "queue", "push", "q", "--var", "n=2"], cwd=p.root,
                                env=p.env(OJ_LOCK_TIMEOUT="60"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        wait_until(lambda: watcher.execute(waiting).rows[0][0] == 1,
                   "the push to wait for the table lock")
        started = time.monotonic()
        push.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = push.communicate(timeout=30)
        assert time.monotonic() - started < 2
        assert push.returncode == 130 and "Traceback" not in err, err
        wait_until(lambda: watcher.execute(waiting).rows[0][0] == 0,
                   "the server to end the interrupted session's wait")
    assert [i["data"]["n"] for i in p.items("q")] == ["1"]
    p.oj("queue", "push", "q", "--var", "n=3")
    assert [i["data"]["n"] for i in p.items("q")] == ["1", "3"]


def test_a_decision_the_database_refuses_at_commit_is_one_line_and_leaves_no_trace(
        postgres, tmp_path):
    from pgserver import session

    from ojd import project as projects
    from ojd import queues
    from ojd.errors import OjError
    from ojd.store import Store

    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    p.oj("queue", "push", "q", "--var", "n=1")
    with session(p.url) as conn:  # checked at COMMIT, not at INSERT
        conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
              IF NEW.event LIKE '%refuse-me%' THEN RAISE EXCEPTION 'refused by a trigger';
              END IF; RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON oj_events
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse();""")
    proc = p.oj("queue", "push", "q", "--var", "n=refuse-me", check=False)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "did not commit: refused by a trigger" in proc.stderr
    store = Store(str(p.state), url=p.url)
    store.load()
    queue = projects.load(str(p.root)).queues["q"]
    with pytest.raises(OjError, match="did not commit"):
        queues.push(store, str(p.root), queue, {"n": "refuse-me"})
    # what this process applied of the refused transaction is forgotten: it reloads
    queues.push(store, str(p.root), queue, {"n": "2"})
    assert sorted(i["data"]["n"] for i in store.refresh().items.values()) == ["1", "2"]
    assert sorted(i["data"]["n"] for i in p.items("q")) == ["1", "2"]
    assert p.json("state", "check")["ok"]


def test_an_import_the_database_refuses_at_commit_is_an_error_not_a_success(postgres,
                                                                            tmp_path):
    from pgserver import session

    wal = Project(tmp_path / "project", tmp_path / "state")
    wal.write("w.hcl", RUNBOOK)
    wal.oj("queue", "push", "q", "--var", "n=1")
    dump = wal.oj("state", "export").stdout
    pg = Project(wal.root, tmp_path / "pg-state", url=postgres.new_database())
    pg.oj("queue", "list")  # makes the tables
    with session(pg.url) as conn:  # checked at COMMIT
        conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
              RAISE EXCEPTION 'refused by a trigger'; END $$;
            CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON oj_snapshots
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse();""")
    proc = pg.oj("state", "import", input=dump, check=False)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "did not commit: refused by a trigger" in proc.stderr
    assert pg.items() == []


def test_passwords_in_a_url_are_never_shown(postgres, tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state")
    p.write("w.hcl", RUNBOOK)
    for url in (f"postgresql:///oj?host={tmp_path}/nowhere&password=hunter2",
                f"postgresql:///oj?host={tmp_path}/nowhere&sslpassword=hunter2",
                f"postgresql://oj:hunter2@/oj?host={tmp_path}/nowhere"):
        proc = p.oj("queue", "list", check=False, OJ_STATE_URL=url)
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "cannot be reached" in proc.stderr and "hunter2" not in proc.stderr
    url = postgres.new_database() + "&password=hunter2&sslpassword=hunter3"  # trust: ignored
    p.oj("queue", "push", "q", "--var", "n=1", OJ_STATE_URL=url)
    check = p.oj("state", "check", OJ_STATE_URL=url).stdout
    as_json = p.oj("state", "check", "-o", "json", OJ_STATE_URL=url).stdout
    for text in (check, as_json):
        assert "password=***" in text and "sslpassword=***" in text
        assert "hunter" not in text


def test_a_local_job_stuck_past_its_lease_keeps_its_item_and_holds_up_nothing_behind_it(
        postgres, tmp_path):
    """Its host sees its process alive: the lease is not expired from here (another host
    may, as it cannot see the process), and the next item runs in the other slot."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", LEASED.replace('poll        = "200ms"',
                                    'poll        = "200ms"\n      concurrency = 2')
            .replace('"$OJ_HOST" = a ]', '"${var.item.n}" = 1 ]'))
    proc = subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                            env=p.env(OJ_HOST="a"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    stuck = None
    try:
        first = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: p.events("job:process"), "the first job to start")
        stuck = p.events("job:process")[0]["pid"]
        os.kill(stuck, signal.SIGSTOP)  # its lease goes unrenewed, its process stays
        taken = p.events("queue:taken")[0]
        wait_until(lambda: time.time() > taken["ts"] + taken["lease"] + 1,
                   "the lease to run out", timeout=30)
        second = p.oj("queue", "push", "q", "--var", "n=2").stdout.strip()
        wait_until(lambda: p.json("queue", "show", second)["status"] == "completed",
                   "the item behind the stuck one to run", timeout=30)
        assert p.json("queue", "show", first)["status"] == "active"
        assert p.events("queue:lease_expired") == []
    finally:
        if stuck is not None:  # its step sleeps on: it would outlive the test's database
            os.kill(stuck, signal.SIGKILL)
        proc.terminate()
        proc.wait(timeout=30)


SLOW = r"""
    command "slow" {
      args = ""
      run  = { pipeline = "slow" }
    }

    pipeline "slow" {
      step "wait" {
        run = <<-SHELL
          while [ ! -e "${invoke.dir}/go-$OJ_HOST" ]; do sleep 0.05; done
          echo "$OJ_HOST" >> "${invoke.dir}/ran.txt"
        SHELL
      }
    }
    """


def test_a_job_without_a_lease_on_a_host_gone_is_cancelled_and_resumed_here(postgres,
                                                                            tmp_path):
    """No lease expires for an `oj run` job: the refusal says how to take it over."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("slow.hcl", SLOW)
    a, b = as_host(p, tmp_path, "a"), as_host(p, tmp_path, "b")
    job_id = a.oj("run", "--detach", "slow", OJ_HOST="a").stdout.strip()
    wait_until(lambda: p.events("job:step_started"), "the step to start on a")
    frozen = [p.events("job:process")[0]["pid"]]
    os.kill(frozen[0], signal.SIGSTOP)  # host a is gone
    os.killpg(p.events("job:step_started")[0]["pid"], signal.SIGSTOP)
    try:
        refused = b.oj("job", "resume", job_id, check=False, OJ_HOST="b")
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
        assert f"runs on host a (process {frozen[0]})" in refused.stderr
        assert f"oj job cancel {job_id}, then oj job resume {job_id}" in refused.stderr
        assert "lease" not in refused.stderr
        b.oj("job", "cancel", job_id, OJ_HOST="b")
        b.oj("job", "resume", job_id, "--detach", OJ_HOST="b")
        (p.root / "go-b").touch()
        wait_until(lambda: p.json("job", "show", job_id)["status"] == "done",
                   "the job to end on b", timeout=30)
    finally:
        os.killpg(p.events("job:step_started")[0]["pid"], signal.SIGKILL)
        for pid in frozen:
            os.kill(pid, signal.SIGKILL)
    assert (p.root / "ran.txt").read_text() == "b\n"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_lock_timeout_that_is_not_a_number_of_seconds_is_one_line(postgres, tmp_path,
                                                                     value):
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK)
    proc = p.oj("queue", "push", "q", "--var", "n=1", check=False, OJ_LOCK_TIMEOUT=value)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"oj: OJ_LOCK_TIMEOUT={value!r} is not a number of seconds; "
                           "e.g. 30\n")


def test_an_import_whose_position_is_not_a_number_is_refused(postgres, tmp_path):
    wal = Project(tmp_path / "project", tmp_path / "state")
    wal.write("w.hcl", RUNBOOK)
    wal.oj("queue", "push", "q", "--var", "n=1")
    doc = json.loads(wal.oj("state", "export").stdout)
    doc["pos"] = True
    pg = Project(wal.root, tmp_path / "pg-state", url=postgres.new_database())
    proc = pg.oj("state", "import", input=json.dumps(doc), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("oj: cannot import: no position and state in it")
    assert pg.items() == []


@pytest.mark.both_stores
def test_an_import_at_a_position_with_no_room_after_it_is_refused(state_url, tmp_path):
    """A log runs out of positions (PostgreSQL's bigint, the WAL's 16-digit segment names):
    a state past 2**53 is refused in one line, both stores alike, with nothing written; one
    at the limit imports, and appends go on after it."""
    wal = Project(tmp_path / "project", tmp_path / "state")
    wal.write("w.hcl", RUNBOOK)
    wal.oj("queue", "push", "q", "--var", "n=1")
    doc = json.loads(wal.oj("state", "export").stdout)
    target = Project(wal.root, tmp_path / "target", url=state_url)
    for pos in (2**53 + 1, 2**63 - 1, 2**80):
        doc["pos"] = pos
        proc = target.oj("state", "import", input=json.dumps(doc), check=False)
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"oj: cannot import: position {pos} is above "
                                      "9007199254740992 (2**53), the highest a state can be "
                                      "imported at"), proc.stderr
        check = target.json("state", "check")
        assert (check["records"], check["last_pos"], check["snapshot_pos"]) == (0, 0, None)
        assert not list((target.state / "wal").glob("seg-*"))  # not even a misnamed one
    doc["pos"] = 2**53
    target.oj("state", "import", input=json.dumps(doc))
    target.oj("queue", "push", "q", "--var", "n=2")
    check = target.json("state", "check")
    assert check["ok"] and check["last_pos"] == 2**53 + 1
    assert sorted(i["data"]["n"] for i in target.items("q")) == ["1", "2"]


def test_an_export_while_jobs_run_warns_that_they_are_not_done_yet(tmp_path):
    p = Project(tmp_path / "project", tmp_path / "state")
    p.write("slow.hcl", SLOW)
    job_id = p.oj("run", "--detach", "slow", OJ_HOST="a").stdout.strip()
    try:
        wait_until(lambda: p.events("job:step_started"), "the step to start")
        running = p.oj("state", "export")
        assert json.loads(running.stdout)["oj_state"] == 1
        assert running.stderr.startswith(f"oj: warning: 1 job(s) still running ({job_id})")
        assert "stop the workers and wait for their jobs to end" in running.stderr
    finally:
        (p.root / "go-a").touch()
    wait_until(lambda: p.json("job", "show", job_id)["status"] == "done", "the job to end")
    assert p.oj("state", "export").stderr == ""


def test_a_job_resumed_by_its_restarted_worker_after_its_lease_ran_out_keeps_its_item(
        postgres, tmp_path):
    """The resumed job's process renews the lease from its own start: its item does not
    expire at once under it (to be run again beside it). The step died with its job's
    process (kill -9), so it runs again, once."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", LEASED.replace('if [ "$OJ_HOST" = a ]; then sleep 60; fi', "sleep 6"))
    ran = p.root / "ran.txt"

    def start() -> subprocess.Popen:
        with open(tmp_path / "worker.log", "a") as log:
            return subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                    env=p.env(OJ_HOST="a"), stdout=log,
                                    stderr=subprocess.STDOUT)

    worker = start()
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: ran.exists() and "a start" in ran.read_text(), "the step")
        os.kill(worker.pid, signal.SIGKILL)  # the worker and its job die, the step with them
        worker.wait(timeout=30)
        os.kill(p.events("job:process")[0]["pid"], signal.SIGKILL)
        step = p.events("job:step_started")[0]["pid"]
        wait_until(lambda: not group_alive(step), "the step to die with its job's process")
        [taken] = p.events("queue:taken")
        renewed = [e["ts"] for e in p.events("queue:lease_renewed")]
        wait_until(lambda: time.time() > max([taken["ts"], *renewed]) + taken["lease"],
                   "the lease to run out, with no renewal since")
        worker = start()
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "the resumed job to complete its item", timeout=30)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert p.events("queue:lease_expired") == []
    assert ran.read_text().splitlines() == ["a start", "a start", "a end"]
    assert len(p.events("job:finished")) == 1


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_step_dies_with_its_killed_job_process_before_another_host_runs_it_again(
        postgres, tmp_path):
    """An OOM kill takes a host's worker and job process: the step goes with them, so the
    host that takes the job over after the lease runs it alone."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", LEASED.replace('if [ "$OJ_HOST" = a ]; then sleep 60; fi',
                                    'if [ "$OJ_HOST" = a ]; then sleep 60 & wait; fi'))
    a, b = as_host(p, tmp_path, "a"), as_host(p, tmp_path, "b")
    ran = p.root / "ran.txt"
    workers: list[subprocess.Popen] = []

    def start(host: Project, name: str) -> None:
        with open(tmp_path / f"worker-{name}.log", "w") as log:
            workers.append(subprocess.Popen([OJD, "worker", "w", "--foreground"], cwd=p.root,
                                            env=host.env(OJ_HOST=name), stdout=log,
                                            stderr=subprocess.STDOUT))

    start(a, "a")
    step = None
    try:
        item = p.oj("queue", "push", "q", "--var", "n=1").stdout.strip()
        wait_until(lambda: ran.exists() and "a start" in ran.read_text(), "the step on a")
        step = p.events("job:step_started")[0]["pid"]
        os.kill(workers[0].pid, signal.SIGKILL)
        os.kill(p.events("job:process")[0]["pid"], signal.SIGKILL)
        wait_until(lambda: not group_alive(step), "the step to die with its job's process")
        step = None
        start(b, "b")
        wait_until(lambda: p.json("queue", "show", item)["status"] == "completed",
                   "host b to run the job to its end", timeout=60)
    finally:
        if step is not None and group_alive(step):
            os.killpg(step, signal.SIGKILL)
        for w in workers:
            w.kill()
            w.wait(timeout=30)
    assert ran.read_text().splitlines() == ["a start", "b start", "b end"]
    assert len(p.events("job:finished")) == 1


def test_a_queue_paused_on_one_host_is_not_taken_by_a_worker_on_another(postgres, tmp_path):
    """The pause is read in the take's transaction: a worker elsewhere, woken by the push's
    NOTIFY, takes nothing until the resume's NOTIFY."""
    p = Project(tmp_path / "project", tmp_path / "state", url=postgres.new_database())
    p.write("w.hcl", RUNBOOK.replace('poll        = "200ms"', 'poll        = "1h"'))
    b = as_host(p, tmp_path, "b")
    worker = b.ojd("worker", "w", "--foreground")
    try:
        wait_until(lambda: len(p.events("worker:started")) == 1, "the worker to start")
        wait_until(lambda: asleep_in(worker.pid, "poll"), "the worker to wait")
        p.oj("queue", "pause", "q")
        # a poll touches its lock, named by the worker's full name
        lock = b.state / "workers" / f"{project_name(str(p.root))}:w.lock"
        polled = lock.stat().st_mtime_ns
        p.oj("queue", "push", "q", "--var", "n=1")
        wait_until(lambda: lock.stat().st_mtime_ns != polled, "the push to wake the worker")
        wait_until(lambda: asleep_in(worker.pid, "poll"), "the worker to wait again")
        assert p.events("queue:taken") == []
        assert [i["status"] for i in p.items("q")] == ["pending"]
        p.oj("queue", "resume", "q")
        wait_until(lambda: len(p.events("queue:taken")) == 1, "the take after the resume",
                   timeout=10)
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
    assert "Traceback" not in out
