"""Installing as a newcomer meets it: the README's set-up leaves `oj` on PATH, builds without
setuptools warnings, and the README names what `pipx install .` needs to build pystemd."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from ojd.unitfiles import UNIT_NAMES

# dev-setup.sh and the installed console scripts: processes, and a venv rebuilt
pytestmark = pytest.mark.end_to_end

REPO = Path(__file__).resolve().parent.parent
LINK_BIN = REPO / "packaging" / "link-bin.sh"


@pytest.mark.alone  # reinstalls the venv every other test runs `oj` from
def test_dev_setup_puts_oj_on_path_and_builds_without_warnings(tmp_path: Path):
    # justified: a non-root developer run skips; CI runs as root (require fails there)
    require(os.geteuid() == 0, "dev-setup runs as root (it uses apt-get)")
    bindir = tmp_path / "bin"
    # the venv these tests run from: dev-setup reinstalls this checkout into it
    env = dict(os.environ, OJ_VENV=sys.prefix, OJ_BIN_DIR=str(bindir))
    proc = subprocess.run([REPO / "packaging" / "dev-setup.sh"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    for warning in ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "deprecated",
                    "absent from the `packages` configuration"):
        assert warning not in output, output
    for prog in ("oj", "ojd"):
        assert os.readlink(bindir / prog) == os.path.join(sys.prefix, "bin", prog)
    on_path = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    version = subprocess.run(["oj", "--version"], env=on_path, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip().endswith("0.1.0")


def link_bin(venv: Path, bindir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINK_BIN, str(venv)], env=dict(os.environ, OJ_BIN_DIR=str(bindir)),
                          capture_output=True, text=True, timeout=60)


def test_link_bin_leaves_another_installations_oj_alone(tmp_path: Path):
    venv, bindir = tmp_path / "venv", tmp_path / "bin"
    bindir.mkdir()
    theirs = bindir / "oj"
    theirs.write_text("#!/bin/sh\necho another oj\n")
    (bindir / "ojd").symlink_to(tmp_path / "removed-venv" / "bin" / "ojd")  # dangling
    proc = link_bin(venv, bindir)
    assert proc.returncode == 0, proc.stderr
    assert theirs.read_text() == "#!/bin/sh\necho another oj\n"
    assert proc.stderr == (f"link-bin: {theirs} is not {venv}/bin/oj; left as it is (run "
                           f"{venv}/bin/oj, or put {venv}/bin first on PATH)\n")
    assert os.readlink(bindir / "ojd") == f"{venv}/bin/ojd"
    assert proc.stdout == f"link-bin: {bindir}/ojd -> {venv}/bin/ojd\n"
    again = link_bin(venv, bindir)
    assert (again.returncode, again.stdout) == (0, "")


def test_readme_names_what_pipx_install_needs_to_build_pystemd():
    readme = (REPO / "README.md").read_text()
    pipx = next(p for p in readme.split("\n- ") if "pipx install ." in p)
    for package in ("gcc", "python3-dev", "libsystemd-dev", "pkg-config"):
        assert re.search(rf"\b{re.escape(package)}\b", pipx), package
    # and they are what dev-setup installs for it
    setup = (REPO / "packaging" / "dev-setup.sh").read_text()
    for package in ("gcc", "python3-dev", "libsystemd-dev", "pkg-config"):
        assert f" {package} " in setup



def test_units_written_by_a_pip_install_name_docs_it_has(tmp_path: Path):
    """`oj systemd install` from a pip install (into a directory of its own, as into a fresh
    venv) writes units whose Documentation= files exist: the docs ship as package data."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--target",
                    str(target), str(REPO)], check=True, capture_output=True, timeout=300)
    script = ("import sys\n"
              "from ojd.unitfiles import SHIPPED_DIR, UNIT_NAMES, render\n"
              "for name in UNIT_NAMES:\n"
              "    for user in (False, True):\n"
              "        shipped = open(f'{SHIPPED_DIR}/{name}').read()\n"
              "        text = render(name, shipped, sys.argv[1], user)\n"
              "        print(*(l for l in text.splitlines() if l.startswith('Documentation=')))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(target / "bin" / "ojd")],
                          env=dict(os.environ, PYTHONPATH=str(target)), cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    urls = [url for line in proc.stdout.split() for url in line.split("=", 1)[1:]]
    assert len(urls) == 2 * len(UNIT_NAMES), proc.stdout
    for url in urls:
        assert url.startswith(f"file:{target}/ojd/docs/"), url
        assert Path(url.removeprefix("file:")).is_file(), url
