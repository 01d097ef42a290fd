"""``bash -n`` over a runbook's shell scripts, so a syntax error is found before anything runs.

Bash runs a ``-c`` script one command at a time: a syntax error on line 2 would only show
after line 1 had run. Checking costs one bash process for all scripts (each wrapped in a
function, which bash parses without running); only when that finds an error is each script
checked on its own, for exact messages and lines. ``exact`` (``oj runbook check``) always
checks each one, as a wrapper can in contrived cases hide an unbalanced brace.
"""

from __future__ import annotations

import re
import subprocess
from typing import NamedTuple

# oj's own references become a plain word: the renderer puts one quoted word there. Env refs
# (${HOME}, ${X:-d}) stay for bash; $${ is a literal ${ once rendered.
_OJ_REF = re.compile(r"\$\$\{|\$\{[A-Za-z_][A-Za-z0-9_]*[.(][^}\n]*\}")
_LINE = re.compile(r"^bash: -c: line (\d+): (.*)$")
# extglob patterns parse only once `shopt -s extglob` has run, which -n never does
_BASH = ("bash", "-n", "-O", "extglob")
TIMEOUT = 30
BATCH = 8  # bash processes at once when checking scripts one by one


class Script(NamedTuple):
    file: str
    line: int  # the runbook line of the script's first line
    what: str  # "step 'build' of pipeline 'b'"
    text: str


_TEMPLATE_REF = re.compile(r"\$\$\{|\$\{[^}]*\}")
_RAW_REF = re.compile(r"(?<!\$)\$\{\s*raw\(")


def needs_shell(local: str) -> bool:
    """A local like ``$(git rev-parse ...)`` (or with a ``${raw(...)}``) runs in bash, as
    the inside of "..." (``ojd.runbook.template.LOCAL_PREFIX + local + '"'``); a plain template is
    rendered as text."""
    if _RAW_REF.search(local):
        return True
    rest = _TEMPLATE_REF.sub("", local)
    return "$" in rest or "`" in rest


def plain(text: str) -> str:
    """The script as bash will see it, with oj's references replaced by a word."""
    return _OJ_REF.sub(lambda m: "${" if m.group() == "$${" else "_", text)


def check(scripts: list[Script], exact: bool = False) -> list[tuple[str, int, str]]:
    """(file, line, message) for each script bash cannot parse."""
    problems = []
    for script in scripts:  # bash cannot be given one at all: say where it is
        at = script.text.find("\0")
        if at >= 0:
            problems.append((script.file, script.line + script.text.count("\n", 0, at),
                             f"{script.what}: a NUL character (\\u0000) cannot be in a shell "
                             "script; remove it"))
    scripts = [script for script in scripts if "\0" not in script.text]
    if not scripts:
        return problems
    if not exact and _parses(_wrapped(scripts)):
        return problems
    for start in range(0, len(scripts), BATCH):
        batch = scripts[start : start + BATCH]
        try:
            procs = [subprocess.Popen([*_BASH, "-c", plain(script.text)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for script in batch]
        except OSError:
            return []  # no bash here: steps report that when they run
        for script, proc in zip(batch, procs, strict=True):
            try:
                _, err = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                continue
            if proc.returncode != 0:
                problems.append(_problem(script, err))
    return problems


def _problem(script: Script, stderr: str) -> tuple[str, int, str]:
    offset, message = _first_error(stderr)
    # a missing `fi` is reported on the line after the last: keep it in the script
    last = script.line + max(len(script.text.splitlines()), 1) - 1
    return script.file, min(script.line + offset - 1, last), f"{script.what}: bash: {message}"


def _wrapped(scripts: list[Script]) -> str:
    return "".join(f"__oj_check_{i}() {{\n:\n{plain(s.text)}\n}}\n"
                   for i, s in enumerate(scripts))


def _parses(text: str) -> bool:
    try:
        proc = subprocess.run([*_BASH, "-c", text], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell here; steps report it when they run
    return proc.returncode == 0


def _first_error(stderr: str) -> tuple[int, str]:
    for raw in stderr.splitlines():
        m = _LINE.match(raw)
        if m:
            return int(m.group(1)), m.group(2)
    return 1, (stderr.strip().splitlines() or ["syntax error"])[0]
