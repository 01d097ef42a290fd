"""Waiting for a unit's start: a start job that ends between two reads of the manager is
where the start left the unit, not a failure."""

from __future__ import annotations

import pytest

from ojd import unitcontrol
from ojd.errors import OjError
from ojd.systemd import UnitState


class StartingTimer:
    """A manager whose start job ends after the first question asked of it: before that the
    unit is inactive with its job pending, after it active with no job. Each question takes
    a moment, as each D-Bus call does on a loaded machine."""

    def __init__(self, ends_as: str = "active") -> None:
        self.asked = 0
        self.ends_as = ends_as

    def _tick(self) -> bool:
        self.asked += 1
        return self.asked > 1  # the job has ended

    def has_job(self, unit: str) -> bool:
        return not self._tick()

    def state(self, unit: str) -> UnitState:
        active = self.ends_as if self._tick() else "inactive"
        return UnitState(unit, "loaded", active, "waiting" if active == "active" else "dead",
                         0, 0)


def wait(systemd: StartingTimer) -> None:
    unitcontrol.wait_started(systemd, "oj-cron@c.timer", what="timer", logs="oj cron logs c",
                             timeout=5.0, late="start")


def test_a_start_job_that_ends_between_two_reads_is_not_taken_for_a_failed_start():
    wait(StartingTimer())


def test_a_start_that_ends_inactive_is_still_a_failed_start_naming_the_logs():
    with pytest.raises(OjError, match=r"timer oj-cron@c.timer failed to start \(inactive/dead\); "
                                      r"see 'oj cron logs c'"):
        wait(StartingTimer(ends_as="inactive"))
