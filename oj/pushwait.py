"""``oj queue push --wait [--follow]``: after the push, wait for the item's job and exit
with its outcome (``ojd.item_wait``); what it says on the way."""

from __future__ import annotations

import sys

from ojd.errors import quoted
from ojd.item_wait import EXIT, progress, wait
from ojd.wake import not_woken

# not waiting: no worker runs to take the item
NOT_WAITING = 3


def wait_for_item(store, item_id: str, queue: str, woken: list[str], idle: list[str],
                  follow: bool) -> int:
    """Wait for a pushed item; ``woken``/``idle``: the queue's workers the push woke and
    those not running. With none running, say so and return NOT_WAITING: nothing would
    take the item."""
    if not woken:
        why = not_woken(idle) if idle else (f"no worker of this project takes from queue "
                                            f"{quoted(queue)}")
        print(f"oj: not waiting: {why}; the item stays queued", file=sys.stderr)
        return NOT_WAITING

    def say(line: str) -> None:
        print(f"oj: {line}", file=sys.stderr)

    out = sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    names = ", ".join(quoted(w) for w in woken)
    try:
        if progress(store.refresh(), item_id).phase == "pending":
            say(f"waiting for worker {names} to take {item_id} (Ctrl-C stops waiting; the "
                "item stays queued)")
        end = wait(store, item_id, say, write if follow else None)
    except KeyboardInterrupt:
        now = progress(store.refresh(), item_id)
        if now.phase == "running" and now.job:
            say(f"stopped waiting; job {now.job} keeps running: oj job logs -f {now.job}")
        else:
            say(f"stopped waiting; item {item_id} stays queued: oj queue show {item_id}")
        return 130
    detail = f" (job {end.job})" if end.job else ""
    error = f": {end.error}" if end.error and end.phase != "completed" else ""
    say(f"item {item_id} {end.phase}{detail}{error}")
    return EXIT[end.phase]
