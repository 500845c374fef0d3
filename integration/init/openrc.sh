#!/bin/bash
# Boots Debian 12's OpenRC (/sbin/openrc-init as PID 1) in systemd-nspawn and checks the
# shipped packaging/distlink.initd and distlink.confd, installed unchanged as
# /etc/init.d/distlink and /etc/conf.d/distlink: boot order after the logger, status,
# fan-out, logging to syslog, reload, invalid configurations, respawn after a kill,
# stop/start/restart, a syslog restart, and `user: portage`.
#
# Usage (as root, after `cargo build`):
#   DISTLINK_BIN=target/debug/distlink SCRATCH=$(mktemp -d) bash integration/init/openrc.sh
# Each check prints `ok - WHAT: WHAT IT SAW`; the first failure prints `not ok - ...`, the
# tail of /var/log/messages, `rc-status -a` and the console, and exits 1. container.sh's
# EXIT trap stops the container and unmounts everything in every case.
#
# The container, beyond the cached root (mkroot.sh):
# - /etc/init.d/localmount: a stub (Debian has no localmount; the initd `need`s it), in
#   the boot runlevel.
# - /etc/init.d/syslogd: busybox syslogd -n -O /var/log/messages under supervise-daemon,
#   `provide logger`. It is "started" once /dev/log exists: busybox has no readiness
#   protocol, and lines distlink logs before /dev/log exists go to its stderr (the
#   script's error_log) instead of syslog. Debian's LSB busybox-syslogd
#   (which provides a virtual `syslogd`: OpenRC then refuses a real service of that
#   name) and busybox-klogd are removed; hwclock.sh and procps (which need Debian's
#   mountdevsubfs/mountkernfs, absent under openrc-init) leave sysinit.
# - syslogd and distlink in the default runlevel; /etc/distlink.yaml with hosts
#   server, host1, host2 under /var/cache/distfiles (a tmpfs shared with the host side).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=container.sh
. "$here/container.sh"

CONFIG=/etc/distlink.yaml
MESSAGES="$MERGED/var/log/messages"
# Deadlines, seconds: a renamed download is linked at once; settle is 1 s.
LINK_SECS=10

strip_colours() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

dump_logs() {
    echo "# --- /var/log/messages (tail) ---"
    tail -n 40 "$MESSAGES" 2>/dev/null | sed 's/^/# /'
    if [ -n "$CPID" ] && kill -0 "$CPID" 2>/dev/null; then
        echo "# --- rc-status -a ---"
        inside rc-status -a 2>&1 | sed 's/^/# /'
    fi
    echo "# --- /var/log/distlink.log (the script's error_log) ---"
    tail -n 20 "$MERGED/var/log/distlink.log" 2>/dev/null | sed 's/^/# /'
    echo "# --- console ---"
    strip_colours < "$SCRATCH/console.log" | tail -n 60 | sed 's/^/# /'
}

# ---- the container ---------------------------------------------------------------

prepare_root

cat > "$MERGED/etc/init.d/localmount" <<'EOF'
#!/sbin/openrc-run
# Stub for Gentoo's localmount (Debian has none): nspawn has mounted everything.
description="Local filesystems (stub: mounted by systemd-nspawn)"
start() { return 0; }
stop() { return 0; }
EOF

cat > "$MERGED/etc/init.d/syslogd" <<'EOF'
#!/sbin/openrc-run
description="busybox syslogd, writing /var/log/messages"
command=/bin/busybox
command_args="syslogd -n -O /var/log/messages"
supervisor=supervise-daemon

depend() {
	provide logger
	need localmount
}

start_pre() {
	rm -f /dev/log
}

# busybox syslogd has no readiness protocol: the service counts as started once /dev/log
# is there (at most 5 s), so that a service that `use`s the logger finds it.
start_post() {
	local i=0
	while [ ! -S /dev/log ]; do
		i=$((i + 1))
		if [ "$i" -gt 50 ]; then
			eerror "syslogd: no /dev/log after 5 s"
			return 1
		fi
		sleep 0.1
	done
}
EOF
chmod 0755 "$MERGED/etc/init.d/localmount" "$MERGED/etc/init.d/syslogd"

install -m 0755 "$repo/packaging/distlink.initd" "$MERGED/etc/init.d/distlink"
mkdir -p "$MERGED/etc/conf.d"
install -m 0644 "$repo/packaging/distlink.confd" "$MERGED/etc/conf.d/distlink"

rm -f "$MERGED"/etc/runlevels/*/busybox-syslogd "$MERGED"/etc/runlevels/*/busybox-klogd \
    "$MERGED"/etc/init.d/busybox-syslogd "$MERGED"/etc/init.d/busybox-klogd \
    "$MERGED"/etc/runlevels/sysinit/hwclock.sh "$MERGED"/etc/runlevels/sysinit/procps
ln -s /etc/init.d/localmount "$MERGED/etc/runlevels/boot/localmount"
ln -s /etc/init.d/syslogd "$MERGED/etc/runlevels/default/syslogd"
ln -s /etc/init.d/distlink "$MERGED/etc/runlevels/default/distlink"

write_config "$MERGED$CONFIG" server host1 host2
cp "$MERGED$CONFIG" "$SCRATCH/good.yaml"

# ---- helpers -------------------------------------------------------------------------

# daemon_pids: the distlink processes in the container, one line each.
daemon_pids() { inside pgrep -x distlink || true; }

# one_daemon: exactly one distlink runs; its pid in DPID.
one_daemon() {
    local p
    p=$(daemon_pids)
    [ -n "$p" ] && [ "$(printf '%s\n' "$p" | wc -l)" -eq 1 ] || return 1
    DPID=$p
}

# still_boot_daemon WHEN: exactly one distlink runs and it is the one started at boot.
still_boot_daemon() {
    one_daemon && [ "$DPID" = "$BOOT_PID" ] ||
        fail "$1: distlink pid(s) '$(daemon_pids | tr '\n' ' ')', expected $BOOT_PID"
}

# new_daemon OLD: exactly one distlink runs and it is not OLD (pid in DPID).
new_daemon() { one_daemon && [ "$DPID" != "$1" ]; }

no_daemon() { [ -z "$(daemon_pids)" ]; }

syslogd_pid() { inside pgrep -f '^/bin/busybox syslogd' || true; }

# new_syslogd OLD: busybox syslogd runs with a pid other than OLD (in NEW_S).
new_syslogd() { NEW_S=$(syslogd_pid); [ -n "$NEW_S" ] && [ "$NEW_S" != "$1" ]; }

# started RUNLEVEL SERVICE: rc-status lists SERVICE in RUNLEVEL as started.
started() {
    local out
    out=$(inside rc-status "$1" 2>/dev/null) || return 1
    grep -Eq "^ *$2 +\[ +started" <<<"$out"
}

# run_rc CMD...: runs CMD inside (at most 60 s); its output in RC_OUT (one line), its
# status in RC.
run_rc() {
    RC=0
    RC_OUT=$(inside timeout 60 "$@" 2>&1 | strip_colours) || RC=$?
    # pipefail: the status is inside's, not sed's.
    RC_OUT=$(printf '%s' "$RC_OUT" | tr '\n' ' ' | sed 's/  */ /g; s/ $//')
}

# fanned_out_logged NAME: the daemon's fan-out line for host1/NAME is in /var/log/messages.
fanned_out_logged() { grep -Eq " distlink\[[0-9]+\]: host1/$1 \(renamed\): linked into" "$MESSAGES"; }

# download NAME HOSTS...: a Portage download of NAME into host1, which must be linked into
# every one of HOSTS (one inode) within LINK_SECS; how long it took in TOOK. Written by
# root on the host side, or by portage inside when AS_PORTAGE=1.
N=0
AS_PORTAGE=0
download() {
    local name=$1 t0
    shift
    t0=$EPOCHREALTIME
    if [ "$AS_PORTAGE" = 1 ]; then
        portage_download_as_portage host1 "$name" "distfile $name"
    else
        portage_download host1 "$name" "distfile $name"
    fi
    wait_for "$LINK_SECS" linked "$name" host1 "$@" ||
        fail "$name: not linked from host1 into $* within ${LINK_SECS}s ($(ls -li "$DISTFILES"/*/"$name" 2>&1 | tr '\n' ';'))"
    TOOK=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }')
}
next_name() { N=$((N + 1)); NAME="openrc-$1-$N.tar.xz"; }

msg_lines() { wc -l < "$MESSAGES"; }

# supervisor_news: what supervise-daemon last said about distlink dying (for failures;
# the daemon's own last words are in its error_log, /var/log/distlink.log).
supervisor_news() {
    grep -E 'supervise-daemon\[[0-9]+\]: /usr/bin/distlink, pid' "$MESSAGES" | tail -n2 |
        sed 's/.*supervise-daemon/supervise-daemon/' | tr '\n' ';' || true
}

# distlink_lines FROM TO LEVELS: distlink's own lines (tag distlink[PID]) in /var/log/messages
# lines FROM..TO at one of LEVELS (regex over busybox's facility.level field).
distlink_lines() {
    sed -n "$1,$2p" "$MESSAGES" | grep -E " daemon\.($3) distlink\[[0-9]+\]:" || true
}

# ---- 1. boot ---------------------------------------------------------------------------

boot openrc
wait_for 60 started default distlink ||
    fail "boot: distlink not started in the default runlevel within 60 s"
started default syslogd || fail "boot: syslogd not started in the default runlevel"
wait_for 10 grep -Eq ' distlink\[[0-9]+\]: ' "$MESSAGES" ||
    fail "boot: no line from distlink in /var/log/messages"
console=$(strip_colours < "$SCRATCH/console.log")
c_sys=$(printf '%s\n' "$console" | grep -n 'Starting syslogd' | head -n1 | cut -d: -f1)
c_dl=$(printf '%s\n' "$console" | grep -n 'Starting distlink' | head -n1 | cut -d: -f1)
[ -n "$c_sys" ] && [ -n "$c_dl" ] && [ "$c_sys" -lt "$c_dl" ] ||
    fail "boot order: console has 'Starting syslogd' at line '${c_sys}' and 'Starting distlink' at line '${c_dl}'"
one_daemon || fail "boot: not exactly one distlink process: $(daemon_pids | tr '\n' ' ')"
BOOT_PID=$DPID
SPID=$(syslogd_pid)
[ -n "$SPID" ] || fail "boot: no busybox syslogd process"
t_sys=$(inside cat "/proc/$SPID/stat" | awk '{ print $22 }')
t_dl=$(inside cat "/proc/$DPID/stat" | awk '{ print $22 }')
[ "$t_sys" -lt "$t_dl" ] ||
    fail "boot order: busybox syslogd (pid $SPID) started at tick $t_sys, distlink (pid $DPID) at tick $t_dl"
m_sys=$(grep -n 'syslogd started' "$MESSAGES" | head -n1 | cut -d: -f1)
m_dl=$(grep -En ' distlink\[[0-9]+\]:' "$MESSAGES" | head -n1)
ok "boot starts distlink after the logger: both started in the default runlevel;" \
    "console 'Starting syslogd' line $c_sys < 'Starting distlink' line $c_dl;" \
    "process start (clock ticks, /proc/PID/stat) syslogd $t_sys < distlink $t_dl;" \
    "/var/log/messages: 'syslogd started' line $m_sys, distlink's first line ${m_dl%%:*} ('${m_dl#*: }')"

# ---- 2. status -------------------------------------------------------------------------

run_rc rc-service distlink status
[ "$RC" -eq 0 ] && [[ "$RC_OUT" == *"status: started"* ]] ||
    fail "rc-service distlink status: exit $RC: $RC_OUT"
one_daemon || fail "status: not exactly one distlink process: $(daemon_pids | tr '\n' ' ')"
ok "rc-service distlink status: '$RC_OUT' (exit 0); pgrep -x distlink: pid $DPID," \
    "$(inside ps -o args= -p "$DPID")"

# ---- 3. fan-out --------------------------------------------------------------------------

next_name fanout
FIRST=$NAME
download "$NAME" server host2
wait_for 5 has_record "$DISTFILES/host1/$NAME" || fail "$NAME: linked but no user.distlink record"
ok "Portage download host1/$NAME linked into server and host2 in $TOOK" \
    "(inode $(stat -c %i "$DISTFILES/host1/$NAME"), $(stat -c %h "$DISTFILES/host1/$NAME") links), user.distlink record present"

# ---- 4. syslog -------------------------------------------------------------------------

wait_for 5 fanned_out_logged "$FIRST" ||
    fail "no distlink fan-out line for host1/$FIRST in /var/log/messages"
ok "distlink's lines reach syslog: $(grep -E " distlink\[[0-9]+\]: host1/$FIRST " "$MESSAGES" | head -n1)"

# ---- 5. reload: an added host ------------------------------------------------------------

mkdir "$DISTFILES/host3"
write_config "$MERGED$CONFIG" server host1 host2 host3
cp "$MERGED$CONFIG" "$SCRATCH/good.yaml"
run_rc rc-service distlink reload
[ "$RC" -eq 0 ] || fail "reload with host3 added: exit $RC: $RC_OUT"
one_daemon || fail "after reload: not exactly one distlink: $(daemon_pids | tr '\n' ' ')"
[ "$DPID" = "$BOOT_PID" ] || fail "reload changed the pid: $BOOT_PID -> $DPID"
next_name reload
download "$NAME" server host2 host3
wait_for "$LINK_SECS" linked "$FIRST" host1 host3 ||
    fail "an added host gets the pool: host1/$FIRST not linked into host3"
ok "reload with host3 added: '$RC_OUT', same pid $DPID; new download $NAME reached" \
    "server, host2, host3 in $TOOK; the earlier $FIRST reached host3 too (the pool)"

# ---- 6. invalid configurations ---------------------------------------------------------------

BAD_FROM=$(msg_lines)
echo 'hosts: [' > "$MERGED$CONFIG"
run_rc rc-service distlink reload
[ "$RC" -ne 0 ] || fail "reload with 'hosts: [' succeeded: $RC_OUT"
bad1="$RC ($RC_OUT)"
still_boot_daemon "after a refused reload"
next_name badyaml
download "$NAME" server host2 host3
ok "reload with invalid YAML fails: exit $bad1; pid $DPID still runs and linked $NAME in $TOOK"

write_config "$MERGED$CONFIG" server host1 host2 host3 missing
run_rc rc-service distlink reload
[ "$RC" -eq 0 ] || fail "reload naming a missing directory failed (it is a warning now): $RC_OUT"
still_boot_daemon "after a reload with a missing directory"
next_name badhost
download "$NAME" server host2 host3
grep -q "host missing: directory .* does not exist" "$MESSAGES" ||
    fail "no warning for the missing host directory in /var/log/messages"
ok "reload with a host directory that does not exist succeeds with a warning in syslog;" \
    "pid $DPID still runs and linked $NAME in $TOOK"

echo 'hosts: [' > "$MERGED$CONFIG"
run_rc rc-service distlink restart
[ "$RC" -ne 0 ] || fail "restart with 'hosts: [' succeeded: $RC_OUT"
bad3="$RC ($RC_OUT)"
still_boot_daemon "after a refused restart"
started default distlink || fail "after a refused restart: distlink no longer started in rc-status"
cp "$SCRATCH/good.yaml" "$MERGED$CONFIG"
next_name badrestart
download "$NAME" server host2 host3
BAD_TO=$(msg_lines)
ok "restart with invalid YAML fails: exit $bad3; pid $DPID still runs (rc-status: started)" \
    "and linked $NAME in $TOOK; good configuration restored"

# ---- 7. respawn after kill -9 ---------------------------------------------------------------

OLD=$DPID
t0=$EPOCHREALTIME
inside kill -9 "$OLD"
wait_for 15 new_daemon "$OLD" ||
    fail "kill -9 $OLD: no new distlink within 15 s (pids: '$(daemon_pids | tr '\n' ' ')'); $(supervisor_news)"
took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
run_rc rc-service distlink status
[ "$RC" -eq 0 ] || fail "after the respawn: rc-service distlink status: exit $RC: $RC_OUT"
next_name respawn
download "$NAME" server host2 host3
ok "respawn after kill -9 $OLD: supervise-daemon started pid $DPID after ${took}s" \
    "(respawn_delay=5); rc-service status: '$RC_OUT'; it linked $NAME in $TOOK"

# ---- 8. stop / start / restart ------------------------------------------------------------------

run_rc rc-service distlink stop
[ "$RC" -eq 0 ] || fail "rc-service distlink stop: exit $RC: $RC_OUT"
stop_out=$RC_OUT
wait_for 5 no_daemon || fail "after stop: distlink still runs: $(daemon_pids | tr '\n' ' ')"
run_rc distlink status --config "$CONFIG"
[ "$RC" -eq 3 ] || fail "distlink status while stopped: exit $RC (expected 3): $RC_OUT"
ok "stop: '$stop_out' (exit 0), no distlink process; distlink status exits 3: '${RC_OUT:0:60}'"

run_rc rc-service distlink start
[ "$RC" -eq 0 ] || fail "rc-service distlink start: exit $RC: $RC_OUT"
wait_for 10 one_daemon || fail "after start: no distlink process; $(supervisor_news)"
next_name start
download "$NAME" server host2 host3
ok "start: '$RC_OUT' (exit 0), pid $DPID, linked $NAME in $TOOK"

OLD=$DPID
run_rc rc-service distlink restart
[ "$RC" -eq 0 ] || fail "rc-service distlink restart: exit $RC: $RC_OUT"
wait_for 10 new_daemon "$OLD" || fail "after restart: pid(s) '$(daemon_pids | tr '\n' ' ')', old $OLD; $(supervisor_news)"
next_name restart
download "$NAME" server host2 host3
ok "restart: exit 0, pid $OLD -> $DPID, linked $NAME in $TOOK"

# ---- 11 (good path so far). no errors from distlink -----------------------------------------

check_errors() {
    local from=$1 to=$2 what=$3 errs warns
    errs=$(distlink_lines "$from" "$to" 'err|crit|alert|emerg')
    warns=$(distlink_lines "$from" "$to" 'warn')
    [ -z "$errs" ] || fail "$what: distlink logged errors: $(printf '%s\n' "$errs" | head -n3)"
    ok "$what: no distlink line at error level in /var/log/messages lines $from-$to;" \
        "$(printf '%s' "$warns" | grep -c . || true) warning(s)${warns:+: $(printf '%s\n' "$warns" | head -n2 | sed 's/.*distlink\[[0-9]*\]: //' | tr '\n' ';')}"
}
END_GOOD=$(msg_lines)
# Lines of the invalid-configuration checks (6) are left out: errors would be expected there.
check_errors 1 "$BAD_FROM" "no errors (boot to reload)"
check_errors "$((BAD_TO + 1))" "$END_GOOD" "no errors (respawn, stop/start/restart)"
[ -z "$(distlink_lines "$((BAD_FROM + 1))" "$BAD_TO" 'err|crit|alert|emerg')" ] ||
    log "distlink logged errors during the invalid-configuration checks (expected there):" \
        "$(distlink_lines "$((BAD_FROM + 1))" "$BAD_TO" 'err|crit|alert|emerg' | head -n2)"

# ---- 9. syslog restarts ------------------------------------------------------------------------

OLD_S=$(syslogd_pid)
run_rc rc-service syslogd restart
[ "$RC" -eq 0 ] || fail "rc-service syslogd restart: exit $RC: $RC_OUT"
wait_for 10 new_syslogd "$OLD_S" ||
    fail "syslogd restart: busybox syslogd pid '$OLD_S' -> '$NEW_S'"
one_daemon || fail "after the syslogd restart: not exactly one distlink"
next_name syslog
download "$NAME" server host2 host3
wait_for 10 fanned_out_logged "$NAME" ||
    fail "after rc-service syslogd restart (busybox pid $OLD_S -> $NEW_S): no fan-out line for" \
        "host1/$NAME from distlink (pid $DPID) in /var/log/messages within 10 s, though it was linked" \
        "(distlink did not reconnect to the new /dev/log)"
ok "syslogd restart (busybox pid $OLD_S -> $NEW_S): $(grep -E " distlink\[[0-9]+\]: host1/$NAME " "$MESSAGES" | head -n1)"

# ---- 10. user: portage -------------------------------------------------------------------------

inside groupadd -r portage
inside useradd -r -g portage -M -d /var/lib/portage/home -s /usr/sbin/nologin portage
for h in server host1 host2 host3; do
    inside chown portage:portage "/var/cache/distfiles/$h"
    inside chmod 0775 "/var/cache/distfiles/$h"
done
{ cat "$SCRATCH/good.yaml"; echo "user: portage"; } > "$MERGED$CONFIG"
OLD=$DPID
run_rc rc-service distlink restart
[ "$RC" -eq 0 ] || fail "restart with user: portage: exit $RC: $RC_OUT"
wait_for 10 new_daemon "$OLD" || fail "restart with user: portage: pid(s) '$(daemon_pids | tr '\n' ' ')', old $OLD; $(supervisor_news)"
duser=$(inside ps -o user= -p "$DPID")
[ "$duser" = portage ] || fail "user: portage: distlink (pid $DPID) runs as '$duser'"
AS_PORTAGE=1
next_name portage
download "$NAME" server host2 host3
P_UID=$(inside id -u portage)
owner=$(stat -c %u "$DISTFILES/host1/$NAME")
[ "$owner" = "$P_UID" ] || fail "user: portage: $NAME is owned by uid $owner, not portage ($P_UID)"
wait_for 5 has_record "$DISTFILES/host1/$NAME" || fail "user: portage: $NAME linked but no user.distlink record"
P_FIRST=$NAME
P_TOOK=$TOOK
PORTAGE_PID=$DPID
run_rc rc-service distlink reload
[ "$RC" -eq 0 ] || fail "user: portage: reload: exit $RC: $RC_OUT"
one_daemon && [ "$DPID" = "$PORTAGE_PID" ] || fail "user: portage: after reload, pid(s) '$(daemon_pids | tr '\n' ' ')'"
next_name portage-reload
download "$NAME" server host2 host3
run_rc distlink status --config "$CONFIG"
[ "$RC" -eq 0 ] && [[ "$RC_OUT" == *"is running"* ]] ||
    fail "user: portage: distlink status --config $CONFIG: exit $RC (expected 0, running): ${RC_OUT:0:200}"
ok "user: portage: distlink pid $DPID runs as $duser; $P_FIRST, written by portage (uid $P_UID)," \
    "linked in $P_TOOK with its record; reload exit 0 (same pid, then linked $NAME in $TOOK);" \
    "distlink status exit 0: '${RC_OUT:0:60}'"
AS_PORTAGE=0

# ---- 11 (the rest). no errors from distlink ---------------------------------------------------

check_errors "$((END_GOOD + 1))" "$(msg_lines)" "no errors (syslog restart, user: portage)"
