"""Root using a user's state dir (OJ_STATE_DIR=~user/.local/state/oj) leaves it usable by
that user: what root creates there (the state dir itself and its directories, the WAL's
lock, segments and snapshots) belongs to the user, so the user's own commands and worker
can still write."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, OJ, require

# the installed `oj` as a subprocess, as root and as a user
pytestmark = pytest.mark.end_to_end

RUNBOOK = """
    queue "q" {
      vars = ["n"]
    }
    """


@pytest.fixture
def home() -> Iterator[Path]:
    """A home of user nobody's, with a project anyone may read beside it."""
    # justified: a non-root developer run skips; CI runs as root (require fails there)
    require(os.geteuid() == 0, "gives a directory to another user: needs root")
    base = Path(tempfile.mkdtemp(prefix="oj-owner-", dir="/var/tmp"))  # others may enter
    try:
        base.chmod(0o755)
        project = base / "project"
        (project / ".oj" / "runbooks").mkdir(parents=True)
        (project / ".oj" / "runbooks" / "q.hcl").write_text(textwrap.dedent(RUNBOOK))
        home = base / "home"
        home.mkdir(mode=0o700)
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def oj(state: Path, *args: str, user: pwd.struct_passwd | None = None
       ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "OJ_STATE_DIR": str(state),
           "HOME": str(state.parent) if user else "/root", "LANG": "C.UTF-8"}
    ids = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                   "extra_groups": []}
    proc = subprocess.run([OJ, *args], cwd=state.parent.parent / "project", env=env,
                          capture_output=True, text=True, timeout=60, **ids)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
        f"oj {' '.join(args)} as {'root' if user is None else user.pw_name}: "
        f"{proc.stdout}{proc.stderr}")
    return proc


@pytest.mark.parametrize("made_by", ["the user", "root"])
def test_root_writing_into_a_users_state_dir_leaves_it_the_users(made_by: str, home: Path):
    nobody = pwd.getpwnam("nobody")
    state = home / "state"
    if made_by == "the user":
        state.mkdir(mode=0o700)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
    # root pushes into it (making the WAL, its lock and first segment), writes a snapshot
    # and pushes again
    oj(state, "queue", "push", "q", "--var", "n=1")
    oj(state, "state", "compact")
    oj(state, "queue", "push", "q", "--var", "n=2")
    # the user's own commands still write there
    oj(state, "queue", "push", "q", "--var", "n=3", user=nobody)
    items = json.loads(oj(state, "queue", "list", "q", "-o", "json", user=nobody).stdout)
    assert sorted(i["data"]["n"] for i in items) == ["1", "2", "3"]
    from ojd.paths import STATE_SUBDIRS

    # the state dir's directories (logs, steps, cache, agents...: made ahead, before code
    # outside the store makes them root's) and every file of the WAL are the user's
    made = [state, *(state / sub for sub in STATE_SUBDIRS), *(state / "wal").iterdir()]
    assert any(p.name.startswith("snapshot-") for p in made)
    assert {str(p): (p.stat().st_uid, p.stat().st_gid) for p in made} == {
        str(p): (nobody.pw_uid, nobody.pw_gid) for p in made}


def test_root_keeps_what_it_makes_in_its_own_directories(tmp_path: Path):
    from ojd import paths

    # justified: a non-root developer run skips; CI runs as root (require fails there)
    require(os.geteuid() == 0, "checks root's own files: needs root")
    state = tmp_path / "state"
    paths.make_state_dir(str(state / "wal"))
    fd = paths.open_state_file(str(state / "wal" / "lock"), os.O_RDWR | os.O_CREAT)
    os.close(fd)
    for p in (state, state / "wal", state / "wal" / "lock"):
        assert p.stat().st_uid == 0


def test_a_symlink_a_user_put_in_its_state_dir_gives_the_user_nothing_of_roots(
        home: Path, tmp_path: Path):
    from ojd import paths

    nobody = pwd.getpwnam("nobody")
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    os.symlink(secret, home / "lock")  # the user's own doing, in the user's directory
    fd = paths.open_state_file(str(home / "lock"), os.O_RDWR | os.O_CREAT)
    os.close(fd)
    assert secret.stat().st_uid == 0  # opened as it was: not given away
    fd = paths.open_state_file(str(home / "new"), os.O_RDWR | os.O_CREAT)
    os.close(fd)
    assert (home / "new").stat().st_uid == nobody.pw_uid
