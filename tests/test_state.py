"""The pure fold: State.apply over event sequences, and snapshots."""

from __future__ import annotations

import json

from ojd.state import KEEP_COMPLETED_PER_QUEUE, State

P = "/srv/project"


def fold(*events: dict) -> State:
    state = State()
    for pos, ev in enumerate(events, start=1):
        ev.setdefault("ts", 1000.0 + pos)
        state.apply(ev, pos)
    return state


def pushed(item_id: str, key: str = "", q: str = "merges", **data) -> dict:
    return {"type": "queue:pushed", "id": item_id, "p": P, "q": q, "data": data or {"x": 1},
            "key": key or item_id}


def test_push_creates_pending_item_in_fifo_order():
    s = fold(pushed("b"), pushed("a"))
    assert s.items["b"]["status"] == "pending"
    assert s.next_takeable(P, "merges", now=2000)["id"] == "b"


def test_take_marks_active_and_counts_attempt():
    s = fold(pushed("a"), {"type": "queue:taken", "id": "a", "by": "w/1", "job": "j1"})
    item = s.items["a"]
    assert (item["status"], item["attempts"], item["owner"], item["job"]) == (
        "active", 1, "w/1", "j1")
    assert s.next_takeable(P, "merges", now=2000) is None


def test_live_item_dedups_until_completed():
    s = fold(pushed("a", key="k"))
    assert s.live_item_for(P, "merges", "k")["id"] == "a"
    s.apply({"type": "queue:taken", "id": "a", "by": "w", "job": "j", "ts": 1}, 2)
    assert s.live_item_for(P, "merges", "k")["id"] == "a"
    s.apply({"type": "queue:completed", "id": "a", "ts": 2}, 3)
    assert s.live_item_for(P, "merges", "k") is None


def test_dead_item_frees_its_key_and_failed_item_keeps_it():
    s = fold(pushed("a", key="k"), {"type": "queue:taken", "id": "a", "by": "w", "job": "j"},
             {"type": "queue:failed", "id": "a", "error": "boom", "dead": False,
              "retry_at": 5000.0})
    assert s.items["a"]["status"] == "failed"
    assert s.live_item_for(P, "merges", "k")["id"] == "a"
    assert s.next_takeable(P, "merges", now=4999) is None
    assert s.next_takeable(P, "merges", now=5000)["id"] == "a"
    s.apply({"type": "queue:taken", "id": "a", "by": "w", "job": "j2", "ts": 5001}, 4)
    s.apply({"type": "queue:failed", "id": "a", "error": "boom", "dead": True,
             "retry_at": None, "ts": 5002}, 5)
    assert s.items["a"]["status"] == "dead"
    assert s.items["a"]["attempts"] == 2
    assert s.live_item_for(P, "merges", "k") is None


def test_retry_resets_attempts_and_makes_item_pending():
    s = fold(pushed("a"), {"type": "queue:taken", "id": "a", "by": "w", "job": "j"},
             {"type": "queue:failed", "id": "a", "error": "x", "dead": True},
             {"type": "queue:retried", "id": "a"})
    assert (s.items["a"]["status"], s.items["a"]["attempts"]) == ("pending", 0)


def test_release_returns_item_to_pending_without_counting_the_attempt():
    s = fold(pushed("a"), {"type": "queue:taken", "id": "a", "by": "w", "job": "j"},
             {"type": "queue:released", "id": "a"})
    assert (s.items["a"]["status"], s.items["a"]["attempts"]) == ("pending", 0)


def test_completed_items_beyond_retention_fall_out_but_dead_ones_stay():
    events = []
    n = KEEP_COMPLETED_PER_QUEUE + 5
    for i in range(n):
        events += [pushed(f"c{i}"), {"type": "queue:taken", "id": f"c{i}", "by": "w",
                                     "job": "j"}, {"type": "queue:completed", "id": f"c{i}"}]
    events += [pushed("d"), {"type": "queue:taken", "id": "d", "by": "w", "job": "j"},
               {"type": "queue:failed", "id": "d", "dead": True}]
    s = fold(*events)
    done = [i for i in s.items.values() if i["status"] == "completed"]
    assert len(done) == KEEP_COMPLETED_PER_QUEUE
    assert "c0" not in s.items and f"c{n - 1}" in s.items
    assert s.items["d"]["status"] == "dead"


def test_job_steps_history_visits_and_outcome():
    s = fold({"type": "job:created", "id": "j", "p": P, "pipeline": "merge", "vars": {},
              "cwd": "/w"},
             {"type": "job:step_started", "id": "j", "step": "a"},
             {"type": "job:step_finished", "id": "j", "step": "a", "exit": 1, "next": "a"},
             {"type": "job:step_started", "id": "j", "step": "a"},
             {"type": "job:step_finished", "id": "j", "step": "a", "exit": 0, "next": None},
             {"type": "job:finished", "id": "j", "outcome": "done"})
    job = s.jobs["j"]
    assert job["visits"] == {"a": 2}
    assert [h["exit"] for h in job["history"]] == [1, 0]
    assert job["status"] == "done"


def test_unknown_event_types_are_skipped():
    s = fold({"type": "from:the_future", "x": 1}, pushed("a"))
    assert s.pos == 2 and "a" in s.items


def test_snapshot_roundtrip_through_json_gives_the_same_state():
    s = fold(pushed("a", key="ka"), pushed("b", key="kb"),
             {"type": "queue:taken", "id": "a", "by": "w", "job": "j"},
             {"type": "queue:completed", "id": "a"},
             {"type": "worker:recorded", "name": "merge", "p": P, "queue": "merges",
              "concurrency": 1})
    restored = State.from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored.to_dict() == s.to_dict()
    assert restored.live_item_for(P, "merges", "kb")["id"] == "b"
    assert restored.live_item_for(P, "merges", "ka") is None
    restored.apply({**pushed("c"), "ts": 2000.0}, 6)
    assert restored.next_takeable(P, "merges", 9999)["id"] == "b"


def test_queues_of_different_projects_are_separate():
    s = fold(pushed("a"), {"type": "queue:pushed", "id": "b", "p": "/other", "q": "merges",
                           "data": {}, "key": "k"})
    assert [i["id"] for i in s.queue_items(P, "merges")] == ["a"]
    assert s.next_takeable("/other", "merges", 9999)["id"] == "b"


def test_released_item_is_taken_before_newer_ones_and_counts_stay_right():
    s = fold(pushed("a"), pushed("b"), {"type": "queue:taken", "id": "a", "by": "w",
                                        "job": "j"})
    assert s.next_takeable(P, "merges", 9999)["id"] == "b"
    assert s.waiting_count(P, "merges") == 1
    s.apply({"type": "queue:released", "id": "a", "ts": 2000.0}, 4)
    assert s.next_takeable(P, "merges", 9999)["id"] == "a"
    assert s.waiting_count(P, "merges") == 2
    s.apply({"type": "queue:dropped", "id": "a", "ts": 2001.0}, 5)
    assert s.next_takeable(P, "merges", 9999)["id"] == "b"
    assert s.waiting_count(P, "merges") == 1


def test_a_due_retry_goes_before_newer_pending_items():
    s = fold(pushed("old"), {"type": "queue:taken", "id": "old", "by": "w", "job": "j"},
             {"type": "queue:failed", "id": "old", "dead": False, "retry_at": 1500.0},
             pushed("new"))
    assert s.next_takeable(P, "merges", now=1499)["id"] == "new"
    assert s.next_takeable(P, "merges", now=1500)["id"] == "old"
    restored = State.from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored.next_takeable(P, "merges", now=1500)["id"] == "old"
    assert restored.waiting_count(P, "merges") == 2


def recorded(name: str, concurrency: int = 2) -> dict:
    return {"type": "worker:recorded", "name": name, "p": P, "runbook": "d", "queue": "merges",
            "pipeline": "p", "concurrency": concurrency}


def test_a_resize_outlives_the_worker_recorded_again_and_a_snapshot_until_reset():
    from ojd.state import concurrency_of

    s = fold(recorded("w"), {"type": "worker:resized", "name": "w", "concurrency": 5},
             recorded("w", concurrency=3))
    assert (concurrency_of(s.workers["w"]), s.workers["w"]["concurrency"]) == (5, 3)
    s = State.from_dict(json.loads(json.dumps(s.to_dict())))
    assert concurrency_of(s.workers["w"]) == 5
    s.apply({"type": "worker:resized", "name": "w", "concurrency": None, "ts": 2000.0}, 9)
    assert concurrency_of(s.workers["w"]) == 3


def test_pruned_workers_leave_the_state_and_come_back_without_their_resize():
    from ojd.state import concurrency_of

    s = fold(recorded("a"), recorded("b"), {"type": "worker:resized", "name": "a",
                                            "concurrency": 4},
             {"type": "worker:pruned", "names": ["a", "gone-already"]})
    assert sorted(s.workers) == ["b"]
    s.apply({**recorded("a"), "ts": 2000.0}, 10)
    assert concurrency_of(s.workers["a"]) == 2


def test_pruned_items_leave_the_state_and_its_indexes_but_live_ones_stay():
    def settle(item_id: str, how: dict) -> list[dict]:
        return [{"type": "queue:taken", "id": item_id, "by": "w", "job": "j"},
                {"id": item_id, **how}]

    s = fold(pushed("c", key="kc"), *settle("c", {"type": "queue:completed"}),
             pushed("d", key="kd"), *settle("d", {"type": "queue:failed", "dead": True}),
             pushed("f", key="kf"), *settle("f", {"type": "queue:failed", "retry_at": 5.0}),
             pushed("p", key="kp"),
             {"type": "queue:pruned", "ids": ["c", "d", "f", "p", "gone"]})
    assert sorted(s.items) == ["f", "p"]  # failed and pending items are not prunable
    assert list(s.completed[(P, "merges")]) == []  # no stale ids kept in snapshots
    assert s.waiting_count(P, "merges") == 2
    assert s.live_item_for(P, "merges", "kf")["id"] == "f"
    assert s.next_takeable(P, "merges", 0.0)["id"] == "p"
    restored = State.from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored.to_dict() == s.to_dict()


def leased_job(lease: float = 60.0) -> list[dict]:
    return [pushed("a"), {"type": "job:created", "id": "j", "p": P, "pipeline": "merge",
                          "vars": {}, "cwd": "/w", "item": "a", "ts": 1000.0},
            {"type": "queue:taken", "id": "a", "by": "w", "job": "j", "lease": lease,
             "ts": 1000.0}]


def test_a_new_process_of_a_leased_job_renews_its_items_lease():
    s = fold(*leased_job(), {"type": "job:process", "id": "j", "pid": 7, "ts": 1010.0})
    assert s.items["a"]["lease_until"] == 1070.0
    # resumed long after the take (a restarted worker): the lease counts from now
    s.apply({"type": "job:resumed", "id": "j", "by": "w", "ts": 5000.0}, 5)
    s.apply({"type": "job:process", "id": "j", "pid": 8, "ts": 5000.5}, 6)
    assert s.items["a"]["lease_until"] == 5060.5
    assert s.expired_leases(P, "merges", now=5001.0) == []


def test_a_reopened_leased_job_gets_a_fresh_lease_not_its_old_one():
    s = fold(*leased_job(),
             {"type": "job:finished", "id": "j", "outcome": "failed", "error": "boom"},
             {"type": "queue:failed", "id": "a", "error": "boom", "dead": True,
              "retry_at": None, "ts": 1005.0},
             {"type": "job:reopened", "id": "j", "step": "x", "ts": 9000.0})
    assert s.items["a"]["status"] == "active"
    assert s.items["a"]["lease_until"] == 9060.0
    assert s.expired_leases(P, "merges", now=9001.0) == []


def test_an_unleased_items_job_process_sets_no_lease():
    s = fold(*leased_job(lease=0), {"type": "job:process", "id": "j", "pid": 7})
    assert s.items["a"]["lease_until"] is None


def test_next_takeable_passes_over_skipped_items_in_order():
    s = fold(pushed("a"), pushed("b"), pushed("c"), pushed("d"),
             {"type": "queue:taken", "id": "c", "by": "w", "job": "j"},
             {"type": "queue:failed", "id": "c", "error": "x", "dead": False,
              "retry_at": 1500.0})
    assert s.next_takeable(P, "merges", now=2000, skip={"a"})["id"] == "b"
    assert s.next_takeable(P, "merges", now=2000, skip={"a", "b"})["id"] == "c"
    assert s.next_takeable(P, "merges", now=1400, skip={"a", "b"})["id"] == "d"
    assert s.next_takeable(P, "merges", now=2000, skip={"a", "b", "c", "d"}) is None
