"""Every mistake a user can make on the command line is one line naming the problem and the
fix, with a non-zero exit: no traceback, no hang, no message split over lines by a name."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import OJ, Project

from ojd.project import project_name

RUNBOOK = """
    queue "merges" {
      type = "persisted"
      vars = ["branch"]
    }

    worker "merge" {
      source  = { queue = "merges" }
      handler = { pipeline = "merge" }
    }

    pipeline "merge" {
      vars = ["mr"]
      step "work" {
        run = "true"
      }
    }

    command "hello" {
      args = "<name>"
      run  = "echo hello ${args.name}"
    }
    """


@pytest.fixture
def proj(cli_project: Project) -> Project:
    cli_project.write("merge.hcl", RUNBOOK)
    return cli_project


def oj_bytes(p: Project, *args: bytes) -> subprocess.CompletedProcess[bytes]:
    """`oj` with raw argv bytes (a name that is not UTF-8, as a shell's $'\\xff' gives)."""
    return subprocess.run([os.fsencode(OJ), *args], cwd=p.root, env=p.env(),
                          capture_output=True, timeout=60)


def one_line(stderr: str | bytes) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("command", [b"stop", b"disable", b"logs", b"start", b"enable",
                                     b"restart", b"wake"])
@pytest.mark.parametrize("name", [b"\xff", b"a\nb", b"caf\xc3\xa9\xed\xa0\x80"])
@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_worker_subcommands_refuse_names_that_are_not_worker_names(proj, command, name):
    proc = oj_bytes(proj, b"worker", command, name)
    assert proc.returncode == 2, proc.stderr
    text = one_line(proc.stderr)
    # every one checks the name itself before it reaches the state, systemd or journalctl
    assert text.startswith("oj: ") and "is not a worker name" in text, text
    shown = {b"\xff": "'\\xff'", b"a\nb": "'a\\nb'",
             b"caf\xc3\xa9\xed\xa0\x80": "'café\\xed\\xa0\\x80'"}[name]
    assert shown in text


@pytest.mark.parametrize("args, shown, code", [
    (["queue", "push", "a\noj: b", "{}"], "unknown queue 'a\\noj: b'", 2),
    (["queue", "show", "x\ny"], "no queue item with id 'x\\ny'", 1),
    (["job", "show", "x\ny"], "no job with id 'x\\ny'", 1),
    (["job", "logs", "x\ry"], "no job with id 'x\\ry'", 1),
    (["run", "he\nllo"], "unknown command 'he\\nllo'", 2),
    (["run", "hello", "--lo\nud", "x"], "unknown option --lo\\nud", 2),
    (["run", "hello", "x", "y\tz"], "unexpected argument y\\tz", 2),
    (["queue", "push", "merges", "--var", "a\nb"], "--var expects NAME=VALUE, got 'a\\nb'", 2),
    (["queue", "push", "merges", '{"branch": "b", "x\\ny": 1}'], "has no var 'x\\ny'", 2),
    (["queue", "drop", "merges\n", "x"], "unknown queue 'merges\\n'", 2),
])
def test_a_name_with_control_characters_is_shown_escaped_on_one_line(proj, args, shown, code):
    proj.oj("queue", "push", "merges", '{"branch": "b"}')  # the state dir exists
    proc = proj.oj(*args, check=False)
    assert proc.returncode == code  # 1: not found; 2: a usage error
    assert shown in one_line(proc.stderr)


@pytest.mark.parametrize("group, valid", [
    ("queue", "'pending', 'active', 'completed', 'failed', 'dead'"),
    ("job", "'running', 'waiting', 'done', 'failed', 'cancelled'"),
])
def test_list_status_must_be_a_known_status(proj, group, valid):
    proj.oj("queue", "push", "merges", '{"branch": "b"}')
    proc = proj.oj(group, "list", "--status", "bogus", check=False)
    assert proc.returncode == 2
    text = one_line(proc.stderr)
    assert "'bogus' is not one of " + valid in text
    assert f"see 'oj {group} list --help'" in text
    assert proc.stdout == ""
    assert proj.oj(group, "list", "--status", valid.split("'")[1]).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["nope"], "No such command 'nope'"),
    (["worker", "stop"], "Missing argument 'NAME'"),
    (["queue", "list", "-o", "yaml"], "Invalid value for '-o' / '--output': 'yaml' is not one"),
])
def test_usage_errors_are_one_line_with_where_to_find_the_usage(proj, args, message):
    proc = proj.oj(*args, check=False)
    assert proc.returncode == 2
    text = one_line(proc.stderr)
    assert text.startswith(f"oj: {message}") and text.rstrip().endswith("--help'")
    assert "; see 'oj" in text


@pytest.mark.parametrize("kind", ["directory", "file"])
@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_ojd_with_an_unusable_lock_path_says_which_and_exits(proj, kind):
    proj.oj("queue", "push", "merges", '{"branch": "b"}')
    lock = f"{project_name(str(proj.root))}:merge.lock"  # named by the worker's full name
    if kind == "directory":  # the lock file itself is a directory
        (proj.state / "workers" / lock).mkdir(parents=True)
        where = proj.state / "workers" / lock
    else:  # the lock directory is a file
        (proj.state / "workers").write_text("")
        where = proj.state / "workers"
    proc = proj.ojd("worker", "merge", "--foreground", "--until-idle")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 78, out
    assert "Traceback" not in out
    [line] = out.splitlines()
    assert f"cannot open the worker lock {where}:" in line and "remove or fix it" in line


def test_a_state_dir_path_with_a_newline_is_shown_escaped(proj, tmp_path):
    odd = tmp_path / "st\nate"
    listing = proj.oj("queue", "list", OJ_STATE_DIR=str(odd))
    assert "st\\nate (OJ_STATE_DIR) does not exist" in one_line(listing.stderr)
    (tmp_path / "file").write_text("")
    unusable = tmp_path / "file" / "st\nate"
    proc = proj.oj("queue", "push", "merges", '{"branch": "b"}', check=False,
                   OJ_STATE_DIR=str(unusable))
    assert proc.returncode == 1
    assert "cannot use state dir " in one_line(proc.stderr) and "st\\nate" in proc.stderr
