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
]
BAD = [
    "", "*", "today", "hourly ", "  daily", "Sat..Mon", "Mon..", "Mon,,Tue", "Fri 13",
    "*-*-* 25:00", "00:00:60", "*-13-01", "*-*-32", "*-0-1", "1969-01-01", "2200-01-01",
    "*-*-10..1", "1..10/2", "*:*:0/0", "*:00/0", "*/5:00", "*:*/5", "*-*-*/2",
    "01:02:03:04", "*-*-* 10", "12:00 +0100", "12:00 Mars/Base", "12:00 Mon", "UTC",
    "@", "@x", "1:2:", ":00", "-1:00", "00:1e2", "12:0x1", "*-*-01/0",
]


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
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
])
def test_a_refusal_names_the_fix(expr: str, says: str):
    with pytest.raises(CalendarError) as e:
        check(expr)
    assert says in str(e.value)
