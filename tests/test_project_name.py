"""A project's name from .oj/config.toml: the plain reading the start path uses agrees with
the TOML parser, and hands anything it cannot read plainly to it."""

from __future__ import annotations

import tomllib

import pytest

from ojd.project import UNPLAIN, plain_project

AGREE = [
    'project = "shop"\n',
    'project="shop" # the shop\n',
    '# a comment\n\n  project = "my-shop.2"\n[agents.builder]\ncommand = "x"\n',
    '[agents.builder]\nproject = "not top level"\n',
    'idle = "3s"\nlist = [1, 2]\nproject = "shop"\n',
    '',
    'x = 1\n',
]
UNPLAIN_TEXTS = [
    '"project" = "shop"\n',
    'project.name = "x"\n',
    "project = 'shop'\n",
    'project = "sh\\u006fp"\n',
    'x = """\nproject = "inside a string"\n"""\nproject = "shop"\n',
    'x = [\n  [1, 2],\n]\nproject = "shop"\n',
    'projects = "a"\nproject = "b"\n',
]


@pytest.mark.parametrize("text", AGREE)
def test_the_plain_reading_agrees_with_the_toml_parser(text: str):
    assert plain_project(text.encode()) == tomllib.loads(text).get("project")


@pytest.mark.parametrize("text", UNPLAIN_TEXTS)
def test_what_the_plain_reading_cannot_read_goes_to_the_toml_parser(text: str):
    assert plain_project(text.encode()) is UNPLAIN
