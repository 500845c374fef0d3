//! One copy of each distfile: byte-identical copies under one name are merged into one
//! inode (see `merge.rs`); different bytes are left alone.

use crate::util::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SETTLE: &str = "settle: 300ms\n";
/// Longer than the race test's settle of 10ms.
const RACE_QUIET: std::time::Duration = std::time::Duration::from_millis(20);

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// Waits until every host in `hosts` holds `name` as one inode.
fn one_inode(hosts: &[PathBuf], name: &str) -> bool {
    wait_until(DEADLINE, || {
        let inos: Vec<u64> = hosts
            .iter()
            .filter_map(|h| fs::metadata(h.join(name)).ok().map(|m| m.ino()))
            .collect();
        inos.len() == hosts.len() && inos.iter().all(|&i| i == inos[0])
    })
}

fn no_temporaries(hosts: &[PathBuf]) {
    for h in hosts {
        for e in fs::read_dir(h).unwrap() {
            let n = e.unwrap().file_name();
            assert!(
                !n.to_string_lossy().starts_with(".distlink-merge"),
                "temporary left in {}: {n:?}",
                h.display()
            );
        }
    }
}

#[test]
fn a_cleaned_file_downloaded_again_ends_as_one_inode() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("merge-redownload"), 3, SETTLE);
    let hosts = &s.hosts;
    portage_download(&hosts[0], "foo-1.0.tar.gz", b"the same release tarball");
    assert!(wait_linked(hosts, 0, "foo-1.0.tar.gz"));
    let pool = ino(&hosts[0].join("foo-1.0.tar.gz"));
    // host2 cleans it, later needs it again and downloads the same bytes.
    fs::remove_file(hosts[2].join("foo-1.0.tar.gz")).unwrap();
    // The pool's copy must be quiet for the settle time before it can be compared.
    assert!(quiet_for(&[hosts[0].join("foo-1.0.tar.gz")], QUIET));
    portage_download(&hosts[2], "foo-1.0.tar.gz", b"the same release tarball");
    assert!(
        one_inode(hosts, "foo-1.0.tar.gz"),
        "copies not merged:\n{}",
        tree(&s.scratch.fs())
    );
    assert_eq!(
        ino(&hosts[2].join("foo-1.0.tar.gz")),
        pool,
        "the pool's inode (more names) must survive"
    );
    assert!(
        s.daemon
            .wait_log("byte-identical copies merged into one inode")
    );
    no_temporaries(hosts);
    // The record now lists host2 again: a restart does not treat it as deleted or new.
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("foo-1.0.tar.gz")
    )
    .len()
        == 3));
}

#[test]
fn separate_host_directories_are_merged_where_identical_and_left_where_different() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("merge-separate");
    let hosts = scratch.hosts(3);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for h in &hosts {
        fs::write(h.join("same.tar.gz"), &big).unwrap();
        fs::write(h.join("mostly.tar.gz"), b"identical in host0 and host2").unwrap();
    }
    // host1's has other bytes of the same size.
    fs::write(
        hosts[1].join("mostly.tar.gz"),
        b"identical in host0 and host3",
    )
    .unwrap();
    // tail.tar.gz: host1's differs from host0's in its last byte only.
    let mut last_differs = big.clone();
    *last_differs.last_mut().unwrap() ^= 1;
    fs::write(hosts[0].join("tail.tar.gz"), &big).unwrap();
    fs::write(hosts[1].join("tail.tar.gz"), &last_differs).unwrap();
    let tail1 = ino(&hosts[1].join("tail.tar.gz"));
    let other = ino(&hosts[1].join("mostly.tar.gz"));
    let all: Vec<PathBuf> = hosts
        .iter()
        .flat_map(|h| fs::read_dir(h).unwrap().map(|e| e.unwrap().path()))
        .collect();
    assert!(quiet_for(&all, QUIET));

    // What a dry run would do.
    let config = scratch.config_for(&hosts, SETTLE);
    let out = std::process::Command::new(BIN)
        .args(["sync", "--dry-run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would merge"), "{text}");
    assert_eq!(ino(&hosts[1].join("same.tar.gz")), {
        let m = fs::metadata(hosts[1].join("same.tar.gz")).unwrap();
        assert_eq!(m.nlink(), 1, "a dry run merged");
        m.ino()
    });

    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log("reconcile (start-up) done"));
    assert!(one_inode(&hosts, "same.tar.gz"), "{}", tree(&scratch.fs()));
    let h02 = [hosts[0].clone(), hosts[2].clone()];
    assert!(one_inode(&h02, "mostly.tar.gz"));
    assert_eq!(
        ino(&hosts[1].join("mostly.tar.gz")),
        other,
        "different bytes replaced"
    );
    assert_eq!(
        ino(&hosts[1].join("tail.tar.gz")),
        tail1,
        "a file differing in its last byte replaced"
    );
    assert_eq!(
        fs::read(hosts[1].join("tail.tar.gz")).unwrap(),
        last_differs
    );
    assert!(d.wait_log("freed"));
    no_temporaries(&hosts);
    // The conflict is logged once, however many reconciles see it.
    let conflicts = |d: &Daemon| d.log().matches("conflict: host1/mostly.tar.gz").count();
    assert_eq!(conflicts(&d), 1, "{}", d.log());
    let host3 = scratch.fs().join("host3");
    fs::create_dir(&host3).unwrap();
    let mut four = hosts.clone();
    four.push(host3);
    scratch.config_for(&four, SETTLE);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_log("reconcile (hosts added) done"));
    assert!(one_inode(
        &[hosts[0].clone(), four[3].clone()],
        "same.tar.gz"
    ));
    assert_eq!(conflicts(&d), 1, "{}", d.log());
}

#[test]
fn merge_false_leaves_identical_copies_alone() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("merge-off");
    let hosts = scratch.hosts(2);
    for h in &hosts {
        fs::write(h.join("same.tar.gz"), b"same").unwrap();
    }
    let inos: Vec<u64> = hosts.iter().map(|h| ino(&h.join("same.tar.gz"))).collect();
    let all: Vec<PathBuf> = hosts.iter().map(|h| h.join("same.tar.gz")).collect();
    assert!(quiet_for(&all, QUIET));
    let config = scratch.config_for(&hosts, &format!("{SETTLE}merge: false\n"));
    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log("reconcile (start-up) done"));
    let now: Vec<u64> = hosts.iter().map(|h| ino(&h.join("same.tar.gz"))).collect();
    assert_eq!(inos, now);
    assert!(d.log().contains("conflict:"), "{}", d.log());
}

/// A client renaming another file onto the name while distlink compares and merges it:
/// whatever the client put there last is what the name holds, and nothing is left
/// behind. The files are large, so the comparison takes long enough to be raced.
#[test]
fn a_rename_racing_the_merge_is_never_clobbered() {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("merge-race"), 3, "settle: 10ms\n");
    let hosts = &s.hosts;
    let pool: Vec<u8> = (0..32_000_000u32).map(|i| (i % 253) as u8).collect();
    portage_download(&hosts[0], "race.tar.gz", &pool);
    assert!(wait_linked(hosts, 0, "race.tar.gz"));
    let pool_ino = ino(&hosts[0].join("race.tar.gz"));
    let mut other = pool.clone();
    let name = hosts[1].join("race.tar.gz");
    for round in 0..12u32 {
        // The pool's copy must be quiet (settle) to be compared.
        assert!(quiet_for(&[hosts[0].join("race.tar.gz")], RACE_QUIET));
        // An identical copy (a merge starts comparing it) ...
        let tmp = hosts[1].join("race.tar.gz.__download__");
        fs::write(&tmp, &pool).unwrap();
        fs::rename(&tmp, &name).unwrap();
        // ... and, a moment later, another file of the same size renamed onto the name.
        std::thread::sleep(std::time::Duration::from_millis(u64::from(round) * 3));
        other[0] = 1 + round as u8; // the pool's first byte is 0
        fs::write(&tmp, &other).unwrap();
        fs::rename(&tmp, &name).unwrap();
        let written = ino(&name);
        fs::write(hosts[0].join(format!("barrier-{round}.tar.gz")), b"b").unwrap();
        assert!(wait_linked(hosts, 0, format!("barrier-{round}.tar.gz")));
        assert_eq!(
            ino(&name),
            written,
            "round {round}: the client's file was replaced"
        );
        assert_eq!(fs::read(&name).unwrap(), other, "round {round}");
        no_temporaries(hosts);
    }
    // Undisturbed, the identical copy is merged.
    assert!(quiet_for(&[hosts[0].join("race.tar.gz")], RACE_QUIET));
    let tmp = hosts[1].join("race.tar.gz.__download__");
    fs::write(&tmp, &pool).unwrap();
    fs::rename(&tmp, &name).unwrap();
    assert!(
        wait_until(DEADLINE, || ino(&name) == pool_ino),
        "{}",
        s.daemon.log()
    );
    assert_eq!(fs::read(hosts[2].join("race.tar.gz")).unwrap(), pool);
    no_temporaries(hosts);
}

/// `distlink space --json` on a constructed tree: every figure exact.
#[test]
fn space_figures_of_a_constructed_tree_are_exact() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("space");
    let hosts = scratch.hosts(3);
    let put = |h: usize, name: &str, len: usize, fill: u8| {
        fs::write(hosts[h].join(name), vec![fill; len]).unwrap();
    };
    put(0, "shared.tar.gz", 1000, b's');
    fs::hard_link(
        hosts[0].join("shared.tar.gz"),
        hosts[1].join("shared.tar.gz"),
    )
    .unwrap();
    put(0, "own.tar.gz", 300, b'o');
    fs::hard_link(hosts[0].join("own.tar.gz"), hosts[0].join("own2.tar.gz")).unwrap();
    put(0, "split.tar.gz", 700, b'x');
    put(2, "split.tar.gz", 700, b'x');
    put(1, "diff.tar.gz", 50, b'a');
    put(2, "diff.tar.gz", 60, b'b');
    put(1, "pinned.tar.gz", 10, b'p');
    fs::hard_link(hosts[1].join("pinned.tar.gz"), scratch.fs().join("outside")).unwrap();
    std::os::unix::fs::symlink("shared.tar.gz", hosts[0].join("link.tar.gz")).unwrap();
    fs::create_dir(hosts[0].join("git3-src")).unwrap();
    let config = scratch.config_for(&hosts, "");
    let out = std::process::Command::new(BIN)
        .args(["space", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!(
            r#"{"pool": {"files": 7, "bytes": 2820}, "hosts": ["#,
            r#"{"name": "host0", "files": 4, "bytes": 2000, "alone_files": 2, "alone_bytes": 1000}, "#,
            r#"{"name": "host1", "files": 3, "bytes": 1060, "alone_files": 1, "alone_bytes": 50}, "#,
            r#"{"name": "host2", "files": 2, "bytes": 760, "alone_files": 2, "alone_bytes": 760}], "#,
            r#""split_names": 2, "split_bytes": 750, "mergeable": 1, "conflicts": 1, "largest_alone": ["#,
            r#"{"host": "host0", "name": "split.tar.gz", "bytes": 700}, "#,
            r#"{"host": "host2", "name": "split.tar.gz", "bytes": 700}, "#,
            r#"{"host": "host0", "name": "own.tar.gz", "bytes": 300}, "#,
            r#"{"host": "host2", "name": "diff.tar.gz", "bytes": 60}, "#,
            r#"{"host": "host1", "name": "diff.tar.gz", "bytes": 50}]}"#
        )
    );
    let text = std::process::Command::new(BIN)
        .args(["space", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("pool: 7 files, 2.8 KiB"), "{text}");
    // Sorted by bytes held alone: host0 (1000) first, its bar full.
    let first = text.lines().nth(2).unwrap();
    assert!(
        first.starts_with("  host0  ##############################"),
        "{text}"
    );
}

/// host2 cleaned a file (recorded) and downloaded it again while distlink was down: the
/// start-up reconcile, which starts from the pool's copy, still finds and merges it.
#[test]
fn a_copy_downloaded_again_while_down_is_merged_at_start_up() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("merge-while-down");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, SETTLE);
    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "bar-2.0.tar.gz", b"bar release");
    assert!(wait_linked(&hosts, 0, "bar-2.0.tar.gz"));
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("bar-2.0.tar.gz")
    )
    .len()
        == 3));
    assert!(d.stop().success());
    fs::remove_file(hosts[2].join("bar-2.0.tar.gz")).unwrap();
    portage_download(&hosts[2], "bar-2.0.tar.gz", b"bar release");
    let copies: Vec<PathBuf> = hosts.iter().map(|h| h.join("bar-2.0.tar.gz")).collect();
    assert!(quiet_for(&copies, QUIET));
    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log("reconcile (start-up) done"));
    assert!(one_inode(&hosts, "bar-2.0.tar.gz"), "{}", d.log());
    no_temporaries(&hosts);
}
