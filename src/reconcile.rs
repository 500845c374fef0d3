//! Reconcile: bring the host directories to what live events would have made of them.
//!
//! Used at start-up (downloads completed while distlink was down), after a fanotify
//! queue overflow (events lost), when a host is added or its directory reappears, and by
//! `distlink sync`. It reads every host directory once into a [`Census`], then queues one
//! fan-out per name on the worker threads, with the hosts already holding that very inode
//! as a hint, and hands each outcome to the caller. The workers apply the same rules as
//! for live events: the record on the inode decides which hosts lack the file on
//! purpose, and a file changed within the settle time is handed back (its outcome says
//! `deferred`) to go through the settle rule instead of being linked at once.
//!
//! With a [pool](crate::pool), the pool directory is read last: a name only the pool
//! holds is fanned out nowhere, and is removed if no host holds its inode any more and
//! `keep` is over (see `pool_ops.rs`); those still kept are handed back with their time.
//!
//! At most [`IN_FLIGHT`] fan-outs are queued at a time, so memory follows the census,
//! not the number of jobs; the reconcile is done when every job's reply sender has
//! been dropped.

use crate::census::Census;
use crate::completion::NameRules;
use crate::hosts::HostSet;
use crate::link::{Candidate, Outcome, Trigger};
use crate::workers::{Job, Reply};
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Fan-outs queued at once by one reconcile.
pub const IN_FLIGHT: usize = 1024;

/// What one reconcile is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// Why (start-up, queue overflow, …), for the log.
    pub label: String,
    pub hosts: Arc<HostSet>,
    pub rules: NameRules,
    /// A file changed less than this long ago may still be written.
    pub settle: Duration,
    pub dry_run: bool,
    /// Merge byte-identical copies quiet this long (`merge:`, see `merge.rs`).
    pub merge: Option<Duration>,
}

/// The totals of one reconcile.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub names: u64,
    pub checked: u64,
    pub files: u64,
    pub links: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub deferred: u64,
    /// Distinct files and their bytes seen: the pool's size.
    pub pool_files: u64,
    pub pool_bytes: u64,
    /// Pool names removed (no host held them, `keep` was over), and their bytes.
    pub pool_removed: u64,
    pub pool_removed_bytes: u64,
    /// Pool names no host holds, still kept: when to look at each again.
    pub pool_expiring: Vec<(Box<[u8]>, std::time::SystemTime)>,
    pub took: Duration,
}

impl Summary {
    /// Adds the outcome of one name checked.
    pub fn add(&mut self, o: &Outcome) {
        self.checked += 1;
        if let Some(f) = o.fan_out().filter(|f| f.from_pool.is_none()) {
            self.pool_files += 1;
            self.pool_bytes += f.size;
            self.deferred += u64::from(f.deferred);
        }
        self.add_links(o);
    }

    /// Adds what a fan-out linked and failed (for a deferred file's second attempt).
    pub fn add_links(&mut self, o: &Outcome) {
        self.links += o.links();
        self.files += u64::from(o.links() > 0);
        self.errors += o.errors();
        self.conflicts += o.fan_out().map_or(0, |f| f.conflicts.len() as u64);
    }
}

impl std::fmt::Display for Summary {
    /// `done in 1.2s: 100 names checked, 40 files linked (200 links), 0 conflicts, …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {:.2}s: {} names checked, {} files linked ({} links), {} conflicts, {} errors, {} deferred to settle",
            if self.checked >= self.names {
                "done"
            } else {
                "cancelled"
            },
            self.took.as_secs_f64(),
            self.names,
            self.files,
            self.links,
            self.conflicts,
            self.errors,
            self.deferred,
        )?;
        if self.pool_removed > 0 {
            write!(
                f,
                ", {} names no host holds removed from the pool ({} bytes)",
                self.pool_removed, self.pool_removed_bytes
            )?;
        }
        Ok(())
    }
}

/// Runs one reconcile: scans, queues the fan-outs on `jobs` (stopping early when
/// `cancel` is set), hands every outcome to `on_outcome`, and logs progress every few
/// seconds and the totals at the end.
pub fn run(
    req: &Request,
    jobs: &Sender<Job>,
    cancel: &AtomicBool,
    on_outcome: &mut dyn FnMut(&Outcome),
) -> Summary {
    let started = Instant::now();
    let label = &req.label;
    log::info!(
        "reconcile ({label}): scanning {} host directories",
        req.hosts.len()
    );
    let (census, unreadable) = crate::scan::scan(&req.hosts, &req.rules);
    for u in unreadable {
        log::error!(
            "reconcile: cannot read {} ({}): {}",
            u.path.display(),
            u.host,
            u.error
        );
    }
    let mut summary = Summary {
        names: (census.len()
            + if req.dry_run {
                0
            } else {
                census.requests.len()
            }) as u64,
        ..Summary::default()
    };
    log::info!(
        "reconcile ({label}): {} entries read, {} names to check",
        census.entries,
        summary.names
    );
    let mut last_log = Instant::now();
    let mut pool_only = Vec::new();
    fan_out_all(req, &census, jobs, cancel, &mut pool_only, &mut |o| {
        summary.add(o);
        on_outcome(o);
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            log::info!(
                "reconcile ({label}): {}/{} names checked, {} links made",
                summary.checked,
                summary.names,
                summary.links
            );
        }
    });
    summary.names -= pool_only.len() as u64;
    if !req.dry_run && !cancel.load(Ordering::Relaxed) {
        sweep_pool(&req.hosts, &pool_only, &mut summary);
    }
    summary.took = started.elapsed();
    log::info!("reconcile ({label}) {summary}");
    summary
}

/// Names only the pool holds: removed if no host holds their inode and `keep` is over;
/// those kept, or busy now, are handed back with when to look again.
fn sweep_pool(hosts: &HostSet, names: &[Box<[u8]>], summary: &mut Summary) {
    use crate::pool_ops::{Expired, expire};
    for name in names {
        let now = std::time::SystemTime::now();
        let e = expire(hosts, name, now);
        crate::report::pool_expired(name, &e);
        match e {
            Expired::Removed(size) => {
                summary.pool_removed += 1;
                summary.pool_removed_bytes += size;
            }
            Expired::At(t) => summary.pool_expiring.push((name.clone(), t)),
            Expired::Busy | Expired::Failed(_) => summary
                .pool_expiring
                .push((name.clone(), now + e.retry_after())),
            Expired::Held => {}
        }
    }
}

/// Queues a fan-out per census name, at most [`IN_FLIGHT`] at a time, and hands each
/// outcome to `on_outcome` until every job has replied. Names only the pool holds go to
/// `pool_only` instead.
fn fan_out_all(
    req: &Request,
    census: &Census,
    jobs: &Sender<Job>,
    cancel: &AtomicBool,
    pool_only: &mut Vec<Box<[u8]>>,
    on_outcome: &mut dyn FnMut(&Outcome),
) {
    let (tx, rx) = crossbeam_channel::unbounded::<Outcome>();
    let mut in_flight = 0usize;
    // Queues one job once fewer than IN_FLIGHT are out; false when no more can be.
    let mut queue = |candidate: Candidate| -> bool {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        while in_flight >= IN_FLIGHT {
            match rx.recv() {
                Ok(o) => {
                    in_flight -= 1;
                    on_outcome(&o);
                }
                Err(_) => return false,
            }
        }
        let job = Job {
            candidate,
            reply: Reply::to(tx.clone()),
        };
        in_flight += 1;
        jobs.send(job).is_ok()
    };
    let pool_at = req.hosts.pool_at();
    for (name, holding) in census.iter() {
        if Some(usize::from(holding.src)) == pool_at {
            pool_only.push(name.into());
            continue;
        }
        let queued = queue(Candidate {
            hosts: Arc::clone(&req.hosts),
            src: usize::from(holding.src),
            name: name.into(),
            trigger: Trigger::Scan,
            present: holding.present,
            settle: Some(req.settle),
            dry_run: req.dry_run,
            merge: req.merge,
        });
        if !queued {
            break;
        }
    }
    // Symlinks asking for the pool's file, made while no event could say so.
    for (host, name) in census.requests.iter().filter(|_| !req.dry_run) {
        let queued = queue(Candidate {
            hosts: Arc::clone(&req.hosts),
            src: *host,
            name: name.clone(),
            trigger: Trigger::Symlink,
            present: Default::default(),
            settle: None,
            dry_run: false,
            merge: None,
        });
        if !queued {
            break;
        }
    }
    // Done when every job has replied and dropped its sender.
    drop(tx);
    for o in rx {
        on_outcome(&o);
    }
}
