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

/// What made a file a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Renamed into its final name.
    Renamed,
    /// Written under its final name and quiet for the settle time.
    Settled,
}

/// One completed file to fan out. Owned: the worker needs nothing from the event thread.
#[derive(Debug)]
pub struct Job {
    pub hosts: Arc<HostSet>,
    pub src: usize,
    pub name: Box<[u8]>,
    pub trigger: Trigger,
}

/// Counters since start, shared by all threads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files fanned out (at least one link made).
    pub files: AtomicU64,
    /// Links made.
    pub links: AtomicU64,
    /// Names that already held the same file.
    pub already: AtomicU64,
    /// Names that held another file (left alone).
    pub conflicts: AtomicU64,
    /// Link attempts that failed.
    pub errors: AtomicU64,
    /// Candidates not linked (not a regular file, setuid, vanished).
    pub skipped: AtomicU64,
    /// Jobs finished, whatever their outcome.
    pub jobs: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
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
    .map_err(|_| NotLinked::Gone)?;
    let st = fstat(&fd).map_err(|_| NotLinked::Gone)?;
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
        _ => "",
    }
}

/// Fans one completed file out to every other host; logs and counts the outcome.
pub fn fan_out(job: &Job, counters: &Counters) {
    let hosts = &job.hosts;
    let src = hosts.get(job.src);
    let name = Name(&job.name);
    let (file, st) = match open_candidate(hosts, job.src, &job.name) {
        Ok(x) => x,
        Err(NotLinked::Gone) => {
            log::debug!("{}/{name}: gone before it could be linked", src.name);
            Counters::bump(&counters.skipped);
            return;
        }
        Err(NotLinked::NotRegular(what)) => {
            log::info!(
                "{}/{name}: not linked: {what}, only regular files are",
                src.name
            );
            Counters::bump(&counters.skipped);
            return;
        }
        Err(NotLinked::SetId) => {
            log::warn!("{}/{name}: not linked: setuid/setgid file", src.name);
            Counters::bump(&counters.skipped);
            return;
        }
    };
    let mut linked: Vec<&str> = Vec::new();
    for (i, dst) in hosts.iter().enumerate() {
        if i == job.src {
            continue;
        }
        match link_one(hosts, &file, &st, i, &job.name) {
            LinkResult::Linked => {
                Counters::bump(&counters.links);
                linked.push(&dst.name);
            }
            LinkResult::AlreadyThere => Counters::bump(&counters.already),
            LinkResult::Conflict => {
                Counters::bump(&counters.conflicts);
                log::warn!(
                    "conflict: {}/{name} is another file than {}/{name}; left alone",
                    dst.name,
                    src.name
                );
            }
            LinkResult::Failed(Errno::ENOENT) if fstat(&file).is_ok_and(|s| s.st_nlink == 0) => {
                log::debug!("{}/{name}: deleted while being linked", src.name);
                break;
            }
            LinkResult::Failed(e) => {
                Counters::bump(&counters.errors);
                log::error!(
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
        Counters::bump(&counters.files);
        let why = match job.trigger {
            Trigger::Renamed => "renamed",
            Trigger::Settled => "settled",
        };
        log::info!(
            "{}/{name} ({why}): linked into {}",
            src.name,
            linked.join(", ")
        );
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
                            fan_out(&job, &counters);
                            counters.jobs.fetch_add(1, Ordering::Release);
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
