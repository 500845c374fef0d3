//! `cargo bench --bench fanout` (as root): figures, not pass/fail.
//!
//! * Fan-out latency, rename in one host to the last link in the others, for 2, 4 and 16
//!   hosts on tmpfs (p50, p99 over many samples), seen through inotify.
//! * A burst of 10,000 renamed files fanned out to 16 hosts, against the floor: one thread
//!   doing the same 150,000 `linkat` calls in a plain loop.
//!
//! * Memory (peak RSS of the daemon, `VmHWM`): a start-up reconcile of 500,000 names;
//!   500,000 files written under their final name and pending settle at once; and the
//!   resident memory left after 200,000 names were created and deleted while pending.
//!
//! Targets (issue 2): p99 under 5 ms at 16 hosts; burst within 2x of the floor.
//! (issue 9): each memory figure under 64 MiB, and churn gives its memory back.

#[allow(dead_code)]
#[path = "util.rs"]
mod util;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::fs;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use util::{Daemon, Scratch};

const LATENCY_SAMPLES: usize = 400;
const RECONCILE_FILES: usize = 100_000;
const RECONCILE_HOSTS: usize = 16;
const BURST_FILES: usize = 10_000;
const BURST_HOSTS: usize = 16;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Peak resident memory of a process, from /proc.
fn vm_hwm(pid: i32) -> String {
    proc_status(pid, "VmHWM:")
}

/// A `VmXXX:` line of /proc/PID/status.
fn proc_status(pid: i32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// `12345 kB` as MiB.
fn mib(kb: &str) -> String {
    kb.trim_end_matches(" kB")
        .parse::<f64>()
        .map_or_else(|_| kb.to_owned(), |k| format!("{:.1} MiB", k / 1024.0))
}

const MEMORY_NAMES: usize = 500_000;
const CHURN_NAMES: usize = 200_000;

/// Renames a marker into host0 and waits until it is linked into host1: every event
/// queued before it has been handled.
fn barrier(hosts: &[PathBuf], label: &str) {
    let tmp = hosts[0].join(format!("{label}.__download__"));
    fs::write(&tmp, b"m").unwrap();
    fs::rename(&tmp, hosts[0].join(label)).unwrap();
    assert!(
        util::wait_until(Duration::from_secs(600), || hosts[1].join(label).exists()),
        "{label} not linked"
    );
}

/// Starts the daemon on files already in `hosts` and waits for its start-up reconcile.
/// With `settle: 10ms` and files older than that, every file is linked at once, not
/// deferred: the pause lets that much time pass since the last file was written.
fn start_up_reconcile(scratch: &Scratch, hosts: &[PathBuf]) -> Daemon {
    let config = scratch.config_for(hosts, "settle: 10ms\n");
    std::thread::sleep(Duration::from_millis(20));
    let daemon = Daemon::start(scratch, &config);
    assert!(
        daemon.wait_log("reconcile (start-up) done"),
        "{}",
        daemon.log()
    );
    daemon
}

/// Peak RSS of a start-up reconcile of `MEMORY_NAMES` names (all in host0 of 2 hosts).
fn memory_reconcile() -> String {
    let scratch = Scratch::tmpfs("bench-mem-reconcile");
    let hosts = scratch.hosts(2);
    for i in 0..MEMORY_NAMES {
        fs::write(hosts[0].join(format!("dist-{i:07}.tar.gz")), b"").unwrap();
    }
    let daemon = start_up_reconcile(&scratch, &hosts);
    assert_eq!(fs::read_dir(&hosts[1]).unwrap().count(), MEMORY_NAMES);
    mib(&vm_hwm(daemon.pid()))
}

/// Peak RSS with `MEMORY_NAMES` direct writes pending settle, and the resident memory
/// before and after a churn of `CHURN_NAMES` names created and deleted while pending.
fn memory_pending() -> (String, String, String) {
    let scratch = Scratch::tmpfs("bench-mem-pending");
    let hosts = scratch.hosts(2);
    let config = scratch.config_for(&hosts, "settle: 600s\n");
    let daemon = Daemon::start(&scratch, &config);
    assert!(daemon.wait_log("reconcile (start-up) done"));
    barrier(&hosts, "before-churn");
    let before = mib(&proc_status(daemon.pid(), "VmRSS:"));
    for i in 0..CHURN_NAMES {
        let p = hosts[0].join(format!("churn-{i:07}.tar.gz"));
        fs::write(&p, b"").unwrap();
        fs::remove_file(&p).unwrap();
    }
    barrier(&hosts, "after-churn");
    let after = mib(&proc_status(daemon.pid(), "VmRSS:"));
    for i in 0..MEMORY_NAMES {
        // Empty: 500,000 pages of data would not fit the scratch tmpfs.
        fs::write(hosts[0].join(format!("direct-{i:07}.tar.gz")), b"").unwrap();
    }
    barrier(&hosts, "after-writes");
    assert!(!hosts[1].join("direct-0000000.tar.gz").exists());
    (mib(&vm_hwm(daemon.pid())), before, after)
}

/// Waits until `count` IN_CREATE events for `name` (any directory) have been read.
fn wait_creates(ino: &Inotify, name: &str, count: usize) {
    let mut seen = 0;
    let end = Instant::now() + util::DEADLINE;
    while seen < count {
        assert!(
            Instant::now() < end,
            "{name}: only {seen}/{count} links within the deadline"
        );
        match ino.read_events() {
            Ok(events) => {
                seen += events
                    .iter()
                    .filter(|e| e.name.as_deref() == Some(name.as_ref()))
                    .count()
            }
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(
                    ino.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8));
            }
            Err(e) => panic!("inotify: {e}"),
        }
    }
}

fn latency(n: usize) {
    let scratch = Scratch::tmpfs(&format!("bench-latency-{n}"));
    let hosts = scratch.hosts(n);
    let config = scratch.config_for(&hosts, "settle: 10s\n");
    let daemon = Daemon::start(&scratch, &config);
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
    for h in &hosts[1..] {
        ino.add_watch(h, AddWatchFlags::IN_CREATE).unwrap();
    }
    let payload = vec![0x5au8; 4096];
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let name = format!("pkg-{i}.tar.gz");
        let tmp = hosts[0].join(format!("{name}.__download__"));
        fs::write(&tmp, &payload).unwrap();
        let t0 = Instant::now();
        fs::rename(&tmp, hosts[0].join(&name)).unwrap();
        wait_creates(&ino, &name, n - 1);
        samples.push(t0.elapsed());
    }
    samples.sort();
    println!(
        "latency  {n:>2} hosts: p50 {}  p99 {}  max {}  ({} renames, tmpfs)",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
        samples.len()
    );
    drop(daemon);
}

/// `BURST_FILES` temporaries in host0 of a fresh tmpfs with `BURST_HOSTS` hosts.
fn burst_fixture(label: &str) -> (Scratch, Vec<PathBuf>, Vec<String>) {
    let scratch = Scratch::tmpfs(label);
    let hosts = scratch.hosts(BURST_HOSTS);
    let names: Vec<String> = (0..BURST_FILES)
        .map(|i| format!("burst-{i:05}.tar.xz"))
        .collect();
    for n in &names {
        fs::write(hosts[0].join(format!("{n}.__download__")), b"x").unwrap();
    }
    (scratch, hosts, names)
}

fn floor() -> Duration {
    let (_scratch, hosts, names) = burst_fixture("bench-floor");
    for n in &names {
        fs::rename(hosts[0].join(format!("{n}.__download__")), hosts[0].join(n)).unwrap();
    }
    let src = util_open(&hosts[0]);
    let dsts: Vec<_> = hosts[1..].iter().map(|h| util_open(h)).collect();
    let t0 = Instant::now();
    for n in &names {
        for d in &dsts {
            nix::unistd::linkat(
                &src,
                n.as_str(),
                d,
                n.as_str(),
                nix::fcntl::AtFlags::empty(),
            )
            .unwrap();
        }
    }
    t0.elapsed()
}

fn util_open(p: &std::path::Path) -> std::os::fd::OwnedFd {
    distlink::hosts::open_dir(p).unwrap()
}

fn burst() -> (Duration, String) {
    let (scratch, hosts, names) = burst_fixture("bench-burst");
    let config = scratch.config_for(&hosts, "settle: 10s\n");
    let daemon = Daemon::start(&scratch, &config);
    // One inotify instance per directory: each sees at most BURST_FILES events, below
    // the default max_queued_events of 16384.
    let watches: Vec<Inotify> = hosts[1..]
        .iter()
        .map(|h| {
            let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
            ino.add_watch(h, AddWatchFlags::IN_CREATE).unwrap();
            ino
        })
        .collect();
    let t0 = Instant::now();
    for n in &names {
        fs::rename(hosts[0].join(format!("{n}.__download__")), hosts[0].join(n)).unwrap();
    }
    let renamed = t0.elapsed();
    let mut counts = vec![0usize; watches.len()];
    let end = Instant::now() + Duration::from_secs(120);
    while counts.iter().any(|&c| c < BURST_FILES) {
        if Instant::now() > end {
            panic!(
                "burst incomplete after 120 s: {counts:?}\n{}",
                daemon
                    .log()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let mut fds: Vec<_> = watches
            .iter()
            .map(|w| nix::poll::PollFd::new(w.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8));
        for (i, w) in watches.iter().enumerate() {
            while let Ok(events) = w.read_events() {
                counts[i] += events.len();
            }
        }
    }
    let total = t0.elapsed();
    let overflowed = daemon.log().contains("overflowed");
    let mem = vm_hwm(daemon.pid());
    drop(daemon);
    drop(scratch);
    (
        total,
        format!(
            "(renames alone {}; daemon peak RSS {mem}{})",
            ms(renamed),
            if overflowed {
                "; fanotify queue OVERFLOWED"
            } else {
                ""
            }
        ),
    )
}

/// 100,000 files over 16 hosts, each file in its own host plus 7 others chosen by a fixed
/// pattern: half of the 1,600,000 names are missing. Returns the missing (src, dst, i).
fn reconcile_fixture(scratch: &Scratch) -> (Vec<PathBuf>, Vec<(u8, u8, u32)>) {
    let hosts = scratch.hosts(RECONCILE_HOSTS);
    let fds: Vec<_> = hosts.iter().map(|h| util_open(h)).collect();
    let mut missing = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..RECONCILE_FILES {
        let src = i % RECONCILE_HOSTS;
        let name = format!("dist-{i:06}.tar.gz");
        fs::write(hosts[src].join(&name), b"x").unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // 7 of the 15 others, from the bits of rng.
        let mut chosen = 0;
        for k in 1..RECONCILE_HOSTS {
            let dst = (src + k) % RECONCILE_HOSTS;
            let take = chosen < 7 && ((rng >> k) & 1 == 1 || RECONCILE_HOSTS - k <= 7 - chosen);
            if take {
                chosen += 1;
                nix::unistd::linkat(
                    &fds[src],
                    name.as_str(),
                    &fds[dst],
                    name.as_str(),
                    nix::fcntl::AtFlags::empty(),
                )
                .unwrap();
            } else {
                missing.push((src as u8, dst as u8, i as u32));
            }
        }
    }
    (hosts, missing)
}

/// The floor: read every host directory once, then the missing `linkat` calls.
fn reconcile_floor() -> Duration {
    let scratch = Scratch::tmpfs("bench-reconcile-floor");
    let (hosts, missing) = reconcile_fixture(&scratch);
    let fds: Vec<_> = hosts.iter().map(|h| util_open(h)).collect();
    let t0 = Instant::now();
    let mut entries = 0usize;
    for fd in &fds {
        let dir = nix::dir::Dir::openat(
            fd,
            ".",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        entries += dir.into_iter().count();
    }
    for (src, dst, i) in &missing {
        let name = format!("dist-{i:06}.tar.gz");
        nix::unistd::linkat(
            &fds[*src as usize],
            name.as_str(),
            &fds[*dst as usize],
            name.as_str(),
            nix::fcntl::AtFlags::empty(),
        )
        .unwrap();
    }
    let took = t0.elapsed();
    assert_eq!(
        entries,
        RECONCILE_FILES * RECONCILE_HOSTS / 2 + 2 * RECONCILE_HOSTS
    );
    took
}

fn reconcile() -> (Duration, String) {
    let scratch = Scratch::tmpfs("bench-reconcile");
    let (hosts, missing) = reconcile_fixture(&scratch);
    let daemon = start_up_reconcile(&scratch, &hosts);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("reconcile (start-up) done"))
        .unwrap()
        .to_owned();
    let secs: f64 = line
        .split("done in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let mem = vm_hwm(daemon.pid());
    for h in &hosts {
        assert_eq!(
            fs::read_dir(h).unwrap().count(),
            RECONCILE_FILES,
            "{}",
            h.display()
        );
    }
    drop(daemon);
    (
        Duration::from_secs_f64(secs),
        format!("{} links made; daemon peak RSS {mem}", missing.len()),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    if !util::require_root() {
        return;
    }
    println!(
        "distlink fan-out benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // `cargo bench --bench fanout -- memory`: only the memory figures.
    let only_memory = std::env::args().any(|a| a == "memory");
    let (pending, before, after) = memory_pending();
    println!(
        "memory   {CHURN_NAMES} names created and deleted while pending: daemon RSS {before} before, {after} after"
    );
    println!("memory   {MEMORY_NAMES} direct writes pending settle: daemon peak RSS {pending}");
    println!(
        "memory   start-up reconcile of {MEMORY_NAMES} names: daemon peak RSS {}",
        memory_reconcile()
    );
    if only_memory {
        return;
    }
    for n in [2, 4, 16] {
        latency(n);
    }
    let floor = floor();
    let (burst, note) = burst();
    let rfloor = reconcile_floor();
    let (rtime, rnote) = reconcile();
    println!(
        "reconcile {RECONCILE_FILES} files x {RECONCILE_HOSTS} hosts, half the links missing: distlink {}  floor (readdir + linkat) {}  ratio {:.2}x ({rnote})",
        ms(rtime),
        ms(rfloor),
        rtime.as_secs_f64() / rfloor.as_secs_f64()
    );
    println!(
        "burst    {BURST_FILES} files x {} links: distlink {}  floor (plain linkat loop) {}  ratio {:.2}x {note}",
        BURST_HOSTS - 1,
        ms(burst),
        ms(floor),
        burst.as_secs_f64() / floor.as_secs_f64()
    );
}
