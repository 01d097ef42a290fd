#!/usr/bin/env bash
# The main job, end to end on a fresh machine (as root): set up, make a demo project with
# three feature branches, start the `merge` worker as the systemd unit
# oj-worker@project:merge.service (on the host's systemd, or on a private one booted for the demo
# when PID 1 is not systemd), push the branches to its queue and watch it merge them
# (worktree, merge, check, push). The demo lives in $OJ_DEMO_DIR (default
# /var/lib/oj-demo) with its own state directory; run it again to start over.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/packaging/dev-setup.sh"
venv="${OJ_VENV:-/opt/oj-venv}"
export PATH="$venv/bin:$PATH"
demo="${OJ_DEMO_DIR:-/var/lib/oj-demo}"
export OJ_STATE_DIR="$demo/state"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$demo"
mkdir -p "$demo"
git init --quiet --bare --initial-branch=main "$demo/origin.git"
git clone --quiet "$demo/origin.git" "$demo/project" 2>/dev/null
cd "$demo/project"
git config user.email demo@oj.invalid
git config user.name "oj demo"
echo "# demo project" > README.md
printf '#!/bin/sh\n# the project checks: every feature file is non-empty\nfor f in feature-*.txt; do [ -s "$f" ] || exit 1; done\n' > check
chmod +x check
git add -A && git commit --quiet -m "initial commit" && git push --quiet origin main
for n in 1 2 3; do
    git checkout --quiet -b "feature-$n" main
    echo "feature $n" > "feature-$n.txt"
    git add -A && git commit --quiet -m "add feature $n"
    git push --quiet origin "feature-$n"
done
git checkout --quiet main
mkdir -p .oj/runbooks
cp "$here/runbooks/merge.hcl" .oj/runbooks/
echo ".oj/" >> .git/info/exclude

say "oj runbook check"
oj runbook check
"$venv/bin/python" "$here/packaging/demo_worker.py" "$demo/project" "$OJ_STATE_DIR"
say "origin/main now has the three merges"
git -C "$demo/origin.git" log --oneline main
