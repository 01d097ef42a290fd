"""Quoting values for bash by where they land: a small lexer of bash's quoting contexts.

`ShellLexer` follows a script as it is fed, piece by piece, and knows which context the text so
far ends in: unquoted, '...', "...", $'...', $(...), backticks, $((...)), ${...}, heredoc bodies,
comments. `insert` quotes a value for that context, then lexes the quoted text to check the
value did not change the state; a value it cannot place safely raises `UnsafeValue`.
"""

from __future__ import annotations

import re

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
# `${name` then an operator whose operand is a word or pattern, not arithmetic
_PARAM_WORD = re.compile(
    r"[#!]?(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])(?:\[[^\]]*\])?"
    r"(?::?[-+=?]|##?|%%?|//?|/#|/%|\^\^?|,,?|@)"
)
_BS_NEWLINE = re.compile(r"(?<!\\)((?:\\\\)*\\)\n")


class UnsafeValue(ValueError):
    """A value cannot be placed at this point of the script without the risk of becoming code.

    The message names the value as `${ref}`, `ref` being the label it was inserted with.
    """


def _sq(value: str) -> str:
    # Always quoted, even for "safe" text: a bare `case` or `A=b` would be a keyword/assignment.
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _dq(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


def _bs(value: str) -> str:
    # Backslash-escape what stays special in an unquoted heredoc body and inside backticks
    # (bash finds the closing backtick before parsing the inside; these escapes survive that).
    return value.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


_BREAK = frozenset(" \t\n;&|()<>")
_CMD_SEP = frozenset("\n;&|()")
_RESERVED = frozenset(["if", "then", "else", "elif", "do", "while", "until", "time", "!", "{"])
_CONTINUING = ("top", "cmd", "bt", "arith", "param", "dq", "hd")  # backslash-newline dropped
_UNQUOTED = ("top", "cmd", "bt")  # where words, comments and heredoc operators exist


class _Frame:
    __slots__ = (
        "kind", "depth", "dq", "word", "cmdpos", "cases",
        "delim", "strip", "line", "value_ref", "bs",
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
        self.bs = False  # bt: a backslash waits for the next char


class _HdWord:
    """A heredoc delimiter word being read: any quoting in it makes the body literal."""

    __slots__ = ("raw", "quoted", "strip", "quote", "esc")

    def __init__(self, strip: bool) -> None:
        self.raw = ""
        self.quoted = False
        self.strip = strip  # `<<-`: leading tabs are stripped from body lines
        self.quote = ""
        self.esc = False


class ShellLexer:
    """Tracks where in bash's grammar the text fed so far ends. Best effort, but errs to quoting."""

    def __init__(self) -> None:
        self.frames = [_Frame("top")]
        self.escape = False  # a backslash escapes the next char
        self.dollar = False
        self.prev = "\n"
        self.held = False  # a backslash that may start a line continuation
        self.lt = 0  # run of `<`
        self.hd_word: _HdWord | None = None  # reading a heredoc delimiter
        # (frame whose next newline starts the body, delimiter, quoted, strip tabs)
        self.hd_pending: list[tuple[_Frame, str, bool, bool]] = []
        # Set where the lexer cannot follow bash (e.g. a heredoc inside a heredoc body): values
        # are refused from then on, or while `confused_frame` is open.
        self.confused = ""
        self.confused_frame: _Frame | None = None
        self.heredoc: _Frame | None = None

    def insert(self, value: str, ref: str) -> str:
        """`value` quoted for the point the script has reached, and lexed as part of it.

        `ref` names the value in error messages. Raises UnsafeValue when the value cannot go here.
        """
        piece = self._quote(value, ref)
        before = self._signature()
        self.feed(piece, ref=ref)
        if self._signature() != before or self._pending():
            raise UnsafeValue(f"${{{ref}}}: cannot insert this value safely at this point")
        return piece

    # state checks ---------------------------------------------------------------------

    def _signature(self) -> tuple[object, ...]:
        """What an inserted value must leave unchanged (`'\\''` may reopen an equal frame)."""
        frames = tuple((f.kind, f.depth, f.dq, f.delim) for f in self.frames)
        return frames, len(self.hd_pending)

    def _pending(self) -> bool:
        return bool(
            self.escape
            or self.held
            or self.dollar
            or self.lt
            or self.hd_word is not None
            or any(f.bs for f in self.frames)
        )

    def _quote(self, value: str, ref: str) -> str:
        f = self.frames[-1]
        k = f.kind
        if self.confused and (self.confused_frame is None or self.confused_frame in self.frames):
            raise UnsafeValue(
                f"${{{ref}}}: cannot tell how the shell reads this point ({self.confused}); "
                "put the value in a variable earlier in the script"
            )
        if self.hd_word is not None or self.lt == 2 or self.dollar:
            raise UnsafeValue(f"${{{ref}}}: a value cannot be a heredoc delimiter or follow $")
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
                raise UnsafeValue(f"${{{ref}}}: heredoc delimiter must not contain $")
            out = "$()" + _bs(value).replace("\n", "\n$()")
        elif k == "hdq":
            out = value
        elif k == "param" and f.dq:
            if "'" in value:
                raise UnsafeValue(
                    f"${{{ref}}}: a value with ' cannot go inside a quoted ${{...}}; "
                    "assign it to a variable first"
                )
            out = _dq(value).replace("}", "\\}")
        else:
            out = _sq(value)
        if any(
            fr.kind == "arith" or (fr.kind == "param" and not _PARAM_WORD.match(fr.line))
            for fr in self.frames
        ):
            # Bash expands $((...)) like "..." and then evaluates `a[$(cmd)]` in the result;
            # so do ${x:offset} and ${a[index]}. Only a plain integer is data there.
            if not _INT.fullmatch(value):
                shown = value if len(value) <= 40 else value[:37] + "..."
                raise UnsafeValue(
                    f"${{{ref}}} is used in shell arithmetic and must be an integer, got {shown!r}"
                )
            out = value
        elif self.heredoc is not None and self.heredoc.kind == "hd" and k != "hd":
            # Lines of an unquoted heredoc body are read before parsing, joining at an odd
            # run of backslashes before a newline, even inside '...': break such runs up.
            out = _BS_NEWLINE.sub("\\1''\n", out)
        for frame in reversed(self.frames):
            if frame.kind == "bt":
                out = _bs(out)
        if self.held or any(fr.bs for fr in self.frames):
            out = "\n" + out  # the template's backslash before `${`: a line continuation
        elif self.escape:  # ... or, in $'...', a literal backslash
            out = "\\" + out
        return out

    # lexing ------------------------------------------------------------------------------

    def feed(self, text: str, ref: str | None = None) -> None:
        """Lex `text`; `ref` names the reference when the text is an inserted value."""
        for c in text:
            if not self._track(c, ref):
                self._char(c)

    def _push(self, kind: str, depth: int = 0, dq: bool = False) -> _Frame:
        f = _Frame(kind, depth, dq)
        self.frames.append(f)
        return f

    def _confuse(self, reason: str, frame: _Frame | None = None) -> None:
        if not self.confused or self.confused_frame is not None:
            self.confused, self.confused_frame = reason, frame

    def _pop_to(self, frame: _Frame) -> None:
        while True:
            top = self.frames.pop()
            if top is self.heredoc:
                self.heredoc = None
            if any(p[0] is top for p in self.hd_pending):
                self._confuse("a heredoc opened inside a substitution that closes on its line")
            if top is frame:
                break
        self.escape = self.held = self.dollar = False
        self.lt = 0

    def _track(self, c: str, ref: str | None) -> bool:
        """Heredoc bodies end at a delimiter line, found on the raw lines before any parsing.

        True when `c` is the newline of the delimiter line (it ends the body, nothing else).
        """
        hd = self.heredoc
        if hd is None:
            return False
        if c != "\n":
            hd.line += c
            if ref is not None:
                hd.value_ref = ref
            return False
        if hd.kind == "hd" and (len(hd.line) - len(hd.line.rstrip("\\"))) % 2:
            hd.line = hd.line[:-1]  # backslash-newline joins lines in an unquoted heredoc
            return False
        if (hd.line.lstrip("\t") if hd.strip else hd.line) != hd.delim:
            hd.line = ""
            hd.value_ref = ref  # a value's newline starts this line
            return False
        if hd.value_ref is not None:
            raise UnsafeValue(
                f"${{{hd.value_ref}}}: the value would end the heredoc <<{hd.delim} early"
            )
        self._pop_to(hd)
        self.heredoc = None
        self.prev = "\n"
        if self.hd_pending and self.hd_pending[0][0] is self.frames[-1]:
            self._start_heredoc()  # several heredocs on one line: bodies follow one another
        return True

    def _char(self, c: str, level: int = 0) -> None:
        """Pass `c` through the backtick levels: bash finds the end of `...` first, turning
        \\\\ \\` \\$ into \\ ` $, and parses the inside afterwards."""
        bts = [f for f in self.frames if f.kind == "bt"]
        if level < len(bts):
            bt = bts[level]
            if bt.bs:
                bt.bs = False
                if c not in "\\`$":
                    self._char("\\", level + 1)
                self._char(c, level + 1)
            elif c == "\\":
                bt.bs = True
            elif c == "`":  # the end of this level, whatever is open inside it
                self._pop_to(bt)
                self.prev = "a"
            else:
                self._char(c, level + 1)
            return
        if self.held:
            self.held = False
            if c == "\n":  # backslash-newline: bash drops both before reading on
                return
            self._inner("\\")
        elif c == "\\" and not self.escape and self.frames[-1].kind in _CONTINUING:
            self.held = True
            return
        self._inner(c)

    def _inner(self, c: str) -> None:
        if self.hd_word is not None:
            if self._hd_word_char(c):
                return
        elif self.lt and c != "<":
            run, self.lt = self.lt, 0
            if run == 2 and self.heredoc is not None:
                # bash parses the body later, on its own; a heredoc in there is beyond us
                self._confuse("a heredoc inside a heredoc body", self.heredoc)
            elif run == 2:  # `<<` (not `<<<`): a heredoc delimiter word follows
                self.hd_word = _HdWord(strip=c == "-")
                if c == "-" or self._hd_word_char(c):
                    return
        self._dispatch(c)

    def _dispatch(self, c: str) -> None:
        f = self.frames[-1]
        k = f.kind
        prev, self.prev = self.prev, c
        if k == "param":
            f.line += c
        if self.escape:
            self.escape = False
            self.prev = "a"
            return
        if self.dollar:
            self.dollar = False
            if c == "$":  # `$$`, the pid
                self.prev = "a"
                return
            if c == "(":
                self._push("cmd", depth=1)
                return
            if c == "{":
                self._push("param", dq=k in ("dq", "hd") or (k == "param" and f.dq))
                return
            if c == "[":  # `$[...]`, old arithmetic
                self._push("arith", depth=1).delim = "]"
                return
            if c == "'" and (k in ("top", "cmd", "bt", "arith") or (k == "param" and not f.dq)):
                self._push("ansi")
                return
        if k == "comment":
            if c == "\n":
                self.frames.pop()
                self.prev = prev
                self._dispatch(c)
            return
        if k == "sq":
            if c == "'":
                self.frames.pop()
            return
        if k == "ansi":
            if c == "\\":
                self.escape = True
            elif c == "'":
                self.frames.pop()
            return
        if k == "hdq":
            return
        # the expanding kinds: top cmd arith bt param dq hd
        if c in "\\$`":
            self._word(f, c)
            if c == "\\":
                self.escape = True
            elif c == "$":
                self.dollar = True
            else:
                self._push("bt")
            return
        if k == "dq":
            if c == '"':
                self.frames.pop()
            return
        if k == "hd":
            return
        if k == "param":
            if c == "}":
                self.frames.pop()
                self.prev = "a"
            elif c == "'" and not f.dq:  # inside "...", bash keeps ${x:-'..'} quotes literal
                self._push("sq")
            elif c == '"':
                self._push("dq")
            return
        if k == "arith":
            opener, closer = ("[", "]") if f.delim else ("(", ")")
            if c == "'":
                self._push("sq")
            elif c == '"':
                self._push("dq")
            elif c == opener:
                f.depth += 1
            elif c == closer:
                f.depth -= 1
                if f.depth == 0:
                    self._pop_to(f)
                    self.prev = "a"
            return
        # unquoted: top cmd bt
        self._word(f, c)
        if c == "'":
            self._push("sq")
        elif c == '"':
            self._push("dq")
        elif c == "(":
            if prev in "<>":  # process substitution: like $(...), and `<((` is not arithmetic
                self._push("cmd", depth=1)
                self.prev = " "
            elif prev == "(":  # `((` / `$((`: arithmetic, where `<<` and `#` mean other things
                self._push("arith", depth=1)
            elif k == "cmd":
                f.depth += 1
        elif c == ")":
            if k == "cmd" and not (f.depth == 1 and f.cases):
                f.depth -= 1
                if f.depth == 0:
                    self._pop_to(f)
                    self.prev = "a"
        elif c == "#" and prev in _BREAK:
            self._push("comment")
        elif c == "<":
            self.lt += 1
        elif c == "\n" and self.hd_pending and self.heredoc is None:
            if self.hd_pending[0][0] is f:
                self._start_heredoc()
            else:
                self._confuse("a heredoc whose body starts inside another construct")

    def _word(self, f: _Frame, c: str) -> None:
        """Follow plain words in command position, to know when `)` ends a case pattern."""
        if f.kind not in _UNQUOTED:
            return
        if c.isascii() and c.isalpha():
            if f.word is not None:
                f.word += c
            return
        if c not in _BREAK and not c.isspace():
            f.word = None
            return
        if f.word:
            if f.cmdpos and f.word == "case":
                f.cases += 1
            elif f.cmdpos and f.word == "esac" and f.cases:
                f.cases -= 1
            f.cmdpos = f.word in _RESERVED
        elif f.word is None:
            f.cmdpos = False
        if c in _CMD_SEP:
            f.cmdpos = True
        f.word = ""

    def _hd_word_char(self, c: str) -> bool:
        """Read a heredoc delimiter; False when `c` ends it and must be lexed normally."""
        w = self.hd_word
        assert w is not None
        if w.esc:
            w.esc = False
            w.raw += c
        elif w.quote:
            if c == w.quote:
                w.quote = ""
            else:
                w.raw += c
        elif c in "'\"\\":
            w.quoted = True
            if c == "\\":
                w.esc = True
            else:
                w.quote = c
        elif c in " \t" and not w.raw and not w.quoted:
            pass  # blanks between `<<` and the word
        elif c in _BREAK:
            self.hd_word = None
            if w.raw or w.quoted:
                self.hd_pending.append((self.frames[-1], w.raw, w.quoted, w.strip))
            return False
        else:
            w.raw += c
        return True

    def _start_heredoc(self) -> None:
        _, delim, quoted, strip = self.hd_pending.pop(0)
        hd = self._push("hdq" if quoted else "hd")
        hd.delim, hd.strip = delim, strip
        self.heredoc = hd
