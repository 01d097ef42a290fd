"""The lexer of bash's quoting contexts that ``ojd.runbook.shellquote`` quotes values by.

`ShellGrammar` follows a script as it is fed, piece by piece, and knows which context the text
so far ends in: unquoted, '...', "...", $'...', $(...), backticks, $((...)), ${...}, heredoc
bodies, comments. In unquoted text it also follows simple commands (`Command`): the command
word, its arguments, redirections, `[[ ... ]]`, array assignments and `declare` attributes,
which is where bash reads some words again as code.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

VAR = r"[A-Za-z_][A-Za-z0-9_]*"
ASSIGN = re.compile(rf"({VAR})(\[[^\]]*\])?\+?=(.*)", re.ASCII | re.DOTALL)
_FD = re.compile(r"[0-9]+|\{[A-Za-z_][A-Za-z0-9_]*\}", re.ASCII)  # the `2` of `2>file`
DEQUOTE = re.compile(r"[\"'\\]")
ARITH_TESTS = frozenset(["-eq", "-ne", "-lt", "-le", "-gt", "-ge"])
DECLARE = frozenset(["declare", "typeset", "local", "readonly", "export"])
_READ_ARGS = frozenset("adinNptu")  # `read` options that take an argument


class UnsafeValue(ValueError):
    """A value cannot be placed at this point of the script without the risk of becoming code.

    The message names the value as `${ref}`, `ref` being the label it was inserted with.
    """


_BREAK = frozenset(" \t\n;&|()<>")
_CMD_SEP = frozenset("\n;&|()")
_RESERVED = frozenset(["if", "then", "else", "elif", "do", "while", "until", "time", "!", "{"])
_CONTINUING = ("top", "cmd", "bt", "arith", "param", "dq", "hd")  # backslash-newline dropped
UNQUOTED = ("top", "cmd", "bt")  # where words, comments and heredoc operators exist



class Command:
    """The simple command an unquoted frame is in: enough of bash's grammar to know which words
    bash reads again (a `let` argument, the name after `printf -v`, an `[[ A -eq B ]]` operand).

    Words are kept as source text (quotes and all) and compared without their quote characters.
    """

    __slots__ = (
        "name", "args", "text", "values", "last_values", "redirect", "redirected", "amp",
        "test", "array", "array_text", "array_opts", "pattern",
    )  # fmt: skip

    def __init__(self) -> None:
        self.name: str | None = None  # the command word; None before it (assignments, `if`)
        self.args: list[str] = []  # its completed arguments, unquoted
        self.text = ""  # the current word so far, as written
        # values in the current word, also inside a $(...) of it: (index, ref, value, end,
        # direct: not inside a $(...)), end: where the value ends in `text` if only quotes come
        # before it in the word, else -1
        self.values: list[tuple[int, str, str, int, bool]] = []
        self.last_values: list[tuple[int, str, str, int, bool]] = []  # ... the previous word
        self.redirect = False  # the next word is a redirection's target
        self.redirected = False  # ... already before the last `<` or `>` (`< <(cmd)`)
        self.amp = False  # a `&` that is a separator unless `>` follows (`&>`)
        self.test = False  # inside `[[ ... ]]`
        self.array: str | None = None  # inside `name=( ... )`: the array's name
        self.array_text = ""  # the `name=` word the array assignment belongs to
        self.array_opts = ""  # options of the `declare` it is an argument of
        self.pattern = False  # the next words are `case` patterns

    def reset(self) -> None:
        """A command separator: the next word starts a new simple command."""
        self.name = None
        self.args = []
        self.redirect = self.amp = self.test = False
        self.last_values = []
        self.array = None


class Frame:
    __slots__ = (
        "kind", "depth", "dq", "word", "cmdpos", "cases",
        "delim", "strip", "line", "value_ref", "bs", "sc", "label", "fresh",
    )  # fmt: skip

    def __init__(self, kind: str, depth: int = 0, dq: bool = False) -> None:
        self.kind = kind  # top cmd arith bt param dq sq ansi comment hd (heredoc) hdq ('EOF')
        self.sc = Command() if kind in UNQUOTED else None
        self.label = ""  # arith: how it was written, for messages
        self.fresh = kind == "cmd"  # a `$(` with nothing after it yet: `$((` is arithmetic
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


def read_option_arg(word: str, partial: bool = False) -> str:
    """The `read` option in a word of options (`-ra`) whose argument is the next word ("" if
    none); with `partial`, the first option taking an argument in a word still being read."""
    for i, c in enumerate(word[1:], start=2):
        if c in _READ_ARGS:
            return c if partial or i == len(word) else ""
    return ""


class ShellGrammar(ABC):
    """Tracks where in bash's grammar the text fed so far ends. Best effort, but errs to quoting.

    Whether a value may go where bash reads it again as code is the quoting side's to say
    (``_restricted``, in ``ojd.runbook.shellquote.ShellLexer``)."""

    def __init__(self) -> None:
        self.frames = [Frame("top")]
        self.escape = False  # a backslash escapes the next char
        self.dollar = False
        self.prev = "\n"
        self.held = False  # a backslash that may start a line continuation
        self.lt = 0  # run of `<`
        self.hd_word: _HdWord | None = None  # reading a heredoc delimiter
        # (frame whose next newline starts the body, delimiter, quoted, strip tabs)
        self.hd_pending: list[tuple[Frame, str, bool, bool]] = []
        # Set where the lexer cannot follow bash (e.g. a heredoc inside a heredoc body): values
        # are refused from then on, or while `confused_frame` is open.
        self.confused = ""
        self.confused_frame: Frame | None = None
        self.heredoc: Frame | None = None
        # variables the script gives attributes with declare/local/typeset/readonly
        self.integers: set[str] = set()  # -i: every assignment is arithmetic
        self.namerefs: set[str] = set()  # -n: the value is a variable name
        # where values landed that bash reads again: (value index, ref, kind, label), kind
        # "int", "name", "pattern" or "command" (the first word of a command)
        self.notes: list[tuple[int, str, str, str]] = []
        self.count = 0  # values inserted so far

    @abstractmethod
    def _restricted(self, index: int, ref: str, value: str, kind: str, place: str) -> None:
        """A value (the ``index``th, named ``ref``) landed where bash reads it again as
        ``kind`` ("int": arithmetic): the quoting side records it and says whether it may."""

    # lexing ------------------------------------------------------------------------------

    def feed(self, text: str, ref: str | None = None) -> None:
        """Lex `text`; `ref` names the reference when the text is an inserted value."""
        for c in text:
            if not self._track(c, ref):
                self._char(c)

    def _push(self, kind: str, depth: int = 0, dq: bool = False) -> Frame:
        f = Frame(kind, depth, dq)
        self.frames.append(f)
        return f

    def _confuse(self, reason: str, frame: Frame | None = None) -> None:
        if not self.confused or self.confused_frame is not None:
            self.confused, self.confused_frame = reason, frame

    def _pop_to(self, frame: Frame) -> None:
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
        if k in UNQUOTED:
            # what _word does not see is part of the current word too: an escaped character,
            # what `$` opens; a `$((` is arithmetic
            if self.escape or (self.dollar and c in "${[('"):
                f.sc.text += c
            fresh, f.fresh = f.fresh, False
        elif k not in ("comment", "hd", "hdq"):
            for fr in reversed(self.frames):  # quoted text inside a word
                if fr.kind in UNQUOTED:
                    fr.sc.text += c
                    break
                if fr.kind in ("hd", "hdq", "comment"):
                    break
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
                arith = self._push("arith", depth=1)
                arith.delim, arith.label = "]", "$[...]"
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
            self._word(f, c, prev)
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
        self._word(f, c, prev)
        if c == "'":
            self._push("sq")
        elif c == '"':
            self._push("dq")
        elif c == "(":
            if prev in "<>":  # process substitution: like $(...), and `<((` is not arithmetic
                self._push("cmd", depth=1)
                self.prev = " "
            elif prev == "(":  # `((` / `$((`: arithmetic, where `<<` and `#` mean other things
                self._push("arith", depth=1).label = "$((...))" if fresh else "((...))"
                if not fresh:  # the command `((...))`, not a word
                    f.sc.text = "(("
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

    def _word(self, f: Frame, c: str, prev: str) -> None:
        """Follow plain words in command position, to know when `)` ends a case pattern; and
        the simple command, to know where bash reads a value again."""
        if f.kind not in UNQUOTED:
            return
        self._command_char(f, c, prev)
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

    def _command_char(self, f: Frame, c: str, prev: str) -> None:
        sc = f.sc
        assert sc is not None
        if sc.amp:
            sc.amp = False
            if c == ">":  # `&>file`
                sc.redirect = True
                return
            self._separator(f, "&", "")
        if sc.array is not None:  # name=( element... )
            if c == ")":
                self._end_word(f, c)
                sc.text, sc.array = sc.array_text + "(...)", None
            elif c in " \t\n":
                self._end_word(f, c)
            else:
                sc.text += c
            return
        if c not in _BREAK:
            if not (c == "#" and not sc.text and prev in _BREAK):  # a comment is no word
                sc.text += c
            return
        if sc.test:  # in [[ ... ]], && || ( ) < > and newlines are operators or blanks
            self._end_word(f, c)
            return
        if c == "(" and prev in "<>":  # `<(...)` is a word, not a redirection
            sc.redirect, sc.amp = sc.redirected, False
            sc.text = prev + c
            return
        if c == "(" and (sc.name is None or sc.name in DECLARE or sc.name == "let"):
            m = ASSIGN.fullmatch(DEQUOTE.sub("", sc.text))
            if m is not None and not m.group(3):  # `name=(`: an array assignment
                sc.array, sc.array_text = m.group(1), sc.text
                sc.array_opts = self._declare_opts(sc) if sc.name else ""
                sc.text, sc.values = "", []
                return
        self._end_word(f, c)
        if c in "<>":
            if prev not in "<>":
                sc.redirected = sc.redirect
            sc.redirect = True
        elif c == "&":
            sc.amp = prev not in "<>"  # `>&2` is a redirection
        elif c == "|" and prev == ">":
            pass  # `>|file`
        elif c in _CMD_SEP:
            self._separator(f, c, prev)

    @staticmethod
    def _declare_opts(sc: Command) -> str:
        return "".join(a[1:] for a in sc.args if a[:1] == "-" and a != "-")

    def _separator(self, f: Frame, c: str, prev: str) -> None:
        sc = f.sc
        assert sc is not None
        pattern = sc.pattern
        if c == ")":
            pattern = False  # the end of a case pattern
        elif c == ";" and prev == ";" and f.cases:
            pattern = True  # `;;`: the next case pattern
        sc.reset()
        sc.pattern = pattern

    def _end_word(self, f: Frame, c: str) -> None:
        """The current word of `f`'s simple command is complete (`c` ended it)."""
        sc = f.sc
        assert sc is not None
        text, values = sc.text, sc.values
        sc.text, sc.values = "", []
        if not text or sc.array is not None:
            return
        if sc.redirect:  # a redirection's target
            sc.redirect = False
            return
        if c in "<>" and _FD.fullmatch(text):  # the `2` of `2>file`
            return
        word = DEQUOTE.sub("", text)
        if sc.test:
            if text == "]]":
                sc.test = False
                return
            if text in ARITH_TESTS:  # the word before was an arithmetic operand
                for index, ref, value, _, direct in sc.last_values:
                    place = f"[[ ... {text} ... ]]" + ("" if direct else ", through $(...)")
                    self._restricted(index, ref, value, "int", place)
            sc.args.append(word)
            sc.last_values = values
            return
        if sc.pattern:  # a case pattern
            sc.pattern = text != "esac"
            return
        if sc.name is None:
            if text in _RESERVED or text.startswith("(("):
                return
            if text == "[[":
                sc.name, sc.test = "[[", True
                return
            if ASSIGN.match(text):
                return  # `NAME=value cmd`
            sc.name = word
            for index, ref, _, end, _ in values:
                if end >= 0 and not DEQUOTE.sub("", text[end:]):  # the value is the word
                    self.notes.append((index, ref, "command", ""))
            return
        if sc.name in ("builtin", "command") and not sc.args and not word.startswith("-"):
            sc.name = word
            return
        if sc.name in DECLARE and not word.startswith(("-", "+")):
            opts = self._declare_opts(sc)
            m = re.match(VAR, word)
            if m is not None:
                name = m.group()
                if "i" in opts:
                    self.integers.add(name)
                if "n" in opts and sc.name != "export":
                    self.namerefs.add(name)
        sc.args.append(word)
        sc.last_values = values

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
            sc = self.frames[-1].sc
            if sc is not None:  # the delimiter was the redirection's target
                sc.redirect = False
            return False
        else:
            w.raw += c
        return True

    def _start_heredoc(self) -> None:
        _, delim, quoted, strip = self.hd_pending.pop(0)
        hd = self._push("hdq" if quoted else "hd")
        hd.delim, hd.strip = delim, strip
        self.heredoc = hd
