"""systemd calendar expressions (``OnCalendar=``, systemd.time(7)) checked without systemd.

A cron's ``schedule`` becomes its timer's ``OnCalendar=``; systemd reads it only when the
timer is loaded, and a bad one leaves the timer without a schedule. So the runbook is
checked here, when it loads, the way systemd's own parser reads it (calendarspec.c; the
tests hold this module to ``systemd-analyze calendar``'s verdicts on a table of good and
bad expressions):

    [WEEKDAYS] [[YEAR-]MONTH-DAY] [HOUR:MINUTE[:SECOND]] [TIMEZONE]

Weekdays are names (``Mon``, ``monday``) in lists (``,``, a trailing one allowed) and rising
ranges (``..`` or ``-``); each date and time part is ``*``, a number, a range ``A..B``, a
repetition ``A/N`` or ``A..B/N`` (not ``*/N``), or a list of those; ``~`` in place of the
date's last ``-`` counts days from the month's end (at most 28); seconds may have a
fraction (microseconds); a two-digit year is 19xx (70-99) or 20xx (0-69). A repetition
must fit its part's range: systemd refuses one that cannot repeat once (``22/2`` hours).
Shorthands (``daily``, ``hourly``...) and ``@EPOCH`` take no other part. The timezone, last,
is ``UTC``, the local zone's abbreviation, or a name of the tz database (``Europe/Berlin``,
``Japan``).
"""

from __future__ import annotations

import os
import re
import time as _time

SHORTHANDS = ("minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually",
              "anually", "quarterly", "semiannually", "semi-annually", "biannually",
              "bi-annually")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
USEC = 1_000_000
INT_MAX = 2**31 - 1
CHAIN_MAX = 240  # systemd's limit on the items of a list
# (what, lowest, highest, unit) of each date and time part; seconds count microseconds
_YEAR = ("year", 1970, 2199, 1)
_MONTH = ("month", 1, 12, 1)
_DAY = ("day", 1, 31, 1)
_HOUR = ("hour", 0, 23, 1)
_MINUTE = ("minute", 0, 59, 1)
_SECOND = ("second", 0, 60 * USEC - 1, USEC)
_EPOCH_END = 7258118400  # 2200-01-01 00:00:00 UTC: systemd's last year is 2199
_TZ_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*\Z")
ZONEINFO = "/usr/share/zoneinfo"


class CalendarError(ValueError):
    """Why an expression is not a calendar event systemd accepts."""


def check(expr: str) -> None:
    """Raise CalendarError saying what is wrong with ``expr``; return when systemd would
    accept it."""
    _one_line(expr)
    if not expr.strip():
        raise CalendarError("is empty")
    if expr[0] == " ":
        raise CalendarError("has spaces before it, which systemd refuses")
    rest = _without_timezone(expr)
    if not rest or rest == expr and (is_timezone(expr) or expr in _time.tzname):
        raise CalendarError(f"'{expr}' names only a timezone; put a time before it "
                            f"('daily {expr}', '12:00 {expr}')")
    if rest.lower() in SHORTHANDS:
        return
    if rest.strip().lower() in SHORTHANDS:
        raise CalendarError(f"the shorthand '{rest.strip()}' stands alone: drop the spaces "
                            "around it")
    _Parser(rest).parse()


def _one_line(expr: str) -> None:
    """A schedule becomes one line of a unit file: a newline would start another
    directive there, and systemd's parser knows the space alone."""
    for c in expr:
        if c != " " and (c.isspace() or not c.isprintable()):
            raise CalendarError(f"contains {_char(c)}; write it on one line with single "
                                "spaces between its parts")


def _char(c: str) -> str:
    names = {"\n": "a newline (\\n)", "\t": "a tab (\\t)", "\r": "a carriage return (\\r)"}
    return names.get(c, f"the character \\x{ord(c):02x}" if ord(c) < 0x100
                     else f"the character \\u{ord(c):04x}")


def _without_timezone(expr: str) -> str:
    """``expr`` without the timezone systemd would find at its end, as systemd looks for
    one: ' UTC' in any case, else the local zone's abbreviations, else a tz database name
    after the last space."""
    if expr.lower().endswith(" utc"):
        return expr[:-4]
    for name in _time.tzname:
        if (name and len(expr) > len(name) and expr.lower().endswith(name.lower())
                and expr[-len(name) - 1] == " "):
            return expr[:-len(name) - 1]
    head, space, last = expr.rpartition(" ")
    if space and is_timezone(last):
        return head
    return expr


def is_timezone(name: str) -> bool:
    """Whether systemd takes ``name`` for a timezone: UTC, or a tz database file (its
    names have no dots, so never climb out of the database)."""
    if name == "UTC":
        return True
    if not _TZ_NAME.match(name):
        return False
    try:
        with open(os.path.join(ZONEINFO, name), "rb") as f:
            return os.path.isfile(f.name) and f.read(4) == b"TZif"
    except OSError:
        return False


class _Parser:
    """systemd's reading of an expression without its timezone, with a reason at each
    refusal."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        # what was read, for ojd.runbook.elapse: each part's items by name (absent: any;
        # the time's parts default to 0), the weekdays (empty: any), '~' in the date
        self.parts: dict[str, list[tuple]] = {}
        self.days_of_week: set[int] = set()
        self.end_of_month = False
        self.at_epoch: int | None = None

    def at(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def word(self, i: int | None = None) -> str:
        """The space-delimited part of the expression around position ``i``."""
        i = self.i if i is None else i
        start = self.s.rfind(" ", 0, i) + 1
        end = self.s.find(" ", i)
        return self.s[start:] if end < 0 else self.s[start:end]

    def skip_spaces(self) -> None:
        while self.at() == " ":
            self.i += 1

    def parse(self) -> None:
        self.weekdays()
        begin = self.i
        if self.at() == "@":
            self.epoch()
            return
        if self.i < len(self.s):
            first = self.chain(date=True)
            if self.at() not in ("", ":"):
                self.date(first)
            else:
                self.i = begin  # it was a time, not a date
        self.time()

    def unplaced(self) -> CalendarError:
        word = self.word()
        return CalendarError(f"'{word}' is neither a date (YEAR-MONTH-DAY, MONTH-DAY) nor a "
                             "time (HOUR:MINUTE[:SECOND]) in its place; the order is "
                             "WEEKDAYS DATE TIME TIMEZONE"
                             + ("; a time needs a colon: HOUR:MINUTE" if word.isdigit()
                                else ""))

    def weekdays(self) -> None:
        first = True
        low = -1  # the start of an open range
        range_from = self.i
        while True:
            rest = self.s[self.i:].lower()
            found = next(((nr, name) for nr, full in enumerate(WEEKDAYS)
                          for name in (full, full[:3]) if rest.startswith(name)), None)
            if found is None:
                if first:
                    if rest[:1].isalpha():
                        raise CalendarError(f"'{self.word()}' is not a weekday; use Mon, "
                                            "Tue, ... Sun or their full names")
                    return
                raise CalendarError(f"weekdays '{self.word()}' have an empty item; write "
                                    "them as Mon,Tue or Mon..Fri")
            nr, name = found
            after = rest[len(name):len(name) + 1]
            if after not in ("", "-", ".", ",", " "):
                raise CalendarError(f"'{self.word()}' is not a weekday; use Mon, Tue, ... "
                                    "Sun or their full names")
            if low >= 0 and low > nr:
                text = self.s[range_from:self.i + len(name)]
                raise CalendarError(f"weekday range '{text}' runs backwards; write it from "
                                    "the earlier day, or as a list (Sat,Sun,Mon)")
            start_of_day = self.i
            self.days_of_week.update(range(low if low >= 0 else nr, nr + 1))
            self.i += len(name)
            c = self.at()
            if c == "":
                return
            if c == " ":
                self.skip_spaces()
                return
            if c == ".":
                if low >= 0 or self.at(1) != ".":
                    raise CalendarError(f"weekdays '{self.word()}': a range is two days "
                                        "joined by '..' (Mon..Fri)")
                low, range_from = nr, start_of_day
                self.i += 2
            elif c == "-":
                if low >= 0:
                    raise CalendarError(f"weekdays '{self.word()}': a range is two days "
                                        "joined by '..' (Mon..Fri)")
                low, range_from = nr, start_of_day
                self.i += 1
            else:  # ","
                low = -1
                self.i += 1
            if self.at() in ("", " "):
                if low >= 0:
                    raise CalendarError(f"weekday range '{self.word(self.i - 1)}' has no "
                                        "end; write Mon..Fri")
                self.skip_spaces()
                return
            first = False

    def epoch(self) -> None:
        digits = self.s[self.i + 1:]
        number = digits[1:] if digits[:1] == "+" else digits
        if not number.isascii() or not number.isdigit():
            raise CalendarError(f"'{self.s[self.i:]}' is not @SECONDS-SINCE-1970 (a whole "
                                "number, alone)")
        if int(number) >= _EPOCH_END:
            raise CalendarError(f"'{self.s[self.i:]}' is after 2199, the last year systemd "
                                "schedules")
        self.at_epoch = int(number)

    def date(self, first: list[tuple]) -> None:
        end_of_month = self.at() == "~"
        if self.at() not in ("-", "~"):
            raise self.unplaced()
        self.i += 1
        second = self.chain(date=True)
        if self.at() in ("", " "):
            fields = ((first, _MONTH), (second, _DAY))
        else:
            if end_of_month or self.at() not in ("-", "~"):
                raise CalendarError(f"date '{self.word()}' must be YEAR-MONTH-DAY or "
                                    "MONTH-DAY, with '~' in place of the last '-' alone")
            end_of_month = self.at() == "~"
            self.i += 1
            third = self.chain(date=True)
            if self.at() not in ("", " "):
                raise CalendarError(f"date '{self.word()}' must be YEAR-MONTH-DAY or "
                                    "MONTH-DAY")
            fields = ((_two_digit_years(first), _YEAR), (second, _MONTH), (third, _DAY))
        self.skip_spaces()
        for chain, field in fields:
            for part in chain:
                _valid(part, field, end_of_month and field is _DAY)
            self.parts[field[0]] = chain
        self.end_of_month = end_of_month

    def time(self) -> None:
        if self.i >= len(self.s):
            return  # no time: midnight
        fields = [(_HOUR, self.chain(usec=False))]
        if self.at() != ":":
            raise self.unplaced()
        self.i += 1
        fields.append((_MINUTE, self.chain(usec=False)))
        if self.at() == ":":
            self.i += 1
            fields.append((_SECOND, self.chain(usec=True)))
        if self.at() != "":
            if self.at() == " ":
                self.skip_spaces()
                if self.i >= len(self.s):
                    raise CalendarError("has a space after its time, which systemd refuses")
                raise self.unplaced()
            raise CalendarError(f"time '{self.word()}' must be HOUR:MINUTE or "
                                "HOUR:MINUTE:SECOND")
        for field, chain in fields:
            for part in chain:
                _valid(part, field, False)
            self.parts[field[0]] = chain

    def chain(self, *, usec: bool = False, date: bool = False) -> list[tuple]:
        """A part's items: (start, stop or -1, repeat or 0, item text, word)."""
        word = self.word()
        if self.at() == "*":
            self.i += 1
            if self.at() == "/":
                repeat = self.s[self.i + 1:].split(",")[0].split(":")[0].split("-")[0]
                raise CalendarError(f"'*/{repeat}' in '{word}': a repetition starts from a "
                                    f"number, not *; write 0/{repeat} (1/{repeat} for "
                                    "months and days)")
            return [(0, -1, USEC, "*", word)] if usec else []
        items: list[tuple] = []
        while True:
            if len(items) > CHAIN_MAX:
                raise CalendarError(f"'{word}' lists more than {CHAIN_MAX} items")
            begin = self.i
            start = self.number(usec, word)
            stop, repeat = -1, 0
            if self.at() == "." and self.at(1) == ".":
                self.i += 2
                stop = self.number(usec, word)
                repeat = USEC if usec else 1
            if self.at() == "/":
                self.i += 1
                repeat = self.number(usec, word)
                if repeat == 0:
                    raise CalendarError(f"repetition '{self.s[begin:self.i]}' in '{word}' "
                                        "must repeat by more than 0")
            elif usec and stop >= 0 and start + repeat > stop:
                raise CalendarError(f"second range '{self.s[begin:self.i]}' in '{word}' "
                                    "spans less than a second; give it a repetition "
                                    "(A..B/0.5)")
            if self.at() not in ("", " ", ",", "-", "~", ":"):
                bad = self.s[begin:].split(" ")[0]
                raise CalendarError(f"'{bad}' in '{word}' is not a number (nor * or a "
                                    "range A..B or a repetition A/N)")
            items.append((start, stop, repeat, self.s[begin:self.i], word))
            if self.at() != ",":
                return items
            self.i += 1

    def number(self, usec: bool, word: str) -> int:
        m = re.compile(r"[0-9]+").match(self.s, self.i)
        if m is None:
            got = self.s[self.i:].split(" ")[0] or "nothing"
            raise CalendarError(f"'{got}' in '{word}' is not a number (nor * or a range "
                                "A..B)")
        self.i = m.end()
        value = int(m.group())
        if usec:
            value *= USEC
            if self.at() == "." and self.at(1) != ".":
                frac = re.compile(r"[0-9]*").match(self.s, self.i + 1)
                assert frac is not None
                digits = frac.group()
                if not digits:
                    raise CalendarError(f"a fraction of a second in '{word}' needs digits "
                                        "after its '.'")
                micro = int(digits[:6].ljust(6, "0"))
                if digits[6:7] >= "5":  # systemd rounds to the microsecond
                    micro += 1
                value += micro
                self.i = frac.end()
        if value > INT_MAX:
            raise CalendarError(f"'{m.group()}' in '{word}' is too large")
        return value


def _two_digit_years(chain: list[tuple]) -> list[tuple]:
    def year(n: int) -> int:
        return n + 2000 if 0 <= n < 70 else n + 1900 if 70 <= n < 100 else n

    return [(year(start), year(stop) if stop >= 0 else stop, repeat, text, word)
            for start, stop, repeat, text, word in chain]


def _valid(part: tuple, field: tuple, end_of_month: bool) -> None:
    """systemd's bounds on an item (calendar_spec_valid), after its normalisation: a range
    cut to a whole number of repetitions, a repetition that cannot happen dropped."""
    start, stop, repeat, text, word = part
    what, low, high, unit = field
    if stop > start and repeat > 0:
        stop -= (stop - start) % repeat
    if (stop > start and repeat > 0 and start + repeat > stop) or start == stop:
        stop, repeat = -1, 0
    if end_of_month:
        high = high - 3  # at most 28 days from the month's end

    def shown(n: int) -> str:
        return f"{n / unit:g}" if unit > 1 else str(n)

    span = f"{shown(low)}..{shown(high)}" if unit == 1 else f"{low}..59.999999"
    where = f"'{text}' in '{word}'"
    if end_of_month and not low <= start <= high:
        raise CalendarError(f"{where}: a day counted from the month's end ('~') must be "
                            f"1..{high}")
    if not low <= start <= high:
        raise CalendarError(f"{what} {shown(start)} in '{word}' is out of range {span}")
    if repeat > high - low:
        raise CalendarError(f"{where}: the repetition {shown(repeat)} is longer than the "
                            f"{what}s' range {span}")
    if stop >= 0:
        if not low <= stop <= high:
            raise CalendarError(f"{what} {shown(stop)} in '{word}' is out of range {span}")
        if start + repeat > stop:
            raise CalendarError(f"{what} range '{text}' in '{word}' runs backwards")
    elif end_of_month and start - repeat < low:
        raise CalendarError(f"{where} never repeats: counting {shown(repeat)} day(s) back "
                            f"from day {start} before the month's end leaves the month "
                            f"(systemd needs {start}-{shown(repeat)} >= 1)")
    elif not end_of_month and start + repeat > high:
        raise CalendarError(f"{where} never repeats: {shown(start)}+{shown(repeat)} is past "
                            f"the last {what}, {shown(high)}, so systemd refuses it; start "
                            "lower or list the values")


# what each shorthand stands for (systemd.time(7))
_SHORTHAND_SPECS = {
    "minutely": "*-*-* *:*:00", "hourly": "*-*-* *:00:00", "daily": "*-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00", "weekly": "Mon *-*-* 00:00:00",
    "yearly": "*-01-01 00:00:00", "annually": "*-01-01 00:00:00",
    "anually": "*-01-01 00:00:00", "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00", "semi-annually": "*-01,07-01 00:00:00",
    "biannually": "*-01,07-01 00:00:00", "bi-annually": "*-01,07-01 00:00:00"}


def parsed(expr: str) -> tuple[_Parser, str]:
    """``expr`` read as ``check`` reads it: (what was read, its timezone: "" for local
    time, ``UTC`` or a tz database name). Raises CalendarError as ``check`` does."""
    check(expr)
    rest = _without_timezone(expr)
    zone = expr[len(rest):].strip()
    if zone.upper() == "UTC":
        zone = "UTC"
    elif zone in _time.tzname:
        zone = ""  # the local zone's abbreviation: local time
    parser = _Parser(_SHORTHAND_SPECS.get(rest.lower(), rest))
    parser.parse()
    return parser, zone
