//! `distlink sync [--dry-run]`: one reconcile, in the foreground, printing each fan-out.
//!
//! A file whose inode changed within the settle time may still be written, and so may one
//! whose ctime lies in the future: ctime is the kernel's clock at the last change, so a
//! future one means the clock was set back since, and says nothing about how long the
//! file has been quiet. Sync watches such files itself, with the monotonic clock, as the
//! daemon's settle tracker does: each is linked once it has been unchanged for `settle`.
//! One still changing after [`WAIT_PERIODS`] settle periods is left alone and listed,
//! and sync exits with [`EXIT_INCOMPLETE`].

use crate::completion::{Key, NameRules, Settle};
use crate::config::Config;
use crate::display::Name;
use crate::error::Error;
use crate::hosts::{HostMask, HostSet};
use crate::link::{Candidate, Trigger};
use crate::reconcile::Request;
use crate::report::{Style, report};
use crate::workers::{Job, Reply, Workers};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How many settle periods sync waits for files that are still changing.
pub const WAIT_PERIODS: u32 = 3;
/// Exit code when sync left files undone because they kept changing (`EX_TEMPFAIL`:
/// try again later).
pub const EXIT_INCOMPLETE: i32 = 75;

/// Links what a running daemon would have linked (or, with `dry_run`, prints it).
/// Files that may still be written are watched until quiet first (see the module doc).
/// Every line is printed here, from this thread. Returns the totals line.
pub fn sync(config_path: &Path, dry_run: bool) -> Result<String, Error> {
    let config = Config::load(config_path)?;
    let numbers = crate::host_numbers::HostNumbers::assign(
        &config.host_numbers,
        config.hosts.iter().map(|h| h.name.as_str()),
    )?;
    let hosts = Arc::new(HostSet::open(&config, &Arc::new(numbers))?);
    hosts.check_records()?;
    let workers =
        Workers::start(config.workers).map_err(|e| Error::setup("starting linker threads", e))?;
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    let mut waiting: Vec<Key> = Vec::new();
    let request = Request {
        label: "sync".into(),
        hosts: Arc::clone(&hosts),
        rules: NameRules::new(config.ignore.clone()),
        settle: config.settle,
        dry_run,
        merge: config.merge.then_some(config.settle),
    };
    let mut checked = 0u64;
    let mut summary = crate::reconcile::run(
        &request,
        &workers.sender(),
        &AtomicBool::new(false),
        &mut |o| {
            report(o, Style::Print);
            if o.fan_out().is_some_and(|f| f.deferred) {
                waiting.push((o.src, o.name.clone()));
            }
            checked += 1;
            if terminal && last.elapsed().as_millis() >= 200 {
                last = Instant::now();
                let _ = write!(std::io::stderr(), "\r{checked} names checked");
            }
        },
    );
    // Files that may still be written: watched until quiet, then linked like the rest.
    let (settled, still_changing) = wait_until_quiet(&hosts, waiting, config.settle);
    // Trigger::Settled and no settle time: the settle rule passed them.
    let (tx, rx) = crossbeam_channel::unbounded();
    for (host, name) in &settled {
        if let Some(src) = hosts.find(*host) {
            workers.submit(Job {
                candidate: Candidate {
                    hosts: Arc::clone(&hosts),
                    src,
                    name: name.clone(),
                    trigger: Trigger::Settled,
                    present: HostMask::default(),
                    settle: None,
                    dry_run,
                    merge: config.merge.then_some(config.settle),
                },
                reply: Reply::to(tx.clone()),
            });
        }
    }
    drop(tx);
    for o in rx {
        report(&o, Style::Print);
        summary.add_links(&o);
    }
    workers.shutdown();
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
    summary.took = started.elapsed();
    let mut line = summary.to_string();
    if !settled.is_empty() {
        line.push_str(&format!(
            "; {} waited for until quiet for {:?}",
            settled.len(),
            config.settle
        ));
    }
    if dry_run {
        line.push_str(" (dry run: nothing linked)");
    }
    if !still_changing.is_empty() {
        let mut list = String::new();
        for (host, name) in &still_changing {
            let host = hosts.find(*host).map_or("?", |i| &*hosts.get(i).name);
            list.push_str(&format!("\n  {host}/{}", Name(name)));
        }
        return Err(Error::Incomplete(format!(
            "{line}\n{} files were still changing after {WAIT_PERIODS} settle periods and were left alone; run sync again once they are complete:{list}",
            still_changing.len()
        )));
    }
    Ok(line)
}

/// Watches `files` until each has been unchanged for `settle` (monotonic clock), at most
/// [`WAIT_PERIODS`] periods. Returns (quiet, still changing); files gone meanwhile are
/// in neither.
fn wait_until_quiet(hosts: &HostSet, files: Vec<Key>, settle: Duration) -> (Vec<Key>, Vec<Key>) {
    let stat = |host, name: &[u8]| hosts.file_state(hosts.find(host)?, name);
    let start = Instant::now();
    let mut tracker = Settle::starting(settle, start);
    for (host, name) in files {
        let state = stat(host, &name);
        tracker.touch(host, &name, start, state);
    }
    let give_up = start + settle * WAIT_PERIODS;
    let mut quiet = Vec::new();
    while let Some(deadline) = tracker.next_deadline() {
        if deadline > give_up {
            break;
        }
        // A command waiting for a deadline: nothing else to do meanwhile.
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        quiet.extend(tracker.due(Instant::now(), stat));
    }
    (quiet, tracker.keys())
}
