"""How deep the JSON the log holds may nest, and the measure of it.

Events are refused by the writer past MAX_EVENT_DEPTH (ojd.store.walframe.encode_events,
which both stores use); queue items are held to less, checked before they are pushed
(ojd.queues). Imported whenever ojd.store.wal is: builtins only.
"""

from __future__ import annotations

# Deeper events are refused by the writer: json's C decoder recurses, so a record nested near
# the interpreter's recursion limit would be written and then crash every reader (and the
# snapshot that nests it deeper still).
MAX_EVENT_DEPTH = 100


def nesting(obj: object, limit: int) -> int:
    """How deep dicts and lists nest in ``obj`` (0 for a scalar), counting no further than
    ``limit + 1``; iterative, so any depth is measured without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > deepest:
            deepest = depth
            if depth > limit:
                return depth
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                push((child, depth + 1))
    return deepest
