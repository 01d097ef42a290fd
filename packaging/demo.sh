#!/usr/bin/env bash
# The main job, end to end on a fresh machine (as root): set up, make a demo project with
# three feature branches, start the `merge` worker as the systemd unit
# oj-worker@project:merge.service (on the host's systemd, or on a private one booted for the demo
# when PID 1 is not systemd), push the branches to its queue and watch it merge them
# (worktree, merge, check, push). The demo lives in $OJ_DEMO_DIR (default
# /var/lib/oj-demo) with its own state directory; run it again to start over. The set-up
# (apt and pip) is quiet: its output goes to a log file, named if it fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OJ_VENV:-/opt/oj-venv}"
demo="${OJ_DEMO_DIR:-/var/lib/oj-demo}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "set up: system packages and oj in $venv (quiet)"
setup_log="$(mktemp /var/tmp/oj-demo-setup.XXXXXX)"
if ! "$here/packaging/dev-setup.sh" --no-tests >"$setup_log" 2>&1; then
    tail -n 20 "$setup_log" >&2
    echo "demo: the set-up failed (the end of its output is above; all of it: $setup_log)" >&2
    exit 1
fi
grep -E '^(link-bin|dev-setup): ' "$setup_log" || true
rm -f "$setup_log"
export PATH="$venv/bin:$PATH"
export OJ_STATE_DIR="$demo/state"

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

say "try next"
cat <<EOF
The demo's project is $demo/project and its state $OJ_STATE_DIR:

  cd $demo/project && export OJ_STATE_DIR=$OJ_STATE_DIR
  oj job list                     # the three merge jobs
  oj job logs JOB                 # one job's steps and their output (an id from oj job list)
  oj queue push merges --var branch=feature-1 --var title="Again"
  oj worker start merge           # without systemd as PID 1: ojd worker merge --foreground
  oj status                       # workers, jobs and queues at a glance

A runbook of your own, step by step: $here/docs/FIRST-RUNBOOK.md
EOF
