//! Running as a service: least privilege, status, log routing, packaging files.

use crate::util::*;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CAP_DAC_OVERRIDE: u64 = 1 << 1;
const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
const CAP_FOWNER: u64 = 1 << 3;

#[test]
fn capabilities_are_dropped_and_other_users_files_still_link() {
    if !require_root() {
        return;
    }
    let _protected = Sysctl::set("/proc/sys/fs/protected_hardlinks", "1");
    let s = setup(Scratch::tmpfs("caps"), 3, "settle: 300ms\n");
    let pid = s.daemon.pid();
    assert!(s.daemon.wait_log("privileges dropped: capabilities kept: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER; no_new_privs set"));
    let keep = CAP_DAC_OVERRIDE | CAP_DAC_READ_SEARCH | CAP_FOWNER;
    // Once the start-up reconcile thread is gone, the threads are the event loop, the
    // four workers and the logging thread (all started after the drop, so they inherit
    // the reduced sets; the logging thread then drops what is left but the bounding set).
    let tasks = || {
        fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .count()
    };
    assert!(wait_until(DEADLINE, || tasks() == 6), "{} threads", tasks());
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
        let want = if proc_status(tid, "Name") == "log" {
            0
        } else {
            keep
        };
        for key in ["CapEff", "CapPrm"] {
            assert_eq!(cap_mask(tid, key), want, "{key} of thread {tid}");
        }
        assert_eq!(cap_mask(tid, "CapBnd"), keep, "CapBnd of thread {tid}");
        assert_eq!(cap_mask(tid, "CapInh"), 0);
        assert_eq!(cap_mask(tid, "CapAmb"), 0);
        assert_eq!(proc_status(tid, "NoNewPrivs"), "1");
    }
    // Files of another user, even unreadable ones, are still linked.
    for (name, mode) in [("other-0644.tar.gz", 0o644), ("other-0600.tar.gz", 0o600)] {
        let tmp = s.hosts[0].join(format!("{name}.__download__"));
        fs::write(&tmp, name).unwrap();
        std::os::unix::fs::chown(&tmp, Some(4242), Some(4242)).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&tmp, s.hosts[0].join(name)).unwrap();
        assert!(wait_linked(&s.hosts, 0, name), "{name} not linked");
        assert_eq!(fs::metadata(s.hosts[2].join(name)).unwrap().uid(), 4242);
    }
}

#[test]
fn linking_as_an_unprivileged_user() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("user");
    let hosts = scratch.hosts(3);
    for h in &hosts {
        std::os::unix::fs::chown(h, Some(65534), Some(65534)).unwrap();
    }
    let config = scratch.config_for(&hosts, "settle: 300ms\nuser: nobody\n");
    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log("linking as user nobody"));
    let pid = d.pid();
    assert!(
        proc_status(pid, "Uid")
            .split_whitespace()
            .all(|u| u == "65534"),
        "{}",
        proc_status(pid, "Uid")
    );
    assert_eq!(cap_mask(pid, "CapEff"), CAP_DAC_READ_SEARCH | CAP_FOWNER);
    let tmp = hosts[1].join("as-nobody.tar.gz.__download__");
    fs::write(&tmp, b"x").unwrap();
    std::os::unix::fs::chown(&tmp, Some(65534), Some(65534)).unwrap();
    fs::rename(&tmp, hosts[1].join("as-nobody.tar.gz")).unwrap();
    assert!(wait_linked(&hosts, 1, "as-nobody.tar.gz"));
    assert!(
        wait_until(DEADLINE, || recorded_hosts(
            &hosts[0].join("as-nobody.tar.gz")
        )
        .len()
            == 3),
        "no record written as nobody"
    );
    // A root-owned 0644 file: nobody cannot write its record, so it is not linked at
    // all (linked unrecorded, a deletion would come back at the next restart).
    let tmp = hosts[1].join("roots.tar.gz.__download__");
    fs::write(&tmp, b"root's").unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, hosts[1].join("roots.tar.gz")).unwrap();
    assert!(d.wait_log("host1/roots.tar.gz: not fanned out: distlink may not write its record"));
    assert!(!hosts[0].join("roots.tar.gz").exists());
    assert!(d.stop().success());
    // check says so beforehand, and refuses a host directory nobody cannot write.
    let (code, text) = check(&config);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: 1 files cannot carry records as user nobody"),
        "{text}"
    );
    std::os::unix::fs::chown(&hosts[2], Some(0), Some(0)).unwrap();
    let (code, text) = check(&config);
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains("host host2: user nobody cannot create links in"),
        "{text}"
    );
}

#[test]
fn status_reports_the_running_daemon_and_its_counters() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("status");
    let hosts = scratch.hosts(3);
    let prom = scratch.root.join("distlink.prom");
    let config = scratch.config_for(
        &hosts,
        &format!("settle: 300ms\nprometheus_textfile: {}\n", prom.display()),
    );
    let status = || status(&config);
    // No status file yet (as after a reboot): not running, exit 3 (LSB).
    let (code, text) = status();
    assert_eq!(code, Some(3), "no status file yet: {text}");
    assert!(
        text.contains("distlink is not running (no status file"),
        "{text}"
    );

    // A hidden file is never linked, but it takes space: the textfile's per-host figures
    // (written after each reconcile) count it.
    fs::write(hosts[2].join(".hidden"), b"7 bytes").unwrap();
    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "counted.tar.gz", b"12345");
    assert!(wait_linked(&hosts, 0, "counted.tar.gz"));
    // The status file is rewritten every few seconds and after each reconcile.
    assert!(
        wait_until(DEADLINE, || {
            let t = status().1;
            t.contains("1 files fanned out, 2 links made") && t.contains("last reconcile: 20")
        }),
        "{}",
        status().1
    );
    let (code, text) = status();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("distlink is running (pid {})", d.pid())),
        "{text}"
    );
    assert!(
        text.contains(&format!("host1: {}", hosts[1].display())),
        "{text}"
    );
    assert!(text.contains("last reconcile: 20"), "{text}");
    assert!(text.contains("0 conflicts, 0 errors"), "{text}");
    let mode = fs::metadata(scratch.root.join("run")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "status directory readable by others");
    let metrics = fs::read_to_string(&prom).unwrap();
    assert!(metrics.contains("distlink_links_total 2\n"), "{metrics}");
    assert!(
        metrics.contains("distlink_host_present{host=\"host2\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("distlink_host_alone_bytes{host=\"host2\"} 7\n"),
        "{metrics}"
    );

    assert!(d.stop().success());
    let (code, text) = status();
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("distlink is not running"), "{text}");
    assert!(text.contains("state stopped"), "{text}");
}

/// A fake journal: a thread receives datagrams and keeps them as field maps.
struct FakeJournal {
    entries: Arc<Mutex<Vec<HashMap<String, String>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn parse_entry(buf: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut rest = buf;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let (k, v) = (&line[..eq], &line[eq + 1..]);
            fields.insert(
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
            rest = &rest[nl + 1..];
        } else {
            // Binary form: KEY \n u64le length, value, \n.
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
            fields.insert(
                key,
                String::from_utf8_lossy(&rest[nl + 9..nl + 9 + len]).into_owned(),
            );
            rest = &rest[(nl + 9 + len + 1).min(rest.len())..];
        }
    }
    fields
}

impl FakeJournal {
    fn bind(path: &std::path::Path) -> FakeJournal {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (e2, s2) = (entries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    e2.lock().unwrap().push(parse_entry(&buf[..n]));
                }
            }
        });
        FakeJournal {
            entries,
            stop,
            thread: Some(thread),
        }
    }

    fn messages(&self, needle: &str) -> Vec<HashMap<String, String>> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .filter(|e| e.get("MESSAGE").is_some_and(|m| m.contains(needle)))
            .cloned()
            .collect()
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn journal_gets_priorities_fields_and_burst_summaries() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("journal");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    let path = scratch.root.join("journal.sock");
    let journal = FakeJournal::bind(&path);
    let env = [("DISTLINK_JOURNAL_SOCKET", path.display().to_string())];
    let d = Daemon::start_env(&scratch, &config, &["--log-target", "journal"], &env);
    portage_download(&hosts[0], "one\nname.tar.gz", b"x");
    assert!(wait_linked(&hosts, 0, "one\nname.tar.gz"));
    assert!(
        wait_until(DEADLINE, || !journal
            .messages("linked into host1")
            .is_empty()),
        "no fan-out line"
    );
    let line = journal.messages("linked into host1").remove(0);
    assert_eq!(line["PRIORITY"], "6");
    assert_eq!(line["SYSLOG_IDENTIFIER"], "distlink");
    assert_eq!(line["HOST"], "host0");
    assert_eq!(line["FILE"], "one\\nname.tar.gz");
    let debug = journal.messages("complete (Renamed)");
    assert!(
        !debug.is_empty() && debug.iter().all(|e| e["PRIORITY"] == "7"),
        "debug lines have priority 7"
    );
    assert!(
        !d.log().contains("linked into"),
        "fan-out lines also went to stderr:\n{}",
        d.log()
    );

    // A burst: far fewer lines than files, and one summary line for the rest.
    for i in 0..300 {
        portage_download(&hosts[1], format!("burst-{i:03}.tar.gz"), b"b");
    }
    for i in 0..300 {
        assert!(wait_linked(&hosts, 1, format!("burst-{i:03}.tar.gz")));
    }
    let needle = "more files fanned out in the last burst";
    assert!(
        wait_until(DEADLINE, || !journal.messages(needle).is_empty()),
        "no burst summary"
    );
    let summary = journal.messages(needle).remove(0);
    let summarised: usize = summary["MESSAGE"]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let shown = journal
        .messages("linked into host0")
        .iter()
        .filter(|e| e["MESSAGE"].contains("burst-"))
        .count();
    assert!(shown < 100, "{shown} fan-out lines for a burst of 300");
    assert_eq!(
        shown + summarised,
        300,
        "shown {shown} + summarised {summarised}"
    );
}

#[test]
fn auto_log_target_follows_journal_stream() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("autolog");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "");
    let path = scratch.root.join("journal.sock");
    let journal = FakeJournal::bind(&path);
    // Runs `distlink sync` with stderr to a file; JOURNAL_STREAM names that file or not.
    let run = |matching: bool| {
        let err = scratch.root.join(format!("stderr-{matching}"));
        let file = fs::File::create(&err).unwrap();
        let meta = file.metadata().unwrap();
        let stream = if matching {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            format!("{}:1", meta.dev())
        };
        let status = std::process::Command::new(BIN)
            .args(["sync", "--config"])
            .arg(&config)
            .env("JOURNAL_STREAM", stream)
            .env("DISTLINK_JOURNAL_SOCKET", &path)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .status()
            .unwrap();
        assert!(status.success());
        fs::read_to_string(&err).unwrap()
    };
    let stderr = run(true);
    assert!(
        !stderr.contains("reconcile (sync)"),
        "went to stderr although it is the journal: {stderr}"
    );
    assert!(
        wait_until(DEADLINE, || !journal
            .messages("reconcile (sync)")
            .is_empty()),
        "nothing reached the journal"
    );
    let before = journal.messages("reconcile (sync)").len();
    let stderr = run(false);
    assert!(stderr.contains("info: reconcile (sync)"), "{stderr}");
    assert_eq!(
        journal.messages("reconcile (sync)").len(),
        before,
        "went to the journal without JOURNAL_STREAM"
    );
}

#[test]
fn syslog_target_writes_rfc3164_to_dev_log() {
    if !require_root() || !require_tool("unshare") {
        return;
    }
    let scratch = Scratch::tmpfs("syslog");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "");
    // A private mount namespace where /dev/log is our socket (bind-mounted over an
    // empty tmpfs /dev), so the machine's own /dev/log is never touched.
    let sock_path = scratch.root.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /dev && touch /dev/log && \
         mount --bind '{}' /dev/log && exec '{BIN}' --log-target syslog sync --config '{}'",
        sock_path.display(),
        config.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let line = lines
        .iter()
        .find(|l| l.contains("reconcile (sync)"))
        .unwrap_or_else(|| panic!("nothing logged: {lines:?}"));
    // LOG_DAEMON (3) * 8 + info (6) = 30.
    assert!(line.starts_with("<30>"), "{line}");
    assert!(line.contains("distlink["), "{line}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("reconcile (sync)"),
        "also went to stderr"
    );
}

/// The daemon on `config` with `$NOTIFY_SOCKET` at a fresh socket of the scratch
/// directory, plus `env`; stderr discarded. Returns it, its pid and the socket (reads
/// time out after 200 ms).
fn start_notified(
    scratch: &Scratch,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (Reaped, nix::unistd::Pid, UnixDatagram) {
    let path = scratch.root.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = Reaped(
        std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &path)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    (child, pid, sock)
}

/// Receives messages into `seen` until one has a line starting with `what`.
fn await_line(sock: &UnixDatagram, seen: &mut Vec<String>, what: &str) -> bool {
    let mut buf = [0u8; 4096];
    wait_until(DEADLINE, || {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen.iter().any(|m| m.lines().any(|l| l.starts_with(what)))
    })
}

#[test]
fn service_manager_gets_ready_reloading_and_watchdog() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("notify");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "");
    let (mut child, pid, sock) =
        start_notified(&scratch, &config, &[("WATCHDOG_USEC", "10000000")]);
    let mut seen: Vec<String> = Vec::new();
    assert!(await_line(&sock, &mut seen, "READY=1"), "{seen:?}");
    seen.clear();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(await_line(&sock, &mut seen, "RELOADING=1"), "{seen:?}");
    let reloading = seen
        .iter()
        .find(|m| m.starts_with("RELOADING=1"))
        .unwrap()
        .clone();
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading}");
    seen.retain(|m| !m.starts_with("READY=1"));
    assert!(
        await_line(&sock, &mut seen, "READY=1"),
        "no READY=1 after the reload: {seen:?}"
    );
    // The watchdog is fed at half the interval.
    assert!(await_line(&sock, &mut seen, "WATCHDOG=1"), "{seen:?}");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
}

/// A service manager that keeps `$NOTIFY_SOCKET` but stops reading it (OpenRC 0.62/0.63's
/// supervise-daemon after READY=1): every reload sends two messages, the queue fills
/// after a few, and the event loop must neither sleep in `sendto` nor miss a download.
/// The STATUS= sent with READY=1 counts the hosts after the reload.
#[test]
fn a_notify_socket_nobody_reads_never_blocks_the_event_loop() {
    if !require_root() {
        return;
    }
    // The kernel's default queue of 10 datagrams (systemd hosts raise it to 512, which
    // 80 messages would not fill): the socket below is made with it.
    let _qlen = Sysctl::set("/proc/sys/net/unix/max_dgram_qlen", "10");
    let scratch = Scratch::tmpfs("notify-full");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts[..2], "settle: 300ms\n");
    let (mut child, pid, sock) = start_notified(&scratch, &config, &[]);
    let mut seen = Vec::new();
    assert!(await_line(&sock, &mut seen, "READY=1"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=watching 2 host directories")),
        "{seen:?}"
    );
    // A third host, then 40 reloads (80 messages) with nobody reading. The pause only
    // keeps the signals from merging into one.
    scratch.config_for(&hosts, "settle: 300ms\n");
    for _ in 0..40 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    portage_download(&hosts[0], "after-reloads.tar.gz", b"data");
    assert!(
        wait_linked(&hosts, 0, "after-reloads.tar.gz"),
        "the event loop stopped linking:\n{}",
        tree(&scratch.fs())
    );
    // Empty the queue, then one more reload: its READY=1 counts the added host.
    let mut buf = [0u8; 4096];
    while sock.recv(&mut buf).is_ok() {}
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let mut seen = Vec::new();
    assert!(await_line(&sock, &mut seen, "READY=1"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=watching 3 host directories")),
        "{seen:?}"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
}

/// Receives every datagram waiting on `sock` (read timeout set) until `needle` shows up.
fn syslog_sees(sock: &UnixDatagram, needle: &str) -> bool {
    let mut buf = [0u8; 8192];
    wait_until(DEADLINE, || {
        sock.recv(&mut buf)
            .is_ok_and(|n| String::from_utf8_lossy(&buf[..n]).contains(needle))
    })
}

/// The syslog daemon starts after distlink, then restarts (log rotation, an upgrade): its
/// socket at /dev/log appears late, then is replaced by a new one. Lines logged
/// afterwards reach each socket.
#[test]
fn syslog_lines_reach_a_restarted_syslog_daemon() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("syslog-restart");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    let dev_log = scratch.root.join("dev-log");
    // No syslog daemon yet when distlink starts (OpenRC's `use logger` only orders).
    let daemon = Daemon::start_env(
        &scratch,
        &config,
        &["--log-target", "syslog"],
        &[("DISTLINK_SYSLOG_SOCKET", dev_log.display().to_string())],
    );
    let first = UnixDatagram::bind(&dev_log).unwrap();
    first
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    portage_download(&hosts[0], "before.tar.gz", b"1");
    assert!(
        syslog_sees(&first, "before.tar.gz"),
        "nothing before the restart"
    );
    // The restart: the old socket goes, a new one is bound at the same path.
    drop(first);
    fs::remove_file(&dev_log).unwrap();
    let second = UnixDatagram::bind(&dev_log).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    portage_download(&hosts[0], "after.tar.gz", b"2");
    assert!(wait_linked(&hosts, 0, "after.tar.gz"));
    assert!(
        syslog_sees(&second, "after.tar.gz"),
        "no line reached the restarted syslog daemon:\n{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}

/// A syslog daemon that is alive but never reads: its queue fills, and then every send
/// would block. Linking, reloads and SIGTERM go on; the lines are dropped and counted.
#[test]
fn a_syslog_daemon_that_stops_reading_never_blocks_linking() {
    if !require_root() {
        return;
    }
    // See a_notify_socket_nobody_reads_never_blocks_the_event_loop: a queue of 10.
    let _qlen = Sysctl::set("/proc/sys/net/unix/max_dgram_qlen", "10");
    let scratch = Scratch::tmpfs("syslog-stuck");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    let dev_log = scratch.root.join("dev-log");
    let stuck = UnixDatagram::bind(&dev_log).unwrap();
    let daemon = Daemon::start_env(
        &scratch,
        &config,
        &["--log-target", "syslog"],
        &[("DISTLINK_SYSLOG_SOCKET", dev_log.display().to_string())],
    );
    // Each of these logs lines (debug level is on): far more than the socket queues.
    for i in 0..300 {
        portage_download(&hosts[0], format!("f{i}.tar.gz"), b"x");
    }
    for i in 0..300 {
        assert!(
            wait_linked(&hosts, 0, format!("f{i}.tar.gz")),
            "f{i} not linked: the log sink blocked the daemon"
        );
    }
    let started = std::time::Instant::now();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    drop(stuck);
}
