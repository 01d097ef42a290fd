"""One home for events: every type has its constructor in ojd/events.py, its handler in the
fold and its row in docs/DESIGN.md; what a constructor makes is what the log always held."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ojd import events
from ojd.state import HANDLERS, State

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"
P = "/srv/project"

# Keyword arguments for every constructor, optional fields included, in an order that folds:
# each event finds what it acts on.
SAMPLES: list[tuple[str, dict]] = [
    (events.WORKER_RECORDED, dict(name="merge", project=P, runbook="d1", queue="merges",
                                  pipeline="merge", concurrency=2)),
    (events.WORKER_STARTED, dict(name="merge", invocation="inv1", pid=10, host="h1")),
    (events.WORKER_WOKEN, dict(name="merge")),
    (events.WORKER_RESIZED, dict(name="merge", concurrency=4)),
    (events.WORKER_RUNBOOK, dict(name="merge", problem=".oj/runbooks/w.hcl:3: bad")),
    (events.CRON_RECORDED, dict(name="nightly", project=P, runbook="d1")),
    (events.QUEUE_PUSHED, dict(id="i1", project=P, queue="merges", data={"b": "x"}, key="k1",
                               due=1000.0, priority=2)),
    (events.JOB_CREATED, dict(id="j1", project=P, pipeline="merge", name="merge x",
                              vars={"b": "x"}, cwd="/w/j1", workspace="ephemeral",
                              invoke=P, item="i1", worker="merge", by="merge/1",
                              cron="nightly", rerun_of="j0")),
    (events.CRON_TICK, dict(name="nightly", job="j1")),
    (events.QUEUE_TAKEN, dict(id="i1", by="merge/1", job="j1", lease=30.0,
                              windows=[["queue:/srv/project:merges", 10]])),
    (events.JOB_PROCESS, dict(id="j1", pid=11, start=5, boot="b1", unit="oj-job-j1.scope",
                              host="h1", by="merge/1")),
    (events.QUEUE_LEASE_RENEWED, dict(id="i1", job="j1")),
    (events.JOB_LOCALS, dict(id="j1", locals={"sha": "abc"})),
    (events.JOB_STEP_STARTED, dict(id="j1", step="check", pid=12, start=6, boot="b1",
                                   host="h1")),
    (events.AGENT_STARTED, dict(id="j1", step="check", visit=1, agent="claude",
                                socket="/run/oj/tmux", session="j1-check-1-0", start=0)),
    (events.JOB_WAITING, dict(id="j1", reason="needs a decision")),
    (events.DECISION_CREATED, dict(id="d1", job="j1", project=P, source="idle",
                                   step="check", agent="claude", reason="idle",
                                   screen=["$ make"], options=[{"label": "Nudge",
                                                                "action": "send"}])),
    (events.DECISION_RESOLVED, dict(id="d1", option=1, message="go on", by="ann",
                                    host="h1")),
    (events.JOB_WAITING, dict(id="j1", reason="needs another decision")),
    (events.JOB_ANSWERED, dict(id="j1", message="go on")),
    (events.AGENT_DELIVERED, dict(id="j1")),
    (events.AGENT_SUSPENDED, dict(id="j1", transcript="/s/logs/j1.t", by="ann")),
    (events.JOB_STEP_FINISHED, dict(id="j1", step="check", exit=1, next=None, failing=True)),
    (events.QUEUE_LEASE_EXPIRED, dict(id="i1", job="j1")),
    (events.JOB_RESUMED, dict(id="j1", by="merge/2")),
    (events.QUEUE_FAILED, dict(id="i1", error="check failed", dead=False, retry_at=2000.0)),
    (events.JOB_FINISHED, dict(id="j1", outcome="failed", error="check failed")),
    (events.JOB_DISMISSED, dict(id="j1")),
    (events.JOB_REOPENED, dict(id="j1", step="check", vars={"b": "y"})),
    (events.CRON_SKIPPED, dict(name="nightly", running=1)),
    (events.QUEUE_RELEASED, dict(id="i1")),
    (events.QUEUE_COMPLETED, dict(id="i1")),
    (events.QUEUE_RETRIED, dict(id="i1")),
    (events.QUEUE_DROPPED, dict(id="i1")),
    (events.QUEUE_PRUNED, dict(ids=["i1"])),
    (events.QUEUE_PAUSED, dict(project=P, queue="merges")),
    (events.QUEUE_RESUMED, dict(project=P, queue="merges")),
    (events.JOB_PRUNED, dict(ids=["j1"])),
    (events.WORKER_STOPPED, dict(name="merge", invocation="inv1", host="h1")),
    (events.WORKER_RENAMED, dict(name="merge", to="shop:merge")),
    (events.CRON_RENAMED, dict(name="nightly", to="shop:nightly")),
    (events.WORKER_PRUNED, dict(names=["shop:merge"])),
    (events.STATE_LOSS_ACKNOWLEDGED, dict(upto=3)),
    (events.STATE_REPAIRED, dict()),
]


def type_names() -> set[str]:
    """Every ``NAME = "kind:what"`` constant of ojd/events.py."""
    return {v for k, v in vars(events).items()
            if k.isupper() and isinstance(v, str) and re.fullmatch(r"[a-z]+:[a-z_]+", v)}


def design_table() -> dict[str, set[str]]:
    """The event table of DESIGN.md's fold section: type -> its fields (explanations in
    parentheses and after a dash left out)."""
    text = DESIGN.read_text()
    section = text[text.index("## State as a pure fold"):]
    section = section[:section.index("\n## ", 1)]
    rows = re.findall(r"^\| `([a-z]+:[a-z_]+)` \| (.*) \|$", section, re.M)
    table = {}
    for name, cell in rows:
        assert name not in table, f"{name} has two rows in DESIGN.md"
        fields = re.sub(r"\([^()]*\)", "", cell.split(" — ")[0])
        table[name] = {f.strip() for f in fields.split(",")}
    return table


def test_every_type_has_a_constructor_a_handler_and_a_row_in_design():
    names = type_names()
    assert set(events.CONSTRUCTORS) == names
    assert set(HANDLERS) == names, "a type the fold does not handle, or one it made up"
    assert set(design_table()) == names, "DESIGN.md's event table and ojd/events.py differ"
    assert {name for name, _ in SAMPLES} == names


def test_each_constructor_makes_its_own_type():
    for name, kwargs in SAMPLES:
        assert events.CONSTRUCTORS[name](**kwargs)["type"] == name


def test_design_lists_the_keys_each_constructor_writes():
    table = design_table()
    for name, kwargs in SAMPLES:
        written = set(events.CONSTRUCTORS[name](**kwargs)) - {"type"}
        assert table[name] == written | {"ts"}, name


def test_every_event_folds_and_survives_json_and_a_snapshot():
    state = State()
    for pos, (name, kwargs) in enumerate(SAMPLES, start=1):
        event = events.CONSTRUCTORS[name](**kwargs)
        event["ts"] = 1000.0 + pos
        assert json.loads(json.dumps(event)) == event  # what the log stores
        state.apply(event, pos)
    again = State.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.to_dict() == state.to_dict()
    assert state.pos == len(SAMPLES)


def test_the_fold_reads_what_the_constructors_write():
    # the fields renamed on the wire reach the state under their own names
    s = State()
    s.apply({**events.worker_recorded(name="w", project=P, runbook="d", queue="merges",
                                      pipeline="merge", concurrency=3), "ts": 1.0}, 1)
    s.apply({**events.queue_pushed(id="i1", project=P, queue="merges", data={}, key="k"),
             "ts": 2.0}, 2)
    s.apply({**events.job_created(id="j1", project=P, pipeline="merge", name="m", vars={},
                                  cwd=None, workspace="ephemeral", invoke=P, item="i1",
                                  worker="w", by="w/1"), "ts": 3.0}, 3)
    assert (s.workers["w"]["project"], s.workers["w"]["concurrency"]) == (P, 3)
    assert (s.items["i1"]["project"], s.items["i1"]["queue"]) == (P, "merges")
    assert (s.jobs["j1"]["project"], s.jobs["j1"]["workspace"]) == (P, "ephemeral")


@pytest.mark.parametrize(("made", "written"), [
    (events.queue_pushed(id="a", project=P, queue="q", data={"x": 1}, key="k"),
     {"type": "queue:pushed", "id": "a", "p": P, "q": "q", "data": {"x": 1}, "key": "k"}),
    (events.queue_taken(id="a", by="w/1", job="j"),
     {"type": "queue:taken", "id": "a", "by": "w/1", "job": "j"}),
    (events.queue_taken(id="a", by="w/1", job="j", lease=30.0),
     {"type": "queue:taken", "id": "a", "by": "w/1", "job": "j", "lease": 30.0}),
    (events.job_created(id="j", project=P, pipeline="p", name="n", vars={}, cwd=None,
                        workspace=None, invoke=P, item=None, worker=None, by=None),
     {"type": "job:created", "id": "j", "p": P, "pipeline": "p", "name": "n", "vars": {},
      "cwd": None, "ws": None, "invoke": P, "item": None, "worker": None, "by": None}),
    (events.job_step_started(id="j", step="s"),
     {"type": "job:step_started", "id": "j", "step": "s"}),
    (events.cron_recorded(name="c", project=P, runbook="d"),
     {"type": "cron:recorded", "name": "c", "p": P, "runbook": "d"}),
    (events.state_repaired(), {"type": "state:repaired"}),
])
def test_optional_fields_stay_off_the_wire_as_before(made: dict, written: dict):
    assert made == written


def test_state_repaired_changes_nothing_in_the_fold():
    s = State()
    s.apply({**events.queue_pushed(id="a", project=P, queue="q", data={}, key=""),
             "ts": 1.0}, 1)
    before = json.dumps(s.to_dict())
    s.apply({**events.state_repaired(), "ts": 2.0}, 2)
    after = s.to_dict()
    assert after.pop("pos") == 2
    assert after == {k: v for k, v in json.loads(before).items() if k != "pos"}
