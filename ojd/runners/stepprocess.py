"""A step's process: the bash wrapper it runs in (its own session, recorded before it
starts), the wait for its end (its output echoed to the journal, its log capped, its
deadline kept), its exit status from the file the wrapper leaves, and the stop of its
process group."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

from ojd.runners import joblog, leftovers
from ojd.runners.leftovers import STOP_GRACE

# A step's wrapper, in the step's own session. It waits until its runner has recorded it
# (a runner that dies first leaves nothing running: end-of-file, exit unrun), runs the
# script, and leaves its exit status where a runner that takes the job over finds it. $0
# names the job and step in ps and systemctl status. Arguments: sync fd, status file, fence
# (1: the step dies with its runner), then ``-c SCRIPT`` or a script file (/dev/fd/N: closed
# once read). With the fence, a reader in the step's group keeps the sync pipe: its
# end-of-file without "done" means the runner died (kill -9, OOM), and the whole group is
# killed before another host can take the job over. The script runs in a subshell (a fork,
# no second bash to start) as ``bash -e -o pipefail -c`` would run it: $0 "bash", no
# positional parameters, none of the wrapper's variables, and the same line numbers, as the
# eval is on line 1.
STEP_WRAPPER = (
    'read -r -u "$1" _ || exit 125; __oj_status=$2; '
    'if [ "$3" = 1 ]; then { read -r -u "$1" __oj_w; [ "$__oj_w" = done ] || kill -KILL 0; '
    '} & fi; eval "exec $1<&-"; '
    'if [ "$4" = -c ]; then __oj_script=$5; else __oj_script=$(< "$4"); fi; '
    'case $4 in /dev/fd/[0-9]*) eval "exec ${4#/dev/fd/}<&-";; esac; '
    '(unset __oj_status; BASH_ARGV0=bash; set -e -o pipefail; '
    'eval "set --; unset __oj_script; $__oj_script"); '
    '__oj_rc=$?; printf "%d\\n" "$__oj_rc" >"$__oj_status"; exit "$__oj_rc"\n')


class StepCommand:
    """The command line of a step's wrapper, kept short for ps and ``systemctl status``:
    ``bash -c 'eval "$(</dev/fd/W)" W<&-' oj-step:JOB:STEP SYNC STATUS FENCE /dev/fd/S``.
    The wrapper and the script reach bash through memory files (``fds``, to pass to the
    child), which bash reads and closes before the script runs; closed here on exit."""

    def __init__(self, job_id: str, step: str, sync_fd: int, status: str, fence: str,
                 script: str) -> None:
        wrapper = _memory_file("oj-step-wrapper", STEP_WRAPPER)
        try:
            text = _memory_file("oj-step-script", script)
        except BaseException:
            os.close(wrapper)
            raise
        # the wrapper is read before its fd is closed: the expansion comes first
        self.argv = [BASH, "-c", f'eval "$(</dev/fd/{wrapper})" {wrapper}<&-',
                     f"oj-step:{job_id}:{step}", str(sync_fd), status, fence,
                     f"/dev/fd/{text}"]
        self.fds = (sync_fd, wrapper, text)
        self._own = (wrapper, text)

    def __enter__(self) -> StepCommand:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._own:
            os.close(fd)


def _memory_file(name: str, text: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)  # pass_fds opens it to the step only
    try:
        view = memoryview(text.encode("utf-8", "surrogateescape"))
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    return fd


# bash by its path, found once: a PATH search per step costs an execve per miss
BASH = shutil.which("bash") or "/bin/bash"


class Echo:
    """Copies what a step adds to the job log to this process's stdout (the job's journal
    stream), so ``journalctl -u oj-job-ID.scope`` shows it too. The step writes the log
    itself: a job process that dies mid-step loses the journal's copy, never the step."""

    EVERY = 0.25  # seconds between copies while the step runs

    def __init__(self, log_path: str) -> None:
        self._f = open(log_path, "rb")  # noqa: SIM115 - closed by close()
        self._f.seek(0, os.SEEK_END)

    def copy(self) -> None:
        if os.fstat(self._f.fileno()).st_size < self._f.tell():
            self._f.seek(0, os.SEEK_END)  # its middle was cut (joblog): go on from its end
        while data := self._f.read(65536):
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(1, view):]
            except OSError:
                return  # the journal went away: the log has it all

    def close(self) -> None:
        self.copy()
        self._f.close()


def read_status(path: str) -> int | None:
    """A step's exit status from its status file; None when it wrote none (or half)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


def terminate_group(pgid: int, proc: subprocess.Popen | None = None, grace: float = STOP_GRACE
                    ) -> None:
    """SIGTERM a step's process group, SIGKILL it after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap the wrapper: a zombie would keep the group "alive"
            # and the step's processes that came back to this process (its subreaper);
            # the wrapper itself is its Popen's to collect
            leftovers.reap_group(pgid, keep=pgid)
            if not _group_alive(pgid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# seconds between looks at the size of a running step's log (``job_log_limit``)
CAP_EVERY = 0.5


def cap_log(path: str, limit: int) -> None:
    try:
        joblog.cap(path, limit)
    except OSError:
        pass  # a cut that fails (a full disk) is tried again at the next look


def wait_step(proc: subprocess.Popen, echo: Echo | None, deadline: float | None = None,
          cap: Callable[[], None] | None = None) -> int | None:
    """The step's exit status, its new output echoed and its log capped (``cap``)
    meanwhile; None when it still runs at ``deadline`` (epoch seconds). In this thread:
    a thread per step for the cap cost a PID (and CPU) per job."""
    if echo is None and deadline is None and cap is None:
        return proc.wait()
    fd = os.pidfd_open(proc.pid)
    next_cap = time.monotonic() + CAP_EVERY
    try:
        while True:
            wait = Echo.EVERY if echo is not None else CAP_EVERY if cap else 3600.0
            if deadline is not None:
                left = deadline - time.time()
                if left <= 0:
                    return None
                wait = min(wait, left)
            if select.select([fd], [], [], wait)[0]:
                break
            if cap is not None and time.monotonic() >= next_cap:
                cap()
                next_cap = time.monotonic() + CAP_EVERY
            if echo is not None:
                echo.copy()
    finally:
        os.close(fd)
    return proc.wait()
