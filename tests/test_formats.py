"""TOML and JSON runbooks: the blocks they become and the lines their values map back to."""

from __future__ import annotations

import pytest

from ojd.errors import RunbookError
from ojd.runbook import formats
from ojd.runbook.hcl import HclSyntaxError, parse

TOML = '''\
[pipeline.p]
vars = ["x"]   # a comment [that looks like a table]
defaults.y = 1
l = [ # c
  1,
]

[[pipeline.p.step]]
name = "a"
run = """
x = 1
[not.a.table]
"""

[[pipeline.p.step]]
name = "b"
run = "true"
on_done = { step = "a" }
'''


def test_toml_keys_map_to_their_lines_and_scripts_to_the_line_after_the_quotes():
    doc = formats.parse(TOML, "p.toml")
    (pipeline,) = doc.blocks
    assert (pipeline.type, pipeline.labels, pipeline.line) == ("pipeline", ("p",), 1)
    assert [(a.name, a.line) for a in pipeline.attributes] == [("vars", 2), ("defaults", 3),
                                                              ("l", 4)]
    assert pipeline.attribute("defaults").key_lines == {"y": 3}
    a, b = pipeline.blocks
    assert (a.labels, a.line, b.labels, b.line) == (("a",), 8, ("b",), 15)
    run = a.attribute("run")
    assert (run.value, run.line, run.value_line) == ("x = 1\n[not.a.table]\n", 10, 11)
    assert b.attribute("on_done").line == 18


def test_json_keys_and_list_items_map_to_their_lines():
    text = ('{\n "pipeline": {\n  "p": {\n   "vars": ["x"],\n   "step": [\n'
            '    {"name": "a", "run": "true"},\n    {\n     "name": "b",\n'
            '     "run": "}"\n    }\n   ]\n  }\n }\n}\n')
    (pipeline,) = formats.parse(text, "p.json").blocks
    assert pipeline.line == 3 and pipeline.attribute("vars").line == 4
    a, b = pipeline.blocks
    assert (a.line, a.attribute("run").line, b.line, b.attribute("run").line) == (6, 6, 7, 9)


def test_steps_may_be_a_table_of_named_steps_in_order():
    text = '[pipeline.p.step.second]\nrun = "2"\n[pipeline.p.step.first]\nrun = "1"\n'
    (pipeline,) = formats.parse(text, "p.toml").blocks
    assert [s.labels for s in pipeline.blocks] == [("second",), ("first",)]


@pytest.mark.parametrize("name, text, expected", [
    ("a.json", '{"a": ' * 40 + "1" + "}" * 40, "a.json:1:193: objects and lists nested more"),
    ("a.toml", "a = " + "[" * 40 + "]" * 40, "a.toml:1:"),
    ("a.json", '{\n "a": NaN\n}', "a.json:2:7: 'NaN' is not JSON"),
    ("a.json", '{\n "a": 1e999\n}', "a.json:2:7: number '1e999' is too large"),
    ("a.toml", "[q]\na = inf\n", "a.toml:2:1: 'inf' is not a usable number"),
    ("a.toml", "[q\n", "a.toml:1:3: invalid TOML"),
    ("a.json", "[]", "a.json:1:1: a JSON runbook must be an object"),
])
def test_format_errors_are_one_line_with_a_position(name, text, expected):
    with pytest.raises(HclSyntaxError) as e:
        formats.parse(text, name)
    assert str(e.value).startswith(expected), str(e.value)


def test_shape_errors_name_the_table_to_write():
    with pytest.raises(RunbookError) as e:
        formats.parse('queue = "x"\n[pipeline.p]\nstep = 3\n', "a.toml")
    assert e.value.problems == [
        "a.toml:1: 'queue' must be a table of named queue blocks, e.g. [queue.NAME]",
        "a.toml:3: 'step' must be a table of named step blocks, e.g. [pipeline.p.step.NAME]"]


def test_hcl_nesting_is_bounded_at_32_levels():
    assert parse("a = " + "[" * 32 + "]" * 32).attribute("a").value  # 32 is fine
    with pytest.raises(HclSyntaxError, match="nested more than 32 deep"):
        parse("a = " + "[" * 33 + "]" * 33)
