"""Errors a user can cause: each renders as one line naming the problem and the fix."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class OjError(Exception):
    """A user-facing error. ``str()`` is the whole message; ``exit_code`` is the process status."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(OjError):
    """Bad input on the command line (bad JSON, unknown var, ...): nothing was written."""

    exit_code = 2


class RunbookError(OjError):
    """One or more runbook problems, each already formatted as ``file:line: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escaped(text: str, *, backslashes: bool = True) -> str:
    """``text`` as one printable line: control characters, line separators, lone surrogates
    and undecodable bytes (``\\xff`` in argv arrives as ``\\udcff``) are written as escapes,
    so a name with a newline cannot make an error look like two messages. ``backslashes``
    (for names a user gave): a backslash is doubled too, so every escape reads back
    unambiguously; log lines (``ojd.notify.one_line``) keep theirs as written."""
    if text.isprintable() and not (backslashes and "\\" in text):
        return text
    out = []
    for c in text:
        if c == "\\" and not backslashes:
            out.append(c)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif "\udc80" <= c <= "\udcff":  # a byte that was not UTF-8, as os.fsdecode keeps it
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c.isprintable():
            out.append(c)
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def quoted(name: str) -> str:
    """A user-given name for a message: in single quotes, escaped (see ``escaped``)."""
    return f"'{escaped(name)}'"


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option closest to a misspelt ``word``, when one is close enough to suggest."""
    import difflib  # lazy: ~3 ms, for an error only (oj queue push and oj run import us)

    close = difflib.get_close_matches(word, list(options), n=1)
    return close[0] if close else None


def unknown(kind: str, name: str, known: Iterable[str]) -> UsageError:
    """The error for a name the project does not define (a queue, command, worker, cron):
    the closest defined name when one is close, then every defined one."""
    names = sorted(known)
    close = closest(name, names)
    hint = f" (did you mean {quoted(close)}?)" if close else ""
    return UsageError(f"unknown {kind} {quoted(name)}{hint}; this project defines: "
                      f"{', '.join(names) or 'none'}")


class LockTimeout(OjError):
    """The state lock stayed held past OJ_LOCK_TIMEOUT: nothing was written."""


class StoreUnavailable(OjError):
    """The state's database could not be reached (or the connection broke) before anything
    was committed: nothing was written, and the same decision may be tried again."""


def describe(error: BaseException) -> str:
    """One line for a log: an OSError's text and file, an OjError's message, anything else
    as its repr."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    if isinstance(error, OjError):
        return str(error)
    return repr(error)
