"""The pure core of watching an agent: which action a trigger fires, after which cooldown,
and when its attempts are used up (then a person is asked: escalate).

An action fires at most ``attempts`` times per trigger in one visit of the step ("forever":
no limit); from its second time on, it waits ``cooldown`` first. An answered escalation
starts the counts afresh: a person has looked.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from ojd.errors import OjError
from ojd.notify import one_line
from ojd.runbook.shellquote import ShellLexer, UnsafeValue

# what an agent does without a handler: a quiet agent has finished its turn; a dead one
# needs a person (it may have crashed)
DEFAULTS: dict[str, dict[str, Any]] = {
    "on_idle": {"action": "done"},
    "on_dead": {"action": "escalate"},
    "on_prompt": {"action": "escalate"},
    "on_error": {"action": "escalate"},
}
DEFAULT_NUDGE = "Please continue with the task."


@dataclass(frozen=True)
class Action:
    kind: str  # done | fail | escalate | gate | nudge | resume | answer
    message: str | None = None
    attempts: int | None = 1  # None: forever
    cooldown: float = 0.0
    run: str | None = None
    replace: bool = False
    key: str | None = None  # answer: what is typed into the prompt
    after: float = 0.0  # the wait before every firing (a rate limit's reset)

    @classmethod
    def of(cls, raw: dict[str, Any] | None, trigger: str) -> Action:
        raw = raw or DEFAULTS[trigger]
        kind = raw.get("action") or "escalate"
        return cls("resume" if kind == "recover" else kind, raw.get("message"),
                   raw.get("attempts", 1), float(raw.get("cooldown") or 0.0), raw.get("run"),
                   bool(raw.get("replace")), raw.get("key"), float(raw.get("after") or 0.0))


@dataclass(frozen=True)
class Plan:
    """What to do now: ``action`` after ``delay`` seconds; ``reason`` explains an escalation
    the trigger did not ask for (attempts used up)."""
    action: Action
    delay: float = 0.0
    reason: str | None = None


@dataclass
class Attempts:
    counts: dict[str, int] = field(default_factory=dict)

    def plan(self, trigger: str, action: Action) -> Plan:
        """Count one firing of ``trigger`` and say what it does."""
        n = self.counts.get(trigger, 0) + 1
        self.counts[trigger] = n
        if action.attempts is not None and n > action.attempts and action.kind != "escalate":
            times = "once" if action.attempts == 1 else f"{action.attempts} times"
            return Plan(Action("escalate"), 0.0,
                        f"{trigger}: {action.kind} already tried {times}")
        return Plan(action, max(action.after, action.cooldown if n > 1 else 0.0))

    def reset(self) -> None:
        self.counts.clear()


def error_action(on_error: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The action ``on_error`` gives an error of type ``kind``: its own, else the one for
    every type (a runbook cached before types were told apart holds that one alone)."""
    if not on_error or "action" in on_error:
        return on_error
    return on_error.get(kind) or on_error.get("*")


def render_command(command: str, prompt: str) -> str:
    """The agent's shell command with the prompt as one word of text: where it says
    ``${prompt}``, quoted for the place it lands in (inside the author's double quotes a
    single-quoted word would still expand ``$(...)``), else appended (nothing when there is
    no prompt). A prompt that cannot be inert there is an OjError."""
    if "${prompt}" not in command:
        return f"{command} {shlex.quote(prompt)}" if prompt else command
    lexer = ShellLexer()
    out: list[str] = []
    try:
        for i, text in enumerate(command.split("${prompt}")):
            if i:
                out.append(lexer.insert(prompt, "prompt"))
            lexer.feed(text)
            out.append(text)
        lexer.finish()
    except UnsafeValue as e:
        raise OjError(f"agent command: {e}") from None
    return "".join(out)


def env_override_name(agent: str) -> str:
    """``OJ_AGENT_<NAME>_COMMAND``: the agent name upper-cased, other characters as ``_``."""
    return "OJ_AGENT_" + "".join(c if c.isalnum() and c.isascii() else "_"
                                 for c in agent.upper()) + "_COMMAND"


def is_idle(last_change: float, now: float, idle: float) -> bool:
    return now - last_change >= idle


PROMPT_SETTLE = 1.0  # a screen unchanged this long (or idle, if shorter) is read for a prompt


def prompt_settled(last_change: float, now: float, idle: float) -> bool:
    """Whether the screen has stood still long enough to be a prompt waiting on someone,
    not one drawn on the way to more output."""
    return now - last_change >= min(PROMPT_SETTLE, idle)


SCREEN_LINES = 40  # the most of an agent's last screen that goes into the job log


def screen_lines(screen: str, limit: int = SCREEN_LINES) -> list[str]:
    """An agent's last screen for the job log: its last ``limit`` lines that are not blank
    at the end, each indented and on one line (a screen line cannot pass for a ``==>`` line
    of oj's own)."""
    lines = screen.rstrip().splitlines()[-limit:] if screen.strip() else []
    return ["  | " + one_line(line.rstrip()) for line in lines]
