#!/bin/bash
# setup.sh: make a Python venv holding Portage (PyPI `portage`, pinned) for fetch.py. Idempotent,
# silent when everything is already there. Needs root only when it must apt-get something.
#
#   bash integration/portage/setup.sh VENV_DIR        e.g. target/portage-venv
#   VENV_DIR/bin/python integration/portage/fetch.py ...
#
# Installs the wheel /tmp/portage-3.0.83-py3-none-any.whl if present, else from PyPI; either way
# pip checks it against PyPI's sha256. Installs python3-venv if `python3 -m venv` fails, and wget
# (Portage's default FETCHCOMMAND) if it is missing.
set -euo pipefail
venv=${1:?usage: setup.sh VENV_DIR}
version=3.0.83
sha256=25de95ad893cdf9abec2bf4d18217b3fc07756989c62d3e74bb1695cdf639402
wheel=/tmp/portage-$version-py3-none-any.whl

apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq >&2; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

installed() {
    command -v wget >/dev/null && "$venv/bin/python" -c \
        'import importlib.metadata as m, sys; sys.exit(m.version("portage") != sys.argv[1])' \
        "$version" 2>/dev/null
}
installed && exit 0
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"  # tests may call this concurrently: one installs, the others wait
flock 9
installed && exit 0

command -v wget >/dev/null || apt_install wget
if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"  # a failed `venv` (no ensurepip) leaves a venv without pip behind
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
fi

req=portage==$version
[ -f "$wheel" ] && req=$wheel
"$venv/bin/pip" install -q --disable-pip-version-check --no-input --only-binary=:all: \
    --require-hashes -r /dev/stdin <<<"$req --hash=sha256:$sha256"
