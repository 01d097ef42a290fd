# Merge queue: a branch pushed here is merged into its base in a fresh worktree,
# checked, and pushed. Conflicts and failing checks go to an agent to resolve.
#
#   oj queue push merges --var branch=fix/login --var title="fix: login"
#   oj worker start merge

queue "merges" {
  type     = "persisted"
  vars     = ["branch", "title", "base"]
  defaults = { base = "main" }
  retry    = { attempts = 2, cooldown = "30s" }
}

worker "merge" {
  source      = { queue = "merges" }
  handler     = { pipeline = "merge" }
  concurrency = 1
}

pipeline "merge" {
  vars      = ["mr"]
  workspace = "ephemeral"

  locals {
    repo = "$(git -C ${invoke.dir} rev-parse --show-toplevel)"
  }

  notify {
    on_start = "Merging: ${var.mr.title}"
    on_done  = "Merged: ${var.mr.title}"
    on_fail  = "Merge failed: ${var.mr.title}"
  }

  # Leave the worktree registered nowhere when the job fails for good.
  on_fail = { step = "cleanup" }

  step "init" {
    run = <<-SHELL
      git -C "${local.repo}" fetch --quiet origin "${var.mr.base}" "${var.mr.branch}"
      git -C "${local.repo}" worktree add --quiet --detach "${workspace.root}" "origin/${var.mr.base}"
    SHELL
    on_done = { step = "merge" }
  }

  step "merge" {
    run = <<-SHELL
      git merge --no-ff --no-edit -m "${var.mr.title}" "origin/${var.mr.branch}"
    SHELL
    on_done = { step = "check" }
    on_fail = { step = "resolve" }
  }

  step "check" {
    run = <<-SHELL
      if [ -x ./check ]; then ./check; elif [ -f Makefile ]; then make check; fi
    SHELL
    on_done = { step = "push" }
    on_fail = { step = "resolve" }
  }

  step "resolve" {
    run     = { agent = "resolver" }
    on_done = { step = "check" }
  }

  step "push" {
    run = <<-SHELL
      git push --quiet origin "HEAD:${var.mr.base}"
      git -C "${local.repo}" worktree remove --force "${workspace.root}"
    SHELL
  }

  step "cleanup" {
    run = <<-SHELL
      git -C "${local.repo}" worktree remove --force "${workspace.root}" || true
    SHELL
  }
}

agent "resolver" {
  run    = "claude --dangerously-skip-permissions"
  prompt = <<-PROMPT
    Merge conflicts or failing checks in this worktree block merging
    "${var.mr.branch}" into "${var.mr.base}". Resolve them, commit, and stop.
  PROMPT
  on_idle = { action = "done" }
  on_dead = { action = "escalate" }
}
