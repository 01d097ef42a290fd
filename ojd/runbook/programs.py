"""The programs a shell script runs by name: the command word of each simple command that
bash would look up on PATH. Pure: ``oj runbook check`` asks the host which of them are
missing (``ojd.worker_path``). Found with the quoting lexer (``ojd.runbook.shelllex``), so
command substitutions count and heredoc bodies, comments and redirection targets do not."""

from __future__ import annotations

import re

from ojd.runbook.shelllex import ShellGrammar

# bash's builtins and keywords: never looked up on PATH
_SHELL_WORDS = """
    . : [ [[ ]] { } ! alias bg bind break builtin caller case cd command compgen complete
    compopt continue coproc declare dirs disown do done echo elif else enable esac eval exec
    exit export false fc fg fi for function getopts hash help history if in jobs kill let
    local logout mapfile popd printf pushd pwd read readarray readonly return select set
    shift shopt source suspend test then time times trap true type typeset ulimit umask
    unalias unset until wait while
"""
SHELL_WORDS = frozenset(_SHELL_WORDS.split())
_FUNCTION = re.compile(r"(?:^|[\s;&|(){}])(?:function\s+([\w.:-]+)|([\w.:-]+)\s*\(\s*\))",
                       re.ASCII)
_PLAIN = re.compile(r"[\w.+:@%^,-]+\Z", re.ASCII)  # a word with no expansion, glob or path


class _CommandWords(ShellGrammar):
    """The grammar, noting each command word with the line it ends on."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.found: list[tuple[str, str, int]] = []  # (word unquoted, as written, line)

    def _restricted(self, index: int, ref: str, value: str, kind: str, place: str) -> None:
        pass  # no values are inserted: nothing is restricted

    def _end_word(self, f, c: str) -> None:
        sc = f.sc
        before, text = sc.name, sc.text
        super()._end_word(f, c)
        if sc.name is not None and sc.name != before:
            self.found.append((sc.name, text, self.line))


def programs(script: str) -> list[tuple[str, int]]:
    """The program names ``script`` runs, each with its line within the script (from 0), in
    order: plain command words only (no ``$x``, ``${...}``, globs or paths), builtins,
    keywords and the script's own functions left out."""
    lexer = _CommandWords()
    for c in script:
        lexer.feed(c)
        if c == "\n":
            lexer.line += 1
    lexer.feed("\n")  # ends the last word
    functions = {a or b for a, b in _FUNCTION.findall(script)}
    return [(word, line) for word, text, line in lexer.found
            if word not in SHELL_WORDS and word not in functions and "$" not in text
            and "`" not in text and _PLAIN.match(word)]
