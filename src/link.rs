//! Carrying out one fan-out: the system calls, and what happened as an [`Outcome`]
//! value. Nothing here logs or prints; the caller reports (see `report.rs`).
//!
//! The file is re-checked when it is acted on (events are hints): the name is opened with
//! `O_PATH | O_NOFOLLOW`, what it got must be a plain regular file, and then *that inode*
//! is linked with `linkat(fd, "", dir, name, AT_EMPTY_PATH)`. A client replacing the name
//! with a symlink between the check and the link cannot redirect anything, and no path is
//! ever resolved outside a host directory descriptor. A name already present in a host
//! is never replaced. Which hosts get a link is decided by [`crate::plan`]; the
//! [pool](crate::pool), when there is one, is a fan-out's last member. A symlink that
//! asks for the pool's file is answered in `pool_ops.rs`.

use crate::hosts::{HostId, HostMask, HostSet, POOL_NUMBER};
use crate::plan::{Seen, Step};
use crate::record::{Decoded, Record};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What made a file a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Renamed into its final name.
    Renamed,
    /// Written under its final name and quiet for the settle time.
    Settled,
    /// Found by a reconcile (start-up, overflow, host added, `distlink sync`).
    Scan,
    /// Tried again after a failure (see `retry.rs`).
    Retry,
    /// A symlink appeared: it may ask for the pool's file (see `pool.rs`).
    Symlink,
}

impl Trigger {
    pub fn describe(self) -> &'static str {
        match self {
            Trigger::Renamed => "renamed",
            Trigger::Settled => "settled",
            Trigger::Scan => "reconcile",
            Trigger::Retry => "retry",
            Trigger::Symlink => "symlink",
        }
    }
}

/// One completed file to fan out. Owned: the worker needs nothing from the thread that
/// made it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub hosts: Arc<HostSet>,
    /// Position of the source host in `hosts`.
    pub src: usize,
    pub name: Box<[u8]>,
    pub trigger: Trigger,
    /// Hosts a directory scan saw holding this very inode: no need to try them.
    pub present: HostMask,
    /// `Some(settle)` for a file found by a scan: if its inode changed less than this
    /// long ago, it may still be written, and it is handed back instead of linked.
    pub settle: Option<Duration>,
    /// Look and plan, link nothing (`distlink sync --dry-run`).
    pub dry_run: bool,
    /// `Some(settle)`: replace byte-identical copies under the name in other hosts that
    /// have been quiet that long (`merge:`; see `merge.rs`).
    pub merge: Option<Duration>,
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

/// What happened to one host's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkResult {
    Linked,
    AlreadyThere,
    Conflict,
    Failed(Errno),
}

/// What one fan-out did.
#[derive(Debug)]
pub struct Outcome {
    pub src: HostId,
    pub src_name: Arc<str>,
    pub name: Box<[u8]>,
    pub trigger: Trigger,
    pub dry_run: bool,
    pub result: Result<FanOut, NotLinked>,
}

/// What a fan-out of a regular file did.
#[derive(Debug, Default)]
pub struct FanOut {
    /// The file's size (for the pool's size).
    pub size: u64,
    /// It changed too recently (see [`Candidate::settle`]): handed back, not linked.
    pub deferred: bool,
    /// Hosts that got a link (a dry run: would get one).
    pub linked: Vec<Arc<str>>,
    /// Hosts holding another file under the name (different bytes, or not comparable
    /// now).
    pub conflicts: Vec<Arc<str>>,
    /// Hosts whose byte-identical copy was replaced by a link (a dry run: would be), and
    /// the bytes that freed.
    pub merged: Vec<Arc<str>>,
    pub merged_bytes: u64,
    /// A merge that failed part-way (the name is as it was, unless said otherwise).
    pub merge_failed: Vec<(Arc<str>, String)>,
    /// Hosts where the link failed.
    pub failed: Vec<(Arc<str>, Errno)>,
    /// Hosts named in the record that lack the name (a dry run looks).
    pub deleted: Vec<Arc<str>>,
    /// The source was deleted while being linked: nothing more was done.
    pub vanished: bool,
    /// The record could not be read (every host not seen holding it got a link).
    pub record_unreadable: Option<String>,
    /// The record was written under another host numbering (its tag): nothing linked.
    pub record_foreign: Option<u32>,
    /// The record would outgrow [`crate::record::MAX_RECORD`] with this name (a client
    /// piled up names for one inode): nothing linked, so no deletion can be lost.
    pub record_full: bool,
    /// distlink may not write this file's record (`user:` mode, a file of another user
    /// without write permission): nothing linked, since the fan-out could not be
    /// recorded and a deletion would come back.
    pub record_denied: bool,
    /// The record could not be written (it is kept in memory meanwhile).
    pub record_unwritable: Option<String>,
    /// The pool's copy under the name, which no host held, was replaced by this file.
    pub pool_replaced: bool,
    /// The name was a symlink asking for the pool's file (see `pool_ops.rs`): what
    /// became of it. Nothing else was done.
    pub from_pool: Option<crate::pool_ops::Taken>,
}

impl Outcome {
    pub fn fan_out(&self) -> Option<&FanOut> {
        self.result.as_ref().ok()
    }

    /// Link attempts and record writes that failed, and a failed open.
    pub fn errors(&self) -> u64 {
        match &self.result {
            Err(NotLinked::Failed(_)) => 1,
            Err(_) => 0,
            Ok(f) => {
                let from_pool = match &f.from_pool {
                    Some(
                        crate::pool_ops::Taken::Failed(_) | crate::pool_ops::Taken::Refused(_),
                    ) => 1,
                    Some(crate::pool_ops::Taken::Done {
                        record_unwritable: Some(_),
                        ..
                    }) => 1,
                    _ => 0,
                };
                from_pool
                    + f.failed.len() as u64
                    + u64::from(f.record_unwritable.is_some())
                    + u64::from(f.record_full)
                    + u64::from(f.record_denied)
                    + u64::from(f.record_foreign.is_some())
            }
        }
    }

    /// Links made (none in a dry run).
    pub fn links(&self) -> u64 {
        match &self.result {
            Ok(f) if !self.dry_run => f.linked.len() as u64,
            _ => 0,
        }
    }
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

/// Opens `name` in member `src` without following anything and checks it may be linked.
pub fn open_candidate(
    hosts: &HostSet,
    src: usize,
    name: &[u8],
) -> Result<(OwnedFd, FileStat), NotLinked> {
    let (fd, st) = open_entry(hosts.member(src).dir.as_fd(), name)?;
    linkable(&st)?;
    Ok((fd, st))
}

/// Opens `name` in `dir` with `O_PATH | O_NOFOLLOW` (a symlink is opened itself).
pub fn open_entry(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &[u8],
) -> Result<(OwnedFd, FileStat), NotLinked> {
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
    Ok((fd, st))
}

/// Whether a file may be linked: a regular file, not set-id, not deleted.
pub fn linkable(st: &FileStat) -> Result<(), NotLinked> {
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(NotLinked::NotRegular(kind(st)));
    }
    if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        return Err(NotLinked::SetId);
    }
    if st.st_nlink == 0 {
        return Err(NotLinked::Gone);
    }
    Ok(())
}

/// Whether `st` is a symlink's.
pub fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

/// Links the inode behind `file` as `name` into member `dst`.
pub fn link_one(
    hosts: &HostSet,
    file: &OwnedFd,
    st: &FileStat,
    dst: usize,
    name: &[u8],
) -> LinkResult {
    let dir = hosts.member(dst).dir.as_fd();
    match nix::unistd::linkat(file.as_fd(), c"", dir, name, AtFlags::AT_EMPTY_PATH) {
        Ok(()) => LinkResult::Linked,
        Err(Errno::EEXIST) => match look(hosts, dst, name, st) {
            Seen::Same => LinkResult::AlreadyThere,
            // Removed between linkat and fstatat: someone is busy with that name; leave it.
            _ => LinkResult::Conflict,
        },
        Err(e) => LinkResult::Failed(e),
    }
}

/// Fan-outs to at least this many hosts split their links over a few threads: one
/// file's latency into 1,024 hosts is then not 1,023 `linkat` calls in a row.
const PARALLEL_FROM: usize = 128;

/// Links the file into every host in `dsts` (positions), in order of `dsts`.
fn link_all(
    hosts: &HostSet,
    file: &OwnedFd,
    st: &FileStat,
    dsts: &[usize],
    name: &[u8],
) -> Vec<LinkResult> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if dsts.len() < PARALLEL_FROM || threads < 2 {
        return dsts
            .iter()
            .map(|&i| link_one(hosts, file, st, i, name))
            .collect();
    }
    let chunk = dsts.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = dsts
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&i| link_one(hosts, file, st, i, name))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| {
                p.join()
                    .unwrap_or_else(|_| vec![LinkResult::Failed(Errno::EINVAL); chunk])
            })
            .collect()
    })
}

/// What member `dst` holds under `name`, compared with the file `st`.
pub fn look(hosts: &HostSet, dst: usize, name: &[u8], st: &FileStat) -> Seen {
    match fstatat(
        hosts.member(dst).dir.as_fd(),
        name,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(there) if there.st_dev == st.st_dev && there.st_ino == st.st_ino => Seen::Same,
        Ok(_) => Seen::Other,
        Err(Errno::ENOENT) => Seen::Absent,
        Err(_) => Seen::Other,
    }
}

/// Fans one completed file out: open and check it, read its record, plan, link, write
/// the record (gather → decide → act). Returns what happened.
pub fn fan_out(c: Candidate) -> Outcome {
    let result = open_entry(c.hosts.member(c.src).dir.as_fd(), &c.name).and_then(|(fd, st)| {
        // A symlink may ask for the pool's file (see pool.rs).
        if is_symlink(&st)
            && let Some(taken) = crate::pool_ops::request(&c, &fd)
        {
            return Ok(FanOut {
                from_pool: Some(taken),
                ..FanOut::default()
            });
        }
        linkable(&st)?;
        Ok(fan_out_file(&c, &fd, &st))
    });
    let src = c.hosts.get(c.src);
    Outcome {
        src: src.id,
        src_name: Arc::clone(&src.name),
        name: c.name,
        trigger: c.trigger,
        dry_run: c.dry_run,
        result,
    }
}

/// Fan-outs of one inode under different names (a second hardlink, a rename) run one at
/// a time: each reads the record, links, and writes the record back, and two at once
/// would lose one's names. Striped by inode number; a stripe is held for one fan-out (or
/// one answer to a pool request, one pool expiry).
static INODE_LOCKS: [std::sync::Mutex<()>; 64] = [const { std::sync::Mutex::new(()) }; 64];

/// Holds inode `ino`'s stripe (see [`INODE_LOCKS`]).
pub(crate) fn lock_inode(ino: u64) -> std::sync::MutexGuard<'static, ()> {
    INODE_LOCKS[(ino % 64) as usize]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Inode `ino`'s stripe if it is free now.
pub(crate) fn try_lock_inode(ino: u64) -> Option<std::sync::MutexGuard<'static, ()>> {
    match INODE_LOCKS[(ino % 64) as usize].try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Inode `ino`'s stripe while holding inode `held`'s, never waiting (two fan-outs taking
/// each other's inodes in opposite order would wait for each other): `Some(None)` when
/// both share a stripe, already held; `None` when it is busy.
fn try_lock_other(ino: u64, held: u64) -> Option<Option<std::sync::MutexGuard<'static, ()>>> {
    if ino % 64 == held % 64 {
        Some(None)
    } else {
        try_lock_inode(ino).map(Some)
    }
}

fn fan_out_file(c: &Candidate, file: &OwnedFd, st: &FileStat) -> FanOut {
    let _inode = lock_inode(st.st_ino);
    let hosts = &c.hosts;
    let mut out = FanOut {
        size: st.st_size.max(0) as u64,
        ..FanOut::default()
    };
    if c.settle.is_some_and(|settle| {
        crate::completion::may_still_be_written(
            (st.st_ctime, st.st_ctime_nsec),
            SystemTime::now(),
            settle,
        )
    }) {
        out.deferred = true;
        return out;
    }
    // A downloader's control file beside it: not complete yet (see completion.rs).
    let src_dir = hosts.member(c.src).dir.as_fd();
    if crate::completion::busy_markers(&c.name)
        .iter()
        .any(|m| fstatat(src_dir, m.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok())
    {
        out.deferred = true;
        return out;
    }
    // Gather: the record, and (a dry run, or what a scan saw) what the hosts hold.
    let numbers = &hosts.numbers;
    let record = match crate::record::read(file.as_fd(), numbers) {
        Ok(Decoded::Record(r)) if r.ino == st.st_ino => Some(r),
        Ok(Decoded::Foreign(tag)) => {
            out.record_foreign = Some(tag);
            return out;
        }
        Ok(_) => None,
        Err(e) => {
            out.record_unreadable = Some(e.to_string());
            None
        }
    };
    let record = unwritten::merged(record, st);
    let recorded: &[u16] = record
        .as_ref()
        .and_then(|r| r.hosts_of(&c.name))
        .unwrap_or_default();
    // The hosts, and the pool unless the name is never pooled.
    let members = if crate::pool::never_pooled(&c.name) {
        hosts.len()
    } else {
        hosts.members()
    };
    let seen: Vec<Seen> = (0..members)
        .map(|i| {
            if c.present.has(i) {
                Seen::Same
            } else if c.dry_run && i != c.src {
                look(hosts, i, &c.name, st)
            } else {
                Seen::Unknown
            }
        })
        .collect();
    // Decide.
    let host_numbers: Vec<u16> = (0..members).map(|i| hosts.member(i).number).collect();
    let plan = crate::plan::plan(c.src, &host_numbers, recorded, &seen);
    // A name the record has no room for is not fanned out: its deletions could not be
    // kept. The widest record this fan-out can lead to is the one to check.
    let widest = plan
        .steps
        .iter()
        .zip(&host_numbers)
        .filter(|(s, n)| matches!(s, Step::Source | Step::Holds | Step::Link) && **n != POOL_NUMBER)
        .map(|(_, &n)| n);
    if let Some(next) = Record::after(record.as_ref(), st.st_ino, &c.name, widest) {
        if !next.fits(numbers.tag) {
            out.record_full = true;
            return out;
        }
        if !c.dry_run && !crate::record::writable(file.as_fd()) {
            out.record_denied = true;
            return out;
        }
    }
    // Act.
    let to_link: Vec<usize> = if c.dry_run {
        Vec::new()
    } else {
        (0..plan.steps.len())
            .filter(|&i| plan.steps[i] == Step::Link)
            .collect()
    };
    let mut results = link_all(hosts, file, st, &to_link, &c.name).into_iter();
    let mut holders: Vec<u16> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let host = hosts.member(i);
        let name = &host.name;
        match step {
            Step::Source | Step::Holds => holders.push(host.number),
            Step::Deleted => out.deleted.push(Arc::clone(name)),
            Step::Recorded => {}
            Step::Conflict => out.conflicts.push(Arc::clone(name)),
            Step::Link if c.dry_run => out.linked.push(Arc::clone(name)),
            Step::Link => match results.next().unwrap_or(LinkResult::Failed(Errno::EINVAL)) {
                LinkResult::Linked => {
                    out.linked.push(Arc::clone(name));
                    holders.push(host.number);
                }
                LinkResult::AlreadyThere => holders.push(host.number),
                LinkResult::Conflict => out.conflicts.push(Arc::clone(name)),
                LinkResult::Failed(Errno::ENOENT) if fstat(file).is_ok_and(|s| s.st_nlink == 0) => {
                    out.vanished = true;
                    return out;
                }
                LinkResult::Failed(e) => out.failed.push((Arc::clone(name), e)),
            },
        }
    }
    // Byte-identical copies under the name: merged into one inode (see merge.rs). The
    // inode the name ends on may be another host's (it had more names).
    let mut survivor: Option<(OwnedFd, FileStat, Option<Record>)> = None;
    if c.merge.is_some() {
        // A host the record says deleted the name may hold it again (it downloaded the
        // same file once more): a copy to compare.
        for (i, step) in plan.steps.iter().enumerate() {
            if *step == Step::Recorded && look(hosts, i, &c.name, st) == Seen::Other {
                out.conflicts.push(Arc::clone(&hosts.member(i).name));
            }
        }
    }
    // The pool's copy that no host holds any more yields to a file hosts hold.
    if hosts.pool_at().is_some() && out.conflicts.iter().any(|n| **n == *crate::pool::NAME) {
        replace_kept_pool_copy(c, file, st, &mut holders, &mut out);
    }
    if c.merge.is_some() && !out.conflicts.is_empty() {
        survivor = merge_copies(c, file, st, &mut holders, &mut out);
    }
    let (file, st, record) = match &survivor {
        Some((fd, st, rec)) => (fd, st, rec.clone()),
        None => (file, st, record),
    };
    let holders = holders.into_iter().filter(|&n| n != POOL_NUMBER);
    if !c.dry_run
        && let Some(next) = Record::after(record.as_ref(), st.st_ino, &c.name, holders)
    {
        match crate::record::write(file.as_fd(), &next, numbers.tag) {
            Ok(()) => unwritten::written(st),
            Err(e) => {
                out.record_unwritable = Some(e.to_string());
                unwritten::keep(next, st);
            }
        }
    }
    out
}

/// Hosts in `out.conflicts` whose copy is byte-identical and complete: merged. Returns
/// the other inode with its record when it survived (the name now holds it in every
/// host of `holders`).
fn merge_copies(
    c: &Candidate,
    file: &OwnedFd,
    st: &FileStat,
    holders: &mut Vec<u16>,
    out: &mut FanOut,
) -> Option<(OwnedFd, FileStat, Option<Record>)> {
    use crate::merge::{Facts, Replaced, Survivor};
    let hosts = &c.hosts;
    let mut current: Option<(OwnedFd, FileStat, Option<Record>)> = None;
    let conflicts = std::mem::take(&mut out.conflicts);
    for dst_name in conflicts {
        let keep = |out: &mut FanOut| out.conflicts.push(Arc::clone(&dst_name));
        let Some(i) = hosts.member_position(&dst_name) else {
            keep(out);
            continue;
        };
        let cur_fd = match &current {
            Some((fd, _, _)) => fd,
            None => file,
        };
        // Fresh: a merge before this one added a name (and changed its ctime).
        let Ok(cur_st) = fstat(cur_fd) else {
            keep(out);
            continue;
        };
        // Theirs must be a file that could be linked, complete, and not ours.
        let Ok((theirs, their_st)) = open_candidate(hosts, i, &c.name) else {
            keep(out);
            continue;
        };
        if their_st.st_ino == cur_st.st_ino {
            holders.push(hosts.member(i).number);
            continue;
        }
        let dir = hosts.member(i).dir.as_fd();
        let busy = crate::completion::busy_markers(&c.name)
            .iter()
            .any(|m| fstatat(dir, m.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok());
        let recent = crate::completion::may_still_be_written(
            (their_st.st_ctime, their_st.st_ctime_nsec),
            SystemTime::now(),
            c.merge.unwrap_or_default(),
        );
        if busy || recent {
            keep(out);
            continue;
        }
        // Their inode's fan-outs are serialised too; never wait for it (two merges
        // in opposite directions would wait for each other).
        let Some(_theirs_lock) = try_lock_other(their_st.st_ino, st.st_ino) else {
            keep(out);
            continue;
        };
        let (ours, their_facts) = (Facts::of(&cur_st), Facts::of(&their_st));
        let survivor =
            match crate::merge::compare(cur_fd.as_fd(), &ours, theirs.as_fd(), &their_facts) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    keep(out);
                    continue;
                }
                Err(e) => {
                    out.merge_failed
                        .push((Arc::clone(&dst_name), format!("comparing: {e}")));
                    keep(out);
                    continue;
                }
            };
        if c.dry_run {
            out.merged.push(Arc::clone(&dst_name));
            out.merged_bytes += their_st.st_size.max(0) as u64;
            continue;
        }
        match survivor {
            Survivor::Ours => {
                match crate::merge::replace(dir, &c.name, &their_facts, cur_fd.as_fd()) {
                    Replaced::Done => {
                        holders.push(hosts.member(i).number);
                        out.merged.push(Arc::clone(&dst_name));
                        if their_st.st_nlink == 1 {
                            out.merged_bytes += their_st.st_size.max(0) as u64;
                        }
                    }
                    Replaced::Changed => keep(out),
                    Replaced::Failed(e) | Replaced::LeftTemporary(e) => {
                        out.merge_failed
                            .push((Arc::clone(&dst_name), e.to_string()));
                        keep(out);
                    }
                }
            }
            Survivor::Theirs => {
                // Every host holding ours under the name gets theirs instead.
                let mut now_holding = vec![hosts.member(i).number];
                let mut all = true;
                for h in 0..hosts.members() {
                    let host = hosts.member(h);
                    if h == i || !holders.contains(&host.number) {
                        continue;
                    }
                    match crate::merge::replace(host.dir.as_fd(), &c.name, &ours, theirs.as_fd()) {
                        Replaced::Done => {
                            now_holding.push(host.number);
                            out.merged.push(Arc::clone(&host.name));
                        }
                        Replaced::Changed => all = false,
                        Replaced::Failed(e) | Replaced::LeftTemporary(e) => {
                            all = false;
                            out.merge_failed
                                .push((Arc::clone(&host.name), e.to_string()));
                        }
                    }
                }
                if all {
                    out.merged_bytes += ours.size.max(0) as u64;
                }
                let record = match crate::record::read(theirs.as_fd(), &hosts.numbers) {
                    Ok(Decoded::Record(r)) if r.ino == their_st.st_ino => Some(r),
                    _ => None,
                };
                let record = unwritten::merged(record, &their_st);
                *holders = now_holding;
                current = Some((theirs, their_st, record));
            }
        }
    }
    current
}

/// The pool holds another inode under the name, which no host holds (its link count is
/// 1): kept for `keep`, or a stale version. The file hosts hold takes its place.
fn replace_kept_pool_copy(
    c: &Candidate,
    file: &OwnedFd,
    st: &FileStat,
    holders: &mut Vec<u16>,
    out: &mut FanOut,
) {
    let Some(at) = c.hosts.pool_at() else {
        return;
    };
    let Ok((_, their_st)) = open_candidate(&c.hosts, at, &c.name) else {
        return;
    };
    if their_st.st_nlink != 1 || their_st.st_ino == st.st_ino {
        return;
    }
    // Its expiry takes the same lock; never wait for it.
    let Some(_theirs) = try_lock_other(their_st.st_ino, st.st_ino) else {
        return;
    };
    if c.dry_run {
        out.pool_replaced = true;
        out.conflicts.retain(|n| **n != *crate::pool::NAME);
        return;
    }
    let dir = c.hosts.member(at).dir.as_fd();
    let victim = crate::merge::Facts::of(&their_st);
    match crate::merge::replace(dir, &c.name, &victim, file.as_fd()) {
        crate::merge::Replaced::Done => {
            out.pool_replaced = true;
            out.conflicts.retain(|n| **n != *crate::pool::NAME);
            holders.push(POOL_NUMBER);
        }
        crate::merge::Replaced::Changed => {}
        crate::merge::Replaced::Failed(e) | crate::merge::Replaced::LeftTemporary(e) => out
            .merge_failed
            .push((Arc::from(crate::pool::NAME), e.to_string())),
    }
}

/// Records the filesystem refused (ENOSPC, EDQUOT, EROFS), kept in memory until one
/// can be written, so that a deletion made meanwhile is not undone by the next fan-out
/// of the inode (a retry, a reconcile, another name). Keyed by inode number; an entry
/// counts only while the inode's size and mtime are the ones it was kept with (a freed
/// and reused inode number is another file). Used under the inode's stripe lock.
pub(crate) mod unwritten {
    use crate::record::Record;
    use nix::sys::stat::FileStat;
    use std::collections::HashMap;
    use std::sync::Mutex;

    type Fingerprint = (i64, i64, i64);

    static KEPT: Mutex<Option<HashMap<u64, (Fingerprint, Record)>>> = Mutex::new(None);

    fn fingerprint(st: &FileStat) -> Fingerprint {
        (st.st_size, st.st_mtime, st.st_mtime_nsec)
    }

    /// The record on disk merged with one kept for this inode.
    pub fn merged(on_disk: Option<Record>, st: &FileStat) -> Option<Record> {
        let kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        match kept.as_ref().and_then(|m| m.get(&st.st_ino)) {
            Some((fp, r)) if *fp == fingerprint(st) => Some(Record::merge(on_disk, r)),
            _ => on_disk,
        }
    }

    pub fn keep(record: Record, st: &FileStat) {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        kept.get_or_insert_with(HashMap::new)
            .insert(st.st_ino, (fingerprint(st), record));
    }

    pub fn written(st: &FileStat) {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = kept.as_mut() {
            m.remove(&st.st_ino);
        }
    }
}
