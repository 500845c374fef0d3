//! Never lose a fan-out: restarts, queue overflow, crashes, host changes.

use crate::under_both_marks;
use crate::util::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SETTLE: &str = "settle: 300ms\n";

/// Once `barrier` (written directly, so it goes through the settle tracker like deferred
/// files) is linked everywhere with one worker, everything decided before it is done.
fn barrier(hosts: &[PathBuf], name: &str) {
    fs::write(hosts[0].join(name), name).unwrap();
    assert!(wait_linked(hosts, 0, name), "barrier {name} not linked");
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

under_both_marks! {
fn restart_links_what_was_missed_and_respects_deletions(mark) {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("restart").marking(mark);
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, &format!("{SETTLE}workers: 1\n"));
    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "kept.tar.gz", b"kept");
    portage_download(&hosts[0], "cleaned.tar.gz", b"cleaned");
    portage_download(&hosts[1], "again.tar.gz", b"first download");
    for n in ["kept.tar.gz", "cleaned.tar.gz"] {
        assert!(wait_linked(&hosts, 0, n));
    }
    assert!(wait_linked(&hosts, 1, "again.tar.gz"));
    let old_again = fs::metadata(hosts[0].join("again.tar.gz")).unwrap().ino();
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("again.tar.gz")
    )
    .len()
        == 3));
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("cleaned.tar.gz")
    )
    .len()
        == 3));
    assert!(d.stop().success());

    // While distlink is down: a download, a direct write, one host cleaning a file, and a
    // name cleaned everywhere then downloaded again (a new inode).
    portage_download(&hosts[1], "while-down.tar.gz", b"missed event");
    fs::write(hosts[2].join("direct-while-down.tar.gz"), b"direct").unwrap();
    fs::remove_file(hosts[2].join("cleaned.tar.gz")).unwrap();
    for h in &hosts {
        fs::remove_file(h.join("again.tar.gz")).unwrap();
    }
    portage_download(&hosts[2], "again.tar.gz", b"second download");

    assert!(all_quiet(&hosts, QUIET));
    let d = Daemon::start(&scratch, &config);
    assert!(
        wait_linked(&hosts, 1, "while-down.tar.gz"),
        "missed download not caught up"
    );
    assert!(wait_linked(&hosts, 2, "direct-while-down.tar.gz"));
    assert!(
        wait_linked(&hosts, 2, "again.tar.gz"),
        "re-downloaded name not linked again"
    );
    assert_ne!(
        fs::metadata(hosts[0].join("again.tar.gz")).unwrap().ino(),
        old_again
    );
    assert_eq!(
        fs::read(hosts[0].join("again.tar.gz")).unwrap(),
        b"second download"
    );
    assert!(d.start_up_decided());
    barrier(&hosts, "barrier.tar.gz");
    assert!(
        !exists(&hosts[2].join("cleaned.tar.gz")),
        "a deliberately cleaned file came back"
    );
    assert!(exists(&hosts[0].join("cleaned.tar.gz")) && exists(&hosts[1].join("cleaned.tar.gz")));
    assert_eq!(
        fs::metadata(hosts[0].join("kept.tar.gz")).unwrap().nlink(),
        3
    );
}
}

under_both_marks! {
fn overflow_is_followed_by_a_rescan(mark) {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("overflow").marking(mark);
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, &format!("{SETTLE}unlimited_queue: false\n"));
    // The kernel reads the limit when the group is created: lower it around the start only.
    let d = {
        let _limit = Sysctl::set(watch_limit_path(), "64");
        Daemon::start(&scratch, &config)
    };
    let names: Vec<String> = (0..3000).map(|i| format!("burst-{i:04}.tar.gz")).collect();
    for n in &names {
        fs::write(hosts[0].join(format!("{n}.__download__")), b"x").unwrap();
    }
    for n in &names {
        fs::rename(hosts[0].join(format!("{n}.__download__")), hosts[0].join(n)).unwrap();
    }
    assert!(
        d.wait_log("the queue limit, fs.fanotify.max_queued_events = 64, was hit"),
        "no overflow seen"
    );
    for n in &names {
        assert!(
            wait_linked(&hosts, 0, n),
            "{n} not linked after the overflow"
        );
    }
    assert!(d.wait_log("reconcile (queue overflow) done"));
}
}

fn watch_limit_path() -> &'static str {
    distlink::fanotify::MAX_QUEUED_EVENTS
}

/// A tiny deterministic PRNG (xorshift), so a failure can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

under_both_marks! {
fn crashes_at_random_moments_converge(mark) {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("crash").marking(mark);
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, &format!("{SETTLE}workers: 2\n"));
    let seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    eprintln!("crash test seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut completed: Vec<(usize, String)> = Vec::new();
    let mut deleted: Vec<(usize, String)> = Vec::new();
    for round in 0..10 {
        let d = Daemon::start(&scratch, &config);
        // Deliberate deletions: only of files whose fan-out is recorded for every host.
        for (_, name) in &completed {
            if !rng.next().is_multiple_of(8) {
                continue;
            }
            let victim = (rng.next() % 3) as usize;
            let path = hosts[victim].join(name);
            if exists(&path)
                && recorded_hosts(&path).len() == 3
                && !deleted.iter().any(|(_, n)| n == name)
            {
                fs::remove_file(&path).unwrap();
                deleted.push((victim, name.clone()));
            }
        }
        let writer_hosts = hosts.clone();
        let batch: Vec<(usize, String)> = (0..150)
            .map(|i| ((rng.next() % 3) as usize, format!("r{round}-{i:03}.tar.gz")))
            .collect();
        let to_write = batch.clone();
        let writer = std::thread::spawn(move || {
            for (h, name) in to_write {
                portage_download(&writer_hosts[h], &name, name.as_bytes());
            }
        });
        // Kill somewhere in the middle of the burst.
        std::thread::sleep(std::time::Duration::from_micros(rng.next() % 40_000));
        d.kill9();
        writer.join().unwrap();
        completed.extend(batch);
    }
    // The last start converges: everything completed is everywhere, except what a host
    // deleted on purpose.
    assert!(all_quiet(&hosts, QUIET));
    let d = Daemon::start(&scratch, &config);
    for (src, name) in &completed {
        let want: Vec<PathBuf> = hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| !deleted.contains(&(*i, name.clone())))
            .map(|(_, h)| h.clone())
            .collect();
        let reference = hosts[*src].join(name);
        let reference = if exists(&reference) {
            reference
        } else {
            want[0].join(name)
        };
        assert!(
            wait_until(DEADLINE, || linked_everywhere(
                &reference,
                &want,
                name.as_ref()
            )),
            "{name} (from host{src}) did not reach every host"
        );
    }
    assert!(d.start_up_decided());
    barrier(&hosts, "barrier.tar.gz");
    for (h, name) in &deleted {
        assert!(
            !exists(&hosts[*h].join(name)),
            "deliberately deleted host{h}/{name} came back"
        );
    }
    eprintln!(
        "{} files, {} deliberate deletions, 10 crashes",
        completed.len(),
        deleted.len()
    );
}
}

under_both_marks! {
fn sighup_adds_and_removes_hosts_and_keeps_a_good_config(mark) {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("sighup").marking(mark);
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts[..2], SETTLE);
    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "before.tar.gz", b"pool");
    assert!(wait_linked(&hosts[..2], 0, "before.tar.gz"));

    // Add host2: it gets the pool.
    scratch.config_for(&hosts, SETTLE);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_log("hosts added: host2"));
    assert!(
        wait_linked(&hosts, 0, "before.tar.gz"),
        "added host did not get the pool"
    );

    // Remove host1: left alone, gets nothing new.
    let kept = vec![hosts[0].clone(), hosts[2].clone()];
    let mut text = String::from("hosts:\n");
    text.push_str(&format!(
        "  host0: {}\n  host2: {}\n{SETTLE}{}",
        hosts[0].display(),
        hosts[2].display(),
        scratch.numbers_line()
    ));
    scratch.config(&text);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_log("hosts removed (their directories are left as they are): host1"));
    portage_download(&hosts[0], "after.tar.gz", b"new");
    assert!(wait_linked(&kept, 0, "after.tar.gz"));
    assert!(!exists(&hosts[1].join("after.tar.gz")));
    assert!(exists(&hosts[1].join("before.tar.gz")));

    // A broken config is reported; the running one stays.
    let mut f = fs::File::create(&config).unwrap();
    f.write_all(b"hosts: [\n").unwrap();
    drop(f);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_log("reload failed, keeping the running configuration"));
    portage_download(&hosts[2], "still.tar.gz", b"works");
    assert!(wait_linked(&kept, 1, "still.tar.gz"));
    assert!(d.stop().success());
}
}

under_both_marks! {
fn a_host_directory_removed_and_recreated_is_picked_up(mark) {
    if !require_root() {
        return;
    }
    let s = setup(Scratch::tmpfs("vanish").marking(mark), 3, SETTLE);
    let hosts = &s.hosts;
    portage_download(&hosts[0], "old.tar.gz", b"before");
    assert!(wait_linked(hosts, 0, "old.tar.gz"));
    assert!(wait_until(DEADLINE, || recorded_hosts(
        &hosts[0].join("old.tar.gz")
    )
    .len()
        == 3));

    // eclean-dist on host2 removes its files, then the emptied DISTDIR.
    fs::remove_file(hosts[2].join("old.tar.gz")).unwrap();
    fs::remove_dir(&hosts[2]).unwrap();
    assert!(s.daemon.wait_log("host host2: directory"));
    assert!(s.daemon.wait_log("is gone"));
    portage_download(&hosts[0], "during.tar.gz", b"while gone");
    assert!(wait_linked(&hosts[..2], 0, "during.tar.gz"));

    // A reload while host2's directory is gone is accepted (host2 stays pending), and a
    // host added meanwhile gets the pool.
    let host3 = s.scratch.fs().join("host3");
    fs::create_dir(&host3).unwrap();
    let mut with3 = hosts.clone();
    with3.push(host3.clone());
    s.scratch.config_for(&with3, SETTLE);
    s.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        s.daemon.wait_log("hosts added: host3"),
        "reload refused while host2 is gone"
    );
    assert!(wait_linked(
        &[hosts[0].clone(), host3.clone()],
        0,
        "old.tar.gz"
    ));

    // The next fetch on host2 re-creates it. Everything quiet first, so that the
    // reconcile it starts decides each file at once (old.tar.gz was just linked into
    // host3).
    assert!(all_quiet(&with3, QUIET));
    fs::create_dir(&hosts[2]).unwrap();
    assert!(s.daemon.wait_log("is back"));
    // Before the next downloads, which that reconcile would find still settling.
    assert!(s.daemon.reconcile_decided("host directory back"));
    portage_download(&hosts[0], "new.tar.gz", b"after");
    assert!(
        wait_linked(hosts, 0, "new.tar.gz"),
        "re-created host did not get a new completion"
    );
    portage_download(&hosts[2], "own.tar.gz", b"host2's own download");
    assert!(
        wait_linked(hosts, 2, "own.tar.gz"),
        "re-created host's download did not fan out"
    );
    assert!(wait_linked(
        &[hosts[0].clone(), host3.clone()],
        0,
        "new.tar.gz"
    ));
    assert!(
        wait_linked(hosts, 0, "during.tar.gz"),
        "completed while it was gone: not linked"
    );
    assert!(
        !exists(&hosts[2].join("old.tar.gz")),
        "a file host2 cleaned came back"
    );
}
}

#[test]
fn sync_links_what_is_missing_and_dry_run_links_nothing() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("sync");
    let hosts = scratch.hosts(3);
    let config = scratch.config_for(&hosts, "settle: 1s\n");
    fs::write(hosts[0].join("a b.tar.gz"), b"a").unwrap();
    fs::write(hosts[1].join("c.tar.gz"), b"c").unwrap();
    fs::write(hosts[1].join("c.tar.gz.__download__"), b"partial").unwrap();
    let run = |dry: bool| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["sync", "--config"]).arg(&config);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Just written: they may still be written, so sync watches them until they have
    // been quiet for `settle`, then acts on them.
    let dry = run(true);
    assert!(
        dry.contains("would link host0/a b.tar.gz -> host1, host2"),
        "{dry}"
    );
    assert!(
        dry.contains("would link host1/c.tar.gz -> host0, host2"),
        "{dry}"
    );
    assert!(dry.contains("2 waited for until quiet for 1s"), "{dry}");
    assert!(dry.contains("(dry run: nothing linked)"), "{dry}");
    assert!(!exists(&hosts[1].join("a b.tar.gz")));
    let real = run(false);
    assert!(
        real.contains("linked host0/a b.tar.gz -> host1, host2"),
        "{real}"
    );
    assert!(real.contains("2 files linked (4 links)"), "{real}");
    assert!(linked_everywhere(
        &hosts[0].join("a b.tar.gz"),
        &hosts,
        "a b.tar.gz".as_ref()
    ));
    assert!(!exists(&hosts[0].join("c.tar.gz.__download__")));
    // Deleted in one host after the sync: a second sync leaves it deleted (the unlink
    // changed the inode's ctime, so sync waits for it to be quiet first).
    fs::remove_file(hosts[2].join("c.tar.gz")).unwrap();
    let again = run(false);
    assert!(again.contains("0 files linked"), "{again}");
    assert!(!exists(&hosts[2].join("c.tar.gz")));
}

/// The clock was set back: a file's ctime lies in the future. That says the file has not
/// changed since the step, not that it is being written: sync watches it for `settle`
/// and links it. A file that keeps changing is left alone, listed, and sync exits 75.
#[test]
fn sync_after_the_clock_was_set_back_and_with_files_still_changing() {
    if !require_root() || !require_tool("debugfs") {
        return;
    }
    let scratch = Scratch::ext4("sync-clock", 32);
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "settle: 300ms\n");
    fs::write(hosts[0].join("future.tar.gz"), b"from before the step").unwrap();
    // Give it a ctime in 2099 (only debugfs, on the unmounted image, can).
    let img = scratch.root.join("fs.img");
    let run = |cmd: &mut std::process::Command| assert!(cmd.status().unwrap().success());
    run(std::process::Command::new("umount").arg(scratch.fs()));
    run(std::process::Command::new("debugfs")
        .args([
            "-w",
            "-R",
            "set_inode_field /host0/future.tar.gz ctime 20990101000000",
        ])
        .arg(&img)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null()));
    run(std::process::Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(scratch.fs()));
    let ctime = fs::metadata(hosts[0].join("future.tar.gz"))
        .unwrap()
        .ctime();
    assert!(ctime > 4_000_000_000, "ctime not in the future: {ctime}");

    // A download that goes on while sync runs.
    let growing = hosts[0].join("growing.tar.gz");
    fs::write(&growing, b"").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (std::sync::Arc::clone(&stop), growing.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(growing).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::io::Write::write_all(&mut f, b"more").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let out = std::process::Command::new(BIN)
        .args(["sync", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(
        text.contains("linked host0/future.tar.gz -> host1"),
        "{text}"
    );
    assert!(
        text.contains("1 files were still changing") && text.contains("host0/growing.tar.gz"),
        "{text}"
    );
    assert!(exists(&hosts[1].join("future.tar.gz")));
    assert!(!exists(&hosts[1].join("growing.tar.gz")));
}
