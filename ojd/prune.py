"""What ``oj job prune`` and ``oj workspace prune`` remove, and removing it safely.

Choosing is done on the state and a listing of the directories; removing touches nothing but
entries of the state dir's ``logs/`` and ``workspaces/``. Paths come from the WAL, which is
data: each one must resolve to a direct child of its directory, and a symlink is never
followed or removed. A workspace is renamed aside (quick, done under the WAL lock, so no new
job can take a persistent workspace between the decision and the removal) and deleted after.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from ojd import paths
from ojd.errors import escaped
from ojd.events import job_pruned
from ojd.state import FINISHED_JOB_STATES, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.store import Store, Transaction

# renamed-aside workspaces on their way out; a prune that died half-way leaves them behind
TRASH_PREFIX = ".pruning-"
_ENTRY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def is_finished(job: dict) -> bool:
    return job["status"] in FINISHED_JOB_STATES


def ended_at(job: dict) -> float:
    return job.get("finished_at") or job.get("updated_at") or job.get("created_at") or 0.0


def workspace_entry(job: dict, ws_dir: str) -> str | None:
    """The entry of ``ws_dir`` (a real path) that is the job's workspace; None for a job run in
    its invocation directory or one whose recorded path is not a direct child of ``ws_dir``."""
    if job.get("workspace") not in ("ephemeral", "persistent") or not job.get("cwd"):
        return None
    path = os.path.normpath(str(job["cwd"]))
    name = os.path.basename(path)
    if not _ENTRY_NAME.match(name) or _realpath(os.path.dirname(path)) != ws_dir:
        return None
    return name


@functools.lru_cache(maxsize=64)
def _realpath(path: str) -> str:
    # jobs record a handful of directories: resolve each once, not once per job
    return os.path.realpath(path)


def job_owns_outside(job: dict, ws_dir: str) -> bool:
    """A job with a workspace whose recorded path lies outside the workspaces dir."""
    return job.get("workspace") in ("ephemeral", "persistent") and \
        workspace_entry(job, ws_dir) is None


# -- workspaces ----------------------------------------------------------------------------


@dataclass
class Workspace:
    name: str
    path: str
    kind: str  # "dir", "symlink" or "other"
    mtime: float
    jobs: list[dict] = field(default_factory=list)  # jobs that used it, oldest first

    @property
    def live(self) -> list[dict]:
        return [j for j in self.jobs if not is_finished(j)]

    @property
    def trash(self) -> bool:
        return self.name.startswith(TRASH_PREFIX)

    @property
    def trash_in_use(self) -> bool:
        """Set aside by a prune that is still deleting it (its process lives)."""
        pid = self.name.rpartition("-")[2]
        if not self.trash or not pid.isdigit() or int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True

    @property
    def last_used(self) -> float:
        """When its last job ended, else (no job recorded) when the directory last changed."""
        return max((ended_at(j) for j in self.jobs), default=self.mtime)

    @property
    def status(self) -> str:
        if self.live:
            return self.live[-1]["status"]
        return self.jobs[-1]["status"] if self.jobs else "gone"

    @property
    def job(self) -> dict | None:
        return (self.live or self.jobs or [None])[-1]


def real_workspaces_dir(root: str) -> str:
    return os.path.realpath(paths.workspaces_dir(root))


def scan_workspaces(state: State, root: str) -> list[Workspace]:
    """The entries of the workspaces dir, each with the jobs the state says used it."""
    ws_dir = real_workspaces_dir(root)
    users: dict[str, list[dict]] = {}
    for job in sorted(state.jobs.values(), key=lambda j: j["created_at"]):
        name = workspace_entry(job, ws_dir)
        if name is not None:
            users.setdefault(name, []).append(job)
    try:
        entries = sorted(os.scandir(ws_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    found = []
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = "symlink" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False) \
            else "other"
        found.append(Workspace(e.name, e.path, kind, st.st_mtime, users.get(e.name, [])))
    return found


def in_scope(ws: Workspace, project: str | None) -> bool:
    """A project sees its own workspaces and those no recorded job claims."""
    return project is None or not ws.jobs or any(j["project"] == project for j in ws.jobs)


def workspaces_to_prune(workspaces: list[Workspace], now: float, older_than: float
                        ) -> tuple[list[Workspace], list[tuple[Workspace, str]]]:
    """(to remove, [(skipped, why)]): directories whose jobs are all finished (or gone) and
    were last used at least ``older_than`` ago, and any leftovers of an earlier prune."""
    remove, skipped = [], []
    for ws in workspaces:
        if ws.kind == "symlink":
            skipped.append((ws, "a symlink, not a workspace oj made; left alone"))
        elif ws.kind != "dir":
            skipped.append((ws, "not a directory, not a workspace oj made; left alone"))
        elif ws.trash_in_use:
            continue
        elif ws.trash or (not ws.live and now - ws.last_used >= older_than):
            remove.append(ws)
    return remove, skipped


# -- jobs ------------------------------------------------------------------------------------


@dataclass
class JobPrunePlan:
    jobs: list[dict]  # to drop from the state, oldest first
    logs: dict[str, str]  # job id -> its log file (those that exist)
    workspaces: dict[str, str]  # job id -> workspace dir removed with it
    kept: list[tuple[str, str]]  # (job id, why its workspace stays)
    orphan_logs: list[str]  # logs of jobs the state no longer records
    # exit statuses a step's wrapper left (steps/JOB.N) that no runner will read: of the
    # jobs pruned, of finished jobs, and of jobs the state no longer records
    status_files: list[str] = field(default_factory=list)


def plan_job_prune(state: State, root: str, now: float, older_than: float,
                   project: str | None, worker: str | None = None) -> JobPrunePlan:
    """Finished jobs that ended at least ``older_than`` ago, with their logs and the
    workspaces no remaining job uses (a persistent one goes with the last of its jobs).
    ``worker``: only that worker's jobs (its retention), and no files of jobs gone."""
    ws_dir = real_workspaces_dir(root)
    logs_dir = paths.logs_dir(root)
    jobs = sorted((j for j in state.jobs.values()
                   if is_finished(j) and now - ended_at(j) >= older_than
                   and (project is None or j["project"] == project)
                   and (worker is None or j.get("worker") == worker)), key=ended_at)
    ids = {j["id"] for j in jobs}
    users: dict[str, list[str]] = {}
    for j in state.jobs.values():
        name = workspace_entry(j, ws_dir)
        if name is not None:
            users.setdefault(name, []).append(j["id"])
    plan = JobPrunePlan(jobs, {}, {}, [], [])
    planned: set[str] = set()  # workspace names already in the plan
    for j in jobs:
        log = log_path(logs_dir, j["id"])
        if log is not None and os.path.isfile(log) and not os.path.islink(log):
            plan.logs[j["id"]] = log
        if job_owns_outside(j, ws_dir):
            plan.kept.append((j["id"], f"its workspace {j['cwd']} is not inside {ws_dir}; "
                              "oj removes nothing there"))
            continue
        name = workspace_entry(j, ws_dir)
        if name is None or name in planned:
            continue
        path = os.path.join(ws_dir, name)
        if not os.path.lexists(path):
            continue
        others = [i for i in users[name] if i not in ids]
        if others:
            other = state.jobs[others[-1]]
            plan.kept.append((j["id"], f"its workspace {path} is shared with job {other['id']} "
                              f"({other['status']})"))
        elif os.path.islink(path):
            plan.kept.append((j["id"], f"its workspace {path} is a symlink; left alone"))
        else:
            plan.workspaces[j["id"]] = path
            planned.add(name)
    if worker is None:
        plan.orphan_logs = _orphan_logs(state, logs_dir, now, older_than)
        plan.status_files = _stale_status_files(state, root)
    return plan


def _stale_status_files(state: State, root: str) -> list[str]:
    """Status files of steps whose job is over or gone: a runner removes each once the
    step's end is recorded, so these are left by a runner killed in between."""
    try:
        entries = sorted(os.scandir(paths.steps_dir(root)), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    found = []
    for e in entries:
        job = state.jobs.get(e.name.partition(".")[0])
        if (job is None or is_finished(job)) and e.is_file(follow_symlinks=False):
            found.append(e.path)
    return found


def log_path(logs_dir: str, job_id: str) -> str | None:
    return os.path.join(logs_dir, f"{job_id}.log") if _ENTRY_NAME.match(job_id) else None


def _orphan_logs(state: State, logs_dir: str, now: float, older_than: float) -> list[str]:
    """Logs of jobs that left the state (it keeps the newest finished jobs only)."""
    try:
        entries = sorted(os.scandir(logs_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    found = []
    for e in entries:
        job_id = e.name[:-4]
        if not e.name.endswith(".log") or job_id in state.jobs or \
                not e.is_file(follow_symlinks=False):
            continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime >= older_than:
                found.append(e.path)
        except FileNotFoundError:
            continue
    return found


# -- removal: the only I/O that deletes ------------------------------------------------------


class Refused(Exception):
    """A path that is not an entry oj may remove."""


def _check_child(directory: str, path: str) -> str:
    """``path`` as a direct child of ``directory`` (both resolved), or Refused."""
    real_dir = os.path.realpath(directory)
    path = os.path.normpath(path)
    name = os.path.basename(path)
    bare = name[len(TRASH_PREFIX):] if name.startswith(TRASH_PREFIX) else name
    if os.path.realpath(os.path.dirname(path)) != real_dir:
        raise Refused(f"{path} is not inside {real_dir}")
    if not _ENTRY_NAME.match(bare):
        raise Refused(f"{path} does not have a name oj gives (letters, digits, '_', '-', '.')")
    full = os.path.join(real_dir, name)
    if os.path.islink(full):
        raise Refused(f"{full} is a symlink")
    return full


def set_workspace_aside(root: str, path: str) -> str:
    """Rename a workspace to a hidden name in the workspaces dir; return that name's path."""
    full = _check_child(paths.workspaces_dir(root), path)
    if not os.path.isdir(full):
        raise Refused(f"{full} is not a directory")
    name = os.path.basename(full)
    if name.startswith(TRASH_PREFIX):
        return full
    aside = os.path.join(os.path.dirname(full), f"{TRASH_PREFIX}{name}-{os.getpid()}")
    os.rename(full, aside)
    return aside


def delete_aside(root: str, aside: str) -> None:
    full = _check_child(paths.workspaces_dir(root), aside)
    repo = _worktree_repository(full)
    shutil.rmtree(full)  # never follows symlinks inside the tree
    if repo is not None:  # a git worktree (a git source's): its repository forgets it
        subprocess.run(["git", "--git-dir", repo, "worktree", "prune"], capture_output=True,
                       timeout=60, check=False)


def _worktree_repository(directory: str) -> str | None:
    """The git directory of the repository whose worktree ``directory`` is, else None: a
    worktree's ``.git`` is a file, ``gitdir: REPO/.git/worktrees/NAME``."""
    try:
        with open(os.path.join(directory, ".git")) as f:
            line = f.readline(4096).strip()
    except OSError:  # none, or a directory: a repository of its own, not a worktree
        return None
    gitdir = line.removeprefix("gitdir: ")
    if gitdir == line or os.path.basename(os.path.dirname(gitdir)) != "worktrees":
        return None
    repo = os.path.dirname(os.path.dirname(gitdir))
    return repo if os.path.isdir(repo) else None


def remove_log(root: str, path: str) -> None:
    full = _check_child(paths.logs_dir(root), path)
    try:
        os.unlink(full)
    except FileNotFoundError:
        pass


def carry_out_job_prune(tx: Transaction, root: str, plan: JobPrunePlan
                        ) -> tuple[list[str], list[str]]:
    """Under the WAL lock: set the plan's workspaces aside, remove its logs and record
    ``job:pruned``. Returns (the set-aside paths, to delete once the lock is released;
    problems). What could not be removed leaves the plan, so the report stays true."""
    aside, problems = [], []
    for job_id, path in list(plan.workspaces.items()):
        try:
            aside.append(set_workspace_aside(root, path))
        except (Refused, OSError) as e:
            problems.append(f"kept the workspace of job {job_id}: {why(e)}")
            del plan.workspaces[job_id]
    for job_id, path in list(plan.logs.items()):
        try:
            remove_log(root, path)
        except (Refused, OSError) as e:
            problems.append(f"kept the log of job {job_id}: {why(e)}")
            del plan.logs[job_id]
    for path in list(plan.orphan_logs):
        try:
            remove_log(root, path)
        except (Refused, OSError) as e:
            problems.append(f"kept {escaped(path)}: {why(e)}")
            plan.orphan_logs.remove(path)
    for path in plan.status_files:
        try:
            os.unlink(_check_child(paths.steps_dir(root), path))
        except FileNotFoundError:
            pass
        except (Refused, OSError) as e:
            problems.append(f"kept {escaped(path)}: {why(e)}")
    if plan.jobs:
        tx.append(job_pruned(ids=[j["id"] for j in plan.jobs]))
    return aside, problems


def delete_set_aside(root: str, aside: list[str]) -> list[str]:
    """Delete workspaces set aside; returns the problems (the next workspace prune retries)."""
    problems = []
    for path in aside:
        try:
            delete_aside(root, path)
        except (Refused, OSError) as e:
            problems.append(f"could not finish removing {escaped(path)}: {why(e)}; "
                            "'oj workspace prune' tries again")
    return problems


def prune_jobs(store: Store, now: float, older_than: float, project: str | None,
               dry_run: bool) -> tuple[JobPrunePlan, list[str]]:
    """``oj job prune``: the plan, carried out unless ``dry_run``, and the problems met.
    Decided and done under the WAL lock: no job can start using a persistent workspace, or
    be resumed, between the choice and the removal."""
    if dry_run:
        return plan_job_prune(store.refresh(), store.root, now, older_than, project), []
    with store.transaction() as tx:
        plan = plan_job_prune(tx.state, store.root, now, older_than, project)
        aside, problems = carry_out_job_prune(tx, store.root, plan)
    return plan, problems + delete_set_aside(store.root, aside)


def prune_workspaces(store: Store, now: float, older_than: float, project: str | None,
                     dry_run: bool
                     ) -> tuple[list[Workspace], list[tuple[Workspace, str]], list[str]]:
    """``oj workspace prune``: (the workspaces removed, or that would be; those skipped and
    why; problems). Chosen and set aside under the WAL lock, so no job starts in one while
    it is chosen and moved; deleted after."""
    def choose(state: State) -> tuple[list[Workspace], list[tuple[Workspace, str]]]:
        found = [ws for ws in scan_workspaces(state, store.root) if in_scope(ws, project)]
        return workspaces_to_prune(found, now, older_than)

    if dry_run:
        remove, skipped = choose(store.refresh())
        return remove, skipped, []
    problems: list[str] = []
    aside: list[tuple[Workspace, str]] = []
    with store.transaction() as tx:
        remove, skipped = choose(tx.state)
        for ws in remove:
            try:
                aside.append((ws, set_workspace_aside(store.root, ws.path)))
            except (Refused, OSError) as e:
                problems.append(f"kept {escaped(ws.path)}: {why(e)}")
    problems += delete_set_aside(store.root, [path for _, path in aside])
    return [ws for ws, _ in aside], skipped, problems


def why(e: Exception) -> str:
    """One line for an error met while removing."""
    if isinstance(e, OSError):
        return escaped(f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else ""))
    return escaped(str(e))


def disk_usage(path: str) -> int:
    """Bytes of the files under ``path``, symlinks not followed."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total
