"""``oj queue push``: shared by the fast path (no click) and the click command.

Nothing here may import click or the runbook parser: a push with an unchanged runbook
reads the cached queue index and appends one durable record.
"""

from __future__ import annotations

import os
import sys

from ojd import lastgood, paths, queues
from ojd import project as projects
from ojd.errors import OjError, RunbookError, UsageError, quoted
from ojd.store import Store
from ojd.wake import not_woken, wake_queue_workers


def invoke_dir(store: Store) -> str | None:
    """The ``${invoke.dir}`` a pushed item gives its job: the shell's directory; a job's
    step passes on its job's (the step runs in a workspace that may go when the job ends)."""
    job_id = os.environ.get("OJ_JOB")
    if not job_id:
        return os.getcwd()
    job = store.refresh().jobs.get(job_id)
    return job.get("invoke") if job is not None else None


def do_push(queue_name: str, json_text: str | None, variables: tuple[str, ...],
            project: str | None, start: bool = False, wait: bool = False,
            follow: bool = False, due: float | None = None,
            priority: int | None = None) -> int:
    """Validate, push durably (``due``: a delayed item's time), print the id, wake the
    queue's running workers (an earlier due item shortens their sleep); with
    ``start``, start those of this project's workers of the queue that do not run; with
    ``wait``, wait for the item's job and return its outcome (``follow``: print its log)."""
    root = projects.find_root(override=project)
    store = Store()
    cache = paths.cache_dir(store.root)
    fallback = False
    try:
        index = projects.load_index(root, cache)
    except RunbookError as e:
        # another part of the runbook is broken: an unchanged queue keeps taking pushes
        index = lastgood.fallback(root, cache, queue_name, e)
        print(lastgood.warning(e, queue_name), file=sys.stderr)
        fallback = True
    else:
        lastgood.remember(root, cache, index)
    queue = queues.queue_spec(index, queue_name)
    if json_text == "-":  # an item too large for argv comes on stdin
        json_text = read_stdin()
    data = queues.parse_item(json_text) if json_text is not None else {}
    for text in variables:
        name, value = queues.parse_var(text)
        data[name] = value
    data = queues.validate_item(queue, data)
    item_id, created = queues.push(store, root, queue, data, due, priority, invoke_dir(store))
    print(item_id)
    if not created:
        print(f"oj: the same item is already queued as {item_id}; not queued twice",
              file=sys.stderr)
    defined = [name for name, w in index["workers"].items() if w["queue"] == queue.name]
    woken, idle = wake_queue_workers(store, root, queue.name, defined)
    if start and fallback:  # the last good runbook kept its queues, not its workers
        if woken:
            return 0
        print("oj: the item is queued, but no worker was started: the runbook is invalid; "
              "'oj runbook check' lists the problems", file=sys.stderr)
        return 1
    if start:
        code = start_workers(root, index, queue.name, woken, project)
        if not wait or code:
            return code
        woken = sorted(set(woken) | set(defined))  # started now
    if wait:
        try:
            # lazy: the job runners' modules, only for a push that waits
            from oj.pushwait import wait_for_item
        except KeyboardInterrupt:  # before the wait began: nothing took the item yet
            print(f"oj: stopped waiting; item {item_id} stays queued", file=sys.stderr)
            return 130
        return wait_for_item(store, item_id, queue.name, woken, idle, follow)
    if idle and not woken:
        print(f"oj: {not_woken(idle, store.root, root)}", file=sys.stderr)
    return 0


def do_push_lines(queue_name: str, source: str, variables: tuple[str, ...],
                  project: str | None, due: float | None = None,
                  priority: int | None = None) -> int:
    """``--lines``: one JSON object per line of ``source`` (a file, or ``-`` for stdin),
    each with ``variables`` set, all validated before any is queued in one append. Prints
    each line's id; wakes the queue's running workers once."""
    root = projects.find_root(override=project)
    store = Store()
    cache = paths.cache_dir(store.root)
    try:
        index = projects.load_index(root, cache)
    except RunbookError as e:
        index = lastgood.fallback(root, cache, queue_name, e)
        print(lastgood.warning(e, queue_name), file=sys.stderr)
    else:
        lastgood.remember(root, cache, index)
    queue = queues.queue_spec(index, queue_name)
    pairs = [queues.parse_var(text) for text in variables]
    items = []
    for number, line in enumerate(read_lines(source), start=1):
        if not line.strip():
            continue  # a blank line (the last newline's) is no item
        try:
            data = queues.parse_item(line)
            data.update(pairs)
            items.append(queues.validate_item(queue, data))
        except UsageError as e:
            raise UsageError(f"line {number}: {e}; nothing was queued") from None
    if not items:
        raise UsageError("no items in the lines given: one JSON object per line, e.g. "
                         "{\"branch\": \"x\"}")
    results = queues.push_many(store, root, queue, items, due, priority, invoke_dir(store))
    sys.stdout.write("".join(f"{item_id}\n" for item_id, _ in results))
    again = sum(1 for _, created in results if not created)
    if again:
        print(f"oj: {again} of the {len(results)} items were already queued; not queued "
              "twice", file=sys.stderr)
    defined = [name for name, w in index["workers"].items() if w["queue"] == queue.name]
    woken, idle = wake_queue_workers(store, root, queue.name, defined)
    if idle and not woken:
        print(f"oj: {not_woken(idle, store.root, root)}", file=sys.stderr)
    return 0


def read_lines(source: str) -> list[str]:
    """The lines of a file, or of stdin for ``-``, as UTF-8."""
    if source == "-":
        return read_stdin().splitlines()
    try:
        with open(source, "rb") as f:
            return f.read().decode().splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{quoted(source)} is not UTF-8 (byte {e.start}); give the "
                         "lines as UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"cannot read {quoted(source)}: {e.strerror}; give a file of "
                         "JSON lines, or - for stdin") from None


def start_workers(root: str, index: dict, queue: str, woken: list[str],
                  project: str | None) -> int:
    """``--start``: each worker of the runbook that takes from ``queue`` and was not woken is
    started as ``oj worker start NAME`` starts it; a failure says the item is queued."""
    # lazy: worker start's modules (D-Bus, unit control, trust), only for --start
    from oj.start import start_worker
    names = sorted(name for name, w in index["workers"].items()
                   if w["queue"] == queue and name not in woken)
    if not names and not woken:
        print(f"oj: no worker of this project takes from queue {quoted(queue)}; nothing "
              "started", file=sys.stderr)
    code = 0
    for name in names:
        try:
            said = start_worker(name, project or root)  # "Worker 'NAME' started"
            print(f"oj: {said[:1].lower()}{said[1:]}", file=sys.stderr)
        except OjError as e:
            message = str(e).splitlines()[0]
            print(f"oj: the item is queued, but worker {quoted(name)} did not start: "
                  f"{message}", file=sys.stderr)
            code = 1
    return code


def read_stdin() -> str:
    try:
        return sys.stdin.buffer.read().decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"the item on stdin is not UTF-8 (byte {e.start}); "
                         "give the JSON as UTF-8 text") from None
    except (AttributeError, OSError):  # no stdin at all (closed, or not a file)
        raise UsageError("no item on stdin; pipe the JSON in, or give it as an "
                         "argument") from None
