//! The fanotify group: one filesystem-wide mark, events in FID mode with directory handle
//! and name (`FAN_REPORT_DFID_NAME`, Linux 5.9+).

use crate::error::Error;
use crate::hosts::HostSet;
use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The events distlink asks for: file completion (create, modify, close, attrib,
/// moved-to) and, with `FAN_ONDIR`, directories appearing and vanishing, so a host
/// directory removed by `eclean-dist` and re-created by the next fetch is picked up again.
pub const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_MOVED_TO
    | libc::FAN_MOVED_FROM
    | libc::FAN_DELETE
    | libc::FAN_ONDIR;

/// Where the kernel's queue limit for groups without `FAN_UNLIMITED_QUEUE` is set.
pub const MAX_QUEUED_EVENTS: &str = "/proc/sys/fs/fanotify/max_queued_events";

/// An initialised and marked fanotify group.
#[derive(Debug)]
pub struct Watch {
    fd: OwnedFd,
    /// `None`: unlimited queue; else the kernel's `max_queued_events` at creation.
    pub limit: Option<u64>,
    marks: Vec<Mark>,
}

fn init_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EINVAL) => {
            "this kernel lacks FAN_REPORT_DFID_NAME; Linux 5.9 or newer is needed"
        }
        Some(libc::EPERM) => "needs CAP_SYS_ADMIN: run distlink as root",
        Some(libc::ENOSYS) => "this kernel was built without fanotify (CONFIG_FANOTIFY)",
        Some(libc::EMFILE) => "too many fanotify groups (fs.fanotify.max_user_groups)",
        _ => "",
    }
}

fn mark_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => "a filesystem mark needs CAP_SYS_ADMIN: run distlink as root",
        Some(libc::EXDEV) => {
            "the host directories are on a btrfs subvolume; fanotify cannot mark a subvolume's filesystem"
        }
        Some(libc::ENODEV) => "this filesystem has no usable fsid (FUSE?); fanotify cannot mark it",
        Some(libc::EOPNOTSUPP) => {
            "this filesystem does not support file handles, which FID mode needs"
        }
        Some(libc::EINVAL) => {
            "this kernel lacks FAN_MARK_FILESYSTEM or one of the events; Linux 5.9 or newer is needed"
        }
        _ => "",
    }
}

/// What a mark covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// Every object of the filesystem holding the object (`FAN_MARK_FILESYSTEM`).
    Filesystem,
}

/// One mark in place: its kind and the `st_dev` of what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub kind: MarkKind,
    pub dev: u64,
}

impl Watch {
    /// Creates the group and marks the filesystem holding `hosts`. From the moment this
    /// returns, every change on that filesystem is queued for us.
    pub fn open(hosts: &HostSet, unlimited: bool) -> Result<Watch, Error> {
        let mut watch = Watch::group(unlimited)?;
        let Some(dir) = hosts.any_dir() else {
            return Err(Error::setup(
                "marking the host directories' filesystem",
                io::Error::other("no host directory is present"),
            ));
        };
        watch.mark(MarkKind::Filesystem, dir, hosts.dev)?;
        Ok(watch)
    }

    /// Creates the group, with no mark yet.
    ///
    /// With `unlimited`, the queue is not bounded by `fs.fanotify.max_queued_events`
    /// (`FAN_UNLIMITED_QUEUE`, needs CAP_SYS_ADMIN): a burst of our own link events or a
    /// busy filesystem cannot overflow it. Where the kernel refuses, the bounded queue is
    /// used and an overflow leads to a rescan.
    pub fn group(unlimited: bool) -> Result<Watch, Error> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME;
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint;
        let init = |flags| {
            sys::fanotify_init(flags, event_flags).map_err(|source| Error::Fanotify {
                op: "fanotify_init(FAN_REPORT_DFID_NAME)",
                hint: init_hint(&source),
                source,
            })
        };
        let (fd, limit) = if unlimited {
            match sys::fanotify_init(flags | libc::FAN_UNLIMITED_QUEUE, event_flags) {
                Ok(fd) => (fd, None),
                Err(e) => {
                    log::warn!("unlimited fanotify queue refused ({e}); using the kernel's limit");
                    (init(flags)?, Some(queue_limit()))
                }
            }
        } else {
            (init(flags)?, Some(queue_limit()))
        };
        Ok(Watch {
            fd,
            limit,
            marks: Vec::new(),
        })
    }

    /// Adds a mark of `kind` on the object `at` (whose `st_dev` is `dev`) for [`MASK`].
    pub fn mark(&mut self, kind: MarkKind, at: BorrowedFd<'_>, dev: u64) -> Result<(), Error> {
        let (flag, op) = match kind {
            MarkKind::Filesystem => (
                libc::FAN_MARK_FILESYSTEM,
                "fanotify_mark(FAN_MARK_FILESYSTEM)",
            ),
        };
        sys::fanotify_mark(self.fd.as_fd(), libc::FAN_MARK_ADD | flag, MASK, at, c".").map_err(
            |source| Error::Fanotify {
                op,
                hint: mark_hint(&source),
                source,
            },
        )?;
        self.marks.push(Mark { kind, dev });
        Ok(())
    }

    /// Whether a mark covers the filesystem `dev`.
    pub fn covers(&self, dev: u64) -> bool {
        self.marks.iter().any(|m| m.dev == dev)
    }

    /// Reads queued events into `buf`; `Ok(0)` when the queue is empty.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match nix::unistd::read(&self.fd, buf) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::EAGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel's current `max_queued_events` (0 if unreadable).
pub fn queue_limit() -> u64 {
    std::fs::read_to_string(MAX_QUEUED_EVENTS)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
