"""``oj decision``: what waiting jobs need a person to choose: list, show, resolve, review."""

from __future__ import annotations

import sys

import click

from oj.output import ago, emit_json, output_option, table
from ojd.decisions import who_resolved
from ojd.errors import OjError, escaped
from ojd.identity import elsewhere
from ojd.notify import one_line
from ojd.runners.decide import find_decision, resolve
from ojd.runners.liveness import alive

DECISION_FIELDS = ("id", "job", "project", "source", "step", "agent", "reason", "screen",
                   "options", "status", "created_at", "resolved_at", "option", "message",
                   "by", "host")


@click.group()
def decision() -> None:
    """Decisions waiting jobs need from a person: list, show, resolve, review."""


def _visible(app, state, every: bool) -> list[dict]:
    """Open decisions of this project (every project's outside one); with ``every``, the
    resolved and closed ones kept in the state too, oldest first."""
    project = app.project_or_none()
    found = [d for d in state.decisions.values()
             if (every or d["status"] == "open")
             and (project is None or d["project"] == project)]
    return sorted(found, key=lambda d: d["created_at"])


@decision.command("list")
@click.option("--all", "every", is_flag=True, help="Resolved and closed ones too.")
@output_option
@click.pass_obj
def list_cmd(app, every: bool, output: str) -> None:
    """Open decisions of this project (every project's, outside one), oldest first."""
    found = _visible(app, app.reader_store.state, every)
    if output == "json":
        emit_json([{k: d.get(k) for k in DECISION_FIELDS} for d in found])
        return
    rows = [(d["id"], d["job"], d["source"], d["step"] or "-", d["status"]
             if d["status"] != "resolved" else f"resolved by {who_resolved(d)}",
             _cut(d["reason"], 48), ago(d["created_at"])) for d in found]
    table(("ID", "JOB", "SOURCE", "STEP", "STATUS", "WHY", "CREATED"), rows,
          empty="no open decisions" if not every else "no decisions")


def _cut(text: str, width: int) -> str:
    text = one_line(text or "")
    return text if len(text) <= width else text[: width - 1] + "…"


def describe(d: dict) -> list[str]:
    """A decision as a person reads it before choosing: context, screen, numbered options."""
    lines = [f"decision {d['id']} ({d['source']}): job {d['job']}, step "
             f"{escaped(d['step'] or '-')}, agent {escaped(d['agent'] or '-')}, "
             f"{ago(d['created_at'])}",
             f"  why: {one_line(d['reason'])}"]
    if d["screen"]:
        lines.append("  its screen (last lines):")
        lines += [f"    | {one_line(line)}" for line in d["screen"]]
    lines.append("  options:")
    for n, o in enumerate(d["options"], 1):
        lines.append(f"    {n}. {one_line(o['label'])}")
    if d["status"] == "resolved":
        chose = f"option {d['option']}" if d.get("option") else "a message"
        said = f": {one_line(d['message'])}" if d.get("message") else ""
        lines.append(f"  resolved by {who_resolved(d)} {ago(d['resolved_at'])}: {chose}{said}")
    elif d["status"] == "closed":
        lines.append(f"  closed: job {d['job']} no longer waits on it")
    return lines


@decision.command("show")
@click.argument("decision_id", metavar="ID")
@output_option
@click.pass_obj
def show_cmd(app, decision_id: str, output: str) -> None:
    """One decision: its context, the agent's last screen lines and its options."""
    d = find_decision(app.existing_store().state, decision_id)
    if output == "json":
        emit_json({k: d.get(k) for k in DECISION_FIELDS})
        return
    for line in describe(d):
        click.echo(line)
    if d["status"] == "open":
        click.echo(f"resolve: oj decision resolve {d['id']} N [-m MESSAGE]")


def _act(app, decision_id: str, number: int | None, message: str | None) -> str:
    """Resolve and say what happens, in one line."""
    done = resolve(app.existing_store(), decision_id, number, message)
    d, job = done.decision, done.job
    if done.action == "cancel":
        return f"decision {d['id']} resolved: job {job['id']} cancelled"
    what = {"done": "its step is marked done", "restart": "its agent starts again",
            "resume": "its agent resumes with the message",
            "reject": "its step fails (rejected)"}.get(
        done.action, "the message goes to its agent" if done.text else "its agent is nudged")
    if done.action == "done" and d["source"] == "approval":
        what = "approved"
    line = f"decision {d['id']} resolved: job {job['id']} runs on, {what}"
    proc = job.get("process")
    if not alive(proc) and not elsewhere(proc):  # a runner on another host sees it there
        line += f"; its runner is gone: oj job resume {job['id']}"
    return line


@decision.command("resolve")
@click.argument("decision_id", metavar="ID")
@click.argument("number", metavar="N", type=click.IntRange(min=1), required=False)
@click.option("-m", "--message", help="Typed into the agent (a nudge's text, an answer).")
@click.pass_obj
def resolve_cmd(app, decision_id: str, number: int | None, message: str | None) -> None:
    """Choose option N of a decision (see `oj decision show ID`) and act on it at once;
    -m alone answers with the message. Recorded with who chose; a decision resolved
    already (from any host) is refused."""
    click.echo(_act(app, decision_id, number, message))


@decision.command("review")
@click.pass_obj
def review_cmd(app) -> int:
    """Walk the open decisions one by one: answer with an option number (then a message,
    or Enter for none), s to skip, q to quit. Reads answers from stdin, so it can be
    piped."""
    store = app.existing_store()
    todo = _visible(app, store.state, False)
    if not todo:
        click.echo("no open decisions")
        return 0
    resolved = skipped = 0
    for n, d in enumerate(todo, 1):
        d = store.refresh().decisions.get(d["id"])
        if d is None or d["status"] != "open":
            continue  # resolved meanwhile (another host, another terminal)
        click.echo(f"[{n}/{len(todo)}] " + "\n".join(describe(d)))
        while True:
            answer = _ask(f"choose 1-{len(d['options'])}, s(kip), q(uit)")
            if answer is None or answer == "q":
                click.echo(f"reviewed: {resolved} resolved, {skipped} skipped")
                return 0
            if answer in ("s", ""):
                skipped += 1
                break
            if not answer.isdigit():
                click.echo(f"  {escaped(answer)!s}: give a number, s or q")
                continue
            message = _ask("message (Enter for none)") or None
            try:
                click.echo("  " + _act(app, d["id"], int(answer), message))
            except OjError as e:
                click.echo(f"  oj: {e}")
                if store.refresh().decisions[d["id"]]["status"] == "open":
                    continue  # a bad choice: ask again
                skipped += 1
                break
            resolved += 1
            break
    click.echo(f"reviewed: {resolved} resolved, {skipped} skipped")
    return 0


def _ask(prompt: str) -> str | None:
    """One answer line from stdin (None at its end); the prompt goes where a person looks."""
    click.echo(f"  {prompt}: ", nl=False, err=not sys.stdin.isatty())
    line = sys.stdin.readline()
    if not line:
        click.echo("", err=not sys.stdin.isatty())
        return None
    return line.strip()
