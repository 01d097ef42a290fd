"""Command argument specs: `args = "<name> [base] [--dry-run] [--priority <level>] <files...>"`.

`parse_spec` reads the runbook text once; `ArgSpec.bind` turns a command line into a dict of
values (strings, lists of strings for variadics, booleans for flags) ready for `${args.*}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ojd.errors import OjError, UsageError, closest, escaped

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_FLAG = re.compile(r"--([A-Za-z_][A-Za-z0-9_-]*)", re.ASCII)


class ArgSpecError(OjError):
    """The `args` text of a runbook command is malformed."""


class ArgsError(UsageError):
    """A command line does not fit the command's arguments."""


@dataclass(frozen=True)
class Positional:
    name: str  # key in the bound values: `-` becomes `_`
    required: bool
    variadic: bool = False
    label: str = ""  # as written in the spec, for usage

    def usage(self) -> str:
        text = (self.label or self.name) + ("..." if self.variadic else "")
        return f"<{text}>" if self.required else f"[{text}]"


@dataclass(frozen=True)
class Flag:
    name: str  # key in the bound values: `-` becomes `_`
    takes_value: bool  # `--priority <level>`; otherwise a boolean like `--dry-run`
    metavar: str = ""  # "level"
    option: str = ""  # "--priority", as written in the spec

    @property
    def spelling(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")

    def usage(self) -> str:
        value = f" <{self.metavar or 'value'}>" if self.takes_value else ""
        return f"[{self.spelling}{value}]"


@dataclass(frozen=True)
class ArgSpec:
    positionals: tuple[Positional, ...] = ()
    flags: tuple[Flag, ...] = ()
    order: tuple[str, ...] = field(default=(), compare=False)  # names in spec order, for usage

    def usage(self) -> str:
        """E.g. "<name> <instructions> [base] [--dry-run] [--priority <level>] <files...>"."""
        items: dict[str, Positional | Flag] = {p.name: p for p in self.positionals}
        items.update((f.name, f) for f in self.flags)
        names = self.order or tuple(items)
        return " ".join(items[n].usage() for n in names)

    def names(self) -> list[str]:
        return [p.name for p in self.positionals] + [f.name for f in self.flags]

    def check_defaults(self, defaults: Mapping[str, object]) -> None:
        """Raise ArgSpecError for a `defaults` key that names no argument (likely a typo)."""
        names = self.names()
        for key in defaults:
            if key.replace("-", "_") not in names:
                hint = _did_you_mean(key.replace("-", "_"), names, quote="'")
                raise ArgSpecError(f"defaults: '{key}' is not an argument in args{hint}")

    def bind(
        self,
        argv: list[str],
        defaults: Mapping[str, object] | None = None,
        *,
        prog: str = "",
    ) -> dict[str, object]:
        """Match `argv` to the spec: every name gets a value (default, None, [] or False).

        Flags may appear anywhere; `--opt=value` and `--opt value` both work; `--` ends them.
        `prog` (e.g. "oj run fix") prefixes the usage shown in errors.
        """
        given = {k.replace("-", "_"): v for k, v in (defaults or {}).items()}
        usage = f"usage: {prog + ' ' if prog else ''}{self.usage()}".rstrip()
        by_option = {f.spelling: f for f in self.flags}
        by_option.update(("--" + f.name, f) for f in self.flags)
        by_option.update(("--" + f.name.replace("_", "-"), f) for f in self.flags)

        values: dict[str, object] = {}
        words: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                words.extend(argv[i:])
                break
            if not arg.startswith("--"):
                words.append(arg)
                continue
            option, eq, inline = arg.partition("=")
            flag = by_option.get(option)
            if flag is None:
                hint = _did_you_mean(option, [f.spelling for f in self.flags], quote="")
                if not hint:
                    hint = " (put -- before arguments that start with --)"
                raise ArgsError(f"unknown option {escaped(option)}{hint}; {usage}")
            if not flag.takes_value:
                if eq:
                    raise ArgsError(f"{flag.spelling} takes no value; {usage}")
                values[flag.name] = True
            elif eq:
                values[flag.name] = inline
            elif i < len(argv):
                values[flag.name] = argv[i]
                i += 1
            else:
                raise ArgsError(f"{flag.spelling} needs a value <{flag.metavar}>; {usage}")

        # Required positionals (and a required variadic's first word) are filled first, so an
        # optional one before a required variadic only takes a word when there is one to spare.
        spare = len(words) - sum(p.required for p in self.positionals)
        for p in self.positionals:
            if p.variadic:
                values[p.name], words = words, []
                if values[p.name]:
                    continue
                if p.required:
                    raise ArgsError(f"missing argument {p.usage()}; {usage}")
                default = given.get(p.name, [])
                values[p.name] = list(default) if isinstance(default, list | tuple) else [default]
            elif words and p.required:
                values[p.name] = words.pop(0)
            elif words and spare > 0:
                spare -= 1
                values[p.name] = words.pop(0)
            elif p.required:
                raise ArgsError(f"missing argument {p.usage()}; {usage}")
            else:
                values[p.name] = given.get(p.name)
        if words:
            extra = " ".join(repr(w) if not w or " " in w else w for w in words)
            raise ArgsError(f"unexpected argument {escaped(extra)}; {usage}")
        for f in self.flags:
            if f.name not in values:
                values[f.name] = given.get(f.name, None if f.takes_value else False)
        return values


def _did_you_mean(word: str, options: list[str], quote: str) -> str:
    close = closest(word, options)
    return f" (did you mean {quote}{close}{quote}?)" if close else ""


def _tokens(text: str) -> list[str]:
    """Split spec text into `<...>`, `[...]` and bare words, checking brackets balance."""
    tokens: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "<[":
            close = ">" if c == "<" else "]"
            depth, j = 0, i
            while j < len(text):
                if text[j] in "<[":
                    depth += 1
                elif text[j] in ">]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j == len(text) or text[j] != close:
                raise ArgSpecError(f"unbalanced {text[i : j + 1].strip()!r}; close it with {close}")
            tokens.append(text[i : j + 1])
            i = j + 1
        elif c in ">]":
            raise ArgSpecError(f"unbalanced {c!r} at {text[: i + 1]!r}; remove it")
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "<[>]":
                j += 1
            if j < len(text) and text[j] in "<[":  # `--opt=<v>` is one item
                if not text[i:j].endswith("="):
                    raise ArgSpecError(f"put a space before {text[j]!r} in {text[i : j + 1]!r}")
                close = ">" if text[j] == "<" else "]"
                end = text.find(close, j)
                if end < 0:
                    raise ArgSpecError(f"unbalanced {text[i:].strip()!r}; close it with {close}")
                j = end + 1
            tokens.append(text[i:j])
            i = j
    return tokens


def _name(raw: str, token: str) -> tuple[str, str]:
    """(key, label) for a written name, e.g. "dry-run" -> ("dry_run", "dry-run")."""
    if not raw:
        raise ArgSpecError(f"empty name in {token!r}; write e.g. <name>")
    if not _NAME.fullmatch(raw):
        raise ArgSpecError(
            f"bad name {raw!r} in {token!r}; use letters, digits, - and _ (e.g. <base-ref>)"
        )
    return raw.replace("-", "_"), raw


def _inner(token: str) -> str:
    return token[1:-1].strip()


def parse_spec(text: str) -> ArgSpec:
    """Parse `args` text; ArgSpecError names the offending token and the fix."""
    positionals: list[Positional] = []
    flags: list[Flag] = []
    order: list[str] = []

    def add_flag(option: str, metavar_token: str | None, token: str) -> None:
        m = _FLAG.fullmatch(option)
        if not m:
            raise ArgSpecError(
                f"bad option {option!r} in {token!r}; write long options like --dry-run"
            )
        key, label = _name(m.group(1), token)
        metavar = ""
        if metavar_token is not None:
            if not (metavar_token.startswith("<") and metavar_token.endswith(">")):
                raise ArgSpecError(
                    f"bad value {metavar_token!r} in {token!r}; write {option} <value>"
                )
            metavar = _inner(metavar_token)
            if not metavar or metavar.endswith("..."):
                raise ArgSpecError(f"bad value name in {token!r}; write {option} <value>")
        flags.append(Flag(key, metavar_token is not None, metavar, "--" + label))
        order.append(key)

    tokens = _tokens(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("--"):  # bare `--flag`, `--opt <val>`, `--opt=<val>`
            option, eq, value = token.partition("=")
            if eq:
                add_flag(option, value, token)
            elif i < len(tokens) and tokens[i].startswith("<"):
                add_flag(option, tokens[i], f"{token} {tokens[i]}")
                i += 1
            else:
                add_flag(option, None, token)
            continue
        if token.startswith("[") and _inner(token).startswith("-"):  # `[--flag]`, `[--o <v>]`
            parts = re.split(r"\s+|=(?=<)", _inner(token))
            if len(parts) > 2:
                raise ArgSpecError(f"too much in {token!r}; write [--opt <value>]")
            add_flag(parts[0], parts[1] if len(parts) == 2 else None, token)
            continue
        if not (token.startswith("<") or token.startswith("[")):
            raise ArgSpecError(f"{token!r} is neither <required>, [optional] nor --flag")
        raw = _inner(token)
        variadic = raw.endswith("...")
        if variadic:
            raw = raw[:-3].strip()
        if "<" in raw or "[" in raw or " " in raw:
            raise ArgSpecError(f"bad name {raw!r} in {token!r}; one name per <...> or [...]")
        key, label = _name(raw, token)
        positionals.append(Positional(key, token.startswith("<"), variadic, label))
        order.append(key)

    seen: set[str] = set()
    for key in order:
        if key in seen:
            raise ArgSpecError(f"duplicate name {key!r}; give each argument its own name")
        seen.add(key)
    for n, p in enumerate(positionals):
        if p.variadic and n != len(positionals) - 1:
            after = positionals[n + 1].usage()
            raise ArgSpecError(
                f"{p.usage()} takes all remaining words, so {after} can never be set; move it last"
            )
        if p.required and not p.variadic and n and not positionals[n - 1].required:
            raise ArgSpecError(
                f"required {p.usage()} after optional {positionals[n - 1].usage()}; "
                "put required arguments first"
            )
    return ArgSpec(tuple(positionals), tuple(flags), tuple(order))
