"""Decisions as state: made with the job's wait, resolved once (by whom, from where), and
what each choice makes of the waiting job."""

from __future__ import annotations

import pytest

from ojd import decisions
from ojd.errors import OjError
from ojd.events import agent_started, job_created, job_step_started
from ojd.runners import control
from ojd.runners.decide import resolve
from ojd.store import Store

P = "/srv/project"


def waiting_job(store: Store, job: str = "j1", source: str = "idle", decision: str = "d1",
                choices: list[str] | None = None) -> None:
    with store.transaction() as tx:
        tx.append(job_created(id=job, project=P, pipeline="fix", name="fix", vars={},
                              cwd="/w", workspace=None, invoke=P, item=None, worker=None,
                              by=None),
                  job_step_started(id=job, step="work"),
                  agent_started(id=job, step="work", visit=1, agent="coder", socket="/nowhere",
                                session="s", start=0))
        tx.append(*decisions.waiting_events(
            id=decision, job=job, project=P, source=source, step="work", agent="coder",
            reason="agent 'coder' is idle", screen="$ make\nerror: 2 tests failed\n\n\n",
            choices=choices))


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "state"), url="")


def test_a_wait_records_its_decision_with_context_and_options_of_its_source(store):
    waiting_job(store)
    d = store.refresh().decisions["d1"]
    job = store.state.jobs["j1"]
    assert (job["status"], job["decision"]) == ("waiting", "d1")
    assert (d["status"], d["source"], d["step"], d["agent"]) == ("open", "idle", "work", "coder")
    assert d["screen"] == ["$ make", "error: 2 tests failed"]
    assert [o["action"] for o in d["options"]] == ["send", "done", "cancel"]
    assert store.state.open_decisions(P) == [d]


@pytest.mark.parametrize(("source", "agent", "actions"), [
    ("idle", "coder", ["send", "done", "cancel"]),
    ("dead", "coder", ["resume", "restart", "cancel"]),
    ("gate", "coder", ["send", "done", "cancel"]),
    ("approval", "coder", ["send", "send"]),  # the agent's y/n prompt
    ("approval", None, ["done", "reject"]),  # an approval step: nothing to type into
    ("escalation", "coder", ["send", "cancel"]),
])
def test_each_source_has_its_own_options(source, agent, actions):
    assert [o["action"] for o in decisions.options_for(source, agent=agent)] == actions


def test_an_approval_step_decision_takes_an_option_not_a_message_alone():
    d = {"id": "d", "agent": None, "options": decisions.options_for("approval")}
    assert decisions.choose(d, 1, None) == ("done", "")
    assert decisions.choose(d, 2, "not on a Friday") == ("reject", "not on a Friday")
    with pytest.raises(OjError, match="a message alone answers nothing here"):
        decisions.choose(d, None, "ship it")


def test_a_question_offers_the_agents_own_options_then_free_text():
    options = decisions.options_for("question", ["Use SQLite", "Use PostgreSQL"])
    assert [o["label"] for o in options[:2]] == ["Use SQLite", "Use PostgreSQL"]
    d = {"id": "d", "options": options}
    assert decisions.choose(d, 2, None) == ("send", "2")
    with pytest.raises(OjError, match="option 3 .* needs a message"):
        decisions.choose(d, 3, None)
    assert decisions.choose(d, 3, "neither: use files") == ("send", "neither: use files")


def test_resolving_a_nudge_sets_the_job_running_with_the_message_and_records_who(store):
    waiting_job(store)
    done = resolve(store, "d1", 1, "try again", by="ann", host="laptop")
    assert done.action == "send"
    d = store.refresh().decisions["d1"]
    assert (d["status"], d["option"], d["message"], d["by"], d["host"]) == \
        ("resolved", 1, "try again", "ann", "laptop")
    job = store.state.jobs["j1"]
    assert (job["status"], job["pending_answer"], job["pending_action"], job["decision"]) == \
        ("running", "try again", "send", None)
    assert store.state.open_decisions() == []


def test_mark_done_reaches_the_runner_as_done(store):
    waiting_job(store)
    resolve(store, "d1", 2, None, by="ann", host="laptop")
    assert store.refresh().jobs["j1"]["pending_action"] == "done"


def test_a_second_resolve_is_refused_naming_who_resolved_it(tmp_path):
    one = Store(str(tmp_path / "state"), url="")
    other = Store(str(tmp_path / "state"), url="")  # another process, its state behind
    waiting_job(one)
    other.refresh()
    resolve(one, "d1", 1, "go", by="ann", host="laptop")
    with pytest.raises(OjError, match=r"^decision d1 was already resolved by ann@laptop "
                                      r"\(option 1\)"):
        resolve(other, "d1", 2, None, by="bob", host="phone")
    assert other.refresh().jobs["j1"]["pending_action"] == "send"


def test_cancel_ends_the_job_in_the_same_append(store):
    waiting_job(store)
    resolve(store, "d1", 3, None, by="ann", host="laptop")
    job = store.refresh().jobs["j1"]
    assert (job["status"], job["error"]) == ("cancelled", "cancelled by decision d1")
    assert store.state.decisions["d1"]["status"] == "resolved"


def test_bad_option_numbers_and_unknown_ids_are_one_line_errors(store):
    waiting_job(store, source="escalation")
    with pytest.raises(OjError, match="has options 1-2, not 5"):
        resolve(store, "d1", 5, None)
    with pytest.raises(OjError, match=r"needs a message: oj decision resolve d1 1 -m"):
        resolve(store, "d1", 1, None)
    with pytest.raises(OjError, match="no decision with id 'zz'"):
        resolve(store, "zz", 1, None)
    assert store.refresh().decisions["d1"]["status"] == "open"


def test_an_answer_with_job_resume_resolves_the_open_decision(store):
    waiting_job(store)
    control.answer(store, "j1", "look at the failing test")
    d = store.refresh().decisions["d1"]
    assert (d["status"], d["option"], d["message"]) == \
        ("resolved", None, "look at the failing test")
    assert store.state.jobs["j1"]["pending_answer"] == "look at the failing test"


def test_a_job_cancelled_otherwise_closes_its_decision(store):
    waiting_job(store)
    control.cancel(store, "j1")
    assert store.refresh().decisions["d1"]["status"] == "closed"
    with pytest.raises(OjError, match="decision d1 is closed: job j1 no longer waits on it"):
        resolve(store, "d1", 1, "go")


def test_decisions_survive_a_snapshot(tmp_path):
    store = Store(str(tmp_path / "state"), url="")
    waiting_job(store)
    store.snapshot()
    again = Store(str(tmp_path / "state"), url="")
    assert again.refresh().decisions["d1"]["status"] == "open"
    assert again.state.jobs["j1"]["decision"] == "d1"
