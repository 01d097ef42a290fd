"""How long a failed item waits before its next try: a queue's ``retry`` policy, pure.

The nth retry waits ``cooldown`` (fixed), or ``cooldown * 2**(n-1)`` (exponential), capped at
``max``; with ``jitter`` a uniform draw in [0, that] (full jitter), so that items that failed
together do not all come back together. The draw is made once, by the process that records the
failure, and the time it gives is what the failure event holds: every host reads the same."""

from __future__ import annotations

import random

BACKOFFS = ("fixed", "exponential")
# 2**63 overflows nothing in floats, but a cap keeps a long retry chain's wait finite
_MAX_DOUBLINGS = 62


def retry_delay(retry: int, cooldown: float, backoff: str = "fixed", cap: float | None = None,
                jitter: bool = False, draw: float | None = None) -> float:
    """Seconds before the ``retry``th retry (1 for the first); ``draw`` in [0, 1) stands in
    for the random draw of ``jitter``."""
    wait = cooldown
    if backoff == "exponential":
        wait = cooldown * 2.0 ** min(max(retry - 1, 0), _MAX_DOUBLINGS)
    if cap is not None:
        wait = min(wait, cap)
    if jitter:
        wait *= random.random() if draw is None else draw
    return wait
