"""What an agent's screen says, read from its text alone (pure): a prompt waiting on a
person (a permission to grant, a question with numbered choices) and an error of the kind
``on_error`` names (``unauthorized``, ``out_of_credits``, ``no_internet``, ``rate_limited``).

The patterns follow what the common coding agents (Claude Code, Codex, aider, Gemini CLI)
print; an agent that prints otherwise is still watched for idleness and death.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT_LINES = 15  # a prompt is at the bottom of the screen: the last lines hold it
ERROR_LINES = 30  # an error stays on screen a while after it is printed

# a choice line: "❯ 1. Yes", "  2) No, and tell Claude what to do differently", "> 3. Skip"
_CHOICE = re.compile(r"^[\s│|]*(?:[❯›>▶→*]\s*)?(\d{1,2})[.)]\s+(\S.*?)[\s│|]*$")
# the question above the choices, or a permission asked in one line
_PERMISSION = re.compile(
    r"(do you want to (?:proceed|make this edit|create|allow|run|continue)"
    r"|allow (?:this |the )?(?:command|edit|tool|action|execution)"
    r"|approve (?:this|the) (?:command|edit|change)"
    r"|\((?:y)(?:es)?/(?:n)(?:o)?\)|\[y/n\]|\(Y\)es/\(N\)o"
    r"|permission to )", re.IGNORECASE)
_QUESTION = re.compile(r"\?\s*[│|]*\s*$")
# what may stand under the choices of a prompt still open: a key hint or a box's border
_FOOTER = re.compile(r"^[\s│|╰╯─└┘_-]*$|esc|enter|cancel|select|navigate|tab to", re.IGNORECASE)

ERROR_TYPES = ("unauthorized", "out_of_credits", "no_internet", "rate_limited")
# in order: the first type whose pattern a line matches is the line's type
ERROR_PATTERNS: dict[str, re.Pattern[str]] = {
    "unauthorized": re.compile(
        r"(invalid api key|401 unauthorized|\bunauthorized\b|authentication[_ ]error"
        r"|please run /login|not logged in|oauth token (?:has )?expired|invalid x-api-key)",
        re.IGNORECASE),
    "out_of_credits": re.compile(
        r"(credit balance is too low|insufficient[_ ]quota|out of credits"
        r"|exceeded your current quota|billing (?:limit|hard limit)|payment required)",
        re.IGNORECASE),
    "no_internet": re.compile(
        r"(unable to connect to api|connection ?refused|network is unreachable"
        r"|getaddrinfo|ENOTFOUND|ECONNREFUSED|ETIMEDOUT|no internet connection"
        r"|could not resolve host|temporary failure in name resolution)", re.IGNORECASE),
    "rate_limited": re.compile(
        r"(rate[_ ]limit(?:ed)?|429 too many requests|too many requests"
        r"|usage limit reached|overloaded_error|\b529\b|limit will reset)", re.IGNORECASE),
}


@dataclass(frozen=True)
class Prompt:
    kind: str  # permission | question
    text: str  # the question as the screen asks it
    options: tuple[tuple[str, str], ...]  # (key, label), as numbered on the screen

    def summary(self) -> str:
        """One line: the question, then its choices."""
        choices = "; ".join(f"{key}. {label}" for key, label in self.options)
        return self.text + (f" [{choices}]" if choices else "")


@dataclass(frozen=True)
class ScreenError:
    type: str  # one of ERROR_TYPES
    line: str  # the line that says so


def _bottom(screen: str, count: int) -> list[str]:
    return [line.rstrip() for line in screen.rstrip().splitlines()[-count:]]


def find_prompt(screen: str) -> Prompt | None:
    """The prompt the bottom of the screen waits on: numbered choices under a question
    (a permission when the question asks one), or a one-line yes/no permission."""
    lines = _bottom(screen, PROMPT_LINES)
    choices: list[tuple[int, str, str]] = []  # (line index, key, label)
    for i, line in enumerate(lines):
        m = _CHOICE.match(line)
        if m:
            choices.append((i, m.group(1), m.group(2)))
    # the last run of choices numbered 1, 2, ... in order
    run: list[tuple[int, str, str]] = []
    for choice in choices:
        if run and int(choice[1]) == int(run[-1][1]) + 1 and choice[0] - run[-1][0] <= 2:
            run.append(choice)
        elif choice[1] == "1":
            run = [choice]
    below = lines[run[-1][0] + 1:] if run else []
    if len(run) >= 2 and all(_FOOTER.search(line) for line in below):
        above = [line.strip(" │|") for line in lines[:run[0][0]] if line.strip(" │|")]
        question = next((line for line in reversed(above[-4:]) if _QUESTION.search(line)
                         or _PERMISSION.search(line)), None)
        if question is not None:
            kind = "permission" if _PERMISSION.search(question) else "question"
            return Prompt(kind, question.strip(" │|"),
                          tuple((key, label) for _, key, label in run))
    last = next((line.strip(" │|") for line in reversed(lines) if line.strip(" │|")), "")
    if _PERMISSION.search(last) and re.search(r"[?:)\]]\s*$", last):
        return Prompt("permission", last, (("y", "Yes"), ("n", "No")))
    return None


def find_error(screen: str) -> ScreenError | None:
    """The last error line among the screen's last lines, with its type."""
    for line in reversed(_bottom(screen, ERROR_LINES)):
        for kind, pattern in ERROR_PATTERNS.items():
            if pattern.search(line):
                return ScreenError(kind, line.strip())
    return None


# the agent started afresh within its session: its context was cleared or compacted
_RESETS: dict[str, re.Pattern[str]] = {
    "compact": re.compile(r"(conversation compacted|compacted \(ctrl|context (?:was )?compacted"
                          r"|compacting conversation\.\.\. done)", re.IGNORECASE),
    "clear": re.compile(r"(^\s*[>❯]\s*/clear\s*$|context cleared|conversation cleared)",
                        re.IGNORECASE),
}


def find_context_reset(screen: str) -> tuple[str, str] | None:
    """("clear" or "compact", the line that says so), the last such line on the screen."""
    for line in reversed(_bottom(screen, ERROR_LINES)):
        for kind, pattern in _RESETS.items():
            if pattern.search(line):
                return kind, line.strip()
    return None
