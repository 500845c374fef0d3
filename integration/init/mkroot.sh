#!/bin/bash
# Builds (once) the Debian 12 root the init-system tests boot, cached between runs.
# Usage: mkroot.sh DIR. Prints DIR when the root is ready. Idempotent: a finished root
# carries DIR/.distlink-root-ready; an unfinished one is removed and built again.
# One root serves both suites: systemd boots it with `systemd-nspawn --boot`, OpenRC
# with `/sbin/openrc-init` as PID 1; each test runs on its own overlay of it.
set -euo pipefail
dir=${1:?usage: mkroot.sh DIR}
stamp="$dir/.distlink-root-ready"
# Bump when the package list changes, so cached roots are rebuilt.
version=1
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
    echo "$dir"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
for tool in debootstrap systemd-nspawn; do
    command -v "$tool" >/dev/null || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap systemd-container >&2
        break
    }
done
rm -rf "$dir.tmp"
mkdir -p "$(dirname "$dir")"
# systemd + dbus: the systemd suite; openrc + busybox-syslogd: the OpenRC suite
# (busybox's syslogd provides /dev/log and `logger`). procps: pgrep/kill inside.
debootstrap --variant=minbase \
    --include=systemd,dbus,openrc,busybox-syslogd,procps,python3 \
    bookworm "$dir.tmp" http://deb.debian.org/debian >&2
echo "$version" > "$dir.tmp/.distlink-root-ready"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
