"""Templates: references, text rendering, and shell rendering that bash actually runs.

The shell tests execute every rendered script with hostile values in every quoting context:
the value must come out byte for byte, and the `pwned` marker file must never appear.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ojd.errors import OjError
from ojd.template import TemplateError, references, render_shell, render_text

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
