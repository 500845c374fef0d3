#!/bin/bash
# guard.sh PID ROOT: started detached (setsid) for each test's scratch directory ROOT.
# When process PID (the test binary) is gone without having cleaned up — killed or
# interrupted — stop what the test left behind: an NFS server, daemons started with a
# configuration under ROOT, the filesystems mounted under ROOT; then remove ROOT.
# A test that ends normally kills its guard first and cleans up itself.
here=$(cd "$(dirname "$0")" && pwd)
pid=$1 root=$2
case "$root" in /*/distlink-it-*) ;; *) echo "guard.sh: refusing root $root" >&2; exit 2 ;; esac
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
[ -d "$root/nfs-state" ] && "$here/nfs/stop.sh" "$root/nfs-state" >/dev/null 2>&1
for p in $(pgrep -f -- "$root/"); do
    [ "$p" = "$$" ] || kill -KILL "$p" 2>/dev/null
done
findmnt -rn -o TARGET | grep -F -- "$root/" | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
done
rm -rf -- "$root"
