"""What holds a take back beyond an item being there: a rate (``rate = "10/m"`` on a queue
or a worker) and a worker's ``global_concurrency``. Pure, like all of ``ojd.state``; decided on
the caught-up state inside the take's transaction, so that no host, on either store, can
overshoot.

A rate is a sliding window: at most N takes in any ``per`` seconds. Each take of a limited
queue or worker names its windows in its ``queue:taken`` event (``windows``: [key, N]), and
the fold keeps the times of the last N takes of each window and no more: the Nth most recent
take, plus ``per``, is when the next may be."""

from __future__ import annotations

from collections import deque

from ojd.state.statuses import LIVE_JOB_STATES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ojd.events import Event

# a window of a limited take: (key, most takes, per seconds)
Window = tuple[str, int, float]


def queue_window(project: str, queue: str) -> str:
    return f"queue:{project}:{queue}"


def worker_window(project: str, worker: str) -> str:
    return f"worker:{project}:{worker}"


class LimitFold:
    """``State``'s take windows: a mixin, its slots are ``State``'s."""

    __slots__ = ()
    take_windows: dict[str, deque[float]]

    def _window_take(self, ev: Event) -> None:
        for key, most in ev.get("windows") or ():
            times = self.take_windows.get(key)
            if times is None or times.maxlen != most:  # new, or its rate changed
                times = self.take_windows[key] = deque(times or (), maxlen=max(1, most))
            times.append(ev["ts"])

    def rate_opening(self, windows: Iterable[Window], now: float) -> float | None:
        """None when a take now stays within every window; else when the last of them opens."""
        opening = None
        for key, most, per in windows:
            times = self.take_windows.get(key)
            if times is None or len(times) < most:
                continue
            opens = times[-most] + per  # the Nth most recent take leaves the window
            if opens > now and (opening is None or opens > opening):
                opening = opens
        return opening


def live_jobs_of(jobs: dict[str, dict], project: str, worker: str) -> int:
    """Jobs of ``worker`` that run (or wait for a person) on any host: what its
    ``global_concurrency`` counts."""
    return sum(1 for j in jobs.values() if j.get("worker") == worker
               and j["status"] in LIVE_JOB_STATES and j["project"] == project)


def windows_to_dict(take_windows: dict[str, deque[float]]) -> list:
    return [[key, times.maxlen, list(times)] for key, times in take_windows.items()]


def windows_from_dict(data: list) -> dict[str, deque[float]]:
    return {key: deque(times, maxlen=most) for key, most, times in data}
