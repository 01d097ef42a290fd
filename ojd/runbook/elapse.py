"""When a systemd calendar expression next elapses, for crons run without timers (``ojd up``).

The expression is read by ``ojd.runbook.calendar`` (systemd's own grammar); this module
walks the calendar from a given instant to the first one that matches, as systemd's
``calendar_spec_next_usec`` does: year, month, day (a weekday must match too, a day
counted from the month's end with ``~``), hour, minute, second, in the expression's
timezone (local time, UTC or a tz database zone). The tests hold it to
``systemd-analyze calendar --base-time``. A wall time that falls in a DST gap does not
exist and is skipped, as systemd skips it.
"""

from __future__ import annotations

import calendar as _gregorian
import datetime
import time as _time
import zoneinfo

from ojd.runbook.calendar import USEC, parsed

LAST_YEAR = 2199  # systemd schedules nothing later

# each part's range, for items with no end of their own and for '*'
_RANGES = {"year": (1970, LAST_YEAR), "month": (1, 12), "day": (1, 31), "hour": (0, 23),
           "minute": (0, 59), "second": (0, 60 * USEC - 1)}


def _values(items: list[tuple] | None, part: str, default: list[int]) -> list[int]:
    """The values a part's items stand for, ascending (seconds in microseconds)."""
    low, high = _RANGES[part]
    if items is None:
        return default
    if not items:  # '*'
        return list(range(low, high + 1, USEC if part == "second" else 1))
    values: set[int] = set()
    for start, stop, repeat, _text, _word in items:
        if stop >= 0:
            values.update(range(start, stop + 1, repeat or 1))
        elif repeat > 0:
            values.update(range(start, high + 1, repeat))
        else:
            values.add(start)
    return sorted(values)


class Schedule:
    """A calendar expression, ready to say when it next elapses."""

    def __init__(self, expr: str) -> None:
        spec, self.zone = parsed(expr)
        self.epoch = spec.at_epoch
        self.weekdays = spec.days_of_week
        self.years = _values(spec.parts.get("year"), "year", [])
        self.months = _values(spec.parts.get("month"), "month", list(range(1, 13)))
        self.end_of_month = spec.end_of_month
        # days counted from the month's end are counted back: ~A/N is A, A-N, ... >= 1
        if spec.end_of_month and spec.parts.get("day"):
            self.days = sorted({v for start, stop, repeat, _t, _w in spec.parts["day"]
                                for v in (range(start, stop + 1, repeat or 1) if stop >= 0
                                          else range(start, 0, -repeat) if repeat
                                          else [start])})
        else:
            self.days = _values(spec.parts.get("day"), "day", list(range(1, 32)))
        self.hours = _values(spec.parts.get("hour"), "hour", [0])
        self.minutes = _values(spec.parts.get("minute"), "minute", [0])
        self.seconds = _values(spec.parts.get("second"), "second", [0])

    def next_after(self, after: float) -> float | None:
        """The first instant after ``after`` (seconds since the epoch) that matches, or
        None when none does before the year 2200."""
        if self.epoch is not None:
            return float(self.epoch) if self.epoch > after else None
        start = round(after * USEC) + 1
        wall = self._wall(start)
        for _ in range(16):
            found = self._search(wall)
            if found is None:
                return None
            when = self._instant(found)
            usec = round(when * USEC)
            if usec < start:  # a wall time a DST fold repeats, already past: look later
                wall = self._wall(start + USEC)
                continue
            back = self._wall(usec)
            if back != found:  # a wall time in a DST gap does not exist: skip past it
                wall = back
                continue
            return when
        return None

    # -- wall times in the expression's zone ------------------------------------------

    def _wall(self, usec: int) -> tuple[int, ...]:
        secs, micro = divmod(usec, USEC)
        if self.zone == "":
            t = _time.localtime(secs)
            return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec * USEC + micro
        d = datetime.datetime.fromtimestamp(secs, self._tz())
        return d.year, d.month, d.day, d.hour, d.minute, d.second * USEC + micro

    def _instant(self, wall: tuple[int, ...]) -> float:
        y, mo, d, h, mi, us = wall
        if self.zone == "":
            return _time.mktime((y, mo, d, h, mi, 0, 0, 0, -1)) + us / USEC
        if self.zone == "UTC":
            return _gregorian.timegm((y, mo, d, h, mi, 0)) + us / USEC
        return datetime.datetime(y, mo, d, h, mi, tzinfo=self._tz()).timestamp() + us / USEC

    def _tz(self) -> datetime.tzinfo:
        if self.zone == "UTC":
            return datetime.UTC
        return zoneinfo.ZoneInfo(self.zone)

    # -- the walk ---------------------------------------------------------------------

    def _days_of(self, year: int, month: int) -> list[int]:
        last = _gregorian.monthrange(year, month)[1]
        if self.end_of_month:
            days = sorted(last - v + 1 for v in self.days if v <= last)
        else:
            days = [d for d in self.days if d <= last]
        if self.weekdays:
            days = [d for d in days if datetime.date(year, month, d).weekday() in self.weekdays]
        return days

    def _search(self, lb: tuple[int, ...]) -> tuple[int, ...] | None:
        """The first matching wall time at or after ``lb``."""
        y0, mo0, d0, h0, mi0, s0 = lb
        years = [y for y in self.years if y >= y0] if self.years else range(y0, LAST_YEAR + 1)
        for y in years:
            ty = y == y0
            for mo in self.months:
                if ty and mo < mo0:
                    continue
                tmo = ty and mo == mo0
                for d in self._days_of(y, mo):
                    if tmo and d < d0:
                        continue
                    td = tmo and d == d0
                    for h in self.hours:
                        if td and h < h0:
                            continue
                        th = td and h == h0
                        for mi in self.minutes:
                            if th and mi < mi0:
                                continue
                            tmi = th and mi == mi0
                            for s in self.seconds:
                                if tmi and s < s0:
                                    continue
                                return y, mo, d, h, mi, s
        return None


def next_elapse(expr: str, after: float) -> float | None:
    """When calendar expression ``expr`` next elapses after ``after``; None: never."""
    return Schedule(expr).next_after(after)


def first_tick(schedule: str | None, interval: float | None, started: float,
               last_run: float | None) -> tuple[float | None, bool]:
    """When a cron first ticks once its runner starts at ``started``, as its timer would:
    an interval one interval on (``OnActiveSec=``); a calendar at its next elapse, or at
    once when one passed since ``last_run`` (``Persistent=true``: a tick missed while
    nothing ran it is caught up, once). Returns (when, whether it is a catch-up)."""
    if schedule is None:
        return started + (interval or 0.0), False
    if last_run is not None:
        missed = next_elapse(schedule, last_run)
        if missed is not None and missed <= started:
            return started, True
    return next_elapse(schedule, started), False


def next_tick(schedule: str | None, interval: float | None, ticked: float) -> float | None:
    """When a cron ticks after the tick that began at ``ticked``: an interval on
    (``OnUnitActiveSec=``), or the calendar's next elapse."""
    if schedule is None:
        return ticked + (interval or 0.0)
    return next_elapse(schedule, ticked)


def upcoming_tick(schedule: str | None, interval: float | None, last_began: float | None,
                  runner_started: float, now: float) -> float | None:
    """When a runner that started at ``runner_started`` ticks a cron next, as seen from
    outside it (``oj cron list`` of a cron ``ojd up`` runs): a calendar's next elapse; an
    interval on from its last tick begun under this runner, else from the runner's start.
    A tick due now that has not begun yet shows as now."""
    if schedule is not None:
        return next_elapse(schedule, now)
    base = runner_started if last_began is None else max(last_began, runner_started)
    return max(now, base + (interval or 0.0))
