"""``oj queue push`` and ``oj worker start|wake NAME`` without click: the common spellings
parsed by hand.

Returns None for anything unusual (``--help``, unknown options, wrong arity) so the click
command handles it with its full messages. Both paths call the same function
(``oj.push.do_push``, ``oj.start.do_start``).
"""

from __future__ import annotations


def try_fast(argv: list[str]) -> int | None:
    """The exit status of a command run without click, or None to hand it to click."""
    project, rest = split_project(argv)
    if rest[:2] == ["queue", "push"]:
        return try_queue_push(rest[2:], project)
    if rest[:2] in (["worker", "start"], ["worker", "wake"]):
        return try_worker_start(rest[2:], project)
    return None


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
    from oj.push import do_push  # lazy: a push loads its own modules, not worker start's

    return do_push(positional[0], positional[1] if len(positional) == 2 else None,
                   tuple(variables), project)


def try_worker_start(args: list[str], project: str | None = None) -> int | None:
    """``oj worker start NAME`` (and its alias ``wake``); any option goes to click."""
    if len(args) != 1 or args[0].startswith("-"):
        return None
    from oj.start import do_start  # lazy: as in try_queue_push, the other way round

    return do_start(args[0], project)
