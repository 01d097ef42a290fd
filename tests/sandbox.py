"""A private systemd (PID 1 of its own pid/mount/uts/ipc namespaces) for tests and demos.

The host's systemd is not PID 1 (or not present), so the tests boot their own system manager
against the host's /usr and /etc, while everything that manager would write goes to private
places: tmpfs on /run, /tmp, /var/tmp and /dev/shm, and directories under ``root`` bound over
/etc/systemd/system, /var/lib/systemd and /var/log/journal. Those directories outlive the
sandbox, so enablement, linger and the journal survive a power-off and a new boot on the same
root. Units that would act on the host's kernel or disk are masked in /run/systemd/system.

What else keeps the host untouched (each learnt from a boot that changed it):
- a private /dev (systemd adds /dev/log and mount points; /dev/kmsg is the host's log),
- a private tmpfs on /sys/fs/cgroup (systemd remounts it read-only, a superblock change),
- read-only /proc/sys (PID 1 writes sysctls; the network namespace is the host's),
- a cgroup per sandbox, so two sandboxes (or a stale one) never share slices.
Not covered: a unit's StateDirectory=, a user manager's ~/.config and the like are the
host's paths.

Stdlib only: importable from the pytest plugin and from demo scripts alike.

    with Sandbox(Path("/var/lib/oj-sandbox/demo")) as sb:
        sb.systemctl("start", "oj-worker@shop:a.service")
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pty
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

SYSTEMD = "/lib/systemd/systemd"
BOOT_TARGET = "oj-test.target"
# Units pulled by sysinit.target (or by default dependencies) that would touch the host's
# kernel settings, devices, clock, /etc or /var. Masking them keeps the boot small and fast.
MASKED_UNITS = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysusers.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-modules-load.service",
    "modprobe@.service",
    "systemd-remount-fs.service",
    "systemd-timesyncd.service",
    "systemd-random-seed.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-firstboot.service",
    "systemd-update-utmp.service",
    "systemd-pstore.service",
    "kmod-static-nodes.service",
    # These write to the host's /etc or firmware even though /var/lib/systemd is private.
    "systemd-machine-id-commit.service",
    "systemd-update-done.service",
    "systemd-hwdb-update.service",
    "ldconfig.service",
    "systemd-repart.service",
    "systemd-boot-update.service",
    "systemd-journal-catalog-update.service",
    # journald would enable and read the host's kernel audit stream.
    "systemd-journald-audit.socket",
    # Kernel file systems: harmless in a private mount namespace, but only cost boot time.
    "dev-hugepages.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
)
# Host directories replaced by directories under root, so state lives with the sandbox.
PERSISTENT_BINDS = {
    "etc-systemd-system": "/etc/systemd/system",
    "var-lib-systemd": "/var/lib/systemd",
    "var-log-journal": "/var/log/journal",
}
# Never a sandbox root: these are private tmpfs inside, so the host copy would be invisible.
_PRIVATE_TMPFS = ("/run", "/tmp", "/var/tmp", "/dev/shm")
_CGROUP_PREFIX = "oj-sb"
_CGROUP_RE = re.compile(rf"^{_CGROUP_PREFIX}-(\d+)-(\d+)-[0-9a-f]+$")
_PR_SET_PDEATHSIG = 1
USER_UID_BASE = 61001  # sandbox-only test users (see Sandbox.users)
_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class SandboxError(Exception):
    """The sandbox failed to boot, answer or stop."""


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks: with the PID it names a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_tag() -> str:
    """Identifies this process across PID reuse; stored with every sandbox it starts."""
    pid = os.getpid()
    return f"{pid}-{_proc_start_time(pid)}"


def owner_alive(tag: str) -> bool:
    pid_s, _, start_s = tag.partition("-")
    try:
        return _proc_start_time(int(pid_s)) == int(start_s)
    except ValueError:
        return False


def cgroup_mounts() -> list[Path]:
    """Mount points of the cgroup hierarchies visible on the host (v1 and v2)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(fields[4]))
    return mounts


def _joinable(mount: Path) -> bool:
    # A v1 cpuset cgroup starts with no CPUs or memory nodes, so nothing could join it;
    # systemd does not manage cpuset on v1 anyway.
    return not (mount / "cpuset.cpus").exists()


def _kill_cgroup_tree(top: Path) -> bool:
    """SIGKILL every process in a cgroup subtree; True when none was found."""
    empty = True
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                empty = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    return empty


def _remove_cgroup_tree(top: Path, timeout: float = 60) -> None:
    """Remove a cgroup subtree deepest first; its processes are killed, then awaited (on a
    loaded machine killed processes take a while to exit: the deadline only catches a hang)."""
    deadline = time.monotonic() + timeout
    while top.exists():
        _kill_cgroup_tree(top)
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()
        if not top.exists():
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"cgroup {top} could not be removed")
        time.sleep(0.05)


def reap_stale_sandboxes() -> list[str]:
    """Kill sandboxes whose owner died without powering them off (a crashed test run).

    Each sandbox lives in cgroups named after its owner, so a stale one is found even when its
    root directory is gone. Returns the names of the cgroups removed.
    """
    reaped: set[str] = set()
    mounts = cgroup_mounts()
    for mount in mounts:
        for top in mount.glob(f"{_CGROUP_PREFIX}-*"):
            m = _CGROUP_RE.match(top.name)
            if m and not owner_alive(f"{m[1]}-{m[2]}"):
                _kill_cgroup_tree(top)
                reaped.add(top.name)
    for name in reaped:
        for mount in mounts:
            if (mount / name).exists():
                _remove_cgroup_tree(mount / name)
    return sorted(reaped)


def _set_pdeathsig() -> None:
    # If the owner dies unexpectedly, the kernel kills unshare, and unshare --kill-child kills
    # the sandbox's systemd, which takes the whole pid namespace with it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _pump_console(master: int, log_path: Path) -> None:
    """Copy the console pty into the log until every holder of the other end is gone."""
    with log_path.open("ab") as log:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the namespace is gone
                break
            if not data:
                break
            log.write(data.replace(b"\r\n", b"\n"))
            log.flush()
    os.close(master)


class Sandbox:
    """One booted systemd; ``root`` is a host directory holding its persistent state."""

    def __init__(self, root: Path, *, wants: Sequence[str] = ("oj-workers.target",),
                 users: Sequence[str] = ()) -> None:
        self.root = Path(root).resolve()
        # Test users that exist only inside: private copies of /etc/passwd, group and shadow
        # are bound over the host's, homes live under root/home.
        self.users = tuple(users)
        for private in _PRIVATE_TMPFS:
            if self.root == Path(private) or self.root.is_relative_to(private):
                raise SandboxError(f"{self.root} is under {private}, private inside the sandbox")
        # Units the boot target pulls in; oj-workers.target brings enabled workers back.
        self.wants = tuple(wants)
        self.pid: int | None = None
        self.log_path = self.root / "console.log"
        self._unshare: subprocess.Popen[bytes] | None = None
        # Name of its cgroup in every hierarchy (set by boot, kept for inspection afterwards).
        self.cgroup = ""
        self._console: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def boot(self, timeout: float = 30) -> None:
        """Start systemd and wait until it runs and the system bus answers.

        Call from a thread that outlives the sandbox (normally the main thread): the sandbox
        is killed when the thread that booted it exits, so a crashed run leaves nothing behind.
        """
        if self.pid is not None:
            raise SandboxError("sandbox already booted")
        reap_stale_sandboxes()
        self.root.mkdir(parents=True, exist_ok=True)
        for name, target in PERSISTENT_BINDS.items():
            self._make_state_dir(self.root / name, Path(target))
        (self.root / "owner").write_text(owner_tag() + "\n")
        self._write_user_files()
        self.cgroup = f"{_CGROUP_PREFIX}-{owner_tag()}-{secrets.token_hex(4)}"
        joins = []
        try:
            for mount in cgroup_mounts():
                if _joinable(mount):
                    (mount / self.cgroup).mkdir()
                    joins.append(mount / self.cgroup / "cgroup.procs")
        except OSError as exc:
            for procs in joins:
                procs.parent.rmdir()
            raise SandboxError(f"cannot create cgroup {self.cgroup}: {exc}") from exc
        script = self.root / "boot.sh"
        script.write_text(self._boot_script(joins))
        deadline = time.monotonic() + timeout
        with self.log_path.open("ab") as log:
            log.write(f"\n==== boot {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
        # A pty stands in for /dev/console (as with systemd-nspawn): the host's console stays
        # untouched and whatever systemd prints there lands in the log.
        master, slave = pty.openpty()
        try:
            self._unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc",
                 "--uts", "--ipc", "/bin/sh", str(script)],
                stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                env=_BASE_ENV, start_new_session=True, preexec_fn=_set_pdeathsig,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._console = threading.Thread(
            target=_pump_console, args=(master, self.log_path), daemon=True
        )
        self._console.start()
        try:
            self.pid = self._find_init(deadline)
            self._wait_running(deadline)
            # pystemd and busctl talk to the system bus; journald makes `journalctl -u` work.
            self.systemctl("start", "dbus.socket", "systemd-journald.service")
            self.wait_for(self._bus_answers, max(deadline - time.monotonic(), 1), "system bus")
        except SandboxError as exc:
            self.kill()
            tail = self.log_tail()
            raise SandboxError(f"{exc}\n--- {self.log_path} (tail) ---\n{tail}") from None
        except BaseException:
            self.kill()
            raise

    def poweroff(self, timeout: float = 30) -> None:
        """Clean shutdown; falls back to kill() if systemd does not exit in time."""
        if self._unshare is None:
            return
        if self.pid is not None and self._unshare.poll() is None:
            # SIGRTMIN+4 is systemd's "start poweroff.target": no bus or nsenter needed.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGRTMIN + 4)
            try:
                self._unshare.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise SandboxError(f"no clean poweroff within {timeout}s; killed") from None
        self._finish()

    def kill(self) -> None:
        """Hard stop, like a power loss: the pid namespace dies with its init."""
        if self._unshare is None:
            return
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        try:
            # unshare reaps systemd; killing unshare first would leave a zombie for the host.
            self._unshare.wait(10)
        except subprocess.TimeoutExpired:
            self._unshare.kill()
            self._unshare.wait(10)
        self._finish()

    def _finish(self) -> None:
        self.pid = None
        self._unshare = None
        if self._console is not None:
            self._console.join(5)
            self._console = None
        for mount in cgroup_mounts():
            if self.cgroup and (mount / self.cgroup).exists():
                _remove_cgroup_tree(mount / self.cgroup)

    def __enter__(self) -> Sandbox:
        self.boot()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.poweroff()

    # -- running commands inside -------------------------------------------------------------

    def command(
        self,
        args: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        """The host command line and environment that run ``args`` inside the sandbox."""
        if self.pid is None:
            raise SandboxError("sandbox is not running")
        full_env = dict(_BASE_ENV, HOME="/root", USER="root", LOGNAME="root")
        prefix = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", f"--wd={cwd or '/'}"]
        if user is not None:
            pw = self.passwd(user)
            runtime = f"/run/user/{pw.pw_uid}"
            full_env.update(
                HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name, SHELL=pw.pw_shell,
                XDG_RUNTIME_DIR=runtime, DBUS_SESSION_BUS_ADDRESS=f"unix:path={runtime}/bus",
            )
            prefix += ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                       "--init-groups", "--"]
        else:
            prefix.append("--")
        full_env.update(env or {})
        return prefix + list(args), full_env

    def popen(
        self,
        args: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        cmd, full_env = self.command(args, user=user, env=env, cwd=cwd)
        # Own session, so a timeout can kill nsenter and the process it forked inside together.
        kw.setdefault("start_new_session", True)
        return subprocess.Popen(cmd, env=full_env, **kw)

    def run(
        self,
        args: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = self.popen(
            args, user=user, env=env, cwd=cwd, text=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SandboxError(f"{shlex.join(args)} timed out after {timeout}s") from None
        result = subprocess.CompletedProcess(list(args), proc.returncode, out, err)
        if check and result.returncode != 0:
            raise SandboxError(
                f"{shlex.join(args)} exited {result.returncode}\n"
                f"stdout: {out.strip()}\nstderr: {err.strip()}"
            )
        return result

    def systemctl(self, *args: str, user: str | None = None, check: bool = True) -> str:
        scope = ["--user"] if user is not None else []
        return self.run(
            ["systemctl", *scope, "--no-pager", *args], user=user, check=check
        ).stdout.strip()

    def unit_property(self, unit: str, prop: str, *, user: str | None = None) -> str:
        return self.systemctl("show", "-P", prop, unit, user=user)

    def journal(self, unit: str, *, user: str | None = None) -> str:
        """Messages of a unit, as `journalctl -u` prints them (message text only)."""
        flag = "--user-unit" if user is not None else "-u"
        return self.run(["journalctl", "--no-pager", "-o", "cat", flag, unit]).stdout

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SandboxError(f"timed out after {timeout}s waiting for {what or predicate}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def passwd(self, user: str) -> pwd.struct_passwd:
        """A user's entry: a sandbox-only test user, else the host's."""
        if user in self.users:
            uid = USER_UID_BASE + self.users.index(user)
            home = str(self.root / "home" / user)
            return pwd.struct_passwd((user, "x", uid, uid, "oj test user", home, "/bin/sh"))
        return pwd.getpwnam(user)

    # -- internals -------------------------------------------------------------------------

    def _write_user_files(self) -> None:
        etc = self.root / "etc-users"
        etc.mkdir(exist_ok=True)
        extra = {"passwd": [], "group": [], "shadow": []}
        for name in self.users:
            pw = self.passwd(name)
            home = Path(pw.pw_dir)
            if not home.exists():
                home.mkdir(parents=True)
                os.chown(home, pw.pw_uid, pw.pw_gid)
                home.chmod(0o755)
            extra["passwd"].append(":".join(str(f) for f in pw) + "\n")
            extra["group"].append(f"{name}:x:{pw.pw_gid}:\n")
            extra["shadow"].append(f"{name}:!:19000:0:99999:7:::\n")
        for name, lines in extra.items():
            host = Path("/etc") / name
            (etc / name).write_text(host.read_text() + "".join(lines))
            (etc / name).chmod(host.stat().st_mode & 0o777)


    def _boot_script(self, cgroup_procs: Sequence[Path]) -> str:
        q = shlex.quote
        units = "/run/systemd/system"
        wants = "".join(f"Wants={w}\n" for w in self.wants)
        binds = "\n".join(
            f"if [ -d {q(target)} ]; then mount --bind {q(str(self.root / name))} {q(target)}; fi"
            for name, target in PERSISTENT_BINDS.items()
        )
        users = "\n".join(
            f"mount --bind {q(str(self.root / 'etc-users' / name))} /etc/{name}"
            for name in ("passwd", "group", "shadow")
        ) if self.users else ""
        return f"""\
# PID 1 of fresh pid/mount/uts/ipc namespaces: build a private view of the host, then become
# systemd. Written by tests/sandbox.py for each boot.
set -eu
# Own cgroups, so systemd's slices never collide with another sandbox's (or the host's).
for f in {" ".join(q(str(p)) for p in cgroup_procs)}; do echo 0 > "$f"; done
mount --make-rprivate /
# PID 1 writes a few sysctls (net.unix.max_dgram_qlen is per network namespace, and the
# network is the host's): read-only, as under systemd-nspawn, so those writes fail harmlessly.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
# systemd remounts the /sys/fs/cgroup tmpfs read-only (a superblock change, visible to the
# host) and adds symlinks to it: give it a private tmpfs holding the host's hierarchies.
mkdir /run/oj-cgroup
mount --rbind /sys/fs/cgroup /run/oj-cgroup
mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
for h in /run/oj-cgroup/*; do
    if [ ! -L "$h" ] && mountpoint -q "$h"; then
        mkdir "/sys/fs/cgroup/${{h##*/}}"
        mount --move "$h" "/sys/fs/cgroup/${{h##*/}}"
    fi
done
umount -l /run/oj-cgroup
rmdir /run/oj-cgroup
mount -o remount,bind,ro /sys
# A private /dev: systemd adds /dev/log and mount points there, and /dev/kmsg and the VTs are
# the host's. The console is the pty the log is read from; /dev/kmsg swallows writes.
dev=/run/oj-dev
mkdir $dev
mount -t tmpfs -o mode=755,nosuid tmpfs $dev
for n in null zero full random urandom tty console kmsg; do touch $dev/$n; done
for n in null zero full random urandom tty; do mount --bind /dev/$n $dev/$n; done
mount --bind /proc/self/fd/1 $dev/console
mount --bind /dev/null $dev/kmsg
ln -s /proc/self/fd $dev/fd
ln -s /proc/self/fd/0 $dev/stdin
ln -s /proc/self/fd/1 $dev/stdout
ln -s /proc/self/fd/2 $dev/stderr
ln -s pts/ptmx $dev/ptmx
mkdir $dev/pts $dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts $dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $dev/shm
mount --move $dev /dev
# Boot-time cleanup of /tmp would otherwise empty the host's /tmp.
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
mkdir -p /run/lock {units}/systemd-journald.service.d /run/systemd/journald.conf.d
chmod 1777 /run/lock
{binds}
{users}
cat > {units}/{BOOT_TARGET} <<'EOF'
[Unit]
Description=oj test sandbox
{wants}EOF
for u in {" ".join(MASKED_UNITS)}; do ln -sf /dev/null {units}/"$u"; done
# Never drop a chatty test unit's lines; nothing to forward, no kernel log to read.
cat > /run/systemd/journald.conf.d/oj-test.conf <<'EOF'
[Journal]
ReadKMsg=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
EOF
# journald's own messages go to the console log rather than to /dev/kmsg.
cat > {units}/systemd-journald.service.d/oj-test.conf <<'EOF'
[Service]
Environment=SYSTEMD_LOG_TARGET=console
StandardError=tty
EOF
echo "sandbox namespaces ready; starting systemd"
exec env -i container=oj-test PATH="$PATH" LANG=C.UTF-8 \\
    {SYSTEMD} --system --unit={BOOT_TARGET} --log-target=journal --show-status=no
"""

    @staticmethod
    def _make_state_dir(path: Path, like: Path) -> None:
        """Create a state directory with the owner and mode of the host directory it hides."""
        if path.exists():
            return
        path.mkdir()
        with contextlib.suppress(OSError):
            st = like.stat()
            os.chown(path, st.st_uid, st.st_gid)
            path.chmod(st.st_mode & 0o7777)

    def _find_init(self, deadline: float) -> int:
        """Host PID of the sandbox's systemd: unshare's only child, once it has exec'd."""
        assert self._unshare is not None
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        while time.monotonic() < deadline:
            if self._unshare.poll() is not None:
                raise SandboxError(f"boot script exited with {self._unshare.returncode}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(children.read_text().split()[0])
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
            time.sleep(0.02)
        raise SandboxError("systemd did not start")

    def _wait_running(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            if self._unshare is None or self._unshare.poll() is not None:
                raise SandboxError("systemd exited during boot")
            state = self.run(["systemctl", "is-system-running"], check=False, timeout=10).stdout
            state = state.strip()
            if state in ("running", "degraded"):
                return
            if state in ("maintenance", "stopping"):
                break
            time.sleep(0.05)
        failed = self.run(["systemctl", "--failed", "--no-legend", "--no-pager"], check=False)
        raise SandboxError(f"system state {state!r}; failed units:\n{failed.stdout}")

    def _bus_answers(self) -> bool:
        call = ["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "GetId"]
        return self.run(call, check=False, timeout=10).returncode == 0


def remove_root(root: Path) -> None:
    """Delete a sandbox root; only call once its sandbox is powered off."""
    shutil.rmtree(root, ignore_errors=True)
