"""Whether a process the state records (a job's process, a step's) still runs: the same
boot, pid and start time, on this host."""

from __future__ import annotations

from ojd.identity import boot_id, elsewhere, proc_start_time


def alive(proc: dict | None) -> bool:
    """Whether the recorded process (``job["process"]``, a step's ``step_proc``) still
    runs: same boot, same pid, same start time."""
    return bool(proc and proc.get("pid") and proc.get("start") and not elsewhere(proc)
                and proc.get("boot", boot_id()) == boot_id()
                and proc_start_time(proc["pid"]) == proc["start"])
