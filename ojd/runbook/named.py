"""The files a runbook names as code or as an agent's input: every agent's ``prompt_file``
and the scripts its shell scripts run by path. Pure: paths from the runbook model and the
project root, nothing read; ``ojd.trust`` checks who may change them, ``oj runbook check``
warns about those that lead outside the project.
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ojd.runbook.model import Runbook

_SHELLS = frozenset({"bash", "sh", "dash", "ksh", "zsh"})  # `bash FILE` runs FILE
_SOURCES = frozenset({"source", "."})  # `. FILE` reads it into the shell
# words after which a command word comes (`if ./check; then ./deploy; fi`, `env X=1 ./run`)
_PREFIXES = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{",
                       "time", "exec", "command", "builtin", "nohup", "env"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_INVOKE_DIR = re.compile(r"\$\{\s*invoke\.dir\s*\}")  # a worker's (and cron's) jobs: the project
_SEPARATORS = ";&|()"
_NESTED_READS = 8  # how many times its length script_paths reads, nested scripts included
_named_cache: dict[tuple[str, str], list[str]] = {}


def named_files(root: str, runbook: Runbook) -> list[str]:
    """The files ``runbook`` has a job read as code or as an agent's input, absolute, in
    runbook order: the project's ``.oj/config.toml`` when it has agents (it can say which
    command an agent runs), every agent's ``prompt_file``; and the scripts its shell scripts (steps,
    locals, commands, queue ``list``/``take``, agent ``run``/``prime``/gates) run by path:
    a command word that is a path (``./deploy.sh``, ``scripts/x``), or the file given to
    ``bash``/``sh``/``source``/``.``, relative to the project (where a worker's jobs start;
    ``${invoke.dir}`` is the project). A command word that is an absolute path outside the
    project is a program of the system, like one found through PATH: not named here."""
    key = (root, runbook.digest)
    if runbook.digest and key in _named_cache:
        return _named_cache[key]
    found: list[str] = []
    if runbook.agents:  # [agents.NAME] command there is what an agent step runs
        found.append(_joined(root, ".oj/config.toml"))
    for agent in runbook.agents.values():
        if agent.prompt_file:
            found.append(_joined(root, agent.prompt_file))
    for script in _shell_scripts(runbook):
        for word, _, argument in script_paths(script):
            path = _project_path(root, word, argument)
            if path is not None:
                found.append(path)
    found = list(dict.fromkeys(found))
    if runbook.digest:
        _named_cache[key] = found
    return found


def _shell_scripts(runbook: Runbook) -> Iterable[str]:
    pipelines = [*runbook.pipelines.values(),
                 *(c.own for c in runbook.crons.values() if c.own is not None)]
    for pipeline in pipelines:
        for step in pipeline.steps.values():
            if step.run:
                yield step.run
        for _, value in pipeline.locals:
            yield f'__oj_local="{value}"'  # evaluated inside "...": only $(...) runs
    for command in runbook.commands.values():
        if command.run:
            yield command.run
    for queue in runbook.queues.values():
        yield from (s for s in (queue.list_cmd, queue.take_cmd) if s)
    for agent in runbook.agents.values():
        yield agent.run
        yield from agent.prime
        for commands in getattr(agent, "prime_sources", {}).values():
            yield from commands
        errors = list((agent.on_error or {}).values()) if "action" not in (
            agent.on_error or {}) else [agent.on_error]
        for action in (agent.on_idle, agent.on_dead, agent.on_prompt, *errors):
            if action and action.get("run"):
                yield action["run"]


def _project_path(root: str, word: str, argument: bool) -> str | None:
    """The file ``word`` names, or None when it has expansions (``$x``, ``~``, globs) or is
    a program of the system (``argument``: a script given to bash or ``.``, named anywhere)."""
    m = _INVOKE_DIR.match(word)
    if m:
        word = "." + word[m.end():]
    if not word or word.startswith("~") or any(c in word for c in "$`*?["):
        return None
    if word.startswith("/"):
        inside = os.path.normpath(word).startswith(root.rstrip("/") + "/")
        return _joined("/", word) if argument or inside else None
    return _joined(root, word)


def _joined(root: str, path: str) -> str:
    """``path`` from ``root`` without its ``.`` and empty components (``..`` stays: it
    goes up from where symlinks lead, as the kernel does)."""
    parts = [p for p in os.path.join(root, path).split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def leads_outside(word: str, argument: bool) -> bool:
    """Whether a path ``script_paths`` found leads outside the project: ``..`` in it, or,
    for a script given to bash or ``.``, an absolute path (``oj runbook check`` warns)."""
    m = _INVOKE_DIR.match(word)
    if m:
        word = "." + word[m.end():]
    if word.startswith("~") or any(c in word for c in "$`*?["):
        return False
    return ".." in word.split("/") or (argument and word.startswith("/"))


def script_paths(text: str, _budget: list[int] | None = None
                 ) -> list[tuple[str, int, bool]]:
    """The paths a shell script runs: (word, line within the script from 0, whether it is
    a file given to ``bash``/``sh``/``source``/``.`` rather than a command word). A word
    is taken as the shell's parser leaves it (quotes removed, expansions kept), command
    substitutions (``$(...)``, backquotes) and ``bash -c`` strings included; heredoc
    bodies and redirection targets are not commands. A heuristic for the usual ways a
    script runs a file by path, not a shell parser: what it misses is not checked."""
    found: list[tuple[str, int, bool]] = []
    # nested scripts are looked into while the text read stays within a few times the
    # script's: a deep or pathological nesting costs no more than that
    budget = _budget if _budget is not None else [_NESTED_READS * len(text) + 4096]
    budget[0] -= len(text)

    def nested(inner: str, line: int) -> None:
        if len(inner) <= budget[0]:
            found.extend((w, line + n, a) for w, n, a in script_paths(inner, budget))

    words, substitutions = _words(text)
    for inner, line in substitutions:
        nested(inner, line)
    state = "command"
    for word, line in words:
        if word is None:  # ; & | ( ) or a newline: a command word comes next
            state = "command"
        elif state == "command":
            if word in _PREFIXES or _ASSIGNMENT.match(word):
                continue
            base = word.rsplit("/", 1)[-1]
            if "/" in word:  # /usr/bin/env too: _project_path passes over the system's
                found.append((word, line, False))
            if base in _PREFIXES:
                continue
            state = "shell" if base in _SHELLS else "script" if word in _SOURCES else "args"
        elif state == "shell":  # bash's options, then its script (none with -c)
            if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
                state = "option"
            elif word == "--":
                state = "script"
            elif word.startswith("-") and not word.startswith("--") and "c" in word:
                state = "string"
            elif not word.startswith(("-", "+")):
                found.append((word, line, True))
                state = "args"
        elif state == "option":
            state = "shell"
        elif state == "string":  # bash -c 'SCRIPT'
            nested(word, line)
            state = "args"
        elif state == "script":
            found.append((word, line, True))
            state = "args"
    found.sort(key=lambda f: f[1])
    return found


def _words(text: str) -> tuple[list[tuple[str | None, int]], list[tuple[str, int]]]:
    """Shell words with the line each starts on (None: a separator), and the text of the
    command substitutions with theirs."""
    words: list[tuple[str | None, int]] = []
    subs: list[tuple[str, int]] = []
    heredocs: list[tuple[str, bool]] = []  # delimiters whose bodies start at the next line
    word: list[str] | None = None
    start = line = 0
    skip_next = False  # the next word is a redirection's target
    heredoc_next: bool | None = None  # the next word is a heredoc delimiter (<<- if True)
    i, n = 0, len(text)

    def end() -> None:
        nonlocal word, skip_next, heredoc_next
        if word is None:
            return
        w = "".join(word)
        word = None
        if heredoc_next is not None:
            heredocs.append((w, heredoc_next))
            heredoc_next = None
        elif skip_next:
            skip_next = False
        else:
            words.append((w, start))

    def begin() -> None:
        nonlocal word, start
        if word is None:
            word, start = [], line

    def substitution(i: int) -> int:  # $(...), ${...} or `...` at i, kept as written
        nonlocal line
        j = _closing(text, i)
        raw = text[i:j]
        word.append(raw)
        if raw.startswith("`"):
            subs.append((raw[1:-1], line))
        elif raw.startswith("$(") and not raw.startswith("$(("):
            subs.append((raw[2:-1], line))
        line += raw.count("\n")
        return j

    while i < n:
        c = text[i]
        if c == "\\":
            if text.startswith("\n", i + 1):
                line += 1
            else:
                begin()
                word.append(text[i + 1:i + 2])
            i += 2
        elif c == "'":
            begin()
            j = text.find("'", i + 1)
            j = n if j < 0 else j
            word.append(text[i + 1:j])
            line += text.count("\n", i + 1, j)
            i = j + 1
        elif c == '"':
            begin()
            i += 1
            while i < n and text[i] != '"':
                d = text[i]
                if d == "\\" and i + 1 < n:
                    if text[i + 1] == "\n":
                        line += 1
                    else:
                        word.append(text[i + 1] if text[i + 1] in '\\"$`' else text[i:i + 2])
                    i += 2
                elif d == "$" and text.startswith(("$(", "${"), i) or d == "`":
                    i = substitution(i)
                else:
                    if d == "\n":
                        line += 1
                    word.append(d)
                    i += 1
            i += 1
        elif c == "$" and text.startswith(("$(", "${"), i) or c == "`":
            begin()
            i = substitution(i)
        elif c == "#" and word is None:
            while i < n and text[i] != "\n":
                i += 1
        elif c in " \t\r":
            end()
            i += 1
        elif c == "\n":
            end()
            skip_next = False
            words.append((None, line))
            line += 1
            i += 1
            for delimiter, tabs in heredocs:  # their bodies are text, not commands
                while i < n:
                    j = text.find("\n", i)
                    j = n if j < 0 else j
                    body_line = text[i:j]
                    i = min(j + 1, n)
                    line += 1
                    if (body_line.lstrip("\t") if tabs else body_line) == delimiter:
                        break
            heredocs.clear()
        elif c in "<>" or c == "&" and text.startswith("&>", i):
            end()
            j = i + 1
            while j < n and text[j] in "<>&|-":
                j += 1
            op = text[i:j]
            if op.startswith("<<") and not op.startswith("<<<"):
                heredoc_next = op.endswith("-")
            else:
                skip_next = True
            i = j
        elif c in _SEPARATORS:
            end()
            skip_next = False
            words.append((None, line))
            i += 1
        else:
            begin()
            word.append(c)
            i += 1
    end()
    return words, subs


def _closing(text: str, i: int) -> int:
    """The index after the end of the ``$(...)``, ``${...}`` or backquoted text at ``i``."""
    if text[i] == "`":
        j = text.find("`", i + 1)
        return len(text) if j < 0 else j + 1
    open_, close = ("(", ")") if text[i + 1] == "(" else ("{", "}")
    depth, j, quote = 0, i + 1, None
    while j < len(text):
        c = text[j]
        if quote:
            if c == "\\" and quote == '"':
                j += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "\\":
            j += 1
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(text)
