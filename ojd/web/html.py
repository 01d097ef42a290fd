"""The page as HTML, from ``ojd.web.view``'s data. Pure. Everything from the state is
escaped (item data, job names and errors are user input); times are ``<time>`` elements
with their epoch, which the page's script shows as "12s ago" and keeps current."""

from __future__ import annotations

import json
import time
from html import escape

ASSET_VERSION = "2"  # in the assets' URLs: a new oj's page does not use an old cached file


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f'<time data-ts="{ts:.3f}" title="{shown}">{shown}</time>'


def short(value: object, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                           ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def page(title: str, body: str, stream: str) -> str:
    """A whole page: ``body`` is replaced by what ``stream`` (server-sent events) sends."""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{e(title)}</title>"
        f"<link rel=\"stylesheet\" href=\"/static/dashboard.css?v={ASSET_VERSION}\">"
        "</head>\n<body>"
        "<header><a class=\"brand\" href=\"/\">oj</a>"
        f"<span class=\"title\">{e(title)}</span>"
        "<span id=\"conn\" class=\"conn\">connecting…</span>"
        "<span id=\"token-state\" class=\"token\"></span></header>\n"
        f"<main id=\"live\" data-stream=\"{e(stream)}\">{body}</main>\n"
        "<div id=\"notice\" role=\"status\"></div>"
        f"<script src=\"/static/dashboard.js?v={ASSET_VERSION}\"></script>"
        "</body></html>\n")


def _table(cls: str, headers: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return (f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _job_link(job_id: str) -> str:
    return f"<a href=\"/job/{e(job_id)}\" class=\"id\">{e(job_id)}</a>"


def _button(action: str, label: str, **data: str) -> str:
    attrs = "".join(f" data-{k}=\"{e(v)}\"" for k, v in data.items())
    return f"<button type=\"button\" data-action=\"{action}\"{attrs}>{e(label)}</button>"


def _answer_form(job_id: str) -> str:
    return ("<form class=\"answer\" data-action=\"answer\" data-job=\"" + e(job_id) + "\">"
            "<input name=\"message\" placeholder=\"answer\" aria-label=\"answer\" required>"
            "<button type=\"submit\">Answer</button></form>")


NEEDS_MESSAGE = ' data-needs-message="1"'


def decision(d: dict) -> str:
    """An open decision: its source, why, the agent's last screen lines (collapsed), and
    its numbered options as buttons, with a message field (needed by some options)."""
    lines = "\n".join(d.get("screen") or ())
    screen = (f"<details class=\"screen\"><summary>its screen, last {len(d['screen'])} "
              f"lines</summary><pre>{e(lines)}</pre></details>"
              if d.get("screen") else "")
    needs = [str(n) for n, o in enumerate(d["options"], 1) if o.get("needs_message")]
    hint = f"message (needed by {', '.join(needs)})" if needs else "message (optional)"
    buttons = "".join(
        f"<button type=\"submit\" name=\"option\" value=\"{n}\""
        f"{NEEDS_MESSAGE if o.get('needs_message') else ''}>"
        f"{n}. {e(o['label'])}</button>" for n, o in enumerate(d["options"], 1))
    where = " · ".join(e(x) for x in (d.get("step"), d.get("agent")) if x)
    return (f"<div class=\"decision\" data-decision=\"{e(d['id'])}\">"
            f"<p><span class=\"source\">{e(d['source'])}</span> decision "
            f"<code>{e(d['id'])}</code>{' · ' + where if where else ''} · {when(d['created_at'])}"
            f"</p><p class=\"why\">{e(d['reason'])}</p>{screen}"
            f"<form class=\"resolve\" data-action=\"resolve\" data-decision=\"{e(d['id'])}\">"
            # a disabled default button: Enter in the message field chooses nothing
            "<button type=\"submit\" disabled hidden aria-hidden=\"true\"></button>"
            f"<input name=\"message\" placeholder=\"{hint}\" aria-label=\"message\">"
            f"<span class=\"options\">{buttons}</span></form>"
            f"<div class=\"hint\"><code>oj decision resolve {e(d['id'])} N [-m ...]</code>"
            "</div></div>")


def _decision_done(d: dict) -> str:
    """A decision no longer open, for a job's page: what was chosen and by whom."""
    if d["status"] == "resolved":
        n = d.get("option")
        chosen = (f"{n}. {d['options'][n - 1]['label']}" if n and n <= len(d["options"])
                  else "a message")
        by = f"{d.get('by') or '?'}@{d['host']}" if d.get("host") else d.get("by") or "?"
        what = (f"resolved by {e(by)} {when(d.get('resolved_at'))}: {e(chosen)}"
                + (f" — <q>{e(d['message'])}</q>" if d.get("message") else ""))
    else:
        what = f"closed {when(d.get('resolved_at'))} (its job stopped waiting on it)"
    return (f"<div class=\"decision done\" data-decision=\"{e(d['id'])}\"><p><span "
            f"class=\"source\">{e(d['source'])}</span> decision <code>{e(d['id'])}</code> · "
            f"{e(d.get('step') or '-')}</p><p class=\"why\">{e(d['reason'])}</p>"
            f"<p class=\"outcome\">{what}</p></div>")


def dashboard(report: dict) -> str:
    """The live part of the dashboard."""
    out = []
    problem = report["systemd"]["problem"]
    if problem:
        out.append(f"<p class=\"warn\">systemd cannot be reached ({e(problem)}); unit states "
                   "are not shown</p>")
    if not report["projects"]:
        out.append("<p class=\"empty\">Nothing recorded in this state dir yet.</p>")
    for s in report["projects"]:
        out.append(_project(s, report["rate_minutes"]))
    return "".join(out)


def _project(s: dict, minutes: int) -> str:
    a = s["attention"]
    needs = [f"{n} {what}" for what, n in (("waiting", a["waiting_jobs"]),
                                           ("failed", a["failed_jobs"]),
                                           ("dead items", a["dead_items"]),
                                           ("failed units", a["failed_units"])) if n]
    out = [f"<section class=\"project\"><h2>{e(s['project'])}</h2>"]
    if needs:
        out.append(f"<p class=\"needs\">needs a person: {e(', '.join(needs))}</p>")
    jobs = s["jobs"]
    if jobs["waiting"]:
        rows = [f"<tr class=\"attention\" data-job=\"{e(j['id'])}\"><td>{_job_link(j['id'])}</td>"
                f"<td>{e(short(j['name'], 40))}</td><td>{e(j['step'] or '-')}</td>"
                f"<td>{when(j['updated_at'])}</td><td class=\"reason\">"
                + (decision(j["decision"]) if j.get("decision") else
                   f"{e(j['reason'] or '-')}<div class=\"hint\"><code>{e(j['answer'])}</code>"
                   "</div>")
                + f"{' (dismissed)' if j.get('dismissed') else ''}</td>"
                f"<td class=\"actions\">{'' if j.get('decision') else _answer_form(j['id'])}"
                f"{_button('cancel', 'Cancel', job=j['id'])}</td></tr>"
                for j in jobs["waiting"]]
        out.append("<h3 class=\"attention\">Waiting for a person</h3>"
                   + _table("waiting", ("ID", "NAME", "STEP", "SINCE", "REASON", ""), rows))
    if s["workers"]:
        rows = [f"<tr class=\"{'attention' if w['needs_person'] else ''}\">"
                f"<td>{e(w['host'])}</td><td>{e(w['name'])}</td><td>{e(w['state'])}</td>"
                f"<td>{e(w['queue'] or '-')}</td><td>{w['active']}/{w['concurrency']}</td>"
                f"<td>{w['pending']}</td><td>{when(w['last_poll'])}</td></tr>"
                for w in sorted(s["workers"], key=lambda w: (w["host"] or "", w["name"]))]
        out.append("<h3>Workers</h3>" + _table("workers", ("HOST", "NAME", "STATE", "QUEUE",
                                                           "JOBS", "PENDING", "LAST POLL"),
                                               rows))
    if jobs["running"]:
        rows = []
        for j in jobs["running"]:
            tail = j.get("tail")
            rows.append(
                f"<tr data-job=\"{e(j['id'])}\"><td>{_job_link(j['id'])}</td>"
                f"<td>{e(short(j['name'], 40))}</td><td>{e(j['step'] or '-')}</td>"
                f"<td>{e(j['worker'] or '-')}</td><td>{when(j['created_at'])}</td>"
                f"<td class=\"actions\">{_button('cancel', 'Cancel', job=j['id'])}</td></tr>"
                + (f"<tr class=\"tail\"><td colspan=\"6\"><pre>{e(tail)}</pre></td></tr>"
                   if tail else ""))
        out.append("<h3>Running</h3>" + _table("running", ("ID", "NAME", "STEP", "WORKER",
                                                           "STARTED", ""), rows))
    if s["queues"]:
        out.append(f"<h3>Queues <span class=\"sub\">rates: last {minutes} min</span></h3>")
        out.append(_table("queues", ("NAME", "PENDING", "ACTIVE", "DEAD", "TAKEN",
                                     "COMPLETED", "FAILED", "WORKERS"),
                          [_queue_row(q) for q in s["queues"]]))
        for q in s["queues"]:
            out.append(_items(q))
    if jobs["failed"]:
        rows = [f"<tr class=\"{'attention' if j['needs_person'] else ''}\">"
                f"<td>{_job_link(j['id'])}</td><td>{e(short(j['name'], 40))}</td>"
                f"<td>{e(j['step'] or '-')}</td><td>{when(j['finished_at'])}</td>"
                f"<td class=\"error\">{e(short(j['error'] or '-', 120))}</td></tr>"
                for j in jobs["failed"][:20]]
        out.append("<h3>Failed in the last day</h3>"
                   + _table("failed", ("ID", "NAME", "STEP", "FINISHED", "ERROR"), rows))
    if s["crons"]:
        rows = [f"<tr class=\"{'attention' if c['needs_person'] else ''}\">"
                f"<td>{e(c['name'])}</td><td>{e(c['schedule'] or c.get('calendar') or '-')}</td>"
                f"<td>{e(c['active_state'] or '-')}</td><td>{when(c['next_run'])}</td>"
                f"<td>{when(c['last_run'])}</td><td>{e(c['last_outcome'] or '-')}"
                + (f" {_job_link(c['last_job'])}" if c.get("last_job") else "")
                + f"</td><td>{c['running']}</td></tr>" for c in s["crons"]]
        out.append("<h3>Crons</h3>" + _table("crons", ("NAME", "SCHEDULE", "STATE", "NEXT",
                                                       "LAST", "OUTCOME", "RUNNING"), rows))
    out.append("</section>")
    return "".join(out)


def _queue_row(q: dict) -> str:
    r = q["rates"]
    return (f"<tr class=\"{'attention' if q['needs_person'] else ''}\">"
            f"<td>{e(q['name'])}</td><td class=\"n\">{q['pending']}</td>"
            f"<td class=\"n\">{q['active']}</td><td class=\"n\">{q['dead']}</td>"
            f"<td class=\"n\">{r['taken']}</td><td class=\"n\">{r['completed']}</td>"
            f"<td class=\"n\">{r['failed']}</td>"
            f"<td>{e(', '.join(q['workers']) or '-')}</td></tr>")


def _items(q: dict) -> str:
    if not q["waiting_items"] and not q["dead_items"]:
        return ""
    rows = [f"<li class=\"item {e(i['status'])}\" data-item=\"{e(i['id'])}\">"
            f"<span class=\"id\">{e(i['id'])}</span> <span class=\"status\">{e(i['status'])}"
            f"</span> <code class=\"data\">{e(short(i['data']))}</code>"
            + (f" <span class=\"error\">{e(short(i['error'] or '', 60))}</span>"
               if i["status"] != "pending" else "")
            + (" " + _button("retry", "Retry", item=i["id"], queue=q["name"],
                             project=q["project"])
               if i["status"] in ("failed", "dead") else "")
            + "</li>" for i in q["waiting_items"] + q["dead_items"]]
    return (f"<ul class=\"items\" data-queue=\"{e(q['name'])}\"><li class=\"label\">"
            f"{e(q['name'])}: next and dead items</li>{''.join(rows)}</ul>")


def job(data: dict) -> str:
    """The live part of a job's page."""
    j = data["job"]
    out = [f"<section class=\"job\" data-job=\"{e(j['id'])}\">"
           f"<h2>job {e(j['id'])} <span class=\"status {e(j['status'])}\">{e(j['status'])}"
           f"</span></h2><p class=\"name\">{e(j['name'])}</p>"]
    actions = []
    if j["status"] in ("running", "waiting"):
        actions.append(_button("cancel", "Cancel", job=j["id"]))
    waits_on = next((d for d in data.get("decisions", ()) if d["status"] == "open"
                     and d["id"] == j.get("decision")), None)
    if j["status"] == "waiting" and waits_on is None:
        actions.append(_answer_form(j["id"]))
    item = data["item"]
    if item is not None and item.get("job") == j["id"] and item["status"] in ("failed",
                                                                              "dead"):
        actions.append(_button("retry", "Retry its item", item=item["id"],
                               queue=item["queue"], project=item["project"]))
    if actions:
        out.append(f"<div class=\"actions\">{''.join(actions)}</div>")
    if j["status"] == "waiting" and waits_on is None:
        out.append(f"<p class=\"attention reason\">waiting: {e(j.get('waiting_reason') or '-')}"
                   f" — answer: <code>oj job resume {e(j['id'])} -m '...'</code></p>")
    if data.get("decisions"):
        out.append("<h3>Decisions</h3><div class=\"decisions\">" + "".join(
            decision(d) if d is waits_on else _decision_done(d)
            for d in reversed(data["decisions"])) + "</div>")
    fields = [("project", e(j["project"])), ("pipeline", e(j["pipeline"])),
              ("step", e(j["step"] or "-")), ("worker", e(j.get("worker") or "-")),
              ("item", e(j.get("item") or "-")), ("cron", e(j.get("cron") or "-")),
              ("created", when(j["created_at"])), ("finished", when(j["finished_at"])),
              ("error", e(j.get("error") or "-"))]
    out.append("<dl class=\"fields\">" + "".join(f"<dt>{k}</dt><dd>{v}</dd>"
                                                 for k, v in fields) + "</dl>")
    if j.get("vars"):
        out.append("<h3>Vars</h3><dl class=\"fields\">" + "".join(
            f"<dt>{e(k)}</dt><dd><code>{e(short(v, 200))}</code></dd>"
            for k, v in j["vars"].items()) + "</dl>")
    steps = [f"<tr><td>{e(h['step'])}</td><td>{when(h['started_at'])}</td>"
             f"<td>{when(h['finished_at'])}</td>"
             f"<td>{'-' if h['exit'] is None else e(h['exit'])}</td>"
             f"<td>{e(h.get('host') or '')}</td></tr>" for h in j["history"]]
    if steps:
        out.append("<h3>Steps</h3>" + _table("steps", ("STEP", "STARTED", "FINISHED", "EXIT",
                                                       "HOST"), steps))
    events = [f"<tr><td class=\"n\">{ev['pos']}</td><td>{when(ev.get('ts'))}</td>"
              f"<td>{e(ev.get('type'))}</td><td><code>{e(short(_fields(ev), 160))}</code></td>"
              "</tr>" for ev in data["events"]]
    out.append("<h3>History</h3>" + (_table("events", ("POS", "TIME", "EVENT", "FIELDS"),
                                            events) if events else
                                     "<p class=\"empty\">no events of this job left in the log "
                                     "(compacted into a snapshot)</p>"))
    log = data["log"]
    out.append("<h3>Log</h3>" + (f"<pre class=\"log\">{e(log)}</pre>" if log is not None
                                 else "<p class=\"empty\">no log on this host</p>"))
    out.append("</section>")
    return "".join(out)


def _fields(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k not in ("type", "ts", "pos", "id")}
