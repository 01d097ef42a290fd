"""The Debian package: built once from this checkout by packaging/build-deb.sh, then read with
dpkg-deb, its code run by Debian's python3 with Debian's libraries, and its maintainer scripts
run against a private systemd (tests/sandbox.py).

Nothing is installed on the host with dpkg: the package's files are extracted to throwaway
directories, and the sandbox's /etc/systemd/system and /var/lib/systemd are its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sandbox import Sandbox
from systemd_plugin import ci_enabled

# builds and unpacks the .deb: processes, and seconds of them
pytestmark = pytest.mark.end_to_end

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "packaging" / "build-deb.sh"
DEBIAN = REPO / "packaging" / "debian"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SYSTEM_UNITS = "/lib/systemd/system"
USER_UNITS = "/usr/lib/systemd/user"
DIST = "/usr/lib/python3/dist-packages"
RUNTIME_DEPENDS = ("python3-click", "python3-platformdirs", "python3-pystemd",
                   "python3-sdnotify", "systemd")
SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def debian_env(**extra: str) -> dict[str, str]:
    """No virtualenv, no pyenv: Debian's /usr/bin/python3 and what apt installed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=SYS_PATH, LC_ALL="C.UTF-8", **extra)
    return env


def run(*args: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=kw.pop("timeout", 600), **kw)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


def installed(pkg: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                          capture_output=True, text=True)
    return "install ok installed" in proc.stdout


def depends(deb: Path) -> dict[str, str]:
    """Depends of the package: name -> version constraint ("" when there is none)."""
    line = run("dpkg-deb", "-f", deb, "Depends").stdout
    out = {}
    for dep in line.split(","):
        m = re.fullmatch(r"\s*([a-z0-9.+:-]+)\s*(?:\(([^)]*)\))?\s*", dep)
        assert m, f"unexpected dependency {dep!r} in {line!r}"
        out[m.group(1)] = m.group(2) or ""
    return out


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built once for this module (about 10 s, plus build dependencies once)."""
    if os.geteuid() != 0:
        reason = "building the package installs its build dependencies with apt-get: needs root"
        if ci_enabled():
            pytest.fail(f"packaging tests cannot be skipped in CI: {reason}")
        pytest.skip(reason)  # justified: outside CI, a non-root run cannot apt-get
    out = tmp_path_factory.mktemp("deb")
    run(BUILD, out, env=debian_env(), timeout=900)
    (package,) = out.glob("oj_*_all.deb")
    return package


@pytest.fixture(scope="module")
def contents(deb: Path) -> dict[str, str]:
    """Path (without the leading '.') -> `dpkg-deb -c` line."""
    lines = run("dpkg-deb", "-c", deb).stdout.splitlines()
    return {line.split(None, 5)[5].split(" -> ")[0].lstrip("."): line for line in lines}


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files (dpkg-deb -x) and its control files in DEBIAN/ (dpkg-deb -e)."""
    path = tmp_path_factory.mktemp("root")
    run("dpkg-deb", "-x", deb, path)
    run("dpkg-deb", "-e", deb, path / "DEBIAN")
    return path


@pytest.fixture(scope="module")
def runtime(deb: Path) -> None:
    """The package's dependencies, from apt, as installing the .deb would bring them."""
    missing = [p for p in depends(deb) if ":" not in p and not installed(p)]
    if missing:
        env = debian_env(DEBIAN_FRONTEND="noninteractive")
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


# -- the control file ----------------------------------------------------------------------


def test_changelog_names_the_pyproject_version():
    head = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert head.startswith(f"oj ({VERSION}) "), head


def test_control_fields(deb: Path):
    fields = run("dpkg-deb", "-f", deb, "Package", "Version", "Architecture").stdout
    assert fields.split("\n")[:3] == ["Package: oj", f"Version: {VERSION}", "Architecture: all"]


def test_depends_names_the_runtime_packages_without_unsatisfiable_versions(deb: Path):
    deps = depends(deb)
    for pkg in RUNTIME_DEPENDS:
        assert pkg in deps, deps
    # pyproject's minimum versions are for pip; Debian 12 has pystemd 0.11 and platformdirs
    # 2.6, with which the code runs (see the tests below). A translated ">= 0.13" would make
    # the package uninstallable there.
    for pkg in RUNTIME_DEPENDS:
        assert deps[pkg] == "", f"{pkg} ({deps[pkg]})"
    assert deps["python3:any"].startswith(">= 3.11"), deps


def test_dependencies_resolve_on_this_release(deb: Path):
    """apt can satisfy every Depends from this release (a simulation: nothing installed)."""
    def simulate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["apt-get", "-s", "-q", "install", str(deb)], capture_output=True,
                              text=True, env=debian_env(), timeout=300)

    proc = simulate()
    if proc.returncode != 0:  # package lists missing or stale: fetch them once
        run("apt-get", "update", "-qq", env=debian_env())
        proc = simulate()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^Inst oj ", proc.stdout, re.M), proc.stdout


# -- files ---------------------------------------------------------------------------------


UNIT_FILES = ("oj-worker@.service", "oj-workers.target", "oj-cron@.service", "oj-cron@.timer",
              "oj-metrics.socket", "oj-metrics.service", "oj-web.socket",
              "oj-web.service")


def test_programs_in_usr_bin_run_on_debian_python(contents: dict[str, str], root: Path):
    for name in ("oj", "ojd"):
        assert contents[f"/usr/bin/{name}"].startswith("-rwxr-xr-x root/root"), contents
        assert (root / "usr/bin" / name).read_text().startswith("#!/usr/bin/python3\n")
    assert f"{DIST}/oj/cli.py" in contents
    assert f"{DIST}/ojd/main.py" in contents
    # `oj systemd install` reads the shipped units from the package
    for unit in UNIT_FILES:
        assert contents[f"{DIST}/ojd/units/{unit}"].startswith("-rw-r--r--")


def test_packaged_modules_are_this_checkout(root: Path):
    """Every module of the tree, byte for byte (no stale build/ or egg-info copy)."""
    dist = root / DIST.lstrip("/")
    for package in ("oj", "ojd"):
        sources = sorted(p.relative_to(REPO) for p in (REPO / package).rglob("*.py")
                         if "__pycache__" not in p.parts)
        packaged = sorted(p.relative_to(dist) for p in (dist / package).rglob("*.py"))
        assert packaged == sources
        for rel in sources:
            assert (dist / rel).read_bytes() == (REPO / rel).read_bytes(), rel


def test_system_and_user_units(contents: dict[str, str], root: Path):
    source = REPO / "systemd"
    for directory in (SYSTEM_UNITS, USER_UNITS):
        for unit in UNIT_FILES:
            assert contents[f"{directory}/{unit}"].startswith("-rw-r--r-- root/root"), unit
    system_dir, user_dir = root / SYSTEM_UNITS.lstrip("/"), root / USER_UNITS.lstrip("/")
    # the system manager's units go in as they are in systemd/
    for unit in UNIT_FILES:
        assert (system_dir / unit).read_text() == (source / unit).read_text(), unit
    system = (system_dir / "oj-workers.target").read_text()
    user = (user_dir / "oj-workers.target").read_text()
    assert re.findall(r"^WantedBy=.*$", system, re.M) == ["WantedBy=multi-user.target"]
    assert re.findall(r"^WantedBy=.*$", user, re.M) == ["WantedBy=default.target"]
    template = (user_dir / "oj-worker@.service").read_text()
    assert "ExecStart=/usr/bin/ojd worker %i" in template.splitlines()
    assert "WantedBy=oj-workers.target" in template.splitlines()


def test_user_units_are_what_oj_systemd_install_writes(root: Path, runtime: None):
    """The packaged ojd renders its shipped units for a user manager exactly as packaged."""
    code = ("import sys\n"
            "from ojd.unitfiles import SHIPPED_DIR, SHIPPED_OJD, render\n"
            "name = sys.argv[1]\n"
            "text = open(f'{SHIPPED_DIR}/{name}').read()\n"
            "sys.stdout.write(render(name, text, SHIPPED_OJD, user=True))\n")
    env = debian_env(PYTHONPATH=str(root / DIST.lstrip("/")))
    for unit in UNIT_FILES:
        rendered = run("/usr/bin/python3", "-c", code, unit, env=env, cwd="/").stdout
        assert rendered == (root / USER_UNITS.lstrip("/") / unit).read_text(), unit


def test_system_unit_dir_is_the_one_systemd_names(contents: dict[str, str]):
    proc = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        assert proc.stdout.strip() == SYSTEM_UNITS
    # dh_installsystemd only sees units there, and the target's enablement depends on it
    assert f"{SYSTEM_UNITS}/oj-workers.target" in contents


def test_sysusers_and_tmpfiles_entries(root: Path):
    sysusers = (root / "usr/lib/sysusers.d/oj.conf").read_text()
    assert 'u oj - "oj job runner" /var/lib/oj' in sysusers.splitlines()
    tmpfiles = (root / "usr/lib/tmpfiles.d/oj.conf").read_text()
    entries = [line.split() for line in tmpfiles.splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries == [["d", "/var/lib/oj", "0750", "root", "oj", "-"]]


def test_sysusers_and_tmpfiles_create_the_user_and_state_dir(root: Path, tmp_path: Path):
    """The real systemd-sysusers and systemd-tmpfiles, on a throwaway root."""
    target = tmp_path / "target"
    shutil.copytree(root / "usr/lib/sysusers.d", target / "usr/lib/sysusers.d")
    shutil.copytree(root / "usr/lib/tmpfiles.d", target / "usr/lib/tmpfiles.d")
    (target / "etc").mkdir()
    run("systemd-sysusers", f"--root={target}", "oj.conf")
    users = {line.split(":")[0]: line.split(":") for line in
             (target / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in
              (target / "etc/group").read_text().splitlines()}
    assert users["oj"][4:] == ["oj job runner", "/var/lib/oj", "/usr/sbin/nologin"]
    assert int(users["oj"][2]) < 1000, users["oj"]  # a system user
    run("systemd-tmpfiles", f"--root={target}", "--create", "oj.conf")
    st = (target / "var/lib/oj").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 0, int(groups["oj"][2]))


def test_docs_and_examples(contents: dict[str, str]):
    doc = "/usr/share/doc/oj"
    assert f"{doc}/README.md" in contents
    for path in sorted((REPO / "docs").glob("*.md")):
        # uncompressed: the units' Documentation= names file:/usr/share/doc/oj/*.md
        assert f"{doc}/{path.name}" in contents, path.name
    for path in sorted((REPO / "runbooks").glob("*.hcl")):
        assert f"{doc}/examples/{path.name}" in contents, path.name


def test_package_ships_no_build_leftovers(contents: dict[str, str]):
    for path in contents:
        assert "__pycache__" not in path and ".egg-info" not in path, path
        assert "/tests/" not in path and "/.pybuild" not in path, path


# -- maintainer scripts, read --------------------------------------------------------------


def script(root: Path, name: str) -> str:
    return (root / "DEBIAN" / name).read_text()


def commands(text: str) -> list[str]:
    """Lines that run systemctl or deb-systemd-invoke (comments dropped)."""
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return [line for line in lines if re.search(r"\b(systemctl|deb-systemd-invoke)\b", line)]


def test_postinst_enables_the_target_and_try_restarts_running_workers(root: Path):
    postinst = script(root, "postinst")
    assert "deb-systemd-helper enable 'oj-workers.target'" in postinst
    assert "systemctl --system --no-block try-restart 'oj-worker@*.service'" in postinst
    guard = postinst.index('[ -d /run/systemd/system ]; then\n    systemctl --system daemon')
    assert guard < postinst.index("try-restart 'oj-worker@*.service'")
    # the user managers' oj-workers.target is not enabled globally
    assert "--user enable" not in postinst


def test_no_script_starts_or_restarts_outright(root: Path):
    """Only try-restart (which leaves stopped units stopped) and stop: nothing starts."""
    for name in ("preinst", "postinst", "prerm", "postrm"):
        if not (root / "DEBIAN" / name).exists():
            continue
        for line in commands(script(root, name)):
            words = line.replace("'", " ").split()
            for action in ("start", "restart", "reload-or-restart", "enable --now"):
                assert action not in words, f"{name}: {line}"


def test_prerm_stops_workers_only_on_remove(root: Path):
    prerm = script(root, "prerm")
    assert 'if [ "$1" = "remove" ]' in prerm
    assert "systemctl --system stop 'oj-worker@*.service'" in prerm


def test_postrm_keeps_a_non_empty_state_dir(root: Path):
    postrm = script(root, "postrm")
    assert "rmdir /var/lib/oj" in postrm
    assert not re.search(r"rm -[a-z]*r[a-z]* .*?/var/lib/oj", postrm), postrm
    assert "deb-systemd-helper purge 'oj-workers.target'" in postrm


# -- the packaged code, on Debian's python3 ------------------------------------------------


def packaged(root: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = debian_env(PYTHONPATH=str(root / DIST.lstrip("/")))
    return run("/usr/bin/python3", root / "usr/bin" / program, *args, env=env, cwd="/",
               timeout=60)


def test_packaged_programs_report_their_version(root: Path, runtime: None):
    assert packaged(root, "ojd", "--version").stdout.strip() == f"ojd {VERSION}"
    assert packaged(root, "oj", "--version").stdout.strip() == f"oj, version {VERSION}"


def test_packaged_code_imports_debian_libraries(root: Path, runtime: None):
    code = ("import click, pystemd, sdnotify, ojd, ojd.systemd, oj.cli\n"
            "from pystemd.dbuslib import DBus, DBusAddress, apply_signature, path_encode\n"
            "print(ojd.__file__)\n"
            "print(pystemd.__file__)\n")
    env = debian_env(PYTHONPATH=str(root / DIST.lstrip("/")))
    lines = run("/usr/bin/python3", "-c", code, env=env, cwd="/").stdout.split()
    assert lines[0].startswith(str(root)), lines
    assert lines[1].startswith(f"{DIST}/pystemd/"), lines


# -- maintainer scripts, run against a private systemd -------------------------------------

RUNBOOK = """\
    queue "jobs" {
      type = "persisted"
      vars = ["n"]
    }

    worker "WORKER" {
      source      = { queue = "jobs" }
      handler     = { pipeline = "work" }
      concurrency = 1
      poll        = "60s"
    }

    pipeline "work" {
      vars = ["item"]
      step "work" {
        run = "echo ran ${var.item.n} >> '${invoke.dir}/ran.txt'"
      }
    }
    """

# Commands the scripts run that would act on the host's /etc, /usr or /var/lib (the sandbox
# shares them): recorded instead. deb-systemd-helper and systemctl run for real.
STUBBED = ("systemd-sysusers", "systemd-tmpfiles", "py3compile", "py3clean")


class Installed:
    """The package's files as dpkg would place them, for a sandbox's system manager.

    The units go to the sandbox's private /etc/systemd/system (the host's /lib is shared);
    a drop-in points ExecStart at the extracted ojd, run by /usr/bin/python3.
    """

    def __init__(self, sb: Sandbox, deb: Path, base: Path) -> None:
        self.sb = sb
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.project = base / "project"
        self.stubs = base / "stubs"
        self.calls = base / "calls.log"
        run("dpkg-deb", "-x", deb, self.root)
        run("dpkg-deb", "-e", deb, self.root / "DEBIAN")
        self.pythonpath = str(self.root / DIST.lstrip("/"))
        self.stubs.mkdir()
        for name in STUBBED:
            stub = self.stubs / name
            stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.calls}\n')
            stub.chmod(0o755)
        self.calls.write_text("")
        units = self.root / SYSTEM_UNITS.lstrip("/")
        sb.run(["cp", str(units / "oj-worker@.service"), str(units / "oj-workers.target"),
                "/etc/systemd/system/"])
        dropin = textwrap.dedent(f"""\
            [Service]
            ExecStart=
            ExecStart=/usr/bin/python3 {self.root}/usr/bin/ojd worker %i
            Environment=PYTHONPATH={self.pythonpath}
            """)
        sb.run(["mkdir", "-p", "/etc/systemd/system/oj-worker@.service.d"])
        sb.run(["sh", "-c", "cat > /etc/systemd/system/oj-worker@.service.d/10-extracted.conf"],
               input=dropin)
        sb.systemctl("daemon-reload")

    def maintscript(self, name: str, *args: str) -> None:
        # what dpkg sets (deb-systemd-helper does nothing without it)
        env = {"PATH": f"{self.stubs}:{SYS_PATH}", "DPKG_MAINTSCRIPT_PACKAGE": "oj",
               "DPKG_MAINTSCRIPT_NAME": name, "DPKG_MAINTSCRIPT_ARCH": "all"}
        self.sb.run(["sh", "-e", str(self.root / "DEBIAN" / name), *args], timeout=120,
                    env=env)

    def oj(self, *args: str) -> str:
        proc = self.sb.run(["/usr/bin/python3", str(self.root / "usr/bin/oj"), *args],
                           cwd=str(self.project), check=False, timeout=120,
                           env={"PYTHONPATH": self.pythonpath, "OJ_STATE_DIR": str(self.state),
                                "PATH": SYS_PATH})
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        return proc.stdout

    def worker(self, name: str) -> str:
        (self.project / ".oj" / "runbooks").mkdir(parents=True, exist_ok=True)
        runbook = textwrap.dedent(RUNBOOK).replace("WORKER", name)
        (self.project / ".oj" / "runbooks" / f"{name}.hcl").write_text(runbook)
        return f"oj-worker@{self.project.name}:{name}.service"  # named after its directory

    def prop(self, unit: str, prop: str) -> str:
        return self.sb.unit_property(unit, prop)


@pytest.fixture
def sandboxed(deb: Path, make_sandbox: Callable[..., Sandbox], runtime: None) -> Installed:
    sb = make_sandbox(wants=())
    base = sb.root / "shared" / f"pkg-{uuid.uuid4().hex[:8]}"
    base.mkdir(parents=True)
    sb.boot()
    return Installed(sb, deb, base)


def test_maintainer_scripts_against_systemd(sandboxed: Installed):
    """Install enables the target and starts nothing; upgrade restarts running workers only;
    remove stops them. The worker is the packaged ojd on Debian's python3 and pystemd."""
    pkg, sb = sandboxed, sandboxed.sb
    # a worker enabled before (an earlier install, removed but not purged): must stay down
    idle = "oj-worker@project:idle.service"
    sb.systemctl("enable", idle)

    pkg.maintscript("postinst", "configure")
    calls = pkg.calls.read_text()
    assert "systemd-sysusers oj.conf" in calls
    assert "systemd-tmpfiles --create oj.conf" in calls
    assert "py3compile -p oj" in calls
    assert sb.systemctl("is-enabled", "oj-workers.target") == "enabled"
    assert pkg.prop("oj-workers.target", "ActiveState") == "inactive"
    assert pkg.prop(idle, "ActiveState") == "inactive"

    busy = pkg.worker("busy")
    assert "started" in pkg.oj("worker", "start", "busy")
    assert pkg.prop(busy, "SubState") == "running"
    assert f"{pkg.root}/usr/bin/ojd worker project:busy" in pkg.prop(busy, "ExecStart")
    pid = pkg.prop(busy, "MainPID")
    ran = pkg.project / "ran.txt"
    pkg.oj("queue", "push", "jobs", '{"n": "1"}')
    sb.wait_for(lambda: ran.exists() and "ran 1" in ran.read_text(), 30, "the first item")

    pkg.maintscript("postinst", "configure", "0.0.1")
    sb.wait_for(lambda: pkg.prop(busy, "MainPID") not in ("0", pid)
                and pkg.prop(busy, "SubState") == "running", 60, "the restarted worker")
    assert pkg.prop(idle, "ActiveState") == "inactive"
    pkg.oj("queue", "push", "jobs", '{"n": "2"}')
    sb.wait_for(lambda: "ran 2" in ran.read_text(), 30, "an item after the restart")

    pkg.maintscript("prerm", "upgrade", "0.1.1")
    assert pkg.prop(busy, "SubState") == "running"
    pkg.maintscript("prerm", "remove")
    assert pkg.prop(busy, "ActiveState") == "inactive"
    assert pkg.prop(idle, "ActiveState") == "inactive"
