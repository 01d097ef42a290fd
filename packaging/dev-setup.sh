#!/usr/bin/env bash
# Everything oj needs on a fresh Debian/Ubuntu machine, as root: system packages (with
# PostgreSQL's server, which the tests start privately, libpq for the PostgreSQL store,
# faketime for a host whose clock is off and chromium for the dashboard's browser tests)
# and a virtualenv at $OJ_VENV (default /opt/oj-venv) with oj installed from this
# checkout, and `oj`/`ojd` linked into $OJ_BIN_DIR (default /usr/local/bin; see
# packaging/link-bin.sh).
# The venv is built from /usr/bin/python3 in a world-readable place so that non-root
# users (user-scope workers) can run it too. Safe to run again.
# With --no-tests (packaging/demo.sh), only what oj itself needs: no PostgreSQL server, no
# faketime, no pytest/ruff (tests/run.sh installs those).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OJ_VENV:-/opt/oj-venv}"
tests=1
[ "${1:-}" = "--no-tests" ] && tests=0

if [ "$(id -u)" -ne 0 ]; then
    echo "dev-setup: run as root (it installs packages with apt-get)" >&2
    exit 1
fi

packages=(python3 python3-venv python3-dev gcc pkg-config libsystemd-dev systemd dbus git
          util-linux procps tmux libpq5)
# chromium: the dashboard's tests drive Debian's build through Playwright; python3-dbus and
# python3-gi: the desktop-notification test's listener on a private session bus
[ "$tests" = 1 ] && packages+=(postgresql faketime chromium python3-dbus python3-gi)
need=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "dev-setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
fi
# A regular (not editable) install: the checkout may sit where the test sandbox cannot
# see it (/tmp is private there), and the tests then exercise the installed package.
if [ "$tests" = 1 ]; then
    "$venv/bin/pip" install -q "$here[test]"
else
    "$venv/bin/pip" install -q "$here"
fi
"$venv/bin/pip" install -q --no-deps --force-reinstall "$here"
chmod -R a+rX "$venv"
"$here/packaging/link-bin.sh" "$venv"
echo "dev-setup: oj $("$venv/bin/oj" --version | awk '{print $NF}') in $venv"
