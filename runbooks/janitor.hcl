# Housekeeping on a timer: forget jobs that ended a week ago (their logs and workspaces go
# with them) and let git forget worktrees whose directory is gone.
#
#   oj cron start --enable janitor    # the timer oj-cron@PROJECT:janitor.timer, now and at boot
#   oj cron once janitor              # a tick now

cron "janitor" {
  interval = "6h"
  run      = { pipeline = "janitor" }
}

pipeline "janitor" {
  step "jobs" {
    run     = "oj job prune --older-than 7d && oj workspace prune --older-than 7d"
    on_done = { step = "worktrees" }
  }

  step "worktrees" {
    run = <<-SHELL
      if git -C "${invoke.dir}" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "${invoke.dir}" worktree prune
      fi
    SHELL
  }
}
