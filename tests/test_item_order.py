"""Which item a take chooses (pure fold): delayed items wait for their due time, and the
order holds across releases and snapshots."""

from __future__ import annotations

import pytest

from ojd import events
from ojd.due import parse_at, parse_due
from ojd.errors import UsageError
from ojd.state import State

P = "/srv/project"


def fold(*evs: dict) -> State:
    state = State()
    for pos, ev in enumerate(evs, start=1):
        ev.setdefault("ts", 1000.0 + pos)
        state.apply(ev, pos)
    return state


def pushed(item_id: str, **opts) -> dict:
    return events.queue_pushed(id=item_id, project=P, queue="q", data={"n": item_id},
                               key=item_id, **opts)


def taken(item_id: str) -> dict:
    return events.queue_taken(id=item_id, by="w/1", job="j-" + item_id)


def test_a_delayed_item_is_not_taken_before_it_is_due_and_the_older_due_one_goes_first():
    s = fold(pushed("late", due=5000.0), pushed("soon", due=3000.0))
    assert s.next_takeable(P, "q", now=2999.0) is None
    assert s.next_due(P, "q") == 3000.0
    assert s.next_takeable(P, "q", now=3000.0)["id"] == "soon"
    # both due: the order is the push's, not the due time's
    assert s.next_takeable(P, "q", now=6000.0)["id"] == "late"


def test_an_item_without_a_due_time_is_taken_before_a_delayed_one_not_yet_due():
    s = fold(pushed("later", due=5000.0), pushed("now"))
    assert s.next_takeable(P, "q", now=2000.0)["id"] == "now"
    assert s.next_due(P, "q") == 5000.0


def test_a_released_delayed_item_is_taken_again_and_no_longer_counts_as_coming_due():
    s = fold(pushed("a", due=3000.0))
    s.apply({**taken("a"), "ts": 3001.0}, 2)
    assert s.next_due(P, "q") is None  # active: nothing to sleep for
    s.apply({**events.queue_released(id="a"), "ts": 3002.0}, 3)
    assert s.next_takeable(P, "q", now=3003.0)["id"] == "a"


def test_the_due_time_survives_a_snapshot():
    s = fold(pushed("a", due=3000.0), pushed("b"))
    restored = State.from_dict(s.to_dict())
    assert restored.items["a"]["due"] == 3000.0
    assert restored.next_takeable(P, "q", now=2000.0)["id"] == "b"
    assert restored.next_due(P, "q") == 3000.0


def test_a_push_from_before_due_times_folds_as_before():
    s = fold({"type": "queue:pushed", "id": "a", "p": P, "q": "q", "data": {}, "key": "k"})
    assert "due" not in s.items["a"]
    assert s.next_takeable(P, "q", now=0.0)["id"] == "a"


def test_in_and_at_give_the_due_time_and_bad_input_names_the_accepted_forms():
    assert parse_due("10m", None, 1000.0) == 1600.0
    assert parse_due(None, None, 1000.0) is None
    assert parse_at("2026-12-24T08:00Z") == 1798099200.0
    assert parse_at("2026-12-24T09:00+01:00") == 1798099200.0
    with pytest.raises(UsageError, match="2026-12-24T09:00 \\(local time\\)"):
        parse_due(None, "next tuesday", 0.0)
    with pytest.raises(UsageError, match="--in expects a duration such as 30s"):
        parse_due("soon", None, 0.0)
    with pytest.raises(UsageError, match="not both"):
        parse_due("1m", "2026-12-24", 0.0)


def test_the_higher_priority_is_taken_first_then_the_older_push():
    s = fold(pushed("low"), pushed("high-old", priority=5), pushed("high-new", priority=5),
             pushed("negative", priority=-1))
    order = []
    for pos in range(5, 9):
        item = s.next_takeable(P, "q", now=9999.0)
        order.append(item["id"])
        s.apply({**taken(item["id"]), "ts": 2000.0 + pos}, pos)
    assert order == ["high-old", "high-new", "low", "negative"]


def test_a_failed_item_past_its_cooldown_competes_by_priority_and_a_due_one_by_its_own():
    s = fold(pushed("urgent", priority=9), pushed("plain"), pushed("later", priority=9,
                                                                   due=5000.0))
    s.apply({**taken("urgent"), "ts": 1010.0}, 4)
    s.apply({**events.queue_failed(id="urgent", error="x", dead=False, retry_at=3000.0),
             "ts": 1011.0}, 5)
    assert s.next_takeable(P, "q", now=2999.0)["id"] == "plain"
    assert s.next_takeable(P, "q", now=3000.0)["id"] == "urgent"
    s.apply({**taken("urgent"), "ts": 3001.0}, 6)
    assert s.next_takeable(P, "q", now=5000.0)["id"] == "later"


def test_priorities_survive_a_snapshot():
    s = fold(pushed("a"), pushed("b", priority=2))
    restored = State.from_dict(s.to_dict())
    assert restored.next_takeable(P, "q", now=9999.0)["id"] == "b"


def test_a_paused_queue_offers_nothing_to_take_or_wake_for_until_resumed():
    s = fold(pushed("a"), pushed("b", due=3000.0),
             events.queue_paused(project=P, queue="q"))
    assert s.next_takeable(P, "q", now=9999.0) is None
    assert s.next_due(P, "q") is None
    assert s.waiting_count(P, "q") == 2  # still queued
    restored = State.from_dict(s.to_dict())
    assert restored.next_takeable(P, "q", now=9999.0) is None
    restored.apply({**events.queue_resumed(project=P, queue="q"), "ts": 1.0}, 4)
    assert restored.next_takeable(P, "q", now=9999.0)["id"] == "a"
    # another queue of the same name in another project is not paused
    s.apply({**events.queue_pushed(id="c", project="/other", queue="q", data={}, key="c"),
             "ts": 1.0}, 5)
    assert s.next_takeable("/other", "q", now=9999.0)["id"] == "c"
