"""The page's actions (retry an item, cancel a job, answer a waiting job, resolve a
decision) and who may take
them: whoever sends the state dir's ``web_token`` (``oj.conf``), as ``Authorization:
Bearer TOKEN`` or ``?token=TOKEN``, from any address. Each action is the call the CLI
makes; nothing here decides anything about the state."""

from __future__ import annotations

import hmac
import os

from ojd import conf, queues, wake
from ojd.errors import OjError
from ojd.identity import user_name
from ojd.runners import control, decide

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store import Store

TOKEN_KEY = "web_token"


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_token(root: str, sent: str | None) -> None:
    """Refuse (403) when no token is configured, (401) when ``sent`` is not it. Read at
    each action, so a token set or changed takes effect without a restart."""
    found = conf.read(root).get(TOKEN_KEY)
    token = found[1] if found else ""
    if not token:
        raise Refused(403, f"actions are off: no {TOKEN_KEY} is set; add a line "
                           f"'{TOKEN_KEY} = SECRET' to {os.path.join(root, conf.CONFIG_FILE)} "
                           "and open the page with ?token=SECRET")
    if sent is None:
        raise Refused(401, "this action needs the token: open the page with ?token=... or "
                           "send 'Authorization: Bearer ...'")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise Refused(401, "wrong token; use the web_token of the state dir's oj.conf")


def sent_token(authorization: str | None, query_token: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return query_token


def same_origin(origin: str | None, host: str | None) -> bool:
    """A browser's cross-site POST says where it comes from (``Origin``): only this
    server's own page (or no browser at all: curl sends none) may act."""
    if not origin:
        return True
    return origin.split("://", 1)[-1].rstrip("/") == (host or "")


def cancel(store: Store, job_id: str) -> str:
    job = _job(store, job_id)
    control.cancel(store, job["id"])
    item = f"; item {job['item']} is dead (Retry brings it back)" if job.get("item") else ""
    return f"job {job['id']} cancelled{item}"


def answer(store: Store, job_id: str, message: str) -> str:
    if not message.strip():
        raise OjError("give an answer (the message typed into the waiting job)")
    job = _job(store, job_id)
    control.answer(store, job["id"], message)
    return f"job {job['id']} answered; it goes on"


def resolve(store: Store, decision_id: str, option: object, message: object) -> str:
    """As ``oj decision resolve``; recorded as by ``web:USER`` (the server's user: the
    page has one token, not a person's name)."""
    if option is not None and (not isinstance(option, int) or isinstance(option, bool)):
        raise OjError("option must be a number (1, 2, ...)")
    text = str(message).strip() if message else None
    done = decide.resolve(store, decision_id, option, text or None, by=f"web:{user_name()}")
    return f"decision {done.decision['id']} resolved: job {done.job['id']} " + (
        "cancelled" if done.action == "cancel" else "runs on")


def retry(store: Store, project: str, queue: str, item_id: str) -> str:
    ids = queues.retry(store, project, queue, item_id)
    if ids:  # as `oj queue retry` does: the queue's workers take it now
        wake.wake_queue_workers(store, project, queue)
        return f"item {ids[0]} is pending again"
    return f"item {item_id} was not retried: the same data is queued again already"


def _job(store: Store, job_id: str) -> dict:
    job = store.refresh().jobs.get(job_id)
    if job is None:
        raise OjError(f"no job with id {job_id}")
    return job
