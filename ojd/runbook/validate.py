"""Runbook validation: HCL blocks become a ``Runbook`` before anything runs.

Pure: ``build(files)`` takes ``[(display_name, parsed_body)]`` and returns a ``Runbook`` or
raises ``RunbookError`` listing every problem at once as ``file:line: message``. Given a
``warnings`` list, it also appends ``file:line: warning: message`` for templates whose values
land where bash reads them again, or in command position (``oj runbook check`` shows them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from ojd.backoff import BACKOFFS
from ojd.conf import RETAIN_KINDS
from ojd.duration import DurationError, parse_duration
from ojd.errors import RunbookError, quoted
from ojd.runbook.argspec import ArgSpecError, parse_spec
from ojd.runbook.bashsyntax import Script, needs_shell
from ojd.runbook.calendar import CalendarError
from ojd.runbook.calendar import check as check_calendar
from ojd.runbook.crontab import looks_like_crontab
from ojd.runbook.hcl import Attribute, Block
from ojd.runbook.model import (
    AGENT_PIPELINE,
    CRON_PIPELINE,
    DEFAULT_EXTERNAL_TIMEOUT,
    Command,
    Cron,
    Pipeline,
    Queue,
    Runbook,
    Step,
    Where,
    Worker,
)
from ojd.runbook.named import leads_outside, script_paths
from ojd.runbook.programs import programs
from ojd.runbook.template import (
    LOCAL_PREFIX,
    shell_contexts,
)
from ojd.runbook.validate_agents import AgentChecks
from ojd.runbook.validate_refs import References
from ojd.runbook.wording import (
    OUTSIDE,
    TYPE_NAMES,
    context_warning,
    crontab_hint,
    did_you_mean,
    type_name,
)
from ojd.unitnames import too_long

DEFAULT_MAX_VISITS = 10
RETRY_FIELDS = ("attempts", "cooldown", "backoff", "max", "jitter")
DEFAULT_POLL = 30.0
DEFAULT_LEASE = 60.0
MIN_LEASE = 3.0  # renewed every third of it: shorter would be mostly renewals
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(s|m|h)\s*", re.ASCII)
_RATE_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
_WORKER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")  # ":": ALIAS:NAME of an import


# -- schema --------------------------------------------------------------------------------

# field name -> accepted python types (as produced by ojd.runbook.hcl)
_STR = (str,)
_INT = (int,)
_OBJ = (dict,)
_LIST = (list,)
_STR_OR_OBJ = (str, dict)
_DURATION = (str, int, float)

SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "command": {"args": _STR, "defaults": _OBJ, "run": _STR_OR_OBJ},
    "queue": {"type": _STR, "vars": _LIST, "defaults": _OBJ, "retry": _OBJ, "list": _STR,
              "take": _STR, "timeout": _DURATION, "priority": _INT, "rate": _STR,
              "retain": _OBJ, "poll": _DURATION},
    "worker": {"source": _OBJ, "handler": _OBJ, "run": _OBJ, "concurrency": _INT, "poll": _DURATION,
               "lease": _DURATION, "rate": _STR, "global_concurrency": _INT, "retain": _OBJ},
    "cron": {"interval": _DURATION, "schedule": _STR, "run": _STR_OR_OBJ, "concurrency": _INT},
    "pipeline": {"vars": _LIST, "defaults": _OBJ, "workspace": _STR, "on_done": _OBJ,
                 "on_fail": _OBJ, "on_cancel": _OBJ, "max_visits": _INT, "name": _STR,
                 "timeout": _DURATION, "source": _STR_OR_OBJ},
    "step": {"run": _STR_OR_OBJ, "approve": _STR, "on_done": _OBJ, "on_fail": _OBJ,
             "on_cancel": _OBJ,
             "timeout": _DURATION},
    # on_*: the messages (templates); exec, webhook: where they go (ojd/notifications.py)
    "notify": {"on_start": _STR, "on_done": _STR, "on_fail": _STR, "exec": _STR,
               "webhook": _STR},
    "agent": {"run": _STR, "prompt": _STR, "prompt_file": _STR, "env": _OBJ, "cwd": _STR,
              "prime": (str, list, dict), "idle": _DURATION,
              "max_concurrency": _INT, "on_idle": _STR_OR_OBJ,
              "on_dead": _STR_OR_OBJ, "on_error": (str, dict, list), "on_prompt": _STR_OR_OBJ},
}
# a cron's interval: ticks at most once a second (AccuracySec=1s), and no longer than
# systemd's timers hold with room to spare (microseconds in 64 bits: ~584,000 years)
CRON_MIN_INTERVAL = 1.0
CRON_MAX_INTERVAL = 100 * 365.25 * 86400
SCHEMA["job"] = SCHEMA["pipeline"]  # upstream's spelling of a pipeline
TOP_BLOCKS = ("command", "queue", "worker", "pipeline", "job", "agent", "cron")
NESTED_BLOCKS = {"": TOP_BLOCKS, "pipeline": ("locals", "notify", "step", "source"),
                 "job": ("locals", "notify", "step", "source")}
LABELLED = {"command", "queue", "worker", "pipeline", "job", "agent", "step", "cron"}
# what a run or handler names: a pipeline, by either of its spellings
PIPELINE_KEYS = ("pipeline", "job")

class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, int, str]] = []

    def add(self, file: str, line: int, message: str) -> None:
        self.items.append((file, line, message))

    @property
    def lines(self) -> list[str]:
        """Sorted by file, then line; problems on one line keep the order they were found."""
        return [f"{f}:{n}: {m}" for f, n, m in sorted(self.items, key=lambda p: p[:2])]


class _Builder(AgentChecks, References):
    """Turns parsed files into a Runbook, collecting every problem on the way."""

    def __init__(self, warn: bool = False) -> None:
        self.p = _Problems()
        self.rb = Runbook()
        self.seen: dict[tuple[str, str], Where] = {}
        # lines of fields the cross-reference checks point at: (kind, names..., field) -> line
        self.at: dict[tuple, int] = {}
        self.scripts: list[Script] = []
        self.warn = warn  # lint the shell templates (only `oj runbook check` asks)
        self.warnings = _Problems()
        self.scripts_run: list[Script] = []  # shell commands not syntax-checked (agent run)
        # the word a reference used ("pipeline" or "job"): (kind, name) -> word, so that
        # problems speak the file's spelling
        self.words: dict[tuple[str, str], str] = {}

    def shell_warnings(self, file: str, attr: Attribute, what: str, local: bool = False) -> None:
        """Warn where a shell template's values are read again by bash, or run as a command."""
        text = attr.value
        if not self.warn or not isinstance(text, str):
            return
        prefix = ""
        if local:  # rendered as text unless it needs bash; then inside "..."
            if not needs_shell(text):
                return
            prefix = LOCAL_PREFIX
        for c in shell_contexts(text, prefix):
            # a heredoc's text starts on the line after `name = <<EOF` (value_line)
            line = (attr.value_line or attr.line) + text[: c.offset].count("\n")
            self.warnings.add(file, line, f"warning: {what}: " + context_warning(c))

    # -- generic checks --

    def fields(self, file: str, block: Block, kind: str) -> dict[str, Attribute]:
        """Known, well-typed attributes of ``block``; every other one is reported."""
        schema = SCHEMA.get(kind, {})
        out: dict[str, Attribute] = {}
        for attr in block.attributes:
            expected = schema.get(attr.name)
            if expected is None:
                where = f"in {kind}" if kind else "at the top level (fields belong in blocks)"
                self.p.add(file, attr.line, f"unknown field '{attr.name}' {where}"
                           + did_you_mean(attr.name, tuple(schema)))
                continue
            value = attr.value
            ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in
                                                      expected)
            if not ok:
                want = " or ".join(TYPE_NAMES.get(t, t.__name__) for t in expected)
                self.p.add(file, attr.line, f"{kind} field '{attr.name}' is "
                           f"{type_name(value)}, expected {want}")
                continue
            out[attr.name] = attr
        allowed = NESTED_BLOCKS.get(kind, ())
        for sub in block.blocks:
            if sub.type not in allowed:
                where = f"in {kind}" if kind else "at the top level"
                hint = did_you_mean(sub.type, allowed or TOP_BLOCKS)
                self.p.add(file, sub.line, f"unknown block '{sub.type}' {where}{hint}")
        return out

    def name_of(self, file: str, block: Block) -> str | None:
        if len(block.labels) != 1 or not block.labels[0]:
            self.p.add(file, block.line, f"{block.type} needs exactly one name: "
                       f'{block.type} "NAME" {{ ... }}')
            return None
        return block.labels[0]

    def declare(self, kind: str, name: str, where: Where, word: str | None = None) -> bool:
        first = self.seen.get((kind, name))
        if first is not None:
            self.p.add(where.file, where.line, f"{word or kind} '{name}' is already defined "
                       f"at {first}; rename one of them")
            return False
        self.seen[(kind, name)] = where
        return True

    def str_list(self, file: str, attr: Attribute | None) -> tuple[str, ...]:
        if attr is None:
            return ()
        bad = [v for v in attr.value if not isinstance(v, str) or not v]
        if bad:
            got = "an empty string" if bad[0] == "" else type_name(bad[0])
            self.p.add(file, attr.line, f"'{attr.name}' must be a list of names; it holds "
                       f"{got}")
            return ()
        return tuple(attr.value)

    def target(self, file: str, attr: Attribute | None, key: str) -> str | None:
        """``{ step = "x" }``-style references."""
        found = self.target_of(file, attr, (key,))
        return found[1] if found else None

    def target_of(self, file: str, attr: Attribute | None, keys: tuple[str, ...]
                  ) -> tuple[str, str] | None:
        """A reference ``{ KEY = "NAME" }`` whose KEY is one of ``keys``: (KEY, NAME)."""
        if attr is None:
            return None
        value = attr.value
        key = next(iter(value)) if len(value) == 1 else None
        if key not in keys or not isinstance(value[key], str):
            got = (f"; '{key}' is {type_name(value[key])}" if key in keys
                   else f"; it has {', '.join(map(repr, value)) or 'no keys'}")
            want = " or ".join(f'{{ {k} = "NAME" }}' for k in keys)
            self.p.add(file, attr.line, f"'{attr.name}' must be {want}{got}")
            return None
        return key, value[key]

    def pipeline_target(self, file: str, attr: Attribute | None, kind: str, name: str
                        ) -> str | None:
        """A ``{ pipeline = "NAME" }`` or ``{ job = "NAME" }`` reference; remembers which
        word it used."""
        found = self.target_of(file, attr, PIPELINE_KEYS)
        if found is None:
            return None
        self.words[(kind, name)] = found[0]
        return found[1]

    def duration(self, file: str, line: int, what: str, value: object, default: float,
                 allow_zero: bool = False) -> float:
        if value is None:
            return default
        try:
            return parse_duration(value, allow_zero=allow_zero)  # type: ignore[arg-type]
        except DurationError as e:
            self.p.add(file, line, f"{what}: {e}")
            return default

    def optional_duration(self, file: str, f: dict[str, Attribute], what: str
                          ) -> float | None:
        """A block's ``timeout``-like duration: None when it has none."""
        attr = f.get("timeout")
        if attr is None:
            return None
        return self.duration(file, attr.line, what, attr.value, 0.0) or None

    # -- blocks --

    def file(self, file: str, body: Block) -> None:
        self.fields(file, body, "")  # top-level attributes are not part of the language
        defined: list[str] = []
        for block in body.blocks:
            if block.type not in TOP_BLOCKS:
                continue  # reported by fields()
            name = self.name_of(file, block)
            if name is None:
                continue
            where = Where(file, block.line)
            kind = "pipeline" if block.type == "job" else block.type  # one model, two words
            if not self.declare(kind, name, where, block.type):
                continue
            getattr(self, kind)(file, block, name, where)
            defined.append(f"{block.type} {name}")
        self.rb.files[file] = defined

    def command(self, file: str, block: Block, name: str, where: Where) -> None:
        f = self.fields(file, block, "command")
        spec_text = f["args"].value if "args" in f else ""
        try:
            spec = parse_spec(spec_text)
        except ArgSpecError as e:
            self.p.add(file, f["args"].line, f"command '{name}' args: {e}")
            spec = parse_spec("")
        if "defaults" in f:
            try:
                spec.check_defaults(f["defaults"].value)
            except ArgSpecError as e:
                self.p.add(file, f["defaults"].line, f"command '{name}' {e}")
        run = f.get("run")
        script = pipeline = own = None
        if run is None:
            self.p.add(file, block.line, f"command '{name}' needs 'run' (a shell script, "
                       '{ pipeline = "NAME" } or { job = "NAME" })')
        elif isinstance(run.value, str):
            script = run.value
            self.script(file, run, f"command '{name}'")
            self.shell_warnings(file, run, f"command '{name}'")
        elif set(run.value) == {"agent"} or "attach" in run.value:
            # upstream's standalone agent: a job of one agent step (`attach` is not oj's)
            agent = self.target(file, replace(run, value={k: v for k, v in run.value.items()
                                                          if k != "attach"}), "agent")
            if agent is not None:
                pipeline = AGENT_PIPELINE + name
                own = Pipeline(pipeline, (), {}, (), None, {}, None, None, DEFAULT_MAX_VISITS,
                               {"agent": Step("agent", None, agent, None, None,
                                              Where(file, run.line))}, where, None)
        else:
            pipeline = self.pipeline_target(file, run, "command", name)
        if run is not None:
            self.at[("command", name, "run")] = run.value_line or run.line
        self.rb.commands[name] = Command(name, spec, dict(f["defaults"].value) if "defaults" in f
                                         else {}, script, pipeline, where, own)

    def queue(self, file: str, block: Block, name: str, where: Where) -> None:
        f = self.fields(file, block, "queue")
        qtype = f["type"].value if "type" in f else "persisted"
        if qtype not in ("persisted", "external"):
            self.p.add(file, f["type"].line, f"queue '{name}' type must be \"persisted\" or "
                       f"\"external\", not \"{qtype}\"")
        attempts, cooldown = 0, 0.0
        backoff, cap, jitter = "fixed", None, False
        if "retry" in f:
            retry = f["retry"]
            for key in retry.value:
                if key not in RETRY_FIELDS:
                    self.p.add(file, retry.key_lines.get(key, retry.line),
                               f"unknown retry field '{key}'; use "
                               f"{', '.join(RETRY_FIELDS[:-1])} and {RETRY_FIELDS[-1]}")
            attempts = retry.value.get("attempts", 0)
            attempts_line = retry.key_lines.get("attempts", retry.line)
            if not isinstance(attempts, int) or isinstance(attempts, bool):
                self.p.add(file, attempts_line, f"retry attempts is {type_name(attempts)}, "
                           "expected a whole number >= 0")
                attempts = 0
            elif attempts < 0:
                self.p.add(file, attempts_line, f"retry attempts must be >= 0, not {attempts}")
                attempts = 0
            # "0s" retries at once: the next poll, which a job's end triggers
            cooldown = self.duration(file, retry.key_lines.get("cooldown", retry.line),
                                     "retry cooldown", retry.value.get("cooldown"), 0.0,
                                     allow_zero=True)
            backoff, cap, jitter = self.retry_growth(file, name, retry)
        list_cmd = f["list"].value if "list" in f else None
        take_cmd = f["take"].value if "take" in f else None
        for key in ("list", "take"):
            if key in f:
                self.script(file, f[key], f"queue '{name}' {key}")
        if "take" in f:
            self.at[("queue", name, "take")] = f["take"].value_line or f["take"].line
        if qtype == "external" and (list_cmd is None or take_cmd is None):
            self.p.add(file, block.line, f"external queue '{name}' needs both 'list' and 'take'")
        timeout = self.optional_duration(file, f, f"queue '{name}' timeout")
        priority = f["priority"].value if "priority" in f else 0
        if qtype == "persisted":
            for key in ("list", "take", "timeout"):
                if key in f:
                    self.p.add(file, f[key].line, f"'{key}' belongs to external queues; "
                               f"queue '{name}' is persisted")
        if take_cmd is not None:
            self.shell_warnings(file, f["take"], f"queue '{name}' take")
        vars_ = self.str_list(file, f.get("vars"))
        defaults = dict(f["defaults"].value) if "defaults" in f else {}
        for key in defaults:
            if vars_ and key not in vars_:
                self.p.add(file, f["defaults"].key_lines.get(key, f["defaults"].line),
                           f"default '{key}' is not one of queue '{name}' vars {list(vars_)}")
        self.rb.queues[name] = Queue(name, qtype, vars_, defaults, attempts, cooldown,
                                     list_cmd, take_cmd, where,
                                     timeout or DEFAULT_EXTERNAL_TIMEOUT, priority, backoff, cap,
                                     jitter,
                                     self.rate(file, f, f"queue '{name}'"),
                                     self.retain(file, f, f"queue '{name}'"),
                                     self.duration(file, f["poll"].line, "poll", f["poll"].value,
                                                   DEFAULT_POLL) if "poll" in f else None)
        if qtype == "external" and "rate" in f:
            self.p.add(file, f["rate"].line, f"queue '{name}' rate: only a persisted queue's "
                       "takes are limited (an external queue's take command claims its items)")

    def retain(self, file: str, f: dict[str, Attribute], what: str) -> dict[str, float]:
        """``retain = { done = "7d", dead = "30d", jobs = "14d" }``: how long completed items,
        dead items and finished jobs stay (ojd.retention)."""
        attr = f.get("retain")
        if attr is None:
            return {}
        out = {}
        for key, value in attr.value.items():
            line = attr.key_lines.get(key, attr.line)
            if key not in RETAIN_KINDS:
                self.p.add(file, line, f"{what} unknown retain field '{key}'; use done (completed "
                           "items), dead (dead items) and jobs (finished jobs)")
                continue
            seconds = self.duration(file, line, f"{what} retain {key}", value, 0.0)
            if seconds:
                out[key] = seconds
        return out

    def rate(self, file: str, f: dict[str, Attribute], what: str) -> tuple[int, float] | None:
        """``rate = "N/s|m|h"``: at most N takes in any second, minute or hour."""
        attr = f.get("rate")
        if attr is None:
            return None
        m = _RATE.fullmatch(attr.value)
        if m is None or int(m.group(1)) < 1:
            self.p.add(file, attr.line, f"{what} rate {quoted(attr.value)} is not N per "
                       "second, minute or hour with N >= 1; use e.g. \"10/m\", \"5/s\", "
                       "\"100/h\"")
            return None
        return int(m.group(1)), _RATE_PER[m.group(2)]

    def retry_growth(self, file: str, name: str, retry: Attribute
                     ) -> tuple[str, float | None, bool]:
        """A retry's backoff, max and jitter (ojd.backoff)."""
        def line(key: str) -> int:
            return retry.key_lines.get(key, retry.line)

        backoff = retry.value.get("backoff", "fixed")
        if backoff not in BACKOFFS:
            self.p.add(file, line("backoff"), f"queue '{name}' retry backoff must be "
                       f"\"fixed\" or \"exponential\", not {quoted(str(backoff))}")
            backoff = "fixed"
        cap = None
        if "max" in retry.value:
            cap = self.duration(file, line("max"), f"queue '{name}' retry max",
                                retry.value["max"], 0.0) or None
            if backoff != "exponential":
                self.p.add(file, line("max"), f"queue '{name}' retry max caps an exponential "
                           "backoff; add backoff = \"exponential\" or remove max")
        jitter = retry.value.get("jitter", False)
        if not isinstance(jitter, bool):
            self.p.add(file, line("jitter"), f"queue '{name}' retry jitter is "
                       f"{type_name(jitter)}, expected true or false")
            jitter = False
        return backoff, cap, jitter

    def name_length(self, file: str, block: Block, kind: str, name: str) -> None:
        problem = too_long(kind, name)
        if problem is not None:
            self.p.add(file, block.line, f"{kind} name '{name[:16]}...' {problem}")

    def worker(self, file: str, block: Block, name: str, where: Where) -> None:
        f = self.fields(file, block, "worker")
        if not _WORKER_NAME.match(name):
            self.p.add(file, block.line, f"worker name '{name}' must be letters, digits, "
                       "'_', ':', '-' or '.' (it names the unit oj-worker@NAME.service)")
        self.name_length(file, block, "worker", name)
        queue = self.target(file, f.get("source"), "queue")
        # upstream's `run = { job = ... }` is oj's `handler = { pipeline = ... }`
        if "handler" in f and "run" in f:
            self.p.add(file, f["run"].line, f"worker '{name}' has both 'handler' and 'run'; "
                       "keep one of them")
        handler = f.get("run") or f.get("handler")
        pipeline = self.pipeline_target(file, handler, "worker", name)
        if "source" in f:
            self.at[("worker", name, "source")] = f["source"].line
        if handler is not None:
            self.at[("worker", name, "handler")] = handler.line
        if "source" not in f:
            self.p.add(file, block.line, f"worker '{name}' needs 'source'")
        if handler is None:
            self.p.add(file, block.line, f"worker '{name}' needs 'handler' "
                       '({ pipeline = "NAME" }) or \'run\' ({ job = "NAME" })')
        concurrency = f["concurrency"].value if "concurrency" in f else 1
        if concurrency < 1:
            self.p.add(file, f["concurrency"].line,
                       f"worker '{name}' concurrency must be at least 1, not {concurrency}")
            concurrency = 1
        poll_attr = f.get("poll")
        if poll_attr is not None:
            self.at[("worker", name, "poll")] = poll_attr.line
        poll = self.duration(file, poll_attr.line if poll_attr else block.line, "poll",
                             poll_attr.value if poll_attr else None, DEFAULT_POLL)
        lease_attr = f.get("lease")
        lease = self.duration(file, lease_attr.line if lease_attr else block.line, "lease",
                              lease_attr.value if lease_attr else None, DEFAULT_LEASE)
        if lease < MIN_LEASE:
            self.p.add(file, lease_attr.line if lease_attr else block.line,
                       f"worker '{name}' lease must be at least {MIN_LEASE:g}s")
            lease = MIN_LEASE
        everywhere = f["global_concurrency"].value if "global_concurrency" in f else None
        if everywhere is not None and everywhere < 1:
            self.p.add(file, f["global_concurrency"].line, f"worker '{name}' "
                       f"global_concurrency must be at least 1, not {everywhere}")
            everywhere = None
        self.rb.workers[name] = Worker(name, queue or "", pipeline or "", concurrency, poll, where,
                                       lease, self.rate(file, f, f"worker '{name}'"),
                                       everywhere, self.retain(file, f, f"worker '{name}'"))

    def cron(self, file: str, block: Block, name: str, where: Where) -> None:
        f = self.fields(file, block, "cron")
        if not _WORKER_NAME.match(name):
            self.p.add(file, block.line, f"cron name '{name}' must be letters, digits, "
                       "'_', ':', '-' or '.' (it names the units oj-cron@NAME.timer and .service)")
        self.name_length(file, block, "cron", name)
        interval = schedule = None
        if "interval" in f and "schedule" in f:
            self.p.add(file, f["schedule"].line, f"cron '{name}' has both 'interval' and "
                       "'schedule'; keep one of them")
        elif "interval" in f:
            interval = self.duration(file, f["interval"].line, f"cron '{name}' interval",
                                     f["interval"].value, 60.0)
            if interval < CRON_MIN_INTERVAL:
                self.p.add(file, f["interval"].line, f"cron '{name}' interval "
                           f"'{f['interval'].value}' is shorter than 1s, the shortest a cron "
                           "ticks at; use \"1s\" or more")
            elif interval > CRON_MAX_INTERVAL:
                self.p.add(file, f["interval"].line, f"cron '{name}' interval "
                           f"'{f['interval'].value}' is longer than 100 years, more than a "
                           "timer holds; use a shorter one (or a calendar 'schedule')")
        elif "schedule" in f:
            schedule = f["schedule"].value
            try:
                check_calendar(schedule)
            except CalendarError as e:
                self.p.add(file, f["schedule"].line, f"cron '{name}' schedule {quoted(schedule)}: "
                           + (crontab_hint(schedule) if looks_like_crontab(schedule) else
                              f"{e} (systemd calendar syntax, e.g. \"Mon..Fri *-*-* 09:00\" or "
                              "\"daily\"; 'systemd-analyze calendar EXPR' tries one)"))
        else:
            self.p.add(file, block.line, f"cron '{name}' needs 'interval' (a duration, "
                       "\"6h\") or 'schedule' (a systemd calendar expression, \"daily\")")
        concurrency = f["concurrency"].value if "concurrency" in f else 1
        if concurrency < 1:
            self.p.add(file, f["concurrency"].line,
                       f"cron '{name}' concurrency must be at least 1, not {concurrency}")
            concurrency = 1
        run = f.get("run")
        script = own = None
        pipeline = CRON_PIPELINE + name
        if run is None:
            self.p.add(file, block.line, f"cron '{name}' needs 'run' (a shell script, "
                       '{ pipeline = "NAME" } or { job = "NAME" })')
        elif isinstance(run.value, str):
            script = run.value
            self.script(file, run, f"cron '{name}'")
            self.shell_warnings(file, run, f"cron '{name}'")
            # a shell run is the one step of a pipeline of its own: its jobs run, log and
            # end like any other
            own = Pipeline(pipeline, (), {}, (), None, {}, None, None, DEFAULT_MAX_VISITS,
                           {"run": Step("run", script, None, None, None,
                                        Where(file, run.value_line or run.line))},
                           where, name)
        else:
            pipeline = self.pipeline_target(file, run, "cron", name) or ""
        if run is not None:
            self.at[("cron", name, "run")] = run.value_line or run.line
        self.rb.crons[name] = Cron(name, interval, schedule, pipeline, script, concurrency,
                                   where, own)

    def pipeline(self, file: str, block: Block, name: str, where: Where) -> None:
        word = block.type  # "pipeline", or upstream's "job": problems say what the file says
        f = self.fields(file, block, word)
        workspace = f["workspace"].value if "workspace" in f else None
        git_branch, git_ref = None, None
        for sub in block.blocks:  # upstream's block form: source { git = true ... }
            if sub.type == "source" and "source" not in f:
                f["source"] = Attribute("source", {a.name: a.value for a in sub.attributes},
                                        sub.line, {a.name: a.line for a in sub.attributes})
        if "source" in f:
            workspace, git_branch, git_ref = self.source(file, f, word, name, workspace)
        if workspace is not None and workspace not in ("ephemeral", "persistent"):
            self.p.add(file, f["workspace"].line,
                       f"workspace must be \"ephemeral\" or \"persistent\", not \"{workspace}\"")
        max_visits = f["max_visits"].value if "max_visits" in f else DEFAULT_MAX_VISITS
        if max_visits < 1:
            self.p.add(file, f["max_visits"].line, "max_visits must be at least 1")
        locals_: list[tuple[str, str]] = []
        notify: dict[str, str] = {}
        steps: dict[str, Step] = {}
        for sub in block.blocks:
            if sub.type == "locals":
                for attr in sub.attributes:
                    if not isinstance(attr.value, str):
                        self.p.add(file, attr.line, f"local '{attr.name}' is "
                                   f"{type_name(attr.value)}, expected a string")
                        continue
                    locals_.append((attr.name, attr.value))
                    self.at[("local", name, attr.name)] = attr.value_line or attr.line
                    if needs_shell(attr.value):  # evaluated as the inside of "..."
                        self.scripts.append(Script(file, attr.value_line or attr.line,
                                                   f"local '{attr.name}'",
                                                   LOCAL_PREFIX + attr.value + '"'))
                    self.shell_warnings(file, attr, f"{word} '{name}' local '{attr.name}'",
                                        local=True)
            elif sub.type == "notify":
                for k, a in self.fields(file, sub, "notify").items():
                    notify[k] = a.value
                    self.at[("notify", name, k)] = a.value_line or a.line
            elif sub.type == "step":
                step_name = self.name_of(file, sub)
                if step_name is None:
                    continue
                if step_name in steps:
                    self.p.add(file, sub.line, f"step '{step_name}' is already defined at "
                               f"{steps[step_name].where} in {word} '{name}'")
                    continue
                steps[step_name] = self.step(file, sub, step_name, name, word)
        if not steps:
            self.p.add(file, block.line, f"{word} '{name}' has no steps; add step \"NAME\" {{ "
                       "run = \"...\" }")
        for key in ("on_done", "on_fail", "on_cancel", "name"):
            if key in f:
                self.at[("pipeline", name, key)] = f[key].line
        job_name = f["name"].value if "name" in f else None
        if job_name is not None and not job_name.strip():
            self.p.add(file, f["name"].line, f"{word} '{name}' name is empty; give a "
                       'template such as name = "${var.title}", or leave it out')
            job_name = None
        self.rb.pipelines[name] = Pipeline(
            name, self.str_list(file, f.get("vars")),
            dict(f["defaults"].value) if "defaults" in f else {}, tuple(locals_), workspace,
            notify, self.target(file, f.get("on_done"), "step"),
            self.target(file, f.get("on_fail"), "step"), max_visits, steps, where, job_name,
            self.optional_duration(file, f, f"{word} '{name}' timeout"), word,
            self.target(file, f.get("on_cancel"), "step"), git_branch, git_ref)

    def source(self, file: str, f: dict[str, Attribute], word: str, name: str,
               workspace: str | None) -> tuple[str | None, str | None, str | None]:
        """Upstream's ``source``: "folder" is an ephemeral workspace; ``{ git = true,
        branch, ref }`` one that is a git worktree. (workspace, branch, ref)."""
        attr = f["source"]
        if "workspace" in f:
            self.p.add(file, attr.line, f"{word} '{name}' has both 'workspace' and 'source'; "
                       "keep one of them")
            return workspace, None, None
        value = attr.value
        if value == "folder":
            return "ephemeral", None, None
        if isinstance(value, str):
            self.p.add(file, attr.line, f"{word} '{name}' source must be \"folder\" or "
                       f"{{ git = true }}, not {quoted(value)}")
            return None, None, None
        for key in value:
            if key not in ("git", "branch", "ref"):
                self.p.add(file, attr.key_lines.get(key, attr.line), f"unknown source field "
                           f"'{key}'; use git, branch and ref")
        if value.get("git") is not True:
            self.p.add(file, attr.line, f"{word} '{name}' source needs git = true (or use "
                       'source = "folder")')
            return "ephemeral", None, None
        branch = value.get("branch", "ws-${source.nonce}")
        ref = value.get("ref", "HEAD")
        for key, text in (("branch", branch), ("ref", ref)):
            if not isinstance(text, str) or not text.strip():
                self.p.add(file, attr.key_lines.get(key, attr.line), f"source {key} must be "
                           "a non-empty string")
        self.at[("source", name)] = attr.line
        return "ephemeral", str(branch), str(ref)

    def step(self, file: str, block: Block, name: str, pipeline: str, word: str = "pipeline"
             ) -> Step:
        f = self.fields(file, block, "step")
        where = Where(file, block.line)
        run, approve = f.get("run"), f.get("approve")
        script = agent = None
        if approve is not None:
            if run is not None:
                self.p.add(file, run.line, f"step '{name}' has both 'run' and 'approve'; an "
                           "approval step runs nothing: keep one of them")
            elif f.get("timeout") is not None:
                self.p.add(file, f["timeout"].line, f"step '{name}' waits for a person: "
                           "'timeout' does not apply to an approval step; remove it")
            elif not str(approve.value).strip():
                self.p.add(file, approve.line, f"step '{name}' approve needs the question a "
                           'person answers, e.g. approve = "Deploy ${var.branch}?"')
        elif run is None:
            self.p.add(file, block.line, f"step '{name}' needs 'run' (a script or an agent) "
                       "or 'approve' (a question a person approves or rejects)")
        elif isinstance(run.value, str):
            script = run.value
            self.script(file, run, f"step '{name}' of {word} '{pipeline}'")
            self.shell_warnings(file, run, f"step '{name}'")
        elif set(run.value) & set(PIPELINE_KEYS):
            self.p.add(file, run.line, f"step '{name}' run = {{ job = ... }} (a child job) is "
                       "not something oj runs yet; run it from the step instead: run = \"oj run "
                       "COMMAND ...\" or oj queue push")
        else:
            agent = self.target(file, run, "agent")
        for key, attr in (("run", run), ("approve", approve), ("on_done", f.get("on_done")),
                          ("on_fail", f.get("on_fail")), ("on_cancel", f.get("on_cancel"))):
            if attr is not None:
                self.at[("step", pipeline, name, key)] = attr.value_line or attr.line
        on_fail, attempts = self.on_fail_route(file, f.get("on_fail"))
        return Step(name, script, agent, self.target(file, f.get("on_done"), "step"),
                    on_fail, where,
                    self.optional_duration(file, f, f"step '{name}' timeout"),
                    on_cancel=self.target(file, f.get("on_cancel"), "step"),
                    on_fail_attempts=attempts,
                    approve=approve.value if approve is not None and run is None else None)

    def on_fail_route(self, file: str, attr: Attribute | None) -> tuple[str | None, int | None]:
        """A step's ``on_fail``: ``{ step = "NAME" }``, or upstream's ``{ step = "NAME",
        attempts = N }`` (taken for the step's first N failures). (step, attempts)."""
        if attr is None or "attempts" not in attr.value:
            return self.target(file, attr, "step"), None
        attempts = attr.value["attempts"]
        line = attr.key_lines.get("attempts", attr.line)
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            self.p.add(file, line, f"on_fail attempts is {type_name(attempts)}, expected a "
                       "whole number >= 1")
            attempts = None
        elif attempts < 1:
            self.p.add(file, line, f"on_fail attempts must be at least 1, not {attempts}")
            attempts = None
        rest = {k: v for k, v in attr.value.items() if k != "attempts"}
        return self.target(file, replace(attr, value=rest), "step"), attempts

    def script(self, file: str, attr: Attribute, what: str) -> None:
        self.scripts.append(Script(file, attr.value_line or attr.line, what, attr.value))

    def outside_warnings(self) -> None:
        """Warn of files the scripts run by a path that leads outside the project (``..``,
        or an absolute path given to bash or ``.``): a worker checks who may change them
        (``ojd.trust``) wherever they are, but they do not come with the project."""
        for s in (*self.scripts, *self.scripts_run):
            for word, line, argument in script_paths(s.text):
                if leads_outside(word, argument):
                    self.warnings.add(s.file, s.line + line,
                                      f"warning: {s.what} runs {word}{OUTSIDE}")

    def program_warnings(self, missing: Callable[[str], str | None]) -> None:
        """Warn of programs the scripts a worker runs name that ``missing`` says are not on
        its PATH. A command's script runs in the caller's shell, with the caller's PATH:
        not checked."""
        said: dict[str, str | None] = {}
        for s in (*self.scripts, *self.scripts_run):
            if s.what.startswith("command "):
                continue
            for word, line in programs(s.text):
                if word not in said:
                    said[word] = missing(word)
                if said[word] is not None:
                    self.warnings.add(s.file, s.line + line,
                                      f"warning: {s.what} runs '{word}', {said[word]}")

    def line_of(self, key: tuple, where: Where) -> int:
        """The line of the field ``key`` names, else of its block."""
        return self.at.get(key, where.line)

    def field_where(self, key: tuple, where: Where) -> Where:
        return Where(where.file, self.line_of(key, where))

    # -- cross references --

def build(files: list[tuple[str, Block]],
          check_shell: Callable[[list[Script]], list[tuple[str, int, str]]] | None = None,
          warnings: list[str] | None = None,
          missing_program: Callable[[str], str | None] | None = None) -> Runbook:
    """Validate parsed runbook files into one Runbook; raise RunbookError with every problem.
    ``check_shell`` (``ojd.runbook.bashsyntax.check``: I/O, so passed in) reports shell scripts that
    do not parse. Warnings (``file:line: warning: ...``) are appended to ``warnings`` when it
    is given; with ``missing_program`` (I/O, so passed in: why a program is not found, or
    None) also for programs the worker's scripts run that it does not find."""
    b = _Builder(warn=warnings is not None)
    for name, body in files:
        b.file(name, body)
    b.check_references()
    if b.warn:
        b.outside_warnings()
        if missing_program is not None:
            b.program_warnings(missing_program)
    if check_shell is not None:
        for file, line, message in check_shell(b.scripts):
            b.p.add(file, line, message)
    if warnings is not None:
        warnings.extend(b.warnings.lines)
    if b.p.items:
        raise RunbookError(b.p.lines)
    return b.rb
