#!/usr/bin/env bash
# Put a venv's `oj` and `ojd` on PATH: symlinks in $OJ_BIN_DIR (default /usr/local/bin).
# packaging/link-bin.sh VENV. A file there that is not already this venv's program stays
# as it is (another installation's oj, say): then it prints how to run this one instead.
set -euo pipefail
venv="$1"
bindir="${OJ_BIN_DIR:-/usr/local/bin}"
mkdir -p "$bindir"
for prog in oj ojd; do
    target="$venv/bin/$prog"
    link="$bindir/$prog"
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
        continue
    fi
    if [ -e "$link" ]; then
        echo "link-bin: $link is not $target; left as it is (run $target, or put" \
             "$venv/bin first on PATH)" >&2
        continue
    fi
    ln -sfn "$target" "$link"  # -f: a dangling link (its venv was removed) is replaced
    echo "link-bin: $link -> $target"
done
