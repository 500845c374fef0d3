#!/bin/bash
# guard.sh PID STATE_DIR [MOUNTPOINT]: started detached by the NFS tests. When process
# PID (the test binary) is gone — finished, failed or interrupted — stop the NFS server
# of STATE_DIR and lazily unmount MOUNTPOINT. The tests stop both themselves when they
# end normally; this is for when they cannot.
here=$(cd "$(dirname "$0")" && pwd)
pid=$1 state=$2 mnt=${3:-}
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
"$here/stop.sh" "$state" >/dev/null 2>&1 || true
[ -z "$mnt" ] || umount -l "$mnt" 2>/dev/null || true
