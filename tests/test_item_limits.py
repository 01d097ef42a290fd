"""One push cannot poison the state: items over the documented depth and size are refused with
a clear error, and everything accepted stays readable by every command."""

from __future__ import annotations

import json

import pytest
from conftest import Project

QUEUE = """
    queue "any" {}
    """


@pytest.fixture
def queued(project: Project) -> Project:
    project.write("q.hcl", QUEUE)
    return project


def nested(depth: int) -> str:
    return '{"k":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [65, 1000, 15_000])
def test_an_item_nested_too_deep_is_refused_and_the_state_stays_readable(
        queued: Project, depth: int):
    queued.oj("queue", "push", "any", '{"ok": 1}')
    proc = queued.oj("queue", "push", "any", nested(depth), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("oj: the item nests deeper than 64 levels")
    assert len(proc.stderr.splitlines()) == 1
    listed = queued.json("queue", "list", "--items")
    assert [i["data"] for i in listed] == [{"ok": 1}]  # type: ignore[index]


def test_an_item_at_the_depth_limit_is_accepted_and_listed(queued: Project):
    queued.oj("queue", "push", "any", nested(63))  # 63 inside the item object: 64 levels
    listed = queued.json("queue", "list", "--items")
    assert len(listed) == 1  # type: ignore[arg-type]
    queued.oj("state", "compact")
    assert len(queued.json("queue", "list", "--items")) == 1  # type: ignore[arg-type]


def test_an_item_over_a_mebibyte_is_refused_and_one_under_it_accepted():
    from ojd import queues
    from ojd.errors import UsageError

    spec = queues.QueueSpec("any", "persisted", (), {})
    assert queues.validate_item(spec, {"blob": "x" * 1_000_000})
    with pytest.raises(UsageError, match="over the 1 MiB limit"):
        queues.validate_item(spec, {"blob": "x" * (1 << 20)})
    with pytest.raises(UsageError, match="over the 1 MiB limit"):
        queues.parse_item(json.dumps({"blob": "x" * (5 << 20)}))


def test_a_pushed_item_over_a_mebibyte_on_stdin_is_refused_and_nothing_is_written(
        queued: Project):
    big = json.dumps({"blob": "x" * (1 << 20)})
    proc = queued.oj("queue", "push", "any", "-", input=big, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("oj: the item is 1048587 bytes of JSON, over the 1 MiB")
    assert queued.json("queue", "list", "--items") == []


def test_an_item_with_a_nul_character_is_refused(queued: Project):
    proc = queued.oj("queue", "push", "any", '{"m": "a\\u0000b"}', check=False)
    assert proc.returncode == 2 and "NUL character" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert queued.json("queue", "list", "--items") == []


@pytest.mark.parametrize("name,text", [
    ("a.hcl", 'command "c" {\n  run = "echo a\\u0000b"\n}\n'),
    ("a.json", '{"command": {"c": {"run": "echo ok\\necho a\\u0000b"}}}\n'),
])
def test_a_nul_character_in_a_shell_script_is_a_file_line_error(
        project: Project, name: str, text: str):
    (project.root / ".oj" / "runbooks" / name).write_text(text)
    for args in (("runbook", "check"), ("run", "c")):
        proc = project.oj(*args, check=False)
        assert proc.returncode != 0, args
        assert f".oj/runbooks/{name}:" in proc.stderr and "NUL character" in proc.stderr, \
            proc.stderr


def test_an_empty_item_and_a_huge_number_get_messages_that_say_what_is_wrong(queued: Project):
    empty = queued.oj("queue", "push", "any", "-", input="", check=False)
    assert empty.returncode == 2 and empty.stderr.startswith("oj: no item given")
    huge = queued.oj("queue", "push", "any", '{"n": ' + "9" * 5000 + "}", check=False)
    assert huge.returncode == 2
    assert "too many digits" in huge.stderr and "sys." not in huge.stderr
