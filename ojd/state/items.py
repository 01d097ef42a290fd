"""The queue items' part of the fold: ``queue:*`` events, the indexes a take reads, and
the queries over items (pure, like all of ``ojd.state``)."""

from __future__ import annotations

import heapq
from collections import deque

from ojd.state.statuses import LIVE_JOB_STATES

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the CLI's start-up path
    from collections.abc import Callable, Collection

    from ojd.events import Event

# Finished history kept in state (and so in snapshots); older entries fall out of the fold.
# Dead items never fall out: they wait for an operator (``oj queue prune``, drop, retry).
KEEP_COMPLETED_PER_QUEUE = 200


class ItemFold:
    """``State``'s items: a mixin, its slots are ``State``'s."""

    __slots__ = ()
    items: dict[str, dict]
    live_keys: dict[tuple[str, str, str], str]
    completed: dict[tuple[str, str], deque[str]]
    jobs: dict[str, dict]
    waiting: dict[tuple[str, str], set[str]]
    _ready: dict[tuple[str, str], list[tuple]]
    _cooling: dict[tuple[str, str], list[tuple]]
    _delayed: dict[tuple[str, str], list[tuple]]
    paused: set[tuple[str, str]]
    pos: int

    def _queue_pushed(self, ev: Event) -> None:
        item = {
            "id": ev["id"],
            "seq": self.pos,  # WAL position of the push: FIFO order
            "project": ev["p"],
            "queue": ev["q"],
            "data": ev["data"],
            "key": ev.get("key", ""),
            "status": "pending",
            "attempts": 0,
            "created_at": ev["ts"],
            "updated_at": ev["ts"],
            "retry_at": None,
            "owner": None,
            "job": None,
            "error": None,
        }
        if ev.get("due"):  # a delayed item: not taken before then
            item["due"] = ev["due"]
        if ev.get("priority"):  # taken before items of a lower one
            item["priority"] = ev["priority"]
        self.items[ev["id"]] = item
        self._index(item)
        if item["key"]:
            self.live_keys[(item["project"], item["queue"], item["key"])] = ev["id"]

    def _queue_taken(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is None:
            return
        self._set_status(item, "active")
        item["attempts"] += 1
        item["owner"] = ev.get("by")
        item["job"] = ev.get("job")
        item["retry_at"] = None
        item["updated_at"] = ev["ts"]
        # a shared store's lease: the job's process renews it; past it, any host's worker
        # hands the item (and its job, from its step) to another host
        item["lease"] = ev.get("lease")
        item["lease_until"] = ev["ts"] + ev["lease"] if ev.get("lease") else None

    def _queue_lease_renewed(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is not None and item["status"] == "active" and item.get("job") == ev.get(
                "job") and item.get("lease"):
            item["lease_until"] = ev["ts"] + item["lease"]

    def _queue_lease_expired(self, ev: Event) -> None:
        """The item's lease ran out: back to pending, the attempt not counted, its job kept
        (the next taker resumes it from its step) and the job's process no longer its own,
        so that process, should it wake, can record nothing more."""
        item = self.items.get(ev["id"])
        if item is None or item["status"] != "active" or item.get("job") != ev.get("job"):
            return
        self._set_status(item, "pending")
        item["attempts"] = max(0, item["attempts"] - 1)
        item["owner"] = None
        item["lease_until"] = None
        item["updated_at"] = ev["ts"]
        job = self.jobs.get(ev.get("job") or "")
        if job is not None and job["status"] in LIVE_JOB_STATES:
            job["process"] = None
            job["updated_at"] = ev["ts"]

    def _queue_completed(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is None:
            return
        self._settle(item, "completed", ev["ts"])
        done = self.completed.setdefault((item["project"], item["queue"]), deque())
        done.append(item["id"])
        while len(done) > KEEP_COMPLETED_PER_QUEUE:
            self.items.pop(done.popleft(), None)

    def _queue_failed(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is None:
            return
        item["error"] = ev.get("error")
        if ev.get("dead"):
            self._settle(item, "dead", ev["ts"])
        else:
            item["retry_at"] = ev.get("retry_at") or 0.0
            self._set_status(item, "failed")
            item["owner"] = None
            item["updated_at"] = ev["ts"]

    def _queue_released(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is None or item["status"] != "active":
            return
        self._set_status(item, "pending")
        item["attempts"] = max(0, item["attempts"] - 1)
        item["owner"] = None
        item["updated_at"] = ev["ts"]

    def _queue_dropped(self, ev: Event) -> None:
        item = self.items.pop(ev["id"], None)
        if item is not None:
            self._forget_key(item)
            self.waiting.get((item["project"], item["queue"]), set()).discard(item["id"])

    def _queue_pruned(self, ev: Event) -> None:
        gone = [self.items[i] for i in ev.get("ids", ())
                if (self.items.get(i) or {}).get("status") in ("completed", "dead")]
        for item in gone:
            del self.items[item["id"]]
            self._forget_key(item)
            self.waiting.get((item["project"], item["queue"]), set()).discard(item["id"])
        # the per-queue completed history counts only items that are still there
        for key in {(i["project"], i["queue"]) for i in gone if i["status"] == "completed"}:
            done = self.completed.get(key)
            if done is not None:
                self.completed[key] = deque(i for i in done if i in self.items)

    def _queue_retried(self, ev: Event) -> None:
        item = self.items.get(ev["id"])
        if item is None:
            return
        if item["status"] == "completed":
            done = self.completed.get((item["project"], item["queue"]))
            if done is not None and item["id"] in done:
                done.remove(item["id"])
        item.update(attempts=0, retry_at=None, owner=None, error=None)
        self._set_status(item, "pending")
        item["updated_at"] = ev["ts"]
        if item["key"]:
            self.live_keys[(item["project"], item["queue"], item["key"])] = item["id"]

    def _queue_paused(self, ev: Event) -> None:
        self.paused.add((ev["p"], ev["q"]))

    def _queue_resumed(self, ev: Event) -> None:
        self.paused.discard((ev["p"], ev["q"]))

    def _settle(self, item: dict, status: str, ts: float) -> None:
        self._set_status(item, status)
        item["owner"] = None
        item["retry_at"] = None
        item["updated_at"] = ts
        self._forget_key(item)

    def _set_status(self, item: dict, status: str) -> None:
        item["status"] = status
        self._index(item)

    def _index(self, item: dict) -> None:
        """Keep the waiting set and take-order heaps in step with an item's status."""
        key = (item["project"], item["queue"])
        status = item["status"]
        waiting = self.waiting.setdefault(key, set())
        if status == "pending":
            waiting.add(item["id"])
            if item.get("due"):  # moved to the ready heap once due (_ripen)
                heapq.heappush(self._delayed.setdefault(key, []),
                               (item["due"], item["seq"], item["id"]))
            else:
                heapq.heappush(self._ready.setdefault(key, []),
                               (*_rank(item), item["id"]))
        elif status == "failed":
            waiting.add(item["id"])
            heapq.heappush(self._cooling.setdefault(key, []),
                           (item["retry_at"] or 0.0, item["seq"], item["id"]))
        else:
            waiting.discard(item["id"])

    def _forget_key(self, item: dict) -> None:
        k = (item["project"], item["queue"], item["key"])
        if item["key"] and self.live_keys.get(k) == item["id"]:
            del self.live_keys[k]

    # -- queries ------------------------------------------------------------------------

    def queue_items(self, project: str | None = None, queue: str | None = None) -> list[dict]:
        return [i for i in self.items.values()
                if (project is None or i["project"] == project)
                and (queue is None or i["queue"] == queue)]

    def live_item_for(self, project: str, queue: str, key: str) -> dict | None:
        item_id = self.live_keys.get((project, queue, key))
        return self.items.get(item_id) if item_id else None

    def leased(self, project: str, queue: str,
               unless: Callable[[dict], bool] = lambda item: False) -> list[dict]:
        """Active items of the queue that hold a lease, but those ``unless`` says to pass
        over (a worker: those whose job runs on its own host)."""
        return [i for i in self.items.values()
                if i["status"] == "active" and i.get("lease_until") is not None
                and i["project"] == project and i["queue"] == queue and not unless(i)]

    def expired_leases(self, project: str, queue: str, now: float,
                       unless: Callable[[dict], bool] = lambda item: False) -> list[dict]:
        """Leased items of the queue (``leased``) whose lease ran out before ``now``."""
        return [i for i in self.leased(project, queue, unless) if i["lease_until"] < now]

    def next_lease_end(self, project: str, queue: str,
                       unless: Callable[[dict], bool] = lambda item: False) -> float | None:
        ends = [i["lease_until"] for i in self.leased(project, queue, unless)]
        return min(ends) if ends else None

    def next_takeable(self, project: str, queue: str, now: float,
                      skip: Collection[str] = ()) -> dict | None:
        """The pending item that is due, or failed one whose cooldown is over, of the highest
        priority, then the oldest; none of ``skip`` (items a taker passes over)."""
        key = (project, queue)
        if key in self.paused:  # checked in the take's transaction: no host takes
            return None
        items = self.items
        self._ripen(key, now)
        ready = self._ready.get(key)
        while ready and (items.get(ready[0][-1]) or {}).get("status") != "pending":
            heapq.heappop(ready)  # entries of items that moved on since they were pushed
        cooling = self._cooling.get(key)
        while cooling and not _still_cooling(items.get(cooling[0][2]), cooling[0][0]):
            heapq.heappop(cooling)
        if skip:  # rare, and few: a look past the heads, in the heaps' order
            first = next((items[e[-1]] for e in sorted(ready or ()) if e[-1] not in skip
                          and (items.get(e[-1]) or {}).get("status") == "pending"), None)
            due = next((items[e[2]] for e in sorted(cooling or ()) if e[0] <= now
                        and e[2] not in skip and _still_cooling(items.get(e[2]), e[0])),
                       None)
            if first is None or (due is not None and _rank(due) < _rank(first)):
                return due
            return first
        best = items[ready[0][-1]] if ready else None
        if cooling and cooling[0][0] <= now:
            due = items[cooling[0][2]]
            if best is None or _rank(due) < _rank(best):
                best = due
        return best

    def _ripen(self, key: tuple[str, str], now: float) -> None:
        """Move the queue's delayed items that are due by ``now`` to its ready heap."""
        delayed = self._delayed.get(key)
        while delayed and delayed[0][0] <= now:
            due, seq, item_id = heapq.heappop(delayed)
            item = self.items.get(item_id)
            if item is not None and item["status"] == "pending" and item.get("due") == due:
                heapq.heappush(self._ready.setdefault(key, []), (*_rank(item), item_id))

    def next_due(self, project: str, queue: str) -> float | None:
        """When the earliest delayed pending item of the queue falls due (None: none, or
        the queue is paused: a worker has nothing to wake for)."""
        if (project, queue) in self.paused:
            return None
        delayed = self._delayed.get((project, queue))
        items = self.items
        while delayed and (items.get(delayed[0][2]) or {}).get("status") != "pending":
            heapq.heappop(delayed)
        return delayed[0][0] if delayed else None

    def next_retry(self, project: str, queue: str) -> float | None:
        """The earliest retry time of the queue's failed items (None when there is none, or
        the queue is paused)."""
        if (project, queue) in self.paused:
            return None
        cooling = self._cooling.get((project, queue))
        items = self.items
        while cooling and not _still_cooling(items.get(cooling[0][2]), cooling[0][0]):
            heapq.heappop(cooling)
        return cooling[0][0] if cooling else None

    def waiting_count(self, project: str, queue: str) -> int:
        """Items of a queue that are pending or failed (waiting for their retry)."""
        return len(self.waiting.get((project, queue), ()))


def _rank(item: dict) -> tuple[int, int]:
    """Take order: the higher priority first, then the older push."""
    return -item.get("priority", 0), item["seq"]


def _still_cooling(item: dict | None, retry_at: float) -> bool:
    return item is not None and item["status"] == "failed" and (item["retry_at"] or 0.0) == retry_at
