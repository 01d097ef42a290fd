"""Whose code a worker runs: refuse a project whose runbooks someone else could change.

A worker runs its project's runbooks as the user it runs as (root, for a system worker), so
whoever can change which runbook bytes it reads can run code as that user. The rule, checked
by ``oj worker start`` and by the worker on every load, with *trusted* = root and the user
the worker runs as:

- every directory the kernel walks to reach ``PROJECT/.oj`` (``/`` down to the project dir,
  symlinks followed) is owned by a trusted user and writable by no one else, unless it is
  sticky (``/tmp``): then others can add entries but not rename or replace ours;
- ``.oj/``, ``.oj/runbooks/``, and every directory and file under it (symlink targets and
  the directories on their way included) are owned by a trusted user and writable by no one
  else, sticky or not: any new entry there is a runbook read;
- so is every file the loaded runbook names as code or as an agent's input
  (``named_files``: an agent's ``prompt_file``, a script its shell scripts run by path),
  with the directories on the way from ``/`` as for the project; one that is not there yet
  must be in a directory only they can add to. A ``prompt_file`` is checked again right
  before an agent step of a worker's (or cron's) job reads it (``require_input``).

"Writable by" means the owner, the members of a group with write permission (through the
mode, or a POSIX ACL entry), and everyone when the file is writable by others.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat

from ojd import project as projects
from ojd.errors import OjError, escaped
from ojd.project import RUNBOOK_DIR
from ojd.runbook.named import named_files

try:  # see ojd.project: the builtin module avoids loading OpenSSL's binding
    from _sha256 import sha256 as _sha256
except ImportError:
    from hashlib import sha256 as _sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ojd.runbook.model import Runbook

_MAX_LINKS = 40  # as the kernel's ELOOP limit

# POSIX ACL xattr (system.posix_acl_access): a version word, then (tag, perm, id) entries
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP = 0x02, 0x04, 0x08


class Untrusted(Exception):
    """``path`` can be changed by ``who``; ``user`` names them when they are one user."""

    def __init__(self, path: str, who: str, user: str | None) -> None:
        super().__init__(f"{path} is writable by {who}")
        self.path = path
        self.who = who
        self.user = user


def check_project(root: str, uid: int, runbook: Runbook | None = None) -> Untrusted | None:
    """The first path of ``root``'s runbooks (and of the files ``runbook`` names, see
    ``named_files``) that a user other than root and ``uid`` could change, or None when only
    they can."""
    checker = _Checker({0, uid})
    try:
        checker.resolve(os.path.join(os.path.abspath(root), ".oj"), strict=True)
        top, st = checker.resolve(os.path.join(os.path.abspath(root), RUNBOOK_DIR),
                                  strict=True, missing_ok=True)
        if st is not None and stat.S_ISDIR(st.st_mode):
            checker.tree(top, {(st.st_dev, st.st_ino)})
        if runbook is not None:
            checker.files(named_files(os.path.abspath(root), runbook))
    except Untrusted as e:
        return e
    return None


def check_files(paths: Iterable[str], uid: int) -> Untrusted | None:
    """The first of ``paths`` (absolute), or directory on the way to one, that a user other
    than root and ``uid`` could change, or None when only they can."""
    try:
        _Checker({0, uid}).files(paths)
    except Untrusted as e:
        return e
    return None


def require(root: str, worker: str, uid: int, runbook: Runbook | None = None,
            cache_dir: str | None = None) -> None:
    """Raise the one-line refusal when someone but root and ``uid`` could change the
    runbooks that worker ``worker`` of ``root`` would run as ``uid``, or the files that
    ``runbook`` names. With ``cache_dir``, the runbook whose files count is the one on disk,
    once its directories passed: the one a load now (a worker's next reload) would run;
    ``runbook`` when the files are unchanged or do not load (a reload keeps it too)."""
    problem = _checked(root, lambda: check_project(root, uid))  # before anything reads them
    if problem is None and (runbook is not None or cache_dir is not None):
        files = _named(os.path.abspath(root), runbook, cache_dir)
        problem = _checked(root, lambda: check_files(files, uid))
    if problem is not None:
        # the worker name and paths escaped: a newline in them cannot split the message
        raise OjError(escaped(refusal(problem, worker, uid)))


def require_input(path: str, uid: int, what: str, worker: str | None) -> None:
    """Right before a job of worker ``worker`` (None: of a cron) reads ``path``, a file its
    runbook names (``what``: "agent 'fix' prompt_file"): the one-line refusal when someone
    but root and ``uid`` could change it."""
    try:
        problem = check_files([os.path.abspath(path)], uid)
    except OSError as e:
        raise OjError(escaped(f"cannot check who may change {what} {path}: "
                              f"{e.strerror or e} ({e.filename or path})")) from None
    if problem is not None:
        raise OjError(escaped(refusal(problem, worker, uid, doing=f"read {what} {path}")))


def _checked(root: str, check) -> Untrusted | None:
    try:
        return check()
    except OSError as e:
        raise OjError(escaped(f"cannot check who may change the runbooks of {root}: "
                              f"{e.strerror or e} ({e.filename or root}); is the project "
                              "still there?")) from None  # paths on one line


def _named(root: str, loaded: Runbook | None, cache_dir: str | None) -> list[str]:
    """``named_files`` of ``loaded``, or with ``cache_dir`` of the runbook on disk (see
    ``require``)."""
    if cache_dir is None:
        assert loaded is not None
        return named_files(root, loaded)
    if loaded is None:
        return _named_on_disk(root, cache_dir)
    try:
        return named_files(root, projects.load_if_changed(root, cache_dir, loaded.digest)
                           or loaded)
    except (OjError, OSError):
        return named_files(root, loaded)


def _named_on_disk(root: str, cache_dir: str) -> list[str]:
    """``named_files`` of the runbook on disk, kept beside its index in the cache
    (``cache/named-<project hash>.json``, rewritten when the digest changes): ``oj worker
    start``, which reads the index, loads no model for it either. A problem loading is the
    one the caller's load of the index raised already."""
    digest = projects.load_index(root, cache_dir)["digest"]
    path = os.path.join(cache_dir, f"named-{_sha256(root.encode()).hexdigest()[:16]}.json")
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
        if isinstance(record, dict) and record.get("digest") == digest and \
                isinstance(record.get("files"), list):
            return [str(p) for p in record["files"]]
    except (OSError, ValueError):
        pass
    runbook = projects.load(root, cache_dir)
    files = named_files(root, runbook)
    projects.atomic_write(path, json.dumps({"digest": runbook.digest,
                                             "files": files}).encode())
    return files


def refusal(problem: Untrusted, worker: str | None, uid: int, doing: str | None = None
            ) -> str:
    """The one-line error: what is wrong, and the ways out. ``doing``: what is refused, when
    not running the worker (reading a file for one of its jobs); no ``worker``: a cron's."""
    runner = _user_name(uid)
    it = "it" if doing is None else f"worker '{worker}'"
    doing = doing or f"run worker '{worker}'"
    head = (f"refusing to {doing} as {runner}: {problem}, who could make it run their code "
            f"as {runner}")
    if worker is None:
        return f"{head}; make {problem.path} writable by {runner} or root alone"
    if uid == 0 and problem.user is not None:
        u = problem.user
        return (f"{head}; run {it} as {u}: 'oj worker start --run-as {u} {worker}', or in "
                f"{u}'s own manager ('loginctl enable-linger {u}', then 'oj worker start "
                f"{worker}' as {u}), or make {problem.path} writable by root alone")
    if problem.user is not None:
        return (f"{head}; make {problem.path} writable by {runner} or root alone, or run "
                f"the worker as {problem.user}")
    return f"{head}; make {problem.path} writable by {runner} or root alone"


class _Checker:
    def __init__(self, trusted: set[int]) -> None:
        self.trusted = trusted
        self._members: dict[int, set[int] | None] = {}
        self._passed: set[tuple[str, int, int, bool]] = set()

    def resolve(self, path: str, *, strict: bool, start: str = "/", missing_ok: bool = False
                ) -> tuple[str, os.stat_result | None]:
        """Walk ``path`` (relative to the checked directory ``start``) as the kernel does,
        checking every directory on the way; the final object with the strict rule.
        ``missing_ok``: a path that is not there yet is (path, None) once the last directory
        that is, where it would be made, passed the strict rule."""
        pending = list(reversed(path.split("/")))
        cur = start
        if path.startswith("/"):
            cur = "/"
            self._check("/", os.lstat("/"), strict=False)
        st: os.stat_result | None = os.lstat(cur)
        links = 0
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                cur = os.path.dirname(cur)
                st = os.lstat(cur)
                continue
            nxt = os.path.join(cur, name)
            try:
                st = os.lstat(nxt)
            except (FileNotFoundError, NotADirectoryError):
                if not missing_ok:
                    raise
                parent = os.lstat(cur)
                if stat.S_ISDIR(parent.st_mode):  # where it would be made
                    self._check(cur, parent, strict=True)
                return nxt, None
            if stat.S_ISLNK(st.st_mode):
                # the link itself can only be replaced through its directory, checked already
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(f"too many levels of symbolic links: {path}")
                target = os.readlink(nxt)
                if target.startswith("/"):
                    cur = "/"
                pending.extend(reversed(target.split("/")))
                continue
            cur = nxt
            self._check(cur, st, strict=False)
        assert st is not None
        if strict:
            self._check(cur, st, strict=True)
        return cur, st

    def files(self, paths: Iterable[str]) -> None:
        """Each of ``paths`` (absolute) with the strict rule, the way to it from ``/`` as to
        the project; one not there must be where only trusted users can make it."""
        for path in paths:
            self.resolve(path, strict=True, missing_ok=True)

    def tree(self, directory: str, seen: set[tuple[int, int]]) -> None:
        """Every entry under a checked runbook directory, recursively, in name order."""
        for name in sorted(os.listdir(directory)):
            path, st = self.resolve(name, strict=True, start=directory)
            if st is not None and stat.S_ISDIR(st.st_mode) and \
                    (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                self.tree(path, seen)

    def _check(self, path: str, st: os.stat_result, *, strict: bool) -> None:
        key = (path, st.st_dev, st.st_ino, strict)
        if key in self._passed:  # the named files share the directories to the project
            return
        self._check_once(path, st, strict=strict)
        self._passed.add(key)

    def _check_once(self, path: str, st: os.stat_result, *, strict: bool) -> None:
        if st.st_uid not in self.trusted:
            name = _user_name(st.st_uid)
            raise Untrusted(path, f"{name} (its owner)", name)
        if not strict and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return  # sticky: others may add entries, never rename or replace ours
        if st.st_mode & stat.S_IWOTH:
            raise Untrusted(path, "every user", None)
        if not st.st_mode & stat.S_IWGRP:
            return
        for kind, ident in _group_class_writers(path, st):
            if kind == "user":
                if ident not in self.trusted:
                    name = _user_name(ident)
                    raise Untrusted(path, f"{name} (an ACL entry)", name)
                continue
            members = self._group_members(ident)
            if members is None:
                raise Untrusted(path, f"group {_group_name(ident)}", None)
            others = sorted(members - self.trusted)
            if others:
                names = [_user_name(u) for u in others]
                raise Untrusted(path, f"group {_group_name(ident)} ({', '.join(names)})",
                                names[0] if len(names) == 1 else None)

    def _group_members(self, gid: int) -> set[int] | None:
        """Every uid in the group, by membership or as primary group; None if unknown."""
        if gid not in self._members:
            try:
                names = grp.getgrgid(gid).gr_mem
            except KeyError:
                self._members[gid] = None
                return None
            uids = {pw.pw_uid for pw in pwd.getpwall() if pw.pw_gid == gid}
            for name in names:
                try:
                    uids.add(pwd.getpwnam(name).pw_uid)
                except KeyError:
                    self._members[gid] = None
                    return None
            self._members[gid] = uids
        return self._members[gid]


def _group_class_writers(path: str, st: os.stat_result) -> list[tuple[str, int]]:
    """Who may write through the group class (mode group bits = the ACL mask): the owning
    group, or with an ACL its group and named entries whose permission includes write."""
    try:
        acl = os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        return [("group", st.st_gid)]
    writers = []
    for off in range(4, len(acl) - 7, 8):
        tag = int.from_bytes(acl[off:off + 2], "little")
        perm = int.from_bytes(acl[off + 2:off + 4], "little")
        ident = int.from_bytes(acl[off + 4:off + 8], "little")
        if not perm & 2:
            continue
        if tag == _ACL_USER:
            writers.append(("user", ident))
        elif tag == _ACL_GROUP_OBJ:
            writers.append(("group", st.st_gid))
        elif tag == _ACL_GROUP:
            writers.append(("group", ident))
    return writers


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
