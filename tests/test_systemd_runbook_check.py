"""`oj runbook check` under a real systemd looks a runbook's programs up on the PATH the
service manager gives its units, which is the PATH a worker's jobs run with."""

from __future__ import annotations

import os

import pytest
from sandbox import Sandbox
from systemd_plugin import OJ, sandbox_oj

pytestmark = pytest.mark.systemd


def test_runbook_check_looks_programs_up_on_the_system_managers_path(sandbox: Sandbox,
                                                                     sandbox_dir):
    root = sandbox_dir / "project"
    (root / ".oj" / "runbooks").mkdir(parents=True)
    (root / ".oj" / "runbooks" / "p.hcl").write_text(
        'pipeline "p" {\n  step "s" { run = "systemctl --version; no-such-tool-3f9c" }\n}\n')
    proc = sandbox_oj(sandbox, sandbox_dir / "state", "runbook", "check", cwd=root)
    [manager_path] = [line.split("=", 1)[1] for line in
                      sandbox.systemctl("show-environment").splitlines()
                      if line.startswith("PATH=")]
    assert proc.stderr.splitlines() == [
        ".oj/runbooks/p.hcl:2: warning: step 's' of pipeline 'p' runs 'no-such-tool-3f9c', "
        "which is not on the system manager's PATH; install it or give its full path",
        "note: programs were looked up on the system manager's PATH: "
        f"{os.path.dirname(OJ)}:{manager_path}",
    ]
