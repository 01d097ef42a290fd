"""Commands that only read never create the state dir: a mistyped OJ_STATE_DIR does not turn
into a new, empty state dir. Listings show nothing with a note; show, logs and check fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import OJ, Project

RUNBOOK = """
    queue "merges" {
      type = "persisted"
      vars = ["branch"]
    }
    """


@pytest.fixture
def proj(cli_project: Project) -> Project:
    cli_project.write("merge.hcl", RUNBOOK)
    return cli_project


@pytest.mark.parametrize("args", [
    ["job", "list"], ["queue", "list", "--items"], ["queue", "list", "merges"],
    ["worker", "list"], ["worker", "list", "--all"], ["runbook", "list"],
    ["runbook", "check"],
])
def test_listings_of_a_missing_state_dir_are_empty_with_a_note(proj, tmp_path, args):
    typo = tmp_path / "stat"
    proc = proj.oj(*args, OJ_STATE_DIR=str(typo))
    assert not typo.exists()
    if args[0] != "runbook":
        assert proc.stderr == (f"oj: note: state dir {typo} (OJ_STATE_DIR) does not exist, "
                               "so nothing is recorded there; check OJ_STATE_DIR\n")
        as_json = proj.oj(*args, "-o", "json", OJ_STATE_DIR=str(typo))
        assert json.loads(as_json.stdout) == []
        assert not typo.exists()
    else:  # runbook commands need no state: nothing to note
        assert proc.stderr == ""


@pytest.mark.parametrize("args", [
    ["job", "show", "abc"], ["job", "logs", "abc"], ["queue", "show", "abc"],
    ["state", "check"],
])
def test_reading_one_record_of_a_missing_state_dir_is_an_error(proj, tmp_path, args):
    typo = tmp_path / "stat"
    proc = proj.oj(*args, check=False, OJ_STATE_DIR=str(typo))
    assert proc.returncode == 1
    assert proc.stderr == (f"oj: state dir {typo} (OJ_STATE_DIR) does not exist, so nothing "
                           "is recorded there; check OJ_STATE_DIR\n")
    assert not typo.exists()


@pytest.mark.end_to_end  # starts ojd or the installed oj itself
def test_the_default_state_dir_is_not_created_by_a_listing_either(proj):
    # root's default is /var/lib/oj; another user's is under XDG_STATE_HOME, which a test can
    # point at a directory that user could create it in
    home = Path(tempfile.mkdtemp(prefix="oj-readers-", dir="/tmp"))
    try:
        home.chmod(0o777)
        env = proj.env(XDG_STATE_HOME=str(home / "xdg"))
        del env["OJ_STATE_DIR"]
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", OJ]
        proc = subprocess.run([*argv, "queue", "list"], cwd=home, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        default = home / "xdg" / "oj"
        assert proc.stderr == (f"oj: note: state dir {default} does not exist yet, so nothing "
                               "is recorded; the first push, run or worker start creates it\n")
        assert not default.exists()
        # that user could have created it: not finding it is the listing's restraint
        subprocess.run([*argv[:-1], "mkdir", "-p", str(default)], check=True)
    finally:
        shutil.rmtree(home)


def test_writers_still_create_the_state_dir(proj, tmp_path):
    new = tmp_path / "new"
    proj.oj("queue", "push", "merges", '{"branch": "b"}', OJ_STATE_DIR=str(new))
    assert (new / "wal").is_dir()
    proc = proj.oj("queue", "list", "--items", "-o", "json", OJ_STATE_DIR=str(new))
    assert proc.stderr == "" and len(json.loads(proc.stdout)) == 1
