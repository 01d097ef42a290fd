# File a bug and start the worker that fixes it:
#
#   oj run fix "login fails on an empty password"
#
# Each fix is made on its own branch in a fresh worktree, then submitted to the
# merge queue (merge.hcl), whose worker is started (or woken) right after.

command "fix" {
  args = "<description>"
  run  = <<-SHELL
    oj queue push bugs --var title=${args.description}
    oj worker start fix
  SHELL
}

queue "bugs" {
  type = "persisted"
  vars = ["title"]
}

worker "fix" {
  source      = { queue = "bugs" }
  handler     = { pipeline = "bugfix" }
  concurrency = 2
}

pipeline "bugfix" {
  vars      = ["bug"]
  workspace = "ephemeral"

  locals {
    repo   = "$(git -C ${invoke.dir} rev-parse --show-toplevel)"
    branch = "fix/${workspace.nonce}"
  }

  step "init" {
    run = <<-SHELL
      git -C "${local.repo}" worktree add --quiet -b "${local.branch}" "${workspace.root}" HEAD
    SHELL
    on_done = { step = "fix" }
  }

  step "fix" {
    run     = { agent = "bugs" }
    on_done = { step = "submit" }
  }

  # --var keeps the title data even when it holds quotes (a JSON literal would break).
  step "submit" {
    run = <<-SHELL
      REPO="$(git -C ${invoke.dir} rev-parse --show-toplevel)"
      BRANCH="$(git branch --show-current)"
      git add -A
      git diff --cached --quiet || git commit -m "fix: ${var.bug.title}"
      git -C "$REPO" push origin "$BRANCH"
      oj queue push merges --var branch="$BRANCH" --var title="fix: ${var.bug.title}"
      oj worker start merge
    SHELL
    on_done = { step = "done" }
  }

  step "done" {
    run = <<-SHELL
      git -C "${local.repo}" worktree remove --force "${workspace.root}"
    SHELL
  }
}

# When the agent goes quiet, its fix must be committed (a commit of its branch on no
# remote yet); if not, a person decides: `oj decision resolve ID 1 -m "..."` nudges it.
agent "bugs" {
  run    = "claude --dangerously-skip-permissions"
  prompt = "Fix this bug, with a test that fails before the fix: ${var.bug.title}"
  on_idle = { action = "gate", run = "git log --oneline HEAD --not --remotes | grep -q ." }
  on_dead = { action = "escalate" }
}
