//! The daemon end to end on real filesystems: what gets linked, when, and what never is.

use crate::under_both_marks;
use crate::util::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

/// Settle time used where a test measures it: long enough to tell "after settle" from
/// "at once" on a loaded machine, short enough to keep the suite quick.
const SETTLE: Duration = Duration::from_millis(1000);
/// Scheduling slack allowed when comparing times taken in two processes.
const SLACK: Duration = Duration::from_millis(50);

fn settle_line() -> String {
    format!("settle: {}ms\n", SETTLE.as_millis())
}

/// No temporary name ever showed up outside the host that wrote it.
fn assert_no_temporaries_spread(seen: &[Seen], writer: usize) {
    for (dir, name, _) in seen {
        if *dir != writer {
            assert!(
                !name.ends_with(b".__download__"),
                "temporary {:?} appeared in host{dir}",
                String::from_utf8_lossy(name)
            );
        }
    }
}

fn portage_download_case(scratch: Scratch) {
    let s = setup(scratch, 4, &settle_line());
    let rec = Recorder::new(&s.hosts);
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    portage_download(&s.hosts[1], "foo-1.0.tar.gz", &content);
    assert!(
        wait_linked(&s.hosts, 1, "foo-1.0.tar.gz"),
        "not linked everywhere"
    );
    for h in &s.hosts {
        assert_eq!(fs::read(h.join("foo-1.0.tar.gz")).unwrap(), content);
        assert!(!h.join("foo-1.0.tar.gz.__download__").exists());
    }
    assert_eq!(
        fs::metadata(s.hosts[0].join("foo-1.0.tar.gz"))
            .unwrap()
            .nlink(),
        4
    );
    let seen = rec.finish();
    assert_no_temporaries_spread(&seen, 1);
    // Logged by the event loop once the worker's outcome is back, just after the links.
    assert!(
        s.daemon
            .wait_log("host1/foo-1.0.tar.gz (renamed): linked into host0, host2, host3")
    );
    let status = s.daemon.stop();
    assert!(status.success(), "exit status {status}");
    drop(s.scratch);
}

under_both_marks! {
fn portage_download_reaches_every_host_on_tmpfs(mark) {
    if !require_root() {
        return;
    }
    portage_download_case(Scratch::tmpfs("portage-tmpfs").marking(mark));
}
}

#[test]
fn portage_download_reaches_every_host_on_ext4() {
    if !require_root() {
        return;
    }
    portage_download_case(Scratch::ext4("portage-ext4", 64));
}

#[test]
fn portage_download_reaches_every_host_on_xfs() {
    if !require_root() || !require_tool("mkfs.xfs") {
        return;
    }
    portage_download_case(Scratch::xfs("portage-xfs"));
}

under_both_marks! {
fn direct_write_is_linked_only_after_settle(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("direct").marking(mark), 3, &settle_line());
    let rec = Recorder::new(&s.hosts);
    fs::write(
        s.hosts[0].join("direct.tar.gz"),
        b"written under its final name",
    )
    .unwrap();
    let written = Instant::now();
    assert!(wait_linked(&s.hosts, 0, "direct.tar.gz"));
    let appeared = rec.first(1, b"direct.tar.gz").expect("recorded in host1");
    assert!(
        appeared + SLACK >= written + SETTLE,
        "linked {:?} after the write, before the settle time {SETTLE:?}",
        appeared - written
    );
    // Logged by the event loop once the worker's outcome is back, just after the links.
    assert!(
        s.daemon
            .wait_log("host0/direct.tar.gz (settled): linked into host1, host2")
    );
}
}

under_both_marks! {
fn half_written_file_with_a_pause_is_not_linked_early(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("pause").marking(mark), 3, &settle_line());
    let rec = Recorder::new(&s.hosts);
    let half = vec![7u8; 64 * 1024];

    // Under its final name, pausing for less than the settle time.
    let mut f = fs::File::create(s.hosts[0].join("slow.tar.gz")).unwrap();
    f.write_all(&half).unwrap();
    std::thread::sleep(SETTLE * 6 / 10); // the writer's pause, not synchronisation
    f.write_all(&half).unwrap();
    drop(f);
    let done = Instant::now();
    assert!(wait_linked(&s.hosts, 0, "slow.tar.gz"));
    let appeared = rec.first(2, b"slow.tar.gz").unwrap();
    assert!(
        appeared + SLACK >= done + SETTLE,
        "linked {:?} after the last write",
        appeared - done
    );
    assert_eq!(
        fs::metadata(s.hosts[2].join("slow.tar.gz")).unwrap().len(),
        128 * 1024
    );

    // Portage-style, pausing (closed!) for longer than the settle time, as an interrupted
    // and resumed `wget -c` does: nothing until the rename.
    let tmp = s.hosts[1].join("resumed.tar.gz.__download__");
    fs::write(&tmp, &half).unwrap();
    std::thread::sleep(SETTLE * 3 / 2); // the writer's pause
    fs::OpenOptions::new()
        .append(true)
        .open(&tmp)
        .unwrap()
        .write_all(&half)
        .unwrap();
    let renamed = Instant::now();
    fs::rename(&tmp, s.hosts[1].join("resumed.tar.gz")).unwrap();
    assert!(wait_linked(&s.hosts, 1, "resumed.tar.gz"));
    let appeared = rec.first(0, b"resumed.tar.gz").unwrap();
    assert!(appeared >= renamed);
    let seen = rec.finish();
    assert_no_temporaries_spread(&seen, 1);
    assert_eq!(
        fs::metadata(s.hosts[0].join("resumed.tar.gz"))
            .unwrap()
            .len(),
        128 * 1024
    );
}
}

under_both_marks! {
fn deleting_in_one_host_leaves_the_others(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("delete").marking(mark), 3, &settle_line());
    portage_download(&s.hosts[0], "keep-1.tar.gz", b"keep");
    assert!(wait_linked(&s.hosts, 0, "keep-1.tar.gz"));
    fs::remove_file(s.hosts[1].join("keep-1.tar.gz")).unwrap();
    // Events are handled in order: once a later download is linked, the deletion has
    // been seen too.
    portage_download(&s.hosts[2], "barrier.tar.gz", b"b");
    assert!(wait_linked(&s.hosts, 2, "barrier.tar.gz"));
    assert!(
        !s.hosts[1].join("keep-1.tar.gz").exists(),
        "deleted name came back"
    );
    assert_eq!(fs::read(s.hosts[0].join("keep-1.tar.gz")).unwrap(), b"keep");
    assert_eq!(fs::read(s.hosts[2].join("keep-1.tar.gz")).unwrap(), b"keep");
    assert_eq!(
        fs::metadata(s.hosts[0].join("keep-1.tar.gz"))
            .unwrap()
            .nlink(),
        2
    );
}
}

under_both_marks! {
fn odd_names_are_linked_intact(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("names").marking(mark), 3, &settle_line());
    let long = [vec![b'a'; 248], b".tar.gz".to_vec()].concat();
    assert_eq!(long.len(), 255);
    let odd: Vec<Vec<u8>> = vec![
        b"with space.tar.gz".to_vec(),
        b"it's \"quoted\" `x` $(y).tar.gz".to_vec(),
        b"new\nline.tar.gz".to_vec(),
        b"-rf".to_vec(),
        b"--leading-dash.tar.gz".to_vec(),
        b"\xff\xfe-not-utf8\x80.tar.gz".to_vec(),
        b"back\\slash*?[].tar.gz".to_vec(),
        long,
    ];
    for (i, name) in odd.iter().enumerate() {
        // Temporary names must fit too: rename from a short one, as a client might.
        let tmp = s.hosts[0].join(format!("t{i}.__download__"));
        fs::write(&tmp, name).unwrap();
        fs::rename(&tmp, s.hosts[0].join(OsStr::from_bytes(name))).unwrap();
    }
    // One odd name written directly, through the settle path.
    fs::write(
        s.hosts[1].join(OsStr::from_bytes(b"direct \n\xff name")),
        b"d",
    )
    .unwrap();
    for name in &odd {
        assert!(
            wait_linked(&s.hosts, 0, OsStr::from_bytes(name)),
            "{:?} not linked",
            String::from_utf8_lossy(name)
        );
        assert_eq!(
            &fs::read(s.hosts[2].join(OsStr::from_bytes(name))).unwrap(),
            name
        );
    }
    assert!(wait_linked(
        &s.hosts,
        1,
        OsStr::from_bytes(b"direct \n\xff name")
    ));
    // The log shows names escaped, one event per line (logged by the event loop once
    // each outcome is back: waited for, not read at once).
    for line in [
        "host0/new\\nline.tar.gz (renamed)",
        "host0/\\xff\\xfe-not-utf8\\x80.tar.gz (renamed)",
    ] {
        assert!(s.daemon.wait_log(line), "{line}: {}", s.daemon.log());
    }
    assert_eq!(names(&s.hosts[0]).len(), odd.len() + 1);
}
}

under_both_marks! {
fn only_regular_files_with_final_names_are_linked(mark) {
    if !require_root() {
        return;
    }
    // One worker: jobs run in order, so once the barrier files are linked, everything
    // created before them has been decided.
    let s = setup(
        Scratch::tmpfs("kinds").marking(mark),
        3,
        &format!("{}workers: 1\nignore: ['*.part']\n", settle_line()),
    );
    let h0 = &s.hosts[0];
    std::os::unix::fs::symlink("/etc/passwd", h0.join("symlink.tar.gz")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", h0.join("link.__download__")).unwrap();
    fs::rename(
        h0.join("link.__download__"),
        h0.join("renamed-symlink.tar.gz"),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &h0.join("fifo.tar.gz"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fs::create_dir(h0.join("git3-src")).unwrap();
    fs::write(
        h0.join("git3-src").join("inner.tar.gz"),
        b"in a subdirectory",
    )
    .unwrap();
    fs::create_dir(h0.join("dir.__download__")).unwrap();
    fs::rename(h0.join("dir.__download__"), h0.join("renamed-dir.tar.gz")).unwrap();
    fs::write(h0.join("setuid.tar.gz"), b"suid").unwrap();
    fs::set_permissions(h0.join("setuid.tar.gz"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(h0.join(".hidden.tar.gz.Xa12b"), b"rsync temporary").unwrap();
    fs::write(h0.join(".__portage_test_write__"), b"").unwrap();
    fs::write(h0.join("bad.tar.gz._checksum_failure_.ab12cd34"), b"bad").unwrap();
    fs::write(h0.join("unfinished.tar.gz.__download__"), b"partial").unwrap();
    fs::write(h0.join("browser.part"), b"ignored by config").unwrap();

    fs::write(h0.join("barrier-direct.tar.gz"), b"regular").unwrap();
    portage_download(h0, "barrier-renamed.tar.gz", b"regular");
    assert!(wait_linked(&s.hosts, 0, "barrier-direct.tar.gz"));
    assert!(wait_linked(&s.hosts, 0, "barrier-renamed.tar.gz"));
    for h in &s.hosts[1..] {
        let mut want = vec![
            b"barrier-direct.tar.gz".to_vec(),
            b"barrier-renamed.tar.gz".to_vec(),
        ];
        want.sort();
        assert_eq!(names(h), want, "unexpected names in {}", h.display());
    }
    for line in [
        "host0/renamed-symlink.tar.gz: not linked: a symlink",
        "host0/setuid.tar.gz: not linked: setuid/setgid file",
    ] {
        assert!(s.daemon.wait_log(line), "{line}: {}", s.daemon.log());
    }
}
}

under_both_marks! {
fn a_different_file_under_the_same_name_is_left_alone(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("conflict").marking(mark), 3, &settle_line());
    fs::write(
        s.hosts[1].join("clash.tar.gz.__download__"),
        b"host1's own copy",
    )
    .unwrap();
    fs::rename(
        s.hosts[1].join("clash.tar.gz.__download__"),
        s.hosts[1].join("clash.tar.gz"),
    )
    .unwrap();
    assert!(wait_linked(&s.hosts, 1, "clash.tar.gz"));
    // host0 gets a different file under the same name (as after its own download).
    fs::remove_file(s.hosts[0].join("clash.tar.gz")).unwrap();
    portage_download(&s.hosts[0], "clash.tar.gz", b"host0's different copy");
    assert!(s.daemon.wait_log(
        "conflict: host1/clash.tar.gz is another file than host0/clash.tar.gz (different bytes, or not complete yet); left alone"
    ));
    assert!(s.daemon.wait_log(
        "conflict: host2/clash.tar.gz is another file than host0/clash.tar.gz (different bytes, or not complete yet); left alone"
    ));
    assert_eq!(
        fs::read(s.hosts[1].join("clash.tar.gz")).unwrap(),
        b"host1's own copy"
    );
    assert_eq!(
        fs::read(s.hosts[2].join("clash.tar.gz")).unwrap(),
        b"host1's own copy"
    );
    assert_eq!(
        fs::read(s.hosts[0].join("clash.tar.gz")).unwrap(),
        b"host0's different copy"
    );
}
}

under_both_marks! {
fn sixteen_hosts_each_downloading(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("sixteen").marking(mark), 16, &settle_line());
    let rec = Recorder::new(&s.hosts);
    for (i, h) in s.hosts.iter().enumerate() {
        for j in 0..5 {
            portage_download(
                h,
                format!("pkg-{i}-{j}.tar.xz"),
                format!("{i}/{j}").as_bytes(),
            );
        }
    }
    for i in 0..16 {
        for j in 0..5 {
            assert!(
                wait_linked(&s.hosts, i, format!("pkg-{i}-{j}.tar.xz")),
                "pkg-{i}-{j}"
            );
        }
    }
    for h in &s.hosts {
        assert_eq!(names(h).len(), 80);
    }
    // Each host saw only its own temporaries.
    for (d, name, _) in rec.finish() {
        if name.ends_with(b".__download__") {
            assert!(
                name.starts_with(format!("pkg-{d}-").as_bytes()),
                "{:?} in host{d}",
                String::from_utf8_lossy(&name)
            );
        }
    }
    let status = s.daemon.stop();
    assert!(status.success());
}
}

under_both_marks! {
fn sigterm_finishes_the_queued_links_and_exits_zero(mark) {
    if !require_root() {
        return;
    }
    // One worker and 16 hosts: the renames outrun the linking, so jobs are still queued
    // when SIGTERM arrives.
    let s = setup(
        Scratch::tmpfs("sigterm").marking(mark),
        16,
        &format!("{}workers: 1\n", settle_line()),
    );
    let names: Vec<String> = (0..400).map(|i| format!("queued-{i:03}.tar.gz")).collect();
    for n in &names {
        fs::write(s.hosts[0].join(format!("{n}.__download__")), b"q").unwrap();
    }
    for n in &names {
        fs::rename(
            s.hosts[0].join(format!("{n}.__download__")),
            s.hosts[0].join(n),
        )
        .unwrap();
    }
    let log_path = s.daemon.log_path();
    let status = s.daemon.stop();
    let log = fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    // Every file the daemon had taken on before the signal is in every host: queued
    // jobs were finished, not dropped.
    let taken: Vec<&String> = names
        .iter()
        .filter(|n| log.contains(&format!("host0/{n}: complete (Renamed)")))
        .collect();
    assert!(!taken.is_empty(), "no job before SIGTERM:\n{log}");
    for n in &taken {
        assert!(
            linked_everywhere(&s.hosts[0].join(n), &s.hosts, n.as_ref()),
            "{n} taken on but not finished:\n{log}"
        );
    }
    let queued = log
        .lines()
        .find(|l| l.contains("SIGTERM: finishing"))
        .unwrap_or("");
    eprintln!(
        "{} of {} taken on before SIGTERM, all finished; {queued}",
        taken.len(),
        names.len()
    );
    // SIGINT (Ctrl-C in the foreground) too.
    let config = s.scratch.config_for(&s.hosts, &settle_line());
    let d = Daemon::start(&s.scratch, &config);
    assert_eq!(
        d.stop_with(nix::sys::signal::Signal::SIGINT).code(),
        Some(0)
    );
}
}

under_both_marks! {
fn link_errors_are_logged_and_the_daemon_carries_on(mark) {
    if !require_root() {
        return;
    }
    // tmpfs counts every extra hardlink against nr_inodes: with 12, the links run out.
    let mut scratch = Scratch::new("enospc").marking(mark);
    let fs_ = scratch.mount_tmpfs_with("fs", "size=16m,nr_inodes=12");
    assert_eq!(fs_, scratch.fs());
    let s = setup(scratch, 3, &settle_line());
    let mut fill = Vec::new();
    for i in 0.. {
        let p = s.hosts[0].join(format!(".fill{i}"));
        if fs::write(&p, b"").is_err() {
            break;
        }
        fill.push(p);
    }
    fs::remove_file(fill.pop().unwrap()).unwrap();
    portage_download(&s.hosts[0], "nospace.tar.gz", b"x");
    assert!(
        s.daemon
            .wait_log("failed to link host0/nospace.tar.gz -> host1/nospace.tar.gz: ENOSPC")
    );
    assert!(s.daemon.wait_log("(no room for another directory entry)"));
    for p in fill {
        fs::remove_file(p).unwrap();
    }
    portage_download(&s.hosts[1], "after.tar.gz", b"y");
    assert!(
        wait_linked(&s.hosts, 1, "after.tar.gz"),
        "the daemon did not carry on"
    );
}
}
