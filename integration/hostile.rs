//! Hostile input and admin mistakes: configurations that are not files, huge host maps,
//! every host directory gone at a reload. The daemon refuses clearly, never blocks and
//! never crashes.

use crate::util::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `distlink ARGS`, killing it (and failing) if it has not answered by the deadline.
fn answers(args: &[&str], config: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_until(DEADLINE, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        panic!("distlink {args:?} --config {} hangs", config.display());
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_configuration_that_is_not_a_regular_file_is_refused_at_once() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("config-kinds");
    let fifo = scratch.root.join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let huge = scratch.root.join("huge.yaml");
    let mut text = String::from("hosts:\n");
    while text.len() <= 1 << 20 {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    fs::write(&huge, text).unwrap();
    for (config, why) in [
        (fifo.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
        (scratch.root.as_path(), "not a regular file"),
        (huge.as_path(), "a configuration is at most 1048576"),
    ] {
        for command in [&["check"][..], &["run"][..]] {
            let out = answers(command, config);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{command:?} {config:?}: {stderr}"
            );
            assert!(stderr.contains(why), "{command:?} {config:?}: {stderr}");
        }
    }
}

#[test]
fn a_fifo_swapped_in_before_sighup_never_freezes_the_event_loop() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("config-fifo-reload"), 2, "settle: 300ms\n");
    let config = s.scratch.root.join("distlink.yaml");
    let fifo = s.scratch.root.join("new.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fs::rename(&fifo, &config).unwrap();
    s.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        s.daemon
            .wait_log("reload failed, keeping the running configuration")
    );
    assert!(
        s.daemon.log().contains("not a regular file"),
        "{}",
        s.daemon.log()
    );
    portage_download(&s.hosts[0], "after-fifo.tar.gz", b"x");
    assert!(wait_linked(&s.hosts, 0, "after-fifo.tar.gz"));
    assert!(s.daemon.stop().success());
}

/// A `hosts:` map far over the limit is refused before any check between pairs of hosts
/// (which took seconds for 6,000 entries, and stalled fan-outs as long on a reload).
#[test]
fn a_huge_host_map_is_refused_before_any_pairwise_check() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("many-hosts"), 2, "settle: 300ms\n");
    let mut text = String::from("hosts:\n");
    for i in 0..30_000 {
        text.push_str(&format!("  h{i}: /x/h{i}\n"));
    }
    let config = s.scratch.config(&text);
    let out = answers(&["check"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("at most 1024 hosts are supported, found 30000"),
        "{stderr}"
    );
    // The same file on a reload: refused, and linking goes on.
    s.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        s.daemon
            .wait_log("reload failed, keeping the running configuration")
    );
    portage_download(&s.hosts[0], "after-huge.tar.gz", b"x");
    assert!(wait_linked(&s.hosts, 0, "after-huge.tar.gz"));
    assert!(s.daemon.stop().success());
}

/// eclean-dist emptied and removed every host directory, then the admin reloads: the
/// daemon keeps running with no host present and picks the directories up again.
#[test]
fn sighup_with_every_host_directory_gone_keeps_running() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("all-gone"), 2, "settle: 300ms\n");
    for h in &s.hosts {
        fs::remove_dir(h).unwrap();
    }
    assert!(wait_until(DEADLINE, || s
        .daemon
        .log()
        .matches("is gone")
        .count()
        == 2));
    s.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(DEADLINE, || s
        .daemon
        .log()
        .matches("watching 0 hosts")
        .count()
        == 1));
    for h in &s.hosts {
        fs::create_dir(h).unwrap();
    }
    assert!(wait_until(DEADLINE, || s
        .daemon
        .log()
        .matches("is back")
        .count()
        == 2));
    portage_download(&s.hosts[0], "back.tar.gz", b"x");
    assert!(
        wait_linked(&s.hosts, 0, "back.tar.gz"),
        "{}",
        s.daemon.log()
    );
    let log = s.daemon.log();
    assert!(
        !log.contains("panicked") && !log.contains("refused"),
        "{log}"
    );
    assert!(s.daemon.stop().success());
}

/// Opening a completed file fails for another reason than its absence (here EMFILE: the
/// daemon's open-file limit is lowered to the descriptors it has open): an error with its errno,
/// counted, not a silent "gone".
#[test]
fn a_candidate_that_cannot_be_opened_is_an_error() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("emfile"), 2, "settle: 300ms\n");
    assert!(s.daemon.wait_log("reconcile (start-up) done"));
    let pid = s.daemon.pid();
    // The limit caps descriptor numbers: set it to the lowest free one.
    let open: Vec<usize> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    let prlimit = |n: usize| {
        let ok = Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={n}:")) // the soft limit only
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit");
    };
    prlimit(lowest_free);
    portage_download(&s.hosts[0], "no-fd.tar.gz", b"x");
    assert!(
        s.daemon
            .wait_log("host0/no-fd.tar.gz: cannot open it to link it: EMFILE"),
        "{}",
        s.daemon.log()
    );
    let errors = || {
        let out = Command::new(BIN)
            .args(["status", "--config"])
            .arg(s.scratch.root.join("distlink.yaml"))
            .output()
            .unwrap();
        // At least one: the failed open is retried (and fails again) until the limit
        // is raised.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split(" errors,")
            .next()
            .and_then(|before| before.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1)
    };
    assert!(wait_until(DEADLINE, errors), "the error was not counted");
    prlimit(1024);
    portage_download(&s.hosts[0], "fd-again.tar.gz", b"y");
    assert!(wait_linked(&s.hosts, 0, "fd-again.tar.gz"));
    assert!(s.daemon.stop().success());
}

/// The status file and the textfile are written as root: never through a symlink, never
/// in a directory another user could plant one in.
#[test]
fn status_files_are_never_written_through_planted_paths() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("planted");
    let hosts = scratch.hosts(2);
    let victim = scratch.root.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let start = |extra: &str| {
        let config = scratch.config_for(&hosts, extra);
        answers(&["run"], &config)
    };
    let refuse = |extra: &str, why: &str| {
        let out = start(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {stderr}");
        assert!(stderr.contains(why), "{extra}: {stderr}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    };
    // A directory others can write (a client's, /tmp): refused.
    let open_dir = scratch.root.join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink(&victim, open_dir.join("status")).unwrap();
    refuse(
        &format!("state_file: {}/status\n", open_dir.display()),
        "writable by nobody else",
    );
    // A directory of another user: refused.
    let users = scratch.root.join("users");
    fs::create_dir(&users).unwrap();
    std::os::unix::fs::chown(&users, Some(4242), Some(4242)).unwrap();
    refuse(
        &format!("state_file: {}/status\n", users.display()),
        "owned by uid 4242",
    );
    // A symlink at the status file's name in root's own directory: refused.
    let own = scratch.root.join("own");
    fs::create_dir(&own).unwrap();
    std::os::unix::fs::symlink(&victim, own.join("status")).unwrap();
    refuse(
        &format!("state_file: {}/status\n", own.display()),
        "is a symlink",
    );
    // A symlink at the textfile's name is replaced, never followed.
    std::os::unix::fs::symlink(&victim, own.join("distlink.prom")).unwrap();
    let config = scratch.config_for(
        &hosts,
        &format!(
            "state_file: {}/run/status\nprometheus_textfile: {}/distlink.prom\n",
            scratch.root.display(),
            own.display()
        ),
    );
    let d = Daemon::start(&scratch, &config);
    assert!(wait_until(DEADLINE, || fs::read_to_string(
        own.join("distlink.prom")
    )
    .is_ok_and(|t| t.contains("distlink_links_total"))));
    assert!(
        !fs::symlink_metadata(own.join("distlink.prom"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(d.stop().success());
}

/// A second daemon on the same configuration refuses to start and names the first.
#[test]
fn a_second_daemon_on_the_same_configuration_is_refused() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("two-daemons"), 2, "settle: 300ms\n");
    let out = answers(&["run"], &s.scratch.root.join("distlink.yaml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another distlink (pid {}) is already running",
            s.daemon.pid()
        )),
        "{stderr}"
    );
    // The first one is undisturbed, and its status file still its own.
    portage_download(&s.hosts[0], "one-daemon.tar.gz", b"x");
    assert!(wait_linked(&s.hosts, 0, "one-daemon.tar.gz"));
    let status = fs::read_to_string(s.scratch.root.join("run/status")).unwrap();
    assert!(
        status.contains(&format!("pid={}\n", s.daemon.pid())),
        "{status}"
    );
    assert!(s.daemon.stop().success());
}

/// A client renames hundreds of FIFOs into final names: each is refused, but the log
/// shows only a few lines a second of that kind and then one summary, and another host's
/// download is linked meanwhile.
#[test]
fn per_file_lines_are_limited_per_kind() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("fifo-flood"), 3, "settle: 300ms\n");
    for i in 0..300 {
        let tmp = s.hosts[0].join(format!("fifo{i}.tmp"));
        nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        fs::rename(&tmp, s.hosts[0].join(format!("fifo{i}.tar.gz"))).unwrap();
    }
    portage_download(&s.hosts[1], "real.tar.gz", b"x");
    assert!(wait_linked(&s.hosts, 1, "real.tar.gz"));
    assert!(
        s.daemon
            .wait_log("more lines like this one in the last burst (not shown)"),
        "{}",
        s.daemon.log()
    );
    let log = s.daemon.log();
    let shown = log.matches("not linked: a FIFO").count();
    // The summary quotes one of them; the rest are at most a few windows' worth.
    assert!(shown < 100, "{shown} FIFO lines:\n{log}");
    assert!(s.daemon.stop().success());
}

/// Issue 11.5: what downloaders add to Portage's `.__download__` (aria2's control file
/// is written only every 60 s, so it is quiet longer than `settle`) and aria2's control
/// file beside a download under its final name are never linked.
#[test]
fn downloaders_temporaries_are_never_linked() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("temporaries"), 2, "settle: 200ms\n");
    assert!(s.daemon.wait_log("reconcile (start-up) done"));
    let temporaries = [
        "foo-1.0.tar.gz.__download__.aria2",
        "foo-1.0.tar.gz.__download__.st",
        "foo-1.0.tar.gz.__download__.1",
        "bar-2.0.tar.xz.aria2",
    ];
    for t in temporaries {
        fs::write(s.hosts[0].join(t), b"control").unwrap();
    }
    // Written directly after them, so its quiet period ends after theirs: once it is
    // linked, theirs have been decided.
    fs::write(s.hosts[0].join("marker.tar.gz"), b"m").unwrap();
    assert!(
        wait_linked(&s.hosts, 0, "marker.tar.gz"),
        "{}",
        s.daemon.log()
    );
    for t in temporaries {
        assert!(!s.hosts[1].join(t).exists(), "{t} was linked");
    }
    assert!(s.daemon.stop().success());
}

/// A download aria2 (`-o NAME`) or axel writes under its final name is not linked while
/// their control file (`NAME.aria2`, `NAME.st`) is beside it, however long it is quiet
/// (a stalled download), nor is axel's state file itself; it is once the file is gone.
#[test]
fn a_download_with_its_control_file_beside_it_waits() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("control-files"), 2, "settle: 200ms\n");
    assert!(s.daemon.wait_log("reconcile (start-up) done"));
    for (name, control) in [("a.iso", "a.iso.aria2"), ("b.iso", "b.iso.st")] {
        fs::write(s.hosts[0].join(name), b"partial").unwrap();
        fs::write(s.hosts[0].join(control), b"state").unwrap();
    }
    // Several settle periods: looked at again each time, never linked.
    for name in ["a.iso", "b.iso"] {
        let waiting = format!("host0/{name}: not complete yet");
        assert!(wait_until(DEADLINE, || s
            .daemon
            .log()
            .matches(&waiting)
            .count()
            >= 3));
        assert!(
            !s.hosts[1].join(name).exists(),
            "{name} linked mid-download"
        );
    }
    assert!(
        !s.hosts[1].join("b.iso.st").exists(),
        "axel's state file linked"
    );
    fs::remove_file(s.hosts[0].join("a.iso.aria2")).unwrap();
    fs::remove_file(s.hosts[0].join("b.iso.st")).unwrap();
    assert!(wait_linked(&s.hosts, 0, "a.iso"));
    assert!(wait_linked(&s.hosts, 0, "b.iso"));
    assert!(s.daemon.stop().success());
}

/// A client creating and deleting names without end: fanotify merges a name's create,
/// close and delete into one event, and a name that is gone when it is handled is not
/// kept waiting for its quiet period (it was, for `settle`, 600 s here).
#[test]
fn names_created_and_deleted_are_not_kept_waiting() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("churn"), 2, "settle: 600s\n");
    assert!(s.daemon.wait_log("reconcile (start-up) done"));
    for i in 0..5000 {
        let p = s.hosts[0].join(format!("churn-{i}.tar.gz"));
        fs::write(&p, b"").unwrap();
        fs::remove_file(&p).unwrap();
    }
    // One file really waiting, then a rename: once it is linked, every event before it
    // has been handled.
    fs::write(s.hosts[0].join("waiting.tar.gz"), b"w").unwrap();
    portage_download(&s.hosts[0], "after.tar.gz", b"x");
    assert!(
        wait_linked(&s.hosts, 0, "after.tar.gz"),
        "{}",
        s.daemon.log()
    );
    let handled = distlink::status::now();
    let status = s.scratch.root.join("run/status");
    let mut snapshot = None;
    assert!(
        wait_until(DEADLINE, || {
            let text = fs::read_to_string(&status).unwrap_or_default();
            let snap = distlink::status::Snapshot::parse(&text);
            let fresh = snap.updated > handled;
            snapshot = Some(snap);
            fresh
        }),
        "the status file was not rewritten"
    );
    assert_eq!(
        snapshot.unwrap().settling,
        1,
        "names gone are still waiting"
    );
    assert!(s.daemon.stop().success());
}
