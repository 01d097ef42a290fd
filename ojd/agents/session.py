"""tmux I/O for agent sessions: one private tmux server (socket) per job.

A private socket keeps a job's sessions away from the user's own tmux and from other
jobs; the tmux server outlives the process that started it, which is what lets a new
runner find a session its crashed predecessor started.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess

from ojd.errors import OjError

# sun_path holds 108 bytes with its NUL; leave room for tmux's own checks
MAX_SOCKET_PATH = 100
TMUX = "tmux"
SCREEN_HISTORY = 100  # lines above the visible screen kept with an agent's last screen
# what a session name may hold: nothing tmux reads as a format (#) or a target (: .)
_INERT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def socket_path(state_root: str, job_id: str) -> str:
    """The job's socket: under the state dir when the path fits a Unix socket, else in a
    private per-user directory under /tmp named by a hash of the long path."""
    path = os.path.join(state_root, "agents", job_id)
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        _private_dir(os.path.dirname(path))
        return path
    base = os.path.join("/tmp", f"oj-agents-{os.geteuid()}")
    _private_dir(base)
    return os.path.join(base, hashlib.sha256(os.fsencode(path)).hexdigest()[:20])


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.geteuid() or not os.path.isdir(path) or os.path.islink(path):
        raise OjError(f"agent socket directory {path} is not a directory of this user; "
                      "remove it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def session_name(job_id: str, step: str, visit: int, start: int) -> str:
    """tmux names cannot hold ':' or '.'; the start count tells restarts apart."""
    clean = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in step)
    return f"oj-{job_id}-{clean}-{visit}-{start}"


def _tmux(socket: str, *args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    # -f /dev/null: the user's ~/.tmux.conf must not change how agents run
    return subprocess.run([TMUX, "-f", "/dev/null", "-S", socket, *args], check=check,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def exit_file(socket: str, session: str) -> str:
    return f"{socket}.{session}.exit"


def screen_file(socket: str, session: str) -> str:
    return f"{socket}.{session}.screen"


def last_screen(socket: str, session: str) -> str | None:
    """What the agent's pane showed as its command exited (None: not kept, e.g. killed)."""
    try:
        with open(screen_file(socket, session), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def start(socket: str, session: str, command: str, cwd: str, env: dict[str, str],
          setenv: dict[str, str]) -> None:
    """Start ``command`` (a shell command line) detached in ``cwd``; its exit status lands
    in a file next to the socket, since the session (and its pane) ends with the command.
    ``env`` starts a new tmux server; ``setenv`` also reaches a session of a server started
    earlier (which keeps the environment it started with).

    tmux format-expands what it is given as a start directory and a session name, where
    ``#(...)`` runs a command: the directory and the environment (rendered from item data)
    go into the session's script, quoted for bash, and tmux is given nothing of them."""
    if not _INERT_NAME.fullmatch(session):
        raise OjError(f"tmux session name {session!r} holds characters tmux would expand")
    status = exit_file(socket, session)
    try:
        os.unlink(status)
    except FileNotFoundError:
        pass
    q = shlex.quote(status)
    lines = [f"export {key}={shlex.quote(value)}" for key, value in setenv.items()
             if _ENV_NAME.fullmatch(key)]
    lines.append(f"cd -- {shlex.quote(cwd)} || exit 126")
    # the command goes through a file: tmux messages are too small for a long prompt
    script = f"{socket}.{session}.sh"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # its last screen is kept as it exits (the pane goes with it): the job log gets it
    screen = shlex.quote(screen_file(socket, session))
    tmux = shlex.quote(shutil.which(TMUX) or TMUX)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + f"\n{command}\n"
                f"__oj_rc=$?; {tmux} -S {shlex.quote(socket)} capture-pane -p -J "
                f"-S -{SCREEN_HISTORY} -t \"$TMUX_PANE\" > {screen}.tmp 2>/dev/null "
                f"&& mv {screen}.tmp {screen}\n"
                f"printf '%s' \"$__oj_rc\" > {q}.tmp && mv {q}.tmp {q}\n")
    proc = _tmux(socket, "new-session", "-d", "-s", session, "-x", "160", "-y", "48",
                 "bash", script, env=env)
    if proc.returncode != 0:
        raise OjError("tmux could not start the agent: "
                      f"{proc.stderr.strip() or f'exit {proc.returncode}'}")


def alive(socket: str, session: str) -> bool:
    return _tmux(socket, "has-session", "-t", f"={session}").returncode == 0


def exit_status(socket: str, session: str) -> int | None:
    """The agent command's exit status, once its session ended (None: unknown, e.g. the
    session was killed)."""
    try:
        with open(exit_file(socket, session)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def capture(socket: str, session: str) -> str | None:
    """The visible screen, or None when the session is gone."""
    proc = _tmux(socket, "capture-pane", "-p", "-t", f"={session}:")
    return proc.stdout if proc.returncode == 0 else None


def transcript(socket: str, session: str) -> str | None:
    """Everything the pane still holds, its history and the screen (None: gone)."""
    proc = _tmux(socket, "capture-pane", "-p", "-J", "-S", "-", "-t", f"={session}:")
    return proc.stdout if proc.returncode == 0 else None


def send(socket: str, session: str, text: str) -> bool:
    """Type ``text`` then Enter, as a person at the keyboard would."""
    target = f"={session}:"
    if text and _tmux(socket, "send-keys", "-t", target, "-l", "--", text).returncode != 0:
        return False
    return _tmux(socket, "send-keys", "-t", target, "Enter").returncode == 0


def kill(socket: str, session: str) -> None:
    _tmux(socket, "kill-session", "-t", f"={session}")
    for path in (exit_file(socket, session), screen_file(socket, session),
                 f"{socket}.{session}.sh"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def end_job(socket: str) -> None:
    """Stop every session of a job (its tmux server) and remove the socket."""
    _tmux(socket, "kill-server")
    directory, name = os.path.split(socket)
    try:
        for entry in os.listdir(directory):
            if entry == name or entry.startswith(name + "."):
                os.unlink(os.path.join(directory, entry))
    except OSError:
        pass


def activity(socket: str, session: str) -> float | None:
    """When the session's window last showed new output (epoch seconds)."""
    proc = _tmux(socket, "display-message", "-p", "-t", f"={session}:", "#{window_activity}")
    try:
        return float(proc.stdout.strip()) if proc.returncode == 0 else None
    except ValueError:
        return None


def attach_argv(socket: str, session: str) -> list[str]:
    return [TMUX, "-f", "/dev/null", "-S", socket, "attach-session", "-t", f"={session}"]
