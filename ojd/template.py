"""`${...}` templates in runbooks: shell scripts and plain text.

Values from queue items and command-line arguments end up inside shell scripts, so they must
never become code. `render_shell` runs a small shell lexer over the script as it renders it and
quotes every value for the exact context it lands in (unquoted, '...', "...", $'...', $(...),
backticks, heredoc bodies, comments), then re-lexes the inserted text to check the value did
not change the lexer state. Env refs (`${HOME}`, `${X:-default}`) are left for bash to expand.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

from ojd.errors import OjError

NAMESPACES = ("var", "args", "item", "local", "workspace", "invoke")

_OPEN = re.compile(r"\$\$\{|\$\{")
_REF = re.compile(r"\s*([A-Za-z_][\w-]*(?:\.[\w-]+)+)\s*", re.ASCII)
# The default may hold `$x` but not `${`, so `${X:-${var.y}}` nests instead of matching here.
_ENV = re.compile(r"([A-Za-z_]\w*)(?::-((?:[^$]|\$(?!\{))*))?", re.ASCII)
_DOTTED = re.compile(r"\s*[A-Za-z_][\w-]*\s*\.", re.ASCII)
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


class TemplateError(OjError):
    """A template refers to something missing, or a value cannot be inserted safely."""


# --------------------------------------------------------------------------- scanning


def _scan(template: str) -> list[tuple[str, str, str | None]]:
    """Split a template into ("text", text, None), ("ref", name, None), ("env", name, default)."""
    tokens: list[tuple[str, str, str | None]] = []
    pos = 0
    while (m := _OPEN.search(template, pos)) is not None:
        if m.start() > pos:
            tokens.append(("text", template[pos : m.start()], None))
        if m.group() == "$${":  # HCL escape for a literal `${`
            tokens.append(("text", "${", None))
            pos = m.end()
            continue
        end = template.find("}", m.end())
        body = template[m.end() : end] if end >= 0 else None
        if body is not None and (ref := _REF.fullmatch(body)):
            name = ref.group(1)
            if name.split(".", 1)[0] not in NAMESPACES:
                known = ", ".join(f"{ns}." for ns in NAMESPACES)
                raise TemplateError(f"unknown reference ${{{name}}}; references start with {known}")
            tokens.append(("ref", name, None))
            pos = end + 1
        elif body is not None and (env := _ENV.fullmatch(body)):
            tokens.append(("env", env.group(1), env.group(2)))
            pos = end + 1
        elif _DOTTED.match(template, m.end()):
            shown = (body if body is not None else template[m.end() :]).split("\n", 1)[0]
            if body is None:
                raise TemplateError(f"unclosed reference ${{{shown.strip()}; add the closing }}")
            raise TemplateError(
                f"unsupported expression ${{{shown}}}; only references like ${{var.name}} work"
            )
        else:  # some other shell expansion (`${#a[@]}`, `${x%.*}`, ...): plain text
            tokens.append(("text", "${", None))
            pos = m.end()
    if pos < len(template):
        tokens.append(("text", template[pos:], None))
    return tokens


def references(template: str) -> list[str]:
    """Dotted names referenced, e.g. ["var.mr.branch", "invoke.dir"]; skips $${ escapes and env refs.

    Each name appears once, in order of first use. Raises TemplateError for unknown namespaces
    and unsupported expressions, so runbook checks can report them before anything runs.
    """
    seen: dict[str, None] = {}
    for kind, name, _ in _scan(template):
        if kind == "ref":
            seen.setdefault(name, None)
    return list(seen)


def _lookup(name: str, context: Mapping[str, object]) -> object:
    parts = name.split(".")
    ns = parts[0]
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


def _did_you_mean(key: str, options: list[str]) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


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
        elif kind == "ref":
            out.append(_text(_lookup(name, context)))
        else:  # bash `:-` semantics: unset or empty takes the default
            out.append(environ.get(name) or (default or ""))
    return "".join(out)


def render_shell(template: str, context: Mapping[str, object]) -> str:
    """Render a shell script; every interpolated value is quoted for the shell context it lands in."""
    lexer = _ShellLexer()
    out: list[str] = []
    for kind, name, default in _scan(template):
        if kind == "ref":
            value = _text(_lookup(name, context))
            piece = lexer.quote(value, name)
            before = lexer.signature()
            lexer.feed(piece, ref=name)
            if lexer.signature() != before or lexer.pending():
                raise TemplateError(f"${{{name}}}: cannot insert this value safely at this point")
        elif kind == "env":
            piece = "${" + name + ("" if default is None else ":-" + default) + "}"
            lexer.feed(piece)
        else:
            piece = name
            lexer.feed(piece)
        out.append(piece)
    return "".join(out)


# --------------------------------------------------------------------------- quoting


def _sq(value: str) -> str:
    # Always quoted, even for "safe" text: a bare `case` or `A=b` would be a keyword/assignment.
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _dq(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    )


def _hd(value: str) -> str:
    # An unquoted heredoc body expands like "..." but `"` is not special there.
    return value.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


def _bt(value: str) -> str:
    # Bash finds the closing backtick before parsing the inside; these escapes survive that.
    return value.replace("\\", "\\\\").replace("`", "\\`").replace("$", "\\$")


_BREAK = frozenset(" \t\n;&|()<>")
_CMD_SEP = frozenset("\n;&|()")
_RESERVED = frozenset("if then else elif do while until time ! {".split())
_UNQUOTED = ("top", "cmd", "bt")  # where words, comments and heredoc operators exist
_EXPANDING = ("top", "cmd", "bt", "arith", "param", "dq", "hd")


class _Frame:
    __slots__ = (
        "kind", "depth", "dq", "word", "cmdpos", "cases",
        "delim", "strip", "line", "value_ref",
    )  # fmt: skip

    def __init__(self, kind: str, depth: int = 0, dq: bool = False) -> None:
        self.kind = kind  # top cmd arith bt param dq sq ansi comment hd (heredoc) hdq ('EOF')
        self.depth = depth  # open parens of cmd/arith
        self.dq = dq  # param inside "..." or a heredoc: quotes there differ
        self.word: str | None = ""  # current plain word, None once it has non-letters
        self.cmdpos = True  # next word is in command position
        self.cases = 0  # open `case` statements: their `pat)` does not close $(
        self.delim = ""
        self.strip = False
        self.line = ""
        self.value_ref: str | None = None  # a value landed on the current heredoc line


class _ShellLexer:
    """Tracks where in bash's grammar the text fed so far ends. Best effort, but errs to quoting."""

    def __init__(self) -> None:
        self.frames = [_Frame("top")]
        self.escape = False  # a backslash escapes the next char
        self.bt_escape = False  # a backslash in '...' inside backticks, for the backtick scan
        self.dollar = False
        self.prev = "\n"
        self.lt = 0  # run of `<`
        self.hd_word: dict[str, object] | None = None  # reading a heredoc delimiter
        self.hd_pending: list[tuple[str, bool, bool]] = []  # (delim, quoted, strip)
        self.heredoc: _Frame | None = None

    # state checks ---------------------------------------------------------------------

    def signature(self) -> tuple[object, ...]:
        return (tuple((id(f), f.depth) for f in self.frames), len(self.hd_pending))

    def pending(self) -> bool:
        return bool(
            self.escape or self.bt_escape or self.dollar or self.lt or self.hd_word is not None
        )

    def quote(self, value: str, ref: str) -> str:
        f = self.frames[-1]
        k = f.kind
        if self.hd_word is not None or self.lt == 2 or self.dollar:
            raise TemplateError(f"${{{ref}}}: a value cannot be a heredoc delimiter or follow $")
        if k == "sq":
            out = value.replace("'", "'\\''")
        elif k == "ansi":
            out = value.replace("\\", "\\\\").replace("'", "\\'")
        elif k == "comment":  # a newline would end the comment
            out = value.replace("\n", "\\n").replace("\r", "\\r")
        elif k == "dq":
            out = _dq(value)
        elif k == "hd":  # `$()` expands to nothing but stops a line matching the delimiter
            if "$" in f.delim:
                raise TemplateError(f"${{{ref}}}: heredoc delimiter must not contain $")
            out = "$()" + _hd(value).replace("\n", "\n$()")
        elif k == "hdq":
            out = value
        elif k == "param" and f.dq:
            if "'" in value:
                raise TemplateError(
                    f"${{{ref}}}: a value with ' cannot go inside a quoted ${{...}}; "
                    "assign it to a variable first"
                )
            out = _dq(value).replace("}", "\\}")
        elif k == "arith":  # quotes are a syntax error in $((...)); only integers go bare
            out = value if _INT.fullmatch(value) else _sq(value)
        else:
            out = _sq(value)
        for frame in reversed(self.frames):
            if frame.kind == "bt":
                out = _bt(out)
        if self.escape:  # the template's backslash: make it a line continuation (or literal)
            out = ("\\" if k == "ansi" else "\n") + out
        elif self.bt_escape:
            out = "\\" + out
        return out

