//! Every filesystem a Gentoo server keeps distfiles on: btrfs at the top level, in a
//! subvolume and mounted with `subvol=`, under the mark strategy `auto` picks there
//! (see `fanotify.rs`), with both strategies forced where both work.

use crate::util::*;
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SETTLE: &str = "settle: 300ms\nunlimited_queue: false\n";

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// The marks of the daemon's fanotify group, from `/proc/PID/fdinfo`: inode numbers of
/// inode marks, and how many filesystem (`sdev` only) and mount marks.
struct Marks {
    inodes: Vec<u64>,
    filesystems: usize,
    mounts: usize,
}

fn marks_of(pid: i32) -> Marks {
    let mut m = Marks {
        inodes: Vec::new(),
        filesystems: 0,
        mounts: 0,
    };
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let target = fs::read_link(fd.path()).unwrap_or_default();
        if target != Path::new("anon_inode:[fanotify]") {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("fanotify ") else {
                continue;
            };
            if let Some(ino) = rest.strip_prefix("ino:") {
                let hex = ino.split_whitespace().next().unwrap();
                m.inodes.push(u64::from_str_radix(hex, 16).unwrap());
            } else if rest.starts_with("mnt_id:") {
                m.mounts += 1;
            } else if rest.starts_with("sdev:") {
                m.filesystems += 1;
            }
        }
    }
    m.inodes.sort_unstable();
    m
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// What directory marks must be: the present host directories and their parent, and
/// nothing else (events from anywhere else on the filesystem never arrive).
fn assert_marks(pid: i32, marking: &str, dirs: &[PathBuf]) {
    let m = marks_of(pid);
    assert_eq!(m.mounts, 0, "a mount mark");
    if marking == "filesystem" {
        assert_eq!((m.filesystems, m.inodes.len()), (1, 0), "{:?}", m.inodes);
        return;
    }
    let mut want: Vec<u64> = dirs.iter().map(|d| ino(d)).collect();
    want.push(ino(dirs[0].parent().unwrap()));
    want.sort_unstable();
    want.dedup();
    // Exactly these: a directory that left the set is unmarked (no leak).
    assert_eq!(m.filesystems, 0, "a filesystem mark beside directory marks");
    assert_eq!(m.inodes, want, "marked inodes");
}

/// Every promise the daemon keeps, on one filesystem layout: `auto` must pick
/// `expect`.
fn every_promise(scratch: Scratch, expect: &str) {
    let hosts = scratch.hosts(4);
    let three = hosts[..3].to_vec();
    let config = scratch.config_for(&three, SETTLE);

    let (code, text) = check(&config);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("marks: {expect} (")), "{text}");

    // The queue limit is read when the group is created: low, for the overflow below.
    let d = {
        let _limit = Sysctl::set(distlink::fanotify::MAX_QUEUED_EVENTS, "64");
        Daemon::start(&scratch, &config)
    };
    assert!(
        d.wait_log(&format!("fanotify marks: {expect} (")),
        "{}",
        d.log()
    );
    assert!(d.wait_log("reconcile (start-up) done"));
    assert_marks(d.pid(), expect, &three);
    let status = || status(&config).1;
    assert!(
        wait_until(DEADLINE, || status()
            .contains(&format!("fanotify marks: {expect} ("))),
        "{}",
        status()
    );

    // A Portage download, and a direct write once quiet.
    portage_download(&hosts[0], "portage.tar.gz", b"portage");
    assert!(wait_linked(&three, 0, "portage.tar.gz"));
    fs::write(hosts[1].join("direct.tar.gz"), b"direct").unwrap();
    assert!(wait_linked(&three, 1, "direct.tar.gz"));

    // An overflow is followed by a rescan that links everything.
    let names: Vec<String> = (0..1500).map(|i| format!("burst-{i:04}.tar.gz")).collect();
    for n in &names {
        fs::write(hosts[0].join(format!("{n}.__download__")), b"x").unwrap();
    }
    for n in &names {
        fs::rename(hosts[0].join(format!("{n}.__download__")), hosts[0].join(n)).unwrap();
    }
    assert!(d.wait_log("max_queued_events = 64, was hit"), "no overflow");
    assert!(d.wait_log("reconcile (queue overflow) done"));
    for n in &names {
        assert!(
            wait_linked(&three, 0, n),
            "{n} not linked after the overflow"
        );
    }

    // host2 cleans a file, then eclean-dist removes its emptied directory; the next
    // fetch re-creates it (a new inode, which needs its own mark).
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("portage.tar.gz")
    )
    .len()
        == 3));
    for e in fs::read_dir(&hosts[2]).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    fs::remove_dir(&hosts[2]).unwrap();
    assert!(d.wait_log("is gone"));
    fs::create_dir(&hosts[2]).unwrap();
    assert!(d.wait_log("is back"));
    portage_download(&hosts[2], "from-host2.tar.gz", b"own");
    assert!(
        wait_linked(&three, 2, "from-host2.tar.gz"),
        "the re-created directory's download was not fanned out"
    );
    // host2 downloads again what it had cleaned: merged into the pool's inode once the
    // pool's copy has been quiet for the settle time (host2's unlink changed its ctime).
    let pool = fs::metadata(hosts[0].join("portage.tar.gz")).unwrap().ino();
    assert!(quiet_for(
        &[hosts[0].join("portage.tar.gz")],
        std::time::Duration::from_millis(350)
    ));
    portage_download(&hosts[2], "portage.tar.gz", b"portage");
    assert!(
        wait_until(DEADLINE, || fs::metadata(hosts[2].join("portage.tar.gz"))
            .is_ok_and(|m| m.ino() == pool)),
        "not merged: {}",
        d.log()
    );
    assert_marks(d.pid(), expect, &three);

    // SIGHUP adds host3: it gets the pool, and its own downloads fan out.
    scratch.config_for(&hosts, SETTLE);
    d.signal(Signal::SIGHUP);
    assert!(d.wait_log("hosts added: host3"));
    let not_host2 = [hosts[0].clone(), hosts[1].clone(), hosts[3].clone()];
    assert!(
        wait_linked(&not_host2, 0, "direct.tar.gz"),
        "the added host did not get the pool"
    );
    assert!(!exists(&hosts[2].join("direct.tar.gz")), "deletion undone");
    portage_download(&hosts[3], "from-host3.tar.gz", b"added");
    assert!(
        wait_linked(&hosts, 3, "from-host3.tar.gz"),
        "the added host's download was not fanned out"
    );
    assert_marks(d.pid(), expect, &hosts);

    // A host renamed in the configuration (same directory) keeps its directory's mark.
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("  host3:", "  renamed3:");
    fs::write(&config, text).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(d.wait_log("hosts added: renamed3"));
    portage_download(&hosts[3], "after-rename.tar.gz", b"renamed");
    assert!(
        wait_linked(&hosts, 3, "after-rename.tar.gz"),
        "the renamed host's directory lost its mark"
    );
    assert_marks(d.pid(), expect, &hosts);
    // Back to its old name (and number, so its history holds for the restart below).
    scratch.config_for(&hosts, SETTLE);
    d.signal(Signal::SIGHUP);
    assert!(d.wait_log("hosts added: host3"));
    assert!(d.stop().success());

    // Catch-up after a restart: a download made while down is linked, a deletion made
    // while down stays, and the file host2 cleaned never comes back.
    portage_download(&hosts[1], "while-down.tar.gz", b"missed");
    fs::remove_file(hosts[3].join("direct.tar.gz")).unwrap();
    assert!(all_quiet(&hosts, QUIET));
    let d = Daemon::start(&scratch, &config);
    assert!(wait_linked(&hosts, 1, "while-down.tar.gz"));
    assert!(d.start_up_decided());
    fs::write(hosts[0].join("barrier.tar.gz"), b"b").unwrap();
    assert!(wait_linked(&hosts, 0, "barrier.tar.gz"));
    assert!(!exists(&hosts[3].join("direct.tar.gz")), "deletion undone");
    assert!(!exists(&hosts[2].join("direct.tar.gz")), "deletion undone");
    assert!(d.stop().success());
}

fn btrfs() -> bool {
    require_root() && require_tool("mkfs.btrfs") && require_tool("btrfs")
}

#[test]
fn btrfs_top_level_uses_the_filesystem_mark() {
    if btrfs() {
        every_promise(Scratch::btrfs("btrfs-top"), "filesystem");
    }
}

#[test]
fn btrfs_top_level_with_directory_marks() {
    if btrfs() {
        every_promise(
            Scratch::btrfs("btrfs-top-dirs").marking("directories"),
            "directories",
        );
    }
}

#[test]
fn btrfs_subvolume_uses_directory_marks() {
    if btrfs() {
        every_promise(Scratch::btrfs_subvolume("btrfs-subvol"), "directories");
    }
}

#[test]
fn btrfs_mounted_with_subvol_uses_directory_marks() {
    if btrfs() {
        every_promise(
            Scratch::btrfs_mounted_subvolume("btrfs-subvol-mount"),
            "directories",
        );
    }
}

#[test]
fn a_forced_filesystem_mark_on_a_subvolume_says_what_to_do() {
    if !btrfs() {
        return;
    }
    let scratch = Scratch::btrfs_subvolume("btrfs-forced").marking("filesystem");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, SETTLE);
    let (code, text) = check(&config);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("btrfs subvolume") && text.contains("mark: directories"),
        "{text}"
    );
}

#[test]
fn ext4_xfs_and_tmpfs_use_the_filesystem_mark_by_default() {
    if !require_root() {
        return;
    }
    for scratch in [
        Scratch::tmpfs("auto-tmpfs"),
        Scratch::ext4("auto-ext4", 32),
        Scratch::xfs("auto-xfs"),
    ] {
        let hosts = scratch.hosts(2);
        let (code, text) = check(&scratch.config_for(&hosts, SETTLE));
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("marks: filesystem (mark: auto; the kernel granted"),
            "{text}"
        );
    }
}
