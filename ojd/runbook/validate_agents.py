"""Validation of a runbook's agent blocks and the actions of their triggers (``on_idle``,
``on_dead``, ``on_prompt``, ``on_error`` per error type): part of the runbook builder
(``ojd.runbook.validate``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ojd.duration import DurationError, parse_duration
from ojd.runbook.bashsyntax import Script
from ojd.runbook.hcl import Attribute, Block
from ojd.runbook.model import DEFAULT_AGENT_IDLE, Agent, Where
from ojd.runbook.named import leads_outside
from ojd.runbook.wording import OUTSIDE, did_you_mean, type_name

AGENT_ACTIONS = ("nudge", "done", "escalate", "gate", "fail", "resume", "answer", "auto")
# what each trigger can do: a dead agent cannot be nudged, a live one is not restarted
TRIGGER_ACTIONS = {
    "on_idle": ("nudge", "done", "escalate", "gate", "fail", "auto"),
    "on_dead": ("done", "escalate", "gate", "fail", "resume"),
    "on_error": ("escalate", "gate", "fail", "resume"),
    "on_prompt": ("answer", "nudge", "done", "escalate", "gate", "fail"),
}
ACTION_FIELDS = ("action", "message", "attempts", "cooldown", "run", "replace", "key", "after")
# the error types on_error tells apart (ojd.agents.screens reads them off the screen); "*"
# holds the action for any type without its own
# when a prime's output is typed into the agent: it starts the first prompt (startup), the
# prompt of a restart (resume), or follows the agent's /clear (clear) or compaction (compact)
PRIME_SOURCES = ("startup", "resume", "clear", "compact")
ERROR_TYPES = ("unauthorized", "out_of_credits", "no_internet", "rate_limited")


class AgentChecks:
    """The agent blocks of ``validate._Builder``: its fields and problems are its own."""

    def agent(self, file: str, block: Block, name: str, where: Where) -> None:
        block = _triggers_as_fields(block)
        f = self.fields(file, block, "agent")
        if "run" not in f:
            self.p.add(file, block.line, f"agent '{name}' needs 'run'")
        if "prompt" in f and "prompt_file" in f:
            self.p.add(file, f["prompt_file"].line, "set either 'prompt' or 'prompt_file', "
                       "not both")
        env = dict(f["env"].value) if "env" in f else {}
        for key, value in env.items():
            if not isinstance(value, str):
                self.p.add(file, f["env"].key_lines.get(key, f["env"].line),
                           f"agent env '{key}' is {type_name(value)}, expected a string")
        sources: dict[str, tuple[str, ...]] = {}
        if "prime" in f:
            value = f["prime"].value
            by_source = value if isinstance(value, dict) else {"startup": value}
            for source, commands in by_source.items():
                line = f["prime"].key_lines.get(source, f["prime"].line)
                if source not in PRIME_SOURCES:
                    self.p.add(file, line, f"agent '{name}' prime source '{source}' is not one "
                               f"of {', '.join(PRIME_SOURCES)}"
                               + did_you_mean(str(source), PRIME_SOURCES))
                    continue
                sources[source] = self.prime_commands(file, line, name, commands)
        prime = list(sources.pop("startup", ()))
        max_concurrency = None
        if "max_concurrency" in f:
            n = f["max_concurrency"].value
            if n >= 1:
                max_concurrency = n
            else:
                self.p.add(file, f["max_concurrency"].line, f"agent '{name}' max_concurrency "
                           f"is {n}, expected a whole number >= 1")
        idle = DEFAULT_AGENT_IDLE
        if "idle" in f:
            try:
                idle = parse_duration(f["idle"].value)
            except DurationError as e:
                self.p.add(file, f["idle"].line, f"agent idle: {e}")
        handlers = {key: self.agent_action(file, f.get(key), key, name)
                    for key in ("on_idle", "on_dead", "on_prompt")}
        handlers["on_error"] = self.error_actions(file, f.get("on_error"), name)
        if "run" in f and isinstance(f["run"].value, str):
            self.scripts_run.append(Script(file, f["run"].value_line or f["run"].line,
                                           f"agent '{name}'", f["run"].value))
        if "prompt_file" in f and self.warn and leads_outside(f["prompt_file"].value, True):
            self.warnings.add(file, f["prompt_file"].line, f"warning: agent '{name}' "
                              f"prompt_file {f['prompt_file'].value}{OUTSIDE}")
        self.rb.agents[name] = Agent(name, f["run"].value if "run" in f else "",
                                     f["prompt"].value if "prompt" in f else None,
                                     f["prompt_file"].value if "prompt_file" in f else None,
                                     env, handlers["on_idle"], handlers["on_dead"],
                                     handlers["on_error"], where,
                                     f["cwd"].value if "cwd" in f else None, tuple(prime), idle,
                                     handlers["on_prompt"], max_concurrency, sources)

    def prime_commands(self, file: str, line: int, name: str, value: Any) -> tuple[str, ...]:
        """A prime's shell commands: one script, or a list of commands."""
        out: list[str] = []
        for command in [value] if isinstance(value, str) else value \
                if isinstance(value, list) else [value]:
            if not isinstance(command, str):
                self.p.add(file, line, f"agent prime holds {type_name(command)}, expected "
                           "shell commands as strings")
                continue
            out.append(command)
            self.scripts.append(Script(file, line, f"agent '{name}' prime", command))
        return tuple(out)

    def error_actions(self, file: str, attr: Attribute | None, agent: str
                      ) -> dict[str, Any] | None:
        """``on_error`` as ``{TYPE or "*": action}``, from one action for every type
        (``"escalate"``, ``{ action = ... }``), a table by type (``{ rate_limited = {...},
        unauthorized = "fail" }``) or a list of actions each with ``match = TYPE`` (the one
        without ``match`` for the rest)."""
        if attr is None:
            return None
        value = attr.value
        if isinstance(value, str) or (isinstance(value, dict) and "action" in value):
            return {"*": self.agent_action(file, attr, "on_error", agent)}
        entries: list[tuple[str, Any, int]] = []
        if isinstance(value, dict):
            entries = [(k, v, attr.key_lines.get(k, attr.line)) for k, v in value.items()]
        else:
            for entry in value:
                if not isinstance(entry, dict):
                    self.p.add(file, attr.line, f"agent '{agent}' on_error list holds "
                               f"{type_name(entry)}, expected actions as objects")
                    continue
                entry = dict(entry)
                entries.append((entry.pop("match", "*"), entry, attr.line))
        out: dict[str, Any] = {}
        for kind, action, line in entries:
            if kind != "*" and kind not in ERROR_TYPES:
                self.p.add(file, line, f"agent '{agent}' on_error type '{kind}' is not one of "
                           f"{', '.join(ERROR_TYPES)}" + did_you_mean(str(kind), ERROR_TYPES))
                continue
            if not isinstance(action, (str, dict)):
                self.p.add(file, line, f"agent '{agent}' on_error {kind} is "
                           f"{type_name(action)}, expected an action")
                continue
            out[kind] = self.agent_action(file, Attribute("on_error", action, line),
                                          "on_error" if kind == "*" else f"on_error {kind}",
                                          agent)
        return out

    def agent_action(self, file: str, attr: Attribute | None, trigger: str, agent: str
                     ) -> dict[str, Any] | None:
        """An ``on_idle``/``on_dead``/``on_prompt``/``on_error`` value as a full action
        (defaults filled); ``trigger`` may name an error type (``on_error rate_limited``)."""
        if attr is None:
            return None
        raw = {"action": attr.value} if isinstance(attr.value, str) else dict(attr.value)
        if "command" in raw and "run" not in raw:  # upstream's word for a gate's command
            raw["run"] = raw.pop("command")
            attr = replace(attr, key_lines={**attr.key_lines,
                                            "run": attr.key_lines.get("command", attr.line)})

        def bad(key: str, message: str) -> None:
            self.p.add(file, attr.key_lines.get(key, attr.line),
                       f"agent '{agent}' {trigger} {message}")

        for key in raw:
            if key not in ACTION_FIELDS:
                bad(key, f"has unknown field '{key}'" + did_you_mean(key, ACTION_FIELDS))
        action = raw.get("action")
        if action == "recover":  # the older name
            action = "resume"
        allowed = TRIGGER_ACTIONS[trigger.split()[0]]
        if action not in AGENT_ACTIONS:
            bad("action", f"action '{action}' is not one of {', '.join(allowed)}"
                + did_you_mean(str(action), allowed))
        elif action not in allowed:
            why = ("only a prompt is answered" if action == "answer" else
                   "a dead agent cannot be nudged" if trigger == "on_dead" else
                   "a running agent is not restarted" if action == "resume" else
                   "it does not fit this trigger")
            bad("action", f"action '{action}' cannot be used here: {why}; use one of "
                f"{', '.join(allowed)}")
        out: dict[str, Any] = {"action": action, "message": None, "attempts": 1,
                               "cooldown": 0.0, "run": None, "replace": False, "key": None,
                               "after": 0.0}
        for key in ("message", "run", "key"):
            if key in raw:
                if isinstance(raw[key], str):
                    out[key] = raw[key]
                else:
                    bad(key, f"{key} is {type_name(raw[key])}, expected a string")
        if action == "gate" and not out["run"]:
            bad("action", "action 'gate' needs run = \"COMMAND\" (exit 0 advances)")
        elif out["run"] and action != "gate":
            bad("run", f"run is only for action 'gate', not '{action}'")
        if action == "answer" and not out["key"]:
            bad("action", "action 'answer' needs key = \"KEYS\" (typed into the prompt, "
                "then Enter: \"1\", \"y\")")
        elif out["key"] and action != "answer":
            bad("key", f"key is only for action 'answer', not '{action}'")
        if out["run"]:
            self.scripts.append(Script(file, attr.key_lines.get("run", attr.line),
                                       f"{trigger} gate", out["run"]))
        if "replace" in raw:
            if isinstance(raw["replace"], bool):
                out["replace"] = raw["replace"]
            else:
                bad("replace", f"replace is {type_name(raw['replace'])}, expected true or "
                    "false")
        if "attempts" in raw:
            n = raw["attempts"]
            if n == "forever":
                out["attempts"] = None
            elif isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                out["attempts"] = n
            else:
                what = n if isinstance(n, int) and not isinstance(n, bool) else type_name(n)
                bad("attempts", f"attempts is {what}, expected a whole number >= 1 or "
                    "\"forever\"")
        for key in ("cooldown", "after"):
            if key in raw:
                try:
                    out[key] = parse_duration(raw[key], allow_zero=True)
                except DurationError as e:
                    bad(key, f"{key}: {e}")
        return out


_TRIGGERS = ("on_idle", "on_dead", "on_prompt", "on_error")


def _triggers_as_fields(block: Block) -> Block:
    """Upstream's block form of a trigger, ``on_idle { action = ... }``, as the field
    ``on_idle = { action = ... }`` (a field of the same name wins: fields() reports both)."""
    subs = [b for b in block.blocks if b.type in _TRIGGERS and not b.labels and not b.blocks]
    if not subs:
        return block
    fields = tuple(Attribute(b.type, {a.name: a.value for a in b.attributes}, b.line,
                             {a.name: a.line for a in b.attributes}) for b in subs)
    return replace(block, attributes=block.attributes + fields,
                   blocks=tuple(b for b in block.blocks if b not in subs))
