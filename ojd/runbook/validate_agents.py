"""Validation of a runbook's agent blocks and the actions of their triggers (``on_idle``,
``on_dead``, ``on_error``): part of the runbook builder (``ojd.runbook.validate``)."""

from __future__ import annotations

from typing import Any

from ojd.duration import DurationError, parse_duration
from ojd.runbook.bashsyntax import Script
from ojd.runbook.hcl import Attribute, Block
from ojd.runbook.model import DEFAULT_AGENT_IDLE, Agent, Where
from ojd.runbook.named import leads_outside
from ojd.runbook.wording import OUTSIDE, did_you_mean, type_name

AGENT_ACTIONS = ("nudge", "done", "escalate", "gate", "fail", "resume", "answer")
# what each trigger can do: a dead agent cannot be nudged, a live one is not restarted
TRIGGER_ACTIONS = {
    "on_idle": ("nudge", "done", "escalate", "gate", "fail"),
    "on_dead": ("done", "escalate", "gate", "fail", "resume"),
    "on_error": ("escalate", "gate", "fail", "resume"),
    "on_prompt": ("answer", "nudge", "done", "escalate", "gate", "fail"),
}
ACTION_FIELDS = ("action", "message", "attempts", "cooldown", "run", "replace", "key")


class AgentChecks:
    """The agent blocks of ``validate._Builder``: its fields and problems are its own."""

    def agent(self, file: str, block: Block, name: str, where: Where) -> None:
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
        prime: list[str] = []
        if "prime" in f:
            value = f["prime"].value
            for command in [value] if isinstance(value, str) else value:
                if not isinstance(command, str):
                    self.p.add(file, f["prime"].line, f"agent prime holds {type_name(command)},"
                               " expected shell commands as strings")
                    continue
                prime.append(command)
                self.scripts.append(Script(file, f["prime"].line, f"agent '{name}' prime",
                                           command))
        idle = DEFAULT_AGENT_IDLE
        if "idle" in f:
            try:
                idle = parse_duration(f["idle"].value)
            except DurationError as e:
                self.p.add(file, f["idle"].line, f"agent idle: {e}")
        handlers = {key: self.agent_action(file, f.get(key), key, name)
                    for key in ("on_idle", "on_dead", "on_error", "on_prompt")}
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
                                     handlers["on_prompt"])

    def agent_action(self, file: str, attr: Attribute | None, trigger: str, agent: str
                     ) -> dict[str, Any] | None:
        """An ``on_idle``/``on_dead``/``on_error`` value as a full action (defaults filled)."""
        if attr is None:
            return None
        raw = {"action": attr.value} if isinstance(attr.value, str) else dict(attr.value)

        def bad(key: str, message: str) -> None:
            self.p.add(file, attr.key_lines.get(key, attr.line),
                       f"agent '{agent}' {trigger} {message}")

        for key in raw:
            if key not in ACTION_FIELDS:
                bad(key, f"has unknown field '{key}'" + did_you_mean(key, ACTION_FIELDS))
        action = raw.get("action")
        if action == "recover":  # the older name
            action = "resume"
        allowed = TRIGGER_ACTIONS[trigger]
        if action not in AGENT_ACTIONS:
            bad("action", f"action '{action}' is not one of {', '.join(allowed)}"
                + did_you_mean(str(action), allowed))
        elif action not in allowed:
            why = ("a dead agent cannot be nudged" if action == "nudge" else
                   "a running agent is not restarted" if action == "resume" else
                   "only a prompt is answered" if action == "answer" else
                   "it does not fit this trigger")
            bad("action", f"action '{action}' cannot be used here: {why}; use one of "
                f"{', '.join(allowed)}")
        out: dict[str, Any] = {"action": action, "message": None, "attempts": 1,
                               "cooldown": 0.0, "run": None, "replace": False, "key": None}
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
        if "cooldown" in raw:
            try:
                out["cooldown"] = parse_duration(raw["cooldown"], allow_zero=True)
            except DurationError as e:
                bad("cooldown", f"cooldown: {e}")
        return out
