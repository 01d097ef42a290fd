"""``oj queue push`` without click: the common spellings parsed by hand.

Returns None for anything unusual (``--help``, unknown options, wrong arity) so the click
command handles it with its full messages. Both paths call ``oj.commands.queue.do_push``.
"""

from __future__ import annotations


def try_queue_push(args: list[str]) -> int | None:
    positional: list[str] = []
    variables: list[str] = []
    project: str | None = None
    it = iter(args)
    for arg in it:
        if arg in ("--var", "--project"):
            value = next(it, None)
            if value is None:
                return None
            if arg == "--var":
                variables.append(value)
            else:
                project = value
        elif arg.startswith("--var="):
            variables.append(arg[len("--var="):])
        elif arg.startswith("--project="):
            project = arg[len("--project="):]
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
    if len(positional) not in (1, 2):
        return None
    from oj.commands.queue import do_push

    return do_push(positional[0], positional[1] if len(positional) == 2 else None,
                   tuple(variables), project)
