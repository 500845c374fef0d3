//! `distlink sync [--dry-run]`: one reconcile, in the foreground, printing each fan-out.

use crate::completion::NameRules;
use crate::config::Config;
use crate::error::Error;
use crate::hosts::HostSet;
use crate::linker::{Counters, Linker, Report, ScanTally};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Links what a running daemon would have linked (or, with `dry_run`, prints it).
/// Files changed within the settle time are skipped and listed. Returns the totals line.
pub fn sync(config_path: &Path, dry_run: bool) -> Result<String, Error> {
    let config = Config::load(config_path)?;
    let hosts = Arc::new(HostSet::open(&config)?);
    hosts.check_records()?;
    let counters = Arc::new(Counters::default());
    let linker = Linker::start(config.workers, Arc::clone(&counters))
        .map_err(|e| Error::setup("starting linker threads", e))?;
    let report = if dry_run {
        Report::DryRun
    } else {
        Report::Print
    };
    let tally = Arc::new(ScanTally::new(config.settle, None, report));
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    let mut progress = |t: &ScanTally| {
        if terminal && last.elapsed().as_millis() >= 200 {
            last = Instant::now();
            let _ = write!(
                std::io::stderr(),
                "\r{}/{} names checked",
                t.done.load(Ordering::Acquire),
                t.submitted.load(Ordering::Relaxed)
            );
        }
    };
    let _ = crate::reconcile::run(
        "sync",
        Arc::clone(&hosts),
        &NameRules::new(config.ignore.clone()),
        &linker.sender(),
        &tally,
        &AtomicBool::new(false),
        &mut progress,
    );
    linker.shutdown();
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
    let names = tally.submitted.load(Ordering::Relaxed);
    let mut line = crate::reconcile::summary(&tally, names, started.elapsed());
    if dry_run {
        line.push_str(" (dry run: nothing linked)");
    }
    Ok(line)
}
