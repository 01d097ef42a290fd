"""`oj queue push QUEUE -`: the item on stdin, for items larger than an argument may be."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import OJ, Project

RUNBOOK = """
    queue "docs" {
      type = "persisted"
      vars = ["name", "body"]
      defaults = { body = "" }
    }
    """


@pytest.fixture
def docs(project: Project) -> Project:
    project.write("docs.hcl", RUNBOOK)
    return project


def push(p: Project, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OJ, "queue", "push", "docs", *args], cwd=p.root, env=p.env(),
                          input=stdin, capture_output=True, timeout=60)


def test_an_item_larger_than_an_argument_can_be_pushed_on_stdin(docs: Project):
    body = "x" * 300_000  # over Linux's 128 KiB limit for one argument
    item = {"name": "big", "body": body}
    with pytest.raises(OSError):  # what a user met before: the argument cannot be passed
        subprocess.run([OJ, "queue", "push", "docs", json.dumps(item)], env=docs.env(),
                       cwd=docs.root, capture_output=True)
    proc = push(docs, "-", stdin=json.dumps(item).encode())
    assert proc.returncode == 0, proc.stderr
    [stored] = docs.items()
    assert stored["id"] == proc.stdout.decode().strip()
    assert stored["data"] == item


def test_stdin_item_takes_vars_and_is_validated_like_an_argument(docs: Project):
    proc = push(docs, "-", "--var", "body=b", stdin=b'{"name": "n"}')
    assert proc.returncode == 0, proc.stderr
    assert docs.items()[0]["data"] == {"name": "n", "body": "b"}
    bad = push(docs, "-", stdin=b'{"name": ')
    assert bad.returncode == 2 and b"invalid JSON" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    latin1 = push(docs, "-", stdin='{"name": "café"}'.encode("latin-1"))
    assert latin1.returncode == 2
    assert latin1.stderr.decode() == ("oj: the item on stdin is not UTF-8 (byte 13); give the "
                                      "JSON as UTF-8 text\n")
    assert len(docs.items()) == 1
