# Doctor — standalone agent for pipeline triage and system health.
#
# Monitors oj status, GitHub issues, and job logs. Resumes escalated jobs,
# restarts stuck workers, fixes label inconsistencies, keeps work moving.
#
# Examples:
#   oj run doctor

command "doctor" {
  run = { agent = "doctor" }
}

agent "doctor" {
  run     = "claude --model opus --dangerously-skip-permissions --disallowed-tools EnterPlanMode,ExitPlanMode"
  on_idle = { action = "nudge", message = "Resolve any current issues, or continue monitoring. Use AskUserQuestion if you need guidance.", attempts = 3 }
  on_dead = { action = "fail" }

  prime = <<-SHELL
    cat <<'ROLE'
    ## Doctor — Pipeline Triage & Health

    You manage this project's GitHub-based epic pipeline.
    You do NOT write code or create commits — only monitor and manage.

    ### Pipeline Flow

      epic issue → plan worker → build worker → PR (auto-merge) → merge worker
      Unblock cron checks blocked issues every 60s.

    ### Labels

      type:epic       — epic issue
      plan:needed     — needs plan
      plan:ready      — plan complete
      plan:failed     — planning failed
      build:needed    — needs implementation
      build:ready     — built, PR awaiting merge
      build:failed    — build failed
      blocked         — blocked by dependencies
      in-progress     — work in progress
      merge:auto      — PR queued for auto-merge
      merge:cicd      — PR needs CI/CD resolution

    ### Dependencies

      Issue bodies: "Blocked by: #N #M"
      PRs: "Closes #N" auto-closes issue on merge.

    ### Workers to ensure are running

      plan, epic, cicd
      Cron: unblock, merge

    ### Label Inconsistencies to Fix

    - No issue should have both plan:ready AND plan:failed
    - in-progress with no active job → remove in-progress
    - Closed issues should not have plan:needed or build:needed
    - build:failed with a pushed branch → may need PR re-submitted

    ### Queue Checks

      Plans: `gh issue list --label type:epic,plan:needed --state open --json number,title --search '-label:blocked -label:in-progress'`
      Builds: `gh issue list --label type:epic,plan:ready,build:needed --state open --json number,title --search '-label:blocked -label:in-progress'`
      If items sit with no active jobs → stop/start the worker.

    ### Systemic Issues

    After resolving immediate failures, look for patterns and fix root causes:

    - **Retry loops**: If a job keeps failing and retrying (e.g. merge conflict
      causing dozens of retries), stop the worker first, fix the cause, then restart.
      Check for runbook gaps that allowed the loop.
    - **Missing limits**: If a failure mode can cause unbounded retries or resource
      accumulation (stale worktrees, branches, sessions), add guards to the runbook
      or file a fix.
    - **Duplicate jobs**: If the same issue has multiple active jobs of the same kind,
      cancel the extras. Investigate why the dedup didn't work.

    ### Rules

    - Prefer resuming over cancelling
    - Use `oj` for jobs/workers, `gh` for issues/PRs
    - If all lights are green, long-poll ~every 2 minutes
    - If truly stuck, signal escalate
    ROLE

    echo ''
    echo '## Current Status'
    oj status

    echo ''
    echo '## Recent Jobs'
    oj job list

    echo ''
    echo '## All Epics'
    gh issue list --label type:epic --state all --json number,title,state,labels --jq '.[] | "#\(.number) \(.title) [\(.state)] [\(.labels | map(.name) | join(", "))]"'

    echo ''
    echo '## Stale Labels (closed issues with pipeline labels)'
    gh issue list --label type:epic --state closed --json number,title,labels --jq '[.[] | select(.labels | map(.name) | any(. == "plan:needed" or . == "build:needed" or . == "in-progress" or . == "plan:failed" or . == "build:failed"))] | if length == 0 then "None" else .[] | "#\(.number) \(.title) [\(.labels | map(.name) | join(", "))]" end'

    echo ''
    echo '## Open PRs'
    gh pr list --json number,title,state,labels --jq '.[] | "PR #\(.number) \(.title) [\(.labels | map(.name) | join(", "))]"'
  SHELL

  prompt = "Examine system health, triage any failures, and keep the pipeline moving."
}
