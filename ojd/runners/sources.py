"""A job's source (upstream's ``source``): the ``${source.*}`` values, and the git worktree
of ``source = { git = true }``.

The worktree is of the repository the job was invoked from (``${invoke.dir}``), on a branch
of its own (``branch``, default ``ws-NONCE``) started at ``ref`` (default ``HEAD``), made in
the job's ephemeral workspace before its first step. It is removed when the job ends
``done`` and kept otherwise, for a person to look at, until the workspace is pruned. Its
branch stays: the job may have pushed it.
"""

from __future__ import annotations

import os
import subprocess

from ojd.bashrun import Script
from ojd.errors import OjError
from ojd.notify import one_line
from ojd.runbook.model import Pipeline
from ojd.runbook.template import TemplateError, render_shell, render_text

GIT_TIMEOUT = 120.0  # seconds a worktree's creation or removal may take


def context(job: dict, pipeline: Pipeline | None) -> dict[str, str]:
    """``${source.root}``, ``${source.nonce}`` and (a git source) ``${source.branch}``."""
    out = {"root": job["cwd"], "nonce": job["id"]}
    branch = branch_of(job, pipeline)
    if branch is not None:
        out["branch"] = branch
    return out


def branch_of(job: dict, pipeline: Pipeline | None) -> str | None:
    """The worktree branch of a git source: its template rendered (vars, nonce)."""
    if pipeline is None or pipeline.git_branch is None:
        return None
    ctx = {"var": job["vars"], "invoke": {"dir": _invoke(job)},
           "source": {"root": job["cwd"], "nonce": job["id"]}}
    try:
        return one_line(render_text(pipeline.git_branch, ctx, env={})).strip()
    except TemplateError as e:
        raise OjError(f"source branch: {e}") from None


def make_worktree(job: dict, pipeline: Pipeline, env: dict[str, str]) -> None:
    """Make the job's directory a worktree of the invoking repository, unless it is one
    already (a resumed job); raises OjError saying why it could not."""
    root = job["cwd"]
    if os.path.isdir(root) and os.listdir(root):
        return
    branch = branch_of(job, pipeline) or f"ws-{job['id']}"
    ctx = {"var": job["vars"], "invoke": {"dir": _invoke(job)},
           "source": {"root": root, "nonce": job["id"], "branch": branch}}
    try:  # the ref may be a $(...) of the runbook's author: bash expands it
        ref = render_shell(pipeline.git_ref or "HEAD", ctx)
    except TemplateError as e:
        raise OjError(f"source ref: {e}") from None
    os.makedirs(os.path.dirname(root), exist_ok=True)
    script = (f'cd "$OJ_SOURCE_REPO" && git worktree add -b "$OJ_SOURCE_BRANCH" '
              f'"$OJ_SOURCE_ROOT" {ref}')
    _git(script, env, root, branch, _invoke(job), "could not make the job's git worktree")


def remove_worktree(job: dict, env: dict[str, str]) -> None:
    """Remove a done job's worktree (its directory goes with it); its branch stays."""
    _git('cd "$OJ_SOURCE_REPO" && git worktree remove --force "$OJ_SOURCE_ROOT"', env,
         job["cwd"], "", _invoke(job), "could not remove the job's git worktree")


def _invoke(job: dict) -> str:
    return job.get("invoke") or job["project"]


def _git(script: str, env: dict[str, str], root: str, branch: str, repo: str,
         what: str) -> None:
    env = dict(env, OJ_SOURCE_REPO=repo, OJ_SOURCE_ROOT=root, OJ_SOURCE_BRANCH=branch)
    try:
        with Script(script, "-e", "-o", "pipefail") as s:
            done = subprocess.run(s.argv, pass_fds=s.fds, env=env, capture_output=True,
                                  text=True, timeout=GIT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OjError(f"{what}: {e}") from None
    if done.returncode != 0:
        said = one_line(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else \
            f"exit {done.returncode}"
        raise OjError(f"{what} (in {repo}): {said}")
