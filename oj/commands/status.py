"""``oj status``: one screen per project of what runs, what waits and what needs a person."""

from __future__ import annotations

import os
import sys
import time

import click

from oj.commands.job import short_name
from oj.output import ago, emit_json, output_option
from ojd import status as st
from ojd.crons import schedule_shown
from ojd.duration import format_duration
from ojd.errors import OjError, UsageError, escaped
from ojd.systemd import Systemd

WATCH_EVERY = 2.0  # seconds between redraws of --watch
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
RED, RESET = "\x1b[31m", "\x1b[0m"
FAILED_SHOWN = 10  # failed jobs listed per project on screen (-o json has them all)
ERROR_WIDTH = 60


class Red(str):
    """A cell that needs a person: red on a terminal, plain text elsewhere."""


@click.command()
@output_option
@click.option("--watch", is_flag=True, help=f"Redraw every {WATCH_EVERY:g}s until Ctrl-C.")
@click.pass_obj
def status(app, output: str, watch: bool) -> int:
    """Workers, jobs, queues and agents of this project (every project's, outside one)."""
    if watch and output == "json":
        raise UsageError("--watch redraws a screen for people; -o json prints once")
    project = app.project_or_none()
    systemd = Systemd()
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if not watch:
        report = _gather(app, project, systemd)
        if output == "json":
            emit_json(report)
        else:
            click.echo(render(report, color), nl=False)
        return 0
    try:
        while True:
            text = render(_gather(app, project, systemd), color)
            # one write per frame: the screen never shows half a redraw
            sys.stdout.write(CLEAR + text)
            sys.stdout.flush()
            time.sleep(WATCH_EVERY)
            app.reader_store.refresh()
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends: not an error
        sys.stdout.write("\n")
        return 0


def _gather(app, project: str | None, systemd) -> dict:
    store = app.reader_store
    now = time.time()
    runbook = None
    if project is not None:
        try:
            runbook = app.runbook
        except OjError:  # a broken runbook: the state still shows (oj runbook check says why)
            runbook = None
    projects = [project] if project is not None else st.projects_of(store)

    def agent_row(job: dict) -> dict | None:
        # lazy: tmux session handling, only for a job at an agent step
        from oj.commands.agent import agent_status, current_agent

        a = current_agent(job)
        if a is None:
            return None
        status = agent_status(app, job, a, now)
        return {"job": job["id"], "step": a["step"], "agent": a.get("agent"),
                "status": status, "session": a["session"], "socket": a["socket"],
                "reason": job.get("waiting_reason"),
                "needs_person": status in ("waiting", "dead")}

    return st.gather(store, projects, runbook, systemd, now, agent_row)


# -- the screen ------------------------------------------------------------------------------


def render(report: dict, color: bool) -> str:
    lines: list[str] = []
    problem = report["systemd"]["problem"]
    if problem:
        lines.append(f"systemd cannot be reached ({problem}); unit states are not shown")
    if not report["projects"]:
        lines.append("nothing recorded in this state dir yet")
    now = report["time"]
    for section in report["projects"]:
        if lines:
            lines.append("")
        lines.append(_header(escaped(section["project"]), section["attention"], color,
                             len(section.get("decisions", ()))))
        _section(lines, section, now, color)
    return "\n".join(lines) + "\n"


def _header(project: str, attention: dict, color: bool, decisions: int = 0) -> str:
    line = f"── {project} " + "─" * max(3, 60 - len(project))
    needs = [f"{n} {what}" for what, n in (("failed", attention["failed_jobs"]),
                                           ("waiting", attention["waiting_jobs"]),
                                           ("dead", attention["dead_items"]),
                                           ("failed units", attention["failed_units"])) if n]
    if decisions:
        needs.append(f"{decisions} open decision{'s' if decisions > 1 else ''} "
                     "(oj decision review)")
    if not needs:
        return line
    return line + "\n" + _paint(Red("needs a person: " + ", ".join(needs)), color)


def _section(lines: list[str], s: dict, now: float, color: bool) -> None:
    def enabled(value: bool | None) -> str:
        return "-" if value is None else ("enabled" if value else "disabled")

    def flag(row: dict, text: object) -> str:
        return Red(text) if row.get("needs_person") else str(text)

    if s["workers"]:
        _table(lines, "Workers", ("NAME", "STATE", "BOOT", "JOBS", "PENDING", "LAST POLL",
                                  "QUEUE"),
               [[flag(w, w["name"]), flag(w, w["state"]), enabled(w["enabled"]),
                 f"{w['active']}/{w['concurrency']}", str(w["pending"]),
                 ago(w["last_poll"], now), escaped(w["queue"] or "-")]
                for w in s["workers"]], color)
    jobs = s["jobs"]
    if jobs["running"]:
        _table(lines, "Running", ("ID", "NAME", "STEP", "WORKER", "STARTED", "UNIT"),
               [[j["id"], short_name(j["name"]), j["step"] or "-", j["worker"] or "-",
                 ago(j["created_at"], now), flag(j, j["unit_state"] or "-")]
                for j in jobs["running"]], color)
    if jobs["waiting"]:
        _table(lines, "Waiting for a person", ("ID", "NAME", "STEP", "SINCE", "REASON"),
               [_red_if(j, [j["id"], short_name(j["name"]), j["step"] or "-",
                            ago(j["updated_at"], now),
                            _cut(j["reason"] or "-") + (" (dismissed)" if j.get("dismissed")
                                                        else "")])
                for j in jobs["waiting"]], color)
    if s.get("decisions"):
        _table(lines, "Decisions", ("ID", "JOB", "SOURCE", "STEP", "SINCE", "WHY"),
               [[Red(d["id"]), d["job"], d["source"], escaped(d["step"] or "-"),
                 ago(d["created_at"], now), _cut(d["reason"] or "-")]
                for d in s["decisions"]], color)
    if jobs["failed"]:
        failed = jobs["failed"]
        _table(lines, "Failed in the last day", ("ID", "NAME", "STEP", "FINISHED", "ERROR"),
               [_red_if(j, [j["id"], short_name(j["name"]), j["step"] or "-",
                            ago(j["finished_at"], now), _failure(j, now)])
                for j in failed[:FAILED_SHOWN]], color)
        if len(failed) > FAILED_SHOWN:
            lines.append(f"  … and {len(failed) - FAILED_SHOWN} more (oj job list "
                         "--status failed)")
    if s["queues"]:
        _table(lines, "Queues", ("NAME", "TYPE", "PENDING", "ACTIVE", "DEAD", "WORKERS"),
               [[escaped(q["name"]) + (" (paused)" if q.get("paused") else ""),
                 q["type"] or "-", str(q["pending"]), str(q["active"]),
                 flag(q, q["dead"]), ", ".join(q["workers"]) or "-"]
                for q in s["queues"]], color)
    if s["crons"]:
        # lazy: the cron and worker commands, only for a project with crons
        from oj.commands.cron import boot, outcome_of, state_of, until

        _table(lines, "Crons", ("NAME", "SCHEDULE", "STATE", "BOOT", "NEXT", "LAST",
                                "OUTCOME", "RUNNING"),
               [[escaped(c["name"]), escaped(schedule_shown(c)), flag(c, state_of(c)),
                 boot(c["enabled"]), until(c["next_run"], now), ago(c["last_run"], now),
                 Red(outcome_of(c)) if c["last_outcome"] == "failed" or c["tick_failed"]
                 else outcome_of(c),
                 f"{c['running']}/{c['concurrency'] or '-'}"]
                for c in s["crons"]], color)
    if s["agents"]:
        _table(lines, "Agents", ("JOB", "STEP", "AGENT", "STATUS", "SESSION"),
               [[a["job"], a["step"], a["agent"] or "-", flag(a, a["status"]), a["session"]]
                for a in s["agents"]], color)
    if not (s["workers"] or s["queues"] or s["agents"] or s["crons"]
            or any(jobs.values()) or s.get("decisions")):
        lines.append("  nothing running, waiting or failed")


def _red_if(row: dict, cells: list[str]) -> list[str]:
    return [Red(c) for c in cells] if row.get("needs_person") else cells


def _failure(row: dict, now: float) -> str:
    """A failed job's error; one whose item retries by itself says when."""
    if row.get("retry_at") is None:
        return _cut(row["error"] or "-")
    when = "now" if row["retry_at"] <= now else f"in {format_duration(row['retry_at'] - now)}"
    return _cut(f"retries {when}: {row['error'] or '-'}")


def _cut(text: str) -> str:
    text = escaped(text, backslashes=False)
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _table(lines: list[str], title: str, headers: tuple[str, ...], rows: list[list[str]],
           color: bool) -> None:
    """An indented, aligned table under ``title``; widths are measured on the plain text,
    so red cells line up with the rest."""
    lines.append(f"{title}:")
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    for row in [list(headers), *rows]:
        cells = [_paint(c, color, c.ljust(w) if i < len(row) - 1 else c)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append(("  " + "  ".join(cells)).rstrip())


def _paint(cell: str, color: bool, text: str | None = None) -> str:
    text = cell if text is None else text
    if color and isinstance(cell, Red):
        stripped = text.rstrip()
        return RED + stripped + RESET + text[len(stripped):]
    return text
