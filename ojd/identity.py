"""Process identity: which process a recorded pid names, on which boot and host.

A pid alone is recycled; a pid with its start time (field 22 of /proc/PID/stat) names one
process for the life of a boot, and a boot id and host name say where that pair means
anything. Workers write ``PID STARTTIME`` into their lock files; job and step processes are
recorded with the boot and host they run on.
"""

from __future__ import annotations

import os


def proc_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when it does not run
    (gone, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields follow the last ')'
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def proc_started_at(pid: int) -> float | None:
    """When process ``pid`` started, in wall-clock seconds (to the second of the boot
    time), or None when it does not run."""
    ticks = proc_start_time(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return btime + int(ticks) / os.sysconf("SC_CLK_TCK")


_BOOT_ID: list[str] = []


def boot_id() -> str:
    """This boot's id: a pid and start time recorded in another boot name nothing."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID.append(f.read().strip())
        except OSError:
            _BOOT_ID.append("")
    return _BOOT_ID[0]


def host_name() -> str:
    """This host's name in a shared state: ``$OJ_HOST``, else the kernel's host name. Pids,
    steps and job processes recorded by another host are never looked for here."""
    return os.environ.get("OJ_HOST") or os.uname().nodename


def user_name() -> str:
    """The user this process runs as: who resolved a decision, with ``host_name``."""
    import pwd  # lazy: only where a person's choice is recorded

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.geteuid())


def elsewhere(proc: dict | None) -> str | None:
    """The host a recorded process runs on when that is not this one (a shared store): it
    can be neither seen nor signalled from here; its lease says when it is lost."""
    host = (proc or {}).get("host")
    return host if host not in (None, host_name()) else None


def pid_file_text(pid: int) -> str:
    """What a pid file holds: ``PID STARTTIME``, a pair no recycled pid matches."""
    return f"{pid} {proc_start_time(pid)}\n"


def in_unit(pid: int, unit: str) -> bool:
    """Whether process ``pid`` runs in systemd unit ``unit`` (its cgroup says so)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return any(line.rstrip().endswith("/" + unit) for line in f)
    except OSError:
        return False
