"""Worker control decisions (start or wake, binding, enable notes) against a recording
stand-in for the systemd bridge. The same paths run against a real systemd in
test_systemd_workers.py; here each ActiveState is pinned down one by one."""

from __future__ import annotations

import signal

import pytest

from ojd import project, unitcontrol, worker_control
from ojd.errors import OjError
from ojd.store import Store
from ojd.systemd import UnitState

RUNBOOK = """
queue "jobs" {
  vars = ["n"]
}
worker "w" {
  source  = { queue = "jobs" }
  handler = { pipeline = "p" }
}
pipeline "p" {
  vars = ["item"]
  step "s" { run = "true" }
}
"""


class RecordingSystemd:
    """Answers ``state()`` with a fixed unit state and records every call."""

    def __init__(self, active: str, sub: str = "running", pid: int = 4242,
                 load: str = "loaded", user: bool = False) -> None:
        self.unit = UnitState("oj-worker@project:w.service", load, active, sub, pid, 0)
        self.user = user
        self.calls: list[tuple] = []

    def state(self, unit: str) -> UnitState:
        return self.unit

    def has_job(self, unit: str) -> bool:
        return False

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, *args))


@pytest.fixture
def env(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / ".oj" / "runbooks").mkdir(parents=True)
    (root / ".oj" / "runbooks" / "w.hcl").write_text(RUNBOOK)
    monkeypatch.delenv("OJ_STATE_DIR", raising=False)
    store = Store(str(tmp_path / "state"))
    store.load()
    # a drop-in is only needed for a non-default state dir: keep unit files out of this test
    monkeypatch.setattr(worker_control, "bind_state_dir", lambda *a: None)
    monkeypatch.setattr(worker_control, "_wait_started", lambda *a: None)
    return store, project.load(str(root)), str(root)


def events(store: Store, kind: str) -> list[dict]:
    return [r.event for r in store.log.records() if r.event["type"] == kind]


@pytest.mark.parametrize("active", ["active", "reloading"])
def test_running_worker_gets_sigusr1_on_its_main_process_and_a_recorded_wake(env, active):
    store, rb, root = env
    sd = RecordingSystemd(active)
    assert worker_control.start(store, sd, rb, root, "w") == "woken"
    assert sd.calls == [("kill_main", "oj-worker@project:w.service", signal.SIGUSR1)]
    assert len(events(store, "worker:woken")) == 1


@pytest.mark.parametrize("active, sub", [("inactive", "dead"), ("activating", "start"),
                                         ("deactivating", "stop-sigterm")])
def test_worker_without_a_running_main_process_is_started_never_signalled(env, active, sub):
    store, rb, root = env
    sd = RecordingSystemd(active, sub, pid=0 if active == "inactive" else 99)
    assert worker_control.start(store, sd, rb, root, "w") == "started"
    assert sd.calls == [("start", "oj-worker@project:w.service")]
    assert events(store, "worker:woken") == []


def test_failed_worker_is_reset_then_started(env):
    store, rb, root = env
    sd = RecordingSystemd("failed", "failed", pid=0)
    worker_control.start(store, sd, rb, root, "w")
    assert [c[0] for c in sd.calls] == ["reset_failed", "start"]


def test_missing_template_unit_says_how_to_install_it(env):
    store, rb, root = env
    with pytest.raises(OjError, match="run 'oj systemd install'"):
        worker_control.start(store, RecordingSystemd("inactive", load="not-found"), rb, root, "w")


def test_worker_is_recorded_once_however_often_it_starts(env):
    store, rb, root = env
    for _ in range(3):
        worker_control.start(store, RecordingSystemd("active"), rb, root, "w")
    [recorded] = events(store, "worker:recorded")
    assert (recorded["p"], recorded["queue"], recorded["concurrency"]) == (root, "jobs", 1)
    assert recorded["runbook"] == rb.digest


def another_project(tmp_path, directory: str, config: str | None = None) -> str:
    root = tmp_path / directory
    (root / ".oj" / "runbooks").mkdir(parents=True)
    (root / ".oj" / "runbooks" / "w.hcl").write_text(RUNBOOK)
    if config is not None:
        (root / ".oj" / "config.toml").write_text(config)
    return str(root)


def test_two_projects_each_record_a_worker_of_the_same_name_under_their_own_names(
        env, tmp_path):
    store, rb, root = env
    worker_control.start(store, RecordingSystemd("inactive"), rb, root, "w")
    other = another_project(tmp_path, "blog")
    worker_control.record(store, rb, other, "w")
    state = store.refresh()
    assert {name: w["project"] for name, w in state.workers.items()} == \
        {"project:w": root, "blog:w": other}


def test_a_project_name_in_config_toml_names_its_workers(env, tmp_path):
    store, rb, _ = env
    other = another_project(tmp_path, "checkout-2", 'project = "shop"\n')
    worker_control.record(store, rb, other, "w")
    assert store.refresh().workers["shop:w"]["project"] == other


def test_two_directories_claiming_one_project_name_are_refused_with_the_fix(env, tmp_path):
    store, rb, root = env
    worker_control.record(store, rb, root, "w")
    clone = another_project(tmp_path / "elsewhere", "project")
    with pytest.raises(OjError, match=f"project name 'project' already belongs to {root} "
                                      "in this state directory; "
                                      r"set project = \"OTHER\" in .*config.toml"):
        worker_control.record(store, rb, clone, "w")
    assert list(store.refresh().workers) == ["project:w"]


def test_enable_as_a_user_without_linger_says_how_to_start_at_boot(env, monkeypatch):
    store, rb, root = env
    monkeypatch.setattr(unitcontrol, "lingering", lambda: False)
    sd = RecordingSystemd("inactive", user=True)
    [note] = worker_control.enable(store, sd, rb, root, "w")
    assert "starts at login, not at boot" in note and "loginctl enable-linger" in note
    assert sd.calls == [("enable", "oj-worker@project:w.service", "oj-workers.target")]


def test_state_dir_matches_platformdirs_for_users(monkeypatch, tmp_path):
    import platformdirs

    from ojd import paths

    monkeypatch.delenv("OJ_STATE_DIR", raising=False)
    monkeypatch.setattr(paths.os, "geteuid", lambda: 1000)
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_STATE_HOME", xdg)
        assert paths.state_dir() == platformdirs.user_state_dir("oj")
    monkeypatch.setattr(paths.os, "geteuid", lambda: 0)
    assert paths.state_dir() == "/var/lib/oj"


@pytest.mark.parametrize("kind", ["worker", "cron"])
def test_a_unit_is_not_bound_to_a_state_whose_url_only_this_shell_knows(
        kind: str, tmp_path, monkeypatch):
    """Worker and cron units read the URL from the state dir's oj.conf: one only in
    OJ_STATE_URL would leave the unit on another store, so the binding is refused before
    the manager is touched."""
    systemd = RecordingSystemd("inactive")
    monkeypatch.setenv("OJ_STATE_URL", "postgresql://oj:secret@db.example/oj")
    monkeypatch.setenv("OJ_STATE_DIR", str(tmp_path))
    with pytest.raises(OjError) as refused:
        unitcontrol.bind_state_dir(systemd, kind, "tidy", f"oj-{kind}@tidy.service",
                                   str(tmp_path))
    assert str(refused.value) == (
        f"{kind} 'tidy''s unit does not see OJ_STATE_URL: put the line 'state_url = "
        f"postgresql://oj:***@db.example/oj' (with its password) in {tmp_path}/oj.conf "
        "(and unset OJ_STATE_URL), so that the unit, its jobs and this shell share one store")
    assert systemd.calls == []
