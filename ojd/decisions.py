"""Decisions: what a job waits on when a person must choose, as data (pure, no I/O).

A decision is made where a job starts waiting (an agent idle or dead past its handler, a
failed gate, a prompt or question on its screen, an escalation) and recorded in the same
append as the job's wait (``waiting_events``). It carries its source, its context (job,
step, agent, why, the last lines of the agent's screen) and numbered options fitting the
source; each option names the action a resolve takes (``ACTIONS``). Resolving is recorded
as ``decision:resolved`` with who chose (user and host); the fold turns the chosen action
into what the job's runner does next (``choose``).
"""

from __future__ import annotations

from ojd.errors import OjError
from ojd.events import decision_created, job_waiting

# what a chosen option does
SEND = "send"        # type the message (or the option's own text) into the agent
DONE = "done"        # the step ends as done; the job goes on to its next step
RESUME = "resume"    # a live agent gets the message; a dead one starts again with it
RESTART = "restart"  # the agent starts again from its prompt (the message appended)
CANCEL = "cancel"    # the job is cancelled
REJECT = "reject"    # an approval step fails (the message in the job log): on_fail routes
ACTIONS = (SEND, DONE, RESUME, RESTART, CANCEL, REJECT)

SOURCES = ("idle", "dead", "gate", "approval", "question", "escalation")

# the lines of an agent's last screen a decision keeps as context
SCREEN_LINES = 20


def option(label: str, action: str, text: str | None = None, needs_message: bool = False
           ) -> dict:
    """One numbered option: ``text`` is typed when no message is given; ``needs_message``:
    the option means nothing without one (free text, an escalation's answer)."""
    out: dict = {"label": label, "action": action}
    if text is not None:
        out["text"] = text
    if needs_message:
        out["needs_message"] = True
    return out


def options_for(source: str, choices: list[str] | None = None, agent: str | None = None
                ) -> list[dict]:
    """The options of a decision from ``source``; ``choices``: a question's own options
    (the agent gets the chosen one's number typed, as its menu expects). An approval with
    no ``agent`` is an approval step's: nothing to type into, the step ends either way."""
    cancel = option("Cancel the job", CANCEL)
    if source == "approval" and agent is None:
        return [option("Approve: the job goes on (on_done)", DONE),
                option("Reject: the step fails (on_fail; -m says why)", REJECT)]
    if source == "idle":
        return [option("Nudge it (the message, or a default nudge, typed in)", SEND),
                option("Mark the step done", DONE), cancel]
    if source == "dead":
        return [option("Resume it (started again with the message)", RESUME),
                option("Restart it from its prompt", RESTART), cancel]
    if source == "gate":
        return [option("Retry (the message typed in; the gate runs again when it is idle)",
                       SEND), option("Skip the gate: mark the step done", DONE), cancel]
    if source == "approval":
        return [option("Approve", SEND, "y"), option("Reject", SEND, "n")]
    if source == "question":
        own = [option(label, SEND, str(n)) for n, label in enumerate(choices or (), 1)]
        return [*own, option("Answer in free text (-m)", SEND, needs_message=True)]
    if source == "escalation":
        return [option("Resume with a message (-m)", SEND, needs_message=True), cancel]
    raise ValueError(f"unknown decision source {source!r}")


def last_lines(screen: str | None, limit: int = SCREEN_LINES) -> list[str]:
    """The last ``limit`` lines of a screen that are not blank at its end."""
    if not screen or not screen.strip():
        return []
    return [line.rstrip() for line in screen.rstrip().splitlines()[-limit:]]


def waiting_events(*, id: str, job: str, project: str, source: str, step: str | None,
                   agent: str | None, reason: str, screen: str | None = None,
                   choices: list[str] | None = None) -> list[dict]:
    """The events that make job ``job`` wait on a new decision ``id``: append them in one
    transaction (the job's fenced append), so the job never waits without its decision."""
    made = decision_created(id=id, job=job, project=project, source=source, step=step,
                            agent=agent, reason=reason, screen=last_lines(screen),
                            options=options_for(source, choices, agent))
    return [made, job_waiting(id=job, reason=reason)]


def choose(decision: dict, number: int | None, message: str | None) -> tuple[str, str]:
    """The action and the text to type for option ``number`` (1-based) with ``message``;
    no number with a message answers with the message (as ``oj job resume -m`` does). A
    choice that cannot be made is an OjError saying what to give instead."""
    options = decision["options"]
    if number is None:
        if not message:
            raise OjError(f"decision {decision['id']}: give an option number (1-"
                          f"{len(options)}) or a message (-m)")
        if not decision.get("agent"):  # an approval step's: no agent to type it into
            raise OjError(f"decision {decision['id']}: a message alone answers nothing "
                          f"here; choose an option: oj decision resolve {decision['id']} N "
                          f"(1-{len(options)}) [-m ...]")
        return SEND, message
    if not 1 <= number <= len(options):
        raise OjError(f"decision {decision['id']} has options 1-{len(options)}, not "
                      f"{number}; see 'oj decision show {decision['id']}'")
    chosen = options[number - 1]
    if chosen.get("needs_message") and not message:
        raise OjError(f"decision {decision['id']}: option {number} ({chosen['label']}) needs "
                      f"a message: oj decision resolve {decision['id']} {number} -m ...")
    return chosen["action"], message or chosen.get("text") or ""


def who_resolved(decision: dict) -> str:
    """``user@host`` of the resolve, for listings and the refusal of a second one."""
    by, host = decision.get("by") or "?", decision.get("host")
    return f"{by}@{host}" if host else by
