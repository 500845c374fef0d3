//! distlink: one fanotify mark on a Gentoo distfiles filesystem; every download that
//! completes in one host's directory is hardlinked into every other host's directory.
//!
//! Several Gentoo machines share one distfiles tree over NFS, each mounting its own
//! directory of it. `eclean-dist` on a host removes only that host's name; a tarball is
//! gone only when every host has deleted it. Hardlinks cost no space and no bandwidth.
//!
//! # How it works
//!
//! * [`watch`]: one fanotify group in FID mode (`FAN_REPORT_DFID_NAME`) with
//!   `FAN_MARK_FILESYSTEM` on the filesystem holding the host directories.
//! * [`event`]: bounds-checked parser of the event buffer; names stay bytes.
//! * [`hosts`]: host directories opened once, recognised in events by file handle.
//! * [`completion`]: a rename into a final name is complete at once; a file written
//!   under its final name once it has been quiet for `settle`; temporaries never.
//! * [`linker`]: worker threads link the checked inode with `linkat(AT_EMPTY_PATH)`.
//! * [`daemon`]: start-up sequence and the event loop; [`check`]: `distlink check`.
//! * [`record`]: the fan-out record on each inode (`user.distlink`), which tells a
//!   missed download from a deliberate deletion; [`reconcile`]: the rescan used at
//!   start-up, after an overflow, for new hosts and by [`sync`].
//! * [`privs`]: the capabilities kept after start-up; [`status`]: the status file and
//!   `distlink status`; [`logging`]: stderr, journal, syslog.
//! * [`sys`]: the only module with `unsafe`.
//!
//! # Known problems
//!
//! * The mark covers the whole filesystem: if the distfiles tree shares a filesystem
//!   with busy directories, distlink reads (and discards) their events too. A dedicated
//!   filesystem for distfiles keeps this cost at zero.
//! * A file written under its final name with pauses longer than `settle` is linked at
//!   the first long pause. Portage never does this (it renames `.__download__`); other
//!   writers should write a temporary name and rename, or raise `settle`.
//! * A fan-out cut short by a crash is completed by the next reconcile; a host that
//!   deleted the partly linked name in that window gets it back (the record on the inode
//!   is written after the links, never before).
//! * CAP_SYS_ADMIN is dropped after start-up: a SIGHUP that moves the host directories to
//!   another filesystem (a new mark) is refused until a restart.
//! * The record is a `user.*` attribute: an NFSv4.2 client with user-xattr support can
//!   change it on its own names (at worst bringing a file back or skipping a host on a
//!   later reconcile).
//! * A name renamed inside one host after its fan-out counts as a new name: it is linked
//!   into the others, and the old name may come back into that host at the next reconcile.
//! * Subdirectories (VCS checkouts such as `git3-src`) are not linked: their files are
//!   changed in place, and sharing inodes between hosts' checkouts would let one host's
//!   `git gc` rewrite another's.

pub mod census;
pub mod check;
pub mod classify;
pub mod cli;
pub mod completion;
pub mod config;
pub mod control;
pub mod daemon;
pub mod display;
pub mod error;
pub mod event;
pub mod glob;
pub mod hosts;
pub mod link;
pub mod logging;
pub mod names;
pub mod notify;
pub mod plan;
pub mod pool;
pub mod privs;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod scan;
pub mod status;
pub mod sync;
pub mod sys;
pub mod watch;

/// Exit code for fatal errors.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for an invalid configuration (`EX_CONFIG` from sysexits.h), so a service
/// manager can tell "fix the file" from "try again".
pub const EXIT_CONFIG: i32 = 78;

/// `error: cause: cause`, each level once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
