# Sourced by systemd.sh and openrc.sh: boots the cached Debian 12 root (mkroot.sh) on an
# overlay in a scratch directory, with a tmpfs bind-mounted at /var/cache/distfiles, and
# runs commands inside it with nsenter (no machined needed). Everything it sets up is
# torn down by `cleanup`, which the EXIT trap runs whatever happened.
#
# Needs: DISTLINK_BIN (the binary under test), SCRATCH (an empty directory of the caller's).
# Each check prints `ok - WHAT: WHAT IT SAW`; the first failure prints `not ok - ...`,
# dumps the container's logs and exits 1.

set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
: "${DISTLINK_BIN:?DISTLINK_BIN names the binary under test}"
: "${SCRATCH:?SCRATCH names an empty scratch directory}"
ROOT_CACHE=${DISTLINK_INIT_ROOT:-/var/tmp/distlink-init-root}

NSPAWN_PID=
CPID=
MERGED="$SCRATCH/merged"
DISTFILES="$SCRATCH/distfiles"

log() { echo "# $*"; }

ok() { echo "ok - $*"; }

# dump_logs: what a failing check leaves for the reader (overridden per init system).
dump_logs() { :; }

fail() {
    echo "not ok - $*"
    dump_logs || true
    exit 1
}

# inside CMD...: runs CMD in the container's namespaces, with the container's root.
inside() {
    # --wd without a value: the container's PID 1's directory (--wd=/ would be the host's).
    nsenter --target "$CPID" --mount --uts --ipc --net --pid --root --wd -- "$@"
}

# wait_for SECONDS CMD...: polls CMD (every 0.2 s) until it succeeds or SECONDS pass.
wait_for() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    while ! "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}

cleanup() {
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    findmnt -rn -o TARGET | grep -F -- "$SCRATCH/" | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
}
trap cleanup EXIT

# prepare_root: the overlay and the distfiles tmpfs; installs the binary as shipped
# (/usr/bin/distlink, as the ebuild does) and three host directories.
prepare_root() {
    "$here/mkroot.sh" "$ROOT_CACHE" >/dev/null
    mkdir -p "$SCRATCH/upper" "$SCRATCH/work" "$MERGED" "$DISTFILES"
    mount -t overlay overlay \
        -o "lowerdir=$ROOT_CACHE,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" "$MERGED"
    mount -t tmpfs -o mode=0755 distfiles "$DISTFILES"
    mkdir -p "$DISTFILES/server" "$DISTFILES/host1" "$DISTFILES/host2"
    install -m 0755 "$DISTLINK_BIN" "$MERGED/usr/bin/distlink"
    # A test may read more of the journal or syslog than a default container keeps.
    rm -f "$MERGED/etc/machine-id"
    echo "distlink-test" > "$MERGED/etc/hostname"
}

# write_config FILE HOSTS...: a configuration naming /var/cache/distfiles/HOST for each HOST.
write_config() {
    local file=$1
    shift
    {
        echo "hosts:"
        for h in "$@"; do echo "  $h: /var/cache/distfiles/$h"; done
        echo "settle: 1s"
    } > "$file"
}

# boot MODE: starts the container, MODE `systemd` (systemd-nspawn --boot) or `openrc`
# (/sbin/openrc-init as PID 1). nspawn's own seccomp filter refuses fanotify_init and
# fanotify_mark: they are allowed so the filter under test is the unit's own.
boot() {
    local mode=$1
    local args=(--keep-unit --register=no --private-network --console=read-only
        --directory="$MERGED" --machine="distlink-$mode-$$"
        --system-call-filter='fanotify_init fanotify_mark'
        --bind="$DISTFILES:/var/cache/distfiles")
    if [ "$mode" = systemd ]; then
        systemd-nspawn --boot "${args[@]}" > "$SCRATCH/console.log" 2>&1 &
    else
        systemd-nspawn "${args[@]}" /sbin/openrc-init > "$SCRATCH/console.log" 2>&1 &
    fi
    NSPAWN_PID=$!
    local end=$((SECONDS + 60))
    while [ -z "$CPID" ]; do
        CPID=$(pgrep -P "$NSPAWN_PID" | head -n1 || true)
        [ "$SECONDS" -lt "$end" ] || fail "boot $mode: no container process (console: $(tail -n5 "$SCRATCH/console.log"))"
        [ -n "$CPID" ] || sleep 0.1
    done
}

# portage_download HOST NAME CONTENT: as Portage does it (write NAME.__download__, rename).
portage_download() {
    local d="$DISTFILES/$1"
    printf '%s' "$3" > "$d/$2.__download__"
    mv "$d/$2.__download__" "$d/$2"
}

# portage_download_as_portage HOST NAME CONTENT: the same, but written inside the
# container by user portage (FEATURES=userfetch), so the file is portage's.
portage_download_as_portage() {
    inside setpriv --reuid=portage --regid=portage --clear-groups sh -c \
        'cd "/var/cache/distfiles/$1" && printf %s "$3" > "$2.__download__" && mv "$2.__download__" "$2"' \
        _ "$1" "$2" "$3"
}

# same_inode A B: whether two paths are one inode.
same_inode() {
    [ -e "$1" ] && [ -e "$2" ] && [ "$(stat -c %i "$1")" = "$(stat -c %i "$2")" ]
}

# linked NAME HOSTS...: NAME in every host directory, one inode.
linked() {
    local name=$1 first=$2
    shift 2
    for h in "$@"; do
        same_inode "$DISTFILES/$first/$name" "$DISTFILES/$h/$name" || return 1
    done
}

# has_record PATH: the fan-out record (user.distlink) is on the inode.
has_record() {
    getfattr --absolute-names -n user.distlink "$1" >/dev/null 2>&1 \
        || python3 -c 'import os,sys; os.getxattr(sys.argv[1], "user.distlink")' "$1"
}
