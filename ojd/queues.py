"""A queue's items, from push to retry: parse and validate an item, push it, the events that
take and fail it, find, drop and retry it (keeping whole queues in order is
``ojd.queue_maintenance``). Each change is one decision under the WAL lock, then durable
events."""

from __future__ import annotations

import json
import os

from ojd.backoff import retry_delay
from ojd.errors import OjError, UsageError, quoted, unknown
from ojd.events import (
    queue_dropped,
    queue_failed,
    queue_paused,
    queue_pushed,
    queue_resumed,
    queue_retried,
    queue_taken,
)
from ojd.project import sha256  # the builtin one when there is one
from ojd.store.jsonlimits import nesting

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and the model stay off the push path
    from collections.abc import Iterable
    from typing import Any

    from ojd.runbook.model import Queue, Runbook
    from ojd.store import Store


class QueueSpec:
    """What a push needs of a queue, read from the project's cached queue index."""

    __slots__ = ("name", "type", "vars", "defaults", "priority")

    def __init__(self, name: str, type: str, vars: list[str] | tuple[str, ...],
                 defaults: dict[str, Any], priority: int = 0) -> None:
        self.name = name
        self.type = type
        self.vars = tuple(vars)
        self.defaults = defaults
        self.priority = priority


def queue_spec(index: dict[str, Any], name: str) -> QueueSpec:
    spec = index["queues"].get(name)
    if spec is None:
        raise unknown_queue(name, index["queues"])
    # an index cached before priorities has none: 0, as the runbook's default
    return QueueSpec(name, spec["type"], spec["vars"], spec["defaults"],
                     spec.get("priority", 0))


def queue_named(runbook: Runbook, name: str) -> Queue:
    queue = runbook.queues.get(name)
    if queue is None:
        raise unknown_queue(name, runbook.queues)
    return queue


def unknown_queue(name: str, known: Iterable[str]) -> UsageError:
    return unknown("queue", name, known)


# Limits on one item, so that no push can make the state unreadable or unwritable for others:
# the log's writer refuses events nested over ojd.store.jsonlimits.MAX_EVENT_DEPTH, and an item
# sits a few levels down in its events and in snapshots.
MAX_ITEM_DEPTH = 64
MAX_ITEM_BYTES = 1 << 20


def parse_item(text: str) -> dict[str, Any]:
    """Queue item JSON from the command line; errors name the position."""
    if len(text) > 4 * MAX_ITEM_BYTES:  # refuse before parsing: the text alone is too big
        raise _too_big(len(text))
    if not text.strip():
        raise UsageError("no item given (the JSON is empty); pass an object such as "
                         "'{\"branch\": \"x\"}', or --var NAME=VALUE")
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as e:
        if "int_max_str_digits" in str(e):  # Python's guard against huge integers
            raise UsageError("a number in the item has too many digits (over 4300); send it "
                             "as a string") from None
        if not isinstance(e, json.JSONDecodeError):
            raise UsageError(f"{e}; use JSON numbers, strings or null") from None
        raise UsageError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}; "
                         "quote the item in single quotes, e.g. '{\"branch\": \"x\"}'") from None
    if not isinstance(data, dict):
        raise UsageError("a queue item must be a JSON object, e.g. '{\"branch\": \"x\"}'")
    return data


def _too_deep() -> UsageError:
    return UsageError(f"the item nests deeper than {MAX_ITEM_DEPTH} levels of objects and "
                      "lists; flatten it, or pass a reference (a path, an id) instead")


def _too_big(size: int) -> UsageError:
    return UsageError(f"the item is {size} bytes of JSON, over the {MAX_ITEM_BYTES >> 20} MiB "
                      "limit; put the data in a file and pass its path")


def check_item_bounds(data: object) -> None:
    if nesting(data, MAX_ITEM_DEPTH) > MAX_ITEM_DEPTH:
        raise _too_deep()
    if _has_nul(data):
        raise UsageError("the item holds a NUL character (\\u0000), which no shell step can "
                         "be given; remove it or encode the value (e.g. base64)")
    try:  # a lone surrogate (\ud800 in JSON, bad bytes in --var) could never reach a step
        size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
    except UnicodeEncodeError:
        raise UsageError("the item holds text that is not valid Unicode (a lone surrogate "
                         "such as \\ud800, or bytes that are not UTF-8); send valid UTF-8"
                         ) from None
    if size > MAX_ITEM_BYTES:
        raise _too_big(size)


def _has_nul(value: object) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\0" in v:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (it would not survive a round trip)")


def parse_var(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--var expects NAME=VALUE, got {quoted(text)}")
    return name, value


def validate_item(queue: Queue | QueueSpec, data: dict[str, Any]) -> dict[str, Any]:
    """Apply defaults and check the item against the queue's declared vars."""
    check_item_bounds(data)  # depth, NUL, valid Unicode, size
    item = {**queue.defaults, **data}
    if queue.vars:
        unknown = [k for k in data if k not in queue.vars]
        if unknown:
            raise UsageError(f"queue '{queue.name}' has no var {quoted(unknown[0])}; "
                             f"its vars are: {', '.join(queue.vars)}")
        missing = [v for v in queue.vars if v not in item]
        if missing:
            raise UsageError(f"queue '{queue.name}' item is missing var '{missing[0]}'; "
                             f"add it to the JSON or pass --var {missing[0]}=VALUE")
    return item


def item_key(data: dict[str, Any]) -> str:
    """Identity of an item's data, for push dedup."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return sha256(canonical.encode()).hexdigest()[:24]


def new_id(existing: dict[str, Any]) -> str:
    while True:
        candidate = os.urandom(4).hex()
        if candidate not in existing:
            return candidate


def push(store: Store, project: str, queue: Queue | QueueSpec,
         data: dict[str, Any], due: float | None = None,
         priority: int | None = None) -> tuple[str, bool]:
    """Queue ``data`` durably (``due``: not taken before then; ``priority``: else the
    queue's). Returns (id, created); a live duplicate returns its id."""
    if queue.type != "persisted":
        raise UsageError(f"queue '{queue.name}' is external; items come from its list command")
    key = item_key(data)
    with store.transaction() as tx:
        live = tx.state.live_item_for(project, queue.name, key)
        if live is not None:
            return live["id"], False
        item_id = new_id(tx.state.items)
        tx.append(queue_pushed(id=item_id, project=project, queue=queue.name, data=data,
                               key=key, due=due,
                               priority=queue.priority if priority is None else priority))
        return item_id, True


def push_many(store: Store, project: str, queue: Queue | QueueSpec,
              items: list[dict[str, Any]], due: float | None = None,
              priority: int | None = None) -> list[tuple[str, bool]]:
    """Queue every item of ``items`` (validated) in one decision and one append, each
    deduplicated as ``push`` does (against the live items and the items before it here).
    Returns (id, created) per item, in order."""
    if queue.type != "persisted":
        raise UsageError(f"queue '{queue.name}' is external; items come from its list command")
    prio = queue.priority if priority is None else priority
    keys = [item_key(data) for data in items]  # hashed before the lock is taken
    with store.transaction() as tx:
        state = tx.state
        fresh: dict[str, str] = {}  # key -> id, of this batch
        ids: set[str] = set()
        results: list[tuple[str, bool]] = []
        events = []
        for data, key in zip(items, keys, strict=True):
            live = state.live_item_for(project, queue.name, key)
            if live is not None or key in fresh:
                results.append((live["id"] if live is not None else fresh[key], False))
                continue
            item_id = new_id(state.items)
            while item_id in ids:
                item_id = new_id(state.items)
            ids.add(item_id)
            fresh[key] = item_id
            events.append(queue_pushed(id=item_id, project=project, queue=queue.name,
                                       data=data, key=key, due=due, priority=prio))
            results.append((item_id, True))
        if events:
            tx.append(*events)
        return results


def set_paused(store: Store, project: str, queue: str, paused: bool) -> bool:
    """Pause (or resume) a queue: its items are pushed as ever but taken by no host until
    it is resumed. False when it already was so (nothing recorded)."""
    with store.transaction() as tx:
        if ((project, queue) in tx.state.paused) == paused:
            return False
        make = queue_paused if paused else queue_resumed
        tx.append(make(project=project, queue=queue))
        return True


def take_event(item: dict, owner: str, job_id: str, lease: float | None = None,
               windows: list | None = None) -> dict:
    """Lease ``item`` to ``owner`` for ``job_id``; appended inside the transaction that chose
    the item (``State.next_takeable``), so no two takers get one item. ``lease`` (a shared
    store): seconds the item stays taken unless the job's process renews it. ``windows``:
    the rates (key, N, per) it counts against."""
    return queue_taken(id=item["id"], by=owner, job=job_id, lease=lease,
                       windows=[[key, most] for key, most, _per in windows or ()])


def failure_event(queue: Queue, item: dict, error: str, now: float) -> dict:
    """``attempts`` counts tries so far; the runbook's retry.attempts are tries after the first.
    The next try's time is decided here, once (its jitter is a random draw), and recorded."""
    dead = item["attempts"] > queue.retry_attempts
    if dead:
        return queue_failed(id=item["id"], error=error, dead=True, retry_at=None)
    wait = retry_delay(item["attempts"], queue.retry_cooldown, queue.retry_backoff,
                       queue.retry_max, queue.retry_jitter)
    return queue_failed(id=item["id"], error=error, dead=False, retry_at=now + wait)


def find_item(store: Store, prefix: str, project: str | None = None) -> dict:
    matches = [i for i in store.state.find(store.state.items, prefix)
               if project is None or i["project"] == project]
    if not matches:
        raise OjError(f"no queue item with id {quoted(prefix)}; see 'oj queue list --items'")
    if len(matches) > 1:
        ids = ", ".join(sorted(m["id"] for m in matches)[:5])
        raise OjError(f"item id {quoted(prefix)} is ambiguous ({ids}); give more characters")
    return matches[0]


def drop(store: Store, project: str, queue: str, prefix: str) -> dict:
    with store.transaction() as tx:
        item = find_item(store, prefix, project)
        if item["queue"] != queue:
            raise OjError(f"item {item['id']} is in queue '{item['queue']}', not {quoted(queue)}")
        if item["status"] == "active":
            raise OjError(f"item {item['id']} is being worked on (job {item['job']}); "
                          "stop its worker first or let it finish")
        tx.append(queue_dropped(id=item["id"]))
        return item


def retry(store: Store, project: str, queue: str, prefix: str | None,
          all_dead: bool = False) -> list[str]:
    """Put failed or dead items back to pending with their attempts reset."""
    with store.transaction() as tx:
        if all_dead:
            items = [i for i in tx.state.queue_items(project, queue) if i["status"] == "dead"]
        else:
            assert prefix is not None
            item = find_item(store, prefix, project)
            if item["queue"] != queue:
                raise OjError(f"item {item['id']} is in queue '{item['queue']}', "
                              f"not {quoted(queue)}")
            if item["status"] not in ("failed", "dead"):
                raise OjError(f"item {item['id']} is {item['status']}; only failed or dead "
                              "items can be retried")
            items = [item]
        retried = []
        for i in items:
            if i["key"] and tx.state.live_item_for(project, queue, i["key"]) not in (None, i):
                continue  # the same data was queued again meanwhile; that one will run
            tx.append(queue_retried(id=i["id"]))
            retried.append(i["id"])
        return retried
