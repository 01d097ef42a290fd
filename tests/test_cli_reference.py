"""The command tree is documented whole: every command click knows (but hidden ones) is in
`oj --help`'s line for its group, in docs/CLI.md's table and under a heading of its own."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from oj.root import SUBCOMMANDS, cli

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "CLI.md"


def command_tree() -> dict[str, list[str]]:
    """Top-level command -> its visible subcommands (none for a plain command)."""
    ctx = click.Context(cli)
    tree = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None, name
        subs = command.commands if isinstance(command, click.Group) else {}
        tree[name] = sorted(sub for sub, c in subs.items() if not c.hidden)
    return tree


def table_rows() -> dict[str, str]:
    """docs/CLI.md's command table: `oj NAME ...` -> the row's first cell."""
    rows = {}
    for line in CLI_MD.read_text().splitlines():
        m = re.match(r"\| `oj (\w+)([^`]*)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2).replace("\\|", "|")
    return rows


def test_the_tree_is_what_the_lazy_group_lists():
    assert sorted(command_tree()) == sorted(SUBCOMMANDS)
    assert "list" in command_tree()["job"]  # the tree is read, not empty


@pytest.mark.parametrize("group", sorted(SUBCOMMANDS))
def test_oj_help_names_every_subcommand(group: str):
    text = cli.get_help(click.Context(cli, info_name="oj"))
    help_line = SUBCOMMANDS[group][2]
    assert re.search(rf"^  {group} ", text, re.M), text
    for sub in command_tree()[group]:
        assert re.search(rf"\b{sub}\b", help_line), f"oj --help: '{group}' leaves out {sub}"


@pytest.mark.parametrize("group", sorted(SUBCOMMANDS))
def test_cli_md_table_and_headings_name_every_command(group: str):
    rows = table_rows()
    assert group in rows, f"docs/CLI.md's table has no row for oj {group}"
    listed = set(re.findall(r"\w+", rows[group].split("[")[0]))
    headings = re.findall(r"^### (.*)$", CLI_MD.read_text(), re.M)
    for sub in command_tree()[group]:
        assert sub in listed, f"docs/CLI.md's table: 'oj {group}' leaves out {sub}"
        assert any(re.search(rf"\boj {group} {sub}\b", h) for h in headings), \
            f"docs/CLI.md has no section for oj {group} {sub}"
