"""A small parser for the subset of HCL that oj runbooks use.

Supported: attributes (``name = value``), blocks with zero or more labels
(``type "label" { ... }``), the three comment styles, and literal values only:
quoted strings, heredocs (``<<ID`` / ``<<-ID``), numbers, ``true``/``false``/``null``,
lists and objects. Template sequences (``${...}``, ``%{...}``, ``$${``) are kept
verbatim in strings; oj's template engine renders them later. Heredoc bodies reach
the value byte-for-byte. Every node carries its 1-based source line, and every error
is an :class:`HclSyntaxError` that renders as ``file:line:column: message``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

__all__ = ["MAX_NESTING", "Attribute", "Block", "HclSyntaxError", "parse"]

# Blocks, lists, objects and ``${...}`` sequences nest at most this deep: real runbooks use a
# handful of levels, and the bound keeps a hostile file from exhausting Python's stack.
MAX_NESTING = 32


class HclSyntaxError(Exception):
    """A syntax error at ``filename:line:column``; ``str()`` is the one-line report."""

    def __init__(self, filename: str, line: int, column: int, message: str) -> None:
        self.filename = filename
        self.line = line
        self.column = column
        self.message = message
        super().__init__(f"{filename}:{line}:{column}: {message}")

    def __reduce__(self):  # keep pickling working despite the 4-argument constructor
        return (type(self), (self.filename, self.line, self.column, self.message))


@dataclass(frozen=True)
class Attribute:
    """``name = value``; ``key_lines`` maps each top-level key of an object value to its line;
    ``value_line`` is where the value's text starts (a heredoc's first line), 0 for ``line``."""

    name: str
    value: object
    line: int
    key_lines: dict = field(default_factory=dict)
    value_line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Block:
    """``type "label" ... { body }``; the document itself is a Block with type ``""``."""

    type: str
    labels: tuple[str, ...]
    attributes: tuple[Attribute, ...]
    blocks: tuple[Block, ...]
    line: int

    def attribute(self, name: str) -> Attribute | None:
        """The attribute called ``name`` in this body, or None."""
        for attr in self.attributes:
            if attr.name == name:
                return attr
        return None


def parse(text: str, filename: str = "<string>") -> Block:
    """Parse a whole file; returns a Block with type "" and no labels as the document body."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    parser = _Parser(text, filename)
    attributes, blocks = parser.body(None, "")
    return Block("", (), attributes, blocks, 1)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NUMBERISH = re.compile(r"-?[A-Za-z0-9_.+-]+")
_REFERENCE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*|\.[0-9]+|\[[^\]\n]*\])*"
)
_WS_INLINE = re.compile(r"(?:[ \t\r\f\v]+|#[^\n]*|//[^\n]*|/\*.*?\*/)*", re.S)
_WS_ALL = re.compile(r"(?:[ \t\r\n\f\v]+|#[^\n]*|//[^\n]*|/\*.*?\*/)*", re.S)
_STRING_SPECIAL = re.compile(r'["\\\n$%]')
_TEMPLATE_SPECIAL = re.compile(r'[{}"\n]')
_HEREDOC_START = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_OPERATOR = re.compile(r"==|!=|<=|>=|&&|\|\||[-+*/%<>!?]")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_LITERALS = {"true": True, "false": False, "null": None}
_VALUE_KINDS = "a quoted string, number, true/false/null, list, object or heredoc"


class _Parser:
    __slots__ = ("text", "filename", "n", "pos", "depth", "_line_starts")

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.n = len(text)
        self.pos = 0
        self.depth = 0
        self._line_starts: list[int] | None = None

    def enter(self, pos: int, what: str) -> None:
        """One level deeper (left again by ``self.depth -= 1``); refuses past MAX_NESTING."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(pos, f"{what} nested more than {MAX_NESTING} deep; flatten it")

    # -- positions and errors ------------------------------------------------------------

    def _index(self, pos: int) -> tuple[int, int]:
        starts = self._line_starts
        if starts is None:
            starts = [0]
            text = self.text
            i = text.find("\n")
            while i >= 0:
                starts.append(i + 1)
                i = text.find("\n", i + 1)
            self._line_starts = starts
        row = bisect_right(starts, pos) - 1
        return row + 1, pos - starts[row] + 1

    def line(self, pos: int) -> int:
        return self._index(pos)[0]

    def error(self, pos: int, message: str) -> HclSyntaxError:
        line, column = self._index(min(pos, self.n))
        return HclSyntaxError(self.filename, line, column, message)

    def describe(self, pos: int) -> str:
        """A short name for what is at ``pos``, for "found ..." messages."""
        if pos >= self.n:
            return "end of file"
        c = self.text[pos]
        if c == "\n":
            return "end of line"
        m = _IDENT.match(self.text, pos)
        if m is not None:
            return f"'{m.group()}'"
        return '"\'"' if c == "'" else f"'{c}'"

    def unexpected(self, pos: int, expected: str) -> HclSyntaxError:
        m = _OPERATOR.match(self.text, pos)
        if m is not None:
            return self.error(
                pos,
                f"operator '{m.group()}' is not supported; runbook values are literals "
                '(put expressions inside a "${...}" template string)',
            )
        return self.error(pos, f"{expected}, found {self.describe(pos)}")

    # -- whitespace ----------------------------------------------------------------------

    def skip_inline(self, pos: int) -> int:
        """Skip spaces and comments on the current line (a /* */ comment may span lines)."""
        end = _WS_INLINE.match(self.text, pos).end()
        if self.text.startswith("/*", end):
            raise self.error(end, "unterminated comment: '/*' has no closing '*/'")
        return end

    def skip_all(self, pos: int) -> int:
        """Skip spaces, newlines and comments."""
        end = _WS_ALL.match(self.text, pos).end()
        if self.text.startswith("/*", end):
            raise self.error(end, "unterminated comment: '/*' has no closing '*/'")
        return end

    def end_item(self, in_block: bool, what: str) -> None:
        """After a body item: require a newline, end of file, or the closing '}' of a block."""
        text = self.text
        start = self.pos
        end = self.skip_inline(start)
        if (
            end >= self.n
            or text[end] == "\n"
            or (in_block and text[end] == "}")
            or "\n" in text[start:end]
        ):
            self.pos = end
            return
        raise self.unexpected(end, f"expected a newline after {what}")

    # -- bodies and blocks ---------------------------------------------------------------

    def body(
        self, open_pos: int | None, header: str
    ) -> tuple[tuple[Attribute, ...], tuple[Block, ...]]:
        text = self.text
        n = self.n
        attributes: list[Attribute] = []
        blocks: list[Block] = []
        seen: dict[str, int] = {}
        in_block = open_pos is not None
        if open_pos is not None:
            self.enter(open_pos, "blocks")
        while True:
            pos = self.skip_all(self.pos)
            if pos >= n:
                if open_pos is not None:
                    raise self.error(open_pos, f"block {header} is never closed; add a '}}'")
                self.pos = pos
                break
            c = text[pos]
            if c == "}":
                if in_block:
                    self.pos = pos + 1
                    self.depth -= 1
                    break
                raise self.error(pos, "unexpected '}' with no open block; remove it")
            m = _IDENT.match(text, pos)
            if m is None:
                raise self.error(
                    pos,
                    f"unexpected {self.describe(pos)}; expected an attribute name or a block type",
                )
            name = m.group()
            after = self.skip_inline(m.end())
            c = text[after] if after < n else ""
            if c == "=" and not text.startswith("==", after):
                line = self.line(pos)
                if name in seen:
                    raise self.error(pos, f"attribute '{name}' is already set at line {seen[name]}")
                seen[name] = line
                vpos = self.skip_inline(after + 1)
                value_line = line + text.startswith("<<", vpos)  # a heredoc starts below
                if text.startswith("{", vpos):
                    value, key_lines = self.object(vpos)
                else:
                    value = self.value(vpos, f"'{name} ='")
                    key_lines = {}
                attributes.append(Attribute(name, value, line, key_lines, value_line))
                self.end_item(in_block, f"the value of '{name}'")
            elif c == '"' or c == "{" or (c and _IDENT.match(c)):
                blocks.append(self.block(pos, name, after, in_block))
            else:
                hint = f", found {self.describe(after)}" if c not in ("", "\n") else ""
                raise self.error(pos, f"expected '=' after attribute name '{name}'{hint}")
        return tuple(attributes), tuple(blocks)

    def block(self, type_pos: int, type_: str, pos: int, in_block: bool) -> Block:
        text = self.text
        labels: list[str] = []
        while True:
            pos = self.skip_inline(pos)
            c = text[pos] if pos < self.n else ""
            if c == "{":
                break
            if c == '"':
                labels.append(self.string(pos))
                pos = self.pos
                continue
            m = _IDENT.match(text, pos)
            if m is not None:
                labels.append(m.group())
                pos = m.end()
                continue
            if len(labels) == 1 and c in ("", "\n"):
                raise self.error(type_pos, f"expected '=' after attribute name '{type_}'")
            header = _header(type_, labels)
            raise self.unexpected(pos, f"expected '{{' to open block {header}")
        header = _header(type_, labels)
        line = self.line(type_pos)
        self.pos = pos + 1
        attributes, blocks = self.body(pos, header)
        result = Block(type_, tuple(labels), attributes, blocks, line)
        self.end_item(in_block, f"block {header}")
        return result

    # -- values --------------------------------------------------------------------------

    def value(self, pos: int, after: str = "") -> object:
        text = self.text
        n = self.n
        c = text[pos] if pos < n else ""
        if c == '"':
            return self.string(pos)
        if c == "[":
            return self.list(pos)
        if c == "{":
            return self.object(pos)[0]
        if c == "<" and text.startswith("<<", pos):
            return self.heredoc(pos)
        if c == "-" or "0" <= c <= "9":
            return self.number(pos)
        m = _IDENT.match(text, pos)
        if m is not None:
            word = m.group()
            end = m.end()
            nxt = text[end] if end < n else ""
            if word in _LITERALS:
                self.pos = end
                return _LITERALS[word]
            if nxt == "(":
                raise self.error(
                    pos,
                    f"function calls are not supported: '{word}(...)'; runbook values are literals",
                )
            if word == "for" and nxt in (" ", "\t"):
                raise self.error(pos, "'for' expressions are not supported")
            if nxt in (".", "["):
                ref = _REFERENCE.match(text, pos).group()
                raise self.error(
                    pos,
                    f"reference '{ref}' is not a value; use a template string: \"${{{ref}}}\"",
                )
            raise self.error(pos, f"bare word '{word}' is not a value; quote it: \"{word}\"")
        if c in ("", "\n"):
            where = f" after {after}" if after else ""
            raise self.error(
                pos, f"expected a value{where} ({_VALUE_KINDS}), found {self.describe(pos)}"
            )
        raise self.unexpected(pos, f"expected a value ({_VALUE_KINDS})")

    def number(self, pos: int) -> int | float:
        text = self.text
        m = _NUMBER.match(text, pos)
        end = m.end() if m is not None else pos
        if m is None or (end < self.n and (text[end].isalnum() or text[end] in "_.")):
            if m is None and not text[pos + 1 : pos + 2].isalnum():
                raise self.unexpected(pos, f"expected a value ({_VALUE_KINDS})")
            word = _NUMBERISH.match(text, pos).group()
            raise self.error(pos, f"'{word}' is not a number; quote it: \"{word}\"")
        s = m.group()
        try:  # int() refuses more than 4300 digits; a float that large is infinite
            value = float(s) if m.group(1) or m.group(2) else int(s)
        except ValueError:
            value = float("inf")
        if value in (float("inf"), float("-inf")):
            short = s if len(s) <= 20 else s[:17] + "..."
            raise self.error(pos, f"number '{short}' is too large; quote it if it is text")
        self.pos = end
        return value

    def list(self, open_pos: int) -> list:
        text = self.text
        n = self.n
        items: list = []
        pos = open_pos + 1
        self.enter(open_pos, "lists and objects")
        while True:
            pos = self.skip_all(pos)
            if pos >= n:
                raise self.error(open_pos, "list is never closed; add a ']'")
            if text[pos] == "]":
                self.pos = pos + 1
                self.depth -= 1
                return items
            items.append(self.value(pos))
            end = self.pos
            pos = self.skip_all(end)
            if pos >= n:
                raise self.error(open_pos, "list is never closed; add a ']'")
            c = text[pos]
            if c == ",":
                pos += 1
            elif c != "]":
                if "\n" in text[end:pos] and _IDENT.match(text, pos):
                    raise self.error(
                        open_pos,
                        f"list is never closed; add a ']' "
                        f"(found {self.describe(pos)} at line {self.line(pos)})",
                    )
                raise self.unexpected(pos, "expected ',' or ']' after a list item")

    def object(self, open_pos: int) -> tuple[dict, dict]:
        text = self.text
        n = self.n
        obj: dict = {}
        key_lines: dict = {}
        pos = open_pos + 1
        self.enter(open_pos, "lists and objects")
        while True:
            pos = self.skip_all(pos)
            if pos >= n:
                raise self.error(open_pos, "object is never closed; add a '}'")
            c = text[pos]
            if c == "}":
                self.pos = pos + 1
                self.depth -= 1
                return obj, key_lines
            key_pos = pos
            if c == '"':
                key = self.string(pos)
                pos = self.pos
            else:
                m = _IDENT.match(text, pos)
                if m is None:
                    raise self.unexpected(
                        pos, "expected an object key (a name or a quoted string) or '}'"
                    )
                key = m.group()
                pos = m.end()
                if key == "for" and text[pos : pos + 1] in (" ", "\t"):
                    raise self.error(key_pos, "'for' expressions are not supported")
            pos = self.skip_inline(pos)
            c = text[pos] if pos < n else ""
            if c not in ("=", ":") or text.startswith("==", pos):
                hint = f", found {self.describe(pos)}" if c not in ("", "\n") else ""
                raise self.error(key_pos, f"expected '=' after object key '{key}'{hint}")
            if key in obj:
                raise self.error(key_pos, f"key '{key}' is already set at line {key_lines[key]}")
            key_lines[key] = self.line(key_pos)
            obj[key] = self.value(self.skip_inline(pos + 1), f"'{key} ='")
            end = self.pos
            pos = self.skip_inline(end)
            c = text[pos] if pos < n else ""
            if c == ",":
                pos += 1
            elif c not in ("}", "\n", "") and "\n" not in text[end:pos]:
                raise self.unexpected(pos, "expected ',' or a newline between object items")

    def string(self, start: int) -> str:
        """A quoted string at ``start``: escapes processed, template sequences verbatim."""
        text = self.text
        search = _STRING_SPECIAL.search
        out: list[str] = []
        i = start + 1
        while True:
            m = search(text, i)
            if m is None or m.group() == "\n":
                raise self.error(
                    start,
                    "unterminated string; close it with '\"' on the same line "
                    "(use a heredoc for multi-line text)",
                )
            j = m.start()
            if j > i:
                out.append(text[i:j])
            c = m.group()
            if c == '"':
                self.pos = j + 1
                return "".join(out)
            if c == "\\":
                e = text[j + 1 : j + 2]
                simple = _ESCAPES.get(e)
                if simple is not None:
                    out.append(simple)
                    i = j + 2
                    continue
                if e == "u" or e == "U":
                    width = 4 if e == "u" else 8
                    digits = text[j + 2 : j + 2 + width]
                    if len(digits) == width and _HEX.fullmatch(digits):
                        code = int(digits, 16)
                        if code <= 0x10FFFF:
                            out.append(chr(code))
                            i = j + 2 + width
                            continue
                    raise self.error(
                        j, f"invalid escape '\\{e}{digits}': '\\{e}' takes {width} hex digits"
                    )
                if e in ("", "\n"):
                    i = j + 1
                    continue  # the search reports the unterminated string
                raise self.error(
                    j, f"invalid escape '\\{e}' in string; write '\\\\' for a backslash"
                )
            # '$' or '%': '$${' / '%%{' stay as written, '${' / '%{' are copied verbatim.
            if text.startswith(c + "{", j + 1):
                out.append(text[j : j + 3])
                i = j + 3
            elif text.startswith("{", j + 1):
                end = self.template(j)
                out.append(text[j:end])
                i = end
            else:
                out.append(c)
                i = j + 1

    def template(self, start: int) -> int:
        """Skip a ``${...}`` / ``%{...}`` sequence at ``start``; returns the index after '}'."""
        text = self.text
        search = _TEMPLATE_SPECIAL.search
        depth = 0
        i = start + 1
        self.enter(start, "template sequences")
        while True:
            m = search(text, i)
            if m is None or m.group() == "\n":
                raise self.error(
                    start, f"unclosed '{text[start : start + 2]}' in string; close it with '}}'"
                )
            j = m.start()
            c = m.group()
            if c == "{":
                depth += 1
                i = j + 1
            elif c == "}":
                depth -= 1
                i = j + 1
                if depth == 0:
                    self.depth -= 1
                    return i
            else:
                i = self.nested_string(j, start)

    def nested_string(self, start: int, template_start: int) -> int:
        """Skip a quoted string inside a template sequence; returns the index after it.

        Running off the line most likely means the template lacks its '}' and this quote
        was meant to close the outer string, so that is what gets reported.
        """
        text = self.text
        search = _STRING_SPECIAL.search
        i = start + 1
        while True:
            m = search(text, i)
            if m is None or m.group() == "\n":
                opener = self.text[template_start : template_start + 2]
                raise self.error(
                    template_start, f"unclosed '{opener}' in string; close it with '}}'"
                )
            j = m.start()
            c = m.group()
            if c == '"':
                return j + 1
            if c == "\\":
                i = j + 1 if text[j + 1 : j + 2] in ("", "\n") else j + 2
            elif text.startswith(c + "{", j + 1):
                i = j + 3
            elif text.startswith("{", j + 1):
                i = self.template(j)
            else:
                i = j + 1

    def heredoc(self, start: int) -> str:
        """A heredoc at ``start`` (``<<ID`` or ``<<-ID``); the body is taken byte-for-byte."""
        text = self.text
        n = self.n
        m = _HEREDOC_START.match(text, start)
        if m is None:
            raise self.error(start, "expected a heredoc marker after '<<', e.g. <<EOF")
        marker = m.group(2)
        opener = f"<<{m.group(1)}{marker}"
        pos = m.end()
        if pos < n and text[pos] != "\n":
            raise self.error(pos, f"expected a newline after heredoc marker '{opener}'")
        lines: list[str] = []
        i = pos + 1
        while True:
            if i >= n:
                raise self.error(
                    start, f"unterminated heredoc '{opener}': no closing '{marker}' line"
                )
            j = text.find("\n", i)
            if j < 0:
                j = n
            line = text[i:j]
            if line.strip() == marker:
                self.pos = j
                break
            lines.append(line)
            i = j + 1
        if not lines:
            return ""
        if m.group(1):
            widths = [len(s) - len(s.lstrip(" \t")) for s in lines if s.strip()]
            cut = min(widths, default=0)
            lines = [s[cut:] if s.strip() else "" for s in lines]
        return "\n".join(lines) + "\n"


def _header(type_: str, labels: list[str]) -> str:
    return "'" + " ".join([type_] + [f'"{label}"' for label in labels]) + "'"
