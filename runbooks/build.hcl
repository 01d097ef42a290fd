# Build a feature on its own branch and submit it to the merge queue:
#
#   oj run build search "add full-text search to the issues page"

command "build" {
  args = "<name> <instructions>"
  run  = { pipeline = "build" }
}

pipeline "build" {
  vars      = ["name", "instructions"]
  workspace = "ephemeral"

  locals {
    repo = "$(git -C ${invoke.dir} rev-parse --show-toplevel)"
  }

  step "init" {
    run = <<-SHELL
      git -C "${local.repo}" worktree add --quiet -b "feature/${var.name}" "${workspace.root}" HEAD
    SHELL
    on_done = { step = "build" }
  }

  step "build" {
    run     = { agent = "builder" }
    on_done = { step = "submit" }
  }

  step "submit" {
    run = <<-SHELL
      REPO="$(git -C ${invoke.dir} rev-parse --show-toplevel)"
      BRANCH="$(git branch --show-current)"
      git add -A
      git diff --cached --quiet || git commit -m "feat(${var.name}): ${var.instructions}"
      git -C "$REPO" push origin "$BRANCH"
      oj queue push merges --var branch="$BRANCH" --var title="feat(${var.name}): ${var.instructions}"
      oj worker start merge
    SHELL
  }
}

agent "builder" {
  run    = "claude --dangerously-skip-permissions"
  prompt = "Build ${var.name}: ${var.instructions}"
  on_idle = { action = "done" }
  on_dead = { action = "escalate" }
}
