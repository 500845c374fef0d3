//! The two promises, tried as a hostile client and an admin would (issue 11): a
//! completed download reaches every host that did not delete it, and a host's deletion
//! is never undone.

use crate::util::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// A second hardlink and a rename inside one host are names of their own: they are
/// fanned out and recorded beside the first, and what another host deleted stays
/// deleted across restarts. (The record used to hold one name per inode: the new name
/// replaced it, and every restart brought back the deleted name, alternating.)
#[test]
fn second_names_never_bring_back_a_deletion() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("second-names");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, "settle: 300ms\nworkers: 1\n");
    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "foo.tar.gz", b"foo");
    portage_download(&hosts[0], "bar.tar.gz", b"bar");
    for n in ["foo.tar.gz", "bar.tar.gz"] {
        assert!(wait_linked(&hosts, 0, n));
        assert!(wait_until(DEADLINE, || recorded_hosts(&hosts[0].join(n))
            .len()
            == 3));
    }
    // host2 cleans both; host1 hardlinks foo and renames bar.
    fs::remove_file(hosts[2].join("foo.tar.gz")).unwrap();
    fs::remove_file(hosts[2].join("bar.tar.gz")).unwrap();
    fs::hard_link(
        hosts[1].join("foo.tar.gz"),
        hosts[1].join("foo-copy.tar.gz"),
    )
    .unwrap();
    fs::rename(
        hosts[1].join("bar.tar.gz"),
        hosts[1].join("bar-renamed.tar.gz"),
    )
    .unwrap();
    for n in ["foo-copy.tar.gz", "bar-renamed.tar.gz"] {
        assert!(wait_linked(&hosts, 1, n), "{n} not fanned out");
        assert!(wait_until(DEADLINE, || recorded_hosts(&hosts[0].join(n))
            .len()
            == 3));
    }
    // Both names of each inode are in its record.
    let r = record(&hosts[0].join("foo.tar.gz")).unwrap();
    assert_eq!(r.hosts_of(b"foo.tar.gz").map(<[u16]>::len), Some(3));
    assert_eq!(r.hosts_of(b"foo-copy.tar.gz").map(<[u16]>::len), Some(3));
    assert!(d.stop().success());

    for round in 0..3 {
        assert!(all_quiet(&hosts, QUIET));
        let d = Daemon::start(&scratch, &config);
        assert!(d.start_up_decided());
        for (host, name) in [(2, "foo.tar.gz"), (2, "bar.tar.gz"), (1, "bar.tar.gz")] {
            assert!(
                !exists(&hosts[host].join(name)),
                "round {round}: host{host}/{name} was brought back"
            );
        }
        assert!(exists(&hosts[0].join("bar.tar.gz")));
        assert!(linked_everywhere(
            &hosts[0].join("foo.tar.gz"),
            &hosts[..2],
            "foo.tar.gz".as_ref()
        ));
        assert!(d.stop().success());
    }
}

/// One record holds 1,024 hosts and a few names on every filesystem distlink supports,
/// ext4 with 1 KiB blocks (one block for all of an inode's attributes) among them. A
/// name the record has no room for is not fanned out, and says so.
#[test]
fn records_for_1024_hosts_fit_ext4_with_1k_blocks_xfs_and_tmpfs() {
    if !require_root() {
        return;
    }
    let mut kinds = vec![("tmpfs", Scratch::tmpfs("records-1024"))];
    if require_tool("mkfs.ext4") {
        kinds.push(("ext4 -b 1024", Scratch::ext4_1k("records-1024")));
    }
    if require_tool("mkfs.xfs") {
        kinds.push(("xfs", Scratch::xfs("records-1024")));
    }
    for (kind, scratch) in kinds {
        let hosts = scratch.hosts(1024);
        let config = scratch.config_for(&hosts, "settle: 300ms\n");
        let d = Daemon::start(&scratch, &config);
        // Names of 200 bytes: the first entry takes 22 + 201 + 130 bytes, each further
        // name held by the same hosts 203: three fit in 800 bytes, a fourth does not.
        let name = |i: usize| format!("{i}{}", "n".repeat(199));
        portage_download(&hosts[5], name(0), b"one inode, many names");
        assert!(wait_linked(&hosts, 5, name(0)), "{kind}: not linked");
        // One after the other: which of names made at once is the one with no room
        // depends on the order their fan-outs take the inode's lock.
        for i in 1..=3 {
            fs::hard_link(hosts[5].join(name(0)), hosts[5].join(name(i))).unwrap();
            if i < 3 {
                assert!(wait_linked(&hosts, 5, name(i)), "{kind}: {i} not linked");
            }
        }
        assert!(
            d.wait_log("has no room for another name"),
            "{kind}: {}",
            d.log()
        );
        assert!(
            !exists(&hosts[0].join(name(3))),
            "{kind}: linked without a record"
        );
        let r = record(&hosts[5].join(name(0))).expect("a record");
        for i in 0..=2 {
            assert_eq!(
                r.hosts_of(name(i).as_bytes()).map(<[u16]>::len),
                Some(1024),
                "{kind}: {i}"
            );
        }
        assert_eq!(r.hosts_of(name(3).as_bytes()), None);
        assert!(
            xattr(&hosts[5].join(name(0)), "user.distlink")
                .unwrap()
                .len()
                <= distlink::record::MAX_RECORD
        );
        assert_eq!(
            fs::metadata(hosts[0].join(name(0))).unwrap().nlink(),
            3 * 1024 + 1
        );
        assert!(d.stop().success());
    }
}

/// Links that fail for lack of space are tried again with backoff until they succeed,
/// and the number waiting is in the status; a host that deletes the file meanwhile does
/// not get it back. (tmpfs counts every link against `nr_inodes`, so a full inode table
/// refuses links with ENOSPC.)
#[test]
fn links_that_fail_for_lack_of_space_are_retried_until_they_succeed() {
    if !require_root() {
        return;
    }
    let mut scratch = Scratch::new("retry-enospc");
    scratch.mount_tmpfs_with("fs", "size=64m,nr_inodes=64");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    let d = Daemon::start(&scratch, &config);
    // Done before the download: only retries may link it (not a deferred reconcile pass).
    assert!(d.wait_log("reconcile (start-up) done"));
    let status = scratch.root.join("run/status");
    // Fill the inode table, then free two: one for the download, one for one link.
    let mut fillers = Vec::new();
    for i in 0.. {
        let p = scratch.fs().join(format!("filler{i}"));
        if fs::write(&p, b"").is_err() {
            break;
        }
        fillers.push(p);
    }
    for p in fillers.drain(..2) {
        fs::remove_file(p).unwrap();
    }
    portage_download(&hosts[0], "big.tar.gz", b"payload");
    assert!(d.wait_log("failed to link host0/big.tar.gz"), "{}", d.log());
    assert!(wait_until(DEADLINE, || fs::read_to_string(&status)
        .is_ok_and(|s| s.contains("\nretrying=1\n"))));
    // Whichever host got the one link cleans it (eclean-dist), freeing an inode.
    let (got, lacks) = if exists(&hosts[1].join("big.tar.gz")) {
        (1, 2)
    } else {
        (2, 1)
    };
    // tmpfs counts extended attributes against the same table: the record could not be
    // written either, so only the retry remembers that host{got} held the file.
    assert!(d.wait_log("cannot record the fan-out"));
    fs::remove_file(hosts[got].join("big.tar.gz")).unwrap();
    for p in fillers.drain(..) {
        fs::remove_file(p).unwrap();
    }
    let reference = hosts[0].join("big.tar.gz");
    assert!(
        wait_until(DEADLINE, || linked_everywhere(
            &reference,
            &hosts[lacks..=lacks],
            "big.tar.gz".as_ref()
        )),
        "not retried: {}",
        d.log()
    );
    assert!(wait_until(DEADLINE, || fs::read_to_string(&status)
        .is_ok_and(|s| s.contains("\nretrying=0\n"))));
    assert!(d.wait_log("(retry): linked into"));
    assert!(d.stop().success());
    // Nor does a restart bring back what host{got} deleted.
    assert!(all_quiet(&hosts, QUIET));
    let d = Daemon::start(&scratch, &config);
    assert!(d.start_up_decided());
    assert!(!exists(&hosts[got].join("big.tar.gz")));
    assert_eq!(recorded_hosts(&reference).len(), 3);
    assert!(d.stop().success());
}

/// A host directory missing at start-up (eclean-dist removed the emptied DISTDIR while
/// distlink was stopped) no longer keeps the service down: distlink starts with the
/// others, warns, and links into the directory once it is back.
#[test]
fn a_host_directory_missing_at_start_up_is_picked_up_when_it_appears() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("missing-at-start");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    fs::remove_dir(&hosts[2]).unwrap();
    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log(&format!(
        "host host2: directory {} does not exist; starting without it",
        hosts[2].display()
    )));
    portage_download(&hosts[0], "early.tar.gz", b"early");
    assert!(wait_linked(&hosts[..2], 0, "early.tar.gz"));
    fs::create_dir(&hosts[2]).unwrap();
    assert!(d.wait_log("host host2: directory"));
    assert!(d.wait_log("is back"));
    portage_download(&hosts[1], "late.tar.gz", b"late");
    assert!(wait_linked(&hosts, 1, "late.tar.gz"));
    assert!(d.stop().success());
}

/// A filesystem mounted over a host directory hides it: the host is treated as gone
/// (links into the hidden directory would never reach it) until the mount goes away.
#[test]
fn a_filesystem_mounted_over_a_host_directory_makes_the_host_gone() {
    if !require_root() {
        return;
    }
    let mut scratch = Scratch::tmpfs("mounted-over");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    let d = Daemon::start(&scratch, &config);
    scratch.mount_tmpfs("fs/host2");
    assert!(
        d.wait_log("is now another filesystem or mount"),
        "{}",
        d.log()
    );
    portage_download(&hosts[0], "hidden.tar.gz", b"x");
    assert!(d.wait_log("host0/hidden.tar.gz (renamed): linked into host1\n"));
    assert!(!exists(&hosts[2].join("hidden.tar.gz")));
    // Nothing went into the directory under the mount either: host0 and host1 only.
    assert_eq!(
        fs::metadata(hosts[0].join("hidden.tar.gz"))
            .unwrap()
            .nlink(),
        2
    );
    assert!(
        std::process::Command::new("umount")
            .arg(&hosts[2])
            .status()
            .unwrap()
            .success()
    );
    assert!(d.wait_log("is back"));
    // Back on the shared filesystem: host2 is linked in (it never held the file).
    assert!(wait_linked(&hosts, 0, "hidden.tar.gz"));
    assert!(d.stop().success());
}

/// Renaming a host keeps its history when its name is changed in the host numbers file
/// too; `check` points at that when a configuration renames one alone.
#[test]
fn a_host_renamed_in_the_numbers_file_keeps_what_it_deleted() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("rename-host");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "foo.tar.gz", b"foo");
    assert!(wait_linked(&hosts, 0, "foo.tar.gz"));
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("foo.tar.gz")
    )
    .len()
        == 3));
    assert!(d.stop().success());
    fs::remove_file(hosts[2].join("foo.tar.gz")).unwrap();

    // Renamed, and moved to the top of the map: its number must come from the numbers
    // file, not from its place in the configuration.
    let text = fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("  host2:"))
        .unwrap()
        .to_owned();
    let text = text.replace(&format!("{line}\n"), "").replacen(
        "hosts:\n",
        &format!("hosts:\n{}\n", line.replace("host2:", "renamed:")),
        1,
    );
    fs::write(&config, text).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "note: new hosts renamed get new numbers and no history; if one is a renamed host2"
        ),
        "{out}"
    );
    let numbers = scratch.root.join("host-numbers");
    let text = fs::read_to_string(&numbers).unwrap();
    assert!(text.contains("\n2 host2\n"), "{text}");
    fs::write(&numbers, text.replace("\n2 host2\n", "\n2 renamed\n")).unwrap();
    assert!(all_quiet(&hosts, QUIET));
    let d = Daemon::start(&scratch, &config);
    assert!(d.start_up_decided());
    assert!(
        !exists(&hosts[2].join("foo.tar.gz")),
        "the renamed host got back what it deleted"
    );
    assert!(d.stop().success());
}

/// xorshift64*: a reproducible random sequence (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bursts of downloads, deliberate deletions (of names recorded for that host) and
/// second names, with `kill -9` at a random moment in each burst and more work done
/// while the daemon is down; after a last start, every name is in every host that did
/// not delete it, and in none that did.
#[test]
fn random_kill_9_during_bursts_deletions_and_second_names_converges() {
    if !require_root() {
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let scratch = Scratch::tmpfs("crash");
    let n_hosts = 4;
    let hosts = scratch.hosts(n_hosts);
    let config = scratch.config_for(&hosts, "settle: 300ms\nworkers: 2\n");
    // name -> hosts that deleted it on purpose
    let mut names: Vec<String> = Vec::new();
    let mut deleted: std::collections::HashMap<String, Vec<usize>> = Default::default();
    let mut next = 0usize;
    for round in 0..8 {
        let mut d = Some(Daemon::start(&scratch, &config));
        let kill_at = rng.below(60);
        for op in 0..80 {
            if op == kill_at
                && let Some(d) = d.take()
            {
                d.kill9();
            }
            let h = rng.below(n_hosts);
            match rng.below(10) {
                // A download.
                0..=4 => {
                    let name = format!("r{round}-f{next}.tar.gz");
                    next += 1;
                    portage_download(&hosts[h], &name, name.as_bytes());
                    names.push(name);
                }
                // A deliberate deletion: only of a name recorded for that host.
                5..=7 if !names.is_empty() => {
                    let name = names[rng.below(names.len())].clone();
                    let path = hosts[h].join(&name);
                    if exists(&path) && recorded_hosts(&path).contains(&(h as u16)) {
                        fs::remove_file(&path).unwrap();
                        deleted.entry(name).or_default().push(h);
                    }
                }
                // A second name in the same host.
                _ if !names.is_empty() => {
                    let name = names[rng.below(names.len())].clone();
                    let path = hosts[h].join(&name);
                    if exists(&path) {
                        let copy = format!("{name}-copy{next}");
                        next += 1;
                        fs::hard_link(&path, hosts[h].join(&copy)).unwrap();
                        names.push(copy);
                    }
                }
                _ => {}
            }
            // Pacing, not synchronisation: spreads the burst over the daemon's work so
            // that the kill lands at a random point of it.
            std::thread::sleep(std::time::Duration::from_millis(rng.below(6) as u64));
        }
        if let Some(d) = d {
            d.kill9();
        }
    }
    let copies = names.iter().filter(|n| n.contains("-copy")).count();
    let deletions: usize = deleted.values().map(Vec::len).sum();
    eprintln!(
        "seed {seed}: {} names ({copies} second names), {deletions} deletions",
        names.len()
    );
    assert!(
        copies > 0 && deletions > 0,
        "seed {seed}: the mix exercised nothing"
    );
    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log("reconcile (start-up) done"));
    let converged = || {
        names.iter().all(|name| {
            let gone = deleted.get(name).cloned().unwrap_or_default();
            let inodes: Vec<Option<u64>> = hosts
                .iter()
                .map(|h| h.join(name).symlink_metadata().ok().map(|m| m.ino()))
                .collect();
            let first = inodes.iter().flatten().next().copied();
            inodes.iter().enumerate().all(|(i, ino)| {
                if gone.contains(&i) {
                    ino.is_none()
                } else {
                    ino.is_some() && *ino == first
                }
            })
        })
    };
    let ok = wait_until(DEADLINE, converged);
    if !ok {
        for name in &names {
            let held: Vec<bool> = hosts.iter().map(|h| exists(&h.join(name))).collect();
            eprintln!("{name}: held {held:?}, deleted by {:?}", deleted.get(name));
        }
    }
    assert!(ok, "seed {seed}: did not converge (see above)");
    assert!(d.stop().success());
    // Once more with every file quiet: that start-up reconcile decides each name at once
    // (the one above deferred second names its own links had just changed, and a
    // deferred fan-out could bring a deletion back after the check), so whatever it
    // would undo is undone before its summary.
    assert!(all_quiet(&hosts, QUIET));
    let d = Daemon::start(&scratch, &config);
    assert!(d.start_up_decided());
    assert!(converged(), "seed {seed}: a restart undid the convergence");
    assert!(d.stop().success());
}
