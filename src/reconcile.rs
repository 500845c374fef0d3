//! Reconcile: bring the host directories to what live events would have made of them.
//!
//! Used at start-up (downloads completed while distlink was down), after a fanotify
//! queue overflow (events lost), when a host is added or its directory reappears, and by
//! `distlink sync`. It reads every host directory once, groups the entries by name, and
//! queues one job per name for the linker pool, with the hosts already holding that very
//! inode as a hint. The workers apply the same rules as for live events: the record on
//! the inode decides which hosts lack the file on purpose, and a file changed within the
//! settle time goes through the settle rule instead of being linked at once.

use crate::completion::NameRules;
use crate::hosts::HostSet;
use crate::linker::{Job, ScanTally, Trigger};
use crossbeam_channel::Sender;
use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the scan knows about one name.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// First host (in configuration order) holding a regular file under the name.
    src: u8,
    /// Its inode.
    ino: u64,
    /// Hosts holding that same inode under the name (bit per host index).
    present: u64,
}

/// Reads every host directory; returns the entries by name and how many were read.
fn scan(hosts: &HostSet, rules: &NameRules) -> (HashMap<Box<[u8]>, Entry>, u64) {
    let mut names: HashMap<Box<[u8]>, Entry> = HashMap::new();
    let mut read = 0u64;
    for (i, host) in hosts.iter().enumerate() {
        let dir = match Dir::openat(
            host.dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => {
                log::error!(
                    "reconcile: cannot read {} ({}): {e}",
                    host.path.display(),
                    host.name
                );
                continue;
            }
        };
        for entry in dir.into_iter() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    log::error!(
                        "reconcile: reading {} ({}): {e}",
                        host.path.display(),
                        host.name
                    );
                    break;
                }
            };
            read += 1;
            let name = entry.file_name().to_bytes();
            if rules.skip(name).is_some() {
                continue;
            }
            let regular = match entry.file_type() {
                Some(Type::File) => true,
                Some(_) => false,
                None => {
                    fstatat(host.dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
                    })
                }
            };
            if !regular {
                continue;
            }
            let ino = entry.ino();
            match names.get_mut(name) {
                Some(e) => {
                    if e.ino == ino {
                        e.present |= 1 << i;
                    }
                }
                None => {
                    names.insert(
                        name.into(),
                        Entry {
                            src: i as u8,
                            ino,
                            present: 1 << i,
                        },
                    );
                }
            }
        }
    }
    (names, read)
}

/// Runs one reconcile: scans, queues a job per name on `submit`, waits until the workers
/// have done them all (or `cancel` is set), logging progress every few seconds and the
/// totals at the end. `progress` is called about five times a second while waiting.
pub fn run(
    label: &str,
    hosts: Arc<HostSet>,
    rules: &NameRules,
    submit: &Sender<Job>,
    tally: &Arc<ScanTally>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&ScanTally),
) -> String {
    let started = Instant::now();
    log::info!(
        "reconcile ({label}): scanning {} host directories",
        hosts.len()
    );
    let (names, read) = scan(&hosts, rules);
    let total = names.len() as u64;
    log::info!("reconcile ({label}): {read} entries read, {total} names to check");
    for (name, e) in names {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        tally.submitted.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            hosts: Arc::clone(&hosts),
            src: usize::from(e.src),
            name,
            trigger: Trigger::Scan,
            present: e.present,
            scan: Some(Arc::clone(tally)),
        };
        if submit.send(job).is_err() {
            break;
        }
    }
    let mut last_log = Instant::now();
    loop {
        let done = tally.done.load(Ordering::Acquire);
        let submitted = tally.submitted.load(Ordering::Relaxed);
        if done >= submitted || cancel.load(Ordering::Relaxed) {
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            log::info!(
                "reconcile ({label}): {done}/{total} names checked, {} links made",
                tally.links.load(Ordering::Relaxed)
            );
        }
        progress(tally);
        // Waiting on the workers; they do the real work.
        std::thread::sleep(Duration::from_millis(20));
    }
    progress(tally);
    let line = summary(tally, total, started.elapsed());
    log::info!("reconcile ({label}) {line}");
    line
}

/// `done in 1.2s: 100 names, 40 files linked (200 links), 0 conflicts, 0 errors, 3 deferred`.
pub fn summary(tally: &ScanTally, names: u64, took: Duration) -> String {
    format!(
        "{} in {:.2}s: {names} names checked, {} files linked ({} links), {} conflicts, {} errors, {} deferred to settle",
        if tally.done.load(Ordering::Acquire) >= tally.submitted.load(Ordering::Relaxed) {
            "done"
        } else {
            "cancelled"
        },
        took.as_secs_f64(),
        tally.files.load(Ordering::Relaxed),
        tally.links.load(Ordering::Relaxed),
        tally.conflicts.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.deferred.load(Ordering::Relaxed),
    )
}
