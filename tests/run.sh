#!/usr/bin/env bash
# The tests, in two tiers.
#
#   tests/run.sh --quick [pytest args]   the pure core and the in-process CLI tests: no set-up,
#                                        under a minute; for between edits
#   tests/run.sh [pytest args]           everything, after packaging/dev-setup.sh: also WAL
#                                        tests with real processes, CLI tests through the
#                                        installed `oj`, PostgreSQL, and integration tests
#                                        against a private systemd
#
# The full run with no arguments goes on two pytest-xdist workers: one of them runs the
# systemd sandbox tests, one at a time (they wait on boots and timers more than they
# compute), while both take the rest; then the tests marked `alone` (they rebuild the venv
# everything else runs from). With arguments it is one pytest run of what they name.
# With CI set, a skipped systemd test fails the run; so does a run in which no test ran.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OJ_VENV:-/opt/oj-venv}"
cd "$here"

if [ "${1:-}" = "--quick" ]; then
    shift
    python="$venv/bin/python"
    [ -x "$python" ] || python=python3
    parallel=()
    "$python" -c "import xdist" 2>/dev/null && parallel=(-n 2)
    exec "$python" -m pytest -m quick "${parallel[@]}" -p no:cacheprovider "$@"
fi

"$here/packaging/dev-setup.sh"
"$venv/bin/ruff" check .
if [ $# -gt 0 ]; then
    exec "$venv/bin/python" -m pytest "$@"
fi
"$venv/bin/python" -m pytest -n 2 --dist loadgroup -m "not alone"
"$venv/bin/python" -m pytest -m alone
