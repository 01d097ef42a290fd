"""`ojd up` ticks a cron's calendar `schedule` itself, with no timer: when an expression next
elapses must be what systemd's own reckoning says (`systemd-analyze calendar --base-time`),
for every expression the runbook accepts, in a zone with daylight saving time and in UTC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
from conftest import require
from test_calendar import GOOD

from ojd.runbook.elapse import next_elapse, upcoming_tick

ITERATIONS = 4
# a month's end, a leap day, the night clocks go forward and the one they go back
BASES = ["2024-01-31 10:17:03", "2024-02-28 23:59:59", "2024-03-31 01:30:00",
         "2024-10-27 02:30:00"]
ZONES = ["Europe/Berlin", "UTC"]
_WHEN = re.compile(r"(?:Next elapse|Iter\. #\d+): (.*)$")


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    # justified: systemd-analyze is the reference; a developer machine without it skips
    require(path is not None, "systemd-analyze is not installed")
    assert path is not None
    return path


@pytest.fixture
def zone(request, monkeypatch) -> str:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def systemd_says(analyze: str, expr: str, base: float) -> list[str]:
    out = subprocess.run([analyze, "calendar", f"--iterations={ITERATIONS}",
                          f"--base-time=@{base:.0f}", expr], capture_output=True,
                         text=True, env=dict(os.environ), check=True).stdout
    return [m.group(1).rsplit(" ", 1)[0] for line in out.splitlines()
            if (m := _WHEN.search(line.strip())) and m.group(1) != "never"]


def we_say(expr: str, base: float) -> list[str]:
    shown, when = [], base
    for _ in range(ITERATIONS):
        nxt = next_elapse(expr, when)
        if nxt is None:
            break
        shown.append(time.strftime("%a %Y-%m-%d %H:%M:%S", time.localtime(nxt)))
        when = nxt
    return shown


@pytest.mark.parametrize("zone", ZONES, indirect=True)
@pytest.mark.parametrize("expr", GOOD)
def test_next_elapses_are_systemds(analyze: str, zone: str, expr: str):
    for base_text in BASES:
        base = time.mktime(time.strptime(base_text, "%Y-%m-%d %H:%M:%S"))
        assert we_say(expr, base) == systemd_says(analyze, expr, base), (expr, base_text)


def test_an_instant_after_the_last_elapse_has_none():
    assert next_elapse("@1700000000", 1700000000.0) is None
    assert next_elapse("2023-01-01", time.time()) is None


def test_ojd_ups_next_interval_tick_counts_from_its_start_or_the_last_tick_since():
    # a tick recorded before this runner started says nothing of its schedule
    assert upcoming_tick(None, 60.0, 900.0, 1000.0, 1010.0) == 1060.0
    assert upcoming_tick(None, 60.0, 1030.0, 1000.0, 1040.0) == 1090.0
    assert upcoming_tick(None, 60.0, None, 1000.0, 1010.0) == 1060.0
    assert upcoming_tick(None, 60.0, 1000.0, 1000.0, 1065.0) == 1065.0  # due, not begun
    assert upcoming_tick("@2000", None, None, 1000.0, 1010.0) == 2000.0
