#!/bin/bash
# The shipped systemd unit, unchanged, under a real systemd 252 booted as PID 1 in a
# Debian 12 container (systemd-nspawn --boot). Run by integration/init_systems.rs; see
# container.sh for the set-up and the output format.
source "$(dirname "$0")/container.sh"

show() { inside systemctl show -P "$1" distlink.service; }

dump_logs() {
    echo "# --- systemctl status distlink"
    inside systemctl status --no-pager -l distlink.service 2>&1 | sed 's/^/# /' || true
    echo "# --- journal (last 60 lines)"
    inside journalctl -b --no-pager -n 60 2>&1 | sed 's/^/# /' || true
}

conf=$MERGED/etc/distlink.yaml
prom_dir=/var/lib/node_exporter/textfile_collector

prepare_root
install -m 0644 "$repo/packaging/distlink.service" "$MERGED/etc/systemd/system/distlink.service"
ln -sf /etc/systemd/system/distlink.service \
    "$MERGED/etc/systemd/system/multi-user.target.wants/distlink.service"
# journald owns /dev/log here; the OpenRC suite's syslog daemon stays off.
for unit in busybox-syslogd busybox-klogd; do
    ln -sf /dev/null "$MERGED/etc/systemd/system/$unit.service"
done
mkdir -p "$MERGED$prom_dir"
write_config "$conf" server host1 host2
echo "prometheus_textfile: $prom_dir/distlink.prom" >> "$conf"

boot systemd
wait_for 90 sh -c "nsenter --target $CPID --mount --pid --root -- systemctl is-system-running | grep -qE '^(running|degraded)$'" \
    || fail "boot: the container's systemd did not finish booting ($(inside systemctl is-system-running 2>&1 || true))"
ok "boot: systemd $(inside systemctl --version | head -n1 | cut -d' ' -f2) is PID 1 and reached $(inside systemctl is-system-running || true)"

# --- start through Type=notify
wait_for 30 sh -c "[ \"\$(nsenter --target $CPID --mount --pid --root -- systemctl show -P SubState distlink)\" = running ]" \
    || fail "start: distlink is $(show ActiveState)/$(show SubState), result $(show Result)"
pid=$(show MainPID)
ok "start: active (running) at boot, Type=$(show Type), MainPID $pid, status \"$(show StatusText)\""

# --- a Portage-style download
portage_download host1 foo-1.0.tar.gz "foo"
wait_for 20 linked foo-1.0.tar.gz host1 server host2 || fail "fan-out: foo-1.0.tar.gz not linked"
has_record "$DISTFILES/server/foo-1.0.tar.gz" || fail "fan-out: no user.distlink record"
ok "fan-out: host1/foo-1.0.tar.gz is inode $(stat -c %i "$DISTFILES/host1/foo-1.0.tar.gz") in server, host1 and host2, with its record"

# --- the journal's own fields
wait_for 10 sh -c "nsenter --target $CPID --mount --pid --root -- journalctl -u distlink HOST=host1 --no-pager -o cat | grep -q foo-1.0.tar.gz" \
    || fail "journal: nothing under HOST=host1 ($(inside journalctl -u distlink --no-pager -o cat | tail -n3))"
ok "journal: journalctl -u distlink HOST=host1 shows \"$(inside journalctl -u distlink HOST=host1 --no-pager -o cat | grep foo-1.0 | tail -n1)\""

# --- the example prometheus_textfile
wait_for 15 grep -q '^distlink_links_total' "$MERGED$prom_dir/distlink.prom" \
    || fail "prometheus: $prom_dir/distlink.prom not written"
ok "prometheus: $prom_dir/distlink.prom written under ProtectSystem=strict ($(grep '^distlink_links_total' "$MERGED$prom_dir/distlink.prom"))"

# --- reload: a fourth host gets the pool; STATUS= follows
mkdir "$DISTFILES/host3"
write_config "$conf" server host1 host2 host3
echo "prometheus_textfile: $prom_dir/distlink.prom" >> "$conf"
inside systemctl reload distlink || fail "reload: systemctl reload failed"
[ "$(show MainPID)" = "$pid" ] || fail "reload: MainPID changed"
wait_for 20 linked foo-1.0.tar.gz host1 host3 || fail "reload: host3 did not get the pool"
wait_for 10 sh -c "nsenter --target $CPID --mount --pid --root -- systemctl show -P StatusText distlink | grep -q 'watching 4 host'" \
    || fail "reload: status still \"$(show StatusText)\""
inside journalctl -u distlink --no-pager -o cat | grep -q "Reloading" \
    || fail "reload: systemd logged no reload"
ok "reload: same MainPID $pid, host3 got foo-1.0.tar.gz, status \"$(show StatusText)\", state $(show SubState)"

# --- nothing systemd had to warn about (checked before the checks below make it fail
# on purpose)
warnings=$(inside journalctl -b --no-pager -o cat -p warning _PID=1 | grep -i distlink || true)
[ -z "$warnings" ] || fail "systemd warned about the unit: $warnings"
ok "warnings: none from systemd (PID 1) about distlink.service at warning level or above"

# --- a bad configuration on reload: refused, the daemon keeps running
cp "$conf" "$SCRATCH/good.yaml"
printf 'hosts: [\n' > "$conf"
if inside systemctl reload distlink 2>/dev/null; then fail "reload: a broken configuration was accepted"; fi
[ "$(show MainPID)" = "$pid" ] && [ "$(show SubState)" = running ] || fail "reload: the daemon did not survive a broken configuration"
portage_download host2 bar-2.tar.gz "bar"
wait_for 20 linked bar-2.tar.gz host2 server host1 host3 || fail "reload: no fan-out after a refused reload"
cp "$SCRATCH/good.yaml" "$conf"
ok "reload: a broken configuration makes systemctl reload fail; MainPID $pid still links"

# --- the watchdog (a drop-in shortens WatchdogSec=60s so the check takes seconds)
mkdir -p "$MERGED/etc/systemd/system/distlink.service.d"
printf '[Service]\nWatchdogSec=3s\n' > "$MERGED/etc/systemd/system/distlink.service.d/watchdog.conf"
inside systemctl daemon-reload
inside systemctl restart distlink || fail "watchdog: restart failed"
pid=$(show MainPID)
restarts=$(show NRestarts)
# The rule under test is elapsed time: three watchdog periods with no restart.
sleep 9
[ "$(show MainPID)" = "$pid" ] && [ "$(show NRestarts)" = "$restarts" ] \
    || fail "watchdog: restarted (MainPID $(show MainPID), NRestarts $(show NRestarts))"
ok "watchdog: WatchdogSec=3s, still MainPID $pid after 9 s, NRestarts $restarts"
rm "$MERGED/etc/systemd/system/distlink.service.d/watchdog.conf"
inside systemctl daemon-reload
inside systemctl restart distlink
pid=$(show MainPID)

# --- a killed daemon is restarted
inside kill -9 "$pid"
wait_for 30 sh -c "p=\$(nsenter --target $CPID --mount --pid --root -- systemctl show -P MainPID distlink); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && [ \"\$(nsenter --target $CPID --mount --pid --root -- systemctl show -P SubState distlink)\" = running ]" \
    || fail "restart: not restarted after kill -9 ($(show SubState), NRestarts $(show NRestarts))"
pid=$(show MainPID)
portage_download host1 baz-3.tar.gz "baz"
wait_for 20 linked baz-3.tar.gz host1 server host2 host3 || fail "restart: the new daemon does not link"
ok "restart: kill -9 -> new MainPID $pid after RestartSec, NRestarts $(show NRestarts), links again"

# --- stop
inside systemctl stop distlink || fail "stop: systemctl stop failed"
[ "$(show Result)" = success ] && [ "$(show ExecMainStatus)" = 0 ] \
    || fail "stop: result $(show Result), exit status $(show ExecMainStatus)"
set +e
status=$(inside distlink status --config /etc/distlink.yaml)
code=$?
set -e
[ "$code" = 3 ] && echo "$status" | grep -q "not running" || fail "stop: distlink status exited $code: $status"
ok "stop: exit status 0, result success; distlink status exits 3: \"$(echo "$status" | head -n1)\""

# --- an invalid configuration is not restarted
printf 'hosts: [\n' > "$conf"
if inside systemctl start distlink 2>/dev/null; then fail "invalid: started with a broken configuration"; fi
# The rule under test is elapsed time: two RestartSec= periods without a restart.
sleep 11
[ "$(show NRestarts)" = 0 ] && [ "$(show ActiveState)" = failed ] \
    || fail "invalid: $(show ActiveState), NRestarts $(show NRestarts)"
ok "invalid: exit status $(show ExecMainStatus), state $(show ActiveState), NRestarts 0 after 11 s"
cp "$SCRATCH/good.yaml" "$conf"
inside systemctl reset-failed distlink

# --- user: portage, with the drop-in the unit's comment gives
inside groupadd -r portage
inside useradd -r -g portage -d /var/tmp/portage -s /usr/sbin/nologin portage
chown "$(stat -c %u "$MERGED/etc/passwd")" "$DISTFILES" # root's tree, as on a server
inside chown portage:portage /var/cache/distfiles/server /var/cache/distfiles/host1 \
    /var/cache/distfiles/host2 /var/cache/distfiles/host3
inside chmod 0775 /var/cache/distfiles/server /var/cache/distfiles/host1 \
    /var/cache/distfiles/host2 /var/cache/distfiles/host3
inside chown portage: "$prom_dir"
echo "user: portage" >> "$conf"
printf '[Service]\nCapabilityBoundingSet=CAP_SETUID CAP_SETGID\n' \
    > "$MERGED/etc/systemd/system/distlink.service.d/user.conf"
inside systemctl daemon-reload
inside systemctl start distlink || fail "user: start failed"
pid=$(show MainPID)
[ "$(inside stat -c %U "/proc/$pid")" = portage ] || fail "user: the daemon runs as $(inside stat -c %U "/proc/$pid")"
portage_download_as_portage host2 qux-4.tar.gz q
wait_for 20 linked qux-4.tar.gz host2 server host1 host3 || fail "user: not linked"
inside systemctl reload distlink || fail "user: systemctl reload failed"
[ "$(show MainPID)" = "$pid" ] || fail "user: reload changed MainPID"
wait_for 15 sh -c "nsenter --target $CPID --mount --pid --root -- distlink status --config /etc/distlink.yaml | grep -q 'is running'" \
    || fail "user: distlink status: $(inside distlink status --config /etc/distlink.yaml 2>&1 || true)"
ok "user: MainPID $pid runs as portage, links qux-4.tar.gz, reloads; distlink status: \"$(inside distlink status --config /etc/distlink.yaml | head -n1)\""

