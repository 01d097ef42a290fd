"""A cron's `schedule` is checked when the runbook loads, with the verdicts of systemd's own
parser (`systemd-analyze calendar`), which reads it only once the timer is loaded."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import require

from ojd.runbook.calendar import CalendarError, check

GOOD = [
    "daily", "DAILY", "hourly", "minutely", "weekly", "monthly", "yearly", "annually",
    "quarterly", "semiannually", "semi-annually", "biannually",
    "Mon..Fri *-*-* 09:00", "Mon,Wed 10:00", "Monday 00:00", "mon 00:00", "Mon..Mon",
    "Mon..Fri,Sun", "Tuesday..Thursday 1:00", "Mon  9:00", "Mon",
    "*:0/15", "0/2:00", "1,2,3:0", "1..3:00", "9:5", "12:00:00.5", "1:2:3.123456789",
    "*-*-* *:*:*", "*-*-*", "*-*-1..10/2 00:00", "*-1..3/1-01", "12-25", "Mon 12-25",
    "*-02~03", "*~07", "*-*~07/1", "2023-01-01", "2199-01-01", "*-*-31", "*-02-30",
    "Fri *-*-13", "12:00 UTC", "*-*-* 12:00 utc", "Mon 9:00 UTC", "12:00 Europe/Berlin",
    "12:00 Etc/GMT+5", "@1700000000", "Mon,Fri..Sun 23:59:59",
    # repetitions that fit their part's range
    "*-*-* 21/2:00", "*-*-* 0/23:00", "*:00:0/59", "*-*-29/2", "*-10/2-01", "2198/1-01-01",
    "*-05~28/2", "*-05~2/1", "*-*~28", "*-*~1..5", "20..24/3:00", "12..12:00",
    "00:00:59.9999994", "*-*-* 00:00:1.5/2.5",
    # one-word zones, shorthands and @EPOCH with a zone, trailing commas and spaces,
    # fractional repetitions, two-digit years, '-' weekday ranges
    "12:00 GMT", "12:00 EST5EDT", "12:00 Japan", "12:00 localtime", "daily UTC",
    "hourly Japan", "@1700000000 UTC", "Mon,", "Mon, ", "Mon,Tue ", "*-*-* ", "Mon  UTC",
    "*-*-* 00:00:1/0.5", "24-1-1", "69-1-1", "99-12-31", "Mon-Fri", "@0",
]
BAD = [
    "", "*", "today", "hourly ", "  daily", "Sat..Mon", "Mon..", "Mon,,Tue", "Fri 13",
    "*-*-* 25:00", "00:00:60", "*-13-01", "*-*-32", "*-0-1", "1969-01-01", "2200-01-01",
    "*-*-10..1", "1..10/2", "*:*:0/0", "*:00/0", "*/5:00", "*:*/5", "*-*-*/2",
    "01:02:03:04", "*-*-* 10", "12:00 +0100", "12:00 Mars/Base", "12:00 Mon", "UTC",
    "@", "@x", "1:2:", ":00", "-1:00", "00:1e2", "12:0x1", "*-*-01/0",
    # repetitions past their part's range, days from the month's end past 28
    "*-*-* 22/2:00", "*-*-* 12/12:00", "*:00:0/60", "*-*-* 00:59/1", "*-*-30/2",
    "*-11/2-01", "2199/1-01-01", "*-05~1/2", "*-*~31", "*-05~29", "*-*~0", "*-*~28/28",
    "*-*-* 0/24:00", "*-*-* 00:00:1/59", "1970/230-01-01", "*-*-* 00:00:05..05",
    "*-*-* 00:00:1/0.0000001",
    # out of range once read as systemd reads them
    "00:00:59.999999999", "00:00:59.9999995", "@99999999999999999999", "@253402300799",
    "@1.5", "100-1-1",
    # a zone alone, spaces where systemd takes none, other whitespace
    "GMT", "*-*-* 12:00 ", "daily  UTC", "Mon\n9:00", "daily\nhourly", "12:00\tUTC",
    "Mon\t9:00", "*-*-*\r",
]


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    # justified: skipped only outside CI (require fails in CI, which has systemd)
    require(path is not None, "systemd-analyze is not installed")
    return path  # type: ignore[return-value]


def systemd_accepts(analyze: str, expr: str) -> bool:
    proc = subprocess.run([analyze, "calendar", expr], capture_output=True, text=True)
    return proc.returncode == 0


@pytest.mark.parametrize("expr", GOOD)
def test_an_expression_systemd_accepts_is_accepted(analyze: str, expr: str):
    assert systemd_accepts(analyze, expr), f"the table is wrong about {expr!r}"
    check(expr)


@pytest.mark.parametrize("expr", BAD)
def test_an_expression_systemd_refuses_is_refused_with_a_reason(analyze: str, expr: str):
    assert not systemd_accepts(analyze, expr), f"the table is wrong about {expr!r}"
    with pytest.raises(CalendarError) as e:
        check(expr)
    assert str(e.value)


@pytest.mark.parametrize(("expr", "says"), [
    ("Sat..Mon", "runs backwards; write it from the earlier day, or as a list (Sat,Sun,Mon)"),
    ("*-*-* 25:00", "hour 25 in '25:00' is out of range 0..23"),
    ("*/5:00", "a repetition starts from a number, not *; write 0/5"),
    ("Fri 13", "; a time needs a colon: HOUR:MINUTE"),
    ("12:00 Mon", "the order is WEEKDAYS DATE TIME TIMEZONE"),
    ("*-*-* 22/2:00", "'22/2' in '22/2:00' never repeats: 22+2 is past the last hour, 23"),
    ("*-*~31", "a day counted from the month's end ('~') must be 1..28"),
    ("*-05~1/2", "(systemd needs 1-2 >= 1)"),
    ("Mon\n9:00", "contains a newline (\\n); write it on one line with single spaces"),
    ("UTC", "names only a timezone"),
])
def test_a_refusal_names_the_fix(expr: str, says: str):
    with pytest.raises(CalendarError) as e:
        check(expr)
    assert says in str(e.value)
