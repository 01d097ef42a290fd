"""Workers on a machine without systemd: `ojd worker --foreground` as a first-class worker
(pushes wake it, listings show it, Ctrl-C stops it as a terminal user expects), `oj worker`
commands that say what works there, and runbooks reloaded by a running worker.

"Without systemd" is made certain even on a host that has one: `oj` runs in a private mount
namespace with an empty /run (no manager socket, no bus) and a scratch directory over
/etc/systemd/system (so nothing written there reaches the host).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import OJ, Project, asleep_in, require, wait_until

pytestmark = pytest.mark.both_stores

RUNBOOK = r"""
    queue "q" {
      vars = ["n"]
    }
    worker "w" {
      source  = { queue = "q" }
      handler = { pipeline = "p" }
      poll    = "1h"
    }
    pipeline "p" {
      vars = ["item"]
      STEPS
    }
    """
ONE_STEP = r"""
      step "one" {
        run = "echo ${var.item.n} >> ${invoke.dir}/out.txt"
      }"""


def runbook(steps: str = ONE_STEP) -> str:
    return RUNBOOK.replace("      STEPS", steps.strip("\n"))


class Foreground:
    """`ojd worker NAME --foreground` as a terminal runs it; its output collected as it comes."""

    def __init__(self, project: Project, name: str, *args: str, **env: str) -> None:
        self.proc = project.ojd("worker", name, "--foreground", *args, **env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        wait_until(lambda: text in self.output, f"{text!r} in the worker's output:\n"
                   f"{self.output}", timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def started(project: Project):
    """A project whose worker `w` runs in the foreground (poll 1 h: only wakes make it poll)."""
    project.write("w.hcl", runbook())
    worker = Foreground(project, "w")
    worker.wait_for("ready: queue 'q'")
    yield project, worker
    worker.stop()


def out(project: Project) -> list[str]:
    path = project.root / "out.txt"
    return path.read_text().splitlines() if path.exists() else []


def without_systemd(project: Project, tmp_path: Path, *args: str, manager_runs: bool = False,
                    **env: str) -> subprocess.CompletedProcess[str]:
    """`oj ARGS` as on a machine (or for a user) without a systemd manager."""
    # justified: a private mount namespace needs root: skipped on a developer's run, failed
    # in CI
    require(os.geteuid() == 0 and shutil.which("unshare") is not None,
            "a private mount namespace needs root and unshare")
    etc = tmp_path / "etc-systemd-system"
    runtime = tmp_path / "runtime"
    etc.mkdir(exist_ok=True)
    runtime.mkdir(exist_ok=True)
    # manager_runs: the system manager is up (/run/systemd/system) but this user has none
    script = ("mount -t tmpfs oj-test /run && mount --bind \"$OJ_TEST_ETC\" /etc/systemd/system"
              + (" && mkdir -p /run/systemd/system" if manager_runs else "")
              + ' && exec "$@"')
    environ = project.env(OJ_TEST_ETC=str(etc), XDG_RUNTIME_DIR=str(runtime),
                          XDG_CONFIG_HOME=str(tmp_path / "config"), **env)
    for name in ("DBUS_SYSTEM_BUS_ADDRESS", "DBUS_SESSION_BUS_ADDRESS"):
        environ.pop(name, None)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script, "sh", OJ, *args], cwd=project.root, env=environ,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# -- oj worker without a manager -------------------------------------------------------------


def test_worker_start_without_a_manager_writes_nothing_and_names_the_foreground_command(
        project: Project, tmp_path: Path):
    project.write("w.hcl", runbook())
    proc = without_systemd(project, tmp_path, "worker", "start", "w")
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith("oj: no systemd system manager answers here (")
    assert "'ojd worker w --foreground'" in line and "--until-idle" in line
    assert list((tmp_path / "etc-systemd-system").iterdir()) == []  # no drop-in
    assert project.events("worker:recorded") == []


def test_user_without_a_user_manager_is_told_about_linger(project: Project, tmp_path: Path):
    project.write("w.hcl", runbook())
    proc = without_systemd(project, tmp_path, "worker", "start", "--user", "w",
                           manager_runs=True)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert "no systemd user manager runs for root" in line
    assert "'loginctl enable-linger root'" in line and "'ojd worker w --foreground'" in line
    assert not (tmp_path / "config" / "systemd").exists()  # no drop-in
    assert project.events("worker:recorded") == []


@pytest.mark.parametrize("command", ["stop", "restart", "enable", "disable"])
def test_other_worker_commands_without_a_manager_are_one_line(project: Project,
                                                               tmp_path: Path, command):
    project.write("w.hcl", runbook())
    proc = without_systemd(project, tmp_path, "worker", command, "w")
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith("oj: no systemd system manager answers here (")
    assert "'ojd worker w --foreground'" in line
    assert list((tmp_path / "etc-systemd-system").iterdir()) == []
    assert project.events("worker:recorded") == []


def test_worker_logs_without_a_manager_says_where_foreground_logs_go(project: Project,
                                                                      tmp_path: Path):
    project.write("w.hcl", runbook())
    proc = without_systemd(project, tmp_path, "worker", "logs", "w")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "oj: no systemd system manager runs here, so no journal holds worker logs; a worker "
        "run with 'ojd worker w --foreground' logs to its own stderr"]


# -- a foreground worker is a worker like any other ---------------------------------------------


def test_push_wakes_a_foreground_worker_and_list_shows_it_with_its_pid(started, tmp_path):
    project, worker = started
    proc = without_systemd(project, tmp_path, "queue", "push", "q", '{"n": "1"}')
    assert proc.returncode == 0, proc.stderr
    assert "no worker was woken" not in proc.stderr
    # the fallback poll is an hour away: only the push's wake-up runs the item this soon
    wait_until(lambda: out(project) == ["1"], "the pushed item to run")
    [row] = project.json("worker", "list")
    assert (row["active_state"], row["main_pid"]) == ("foreground", worker.proc.pid)
    table = project.oj("worker", "list").stdout.splitlines()
    # a shared store (PostgreSQL) lists the workers of every host: a HOST column
    expected = ["w", "foreground"] if project.url is None else [
        "w", os.uname().nodename, "foreground"]
    assert table[1].split()[:len(expected)] == expected
    assert str(worker.proc.pid) in table[1].split()


@pytest.mark.wal_only  # with PostgreSQL the commit itself wakes it (test_postgres_store)
def test_worker_start_wakes_a_foreground_worker_without_a_manager(started, tmp_path):
    from ojd import queues
    from ojd.store import Store

    project, worker = started
    store = Store(str(project.state), url=project.url or "")
    store.load()
    # queued without the push's wake-up: only the start below can make the worker poll
    queues.push(store, str(project.root), queues.QueueSpec("q", "persisted", ["n"], {}),
                {"n": "1"})
    # in its wait, the item there: it has nothing to poll for
    wait_until(lambda: asleep_in(worker.proc.pid, "poll"), "the worker to wait")
    assert out(project) == []
    proc = without_systemd(project, tmp_path, "worker", "start", "w")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Worker 'w' was already running; woken\n"
    wait_until(lambda: out(project) == ["1"], "the item to run after the wake-up")
    assert len(project.events("worker:woken")) == 1


def test_worker_start_run_as_on_a_foreground_worker_is_refused(started, tmp_path):
    project, worker = started
    proc = without_systemd(project, tmp_path, "worker", "start", "--run-as", "root", "w")
    assert proc.returncode == 2
    assert proc.stderr == (f"oj: worker 'w' runs in the foreground (PID {worker.proc.pid}), "
                           "as whoever started it; --run-as is for its unit: stop it first\n")
    assert project.events("worker:woken") == [] and worker.proc.poll() is None


def test_worker_stop_stops_a_foreground_worker(started, tmp_path):
    project, worker = started
    proc = without_systemd(project, tmp_path, "worker", "stop", "w")
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stdout
    assert worker.wait(timeout=5) == 0
    assert worker.output.rstrip().endswith("stopped")


def test_push_with_no_worker_running_names_a_command_that_works_here(project: Project,
                                                                      tmp_path: Path):
    project.write("w.hcl", runbook())
    listed = without_systemd(project, tmp_path, "worker", "list")
    assert listed.stdout.strip() == ("no workers (no systemd here: run one with "
                                     "'ojd worker NAME --foreground')")
    ran = project.ojd("worker", "w", "--foreground", "--until-idle")
    assert ran.wait(timeout=30) == 0
    proc = without_systemd(project, tmp_path, "queue", "push", "q", '{"n": "1"}')
    assert proc.returncode == 0
    assert ("oj: no worker was woken: 'w' not running; no systemd here: run "
            "'ojd worker w --foreground' in the project") in proc.stderr


def test_push_to_a_queue_whose_worker_never_started_names_it_and_how_to_start_it(
        project: Project, tmp_path: Path):
    # the runbook defines the worker; nothing has recorded it yet
    project.write("w.hcl", runbook())
    proc = without_systemd(project, tmp_path, "queue", "push", "q", '{"n": "1"}')
    assert proc.returncode == 0
    assert proc.stderr == ("oj: no worker was woken: 'w' not running; no systemd here: run "
                           "'ojd worker w --foreground' in the project\n")


def test_retry_wakes_the_queues_worker_as_a_push_does(started, tmp_path):
    from ojd import events
    from ojd.store import Store

    project, worker = started
    store = Store(str(project.state), url=project.url or "")
    store.load()
    # a dead item, recorded straight to the log: nothing of it wakes the worker
    with store.transaction() as tx:
        tx.append(events.queue_pushed(id="i1", project=str(project.root), queue="q",
                                      data={"n": "7"}, key="k7"),
                  events.queue_failed(id="i1", error="boom", dead=True, retry_at=None))
    assert project.json("queue", "show", "i1")["status"] == "dead"
    proc = without_systemd(project, tmp_path, "queue", "retry", "q", "i1")
    assert proc.returncode == 0, proc.stderr
    assert "no worker was woken" not in proc.stderr
    # the fallback poll is an hour away: only the retry's wake-up runs the item this soon
    wait_until(lambda: out(project) == ["7"], "the retried item to run")


def test_a_recycled_pid_in_a_stale_lock_file_is_never_signalled(project: Project):
    project.write("w.hcl", runbook())
    assert project.ojd("worker", "w", "--foreground", "--until-idle").wait(timeout=30) == 0
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # the lock file names a live process, but not the one that wrote it: its start
        # time differs (SIGUSR1 would kill a sleep)
        (project.state / "workers" / "w.lock").write_text(f"{bystander.pid} 1\n")
        wait_until(lambda: asleep_in(bystander.pid, "nanosleep"), "the bystander to sleep")
        proc = project.oj("queue", "push", "q", '{"n": "1"}')
        assert "no worker was woken: 'w' not running" in proc.stderr
        # a signal sent is pending until it kills: still asleep, with none, it got none
        assert asleep_in(bystander.pid, "nanosleep")
        [row] = project.json("worker", "list")
        assert row["active_state"] != "foreground"
    finally:
        bystander.kill()
        bystander.wait()


# -- Ctrl-C ---------------------------------------------------------------------------------------


def test_ctrl_c_with_nothing_running_exits_130(started):
    project, worker = started
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 130


def test_ctrl_c_stops_a_foreground_worker_at_once_and_its_job_runs_on_to_the_end(
        project: Project):
    project.write("w.hcl", runbook(r"""
      step "one" {
        run     = "echo one >> out.txt; until [ -e go ]; do sleep 0.05; done"
        on_done = { step = "two" }
      }
      step "two" {
        run = "echo two >> ${invoke.dir}/out.txt"
      }"""))
    worker = Foreground(project, "w")
    try:
        worker.wait_for("ready: queue 'q'")
        project.oj("queue", "push", "q", '{"n": "1"}')
        wait_until(lambda: out(project) == ["one"], "step one to start")
        worker.signal(signal.SIGINT)
        assert worker.wait(timeout=5) == 130
    finally:
        worker.stop()
    assert "1 job(s) keep running in their own processes" in worker.output
    (project.root / "go").touch()
    wait_until(lambda: project.items()[0]["status"] == "completed", "the item to complete")
    assert out(project) == ["one", "two"]
    [job] = project.json("job", "list")
    assert (job["status"], [h["step"] for h in job["history"]]) == ("done", ["one", "two"])


def test_a_new_worker_after_a_kill_9_waits_for_the_running_step_and_never_overlaps_it(
        project: Project):
    project.write("w.hcl", runbook(r"""
      step "one" {
        run = <<-SHELL
          echo "start ${var.item.n}" >> ${invoke.dir}/out.txt
          until [ -e ${invoke.dir}/go ]; do sleep 0.05; done
          echo "end ${var.item.n}" >> ${invoke.dir}/out.txt
        SHELL
      }"""))
    worker = Foreground(project, "w")
    try:
        worker.wait_for("ready: queue 'q'")
        project.oj("queue", "push", "q", '{"n": "1"}')
        wait_until(lambda: out(project) == ["start 1"], "the step to start")
        worker.signal(signal.SIGKILL)
        worker.wait(timeout=5)
    finally:
        worker.stop()
    again = Foreground(project, "w")
    try:
        again.wait_for("ready: queue 'q'")
        assert "watching it" in again.output
        # back in its wait after its first poll, which found the item's job running
        wait_until(lambda: asleep_in(again.proc.pid, "poll"), "the worker to poll")
        assert out(project) == ["start 1"]  # not started beside itself
        (project.root / "go").touch()
        wait_until(lambda: project.items()[0]["status"] == "completed", "the item to complete")
    finally:
        again.stop()
    assert out(project) == ["start 1", "end 1"]
    [item] = project.items()
    assert item["attempts"] == 1


# -- runbook changes under a running worker -------------------------------------------------------


def test_a_running_worker_reloads_a_changed_runbook_at_its_next_poll(started):
    project, worker = started
    project.oj("queue", "push", "q", '{"n": "1"}')
    wait_until(lambda: out(project) == ["1"], "the first item to run")
    project.write("w.hcl", runbook(ONE_STEP.replace("${var.item.n}", "v2-${var.item.n}")))
    project.oj("queue", "push", "q", '{"n": "2"}')  # its wake-up polls, which reloads
    wait_until(lambda: out(project) == ["1", "v2-2"], "the second item to run the new step")
    assert "runbook reloaded: queue 'q', pipeline 'p', concurrency 1" in worker.output


def test_a_job_process_freed_after_a_runbook_edit_is_not_given_the_next_item(project: Project):
    """A runner that ended its job holds the runbook of its fork: the item waiting behind
    it runs the edited step, in a new process."""
    waiting = ONE_STEP.replace('run = "', 'run = "while [ ! -e ${invoke.dir}/go ]; do sleep '
                                          '0.05; done; ')
    project.write("w.hcl", runbook(waiting))
    worker = Foreground(project, "w")
    try:
        worker.wait_for("ready: queue 'q'")
        project.oj("queue", "push", "q", '{"n": "1"}')
        wait_until(lambda: len(project.json("job", "list")) == 1, "the first job to start")
        project.oj("queue", "push", "q", '{"n": "2"}')  # waits: one slot
        project.write("w.hcl", runbook(ONE_STEP.replace("${var.item.n}", "v2-${var.item.n}")))
        (project.root / "go").touch()
        wait_until(lambda: out(project) == ["1", "v2-2"], "the second item to run the edit")
        first, second = sorted(project.json("job", "list"), key=lambda j: j["created_at"])
        assert first["process"]["pid"] != second["process"]["pid"]
    finally:
        worker.stop()


def test_a_worker_runs_a_backlog_in_one_process_per_slot(project: Project):
    project.write("w.hcl", runbook())
    for n in range(5):
        project.oj("queue", "push", "q", f'{{"n": "{n}"}}')
    worker = Foreground(project, "w")
    try:
        wait_until(lambda: len(out(project)) == 5, "five items to run")
        jobs = project.json("job", "list")
        wait_until(lambda: all(j["status"] == "done" for j in project.json("job", "list")),
                   "five jobs done")
        # one slot (concurrency 1): one process runs the backlog (a fork more if a reuse
        # fails, which falls back to one)
        assert len({j["process"]["pid"] for j in jobs}) <= 2
    finally:
        worker.stop()


def test_an_invalid_runbook_is_logged_as_file_line_and_the_previous_one_kept(started):
    project, worker = started
    project.write("zz-broken.hcl", """
        pipeline "other" {
          step "s" { run = persisted }
        }
        """)
    worker.signal(signal.SIGUSR1)
    worker.wait_for(".oj/runbooks/zz-broken.hcl:3:")
    worker.wait_for("runbook not reloaded: keeping the previous one")
    project.oj("queue", "push", "q", '{"n": "1"}')
    wait_until(lambda: out(project) == ["1"], "the item to run with the previous runbook")
    assert worker.output.count("zz-broken.hcl:3:") == 1  # once, not at every poll
    (project.root / ".oj" / "runbooks" / "zz-broken.hcl").unlink()


def test_a_runbook_that_failed_to_reload_shows_in_worker_list_and_status_until_fixed(started):
    project, worker = started
    broken = project.write("zz-broken.hcl", 'pipeline "other" {\n  step "s" { run = bare }\n}\n')

    def problem() -> str | None:
        return project.json("worker", "list")[0]["runbook_problem"]

    worker.signal(signal.SIGUSR1)
    wait_until(problem, "the worker to record that its runbook did not reload")
    assert ".oj/runbooks/zz-broken.hcl:2:" in problem()
    listed = project.oj("worker", "list").stdout
    assert "worker 'w' keeps its previous runbook: .oj/runbooks/zz-broken.hcl:2:" in listed
    assert "runbook not reloaded" in project.oj("status").stdout
    broken.unlink()
    worker.signal(signal.SIGUSR1)
    wait_until(lambda: problem() is None, "the worker to record the runbook reloaded")
    assert "keeps its previous runbook" not in project.oj("worker", "list").stdout
    assert "runbook not reloaded" not in project.oj("status").stdout


@pytest.mark.parametrize("broken, where", [
    # a validation error in the queue's own file
    (("w.hcl", runbook(ONE_STEP + '\n      step "two" { run = "true" }\n'
                                   '      on_done = { step = "nowhere" }')),
     ".oj/runbooks/w.hcl:"),
    # a syntax error in another file
    (("x.hcl", 'pipeline "x" {\n  step "s" { run = bare }\n}\n'), ".oj/runbooks/x.hcl:2:"),
])
def test_push_to_an_unchanged_queue_works_while_another_part_of_the_runbook_is_broken(
        project: Project, broken, where):
    project.write("w.hcl", runbook())
    project.oj("queue", "push", "q", '{"n": "1"}')  # the runbook is valid: remembered
    project.write(*broken)
    proc = project.oj("queue", "push", "q", '{"n": "2"}')
    assert proc.stdout.strip()
    [warning] = proc.stderr.splitlines()
    assert warning.startswith(f"oj: warning: the runbook is invalid: {where}")
    assert "queue 'q' is unchanged since the last valid runbook" in warning
    assert [i["data"]["n"] for i in project.items()] == ["1", "2"]
    # the item is still checked against the queue's definition
    bad = project.oj("queue", "push", "q", '{"m": "3"}', check=False)
    assert bad.returncode == 2 and "m" in bad.stderr


@pytest.mark.parametrize("change", [
    ('vars = ["n"]', 'vars = ["n", "extra"]'),  # the queue itself changed
    ('vars = ["n"]', 'vars = [n]'),  # the queue's own file cannot be read
])
def test_push_to_a_changed_or_unreadable_queue_fails_while_the_runbook_is_broken(
        project: Project, change):
    project.write("w.hcl", runbook())
    project.oj("queue", "push", "q", '{"n": "1"}')
    project.write("w.hcl", runbook(ONE_STEP + '\n      step "two" { run = bare }')
                  .replace(*change))
    assert project.oj("runbook", "check", check=False).returncode == 1
    proc = project.oj("queue", "push", "q", '{"n": "2"}', check=False)
    assert proc.returncode == 1
    assert ".oj/runbooks/w.hcl:" in proc.stderr and "warning" not in proc.stderr
    assert len(project.items()) == 1


def test_push_to_an_unchanged_queue_of_a_toml_runbook_in_a_subdirectory_while_another_breaks(
        project: Project):
    """The last valid queue definitions cover every runbook file loading finds: subdirectories
    and the TOML and JSON formats too."""
    (project.root / ".oj" / "runbooks" / "queues").mkdir(parents=True)
    project.write("queues/q.toml", '[queue.q]\nvars = ["n"]\n')
    project.write("w.hcl", runbook().replace('queue "q" {\n      vars = ["n"]\n    }', ""))
    project.oj("queue", "push", "q", '{"n": "1"}')  # the runbook is valid: remembered
    project.write("x.hcl", 'pipeline "x" {\n  step "s" { run = bare }\n}\n')
    proc = project.oj("queue", "push", "q", '{"n": "2"}')
    [warning] = proc.stderr.splitlines()
    assert warning.startswith("oj: warning: the runbook is invalid: .oj/runbooks/x.hcl:2:")
    assert "queue 'q' is unchanged since the last valid runbook" in warning
    assert [i["data"]["n"] for i in project.items()] == ["1", "2"]
    # a change to the TOML queue takes the favour away
    project.write("queues/q.toml", '[queue.q]\nvars = ["n", "extra"]\n')
    proc = project.oj("queue", "push", "q", '{"n": "3"}', check=False)
    assert proc.returncode == 1 and "warning" not in proc.stderr
    assert len(project.items()) == 2
