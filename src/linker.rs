//! The worker pool that hardlinks a completed file into every other host directory.
//!
//! A worker re-checks the file when it acts (events are hints): it opens the name with
//! `O_PATH | O_NOFOLLOW`, checks that what it got is a plain regular file, and then links
//! *that inode* with `linkat(fd, "", dir, name, AT_EMPTY_PATH)`. A client replacing the
//! name with a symlink between the check and the link cannot redirect anything, and no
//! path is ever resolved outside a host directory descriptor.
//!
//! A name already present in a host is never replaced: the same inode means nothing to
//! do, another file is a conflict that is logged and left alone (a host in the middle of
//! its own download renames its copy over the name; Portage unlinks a bad one itself).

use crate::display::Name;
use crate::hosts::HostSet;
use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What made a file a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Renamed into its final name.
    Renamed,
    /// Written under its final name and quiet for the settle time.
    Settled,
    /// Found by a reconcile (start-up, overflow, host added, `distlink sync`).
    Scan,
}

/// How a fan-out is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The daemon: log lines.
    Log,
    /// `distlink sync`: one line per fan-out on stdout.
    Print,
    /// `distlink sync --dry-run`: print what would be linked, link nothing.
    DryRun,
}

/// One completed file to fan out. Owned: the worker needs nothing from the event thread.
#[derive(Debug)]
pub struct Job {
    pub hosts: Arc<HostSet>,
    pub src: usize,
    pub name: Box<[u8]>,
    pub trigger: Trigger,
    /// Hosts (bit per index) a directory scan saw holding this very inode: no need to
    /// try them.
    pub present: u64,
    /// The reconcile this job belongs to, if any.
    pub scan: Option<Arc<ScanTally>>,
}

impl Job {
    /// A job for a live event.
    pub fn live(hosts: Arc<HostSet>, src: usize, name: Box<[u8]>, trigger: Trigger) -> Job {
        Job {
            hosts,
            src,
            name,
            trigger,
            present: 0,
            scan: None,
        }
    }
}

/// A file handed back to the settle tracker.
pub type Deferred = crate::completion::Key;

/// Progress and totals of one reconcile, shared by the workers doing its jobs.
#[derive(Debug)]
pub struct ScanTally {
    /// A file whose inode changed less than this long ago may still be written: it goes
    /// through the settle rule instead of being linked now.
    pub settle: Duration,
    /// Where such files go (the event loop's settle tracker); `None`: skipped, reported.
    pub defer: Option<Sender<Deferred>>,
    pub report: Report,
    pub submitted: AtomicU64,
    pub done: AtomicU64,
    pub files: AtomicU64,
    pub links: AtomicU64,
    pub conflicts: AtomicU64,
    pub errors: AtomicU64,
    pub deferred: AtomicU64,
    /// Distinct files and their bytes seen by this reconcile: the pool's size.
    pub pool_files: AtomicU64,
    pub pool_bytes: AtomicU64,
}

impl ScanTally {
    pub fn new(settle: Duration, defer: Option<Sender<Deferred>>, report: Report) -> ScanTally {
        ScanTally {
            settle,
            defer,
            report,
            submitted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            files: AtomicU64::new(0),
            links: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            pool_files: AtomicU64::new(0),
            pool_bytes: AtomicU64::new(0),
        }
    }
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub links: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub skipped: bool,
    pub deferred: bool,
}

/// Counters since start, shared by all threads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files fanned out (at least one link made).
    pub files: AtomicU64,
    /// Links made.
    pub links: AtomicU64,
    /// Names that held another file (left alone).
    pub conflicts: AtomicU64,
    /// Link attempts that failed.
    pub errors: AtomicU64,
    /// Candidates not linked (not a regular file, setuid, vanished).
    pub skipped: AtomicU64,
}

/// What happened to one host's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkResult {
    Linked,
    AlreadyThere,
    Conflict,
    Failed(Errno),
}

/// Why a candidate was not linked at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotLinked {
    Gone,
    /// Opening or inspecting it failed for another reason than its absence (EMFILE,
    /// EACCES, EIO, ...): an error, counted as one.
    Failed(Errno),
    NotRegular(&'static str),
    SetId,
}

fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        SFlag::S_IFREG => "a regular file",
        _ => "an unknown file type",
    }
}

/// Opens `name` in host `src` without following anything and checks it may be linked.
pub fn open_candidate(
    hosts: &HostSet,
    src: usize,
    name: &[u8],
) -> Result<(OwnedFd, FileStat), NotLinked> {
    let dir = hosts.get(src).dir.as_fd();
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => NotLinked::Gone,
        e => NotLinked::Failed(e),
    })?;
    let st = fstat(&fd).map_err(NotLinked::Failed)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(NotLinked::NotRegular(kind(&st)));
    }
    if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        return Err(NotLinked::SetId);
    }
    if st.st_nlink == 0 {
        return Err(NotLinked::Gone);
    }
    Ok((fd, st))
}

/// Links the inode behind `file` as `name` into host `dst`.
pub fn link_one(
    hosts: &HostSet,
    file: &OwnedFd,
    st: &FileStat,
    dst: usize,
    name: &[u8],
) -> LinkResult {
    let dir = hosts.get(dst).dir.as_fd();
    match nix::unistd::linkat(file.as_fd(), c"", dir, name, AtFlags::AT_EMPTY_PATH) {
        Ok(()) => LinkResult::Linked,
        Err(Errno::EEXIST) => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(there) if there.st_dev == st.st_dev && there.st_ino == st.st_ino => {
                LinkResult::AlreadyThere
            }
            Ok(_) => LinkResult::Conflict,
            // Removed between linkat and fstatat: someone is busy with that name; leave it.
            Err(_) => LinkResult::Conflict,
        },
        Err(e) => LinkResult::Failed(e),
    }
}

fn hint(e: Errno) -> &'static str {
    match e {
        Errno::EMLINK => " (the file has as many links as the filesystem allows)",
        Errno::ENOSPC | Errno::EDQUOT => " (no room for another directory entry)",
        Errno::EPERM | Errno::EACCES => {
            " (fs.protected_hardlinks needs CAP_FOWNER for files of other users)"
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

/// Whether the inode changed less than `settle` ago (ctime cannot be set by a client). A
/// ctime in the future (the clock was set back) gives no age: it counts as recent, and
/// the caller's settle tracker, on the monotonic clock, decides.
fn changed_recently(st: &FileStat, settle: Duration) -> bool {
    let ctime = UNIX_EPOCH
        + Duration::new(
            st.st_ctime.max(0) as u64,
            st.st_ctime_nsec.clamp(0, 999_999_999) as u32,
        );
    SystemTime::now()
        .duration_since(ctime)
        .map_or(true, |age| age < settle)
}

/// Fans one completed file out to every other host that should get it; logs, records.
///
/// A host gets a link unless the inode's record ([`crate::record`]) names it: then it
/// either has the file or deleted it on purpose. After the links, the record is updated
/// to name every host that now holds the inode.
pub fn fan_out(job: &Job) -> Outcome {
    let mut out = Outcome::default();
    let hosts = &job.hosts;
    let src = hosts.get(job.src);
    let name = Name(&job.name);
    let report = job.scan.as_ref().map_or(Report::Log, |s| s.report);
    let (file, st) = match open_candidate(hosts, job.src, &job.name) {
        Ok(x) => x,
        Err(why) => {
            match why {
                NotLinked::Gone => {
                    log::debug!("{}/{name}: gone before it could be linked", src.name)
                }
                NotLinked::NotRegular(what) => {
                    log::info!(
                        "{}/{name}: not linked: {what}, only regular files are",
                        src.name
                    )
                }
                NotLinked::SetId => {
                    log::warn!("{}/{name}: not linked: setuid/setgid file", src.name)
                }
                NotLinked::Failed(e) => {
                    log::error!(
                        "{}/{name}: cannot open it to link it: {e:?}: {}{}",
                        src.name,
                        e.desc(),
                        hint(e)
                    );
                    out.errors += 1;
                    return out;
                }
            }
            out.skipped = true;
            return out;
        }
    };
    if let Some(scan) = &job.scan {
        scan.pool_files.fetch_add(1, Ordering::Relaxed);
        scan.pool_bytes
            .fetch_add(st.st_size.max(0) as u64, Ordering::Relaxed);
    }
    // A file found by a scan may still be written; one the settle rule passed may not.
    if let Some(scan) = &job.scan
        && job.trigger == Trigger::Scan
        && changed_recently(&st, scan.settle)
    {
        out.deferred = true;
        match &scan.defer {
            Some(tx) => {
                let _ = tx.send((src.id, job.name.clone()));
            }
            None => println!(
                "skipped {}/{name}: changed in the last {:?}, may still be written",
                src.name, scan.settle
            ),
        }
        return out;
    }
    let record = match crate::record::read(file.as_fd()) {
        Ok(Some(r)) if r.describes(st.st_ino, &job.name) => Some(r),
        Ok(_) => None,
        Err(e) => {
            log::warn!(
                "{}/{name}: cannot read its record ({e}); linking into every host",
                src.name
            );
            None
        }
    };
    let mut holders: Vec<&str> = vec![&src.name];
    let mut linked: Vec<&str> = Vec::new();
    for (i, dst) in hosts.iter().enumerate() {
        if i == job.src || record.as_ref().is_some_and(|r| r.has(&dst.name)) {
            continue;
        }
        if job.present & (1u64 << i) != 0 {
            holders.push(&dst.name);
            continue;
        }
        if report == Report::DryRun {
            match fstatat(dst.dir.as_fd(), &*job.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => linked.push(&dst.name),
                Ok(there) if there.st_ino == st.st_ino => holders.push(&dst.name),
                _ => {}
            }
            continue;
        }
        match link_one(hosts, &file, &st, i, &job.name) {
            LinkResult::Linked => {
                out.links += 1;
                linked.push(&dst.name);
                holders.push(&dst.name);
            }
            LinkResult::AlreadyThere => {
                holders.push(&dst.name);
            }
            LinkResult::Conflict => {
                out.conflicts += 1;
                log::warn!(
                    host = &*dst.name, file:% = name;
                    "conflict: {}/{name} is another file than {}/{name}; left alone",
                    dst.name,
                    src.name
                );
            }
            LinkResult::Failed(Errno::ENOENT) if fstat(&file).is_ok_and(|s| s.st_nlink == 0) => {
                log::debug!("{}/{name}: deleted while being linked", src.name);
                return out;
            }
            LinkResult::Failed(e) => {
                out.errors += 1;
                log::error!(
                    host = &*dst.name, file:% = name;
                    "failed to link {}/{name} -> {}/{name}: {}: {}{}",
                    src.name,
                    dst.name,
                    e,
                    e.desc(),
                    hint(e)
                );
            }
        }
    }
    if !linked.is_empty() {
        let why = match job.trigger {
            Trigger::Renamed => "renamed",
            Trigger::Settled => "settled",
            Trigger::Scan => "reconcile",
        };
        match report {
            Report::Log => log::info!(
                target: crate::logging::FANOUT,
                host = &*src.name, file:% = name;
                "{}/{name} ({why}): linked into {}",
                src.name,
                linked.join(", ")
            ),
            Report::Print => println!("linked {}/{name} -> {}", src.name, linked.join(", ")),
            Report::DryRun => println!("would link {}/{name} -> {}", src.name, linked.join(", ")),
        }
    }
    if report != Report::DryRun {
        let mut names: Vec<String> = record.map(|r| r.hosts).unwrap_or_default();
        let before = names.len();
        for h in holders {
            if !names.iter().any(|n| n == h) {
                names.push(h.to_owned());
            }
        }
        if names.len() != before || before == 0 {
            let rec = crate::record::Record {
                ino: st.st_ino,
                name: job.name.to_vec(),
                hosts: names,
            };
            if let Err(e) = crate::record::write(file.as_fd(), &rec) {
                out.errors += 1;
                log::error!(
                    "{}/{name}: cannot record the fan-out ({XATTR_NAME}): {e}",
                    src.name,
                    XATTR_NAME = "user.distlink"
                );
            }
        }
    }
    out
}

/// Adds one job's outcome to the daemon's counters and to its reconcile's tally.
fn account(job: &Job, out: &Outcome, counters: &Counters) {
    let add = |c: &AtomicU64, n: u64| {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    };
    add(&counters.links, out.links);
    add(&counters.conflicts, out.conflicts);
    add(&counters.errors, out.errors);
    add(&counters.skipped, u64::from(out.skipped));
    add(&counters.files, u64::from(out.links > 0));
    if let Some(scan) = &job.scan {
        add(&scan.links, out.links);
        add(&scan.conflicts, out.conflicts);
        add(&scan.errors, out.errors);
        add(&scan.deferred, u64::from(out.deferred));
        add(&scan.files, u64::from(out.links > 0));
        scan.done.fetch_add(1, Ordering::Release);
    }
}

/// The pool. Dropping the sender (in [`Linker::shutdown`]) lets every worker finish the
/// jobs already queued and exit.
#[derive(Debug)]
pub struct Linker {
    tx: Sender<Job>,
    workers: Vec<JoinHandle<()>>,
}

impl Linker {
    /// Starts `n` named worker threads.
    pub fn start(n: usize, counters: Arc<Counters>) -> std::io::Result<Linker> {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            let counters = Arc::clone(&counters);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("link-{i}"))
                    .spawn(move || {
                        for job in rx {
                            let out = fan_out(&job);
                            account(&job, &out, &counters);
                        }
                    })?,
            );
        }
        Ok(Linker { tx, workers })
    }

    /// Queues a job. Never blocks (the event thread must keep draining the kernel queue).
    pub fn submit(&self, job: Job) {
        // The receivers live as long as the workers, which outlive every submit.
        let _ = self.tx.send(job);
    }

    /// A sender for another thread (a reconcile) to queue jobs with.
    pub fn sender(&self) -> Sender<Job> {
        self.tx.clone()
    }

    /// Jobs waiting for a worker.
    pub fn backlog(&self) -> usize {
        self.tx.len()
    }

    /// Finishes every queued job, then joins the workers.
    pub fn shutdown(self) {
        drop(self.tx);
        for w in self.workers {
            if w.join().is_err() {
                log::error!("a linker thread panicked");
            }
        }
    }
}
