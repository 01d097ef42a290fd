"""Command argument specs: parsing the `args` text and binding command lines to it."""

from __future__ import annotations

import pytest

from ojd.errors import OjError, UsageError
from ojd.runbook.argspec import ArgsError, ArgSpec, ArgSpecError, Flag, Positional, parse_spec

FULL = "<name> <instructions> [base] [--dry-run] [--priority <level>] <files...>"


# ------------------------------------------------------------------------------- parse_spec


def test_parse_full_spec() -> None:
    spec = parse_spec(FULL)
    assert [(p.name, p.required, p.variadic) for p in spec.positionals] == [
        ("name", True, False),
        ("instructions", True, False),
        ("base", False, False),
        ("files", True, True),
    ]
    assert [(f.name, f.takes_value) for f in spec.flags] == [("dry_run", False), ("priority", True)]
    assert spec.usage() == FULL


def test_empty_and_single() -> None:
    assert parse_spec("") == ArgSpec()
    assert parse_spec("   ").usage() == ""
    spec = parse_spec("<description>")
    assert spec.positionals == (Positional("description", True, False, "description"),)


@pytest.mark.parametrize(
    ("text", "usage"),
    [
        ("<a>", "<a>"),
        ("[a]", "[a]"),
        ("<files...>", "<files...>"),
        ("[files...]", "[files...]"),
        ("[ files ... ]", "[files...]"),
        ("--force", "[--force]"),
        ("[--force]", "[--force]"),
        ("--level <n>", "[--level <n>]"),
        ("[--level <n>]", "[--level <n>]"),
        ("--level=<n>", "[--level <n>]"),
        ("[--level=<n>]", "[--level <n>]"),
        ("<base-ref>  [--dry-run]", "<base-ref> [--dry-run]"),
        ("[--x] <a> [b] [c...]", "[--x] <a> [b] [c...]"),
    ],
)
def test_grammar_elements(text: str, usage: str) -> None:
    assert parse_spec(text).usage() == usage


def test_names_store_underscores() -> None:
    spec = parse_spec("<base-ref> [--dry-run] [--max-tries <n>]")
    assert spec.positionals[0] == Positional("base_ref", True, False, "base-ref")
    assert spec.flags == (
        Flag("dry_run", False, "", "--dry-run"),
        Flag("max_tries", True, "n", "--max-tries"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a] <b>", "required <b> after optional [a]; put required arguments first"),
        ("<a...> <b>", "<a...> takes all remaining words, so <b> can never be set; move it last"),
        ("[a...] [b]", "[a...] takes all remaining words"),
        ("<a> [a]", "duplicate name 'a'"),
        ("<dry-run> --dry_run", "duplicate name 'dry_run'"),
        ("<a", "unbalanced '<a'; close it with >"),
        ("[a", "unbalanced '[a'; close it with ]"),
        ("a>", "unbalanced '>'"),
        ("<a]", "unbalanced '<a]'; close it with >"),
        ("--x <y", "unbalanced '<y'"),
        ("<>", "empty name in '<>'"),
        ("[...]", "empty name in '[...]'"),
        ("<a b>", "one name per <...> or [...]"),
        ("<a!>", "bad name 'a!' in '<a!>'; use letters, digits, - and _"),
        ("<1st>", "bad name '1st'"),
        ("word", "'word' is neither <required>, [optional] nor --flag"),
        ("-v", "'-v' is neither"),
        ("[-v]", "bad option '-v' in '[-v]'; write long options like --dry-run"),
        ("[--x <y> <z>]", "too much in '[--x <y> <z>]'"),
        ("[--x y]", "bad value 'y' in '[--x y]'; write --x <value>"),
        ("--x <y...>", "bad value name"),
        ("name<x>", "put a space before '<'"),
    ],
)
def test_spec_errors(text: str, message: str) -> None:
    with pytest.raises(ArgSpecError) as e:
        parse_spec(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_error_types() -> None:
    assert issubclass(ArgSpecError, OjError)
    assert issubclass(ArgsError, UsageError)


# ------------------------------------------------------------------------------- bind


def test_bind_full() -> None:
    spec = parse_spec(FULL)
    assert spec.bind(["n", "do it", "a.py"]) == {
        "name": "n",
        "instructions": "do it",
        "base": None,
        "files": ["a.py"],
        "dry_run": False,
        "priority": None,
    }
    got = spec.bind(["--dry-run", "n", "i", "dev", "--priority=high", "a", "b"])
    assert got == {
        "name": "n",
        "instructions": "i",
        "base": "dev",
        "files": ["a", "b"],
        "dry_run": True,
        "priority": "high",
    }


def test_optional_before_required_variadic_takes_only_spare_words() -> None:
    spec = parse_spec("<name> [base] <files...>")
    assert spec.bind(["n", "f"], {"base": "main"}) == {"name": "n", "base": "main", "files": ["f"]}
    assert spec.bind(["n", "b", "f"])["base"] == "b"


def test_defaults_fill_missing() -> None:
    spec = parse_spec("[base] [rest...] [--priority <p>] [--dry-run]")
    defaults = {"base": "main", "rest": "x", "priority": "low"}
    assert spec.bind([], defaults) == {
        "base": "main",
        "rest": ["x"],
        "priority": "low",
        "dry_run": False,
    }
    assert spec.bind(["dev", "--priority", "high"], defaults)["priority"] == "high"
    assert spec.bind([], {"rest": ["a", "b"], "dry-run": True})["rest"] == ["a", "b"]
    assert spec.bind([], {"dry-run": True})["dry_run"] is True
    assert spec.bind([])["rest"] == []


def test_option_value_forms() -> None:
    spec = parse_spec("[msg] [--title <t>]")
    assert spec.bind(["--title", "--odd"])["title"] == "--odd"
    assert spec.bind(["--title="])["title"] == ""
    assert spec.bind(["--title=a=b"])["title"] == "a=b"
    assert spec.bind(["--title", "x", "--title", "y"])["title"] == "y"
    assert parse_spec("[--dry-run]").bind(["--dry_run"]) == {"dry_run": True}


def test_double_dash_ends_options() -> None:
    spec = parse_spec("<description> [--force]")
    assert spec.bind(["--", "--force"]) == {"description": "--force", "force": False}
    assert spec.bind(["--force", "--", "-x"]) == {"description": "-x", "force": True}
    assert spec.bind(["-"]) == {"description": "-", "force": False}
    assert spec.bind(["-5"]) == {"description": "-5", "force": False}


def test_values_are_strings_as_given() -> None:
    spec = parse_spec("<a> <b>")
    assert spec.bind(["", "x; rm -rf / $(id)"]) == {"a": "", "b": "x; rm -rf / $(id)"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "missing argument <name>"),
        (["n"], "missing argument <instructions>"),
        (["n", "i"], "missing argument <files...>"),
        (["n", "i", "f", "--dyr-run"], "unknown option --dyr-run (did you mean --dry-run?)"),
        (["n", "i", "f", "--prio=1"], "unknown option --prio (did you mean --priority?)"),
        (["n", "i", "f", "--zzz"], "unknown option --zzz (put -- before arguments that start"),
        (["n", "i", "f", "--dry-run=yes"], "--dry-run takes no value"),
        (["n", "i", "f", "--priority"], "--priority needs a value <level>"),
    ],
)
def test_bind_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ArgsError) as e:
        parse_spec(FULL).bind(argv, prog="oj run fix")
    text = str(e.value)
    assert message in text
    assert text.endswith(f"; usage: oj run fix {FULL}")
    assert "\n" not in text


def test_too_many() -> None:
    with pytest.raises(ArgsError, match=r"^unexpected argument extra 'two words'; usage: <a>$"):
        parse_spec("<a>").bind(["x", "extra", "two words"])
    with pytest.raises(ArgsError, match=r"^unexpected argument x; usage:$"):
        parse_spec("").bind(["x"])


def test_check_defaults() -> None:
    spec = parse_spec("[base] [--dry-run]")
    spec.check_defaults({"base": "main", "dry-run": True})
    with pytest.raises(ArgSpecError, match=r"defaults: 'bsae' is not an argument.*'base'"):
        spec.check_defaults({"bsae": "main"})
