#!/usr/bin/env bash
# Set up (packages, venv) and run every test: unit tests, WAL tests with real processes,
# CLI tests through the installed `oj`, and integration tests against a private systemd.
# With CI set, a skipped systemd test fails the run; so does a run in which no test ran.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/packaging/dev-setup.sh"
venv="${OJ_VENV:-/opt/oj-venv}"
cd "$here"
"$venv/bin/ruff" check .
"$venv/bin/python" -m pytest "$@"
