"""TOML and JSON runbooks: read with the stdlib, turned into the same blocks HCL gives.

The layout follows upstream Odd Jobs: each block kind is a table of named blocks
(``[queue.merges]``, ``{"queue": {"merges": {...}}}``); a pipeline's steps are an array of
tables with a ``name`` (``[[pipeline.build.step]]``), or a table of named steps; ``locals``
and ``notify`` are tables. Neither parser reports where a value is, so a small scanner maps
each key path back to the line that sets it; a value it cannot place takes the line of its
nearest placed parent.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right

from ojd.errors import RunbookError
from ojd.runbook.hcl import MAX_NESTING, Attribute, Block, HclSyntaxError

Path = tuple  # of str keys and int indexes, from the document root

# Body keys that are blocks rather than attributes, by the kind of body they are in
_BLOCKS = {"": ("command", "queue", "worker", "pipeline", "job", "agent", "cron"),
           "pipeline": ("locals", "notify", "step"), "job": ("locals", "notify", "step")}
_LABELLED = {"command", "queue", "worker", "pipeline", "job", "agent", "step", "cron"}


def parse(text: str, filename: str) -> Block:
    """A ``.toml`` or ``.json`` runbook as a document Block; raises HclSyntaxError for
    syntax, RunbookError for a document whose shape is not a runbook's."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if filename.endswith(".json"):
        data, lines, value_lines = _load_json(text, filename)
    else:
        data, lines, value_lines = _load_toml(text, filename)
    return _Converter(filename, lines, value_lines).document(data)


# -- conversion ----------------------------------------------------------------------------

class _Converter:
    def __init__(self, filename: str, lines: dict, value_lines: dict) -> None:
        self.filename = filename
        self.lines = lines
        self.value_lines = value_lines
        self.problems: list[str] = []

    def line(self, path: Path) -> int:
        """The line of ``path``, else of its nearest parent that has one."""
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return 1

    def problem(self, path: Path, message: str) -> None:
        self.problems.append(f"{self.filename}:{self.line(path)}: {message}")

    def document(self, data: dict) -> Block:
        attributes, blocks = self.body("", data, ())
        if self.problems:
            raise RunbookError(self.problems)
        return Block("", (), attributes, blocks, 1)

    def body(self, kind: str, table: dict, path: Path) -> tuple[tuple, tuple]:
        attributes: list[Attribute] = []
        blocks: list[Block] = []
        nested = _BLOCKS.get(kind, ())
        for key, value in table.items():
            at = path + (key,)
            if key in nested or (kind == "" and isinstance(value, dict)):
                blocks.extend(self.blocks(key, value, at))
                continue
            key_lines = ({k: self.line(at + (k,)) for k in value}
                         if isinstance(value, dict) else {})
            line = self.line(at)
            value_line = self.value_lines.get(at, line)
            attributes.append(Attribute(key, value, line, key_lines, value_line))
        return tuple(attributes), tuple(blocks)

    def blocks(self, kind: str, value: object, path: Path) -> list[Block]:
        if kind not in _LABELLED:  # locals, notify: one table
            if not isinstance(value, dict):
                self.problem(path, f"'{kind}' must be a table of fields")
                return []
            attributes, blocks = self.body(kind, value, path)
            return [Block(kind, (), attributes, blocks, self.line(path))]
        if isinstance(value, list):  # [[pipeline.NAME.step]] with name = "..."
            out = []
            for i, item in enumerate(value):
                at = path + (i,)
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or not name:
                    self.problem(at, f"each '{kind}' in a list needs name = \"NAME\"")
                    continue
                rest = {k: v for k, v in item.items() if k != "name"}
                attributes, blocks = self.body(kind, rest, at)
                out.append(Block(kind, (name,), attributes, blocks, self.line(at)))
            return out
        if not isinstance(value, dict):
            self.problem(path, f"'{kind}' must be a table of named {kind} blocks, "
                         f"e.g. [{'.'.join(map(str, path))}.NAME]")
            return []
        out = []
        for name, body in value.items():
            at = path + (name,)
            if not isinstance(body, dict):
                self.problem(at, f"{kind} '{name}' must be a table of fields, "
                             f"e.g. [{'.'.join(map(str, at))}]")
                continue
            attributes, blocks = self.body(kind, body, at)
            out.append(Block(kind, (name,), attributes, blocks, self.line(at)))
        return out


# -- JSON ----------------------------------------------------------------------------------

_JSON_TOKEN = re.compile(
    r'\s*(?:("(?:[^"\\\n]|\\.)*")|([{}\[\],:])|(-?[0-9][0-9.eE+-]*)|([A-Za-z_-][A-Za-z_]*))')


def _load_json(text: str, filename: str) -> tuple[dict, dict, dict]:
    lines = _locate_json(text, filename)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HclSyntaxError(filename, e.lineno, e.colno, f"invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise HclSyntaxError(filename, 1, 1, "a JSON runbook must be an object: {\"queue\": ...}")
    return data, lines, {}


def _locate_json(text: str, filename: str) -> dict:
    """Key path -> line for every key and list item; also refuses what json.loads would
    take but a runbook must not: nesting past MAX_NESTING, duplicate keys, NaN/Infinity,
    numbers too large. Stops quietly at anything else odd: json.loads reports that."""
    starts = _line_starts(text)
    lines: dict = {}
    # frames: [path, is_object, next key or index, keys seen -> line]
    stack: list[list] = []
    expect_key = False
    pos = 0
    n = len(text)

    def where(p: int) -> tuple[int, int]:
        row = bisect_right(starts, p) - 1
        return row + 1, p - starts[row] + 1

    def fail(p: int, message: str) -> HclSyntaxError:
        line, col = where(p)
        return HclSyntaxError(filename, line, col, message)

    def value_starts(p: int) -> None:
        if stack and not stack[-1][1]:  # a list item: record its index
            frame = stack[-1]
            lines[frame[0] + (frame[2],)] = where(p)[0]

    while pos < n:
        m = _JSON_TOKEN.match(text, pos)
        if m is None:
            break
        pos = m.end()
        start = m.start(m.lastindex)
        string, punct, number, word = m.groups()
        if punct in ("{", "["):
            value_starts(start)
            if len(stack) >= MAX_NESTING:
                raise fail(start, f"objects and lists nested more than {MAX_NESTING} deep; "
                           "flatten it")
            parent = stack[-1] if stack else None
            path = () if parent is None else parent[0] + (parent[2],)
            stack.append([path, punct == "{", 0 if punct == "[" else None, {}])
            expect_key = punct == "{"
        elif punct in ("}", "]"):
            if not stack:
                break
            stack.pop()
            expect_key = False
        elif punct == ",":
            if stack and stack[-1][1]:
                expect_key = True
            elif stack:
                stack[-1][2] += 1
        elif punct == ":":
            expect_key = False
        elif string is not None and expect_key and stack:
            try:
                key = json.loads(string)
            except ValueError:
                break
            frame = stack[-1]
            line = where(start)[0]
            if key in frame[3]:
                raise fail(start, f"key '{key}' is already set at line {frame[3][key]}")
            frame[3][key] = line
            frame[2] = key
            lines[frame[0] + (key,)] = line
        else:
            value_starts(start)
            if number is not None and not _finite(number):
                raise fail(start, f"number '{number[:20]}' is too large")
            if word in ("NaN", "Infinity", "-Infinity"):
                raise fail(start, f"'{word}' is not JSON; quote it if it is text")
    return lines


def _finite(number: str) -> bool:
    digits = number.lstrip("-")
    if len(digits) > 4000:
        return False
    try:
        return math.isfinite(float(number))
    except ValueError:
        return True  # not a number at all: json.loads reports it


# -- TOML ----------------------------------------------------------------------------------

_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_AT_EOF = re.compile(r"\(at end of document\)")
_BLANK = re.compile(r"[ \t\r\n]*")
_INLINE_BLANK = re.compile(r"[ \t]*")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_KEY_PART = re.compile(r"""[ \t]*(?:([A-Za-z0-9_-]+)|"((?:[^"\\\n]|\\.)*)"|'([^'\n]*)')[ \t]*""")


def _load_toml(text: str, filename: str) -> tuple[dict, dict, dict]:
    import tomllib  # lazy: ~5 ms that only TOML runbooks need, on every parse

    lines, value_lines = _locate_toml(text, filename)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        m = _TOML_AT.search(message)
        line, col = (int(m.group(1)), int(m.group(2))) if m else (text.count("\n") + 1, 1)
        message = _TOML_AT_EOF.sub("", _TOML_AT.sub("", message)).strip()
        raise HclSyntaxError(filename, line, col, f"invalid TOML: {message}") from None
    except ValueError:  # int() refuses more than 4300 digits
        m = re.search(r"[0-9_]{4000}", text)
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        raise HclSyntaxError(filename, line, 1, "number is too large; quote it if it is "
                             "text") from None
    except RecursionError:  # the scan above bounds nesting; this is a last resort
        raise HclSyntaxError(filename, 1, 1, f"nested more than {MAX_NESTING} deep; "
                             "flatten it") from None
    _refuse_non_finite(data, lines, filename)
    return data, lines, value_lines


def _refuse_non_finite(data: dict, lines: dict, filename: str) -> None:
    todo: list[tuple[Path, object]] = [((), data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, dict):
            todo.extend((path + (k,), v) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((path + (i,), v) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            at = path
            while at and at not in lines:
                at = at[:-1]
            raise HclSyntaxError(filename, lines.get(at, 1), 1,
                                 f"'{value}' is not a usable number in a runbook")


def _locate_toml(text: str, filename: str) -> tuple[dict, dict]:
    """Key path -> line of every table header and key, and the first line of multi-line
    string values; refuses arrays and inline tables nested past MAX_NESTING."""
    starts = _line_starts(text)
    lines: dict = {}
    value_lines: dict = {}
    arrays: dict[Path, int] = {}  # array-of-tables path -> index of its last table
    table: Path = ()
    pos, n = 0, len(text)

    def line_of(p: int) -> int:
        return bisect_right(starts, p)

    def resolve(keys: tuple) -> Path:
        """Header keys to a data path: an array of tables stands for its last table."""
        path: Path = ()
        for key in keys:
            path += (key,)
            if path in arrays:
                path += (arrays[path],)
        return path

    while pos < n:
        # the start of a logical line
        m = _BLANK.match(text, pos)
        pos = m.end()
        if pos >= n:
            break
        c = text[pos]
        if c == "#":
            pos = _eol(text, pos)
            continue
        if c == "[":
            double = text.startswith("[[", pos)
            keys, end = _keys(text, pos + (2 if double else 1))
            if keys is None:
                break
            if double:
                base = resolve(keys[:-1]) + (keys[-1],)
                arrays[base] = arrays.get(base, -1) + 1
                lines.setdefault(base, line_of(pos))
                table = base + (arrays[base],)
            else:
                table = resolve(keys)
            for i in range(1, len(table)):  # [pipeline.p.locals] alone places pipeline.p
                lines.setdefault(table[:i], line_of(pos))
            lines[table] = line_of(pos)
            pos = _eol(text, end)
            continue
        keys, end = _keys(text, pos)
        if keys is None or not text.startswith("=", end):
            break  # tomllib reports it
        path = table + tuple(keys)
        for i in range(len(table) + 1, len(path)):  # a.b = 1 places a too
            lines.setdefault(path[:i], line_of(pos))
        lines[path] = line_of(pos)
        vstart = _INLINE_BLANK.match(text, end + 1).end()
        if text.startswith(('"""\n', "'''\n", '"""\r\n', "'''\r\n"), vstart):
            value_lines[path] = line_of(pos) + 1
        pos = _skip_value(text, vstart, lambda p: HclSyntaxError(
            filename, line_of(p), 1, f"arrays and inline tables nested more than "
            f"{MAX_NESTING} deep; flatten it"))
    return lines, value_lines


def _keys(text: str, pos: int) -> tuple[list | None, int]:
    """A dotted key at ``pos``; returns its parts and the index after it (and after a
    closing ``]``/``]]`` when there is one)."""
    keys = []
    while True:
        m = _KEY_PART.match(text, pos)
        if m is None or m.end() == pos:
            return None, pos
        bare, basic, literal = m.groups()
        keys.append(bare if bare is not None else
                    _unescape(basic) if basic is not None else literal)
        pos = m.end()
        if text.startswith(".", pos):
            pos += 1
            continue
        if text.startswith("]]", pos):
            return keys, pos + 2
        if text.startswith("]", pos):
            return keys, pos + 1
        return keys, pos


def _unescape(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s


def _skip_value(text: str, pos: int, too_deep) -> int:
    """The index after the value starting at ``pos`` (which may span lines)."""
    n = len(text)
    depth = 0
    while pos < n:
        c = text[pos]
        if text.startswith('"""', pos) or text.startswith("'''", pos):
            quote = text[pos : pos + 3]
            end = text.find(quote, pos + 3)
            while quote == '"""' and end > 0 and _escaped(text, end):
                end = text.find(quote, end + 1)
            if end < 0:
                return n
            pos = end + 3
            while text.startswith(quote[0], pos):  # up to two quotes may end the string
                pos += 1
            continue
        if c == '"':
            m = _BASIC_STRING.match(text, pos)
            pos = m.end() if m else _eol(text, pos)
            continue
        if c == "'":
            end = text.find("'", pos + 1)
            pos = end + 1 if end > 0 else _eol(text, pos)
            continue
        if c == "#":  # a comment runs to the end of the line, which may end the value
            pos = _eol(text, pos)
            if depth <= 0:
                return pos
            continue
        if c in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise too_deep(pos)
        elif c in "]}":
            depth -= 1
        elif c == "\n" and depth <= 0:
            return pos + 1
        pos += 1
    return n


def _escaped(text: str, pos: int) -> bool:
    count = 0
    while pos > 0 and text[pos - 1] == "\\":
        count += 1
        pos -= 1
    return count % 2 == 1


def _eol(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end + 1


def _line_starts(text: str) -> list[int]:
    starts = [0]
    i = text.find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts
