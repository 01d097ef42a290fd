"""Errors a user can cause: each renders as one line naming the problem and the fix."""

from __future__ import annotations


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
