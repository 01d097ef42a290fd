"""``oj queue push`` without click: the common spellings parsed by hand.

Returns None for anything unusual (``--help``, unknown options, wrong arity) so the click
command handles it with its full messages. Both paths call ``oj.commands.queue.do_push``.
"""

from __future__ import annotations


def split_project(argv: list[str]) -> tuple[str | None, list[str]]:
    """``oj --project DIR queue push ...``: the root option, then the command words."""
    if argv[:1] == ["--project"] and len(argv) > 1:
        return argv[1], argv[2:]
    if argv[:1] and argv[0].startswith("--project="):
        return argv[0][len("--project="):], argv[1:]
    return None, argv


def try_queue_push(args: list[str], project: str | None = None) -> int | None:
    positional: list[str] = []
    variables: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--var":
            value = next(it, None)
            if value is None:
                return None
            variables.append(value)
        elif arg.startswith("--var="):
            variables.append(arg[len("--var="):])
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
    if len(positional) not in (1, 2):
        return None
    from oj.push import do_push

    return do_push(positional[0], positional[1] if len(positional) == 2 else None,
                   tuple(variables), project)
