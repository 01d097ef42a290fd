"""The jobs' part of the fold: ``job:*`` and ``agent:*`` events (pure, like all of
``ojd.state``). A job's events reach its queue item too: a resume, a new process and a
reopen move the item's owner, lease and status."""

from __future__ import annotations

from collections import deque

from ojd.state.statuses import FINISHED_JOB_STATES, LIVE_JOB_STATES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.events import Event

# Finished jobs kept in state (and so in snapshots); older ones fall out of the fold.
KEEP_FINISHED_JOBS = 500


class JobFold:
    """``State``'s jobs: a mixin, its slots are ``State``'s."""

    __slots__ = ()
    items: dict[str, dict]
    live_keys: dict[tuple[str, str, str], str]
    jobs: dict[str, dict]
    finished_jobs: deque[str]

    if TYPE_CHECKING:
        def _set_status(self, item: dict, status: str) -> None: ...
        def _close_decision_of(self, job: dict, ts: float) -> None: ...

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
        if ev.get("rerun_of"):
            self.jobs[ev["id"]]["rerun_of"] = ev["rerun_of"]

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
        # what a person chose for the step (an approval, an answer) ends with it
        if job.get("pending_answer") is not None or job.get("pending_action") is not None:
            job["pending_answer"] = job["pending_action"] = None
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
        self._close_decision_of(job, ev["ts"])
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
                   process=None, step_proc=None, dismissed=None)
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
            job["dismissed"] = None  # a new question: a person's again
            job["updated_at"] = ev["ts"]

    def _job_answered(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None and job["status"] == "waiting":
            job["status"] = "running"
            job["waiting_reason"] = None
            job["pending_answer"] = ev.get("message") or ""
            job["updated_at"] = ev["ts"]
            self._close_decision_of(job, ev["ts"])

    def _job_dismissed(self, ev: Event) -> None:
        """Out of what needs a person until the job needs one again (a new wait, a
        reopen); a running job is never dismissed."""
        job = self.jobs.get(ev["id"])
        if job is not None and job["status"] != "running":
            job["dismissed"] = ev["ts"]

    def _agent_started(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["agent"] = {k: ev.get(k) for k in ("step", "visit", "agent", "socket",
                                                  "session", "start")}
            job["agent"]["started_at"] = ev["ts"]

    def _agent_suspended(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None and job["status"] == "running" and job.get("agent"):
            job["status"] = "waiting"
            job["waiting_reason"] = f"suspended by {ev.get('by')}"
            job["pending_answer"] = None
            job["agent"]["suspended"] = ev.get("transcript")
            job["updated_at"] = ev["ts"]

    def _agent_delivered(self, ev: Event) -> None:
        job = self.jobs.get(ev["id"])
        if job is not None:
            job["pending_answer"] = None
            job["pending_action"] = None
