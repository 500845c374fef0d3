#!/bin/bash
# setup.sh: install the Debian packages the NFS tests need (idempotent; run as root by
# .ci/run). The tests build the client (nfs-put.c) themselves.
#   server: nfs-ganesha 4.3 with its VFS backend; rpcbind for NFSv3
#   client: libnfs (library, headers, utilities), gcc and pkg-config to build nfs-put
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "setup.sh: must run as root" >&2; exit 1; }

pkgs=(nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils libnfs-dev gcc libc6-dev pkg-config util-linux iproute2)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
# Keep the packages' init scripts (rpcbind, rpc.statd, ganesha) from starting daemons
# that listen on every address: refuse service starts during the install, unless a
# policy is already in place.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; own_policy=1
    trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$own_policy" = 0 ] || { rm -f "$policy"; trap - EXIT; }
