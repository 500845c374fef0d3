//! The fanotify group: one filesystem-wide mark, events in FID mode with directory handle
//! and name (`FAN_REPORT_DFID_NAME`, Linux 5.9+).

use crate::error::Error;
use crate::hosts::HostSet;
use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The events distlink asks for. `FAN_ONDIR` is left out: directories are never linked,
/// and leaving it out keeps `mkdir`/`rmdir` storms elsewhere on the filesystem away.
pub const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_MOVED_TO;

/// An initialised and marked fanotify group.
#[derive(Debug)]
pub struct Watch {
    fd: OwnedFd,
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

impl Watch {
    /// Creates the group and marks the filesystem holding `hosts`. From the moment this
    /// returns, every change on that filesystem is queued for us.
    pub fn open(hosts: &HostSet) -> Result<Watch, Error> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME;
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint;
        let fd = sys::fanotify_init(flags, event_flags).map_err(|source| Error::Fanotify {
            op: "fanotify_init(FAN_REPORT_DFID_NAME)",
            hint: init_hint(&source),
            source,
        })?;
        sys::fanotify_mark(
            fd.as_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            MASK,
            hosts.any_dir(),
            c".",
        )
        .map_err(|source| Error::Fanotify {
            op: "fanotify_mark(FAN_MARK_FILESYSTEM)",
            hint: mark_hint(&source),
            source,
        })?;
        Ok(Watch { fd })
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
