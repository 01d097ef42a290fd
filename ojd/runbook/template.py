"""`${...}` templates in runbooks: shell scripts and plain text.

The language: `${ns.key.path}` references into the NAMESPACES of a context, `${raw(ns.key)}` for
a value pasted as shell code, `${NAME}` and `${NAME:-default}` env refs, and `$${` for a literal
`${`; anything else after `${` is shell text. `render_text` inserts values as they are. Values
from queue items and command-line arguments end up inside shell scripts, so they must never
become code: `render_shell` feeds the script through `shellquote.ShellLexer`, which quotes
each value for the exact context it lands in, and refuses values that bash would read again as
code there (arithmetic, variable names, patterns inside "${x/...}"). Env refs are left for bash
to expand. `shell_contexts` reports those places for `oj runbook check`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

from ojd.errors import OjError, closest
from ojd.runbook.shellquote import ShellLexer, UnsafeValue

NAMESPACES = ("var", "args", "item", "local", "workspace", "invoke", "source")

_OPEN = re.compile(r"\$\$\{|\$\{")
# a reference, with an optional substring (``${var.title:0:72}``: offset and length)
_REF = re.compile(r"\s*([A-Za-z_][\w-]*(?:\.[\w-]+)+)(:[0-9]+(?::[0-9]+)?)?\s*", re.ASCII)
_RAW = re.compile(r"\s*raw\(\s*([A-Za-z_][\w-]*(?:\.[\w-]+)+)\s*\)\s*", re.ASCII)
# The default may hold `$x` but not `${`, so `${X:-${var.y}}` nests instead of matching here.
_ENV = re.compile(r"([A-Za-z_]\w*)(?::-((?:[^$]|\$(?!\{))*))?", re.ASCII)
_DOTTED = re.compile(r"\s*[A-Za-z_][\w-]*\s*\.", re.ASCII)
_RAW_OPEN = re.compile(r"\s*raw\(")
# What bash nests, and oj's shell lexer with it: `${`, `$(` (and `$((`), `$[`, `<(`, `>(`
# open a level; `}`, `)`, `]` close one, whatever opened it.
_NESTING = re.compile(r"\$[{(\[]|[<>]\(|[})\]]")

# Expansions nest at most this deep, as HCL's blocks and `${...}` sequences (hcl.MAX_NESTING):
# real scripts use a few levels, and the shell lexer's work per character grows with the
# depth (as bash's parser recurses on it).
MAX_NESTING = 32


# what a local's template is wrapped in when it runs in bash (see `bashsyntax.needs_shell`)
LOCAL_PREFIX = '__oj_local="'


class TemplateError(OjError):
    """A template refers to something missing, or a value cannot be inserted safely."""


class NestingError(TemplateError):
    """Expansions nested past MAX_NESTING; ``offset``: where the one too deep opens."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"${{...}} and $(...) nested more than {MAX_NESTING} deep; flatten it")
        self.offset = offset


def check_nesting(template: str) -> None:
    """Refuse expansions nested more than MAX_NESTING deep (``NestingError``), in one pass.

    Any `}`, `)` or `]` closes a level, quoted or not, so text that balances is never
    refused; only openers with nothing after them to close them (in quotes, say) count
    where bash would not nest."""
    depth = 0
    for m in _NESTING.finditer(template):
        if len(m.group()) == 1:
            if depth:
                depth -= 1
        else:
            depth += 1
            if depth > MAX_NESTING:
                raise NestingError(m.start())


# --------------------------------------------------------------------------- scanning


def _scan(template: str) -> list[tuple[str, str, str | None]]:
    """Split a template into ("text", text, None), ("ref", name, None), ("raw", name, None),
    ("env", name, default)."""
    return [token[:3] for token in _scan_at(template)]


def _scan_at(template: str) -> list[tuple[str, str, str | None, int]]:
    """`_scan`'s tokens, each with the offset in `template` where it starts."""
    tokens: list[tuple[str, str, str | None, int]] = []
    pos = 0
    n = len(template)
    # The first `}` at or after the current `${` (n: none left). Nested `${X:-${...}}` share
    # it: searched for once, and each body is matched in place, never copied (linear).
    close = -1
    while (m := _OPEN.search(template, pos)) is not None:
        if m.start() > pos:
            tokens.append(("text", template[pos : m.start()], None, pos))
        if m.group() == "$${":  # HCL escape for a literal `${`
            tokens.append(("text", "${", None, m.start()))
            pos = m.end()
            continue
        start = m.end()
        if close < start:
            close = template.find("}", start)
            if close < 0:
                close = n
        end = close if close < n else -1
        if end >= 0 and (ref := _REF.fullmatch(template, start, end)):
            tokens.append(("ref", ref.group(1) + (ref.group(2) or ""), None, m.start()))
            pos = end + 1
        elif end >= 0 and (raw := _RAW.fullmatch(template, start, end)):
            tokens.append(("raw", raw.group(1), None, m.start()))
            pos = end + 1
        elif end >= 0 and (env := _ENV.fullmatch(template, start, end)):
            tokens.append(("env", env.group(1), env.group(2), m.start()))
            pos = end + 1
        elif _DOTTED.match(template, start) or (end >= 0 and _RAW_OPEN.match(template, start,
                                                                             end)):
            body = template[start:end] if end >= 0 else None
            shown = (body if body is not None else template[start:]).split("\n", 1)[0]
            if body is None:
                raise TemplateError(f"unclosed reference ${{{shown.strip()}; add the closing }}")
            raise TemplateError(
                f"unsupported expression ${{{shown}}}; only references like ${{var.name}} "
                "and ${raw(var.name)} work"
            )
        else:  # some other shell expansion (`${#a[@]}`, `${x%.*}`, ...): plain text
            tokens.append(("text", "${", None, m.start()))
            pos = m.end()
    if pos < len(template):
        tokens.append(("text", template[pos:], None, pos))
    return tokens


def references(template: str) -> list[str]:
    """Dotted names referenced, e.g. ["var.mr.branch", "invoke.dir"].

    Skips $${ escapes and env refs. Each name appears once, in order of first use; names in
    unknown namespaces are included for the caller to report. Raises TemplateError for
    expressions that are not plain references (`${var.x + 1}`, an unclosed `${var.x`), and
    NestingError for expansions nested too deep.
    """
    check_nesting(template)
    seen: dict[str, None] = {}
    for kind, name, _ in _scan(template):
        if kind in ("ref", "raw"):
            seen.setdefault(name.partition(":")[0], None)  # a substring's reference
    return list(seen)


def _lookup(name: str, context: Mapping[str, object]) -> object:
    parts = name.split(".")
    ns = parts[0]
    if ns not in NAMESPACES:
        known = ", ".join(f"{n}." for n in NAMESPACES)
        raise TemplateError(f"unknown reference ${{{name}}}; references start with {known}")
    if ns not in context:
        raise TemplateError(f"unknown reference ${{{name}}}: no {ns} values here")
    cur: object = context[ns]
    for i, key in enumerate(parts[1:], start=1):
        parent = parts[i - 1]
        if isinstance(cur, Mapping):
            if key in cur:
                cur = cur[key]
                continue
            if i == 1:
                hint = _did_you_mean(key, [str(k) for k in cur])
                raise TemplateError(f"unknown reference ${{{name}}}{hint}")
            raise TemplateError(f"${{{name}}}: '{parent}' has no key '{key}'")
        if isinstance(cur, list | tuple) and key.isdigit():
            if int(key) < len(cur):
                cur = cur[int(key)]
                continue
            raise TemplateError(f"${{{name}}}: '{parent}' has no item {key} (it has {len(cur)})")
        kind = "list" if isinstance(cur, list | tuple) else type(cur).__name__
        raise TemplateError(f"${{{name}}}: '{parent}' is a {kind}, it has no key '{key}'")
    return cur


def _value(name: str, context: Mapping[str, object]) -> str:
    """The text of reference ``name``, cut to its substring when it has one (``:OFF`` or
    ``:OFF:LEN``, in characters; a value shorter than that gives what it has)."""
    ref, _, cut = name.partition(":")
    text = _text(_lookup(ref, context))
    if cut:
        offset, _, length = cut.partition(":")
        start = int(offset)
        text = text[start : start + int(length)] if length else text[start:]
    return text


def _did_you_mean(key: str, options: list[str]) -> str:
    close = closest(key, options)
    return f" (did you mean '{close}'?)" if close else ""


def _text(value: object) -> str:
    """The text a value renders as: str as is, scalars and containers as JSON, None as ""."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def render_text(
    template: str, context: Mapping[str, object], env: Mapping[str, str] | None = None
) -> str:
    """Render plain text (notify messages, prompts): values inserted as-is."""
    environ = os.environ if env is None else env
    out: list[str] = []
    for kind, name, default in _scan(template):
        if kind == "text":
            out.append(name)
        elif kind in ("ref", "raw"):
            out.append(_value(name, context))
        else:  # bash `:-` semantics: unset or empty takes the default
            out.append(environ.get(name) or (default or ""))
    return "".join(out)


def render_shell(template: str, context: Mapping[str, object]) -> str:
    """Render a shell script; each value is quoted for the shell context it lands in, and
    ${raw(...)} values are pasted as code."""
    lexer = ShellLexer()
    out: list[str] = []
    # template text can raise too: a delimiter line ends a heredoc early if a value is on it
    try:
        for kind, name, default in _scan(template):
            if kind == "ref":
                piece = lexer.insert(_value(name, context), name)
            elif kind == "env":
                piece = _env_text(name, default)
                lexer.feed(piece)
            else:  # template text, or a value the runbook's author wants run as code
                piece = name if kind == "text" else _value(name, context)
                lexer.feed(piece)
            out.append(piece)
        lexer.finish()
    except UnsafeValue as e:
        raise TemplateError(str(e)) from None
    return "".join(out)


def _env_text(name: str, default: str | None) -> str:
    """An env ref as bash is to see it: ``${NAME}`` or ``${NAME:-default}``."""
    return "${" + name + ("" if default is None else ":-" + default) + "}"


class ValueContext(NamedTuple):
    """A place in a script where bash reads a value again, or runs it as the command."""

    ref: str  # the reference, e.g. "var.n"
    kind: str  # "int", "name", "pattern", "command", or "refused" (no value can go there)
    place: str  # e.g. "[[ ... -eq ... ]]"; for "refused", the renderer's reason
    offset: int  # where the reference starts in the template


def shell_contexts(template: str, prefix: str = "") -> list[ValueContext]:
    """Where the references of a shell template land when bash reads them again as arithmetic,
    a variable name or a pattern, or as the first word of a command. `prefix` is script text
    that comes before the template (a local's `__oj_local="`). Syntax errors give no result;
    `references` reports them."""
    lexer = ShellLexer()
    lexer.feed(prefix)
    offsets: dict[int, int] = {}  # value index -> offset of its reference
    found: list[ValueContext] = []
    try:
        check_nesting(template)  # `references` reports it; the lexer would take its time
        for kind, name, default, offset in _scan_at(template):
            if kind == "ref":
                try:
                    lexer.insert("0", name)  # an integer: data in every context
                except UnsafeValue as e:
                    found.append(ValueContext(name, "refused", str(e), offset))
                    return found  # the lexer's state past a refused value means little
                offsets[lexer.count] = offset
            elif kind == "env":
                lexer.feed(_env_text(name, default))
            else:
                lexer.feed(name if kind == "text" else "true")
        lexer.finish()
    except (UnsafeValue, TemplateError):
        pass
    seen: set[int] = set()
    for index, ref, kind, place in lexer.notes:
        if index not in seen:  # the first place that restricts a value is the one it fails at
            seen.add(index)
            found.append(ValueContext(ref, kind, place, offsets.get(index, 0)))
    return sorted(found, key=lambda c: c.offset)
