"""The statuses of items and jobs, grouped as the fold and its readers ask about them."""

LIVE_ITEM_STATES = ("pending", "active", "failed")
# a job in these states has (or is owed) a runner; "waiting" is an agent waiting for a person
LIVE_JOB_STATES = ("running", "waiting")
# A job in any other status (running, waiting for a human...) still owns its log and workspace
FINISHED_JOB_STATES = ("done", "failed", "cancelled")
