"""Quoting values for bash by where they land: a small lexer of bash's quoting contexts.

`ShellLexer` follows a script as it is fed, piece by piece, and knows which context the text so
far ends in: unquoted, '...', "...", $'...', $(...), backticks, $((...)), ${...}, heredoc bodies,
comments. `insert` quotes a value for that context, then lexes the quoted text to check the
value did not change the state; a value it cannot place safely raises `UnsafeValue`.

Quoting makes a value one literal word, but bash reads some words again as code: arithmetic
(`$((...))`, `((...))`, `let`, `[[ A -eq B ]]`, `declare -i`, array indexes), variable names
(`printf -v`, `read`, `test -v`, `unset`, `declare`: `a[$(cmd)]` runs cmd) and, inside "...",
the patterns of `${x/pattern/string}` and friends (where `<(cmd)` runs). To know those places
the lexer also follows simple commands in unquoted text (`_Command`): the command word, its
arguments, redirections, `[[ ... ]]`, array assignments and `declare` attributes. A value there
must be a plain integer, name or word (`_restriction`); anything else raises `UnsafeValue`
naming the place. `notes` records every such place, for `oj runbook check`.
"""

from __future__ import annotations

import re

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]*", re.ASCII)
# literal text in any pattern: no glob, extglob, quote, expansion or redirection characters
_PLAIN_WORD = re.compile(r"[\w .,:=+@%#/-]*")
# `${name` then an operator whose operand is a word or pattern, not arithmetic
_PARAM_WORD = re.compile(
    r"[#!]?(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])(?:\[[^\]]*\])?"
    r"(?::?[-+=?]|##?|%%?|//?|/#|/%|\^\^?|,,?|@)"
)
# `${name` then an operator whose operand is a pattern (or a replacement string)
_PARAM_PATTERN = re.compile(
    r"([#!]?(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])(?:\[[^\]]*\])?)"
    r"(##?|%%?|//?|/#|/%|\^\^?|,,?)"
)
_BS_NEWLINE = re.compile(r"(?<!\\)((?:\\\\)*\\)\n")
_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
_ASSIGN = re.compile(rf"({_VAR})(\[[^\]]*\])?\+?=(.*)", re.ASCII | re.DOTALL)
_INDEX_OPEN = re.compile(rf"({_VAR})\[[^\]]*", re.ASCII)  # inside `name[`, before its `]`
_FD = re.compile(r"[0-9]+|\{[A-Za-z_][A-Za-z0-9_]*\}", re.ASCII)  # the `2` of `2>file`
_DEQUOTE = re.compile(r"[\"'\\]")
_ARITH_TESTS = frozenset(["-eq", "-ne", "-lt", "-le", "-gt", "-ge"])
_DECLARE = frozenset(["declare", "typeset", "local", "readonly", "export"])
_READ_ARGS = frozenset("adinNptu")  # `read` options that take an argument


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


class _Command:
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


class _Frame:
    __slots__ = (
        "kind", "depth", "dq", "word", "cmdpos", "cases",
        "delim", "strip", "line", "value_ref", "bs", "sc", "label", "fresh",
    )  # fmt: skip

    def __init__(self, kind: str, depth: int = 0, dq: bool = False) -> None:
        self.kind = kind  # top cmd arith bt param dq sq ansi comment hd (heredoc) hdq ('EOF')
        self.sc = _Command() if kind in _UNQUOTED else None
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


def _read_option_arg(word: str, partial: bool = False) -> str:
    """The `read` option in a word of options (`-ra`) whose argument is the next word ("" if
    none); with `partial`, the first option taking an argument in a word still being read."""
    for i, c in enumerate(word[1:], start=2):
        if c in _READ_ARGS:
            return c if partial or i == len(word) else ""
    return ""


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
        # variables the script gives attributes with declare/local/typeset/readonly
        self.integers: set[str] = set()  # -i: every assignment is arithmetic
        self.namerefs: set[str] = set()  # -n: the value is a variable name
        # where values landed that bash reads again: (value index, ref, kind, label), kind
        # "int", "name", "pattern" or "command" (the first word of a command)
        self.notes: list[tuple[int, str, str, str]] = []
        self.count = 0  # values inserted so far

    def insert(self, value: str, ref: str) -> str:
        """`value` quoted for the point the script has reached, and lexed as part of it.

        `ref` names the value in error messages. Raises UnsafeValue when the value cannot go here.
        """
        self.count += 1
        piece = self._quote(value, ref)
        before = self._signature()
        frames = self._word_frames()
        start = frames[0].sc.text if frames else ""
        self.feed(piece, ref=ref)
        if self._signature() != before or self._pending():
            raise UnsafeValue(f"${{{ref}}}: cannot insert this value safely at this point")
        for f in frames:
            # `alone`: nothing but quotes before the value in its word (checked after it later)
            direct = f is frames[0]
            end = len(f.sc.text) if direct and not _DEQUOTE.sub("", start) else -1
            f.sc.values.append((self.count, ref, value, end, direct))
        return piece

    def finish(self) -> None:
        """The end of the script: complete the words still open (a `[[` operand, a command)."""
        for f in self._word_frames():
            self._end_word(f, "\n")

    # contexts bash reads again ------------------------------------------------------------

    def _word_frames(self) -> list[_Frame]:
        """The unquoted frames whose current word contains this point, innermost first: a
        `$(...)` inside a word is part of that word. Heredoc bodies and comments are no word."""
        out = []
        for f in reversed(self.frames):
            if f.kind in _UNQUOTED:
                out.append(f)
            elif f.kind in ("hd", "hdq", "comment"):
                break
        return out

    def _restriction(self) -> tuple[str, str] | None:
        """(kind, place) when bash reads a value at this point again: kind "int" (only an
        integer is data there), "name" (a variable name) or "pattern" (a plain word)."""
        for fr in self.frames:
            if fr.kind == "arith":
                return "int", fr.label
            if fr.kind == "param" and not _PARAM_WORD.match(fr.line):
                # bash evaluates ${x:offset} and ${a[index]} as arithmetic
                place = "${a[index]}" if re.match(rf"[#!]?{_VAR}\[", fr.line) else "${x:offset}"
                return "int", place
        params = []  # the ${...} this point is in, innermost first, up to a quote or command
        below = ""
        for fr in reversed(self.frames):
            if fr.kind != "param":
                below = fr.kind
                break
            params.append(fr)
        for fr in params:  # `<(...)` in a pattern inside "..." runs
            m = _PARAM_PATTERN.match(fr.line)
            if fr.dq and m:
                where = "a heredoc" if below == "hd" else '"..."'
                return "pattern", f"${{{m.group(1)}{m.group(2)}...}} in {where}"
        for depth, fr in enumerate(self._word_frames()):
            found = self._word_restriction(fr.sc)
            if found is not None:
                kind, place = found
                return kind, place if depth == 0 else f"{place}, through $(...)"
        return None

    def _word_restriction(self, sc: _Command) -> tuple[str, str] | None:
        """The restriction of the current word of a simple command, at its current end."""
        if sc.redirect:
            return None
        text = _DEQUOTE.sub("", sc.text)
        if sc.array is not None:  # an element of name=( ... )
            if sc.name == "let":
                return "int", "let"
            opts = sc.array_opts
            if text.startswith("[") and "]" not in text:
                return "int", f"{sc.array}=([index]=...)"
            if "i" in opts or sc.array in self.integers:
                return "int", f"integer array {sc.array}=(...)"
            return None
        if sc.test:
            last = sc.args[-1] if sc.args else ""
            if last == "-v":
                return self._name_restriction(text, "[[ -v NAME ]]")
            if last in _ARITH_TESTS:
                return "int", f"[[ ... {last} ... ]]"
            return None  # a left operand is checked when its operator comes
        cmd, args = sc.name, sc.args
        if sc.pattern:  # a case pattern
            return None
        if cmd is None:
            return self._assignment_restriction(text, "", "")
        if cmd == "let":
            return "int", "let"
        if cmd in _DECLARE:
            if text.startswith(("-", "+")) and "=" not in text:
                return "name", f"{cmd} options"
            if _ASSIGN.match(text) or _INDEX_OPEN.fullmatch(text):
                return self._assignment_restriction(text, cmd, self._declare_opts(sc))
            return self._name_restriction(text, f"{cmd} NAME")
        if cmd == "printf":
            if args == ["-v"]:
                return self._name_restriction(text, "printf -v NAME")
            if not args and text.startswith("-v"):
                return self._name_restriction(text[2:], "printf -v NAME")
            return None
        if cmd == "read":
            return self._read_restriction(args, text)
        if cmd == "unset":
            return None if text.startswith("-") else self._name_restriction(text, "unset NAME")
        if cmd in ("test", "[") and args[-1:] == ["-v"]:
            return self._name_restriction(text, f"{cmd} -v NAME")
        return None

    def _assignment_restriction(self, text: str, cmd: str, opts: str) -> tuple[str, str] | None:
        """`name=value`, `name[index]=value`, alone or as an argument of `declare` (`cmd`)."""
        where = f"{cmd} " if cmd else ""
        m = _INDEX_OPEN.fullmatch(text)
        if m is not None:
            # Also for an associative array: whether `m` is one when this runs (declare -A in
            # a branch, a function, a pipeline) cannot be told from the text
            return "int", f"{where}{m.group(1)}[index]=..."
        m = _ASSIGN.match(text)
        if m is None:
            return None
        name = m.group(1)
        if "i" in opts:
            return "int", f"{cmd} -i {name}=..."
        if name in self.integers:
            return "int", f"{where}{name}=... of a declare -i variable"
        if "n" in opts and cmd != "export":
            return self._name_restriction(m.group(3), f"{cmd} -n {name}=NAME")
        if name in self.namerefs:
            place = f"{where}{name}=NAME of a declare -n variable"
            return self._name_restriction(m.group(3), place)
        return None

    def _name_restriction(self, text: str, place: str) -> tuple[str, str]:
        """A variable name: bash evaluates an index in it (`a[$(cmd)]`)."""
        if _INDEX_OPEN.fullmatch(text) or (text.startswith("[") and "]" not in text):
            return "int", f"index in {place}"
        return "name", place

    def _read_restriction(self, args: list[str], text: str) -> tuple[str, str] | None:
        """`read [-ers] [-a NAME] [-d DELIM] [-p PROMPT] ... [NAME...]`"""
        expect = ""  # the option whose argument the next word is
        names = False  # past the options
        for a in args:
            if expect:
                expect = ""
            elif not names and a.startswith("-") and a not in ("-", "--"):
                expect = _read_option_arg(a)
            else:
                names = True  # `--` or the first name
        if expect == "a":
            return self._name_restriction(text, "read -a NAME")
        if expect:
            return None  # a prompt, a delimiter, a count, a timeout, a file descriptor
        if not names and text.startswith("-"):
            opt = _read_option_arg(text, partial=True)
            if opt == "a":
                return self._name_restriction(text[text.index("a") + 1 :], "read -a NAME")
            return None if opt else ("name", "read options")
        return self._name_restriction(text, "read NAME")

    def _restricted(self, index: int, ref: str, value: str, kind: str, place: str) -> None:
        """Record a value at a place bash reads again; raise UnsafeValue unless it is plain."""
        self.notes.append((index, ref, kind, place))
        shown = value if len(value) <= 40 else value[:37] + "..."
        if kind == "int" and not _INT.fullmatch(value):
            hint = ""
            if place.endswith("through $(...)"):  # the output of a command is evaluated
                hint = (
                    "; to use the command's output there, assign it to a variable first and "
                    'check it is a number ([[ $n =~ ^[0-9]+$ ]])'
                )
            raise UnsafeValue(
                f"${{{ref}}} is used in shell arithmetic ({place}) and must be an integer, "
                f"got {shown!r}{hint}"
            )
        if kind == "name" and not _NAME_CHARS.fullmatch(value):
            raise UnsafeValue(
                f"${{{ref}}} is used as a variable name ({place}), where bash evaluates an "
                f"index such as a[$(cmd)]; it must be letters, digits and _ only, got {shown!r}"
            )
        if kind == "pattern" and not _PLAIN_WORD.fullmatch(value):
            raise UnsafeValue(
                f"${{{ref}}} is used in a pattern or replacement ({place}), where bash runs "
                f"<(...); it must be a plain word (letters, digits, spaces, . , : = + @ % # / -), "
                f"got {shown!r}; or assign it to a variable first (v=${{{ref}}}) and write $v there"
            )

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
        restriction = self._restriction()
        if restriction is not None:
            # Bash expands $((...)) like "..." and then evaluates `a[$(cmd)]` in the result;
            # so do let, [[ -eq ]], declare -i, ${x:offset}, ${a[index]} and variable names.
            # Only a plain integer (name, word) is data there.
            self._restricted(self.count, ref, value, *restriction)
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
        if restriction is not None and restriction[0] == "int":
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
        if k in _UNQUOTED:
            # what _word does not see is part of the current word too: an escaped character,
            # what `$` opens; a `$((` is arithmetic
            if self.escape or (self.dollar and c in "${[('"):
                f.sc.text += c
            fresh, f.fresh = f.fresh, False
        elif k not in ("comment", "hd", "hdq"):
            for fr in reversed(self.frames):  # quoted text inside a word
                if fr.kind in _UNQUOTED:
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

    def _word(self, f: _Frame, c: str, prev: str) -> None:
        """Follow plain words in command position, to know when `)` ends a case pattern; and
        the simple command, to know where bash reads a value again."""
        if f.kind not in _UNQUOTED:
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

    def _command_char(self, f: _Frame, c: str, prev: str) -> None:
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
        if c == "(" and (sc.name is None or sc.name in _DECLARE or sc.name == "let"):
            m = _ASSIGN.fullmatch(_DEQUOTE.sub("", sc.text))
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
    def _declare_opts(sc: _Command) -> str:
        return "".join(a[1:] for a in sc.args if a[:1] == "-" and a != "-")

    def _separator(self, f: _Frame, c: str, prev: str) -> None:
        sc = f.sc
        assert sc is not None
        pattern = sc.pattern
        if c == ")":
            pattern = False  # the end of a case pattern
        elif c == ";" and prev == ";" and f.cases:
            pattern = True  # `;;`: the next case pattern
        sc.reset()
        sc.pattern = pattern

    def _end_word(self, f: _Frame, c: str) -> None:
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
        word = _DEQUOTE.sub("", text)
        if sc.test:
            if text == "]]":
                sc.test = False
                return
            if text in _ARITH_TESTS:  # the word before was an arithmetic operand
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
            if _ASSIGN.match(text):
                return  # `NAME=value cmd`
            sc.name = word
            for index, ref, _, end, _ in values:
                if end >= 0 and not _DEQUOTE.sub("", text[end:]):  # the value is the word
                    self.notes.append((index, ref, "command", ""))
            return
        if sc.name in ("builtin", "command") and not sc.args and not word.startswith("-"):
            sc.name = word
            return
        if sc.name in _DECLARE and not word.startswith(("-", "+")):
            opts = self._declare_opts(sc)
            m = re.match(_VAR, word)
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
