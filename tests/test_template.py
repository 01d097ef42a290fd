"""Templates: references, text rendering, and shell rendering that bash actually runs.

The shell tests execute every rendered script with hostile values in every quoting context:
the value must come out byte for byte, and the `pwned` marker file must never appear.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ojd.errors import OjError
from ojd.notify import one_line
from ojd.runbook.template import (
    NestingError,
    TemplateError,
    references,
    render_shell,
    render_text,
    shell_contexts,
)

# ------------------------------------------------------------------------------- helpers

HOSTILE = [
    "x; touch {tmp}/pwned",
    "$(touch {tmp}/pwned)",
    "`touch {tmp}/pwned`",
    "'; touch {tmp}/pwned; '",
    '"; touch {tmp}/pwned; "',
    "\\",
    "a\\",
    "\\'; touch {tmp}/pwned; #",
    "line one\nline two; touch {tmp}/pwned\n",
    "\ntouch {tmp}/pwned\n",
    "",
    "héllo wörld ✓ 🚀",
    "EOF\ntouch {tmp}/pwned\nEOF",
    "\tEOF\n\ttouch {tmp}/pwned",
    "}; touch {tmp}/pwned; {",
    ")\ntouch {tmp}/pwned\n(",
    "$'\\x27'; touch {tmp}/pwned",
    "${IFS}touch${IFS}{tmp}/pwned",
    "* ~ ?[a] !! -n --help",
    "case",
    "A=1",
    "a # b\ntouch {tmp}/pwned",
    "\\\ntouch {tmp}/pwned",
    "$(($(touch {tmp}/pwned)))",
    "\"'`$(\\",
]


def _run(script: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=10,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )


def _hostile(tmp: Path) -> list[str]:
    return [v.replace("{tmp}", str(tmp)) for v in HOSTILE]


def _same(v: str) -> str:
    return v


def _cmdsub(v: str) -> str:  # $(...) drops trailing newlines
    return v.rstrip("\n")


# (template, expected stdout for value v); each prints the value of ${var.v} somehow
CONTEXTS: list[tuple[str, Callable[[str], str]]] = [
    ("printf '%s' ${var.v}", _same),
    ("printf '[%s]' ${var.v}", lambda v: f"[{v}]"),
    ("printf '%s' \"${var.v}\"", _same),
    ("printf '%s' \"pre ${var.v} post\"", lambda v: f"pre {v} post"),
    ("printf '%s' 'pre-${var.v}-post'", lambda v: f"pre-{v}-post"),
    ("printf '%s' pre${var.v}post", lambda v: f"pre{v}post"),
    ("printf '%s' $'pre-${var.v}'", lambda v: f"pre-{v}"),
    ("printf '%s' \"$(printf '%s' ${var.v})\"", _cmdsub),
    ("printf '%s' \"$(printf '%s' \"${var.v}\")\"", _cmdsub),
    ("printf '%s' \"$(printf '%s' '${var.v}')\"", _cmdsub),
    ("printf '%s' \"$( (printf '%s' ${var.v}) )\"", _cmdsub),
    ("printf '%s' \"`printf '%s' ${var.v}`\"", _cmdsub),
    ("printf '%s' \"`printf '%s' \"${var.v}\"`\"", _cmdsub),
    ("printf '%s' \"`printf '%s' '${var.v}'`\"", _cmdsub),
    ("printf '%s' \"$(case a in a) printf '%s' ${var.v};; esac)\"", _cmdsub),
    ("printf '%s' \"$(case a in (a) printf '%s' ${var.v};; esac)\"", _cmdsub),
    ("X=${var.v}; printf '%s' \"$X\"", _same),
    ('X="${var.v}"; printf \'%s\' "$X"', _same),
    ("printf '%s' ${UNSET_X:-${var.v}}", _same),
    ("printf '%s' \"$(( 1 + 1 ))${var.v}\"", lambda v: f"2{v}"),
    ("# note: ${var.v}\nprintf '%s' ok", lambda v: "ok"),
    ("printf '%s' ok # ${var.v}", lambda v: "ok"),
    ("printf '%s' \"$(printf ok # ${var.v}\n)\"", lambda v: "ok"),
    ("cat <<EOF\n${var.v}\nEOF", lambda v: v + "\n"),
    ("cat <<EOF\npre ${var.v} \"q\" 'q'\nEOF", lambda v: f"pre {v} \"q\" 'q'\n"),
    ("cat <<-EOF\n\t${var.v}\n\tEOF", lambda v: v + "\n"),
    ("cat <<EOF\n$(printf '%s' ${var.v})\nEOF", lambda v: _cmdsub(v) + "\n"),
    ("cat <<EOF && printf '%s' ${var.v}\nbody\nEOF", lambda v: "body\n" + v),
    ("cat <<A; cat <<'B'\n${var.v}\nA\nb\nB\nprintf '%s' ${var.v}", lambda v: f"{v}\nb\n{v}"),
    ("cat <<EOF\n$(( 2 << 1 ))\nEOF\nprintf '%s' ${var.v}", lambda v: "4\n" + v),
    ("x=$(( 1 << 2 ))\nprintf '%s' ${var.v}", _same),
    ("printf '%s' \\${var.v}", _same),
    ("printf '%s' \"\\${var.v}\"", _same),
    ("printf '%s' '\\${var.v}'", lambda v: "\\" + v),
    ("printf '%s' $'\\${var.v}'", lambda v: "\\" + v),
    ("f() { printf '%s' \"$1\"; }; f ${var.v}", _same),
    ("if true; then printf '%s' ${var.v}; fi", _same),
    ("printf '%s' ${var.v} | cat", _same),
    ("cat <(printf '%s' ${var.v})", _same),
    ("printf '%s' \"$\\\n(printf '%s' ${var.v})\"", _cmdsub),
    ("printf '%s' ok \\\n# ${var.v}", lambda v: "ok"),
    ("printf '%s' \\\n${var.v}", _same),
    ("cat <<< ${var.v}", lambda v: v + "\n"),
    ("for x in ${var.v}; do printf '%s' \"$x\"; done", _same),
    ("case ${var.v} in *) printf '%s' ${var.v};; esac", _same),
    ('[[ ${var.v} == "${var.v}" ]] && printf ok', lambda v: "ok"),
    ("printf '%s' \"${var.v}\"'${var.v}'${var.v}", lambda v: v * 3),
    ("printf '%s' \"$(printf '%s' \"$(printf '%s' ${var.v})\")\"", _cmdsub),
    # nested backticks; the inner output is unquoted, so split into words
    ("printf '%s' \"`printf '%s' \\`printf '%s' ${var.v}\\``\"", lambda v: "".join(v.split())),
    ("printf '%s' \"`printf '%s' $'${var.v}'`\"", _cmdsub),
    ("printf '%s' \"`printf ok # ${var.v}`\"", lambda v: "ok"),
    ("printf '%s' \"$(cat <<EOF\n${var.v}\nEOF\n)\"", _cmdsub),
    ("printf '%s' \"$(cat <<'EOF'\nok\nEOF\n)\" ${var.v}", lambda v: "ok" + v),
]


@pytest.mark.parametrize(("template", "expected"), CONTEXTS, ids=[c[0] for c in CONTEXTS])
def test_shell_values_stay_data(
    template: str, expected: Callable[[str], str], tmp_path: Path
) -> None:
    for value in _hostile(tmp_path):
        script = render_shell(template, {"var": {"v": value}})
        proc = _run(script, tmp_path)
        assert not (tmp_path / "pwned").exists(), (value, script)
        assert proc.returncode == 0, (value, script, proc.stderr)
        assert proc.stdout == expected(value), (value, script)


# ------------------------------------------------------------------ where bash reads again

# Values bash evaluates once more after quoting: in arithmetic an `a[$(cmd)]` runs cmd, in a
# variable name its index does, and a pattern inside "${x/...}" runs `<(cmd)`.
REREAD = [
    "a[$(touch {tmp}/pwned)]",
    "x[`touch {tmp}/pwned`]",
    "a[$(touch {tmp}/pwned)]=1",
    "1+a[$(touch {tmp}/pwned)]",
    "]=$(touch {tmp}/pwned) a[",
    "<(touch {tmp}/pwned)",
    ">(touch {tmp}/pwned)",
    "@(<(touch {tmp}/pwned))",
    "n[$(touch {tmp}/pwned)]",
]
_PLAIN = {
    "int": re.compile(r"[+-]?[0-9]+"),
    "name": re.compile(r"[A-Za-z0-9_]*"),
    "pattern": re.compile(r"[\w .,:=+@%#/-]*"),
}

# (template, kind, the place the error names, a plain value, what the script prints with it)
REREAD_CONTEXTS: list[tuple[str, str, str, str, str]] = [
    # arithmetic
    ("n=1; [[ $n -eq ${var.v} ]] && printf ok", "int", "[[ ... -eq ... ]]", "1", "ok"),
    ("[[ ${var.v} -lt 2 ]] && printf ok", "int", "[[ ... -lt ... ]]", "1", "ok"),
    ('[[ "${var.v}" -ge 1 && -n x ]] && printf ok', "int", "[[ ... -ge ... ]]", "1", "ok"),
    ("if [[ -n x && 3 -gt ${var.v} ]]; then printf ok; fi", "int", "-gt", "2", "ok"),
    ("[[ $(printf %s ${var.v}) -eq 1 ]] && printf ok", "int", "-eq ... ]], through $(...)",
     "1", "ok"),
    ("let n=$(printf %s ${var.v}); printf %s $n", "int", "let, through $(...)", "1", "1"),
    ("(( ${var.v} == 1 )) && printf ok", "int", "((...))", "1", "ok"),
    ("for (( i = 0; i < ${var.v}; i++ )); do printf x; done", "int", "((...))", "3", "xxx"),
    ("let n=${var.v}+1; printf %s $n", "int", "let", "1", "2"),
    ('let "n = ${var.v} * 2"; printf %s $n', "int", "let", "3", "6"),
    ("let n=(${var.v}); printf %s $n", "int", "let", "4", "4"),
    ("declare -i n=${var.v}; printf %s $n", "int", "declare -i n=", "7", "7"),
    ("declare -i n; n=${var.v}; printf %s $n", "int", "of a declare -i variable", "7", "7"),
    ("declare -i n=0; n+=${var.v}; printf %s $n", "int", "of a declare -i variable", "7", "7"),
    ("f() { local -i n=${var.v}; printf %s $n; }; f", "int", "local -i n=", "7", "7"),
    ("declare -ia a=(${var.v} 2); printf %s ${a[0]}", "int", "integer array a=", "5", "5"),
    ('a[${var.v}]=ok; printf %s "${a[3]}"', "int", "a[index]=", "3", "ok"),
    ('a=([${var.v}]=ok); printf %s "${a[3]}"', "int", "a=([index]=...)", "3", "ok"),
    ('declare -A m; m[${var.v}]=ok; printf %s "${m[3]}"', "int", "m[index]=", "3", "ok"),
    ("printf %s $(( ${var.v} + 1 ))", "int", "$((...))", "1", "2"),
    # variable names: bash evaluates an index in them
    ('printf -v ${var.v} %s ok; printf %s "$name"', "name", "printf -v NAME", "name", "ok"),
    ('printf -v "a[${var.v}]" %s ok; printf %s "${a[2]}"', "int", "index in printf -v NAME",
     "2", "ok"),
    ('read -a ${var.v} <<< "o k"; printf %s "${arr[0]}${arr[1]}"', "name", "read -a NAME",
     "arr", "ok"),
    ('read -r ${var.v} <<< ok; printf %s "$x"', "name", "read NAME", "x", "ok"),
    ('read -r "a[${var.v}]" <<< ok; printf %s "${a[1]}"', "int", "index in read NAME", "1",
     "ok"),
    ("x=1; test -v ${var.v} && printf ok", "name", "test -v NAME", "x", "ok"),
    ("x=1; [ -v ${var.v} ] && printf ok", "name", "[ -v NAME", "x", "ok"),
    ("x=1; [[ -v ${var.v} ]] && printf ok", "name", "[[ -v NAME ]]", "x", "ok"),
    ('a=(1 2); test -v "a[${var.v}]" && printf ok', "int", "index in test -v NAME", "1", "ok"),
    ("a=(1 2); [[ -v a[${var.v}] ]] && printf ok", "int", "index in [[ -v NAME ]]", "1", "ok"),
    ('declare ${var.v}=ok; printf %s "$x"', "name", "declare NAME", "x", "ok"),
    ('f() { local ${var.v}=ok; printf %s "$x"; }; f', "name", "local NAME", "x", "ok"),
    ('declare -n r=${var.v}; x=ok; printf %s "$r"', "name", "declare -n r=NAME", "x", "ok"),
    ('declare -n r; r=${var.v}; x=ok; printf %s "$r"', "name", "of a declare -n variable", "x",
     "ok"),
    ('a=(x y); unset "a[${var.v}]"; printf %s "${a[*]}"', "int", "index in unset NAME", "0",
     "y"),
    # patterns and replacements inside "...": bash runs <(...) there
    ('x=abc; printf %s "${x/${var.v}/X}"', "pattern", '${x/...} in "..."', "b", "aXc"),
    ('x=abc; printf %s "${x/b/${var.v}}"', "pattern", '${x/...} in "..."', "fix login",
     "afix loginc"),
    ('x=abc; printf %s "${x//[ac]/${var.v}}"', "pattern", "${x//...}", "-", "-b-"),
    ('x=abc; printf %s "${x#${var.v}}"', "pattern", "${x#...}", "a", "bc"),
    ('x=abc; printf %s "${x%%${var.v}}"', "pattern", "${x%%...}", "c", "ab"),
    ('x=abc; printf %s "${x^^${var.v}}"', "pattern", "${x^^...}", "b", "aBc"),
    ('a=(ab cb); printf %s "${a[*]/b/${var.v}}"', "pattern", "${a[*]/...}", "-", "a- c-"),
    ('x=abc; y="${x/b/${var.v}}"; printf %s "$y"', "pattern", "${x/...}", "B", "aBc"),
    ("x=abc; cat <<EOF\n${x/b/${var.v}}\nEOF", "pattern", "${x/...} in a heredoc", "B",
     "aBc\n"),
]


@pytest.mark.parametrize(
    ("template", "kind", "place", "plain", "expected"),
    REREAD_CONTEXTS,
    ids=[c[0] for c in REREAD_CONTEXTS],
)
def test_values_bash_reads_again_must_be_plain(
    template: str, kind: str, place: str, plain: str, expected: str, tmp_path: Path
) -> None:
    script = render_shell(template, {"var": {"v": plain}})
    proc = _run(script, tmp_path)
    assert (proc.returncode, proc.stdout) == (0, expected), (script, proc.stderr)
    assert [(c.kind, c.ref) for c in shell_contexts(template)] == [(kind, "var.v")]
    values = [v.replace("{tmp}", str(tmp_path)) for v in REREAD] + _hostile(tmp_path)
    for value in values:
        try:
            script = render_shell(template, {"var": {"v": value}})
        except TemplateError as e:
            assert not _PLAIN[kind].fullmatch(value), (value, str(e))
            assert str(e).startswith("${var.v} is used"), str(e)
            assert place in str(e), str(e)
            continue
        assert _PLAIN[kind].fullmatch(value), (value, script)  # only plain values render
        _run(script, tmp_path)
        assert not (tmp_path / "pwned").exists(), (value, script)


def test_plain_double_quoted_strings_are_not_restricted(tmp_path: Path) -> None:
    # the same commands, with values where bash does not read them again: nothing runs
    pwned = tmp_path / "pwned"
    v = f"it's \"a\" $(touch {pwned}) `touch {pwned}` <(touch {pwned}) a[$(touch {pwned})] *"
    for template, expected in [
        ('printf %s "${var.v}"', v),
        ('read -r a b <<< "${var.v}"; printf %s "$b"', v.split(" ", 1)[1]),
        ('declare t="${var.v}"; printf %s "$t"', v),
        ('f() { local t=${var.v}; printf %s "$t"; }; f', v),
        ('x="${var.v}"; printf %s "${x/a/b}"', v.replace("a", "b", 1)),
        ("while read -r l; do printf %s \"$l\"; done < <(printf '%s\\n' \"${var.v}\")", v),
        ('read -r x <<< ${var.v}; printf %s "$x"', v),
        ('a=("${var.v}" ${var.v}); printf %s "${a[1]}"', v),
        ('[[ "${var.v}" == it* && ${var.v} != x ]] && printf ok', "ok"),
        ('case "${var.v}" in it*) printf ok;; esac', "ok"),
        ('x=abc; printf %s "${x/b/"${var.v}"}"', f"a{v}c"),
        ('x=abc; printf %s ${x/b/${var.v}}', "".join(f"a{v}c".split())),  # split, not run
        ('printf %s "${var.v}" > f; printf %s "$(< f)"', v),
    ]:
        proc = _run(render_shell(template, {"var": {"v": v}}), tmp_path)
        assert (proc.returncode, proc.stdout) == (0, expected), (template, proc.stderr)
        assert not pwned.exists(), template
        assert shell_contexts(template) == [], template


def test_arithmetic_error_names_the_value_and_place() -> None:
    with pytest.raises(TemplateError) as e:
        render_shell("[[ $n -eq ${var.n} ]]", {"var": {"n": "a[$(touch PWNED)]"}})
    assert str(e.value) == (
        "${var.n} is used in shell arithmetic ([[ ... -eq ... ]]) and must be an integer, "
        "got 'a[$(touch PWNED)]'"
    )


# ------------------------------------------------------------------------------- raw()


def test_raw_pastes_the_value_as_shell_code(tmp_path: Path) -> None:
    ctx = {"var": {"task": {"cmd": "printf '%s' hi | tr a-z A-Z"}, "n": "2"}}
    script = render_shell("${raw(var.task.cmd)}; echo ${ raw( var.n ) }", ctx)
    assert script == "printf '%s' hi | tr a-z A-Z; echo 2"
    assert _run(script, tmp_path).stdout == "HI2\n"
    assert render_text("run: ${raw(var.n)}", ctx) == "run: 2"
    assert references("${raw(var.task.cmd)} ${var.n}") == ["var.task.cmd", "var.n"]
    with pytest.raises(TemplateError, match=r"unsupported expression \$\{raw\(x\)\}"):
        references("${raw(x)}")


def test_command_position_is_reported_unless_raw() -> None:
    found = shell_contexts('${var.cmd} --flag\nx=$("${var.cmd}")\n${raw(var.cmd)} | tee')
    assert [(c.kind, c.ref, c.offset) for c in found] == [
        ("command", "var.cmd", 0),
        ("command", "var.cmd", 23),
    ]
    # a value that is only part of the command word names a program, not a command line
    assert shell_contexts('"${local.repo}/bin/tool" ${var.x}; A=${var.x} cmd') == []


def test_shell_contexts_lists_every_place() -> None:
    template = "let n=${var.a}\nprintf -v ${var.b} x\necho \"${x/y/${var.c}}\" $(( ${var.d} ))"
    assert [(c.ref, c.kind, c.place) for c in shell_contexts(template)] == [
        ("var.a", "int", "let"),
        ("var.b", "name", "printf -v NAME"),
        ("var.c", "pattern", '${x/...} in "..."'),
        ("var.d", "int", "$((...))"),
    ]
    assert shell_contexts("echo $${var.x} ${var.y}") == []  # an escape is no reference
    refused = shell_contexts("cat <<${var.x}\nx\n")  # no value can go there
    assert [(c.kind, c.place) for c in refused] == [
        ("refused", "${var.x}: a value cannot be a heredoc delimiter or follow $")
    ]


# ------------------------------------------------------------------------------- logs


def test_one_line_escapes_control_characters() -> None:
    assert one_line("done\n==> job done\r\x1b[2J\t\u2028ok") == (
        "done\\n==> job done\\r\\x1b[2J\\t\\u2028ok"
    )
    assert one_line("plain é ✓") == "plain é ✓"


@pytest.mark.parametrize(
    "template",
    [
        "cat <<'EOF'\n${var.v}\nEOF",
        "cat <<'EOF'\npre ${var.v}\nEOF",
        'cat <<"EOF"\n${var.v}\nEOF',
        "cat <<\\EOF\n${var.v}\nEOF",
    ],
)
def test_quoted_heredoc_inserts_as_is(template: str, tmp_path: Path) -> None:
    for value in _hostile(tmp_path):
        if "EOF" in value:  # covered by test_value_cannot_end_heredoc
            continue
        script = render_shell(template, {"var": {"v": value}})
        proc = _run(script, tmp_path)
        assert not (tmp_path / "pwned").exists(), (value, script)
        prefix = "pre " if "pre" in template else ""
        assert proc.stdout == prefix + value + "\n", (value, script)


@pytest.mark.parametrize(
    "template",
    [
        "cat <<'EOF'\n${var.v}\nEOF\n",
        "cat <<'EOF'\nE${var.v}\nEOF\n",
        "cat <<EOF\n$(printf '%s' ${var.v})\nEOF\n",
        "cat <<EOF\n$(printf '%s' '${var.v}')\nEOF\n",
    ],
)
def test_value_cannot_end_heredoc(template: str, tmp_path: Path) -> None:
    # a line of the value (or the value with the template text before it) equals the delimiter
    value = f"OF\ntouch {tmp_path}/pwned\n" if "\nE$" in template else "x\nEOF\ntouch x\n"
    with pytest.raises(TemplateError, match=r"\$\{var\.v\}.*heredoc <<EOF"):
        render_shell(template, {"var": {"v": value}})


def test_arithmetic_takes_only_integers(tmp_path: Path) -> None:
    template = "printf '%s' $(( ${var.n} + 1 ))"
    assert _run(render_shell(template, {"var": {"n": 41}}), tmp_path).stdout == "42"
    assert _run(render_shell(template, {"var": {"n": "-3"}}), tmp_path).stdout == "-2"
    for value in [*_hostile(tmp_path), "a[$(touch pwned)]", "x=1", "1 + 1"]:
        with pytest.raises(TemplateError, match=r"\$\{var\.n\} is used in shell arithmetic"):
            render_shell(template, {"var": {"n": value}})
    for template in [
        '(( i = "${var.n}" ))',
        "echo $[ ${var.n} ]",
        "x=abc; echo ${x:${var.n}}",
        "x=abc; echo \"${x:1:${var.n}}\"",
        'a=(1); echo "${a[${var.n}]}"',
        "echo ${a[0]:-x}${b:${var.n}}",
    ]:
        with pytest.raises(TemplateError, match="must be an integer"):
            render_shell(template, {"var": {"n": "a[$(touch pwned)]"}})
        assert _run(render_shell(template, {"var": {"n": "1"}}), tmp_path).returncode == 0
    assert (
        _run(render_shell("x=abc; printf %s ${x:${var.n}}", {"var": {"n": 1}}), tmp_path).stdout
        == "bc"
    )
    # operands of word operators are not arithmetic
    ok = render_shell('echo "${a[0]:-${var.n}}" ${x/y/${var.n}}', {"var": {"n": "z"}})
    assert ok == "echo \"${a[0]:-z}\" ${x/y/'z'}"


def test_quoted_param_default(tmp_path: Path) -> None:
    template = "printf '%s' \"${UNSET_X:-${var.v}}\""
    for value in _hostile(tmp_path):
        if "'" in value:
            with pytest.raises(TemplateError, match="assign it to a variable"):
                render_shell(template, {"var": {"v": value}})
            continue
        script = render_shell(template, {"var": {"v": value}})
        proc = _run(script, tmp_path)
        assert not (tmp_path / "pwned").exists(), (value, script)
        assert proc.stdout == value, (value, script)


def test_runbook_example(tmp_path: Path) -> None:
    template = (
        "printf '%s\\n' \"${local.repo}\" ${var.mr.branch}\n"
        "BRANCH=${var.mr.branch}\n"
        'printf \'%s\' \'{"branch": "\'"$BRANCH"\'", "title": "fix: ${var.bug.title}"}\'\n'
    )
    ctx = {
        "local": {"repo": "/a b/$(x)"},
        "var": {"mr": {"branch": "x; touch pwned"}, "bug": {"title": "it's; rm -rf /"}},
    }
    script = render_shell(template, ctx)
    assert '"/a b/\\$(x)"' in script
    proc = _run(script, tmp_path)
    assert proc.stdout == (
        '/a b/$(x)\nx; touch pwned\n{"branch": "x; touch pwned", "title": "fix: it\'s; rm -rf /"}'
    )
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------- quoting


def test_quoting_per_context() -> None:
    ctx = {"var": {"v": "a'b\"c$d`e\\f"}}
    assert render_shell("echo ${var.v}", ctx) == "echo 'a'\"'\"'b\"c$d`e\\f'"
    assert render_shell('echo "${var.v}"', ctx) == 'echo "a\'b\\"c\\$d\\`e\\\\f"'
    assert render_shell("echo 'x${var.v}'", ctx) == "echo 'xa'\\''b\"c$d`e\\f'"
    assert render_shell("echo ${var.e}", {"var": {"e": ""}}) == "echo ''"
    # always quoted: a bare value could be a keyword or an assignment
    assert render_shell("${var.w} x", {"var": {"w": "A=b"}}) == "'A=b' x"


def test_env_refs_left_for_bash(tmp_path: Path) -> None:
    template = 'echo "${HOME}" ${PATH:-/bin} $${var.x} ${#ARR[@]} ${X%.*}'
    assert render_shell(template, {}) == 'echo "${HOME}" ${PATH:-/bin} ${var.x} ${#ARR[@]} ${X%.*}'
    proc = _run(render_shell("printf '%s' \"${FOO:-dflt}\"", {}), tmp_path)
    assert proc.stdout == "dflt"


def test_shell_and_text_agree_on_values() -> None:
    ctx = {"var": {"n": 3, "f": 1.5, "t": True, "no": False, "none": None, "d": {"a": [1, "é"]}}}
    tpl = "${var.n} ${var.f} ${var.t} ${var.no} [${var.none}] ${var.d}"
    assert render_text(tpl, ctx) == '3 1.5 true false [] {"a":[1,"é"]}'
    assert render_shell("echo ${var.t}", ctx) == "echo 'true'"


# ------------------------------------------------------------------------------- text


def test_render_text_inserts_as_is() -> None:
    ctx = {"var": {"mr": {"branch": "x; $(rm) 'q'"}}, "invoke": {"dir": "/w"}}
    out = render_text("merged ${var.mr.branch} in ${ invoke.dir }", ctx)
    assert out == "merged x; $(rm) 'q' in /w"


def test_render_text_env_refs() -> None:
    env = {"USER": "ann", "EMPTY": ""}
    tpl = "${USER} ${MISSING} ${MISSING:-none} ${EMPTY:-dflt} ${USER:-x}"
    assert render_text(tpl, {}, env) == "ann  none dflt ann"


def test_render_text_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OJ_TEMPLATE_TEST", "yes")
    assert render_text("${OJ_TEMPLATE_TEST}", {}) == "yes"


def test_escape_renders_literal() -> None:
    ctx = {"var": {"x": "v"}}
    assert render_text("$${var.x} ${var.x} $${HOME}", ctx, {"HOME": "/h"}) == "${var.x} v ${HOME}"
    assert render_shell("echo '$${var.x}'", ctx) == "echo '${var.x}'"


def test_nested_dicts_and_lists() -> None:
    ctx = {"item": {"a": {"b": {"c": "deep"}}, "files": ["x", "y"]}}
    assert render_text("${item.a.b.c} ${item.files.1} ${item.files}", ctx) == 'deep y ["x","y"]'


# ------------------------------------------------------------------------------- errors


def test_missing_keys_name_the_reference() -> None:
    ctx = {"var": {"mr": {"title": "t"}, "name": "n"}, "item": {"files": ["a"]}}
    with pytest.raises(TemplateError, match=r"^unknown reference \$\{var\.nope\}$"):
        render_text("${var.nope}", ctx)
    with pytest.raises(TemplateError, match=r"did you mean 'name'"):
        render_text("${var.nmae}", ctx)
    with pytest.raises(TemplateError, match=r"^\$\{var\.mr\.branch\}: 'mr' has no key 'branch'$"):
        render_shell("git merge ${var.mr.branch}", ctx)
    with pytest.raises(TemplateError, match=r"\$\{var\.name\.x\}: 'name' is a str"):
        render_text("${var.name.x}", ctx)
    with pytest.raises(TemplateError, match=r"\$\{item\.files\.3\}: 'files' has no item 3"):
        render_text("${item.files.3}", ctx)
    with pytest.raises(TemplateError, match=r"\$\{args\.x\}: no args values here"):
        render_text("${args.x}", ctx)


def test_bad_references() -> None:
    assert references("echo ${foo.bar}") == ["foo.bar"]  # the caller reports where it is
    with pytest.raises(TemplateError, match=r"unknown reference \$\{foo\.bar\}; references start"):
        render_shell("echo ${foo.bar}", {"foo": {"bar": 1}})
    with pytest.raises(TemplateError, match=r"unsupported expression \$\{var\.x \+ 1\}"):
        render_text("${var.x + 1}", {"var": {"x": 1}})
    with pytest.raises(TemplateError, match=r"unclosed reference \$\{var\.x"):
        references("echo ${var.x")
    assert issubclass(TemplateError, OjError)


# ------------------------------------------------------------------------------- references


def test_references() -> None:
    tpl = (
        'git -C "${local.repo}" merge ${var.mr.branch}\n'
        "cd ${ invoke.dir } && echo ${HOME} ${X:-d} $${var.skipped} ${var.mr.branch} ${item.a-b.0}"
    )
    assert references(tpl) == ["local.repo", "var.mr.branch", "invoke.dir", "item.a-b.0"]
    assert references("no refs, ${#A[@]} $$ $x") == []


_LEVELS = [("${X:-", "}"), ("$(", ")"), ('"$(echo ', ')"'), ("<(", ")"), ("$((", "))"),
           ("$${X:-", "}"), ("$[", "]")]


@pytest.mark.parametrize("opener,closer", _LEVELS)
def test_expansions_nest_at_most_32_deep(opener: str, closer: str) -> None:
    # a reference is a level too: 31 around it make 32
    assert references("echo " + opener * 31 + "${var.a}" + closer * 31) == ["var.a"]
    deep = "echo " + opener * 32 + "${var.a}" + closer * 32
    with pytest.raises(NestingError) as e:
        references(deep)
    assert str(e.value) == "${...} and $(...) nested more than 32 deep; flatten it"
    assert e.value.offset == deep.index("${var.a}")  # where the 33rd level opens
    assert shell_contexts(deep) == []  # `references` says why


def test_levels_closed_before_the_next_opens_do_not_add_up() -> None:
    flat = "".join(f"a=$(echo ${{X:-{i}}}) <(true) ${{var.a}}\n" for i in range(1000))
    assert references(flat) == ["var.a"]
    assert references("echo " + ")}]" * 100 + "$(" * 32 + ")" * 32) == []  # nothing below 0


def test_a_template_nested_100000_deep_is_refused_and_still_scanned_in_one_pass() -> None:
    deep = "echo " + "${X:-" * 100_000 + "${var.a}" + "}" * 100_000
    with pytest.raises(NestingError, match="nested more than 32 deep"):
        references(deep)
    assert shell_contexts(deep) == []
    # rendering does not check (what renders passed `references`), but scans it all the same
    out = render_text(deep, {"var": {"a": "v"}}, env={})
    assert out == deep.replace("${var.a}", "v")


def test_single_quotes_inside_a_quoted_param_default_are_literal(tmp_path: Path) -> None:
    # in "${X:-'...'}" bash keeps the ' characters and still expands $(...) between them
    template = "printf '%s' \"${UNSET_X:-'${var.v}'}\""
    for value in _hostile(tmp_path):
        try:
            script = render_shell(template, {"var": {"v": value}})
        except TemplateError:
            continue  # refused is safe
        proc = _run(script, tmp_path)
        assert not (tmp_path / "pwned").exists(), (value, script)
        assert proc.stdout == f"'{value}'", (value, script)
