//! The fanotify group, in FID mode with directory handle and name
//! (`FAN_REPORT_DFID_NAME`, Linux 5.9+), and how it is marked.
//!
//! **Mark strategies** (configuration `mark:`; [`MarkStrategy`]):
//! - `filesystem`: one mark on the filesystem holding the host directories
//!   (`FAN_MARK_FILESYSTEM`). Needs CAP_SYS_ADMIN, and the kernel refuses it (EXDEV) where
//!   the host directories are in a btrfs subvolume other than the top level: a
//!   subvolume has its own fsid ("weak fsid"), and filesystem and mount marks need the
//!   filesystem's own.
//! - `directories`: an inode mark on every host directory (`FAN_EVENT_ON_CHILD`: the
//!   directories are flat, so their entries are all distlink needs) and on every host
//!   directory's parent (`FAN_ONDIR` entry events: a host directory vanishing and coming
//!   back). In FID mode inode marks need no CAP_SYS_ADMIN (Linux 5.13+), so hosts added
//!   or re-created after privileges are dropped get their mark; and since Linux 6.8 they
//!   work within one btrfs subvolume, as long as every mark of the group is in that
//!   subvolume. Events from anywhere else on the filesystem never reach distlink.
//!   A mark goes with its inode: a re-created host directory is a new inode and is
//!   marked when the event loop sees it appear ([`Watch::cover`]).
//! - `auto` (the default): the filesystem mark where the kernel grants it, directory
//!   marks where it refuses, said once in the log and shown by `check` and `status`.
//!
//! Mount marks are never used: they cannot carry create, move or delete events.
//! Events name a directory by fsid and file handle; the fsid in an event is the one of
//! the marked object (`statfs` of the directory), so host directories are recognised by
//! [`crate::hosts::dir_key`] under both strategies, on a subvolume too.

use crate::config::Config;
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

/// On a host directory's inode mark: [`MASK`] for the directory's entries.
const HOST_DIR_MASK: u64 = MASK | libc::FAN_EVENT_ON_CHILD;

/// On a parent's inode mark: directories appearing and vanishing in it.
const PARENT_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_MOVED_TO
    | libc::FAN_MOVED_FROM
    | libc::FAN_DELETE
    | libc::FAN_ONDIR;

/// Where the kernel's queue limit for groups without `FAN_UNLIMITED_QUEUE` is set.
pub const MAX_QUEUED_EVENTS: &str = "/proc/sys/fs/fanotify/max_queued_events";

/// The configuration's `mark:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkStrategy {
    Auto,
    Filesystem,
    Directories,
}

impl MarkStrategy {
    pub fn parse(text: &str) -> Option<MarkStrategy> {
        match text {
            "auto" => Some(MarkStrategy::Auto),
            "filesystem" => Some(MarkStrategy::Filesystem),
            "directories" => Some(MarkStrategy::Directories),
            _ => None,
        }
    }
}

/// The marks in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// One `FAN_MARK_FILESYSTEM` mark.
    Filesystem,
    /// Inode marks on the host directories and their parents.
    Directories,
}

impl Marking {
    pub fn as_str(self) -> &'static str {
        match self {
            Marking::Filesystem => "filesystem",
            Marking::Directories => "directories",
        }
    }
}

/// An initialised and marked fanotify group.
#[derive(Debug)]
pub struct Watch {
    fd: OwnedFd,
    /// `None`: unlimited queue; else the kernel's `max_queued_events` at creation.
    pub limit: Option<u64>,
    /// The strategy in use.
    pub marking: Marking,
    /// Why that strategy (for the log, `check` and `status`).
    pub why: String,
    /// `st_dev` of the marked filesystem (or of the marked directories).
    dev: u64,
}

/// What a filesystem type (`statfs` `f_type`) means for watching it, where distlink
/// cannot: the reason and what to do. Pure.
pub fn unwatchable(f_type: i64) -> Option<&'static str> {
    const NFS: i64 = 0x6969;
    const SMB: [i64; 3] = [0xFF53_4D42, 0xFE53_4D42, 0x517B];
    const OTHER_NETWORK: [i64; 4] = [
        0x00C3_6400, // ceph
        0x0102_1997, // 9p
        0x5346_414F, // AFS
        0x6B41_4653, // kAFS
    ];
    const FUSE: i64 = 0x6573_5546;
    match f_type {
        NFS => Some(
            "the host directories are on an NFS client mount: fanotify sees only changes made on this machine, never those of the server or other clients; run distlink on the NFS server, on the exported filesystem",
        ),
        t if SMB.contains(&t) || OTHER_NETWORK.contains(&t) => Some(
            "the host directories are on a network filesystem mounted as a client: fanotify never sees changes made by other machines; run distlink on the machine that holds the disk",
        ),
        FUSE => Some(
            "the host directories are on a FUSE filesystem, which fanotify cannot watch (no fsid); keep the distfiles on a local filesystem (ext4, xfs, btrfs, tmpfs)",
        ),
        _ => None,
    }
}

const OVERLAYFS: i64 = 0x794C_7630;

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

fn mark_hint(e: &io::Error, marking: Marking, f_type: i64) -> &'static str {
    match (e.raw_os_error(), marking) {
        (Some(libc::EPERM), Marking::Filesystem) => {
            "a filesystem mark needs CAP_SYS_ADMIN: run distlink as root, or set mark: directories"
        }
        (Some(libc::EXDEV), Marking::Filesystem) => {
            "the host directories are in a btrfs subvolume, whose filesystem fanotify cannot mark: set mark: directories (or auto)"
        }
        (Some(libc::EXDEV), Marking::Directories) => {
            "the host directories and their parents are not all in one btrfs subvolume (Linux 6.8+ marks directories of one subvolume only): keep every host directory in the same subvolume"
        }
        (Some(libc::ENODEV), _) => {
            "this filesystem has no usable fsid (FUSE?); fanotify cannot watch it: keep the distfiles on a local filesystem"
        }
        (Some(libc::EOPNOTSUPP), _) if f_type == OVERLAYFS => {
            "overlayfs gives file handles only when mounted with nfs_export=on (and index=on); or keep the distfiles on a plain filesystem"
        }
        (Some(libc::EOPNOTSUPP), _) => {
            "this filesystem does not support file handles, which FID mode needs; keep the distfiles on ext4, xfs, btrfs or tmpfs"
        }
        (Some(libc::EINVAL), Marking::Filesystem) => {
            "this kernel lacks FAN_MARK_FILESYSTEM or one of the events; Linux 5.9 or newer is needed"
        }
        (Some(libc::EINVAL), Marking::Directories) => {
            "this kernel refuses one of the events on a directory mark; Linux 5.9 or newer is needed"
        }
        (Some(libc::EPERM), Marking::Directories) => {
            "this kernel wants CAP_SYS_ADMIN for inode marks in FID mode (Linux before 5.13): a host added or re-created after start-up needs a restart"
        }
        (Some(libc::ENOSPC), Marking::Directories) => "too many marks (fs.fanotify.max_user_marks)",
        _ => "",
    }
}

impl Watch {
    /// Creates the group and marks the host directories' filesystem or the directories
    /// themselves, as `config.mark` says (see the module doc). From the moment this
    /// returns, every change in the host directories is queued for us.
    pub fn open(hosts: &HostSet, config: &Config) -> Result<Watch, Error> {
        let Some(dir) = hosts.any_dir() else {
            return Err(Error::setup(
                "marking the host directories' filesystem",
                io::Error::other("no host directory is present"),
            ));
        };
        let f_type = sys::fs_type(dir).unwrap_or(0);
        if let Some(why) = unwatchable(f_type) {
            return Err(Error::Fanotify {
                op: "watching the host directories",
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
                hint: why,
            });
        }
        let group = || Watch::group(config.unlimited_queue, hosts.dev);
        match config.mark {
            MarkStrategy::Filesystem => {
                let mut watch = group()?;
                watch.mark_filesystem(dir, f_type)?;
                watch.why = "set in the configuration (mark: filesystem)".into();
                Ok(watch)
            }
            MarkStrategy::Directories => {
                let mut watch = group()?;
                watch.marking = Marking::Directories;
                watch.cover(hosts, config)?;
                watch.why = "set in the configuration (mark: directories)".into();
                Ok(watch)
            }
            MarkStrategy::Auto => {
                let mut watch = group()?;
                let refused = match watch.mark_filesystem(dir, f_type) {
                    Ok(()) => {
                        watch.why = "mark: auto; the kernel granted a filesystem mark".into();
                        return Ok(watch);
                    }
                    Err(e) => e,
                };
                // A group whose filesystem mark failed holds no mark; a fresh one keeps
                // the strategies apart all the same.
                let mut watch = group()?;
                watch.marking = Marking::Directories;
                if let Err(e) = watch.cover(hosts, config) {
                    log::error!("filesystem mark refused: {}", crate::error_chain(&refused));
                    return Err(e);
                }
                watch.why = match &refused {
                    Error::Fanotify { source, .. } => format!(
                        "mark: auto; the kernel refused a filesystem mark: {source}{}",
                        match source.raw_os_error() {
                            Some(libc::EXDEV) => ", the host directories are in a btrfs subvolume",
                            Some(libc::EPERM) => ", distlink lacks CAP_SYS_ADMIN",
                            _ => "",
                        }
                    ),
                    other => format!("mark: auto; the kernel refused a filesystem mark: {other}"),
                };
                Ok(watch)
            }
        }
    }

    /// Creates the group, with no mark yet.
    ///
    /// With `unlimited`, the queue is not bounded by `fs.fanotify.max_queued_events`
    /// (`FAN_UNLIMITED_QUEUE`, needs CAP_SYS_ADMIN): a burst of our own link events or a
    /// busy filesystem cannot overflow it. Where the kernel refuses, the bounded queue is
    /// used and an overflow leads to a rescan.
    fn group(unlimited: bool, dev: u64) -> Result<Watch, Error> {
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
            marking: Marking::Filesystem,
            why: String::new(),
            dev,
        })
    }

    fn mark_filesystem(&mut self, at: BorrowedFd<'_>, f_type: i64) -> Result<(), Error> {
        sys::fanotify_mark(
            self.fd.as_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            MASK,
            at,
            c".",
        )
        .map_err(|source| Error::Fanotify {
            op: "fanotify_mark(FAN_MARK_FILESYSTEM)",
            hint: mark_hint(&source, Marking::Filesystem, f_type),
            source,
        })
    }

    fn mark_inode(&self, at: BorrowedFd<'_>, mask: u64) -> io::Result<()> {
        sys::fanotify_mark(self.fd.as_fd(), libc::FAN_MARK_ADD, mask, at, c".")
    }

    /// With directory marks: marks every host directory of `hosts` and the parents of
    /// `config`'s host directories (adding a mark that is there changes nothing). A host
    /// directory that cannot be marked is an error; a parent that cannot be marked only a
    /// warning (one that does not exist, nothing), since the event loop also looks at
    /// every configured path every few seconds. With the filesystem mark there is
    /// nothing to do.
    pub fn cover(&self, hosts: &HostSet, config: &Config) -> Result<(), Error> {
        if self.marking != Marking::Directories {
            return Ok(());
        }
        let f_type = hosts
            .any_dir()
            .and_then(|d| sys::fs_type(d).ok())
            .unwrap_or(0);
        for h in hosts.iter() {
            self.mark_inode(h.dir.as_fd(), HOST_DIR_MASK)
                .map_err(|source| Error::Fanotify {
                    op: "fanotify_mark(FAN_MARK_INODE) of a host directory",
                    hint: mark_hint(&source, Marking::Directories, f_type),
                    source,
                })
                .inspect_err(|_| {
                    log::error!("host {}: cannot mark {}", h.name, h.path.display())
                })?;
        }
        for parent in crate::hosts::parent_dirs(config) {
            if let Ok(fd) = crate::hosts::open_dir(&parent)
                && let Err(e) = self.mark_inode(fd.as_fd(), PARENT_MASK)
            {
                log::warn!(
                    "cannot mark {} ({e}): a host directory removed and re-created there is noticed within seconds, not at once",
                    parent.display()
                );
            }
        }
        Ok(())
    }

    /// With directory marks: marks one host directory that appeared (a new inode).
    pub fn cover_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        match self.marking {
            Marking::Directories => self.mark_inode(dir, HOST_DIR_MASK),
            Marking::Filesystem => Ok(()),
        }
    }

    /// With directory marks: removes the mark of a host directory that left the set. A
    /// directory already deleted lost its mark with its inode.
    pub fn uncover_dir(&self, dir: BorrowedFd<'_>) {
        if self.marking == Marking::Directories {
            let _ = sys::fanotify_mark(
                self.fd.as_fd(),
                libc::FAN_MARK_REMOVE,
                HOST_DIR_MASK,
                dir,
                c".",
            );
        }
    }

    /// Whether the marks cover the filesystem `dev` (a reload that moves the host
    /// directories to another filesystem needs a new group).
    pub fn covers(&self, dev: u64) -> bool {
        self.dev == dev
    }

    /// The strategy and why, in one line.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.marking.as_str(), self.why)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mounts_and_fuse_are_unwatchable_local_filesystems_are_not() {
        for t in [0x6969, 0xFF53_4D42, 0x0102_1997, 0x6573_5546] {
            assert!(unwatchable(t).is_some(), "{t:#x}");
        }
        // ext4, xfs, btrfs, tmpfs
        for t in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994] {
            assert_eq!(unwatchable(t), None, "{t:#x}");
        }
    }

    #[test]
    fn strategies_parse_and_hints_name_the_way_out() {
        assert_eq!(MarkStrategy::parse("auto"), Some(MarkStrategy::Auto));
        assert_eq!(
            MarkStrategy::parse("directories"),
            Some(MarkStrategy::Directories)
        );
        assert_eq!(MarkStrategy::parse("mount"), None);
        let exdev = io::Error::from_raw_os_error(libc::EXDEV);
        assert!(mark_hint(&exdev, Marking::Filesystem, 0).contains("mark: directories"));
        let nohandles = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        assert!(mark_hint(&nohandles, Marking::Directories, OVERLAYFS).contains("nfs_export=on"));
    }
}
