"""Tests for ojd.runbook.hcl: the runbook HCL subset parser."""

from __future__ import annotations

import pickle

import pytest

from ojd.runbook.hcl import Attribute, Block, HclSyntaxError, parse

RUNBOOK = r"""# Merge queue
queue "merges" {
  type     = "persisted"
  vars     = ["branch", "title", "base"]
  defaults = { base = "main" }
  retry    = { attempts = 3, cooldown = "30s" }
}

pipeline "merge" {
  vars = ["mr"]
  locals {
    repo = "$(git -C ${invoke.dir} rev-parse --show-toplevel)"
  }
  step "submit" {
    run = <<-SHELL
      REPO="$(git -C ${invoke.dir} rev-parse --show-toplevel)"
      oj queue push merges '{"branch": "'"$BRANCH"'", "title": "fix: ${var.bug.title}"}'
      echo "a\"b" 'c\d'
    SHELL
    on_done = { step = "done" }
  }
}
"""

EXPECTED_RUN = (
    'REPO="$(git -C ${invoke.dir} rev-parse --show-toplevel)"\n'
    'oj queue push merges \'{"branch": "\'"$BRANCH"\'", "title": "fix: ${var.bug.title}"}\'\n'
    'echo "a\\"b" \'c\\d\'\n'
)


def value(text: str, name: str = "x") -> object:
    attr = parse(text).attribute(name)
    assert attr is not None
    return attr.value


def error(text: str, filename: str = "t.hcl") -> HclSyntaxError:
    with pytest.raises(HclSyntaxError) as info:
        parse(text, filename)
    return info.value


def where(err: HclSyntaxError) -> tuple[int, int]:
    return err.line, err.column


# -- the realistic runbook --------------------------------------------------------------


def test_realistic_runbook_parses_into_expected_structure():
    doc = parse(RUNBOOK, "merge.hcl")
    assert doc.type == "" and doc.labels == () and doc.attributes == ()
    queue, pipeline = doc.blocks
    assert (queue.type, queue.labels, queue.line) == ("queue", ("merges",), 2)
    assert {a.name: a.value for a in queue.attributes} == {
        "type": "persisted",
        "vars": ["branch", "title", "base"],
        "defaults": {"base": "main"},
        "retry": {"attempts": 3, "cooldown": "30s"},
    }
    assert [a.name for a in queue.attributes] == ["type", "vars", "defaults", "retry"]
    assert (pipeline.type, pipeline.labels, pipeline.line) == ("pipeline", ("merge",), 9)
    assert pipeline.attribute("vars").value == ["mr"]
    locals_, step = pipeline.blocks
    assert (locals_.type, locals_.labels, locals_.line) == ("locals", (), 11)
    assert locals_.attribute("repo").value == ("$(git -C ${invoke.dir} rev-parse --show-toplevel)")
    assert (step.type, step.labels, step.line) == ("step", ("submit",), 14)
    assert step.attribute("on_done").value == {"step": "done"}
    assert step.attribute("missing") is None


def test_heredoc_keeps_quotes_and_backslashes_byte_for_byte():
    step = parse(RUNBOOK).blocks[1].blocks[1]
    assert step.attribute("run").value == EXPECTED_RUN


def test_runbook_attribute_and_object_key_lines():
    doc = parse(RUNBOOK)
    queue = doc.blocks[0]
    assert [a.line for a in queue.attributes] == [3, 4, 5, 6]
    assert queue.attribute("retry").key_lines == {"attempts": 6, "cooldown": 6}
    step = doc.blocks[1].blocks[1]
    assert step.attribute("run").line == 15
    assert step.attribute("on_done").line == 20
    assert step.attribute("on_done").key_lines == {"step": 20}


# -- structure and line numbers ----------------------------------------------------------


def test_empty_file_is_an_empty_document():
    doc = parse("")
    assert doc == Block("", (), (), (), 1)


def test_file_of_only_comments_is_an_empty_document():
    doc = parse("# one\n// two\n/* three\n   four */\n\n   # indented\n")
    assert doc.attributes == () and doc.blocks == ()


def test_comments_of_all_three_kinds_anywhere_whitespace_is_allowed():
    doc = parse(
        """
        # hash comment
        a = 1 # trailing hash
        b = 2 // trailing slashes
        c /* inline */ = /* before value */ 3 /* after value */
        step /* between */ "x" /* before brace */ { // after brace
          run = "true" /* multi
          line */
        }
        l = [ # in a list
          1, // after item
          /* block */ 2,
        ]
        o = {
          k = 1 # in an object
        }
        """
    )
    assert [(a.name, a.value) for a in doc.attributes] == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("l", [1, 2]),
        ("o", {"k": 1}),
    ]
    assert doc.blocks[0].attribute("run").value == "true"


def test_comment_markers_inside_strings_are_text():
    assert value('x = "a # b // c /* d */"') == "a # b // c /* d */"


def test_block_attribute_and_key_lines_are_one_based_source_lines():
    doc = parse(
        '\n\njob "a" {\n  x = 1\n\n  obj = {\n    one = 1\n\n    "two" = 2\n  }\n'
        "  inner {\n    y = 2\n  }\n}\n"
    )
    (job,) = doc.blocks
    assert job.line == 3
    assert [(a.name, a.line) for a in job.attributes] == [("x", 4), ("obj", 6)]
    assert job.attribute("obj").key_lines == {"one": 7, "two": 9}
    assert job.attribute("x").key_lines == {}
    assert job.blocks[0].line == 11
    assert job.blocks[0].attribute("y").line == 12


def test_key_lines_cover_top_level_keys_only():
    attr = parse("x = {\n  a = {\n    b = 1\n  }\n  c = 2\n}\n").attribute("x")
    assert attr.key_lines == {"a": 2, "c": 5}
    assert attr.value == {"a": {"b": 1}, "c": 2}


def test_one_line_blocks():
    doc = parse('step "x" { run = "true" }\nempty {}\nouter { inner "i" { a = 1 } }\n')
    step, empty, outer = doc.blocks
    assert step.labels == ("x",) and step.attribute("run").value == "true"
    assert empty.attributes == () and empty.blocks == ()
    assert outer.blocks[0].labels == ("i",) and outer.blocks[0].attribute("a").value == 1


def test_block_labels_may_be_quoted_or_bare_and_any_number():
    doc = parse('a {}\nb one {}\nc "two" three "four five" {}\n')
    assert [blk.labels for blk in doc.blocks] == [(), ("one",), ("two", "three", "four five")]


def test_identifiers_may_contain_dashes_and_digits():
    doc = parse("on-done_2 = 1\nmy-block x-1 {}\n")
    assert doc.attributes[0].name == "on-done_2"
    assert doc.blocks[0].type == "my-block" and doc.blocks[0].labels == ("x-1",)


def test_attributes_and_blocks_keep_source_order():
    doc = parse("b = 1\na = 2\nstep two {}\nx = 3\nstep one {}\n")
    assert [a.name for a in doc.attributes] == ["b", "a", "x"]
    assert [blk.labels for blk in doc.blocks] == [("two",), ("one",)]


def test_crlf_line_endings_are_accepted():
    doc = parse('a = "x"\r\nb = <<EOF\r\nline\r\nEOF\r\n')
    assert doc.attribute("a").value == "x"
    assert doc.attribute("b").value == "line\n"
    assert doc.attribute("b").line == 2


def test_nodes_are_frozen_and_comparable():
    attr = parse("x = 1").attribute("x")
    assert attr == Attribute("x", 1, 1, {})
    with pytest.raises(AttributeError):
        attr.value = 2  # type: ignore[misc]


# -- values -----------------------------------------------------------------------------


def test_numbers_ints_floats_and_negatives():
    doc = parse("a = 3\nb = -7\nc = 1.5\nd = -0.25\ne = 1e3\nf = 2.5E-2\n")
    values = {a.name: a.value for a in doc.attributes}
    assert values == {"a": 3, "b": -7, "c": 1.5, "d": -0.25, "e": 1000.0, "f": 0.025}
    assert type(values["a"]) is int and type(values["e"]) is float


def test_true_false_null():
    doc = parse("a = true\nb = false\nc = null\n")
    assert [a.value for a in doc.attributes] == [True, False, None]


def test_lists_with_newlines_and_trailing_comma():
    assert value('x = [\n  "a",\n  "b",\n]') == ["a", "b"]
    assert value("x = []") == []
    assert value("x = [1, 2, 3, ]") == [1, 2, 3]
    assert value("x = [\n]") == []


def test_objects_with_commas_newlines_colons_and_quoted_keys():
    assert value('x = { a = 1, "b c" = 2, d: 3 }') == {"a": 1, "b c": 2, "d": 3}
    assert value("x = {\n  a = 1\n  b = 2,\n  c = 3\n}") == {"a": 1, "b": 2, "c": 3}
    assert value("x = {}") == {}
    assert value("x = { a = 1, }") == {"a": 1}


def test_nested_lists_and_objects():
    text = """
    x = {
      list = [1, [2, 3], { k = "v" }]
      obj  = { inner = { deep = [true, null] } }
      hd   = [<<-EOF
    text
    EOF
      , "after"]
    }
    """
    assert value(text) == {
        "list": [1, [2, 3], {"k": "v"}],
        "obj": {"inner": {"deep": [True, None]}},
        "hd": ["text\n", "after"],
    }


def test_quoted_string_escapes_are_processed():
    text = r'x = "q\" b\\ n\n t\t r\r u\u00e9 U\U0001F600"'
    assert value(text) == 'q" b\\ n\n t\t r\r u\u00e9 U\U0001f600'


def test_template_sequences_are_kept_verbatim():
    assert value('x = "${var.a} and %{ if x }y%{ endif }"') == ("${var.a} and %{ if x }y%{ endif }")
    assert value('x = "$${literal} and %%{literal}"') == "$${literal} and %%{literal}"
    assert value('x = "cost: $5, 100% sure"') == "cost: $5, 100% sure"


def test_quoted_string_inside_template_does_not_end_the_string():
    assert value('x = "${var.x == "a"}"') == '${var.x == "a"}'
    assert value('x = "pre ${ "nested" } post"') == 'pre ${ "nested" } post'
    assert value('x = "${ "a}b" }"') == '${ "a}b" }'
    assert value('x = "${ {a = "}"} }"') == '${ {a = "}"} }'
    assert value('x = "${ "x ${ "y" } z" }"') == '${ "x ${ "y" } z" }'


def test_escapes_inside_template_are_not_processed():
    assert value(r'x = "${ "a\"b" }\n"') == '${ "a\\"b" }\n'


def test_heredoc_plain_keeps_indentation_and_adds_trailing_newline():
    assert value("x = <<EOF\n  one\n\ttwo\nEOF\n") == "  one\n\ttwo\n"


def test_indented_heredoc_strips_common_leading_whitespace():
    text = "x = <<-EOT\n    a\n      b\n\n    c\n  EOT\n"
    assert value(text) == "a\n  b\n\nc\n"


def test_indented_heredoc_blank_lines_become_empty():
    text = "x = <<-EOT\n    a\n  \n    b\n    EOT\n"
    assert value(text) == "a\n\nb\n"


def test_heredoc_marker_line_may_be_indented_and_file_may_end_after_it():
    assert value("x = <<EOF\nbody\n   EOF") == "body\n"


def test_empty_heredoc_is_empty_string():
    assert value("x = <<EOF\nEOF\n") == ""


def test_heredoc_body_is_not_scanned_for_templates_or_comments():
    text = 'x = <<EOF\n${ "unbalanced" # not a comment\n/* nor this\n$${x} \\n\nEOF\ny = 1\n'
    doc = parse(text)
    assert doc.attribute("x").value == '${ "unbalanced" # not a comment\n/* nor this\n$${x} \\n\n'
    assert doc.attribute("y").line == 6


def test_heredoc_marker_text_inside_a_line_does_not_end_it():
    assert value("x = <<EOF\necho EOF\nEOFX\nEOF\n") == "echo EOF\nEOFX\n"


# -- errors -----------------------------------------------------------------------------


def test_error_str_is_file_line_column_message():
    err = HclSyntaxError("merge.hcl", 12, 5, "expected '=' after attribute name 'run'")
    assert str(err) == "merge.hcl:12:5: expected '=' after attribute name 'run'"
    assert (err.filename, err.line, err.column) == ("merge.hcl", 12, 5)
    assert err.message == "expected '=' after attribute name 'run'"


def test_error_survives_pickling():
    err = HclSyntaxError("f.hcl", 1, 2, "boom")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == 1


def test_missing_equals_after_attribute_name():
    err = error('step "a" {\n    run "echo"\n}\n', "merge.hcl")
    assert str(err) == "merge.hcl:2:5: expected '=' after attribute name 'run'"
    err = error("x: 1\n")
    assert where(err) == (1, 1)
    assert "expected '=' after attribute name 'x'" in err.message
    assert where(error("a\n")) == (1, 1)


def test_unterminated_string_reports_the_line_it_started():
    err = error('a = 1\nb = "open\nc = "x"\n')
    assert where(err) == (2, 5)
    assert err.message.startswith("unterminated string")
    assert where(error('b = "open')) == (1, 5)
    assert where(error('x = "abc\\')) == (1, 5)


def test_unterminated_template_sequence_in_string():
    err = error('x = "a ${var.x"\n')
    assert where(err) == (1, 8)
    assert err.message == "unclosed '${' in string; close it with '}'"
    assert where(error('x = "%{ if a"')) == (1, 6)
    assert where(error('x = "${ "a" "')) == (1, 6)


def test_unterminated_heredoc_reports_the_line_it_started():
    err = error("a = 1\nrun = <<-SHELL\n  echo hi\n  SHEL\n")
    assert where(err) == (2, 7)
    assert err.message == "unterminated heredoc '<<-SHELL': no closing 'SHELL' line"


def test_heredoc_marker_must_end_its_line():
    err = error('x = <<EOF "junk"\nEOF\n')
    assert where(err) == (1, 11)
    assert "newline after heredoc marker '<<EOF'" in err.message
    assert where(error("x = << EOF\nEOF\n")) == (1, 5)


def test_unclosed_block_reports_the_line_it_opened():
    err = error('pipeline "p" {\n  step "s" {\n    run = "x"\n  }\n')
    assert where(err) == (1, 14)
    assert err.message == "block 'pipeline \"p\"' is never closed; add a '}'"


def test_unclosed_list_reports_the_line_it_opened():
    err = error('vars = ["a",\n  "b"\n')
    assert where(err) == (1, 8)
    assert err.message.startswith("list is never closed")
    err = error('vars = ["a", "b"\nother = 1\n')
    assert where(err) == (1, 8)
    assert "found 'other' at line 2" in err.message


def test_unclosed_object_reports_the_line_it_opened():
    err = error("a = 1\nx = {\n  k = 1\n")
    assert where(err) == (2, 5)
    assert err.message.startswith("object is never closed")


def test_duplicate_attribute_reports_the_second_one():
    err = error('step "s" {\n  run = "a"\n\n  run = "b"\n}\n')
    assert where(err) == (4, 3)
    assert err.message == "attribute 'run' is already set at line 2"


def test_same_attribute_name_in_different_blocks_is_fine():
    doc = parse("a { run = 1 }\nb { run = 2 }\nrun = 3\n")
    assert doc.attribute("run").value == 3


def test_duplicate_object_key_reports_the_second_one():
    err = error('x = {\n  a = 1\n  "a" = 2\n}\n')
    assert where(err) == (3, 3)
    assert err.message == "key 'a' is already set at line 2"


def test_unexpected_character():
    err = error("a = 1\n  @x = 2\n")
    assert where(err) == (2, 3)
    assert "unexpected '@'" in err.message
    err = error("x = @\n")
    assert where(err) == (1, 5)
    assert "expected a value" in err.message
    err = error("}\n")
    assert where(err) == (1, 1)
    assert "no open block" in err.message


def test_bare_word_is_not_a_value():
    err = error("a = 1\nx = main\n")
    assert where(err) == (2, 5)
    assert err.message == "bare word 'main' is not a value; quote it: \"main\""
    assert error("x = [main]").message.startswith("bare word 'main'")


def test_references_function_calls_and_for_expressions_are_rejected():
    err = error("x = var.name\n")
    assert where(err) == (1, 5)
    assert (
        err.message == "reference 'var.name' is not a value; use a template string: \"${var.name}\""
    )
    err = error('x = upper("a")\n')
    assert where(err) == (1, 5)
    assert "function calls are not supported: 'upper(...)'" in err.message
    err = error("x = [for v in var.list: v]\n")
    assert where(err) == (1, 6)
    assert "'for' expressions are not supported" in err.message
    err = error("x = {for k, v in var.map: k => v}\n")
    assert where(err) == (1, 6)


def test_arithmetic_is_rejected():
    err = error("x = 1 + 2\n")
    assert where(err) == (1, 7)
    assert err.message.startswith("operator '+' is not supported")
    err = error('x = ["a" == "b"]\n')
    assert where(err) == (1, 10)
    assert "operator '=='" in err.message


def test_unquoted_duration_is_not_a_number():
    err = error("x = 30s\n")
    assert where(err) == (1, 5)
    assert err.message == "'30s' is not a number; quote it: \"30s\""


def test_missing_value_after_equals():
    err = error("x =\n")
    assert where(err) == (1, 4)
    assert err.message.startswith("expected a value after 'x ='")


def test_two_items_on_one_line_are_an_error():
    err = error("a = 1 b = 2\n")
    assert where(err) == (1, 7)
    assert "expected a newline after the value of 'a'" in err.message
    err = error("a {} b {}\n")
    assert where(err) == (1, 6)


def test_list_items_need_commas():
    err = error('x = ["a" "b"]\n')
    assert where(err) == (1, 10)
    assert err.message.startswith("expected ',' or ']' after a list item")


def test_object_items_need_a_comma_or_newline():
    err = error("x = { a = 1 b = 2 }\n")
    assert where(err) == (1, 13)
    assert "expected ',' or a newline between object items" in err.message


def test_object_key_needs_equals():
    err = error("x = {\n  key 1\n}\n")
    assert where(err) == (2, 3)
    assert err.message.startswith("expected '=' after object key 'key'")


def test_invalid_escapes():
    err = error(r'x = "a\qb"')
    assert where(err) == (1, 7)
    assert "invalid escape '\\q'" in err.message
    err = error(r'x = "\u12"')
    assert where(err) == (1, 6)
    assert "takes 4 hex digits" in err.message


def test_block_header_without_brace():
    err = error('step "a" "b"\n')
    assert where(err) == (1, 13)
    assert err.message == "expected '{' to open block 'step \"a\" \"b\"', found end of line"


def test_unterminated_block_comment():
    err = error("a = 1\n/* never closed\n")
    assert where(err) == (2, 1)
    assert "unterminated comment" in err.message


def test_error_uses_the_given_filename():
    assert str(error("x = main", "runbooks/build.hcl")).startswith("runbooks/build.hcl:1:5: ")
    with pytest.raises(HclSyntaxError, match=r"^<string>:1:5: "):
        parse("x = main")
