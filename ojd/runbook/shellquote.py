"""Quoting values for bash by where they land: a small lexer of bash's quoting contexts.

`ShellLexer` follows a script as it is fed, piece by piece, and knows which context the text so
far ends in: unquoted, '...', "...", $'...', $(...), backticks, $((...)), ${...}, heredoc bodies,
comments. `insert` quotes a value for that context, then lexes the quoted text to check the
value did not change the state; a value it cannot place safely raises `UnsafeValue`.

Quoting makes a value one literal word, but bash reads some words again as code: arithmetic
(`$((...))`, `((...))`, `let`, `[[ A -eq B ]]`, `declare -i`, array indexes), variable names
(`printf -v`, `read`, `test -v`, `unset`, `declare`: `a[$(cmd)]` runs cmd) and, inside "...",
the patterns of `${x/pattern/string}` and friends (where `<(cmd)` runs). To know those places
the lexer also follows simple commands in unquoted text (`Command`): the command word, its
arguments, redirections, `[[ ... ]]`, array assignments and `declare` attributes. A value there
must be a plain integer, name or word (`_restriction`); anything else raises `UnsafeValue`
naming the place. `notes` records every such place, for `oj runbook check`.
"""

from __future__ import annotations

import re

from ojd.runbook.shelllex import (
    ARITH_TESTS,
    ASSIGN,
    DECLARE,
    DEQUOTE,
    UNQUOTED,
    VAR,
    Command,
    Frame,
    ShellGrammar,
    UnsafeValue,
    read_option_arg,
)

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
_INDEX_OPEN = re.compile(rf"({VAR})\[[^\]]*", re.ASCII)  # inside `name[`, before its `]`


def _sq(value: str) -> str:
    # Always quoted, even for "safe" text: a bare `case` or `A=b` would be a keyword/assignment.
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _dq(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


def _bs(value: str) -> str:
    # Backslash-escape what stays special in an unquoted heredoc body and inside backticks
    # (bash finds the closing backtick before parsing the inside; these escapes survive that).
    return value.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


class ShellLexer(ShellGrammar):
    """Quotes values for the point of the script the lexer has reached (``insert``), and
    refuses a value where bash would read it as code."""

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
            end = len(f.sc.text) if direct and not DEQUOTE.sub("", start) else -1
            f.sc.values.append((self.count, ref, value, end, direct))
        return piece

    def finish(self) -> None:
        """The end of the script: complete the words still open (a `[[` operand, a command)."""
        for f in self._word_frames():
            self._end_word(f, "\n")

    # contexts bash reads again ------------------------------------------------------------

    def _word_frames(self) -> list[Frame]:
        """The unquoted frames whose current word contains this point, innermost first: a
        `$(...)` inside a word is part of that word. Heredoc bodies and comments are no word."""
        out = []
        for f in reversed(self.frames):
            if f.kind in UNQUOTED:
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
                place = "${a[index]}" if re.match(rf"[#!]?{VAR}\[", fr.line) else "${x:offset}"
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

    def _word_restriction(self, sc: Command) -> tuple[str, str] | None:
        """The restriction of the current word of a simple command, at its current end."""
        if sc.redirect:
            return None
        text = DEQUOTE.sub("", sc.text)
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
            if last in ARITH_TESTS:
                return "int", f"[[ ... {last} ... ]]"
            return None  # a left operand is checked when its operator comes
        cmd, args = sc.name, sc.args
        if sc.pattern:  # a case pattern
            return None
        if cmd is None:
            return self._assignment_restriction(text, "", "")
        if cmd == "let":
            return "int", "let"
        if cmd in DECLARE:
            if text.startswith(("-", "+")) and "=" not in text:
                return "name", f"{cmd} options"
            if ASSIGN.match(text) or _INDEX_OPEN.fullmatch(text):
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
        m = ASSIGN.match(text)
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
                expect = read_option_arg(a)
            else:
                names = True  # `--` or the first name
        if expect == "a":
            return self._name_restriction(text, "read -a NAME")
        if expect:
            return None  # a prompt, a delimiter, a count, a timeout, a file descriptor
        if not names and text.startswith("-"):
            opt = read_option_arg(text, partial=True)
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
