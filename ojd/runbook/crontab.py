"""A crontab schedule (``*/5 * * * *``, ``@daily``) in systemd's calendar spelling, for the
hint of a cron whose ``schedule`` was written for cron(8). Pure."""

from __future__ import annotations

import re

from ojd.runbook.calendar import CalendarError
from ojd.runbook.calendar import check as check_calendar

_SPECIALS = {"@yearly": "yearly", "@annually": "yearly", "@monthly": "monthly",
             "@weekly": "Sun 00:00", "@daily": "daily", "@midnight": "daily",
             "@hourly": "hourly"}
_SHORTHANDS = {("0", "*", "*", "*", "*"): "hourly", ("0", "0", "*", "*", "*"): "daily",
               ("0", "0", "1", "*", "*"): "monthly"}  # weekly: Monday in systemd, Sunday in cron
_FIELD = re.compile(r"[0-9A-Za-z*/,-]+\Z", re.ASCII)
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NAMES = {d.lower(): str(i) for i, d in enumerate(_DAYS[:7])}
# (name, lowest value, whether two digits are written, what */N repeats from)
_PARTS = (("minute", 0, True, "0"), ("hour", 0, True, "0"), ("day of month", 1, False, "1"),
          ("month", 1, False, "1"))


class NoTranslation(ValueError):
    """A crontab schedule systemd's calendar cannot say the same way; the message says why."""


def looks_like_crontab(schedule: str) -> bool:
    words = schedule.split()
    return (len(words) == 1 and words[0] in (*_SPECIALS, "@reboot")
            or len(words) == 5 and all(_FIELD.match(w) for w in words))


def systemd_spelling(schedule: str) -> str:
    """The calendar expression for a crontab ``schedule``; NoTranslation when there is none."""
    words = schedule.split()
    if len(words) == 1:
        if words[0] == "@reboot":
            raise NoTranslation("@reboot is no calendar time; a worker or an 'interval' cron "
                                "starts at boot")
        return _SPECIALS[words[0]]
    if tuple(words) in _SHORTHANDS:
        return _SHORTHANDS[tuple(words)]
    minute, hour, dom, month = (_part(w, *p) for w, p in zip(words, _PARTS, strict=False))
    dow = _weekdays(words[4])
    if dom != "*" and dow:
        raise NoTranslation("cron runs when either the day of month or the weekday matches, "
                            "systemd only when both do; make it two crons")
    date = f"*-{month}-{dom}"
    spelled = f"{hour}:{minute}" if date == "*-*-*" else f"{date} {hour}:{minute}"
    spelled = f"{dow} {spelled}" if dow else spelled
    try:
        check_calendar(spelled)
    except CalendarError as e:
        raise NoTranslation(str(e)) from None
    return spelled


def _part(word: str, name: str, low: int, padded: bool, start: str) -> str:
    out = []
    for item in word.split(","):
        value, _, step = item.partition("/")
        if value == "*":
            value = start if step else "*"
        elif "-" in value:
            if step:
                raise NoTranslation(f"a stepped range ({item}) in the {name} has no systemd "
                                    "spelling; list the values instead (a,b,c)")
            a, _, b = value.partition("-")
            value = f"{_number(a, name, padded)}..{_number(b, name, padded)}"
        else:
            value = _number(value, name, padded)
        out.append(f"{value}/{step}" if step else value)
    return ",".join(out)


def _number(text: str, name: str, padded: bool) -> str:
    if not text.isdigit():
        raise NoTranslation(f"'{text}' is not a number in the {name}")
    return f"{int(text):02d}" if padded else str(int(text))


def _weekdays(word: str) -> str:
    """The weekday part: '' for every day, else names (``1-5`` is ``Mon..Fri``)."""
    if word == "*":
        return ""
    out = []
    for item in word.lower().split(","):
        if "/" in item:
            raise NoTranslation(f"a stepped weekday ({item}) has no systemd spelling; list the "
                                "days instead (Mon,Wed,Fri)")
        ends = [_NAMES.get(e[:3], e) for e in item.split("-")]
        if len(ends) > 2 or not all(e.isdigit() and int(e) <= 7 for e in ends):
            raise NoTranslation(f"'{item}' is not a weekday (0-7 or Sun..Sat)")
        out.append("..".join(_DAYS[int(e)] for e in ends))
    return ",".join(out)
