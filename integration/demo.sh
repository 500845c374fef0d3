#!/bin/bash
# demo.sh: build distlink and show it working on a throw-away tmpfs with three host
# directories (server, host1, host2). Needs root (a mount and a fanotify filesystem
# mark). Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (sudo bash integration/demo.sh)" >&2; exit 1; }

cargo build --release --quiet
bin=$PWD/target/release/distlink
work=$(mktemp -d /tmp/distlink-demo.XXXXXX)
pid=
cleanup() {
    [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    umount "$work/fs" 2>/dev/null || umount -l "$work/fs" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/fs"
mount -t tmpfs -o size=64m distlink-demo "$work/fs"
d=$work/fs/distfiles
mkdir -p "$d/server" "$d/host1" "$d/host2"
cat >"$work/distlink.yaml" <<YAML
hosts:
  server: $d/server
  host1: $d/host1
  host2: $d/host2
settle: 2s
state_file: $work/run/status
YAML

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# wait_for FILE: up to 10 s for FILE to exist.
wait_for() { for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "timed out waiting for $1" >&2; return 1; }

say "distlink check"
"$bin" check --config "$work/distlink.yaml"

say "distlink run (log below)"
"$bin" run --config "$work/distlink.yaml" 2>"$work/log" &
pid=$!
for _ in $(seq 200); do grep -q watching "$work/log" && break; sleep 0.05; done

say "host1 downloads like Portage: foo-1.0.tar.gz.__download__, then rename"
head -c 1M /dev/urandom >"$d/host1/foo-1.0.tar.gz.__download__"
mv "$d/host1/foo-1.0.tar.gz.__download__" "$d/host1/foo-1.0.tar.gz"
wait_for "$d/server/foo-1.0.tar.gz"; wait_for "$d/host2/foo-1.0.tar.gz"
ls -li "$d"/*/foo-1.0.tar.gz

say "server writes bar-2.0.tar.xz under its final name: linked once quiet for 2 s"
echo "direct write" >"$d/server/bar-2.0.tar.xz"
wait_for "$d/host1/bar-2.0.tar.xz"; wait_for "$d/host2/bar-2.0.tar.xz"
ls -li "$d"/*/bar-2.0.tar.xz

say "host2 runs eclean-dist (removes its name): the others keep the file"
rm "$d/host2/foo-1.0.tar.gz"
ls -li "$d"/*/foo-1.0.tar.gz 2>/dev/null || true

say "distlink status"
sleep 5.5   # the status file is rewritten every 5 s
"$bin" status --config "$work/distlink.yaml" || true

say "SIGTERM"
kill -TERM "$pid"; wait "$pid"; pid=
cat "$work/log"
