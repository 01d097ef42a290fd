"""Generated hostile values through every quoting context of tests/test_template.py, run by
real bash: whatever the value, bash prints it verbatim and runs nothing of it.

The hand-picked values of test_template.py pin down the cases we thought of; this one lets
hypothesis put together the rest from the characters and pieces that are special somewhere
(quotes, `$(`, backticks, backslashes, newlines, heredoc delimiters, globs, unicode). The
examples are derived from a fixed seed, so a run is repeatable, and shrunk when one fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_template import CONTEXTS

from ojd.runbook.shellquote import UnsafeValue
from ojd.runbook.template import render_shell

MARKER = "pwned"

# Pieces special in some context; `{tmp}` becomes the directory whose marker must not appear.
PIECES = [
    "'", '"', "`", "\\", "$", "$(", ")", "${", "}", "$((", "))", "$'", "\n", "\t", " ", ";",
    "&", "|", "<", ">", "<<", "(", "{", "!", "!!", "#", "*", "?", "[", "]", "~", "-", "=",
    "EOF", "\nEOF\n", "\tEOF", "A", "B", "%s", "\\\n", "\r", "é", "✓", "🚀", "\u2028",
    "touch {tmp}/" + MARKER, "$(touch {tmp}/" + MARKER + ")", "`touch {tmp}/" + MARKER + "`",
    "a[$(touch {tmp}/" + MARKER + ")]", "<(touch {tmp}/" + MARKER + ")",
]
# NUL cannot reach bash: an argument or a script text ends at it
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
VALUES = st.lists(st.sampled_from(PIECES) | CHARS, max_size=12).map("".join)
# The nested-backtick context prints its value split into words, by bash's IFS only: it is
# pinned down by test_template.py's values, not by arbitrary unicode white space.
FUZZED = [c for c in CONTEXTS if "\\`printf" not in c[0]]


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(context=st.sampled_from(FUZZED), raw=VALUES)
def test_a_generated_value_comes_out_of_bash_verbatim_in_every_context(
        context, raw: str, tmp_path: Path) -> None:
    template, expected = context
    value = raw.replace("{tmp}", str(tmp_path))
    try:
        script = render_shell(template, {"var": {"v": value}})
    except UnsafeValue:
        return  # refused: the value never reaches bash, which is safe too
    # bytes: text mode would turn a value's \r into \n
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, timeout=10,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
    assert not (tmp_path / MARKER).exists(), (value, script)
    assert proc.returncode == 0, (value, script, proc.stderr)
    assert proc.stdout.decode() == expected(value), (value, script)
