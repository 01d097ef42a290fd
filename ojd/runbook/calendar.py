"""systemd calendar expressions (``OnCalendar=``, systemd.time(7)) checked without systemd.

A cron's ``schedule`` becomes its timer's ``OnCalendar=``; systemd reads it only when the
timer is loaded, and a bad one leaves the timer without a schedule. So the runbook is
checked here, when it loads, with ``systemd-analyze calendar``'s verdicts (the tests hold
this module to them on a table of good and bad expressions):

    [WEEKDAYS] [[YEAR-]MONTH-DAY] [HOUR:MINUTE[:SECOND]] [TIMEZONE]

Weekdays are names (``Mon``, ``monday``) in lists (``,``) and rising ranges (``..``); each
date and time part is ``*``, a number, a range ``A..B``, a repetition ``A/N`` (not ``*/N``), or
a list of those; ``~`` in place of the date's last ``-`` counts days from the month's end;
seconds may have a fraction. Shorthands (``daily``, ``hourly``...) and ``@EPOCH`` stand
alone. The timezone is ``UTC`` or a name of the tz database.
"""

from __future__ import annotations

import os
import re

SHORTHANDS = ("minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually",
              "quarterly", "semiannually", "semi-annually", "biannually", "bi-annually")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# (what, lowest, highest) of each date and time part
_YEAR = ("year", 1970, 2199)
_MONTH = ("month", 1, 12)
_DAY = ("day", 1, 31)
_HOUR = ("hour", 0, 23)
_MINUTE = ("minute", 0, 59)
_SECOND = ("second", 0, 59)
_NUMBER = re.compile(r"[0-9]+\Z")
_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?\Z")
_TZ_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)+\Z")
ZONEINFO = "/usr/share/zoneinfo"


class CalendarError(ValueError):
    """Why an expression is not a calendar event systemd accepts."""


def check(expr: str) -> None:
    """Raise CalendarError saying what is wrong with ``expr``; return when systemd would
    accept it."""
    if expr != expr.strip() or not expr:
        raise CalendarError("is empty" if not expr.strip() else
                            "has spaces around it, which systemd refuses")
    if expr.lower() in SHORTHANDS:
        return
    if expr.startswith("@"):
        if not _NUMBER.match(expr[1:]):
            raise CalendarError(f"'{expr}' is not @SECONDS-SINCE-1970")
        return
    words = expr.split()
    if len(words) > 1 and _is_timezone(words[-1]):
        words.pop()
    if words and words[0][:1].isalpha():
        _weekdays(words.pop(0))
    date = time = None
    for word in words:
        if ":" in word and time is None:
            time = word
        elif ":" not in word and date is None and time is None and ("-" in word
                                                                    or "~" in word):
            date = word
        else:
            raise CalendarError(f"'{word}' is neither a date (YEAR-MONTH-DAY, MONTH-DAY) nor "
                                "a time (HOUR:MINUTE[:SECOND]) in its place; the order is "
                                "WEEKDAYS DATE TIME TIMEZONE"
                                + ("; a time needs a colon: HOUR:MINUTE" if word.isdigit()
                                   else ""))
    if date is None and time is None and not expr[:1].isalpha():
        raise CalendarError("names no weekday, date or time")
    if date is not None:
        _date(date)
    if time is not None:
        _time(time)


def _is_timezone(word: str) -> bool:
    if word.upper() == "UTC":
        return True
    if not _TZ_NAME.match(word) or ".." in word:
        return False
    # the tz database says which names exist, as it does for systemd
    return os.path.isfile(os.path.join(ZONEINFO, word))


def _weekdays(word: str) -> None:
    def day(name: str) -> int:
        low = name.lower()
        for i, full in enumerate(WEEKDAYS):
            if low == full or low == full[:3]:
                return i
        raise CalendarError(f"'{name}' is not a weekday; use Mon, Tue, ... Sun or their full "
                            "names")

    for part in word.split(","):
        first, sep, last = part.partition("..")
        if sep and day(first) > day(last):
            raise CalendarError(f"weekday range '{part}' runs backwards; write it from the "
                                "earlier day, or as a list (Sat,Sun,Mon)")
        if not sep:
            day(first)


def _date(word: str) -> None:
    head, tilde, tail = word.rpartition("~")
    parts = head.split("-") + [tail] if tilde else word.split("-")
    if len(parts) == 3:
        fields = (_YEAR, _MONTH, _DAY)
    elif len(parts) == 2:
        fields = (_MONTH, _DAY)
    else:
        raise CalendarError(f"date '{word}' must be YEAR-MONTH-DAY or MONTH-DAY")
    for part, field in zip(parts, fields, strict=True):
        _component(part, field, word)


def _time(word: str) -> None:
    parts = word.split(":")
    if len(parts) not in (2, 3):
        raise CalendarError(f"time '{word}' must be HOUR:MINUTE or HOUR:MINUTE:SECOND")
    for part, field in zip(parts, (_HOUR, _MINUTE, _SECOND), strict=False):
        _component(part, field, word)


def _component(text: str, field: tuple[str, int, int], word: str) -> None:
    what, low, high = field
    numbers = _SECONDS if what == "second" else _NUMBER

    def value(v: str) -> float:
        if not numbers.match(v):
            raise CalendarError(f"{what} '{v}' in '{word}' is not a number"
                                + (" (nor * or a range A..B)" if v else ""))
        n = float(v)
        if not low <= n < high + 1:
            raise CalendarError(f"{what} {v} in '{word}' is out of range {low}..{high}")
        return n

    for item in text.split(","):
        start, slash, repeat = item.partition("/")
        if slash and (not _NUMBER.match(repeat) or int(repeat) == 0):
            raise CalendarError(f"repetition '/{repeat}' in '{word}' must be a whole number "
                                "above 0")
        if start == "*":
            if slash:  # systemd repeats from a number only
                raise CalendarError(f"'{item}' in '{word}': a repetition starts from a "
                                    f"number, not *; write 0/{repeat}"
                                    + (" (1 for months and days)" if low else ""))
            continue
        first, dots, last = start.partition("..")
        if dots:
            if value(first) > value(last):
                raise CalendarError(f"{what} range '{start}' in '{word}' runs backwards")
        else:
            value(first)
