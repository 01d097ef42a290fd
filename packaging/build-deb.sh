#!/usr/bin/env bash
# Build oj's Debian package from this checkout: packaging/build-deb.sh [OUTDIR]
#
# The tree (as it is, uncommitted changes included) is copied to a build directory under
# /var/tmp with packaging/debian as its debian/, then built with `dpkg-buildpackage -us -uc -b`.
# The .deb (and .buildinfo/.changes) land in OUTDIR, default packaging/dist. Missing build
# dependencies are installed with apt-get (needs root), once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/packaging/dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

build_deps=(debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
            pkg-config systemd dpkg-dev)
need=()
for pkg in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-deb: missing build dependencies ${need[*]}; install them as root" >&2
        exit 1
    fi
    echo "build-deb: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The version lives in pyproject.toml; debian/changelog must name the same one.
py_version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/pyproject.toml" | head -n 1)"
deb_version="$(dpkg-parsechangelog -l "$here/packaging/debian/changelog" -S Version)"
if [ "$py_version" != "$deb_version" ]; then
    echo "build-deb: pyproject.toml says $py_version, packaging/debian/changelog says" \
         "$deb_version; add a changelog entry" >&2
    exit 1
fi

work="$(mktemp -d /var/tmp/oj-deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT
src="$work/oj-$deb_version"
mkdir "$src"
# Build products and caches of the checkout stay out; ojd/units stays a symlink.
tar -C "$here" -cf - \
    --exclude=./.git --exclude=./packaging/dist --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.ruff_cache --exclude=.pybuild \
    . | tar -C "$src" -xf -
rm -rf "$src/debian"
cp -a "$here/packaging/debian" "$src/debian"

start=$SECONDS
# Debian's python3 builds it, whatever python (a virtualenv's, pyenv's) comes first on PATH.
(cd "$src" && env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
deb="oj_${deb_version}_all.deb"
for f in "$work"/oj_"$deb_version"_*; do
    cp "$f" "$out/"
done
echo "build-deb: $out/$deb built in $((SECONDS - start))s"
