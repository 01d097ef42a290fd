"""oj's state as a pure fold of WAL events: ``State.apply(event)``.

No I/O here. Events are plain dicts (the WAL stores them as JSON); items, jobs and
workers are plain dicts too, so a snapshot is just ``State.to_dict()``.

Event types (``type`` key) and their fields:

- ``queue:pushed``    id, p (project root), q (queue), data, key (dedup key), ts
- ``queue:taken``     id, by (lease owner), job, lease (a shared store: seconds), ts
- ``queue:completed`` id, ts
- ``queue:failed``    id, error, dead (attempts exhausted), retry_at, ts
- ``queue:released``  id, ts                  back to pending; the attempt is not counted
- ``queue:lease_renewed`` id, job, ts         the job's process keeps its item's lease
- ``queue:lease_expired`` id, job, ts         the lease ran out: back to pending (attempt not
                                              counted), the job's process cleared
- ``queue:dropped``   id, ts
- ``queue:retried``   id, ts                  back to pending with attempts reset
- ``queue:pruned``    ids, ts                 completed and dead items removed by ``oj queue
                                              prune`` (an item in any other state stays)
- ``job:created``     id, p, pipeline, name, vars, cwd, ws, invoke, item, worker, by, ts,
                      cron (the cron whose tick made it; absent otherwise)
- ``job:step_started``  id, step, pid, start, boot, host, ts
- ``job:locals``      id, locals, ts          evaluated once per job, kept for a resume
- ``job:step_finished`` id, step, exit, next, failing, ts
- ``job:finished``    id, outcome ("done" | "failed" | "cancelled"), error, ts
- ``job:resumed``     id, by, ts              a new owner picks up an interrupted job
- ``job:pruned``      ids, ts                 finished jobs removed by ``oj job prune`` (a job
                                              that is not finished stays)
- ``job:waiting``     id, reason, ts          an agent step escalated: a person must answer
- ``job:answered``    id, message, ts         ``oj job resume ID -m``: the job runs on
- ``agent:started``   id, step, visit, agent, socket, session, start, ts   an agent's tmux session
- ``agent:delivered`` id, ts                  the answer reached the agent
- ``worker:recorded`` name, p, runbook, queue, concurrency, ts
- ``worker:started``  name, invocation, pid, host, ts
- ``worker:woken``    name, ts
- ``worker:stopped``  name, invocation, host, ts
- ``worker:resized``  name, concurrency, ts   ``oj worker resize``: the concurrency the worker
                                              keeps to instead of its runbook's (None: the
                                              runbook's again)
- ``worker:pruned``   names, ts               bindings removed by ``oj worker prune``
- ``cron:recorded``   name, p, runbook, ts      ``oj cron start|enable|once``: the cron's
                                              project (its timer runs ``ojd cron NAME``)
- ``cron:tick``       name, job, ts           a tick started job ``job``
- ``cron:skipped``    name, running, ts       a tick found ``running`` of its jobs running
                                              (its concurrency) and started none
- ``state:loss_acknowledged`` upto, ts        an operator accepted the lost positions <= upto
- ``state:repaired`` ts                       a repair wrote snapshots (no change to the fold)

Lost positions are not events: the store notes them (``note_lost``) when the log skips
positions that no snapshot covers, so that every later snapshot still names them.
"""

from __future__ import annotations

import heapq
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the CLI's start-up path
    from collections.abc import Callable, Collection

# Finished history kept in state (and so in snapshots); older entries fall out of the fold.
# Dead items never fall out: they wait for an operator (``oj queue prune``, drop, retry).
KEEP_COMPLETED_PER_QUEUE = 200
KEEP_FINISHED_JOBS = 500

LIVE_ITEM_STATES = ("pending", "active", "failed")
# a job in these states has (or is owed) a runner; "waiting" is an agent waiting for a person
LIVE_JOB_STATES = ("running", "waiting")
# A job in any other status (running, waiting for a human...) still owns its log and workspace
FINISHED_JOB_STATES = ("done", "failed", "cancelled")

Event = dict  # an event: {"type": ..., "ts": ..., fields of its type}


class State:
    """Everything oj knows, rebuilt from events. ``pos`` is the last applied WAL position."""

    __slots__ = ("pos", "items", "live_keys", "completed", "jobs", "finished_jobs", "workers",
                 "crons", "waiting", "_ready", "_cooling", "lost")

    def __init__(self) -> None:
        self.pos = 0
        self.items: dict[str, dict] = {}
        # (project, queue, key) -> id of the live item holding that data (push dedup)
        self.live_keys: dict[tuple[str, str, str], str] = {}
        self.completed: dict[tuple[str, str], deque[str]] = {}
        self.jobs: dict[str, dict] = {}
        self.finished_jobs: deque[str] = deque()
        self.workers: dict[str, dict] = {}
        self.crons: dict[str, dict] = {}
        # Derived indexes, so a take and a pending count do not scan every item:
        # (project, queue) -> ids of its pending and failed items
        self.waiting: dict[tuple[str, str], set[str]] = {}
        # heaps with lazy deletion: (seq, id) of pending items; (retry_at, seq, id) of failed
        self._ready: dict[tuple[str, str], list[tuple]] = {}
        self._cooling: dict[tuple[str, str], list[tuple]] = {}
        # [first, last, acknowledged] of position ranges the fold never saw (see note_lost)
        self.lost: list[list] = []

    # -- the fold -----------------------------------------------------------------------

    def apply(self, event: Event, pos: int | None = None) -> None:
        if pos is not None:
            self.pos = pos
        handler = _HANDLERS.get(event.get("type", ""))
        if handler is not None:  # unknown types come from newer versions: skip, keep going
            handler(self, event)

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
            heapq.heappush(self._ready.setdefault(key, []), (item["seq"], item["id"]))
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

    def _job_created(self, ev: Event) -> None:
        self.jobs[ev["id"]] = {
            "id": ev["id"],
            "project": ev["p"],
            "pipeline": ev["pipeline"],
            "name": ev.get("name") or ev["pipeline"],
            "vars": ev.get("vars", {}),
            "cwd": ev.get("cwd"),
            "invoke": ev.get("invoke"),
            "workspace": ev.get("ws"),
            "item": ev.get("item"),
            "worker": ev.get("worker"),
            "cron": ev.get("cron"),
            "owner": ev.get("by"),
            "status": "running",
            "step": None,
            "step_status": None,
            "visits": {},
            "history": [],
            "created_at": ev["ts"],
            "updated_at": ev["ts"],
            "finished_at": None,
            "error": None,
        }

    def _job_step_started(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is None:
            return
        step = ev["step"]
        job["step"] = step
        job["step_status"] = "running"
        job["visits"][step] = job["visits"].get(step, 0) + 1
        job["history"].append({"step": step, "started_at": ev["ts"], "exit": None,
                               "finished_at": None, "host": ev.get("host")})
        # the step's process group (its wrapper's pid) and start time: a runner that takes
        # the job over waits for a step that still runs instead of starting it again
        job["step_proc"] = ({"pid": ev["pid"], "start": ev.get("start"),
                             "boot": ev.get("boot"), "host": ev.get("host")}
                            if ev.get("pid") else None)
        job["updated_at"] = ev["ts"]

    def _job_step_finished(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is None:
            return
        job["step_status"] = "ok" if ev.get("exit") == 0 else "failed"
        if job["history"] and job["history"][-1]["step"] == ev["step"]:
            job["history"][-1].update(exit=ev.get("exit"), finished_at=ev["ts"])
        job["next"] = ev.get("next")
        job["failing"] = job.get("failing", False) or bool(ev.get("failing"))
        job["updated_at"] = ev["ts"]

    def _job_locals(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["locals"] = ev.get("locals", {})
            job["locals_done"] = True

    def _job_finished(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is None or job["status"] not in LIVE_JOB_STATES:
            return  # a job ends once: a runner's late word after a cancel changes nothing
        job["status"] = ev["outcome"]
        job["error"] = ev.get("error")
        job["finished_at"] = job["updated_at"] = ev["ts"]
        self.finished_jobs.append(job["id"])
        while len(self.finished_jobs) > KEEP_FINISHED_JOBS:
            self.jobs.pop(self.finished_jobs.popleft(), None)

    def _job_resumed(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["owner"] = ev.get("by")
            job["resumes"] = job.get("resumes", 0) + 1  # a crash loop ends at a limit
            job["updated_at"] = ev["ts"]
            item = self.items.get(job["item"]) if job["item"] else None
            if item is not None and item["status"] == "active":
                item["owner"] = ev.get("by")

    def _job_process(self, ev: Event) -> None:
        """The process that runs the job now (and its transient unit under systemd). A new
        process renews its item's lease: the lease counts from the job's (re)start, not from
        the take, or a resumed job's item would expire at once and run on another host too."""
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["process"] = {"pid": ev["pid"], "start": ev.get("start"),
                              "boot": ev.get("boot"), "unit": ev.get("unit"),
                              "host": ev.get("host")}
            job["owner"] = ev.get("by") or job["owner"]
            job["updated_at"] = ev["ts"]
            self._renew_lease_of(job, ev["ts"])

    def _renew_lease_of(self, job: dict, ts: float) -> None:
        item = self.items.get(job["item"]) if job["item"] else None
        if item is not None and item["status"] == "active" and item.get("job") == job[
                "id"] and item.get("lease"):
            item["lease_until"] = ts + item["lease"]

    def _job_reopened(self, ev: Event) -> None:
        """``oj job resume`` of a failed or cancelled job: it runs again from ``step``, its
        item (dead or failed with it) active again."""
        job = self.jobs.get(ev["id"])
        if job is None or job["status"] in LIVE_JOB_STATES:
            return
        if job["id"] in self.finished_jobs:
            self.finished_jobs.remove(job["id"])
        job.update(status="running", error=None, finished_at=None, updated_at=ev["ts"],
                   next=ev.get("step"), step_status="reopened", failing=False,
                   process=None, step_proc=None)
        job["vars"] = {**job["vars"], **(ev.get("vars") or {})}
        item = self.items.get(job["item"]) if job["item"] else None
        if item is not None and item.get("job") == job["id"] and \
                item["status"] in ("dead", "failed", "pending"):
            self._set_status(item, "active")
            item.update(job=job["id"], error=None, retry_at=None, updated_at=ev["ts"])
            k = (item["project"], item["queue"], item["key"])
            if item["key"] and k not in self.live_keys:
                self.live_keys[k] = item["id"]
            self._renew_lease_of(job, ev["ts"])  # not the old one, long past

    def _job_pruned(self, ev: Event) -> None:
        gone = {i for i in ev.get("ids", ()) if (self.jobs.get(i) or {}).get("status")
                in FINISHED_JOB_STATES}
        for job_id in gone:
            del self.jobs[job_id]
        if gone:
            self.finished_jobs = deque(i for i in self.finished_jobs if i not in gone)

    def _job_waiting(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None and job["status"] == "running":
            job["status"] = "waiting"
            job["waiting_reason"] = ev.get("reason")
            job["pending_answer"] = None
            job["updated_at"] = ev["ts"]

    def _job_answered(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None and job["status"] == "waiting":
            job["status"] = "running"
            job["waiting_reason"] = None
            job["pending_answer"] = ev.get("message") or ""
            job["updated_at"] = ev["ts"]

    def _agent_started(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["agent"] = {k: ev.get(k) for k in ("step", "visit", "agent", "socket",
                                                  "session", "start")}
            job["agent"]["started_at"] = ev["ts"]

    def _agent_delivered(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["pending_answer"] = None

    def _worker_recorded(self, ev: Event) -> None:
        w = self.workers.setdefault(ev["name"], {"name": ev["name"], "invocation": None,
                                                 "pid": None, "started_at": None,
                                                 "woken_at": None, "stopped_at": None})
        w.update(project=ev["p"], runbook=ev.get("runbook"), queue=ev.get("queue"),
                 pipeline=ev.get("pipeline"), concurrency=ev.get("concurrency", 1),
                 recorded_at=ev["ts"])

    def _worker_started(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w.update(invocation=ev.get("invocation"), pid=ev.get("pid"), started_at=ev["ts"],
                     host=ev.get("host"))
            if ev.get("host"):  # a shared store: the same worker may run on several hosts
                w.setdefault("hosts", {})[ev["host"]] = {
                    "invocation": ev.get("invocation"), "pid": ev.get("pid"),
                    "started_at": ev["ts"], "stopped_at": None}

    def _worker_woken(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["woken_at"] = ev["ts"]

    def _worker_stopped(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["stopped_at"] = ev["ts"]
            instance = w.get("hosts", {}).get(ev.get("host") or "")
            if instance is not None and instance["invocation"] == ev.get("invocation"):
                instance["stopped_at"] = ev["ts"]

    def _worker_resized(self, ev: Event) -> None:
        w = self.workers.get(ev["name"])
        if w is not None:
            w["resized"] = ev.get("concurrency")

    def _worker_pruned(self, ev: Event) -> None:
        for name in ev.get("names", ()):
            self.workers.pop(name, None)

    def _cron_recorded(self, ev: Event) -> None:
        c = self.crons.setdefault(ev["name"], {"name": ev["name"], "last_tick": None,
                                               "last_job": None, "last_skipped": None,
                                               "ticks": 0, "skipped": 0})
        c.update(project=ev["p"], runbook=ev.get("runbook"), recorded_at=ev["ts"])

    def _cron_tick(self, ev: Event) -> None:
        c = self.crons.get(ev["name"])
        if c is not None:
            c.update(last_tick=ev["ts"], last_job=ev.get("job"), ticks=c["ticks"] + 1)

    def _cron_skipped(self, ev: Event) -> None:
        c = self.crons.get(ev["name"])
        if c is not None:
            c.update(last_skipped=ev["ts"], skipped=c["skipped"] + 1,
                     last_running=ev.get("running"))

    def _loss_acknowledged(self, ev: Event) -> None:
        for span in self.lost:
            if span[1] <= ev["upto"]:
                span[2] = True

    def note_lost(self, first: int, last: int) -> None:
        """Positions first..last are gone from the log and no snapshot holds them."""
        if self.lost and self.lost[-1][1] >= first:
            return  # already noted (a reload re-read the same gap)
        self.lost.append([first, last, False])

    def unacknowledged_loss(self) -> list[tuple[int, int]]:
        return [(first, last) for first, last, acked in self.lost if not acked]

    # -- queries (pure) -----------------------------------------------------------------

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
        """Oldest pending item, or a failed one whose cooldown is over (the older wins);
        none of ``skip`` (items a taker passes over)."""
        key = (project, queue)
        items = self.items
        ready = self._ready.get(key)
        while ready and (items.get(ready[0][1]) or {}).get("status") != "pending":
            heapq.heappop(ready)  # entries of items that moved on since they were pushed
        cooling = self._cooling.get(key)
        while cooling and not _still_cooling(items.get(cooling[0][2]), cooling[0][0]):
            heapq.heappop(cooling)
        if skip:  # rare, and few: a look past the heads, in the heaps' order
            first = next((items[e[1]] for e in sorted(ready or ()) if e[1] not in skip
                          and (items.get(e[1]) or {}).get("status") == "pending"), None)
            due = next((items[e[2]] for e in sorted(cooling or ()) if e[0] <= now
                        and e[2] not in skip and _still_cooling(items.get(e[2]), e[0])),
                       None)
            if first is None or (due is not None and due["seq"] < first["seq"]):
                return due
            return first
        best = items[ready[0][1]] if ready else None
        if cooling and cooling[0][0] <= now:
            due = items[cooling[0][2]]
            if best is None or due["seq"] < best["seq"]:
                best = due
        return best

    def next_retry(self, project: str, queue: str) -> float | None:
        """The earliest retry time of the queue's failed items (None when there is none)."""
        cooling = self._cooling.get((project, queue))
        items = self.items
        while cooling and not _still_cooling(items.get(cooling[0][2]), cooling[0][0]):
            heapq.heappop(cooling)
        return cooling[0][0] if cooling else None

    def waiting_count(self, project: str, queue: str) -> int:
        """Items of a queue that are pending or failed (waiting for their retry)."""
        return len(self.waiting.get((project, queue), ()))

    def find(self, table: dict[str, dict], prefix: str) -> list[dict]:
        """Entries whose id starts with ``prefix`` (ids are short; prefixes are accepted)."""
        if not prefix:
            return []
        exact = table.get(prefix)
        if exact is not None:
            return [exact]
        return [v for k, v in table.items() if k.startswith(prefix)]

    # -- snapshots ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "pos": self.pos,
            "items": self.items,
            "completed": [[p, q, list(ids)] for (p, q), ids in self.completed.items()],
            "jobs": self.jobs,
            "finished_jobs": list(self.finished_jobs),
            "workers": self.workers,
            "crons": self.crons,
            "lost": self.lost,
        }

    @classmethod
    def from_dict(cls, data: dict) -> State:
        state = cls()
        state.pos = data.get("pos", 0)
        state.items = data.get("items", {})
        state.completed = {(p, q): deque(ids) for p, q, ids in data.get("completed", [])}
        state.jobs = data.get("jobs", {})
        state.finished_jobs = deque(data.get("finished_jobs", []))
        state.workers = data.get("workers", {})
        state.crons = data.get("crons", {})
        state.lost = data.get("lost", [])
        for item in sorted(state.items.values(), key=lambda i: i["seq"]):
            state._index(item)
            if item["key"] and item["status"] in LIVE_ITEM_STATES:
                state.live_keys[(item["project"], item["queue"], item["key"])] = item["id"]
        return state


def concurrency_of(worker: dict) -> int:
    """How many jobs a recorded worker runs at once: its override (``oj worker resize``)
    when one is recorded, else its runbook's."""
    return worker.get("resized") or worker.get("concurrency") or 1


def _still_cooling(item: dict | None, retry_at: float) -> bool:
    return item is not None and item["status"] == "failed" and (item["retry_at"] or 0.0) == retry_at


_HANDLERS = {
    "queue:pushed": State._queue_pushed,
    "queue:taken": State._queue_taken,
    "queue:completed": State._queue_completed,
    "queue:failed": State._queue_failed,
    "queue:released": State._queue_released,
    "queue:lease_renewed": State._queue_lease_renewed,
    "queue:lease_expired": State._queue_lease_expired,
    "queue:dropped": State._queue_dropped,
    "queue:retried": State._queue_retried,
    "queue:pruned": State._queue_pruned,
    "job:created": State._job_created,
    "job:step_started": State._job_step_started,
    "job:step_finished": State._job_step_finished,
    "job:locals": State._job_locals,
    "job:finished": State._job_finished,
    "job:resumed": State._job_resumed,
    "job:process": State._job_process,
    "job:reopened": State._job_reopened,
    "job:pruned": State._job_pruned,
    "job:waiting": State._job_waiting,
    "job:answered": State._job_answered,
    "agent:started": State._agent_started,
    "agent:delivered": State._agent_delivered,
    "worker:recorded": State._worker_recorded,
    "worker:started": State._worker_started,
    "worker:woken": State._worker_woken,
    "worker:stopped": State._worker_stopped,
    "worker:resized": State._worker_resized,
    "worker:pruned": State._worker_pruned,
    "cron:recorded": State._cron_recorded,
    "cron:tick": State._cron_tick,
    "cron:skipped": State._cron_skipped,
    "state:loss_acknowledged": State._loss_acknowledged,
}
