#!/usr/bin/env bash
# The main job, end to end on a fresh machine (as root): set up, make a demo project whose
# merge queue holds three feature branches, and let the `merge` worker drain it into the
# merge pipeline (worktree, merge, check, push). The demo lives in $OJ_DEMO_DIR
# (default /var/tmp/oj-demo) with its own state directory; run it again to start over.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/packaging/dev-setup.sh"
venv="${OJ_VENV:-/opt/oj-venv}"
export PATH="$venv/bin:$PATH"
demo="${OJ_DEMO_DIR:-/var/tmp/oj-demo}"
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
say "push three branches to the merge queue"
for n in 1 2 3; do
    oj queue push merges --var "branch=feature-$n" --var "title=Merge feature $n"
done
oj queue list
say "the merge worker drains the queue"
ojd worker merge --foreground --until-idle
say "oj queue list / oj job list"
oj queue list
oj job list
say "origin/main now has the three merges"
git -C "$demo/origin.git" log --oneline main
