//! Reporting fan-outs: the log lines (and `distlink sync`'s stdout lines) for an
//! [`Outcome`], and the counters it adds to. Called by whoever asked for the fan-out (the
//! event loop, a reconcile, `sync`), never by the worker that did it.
//!
//! Every log statement here is a per-file line: `logging.rs` limits each to a burst per
//! second and summarises the rest, since a client decides how many files there are.

use crate::display::Name;
use crate::link::{NotLinked, Outcome};
use nix::errno::Errno;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the line saying what was linked goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The daemon: the log.
    Log,
    /// `distlink sync`: stdout (`linked …`, or `would link …` in a dry run); problems
    /// still go to the log.
    Print,
}

fn hint(e: Errno) -> &'static str {
    match e {
        Errno::EMLINK => " (the file has as many links as the filesystem allows)",
        Errno::ENOSPC | Errno::EDQUOT => " (no room for another directory entry)",
        Errno::EPERM => " (fs.protected_hardlinks needs CAP_FOWNER for files of other users)",
        Errno::EACCES => {
            " (no write permission on the host directory for the user distlink links as)"
        }
        Errno::EXDEV => " (host directories must be on one filesystem, reached through one mount)",
        Errno::ENOENT => " (the host directory is gone)",
        Errno::EROFS => " (the filesystem is read-only)",
        Errno::EMFILE | Errno::ENFILE => {
            " (too many open files: raise LimitNOFILE= or the open-file limit)"
        }
        _ => "",
    }
}

/// At most this many host names in one line; the rest are counted.
const LISTED: usize = 16;

/// `a, b, c` or, past [`LISTED`] names, `a, b, … and 1007 more (1023 hosts)`.
pub fn host_list<S: AsRef<str>>(hosts: &[S]) -> String {
    let mut out = hosts
        .iter()
        .take(LISTED)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if hosts.len() > LISTED {
        out.push_str(&format!(
            " and {} more ({} hosts)",
            hosts.len() - LISTED,
            hosts.len()
        ));
    }
    out
}

/// Logs (and, in [`Style::Print`], prints) what one fan-out did.
pub fn report(o: &Outcome, style: Style) {
    let src = &o.src_name;
    let name = Name(&o.name);
    let f = match &o.result {
        Ok(f) => f,
        Err(NotLinked::Gone) => {
            log::debug!("{src}/{name}: gone before it could be linked");
            return;
        }
        Err(NotLinked::NotRegular(what)) => {
            log::info!("{src}/{name}: not linked: {what}, only regular files are");
            return;
        }
        Err(NotLinked::SetId) => {
            log::warn!("{src}/{name}: not linked: setuid/setgid file");
            return;
        }
        Err(NotLinked::Failed(e)) => {
            log::error!(
                "{src}/{name}: cannot open it to link it: {e:?}: {}{}",
                e.desc(),
                hint(*e)
            );
            return;
        }
    };
    if let Some(taken) = &f.from_pool {
        report_taken(o, taken, style);
        return;
    }
    if f.deferred {
        log::debug!(
            "{src}/{name}: not complete yet (changed within the settle time, or a downloader's control file is beside it); waiting"
        );
        return;
    }
    if let Some(tag) = f.record_foreign {
        log::error!(
            "{src}/{name}: its record was written under another host numbering (tag {tag:08x}); \
             who deleted it cannot be told, so it is linked nowhere. Restore the host numbers \
             file, or remove the record (setfattr -x user.distlink) to treat it as new"
        );
        return;
    }
    if f.record_full {
        log::error!(
            "{src}/{name}: not fanned out: its inode's record has no room for another name \
             (more than {} bytes); hosts that deleted its other names keep them deleted",
            crate::record::MAX_RECORD
        );
        return;
    }
    if f.record_denied {
        log::error!(
            "{src}/{name}: not fanned out: distlink may not write its record (user.distlink \
             needs write access to the file; with user: in the configuration, the file must \
             be writable by that user): chown it to that user, or run distlink as root"
        );
        return;
    }
    if let Some(e) = &f.record_unreadable {
        log::warn!("{src}/{name}: cannot read its record ({e}); linking into every host");
    }
    // A conflict is logged once per name and host (a sync prints every one).
    for dst in &f.conflicts {
        if style == Style::Print || !conflicts::known(dst, &o.name) {
            log::warn!(
                host = &**dst, file:% = name;
                "conflict: {dst}/{name} is another file than {src}/{name} (different bytes, or not complete yet); left alone"
            );
        }
    }
    if !f.merged.is_empty() {
        let list = host_list(&f.merged);
        let freed = f.merged_bytes;
        match (style, o.dry_run) {
            (Style::Log, _) => log::info!(
                host = &**src, file:% = name;
                "{src}/{name}: byte-identical copies merged into one inode; replaced by a link in {list} (freed {freed} bytes)"
            ),
            (Style::Print, false) => println!("merged {src}/{name} = {list} (freed {freed} bytes)"),
            (Style::Print, true) => {
                println!("would merge {src}/{name} = {list} (frees up to {freed} bytes)")
            }
        }
    }
    if f.pool_replaced {
        let pool = crate::pool::NAME;
        match (style, o.dry_run) {
            (Style::Log, _) => log::info!(
                host = &**src, file:% = name;
                "{pool}/{name}: its copy, which no host held, is replaced by {src}/{name}"
            ),
            (Style::Print, false) => println!("replaced {pool}/{name} by {src}/{name}"),
            (Style::Print, true) => println!("would replace {pool}/{name} by {src}/{name}"),
        }
    }
    for (dst, why) in &f.merge_failed {
        log::error!(
            host = &**dst, file:% = name;
            "merging {dst}/{name} with {src}/{name} failed: {why}; both copies kept"
        );
    }
    for (dst, e) in &f.failed {
        log::error!(
            host = &**dst, file:% = name;
            "failed to link {src}/{name} -> {dst}/{name}: {e}{}{}",
            hint(*e),
            if style == Style::Log { "; tried again later" } else { "" }
        );
    }
    if f.vanished {
        log::debug!("{src}/{name}: deleted while being linked");
        return;
    }
    if !f.linked.is_empty() {
        let list = host_list(&f.linked);
        match (style, o.dry_run) {
            (Style::Log, _) => log::info!(
                target: crate::logging::FANOUT,
                host = &**src, file:% = name;
                "{src}/{name} ({}): linked into {list}",
                o.trigger.describe()
            ),
            (Style::Print, false) => println!("linked {src}/{name} -> {list}"),
            (Style::Print, true) => println!("would link {src}/{name} -> {list}"),
        }
    }
    if let Some(e) = &f.record_unwritable {
        log::error!(
            "{src}/{name}: cannot record the fan-out (user.distlink): {e}{}",
            if style == Style::Log {
                "; tried again later"
            } else {
                ""
            }
        );
    }
}

/// What became of a symlink asking for the pool's file.
fn report_taken(o: &Outcome, taken: &crate::pool_ops::Taken, style: Style) {
    use crate::pool_ops::Taken;
    let src = &o.src_name;
    let name = Name(&o.name);
    let pool = crate::pool::NAME;
    match taken {
        Taken::Done {
            size,
            record_unwritable,
        } => {
            match (style, o.dry_run) {
                (Style::Log, _) => log::info!(
                    target: crate::logging::FANOUT,
                    host = &**src, file:% = name;
                    "{src}/{name}: taken from the pool: the symlink Portage made is now a link of {pool}/{name} ({size} bytes not downloaded)"
                ),
                (Style::Print, false) => println!("took {src}/{name} from the pool"),
                (Style::Print, true) => println!("would take {src}/{name} from the pool"),
            }
            if let Some(e) = record_unwritable {
                log::error!(
                    "{src}/{name}: cannot record that the host holds it (user.distlink): {e}; tried again later"
                );
            }
        }
        Taken::NotInPool => log::warn!(
            "{src}/{name}: a symlink into the pool, but the pool holds no regular file {name}; left alone"
        ),
        Taken::Changed => log::debug!("{src}/{name}: the symlink changed meanwhile; left alone"),
        Taken::Refused(why) => {
            log::error!("{src}/{name}: not taken from the pool: {why}; the symlink is left alone")
        }
        Taken::Failed(e) => log::error!(
            "{src}/{name}: cannot replace the symlink by a link of {pool}/{name}: {e}{}{}",
            hint(*e),
            if style == Style::Log {
                "; tried again later"
            } else {
                ""
            }
        ),
    }
}

/// Logs what became of a look at the pool's `name` (a removal, or why none was made).
pub fn pool_expired(name: &[u8], e: &crate::pool_ops::Expired) {
    use crate::pool_ops::Expired;
    let (pool, name) = (crate::pool::NAME, Name(name));
    match e {
        Expired::Removed(size) => log::info!(
            target: crate::logging::FANOUT,
            "{pool}/{name}: removed, no host holds it ({size} bytes)"
        ),
        Expired::Failed(e) => {
            log::error!("{pool}/{name}: cannot remove it: {e}; tried again later")
        }
        Expired::Held | Expired::At(_) | Expired::Busy => {}
    }
}

/// Counters since start (metrics: shared with the status writer).
#[derive(Debug, Default)]
pub struct Counters {
    /// Files fanned out (at least one link made).
    pub files: AtomicU64,
    /// Links made.
    pub links: AtomicU64,
    /// Names (per host) that held another file, left alone: each counted once.
    pub conflicts: AtomicU64,
    /// Copies replaced by a link to an identical file, and the bytes that freed.
    pub merged: AtomicU64,
    pub merged_bytes: AtomicU64,
    /// Link attempts, record writes and opens that failed.
    pub errors: AtomicU64,
    /// Candidates not linked (not a regular file, setuid, vanished).
    pub skipped: AtomicU64,
    /// Files found changing by a scan and handed to the settle rule.
    pub deferred: AtomicU64,
    /// Symlinks into the pool replaced by a link of the pool's file, and their bytes
    /// (not downloaded).
    pub pool_taken: AtomicU64,
    pub pool_taken_bytes: AtomicU64,
    /// Pool names removed because no host held them any more, and their bytes.
    pub pool_removed: AtomicU64,
    pub pool_removed_bytes: AtomicU64,
}

impl Counters {
    /// Adds one outcome.
    pub fn add(&self, o: &Outcome) {
        let add = |c: &AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        let links = o.links();
        add(&self.links, links);
        add(&self.files, u64::from(links > 0));
        add(&self.errors, o.errors());
        match &o.result {
            Err(NotLinked::Failed(_)) => {}
            Err(_) => add(&self.skipped, 1),
            Ok(f) => {
                let new = f
                    .conflicts
                    .iter()
                    .filter(|dst| conflicts::note(dst, &o.name))
                    .count();
                add(&self.conflicts, new as u64);
                conflicts::resolved(&o.name, f.merged.iter().chain(&f.linked));
                if !o.dry_run {
                    add(&self.merged, f.merged.len() as u64);
                    add(&self.merged_bytes, f.merged_bytes);
                }
                add(&self.deferred, u64::from(f.deferred));
                if let Some(crate::pool_ops::Taken::Done { size, .. }) = &f.from_pool
                    && !o.dry_run
                {
                    add(&self.pool_taken, 1);
                    add(&self.pool_taken_bytes, *size);
                }
            }
        }
    }
}

/// Conflicts already logged and counted, by name and host, so that one is reported once,
/// not at every event and reconcile; forgotten when the name is merged or linked there.
/// Keyed by name, so a fan-out with nothing noted costs one lock and one lookup, and no
/// allocation.
mod conflicts {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Hosts with a noted conflict, by name.
    type Noted = HashMap<Box<[u8]>, Vec<Arc<str>>>;

    static SEEN: Mutex<Option<Noted>> = Mutex::new(None);

    /// Whether this conflict was noted before.
    pub fn known(host: &str, name: &[u8]) -> bool {
        let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        seen.as_ref()
            .and_then(|s| s.get(name))
            .is_some_and(|hosts| hosts.iter().any(|h| **h == *host))
    }

    /// Notes a conflict; true if it is new.
    pub fn note(host: &Arc<str>, name: &[u8]) -> bool {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let hosts = seen
            .get_or_insert_with(HashMap::new)
            .entry(name.into())
            .or_default();
        if hosts.iter().any(|h| h == host) {
            return false;
        }
        hosts.push(Arc::clone(host));
        true
    }

    /// `name` now holds the shared file in `hosts`.
    pub fn resolved<'a>(name: &[u8], hosts: impl Iterator<Item = &'a Arc<str>>) {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = seen.as_mut() else { return };
        let Some(noted) = s.get_mut(name) else { return };
        for h in hosts {
            noted.retain(|n| n != h);
        }
        if noted.is_empty() {
            s.remove(name);
        }
    }
}
