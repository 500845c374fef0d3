//! distlink: one fanotify mark on a Gentoo distfiles filesystem; every download that
//! completes in one host's directory is hardlinked into every other host's directory.
//!
//! Several Gentoo machines share one distfiles tree over NFS, each mounting its own
//! directory of it. `eclean-dist` on a host removes only that host's name; a tarball is
//! gone only when every host has deleted it. Hardlinks cost no space and no bandwidth.
//!
//! # How it works
//!
//! The README's "Layout" section maps every module to its stage (gather, decide, act,
//! report) and follows one event through them; the rules for "complete" are in
//! [`completion`]; the start-up order is in [`cmd::run`]. Known problems are listed once,
//! in the README's "Known problems".

pub mod census;
pub mod classify;
pub mod cli;
pub mod cmd;
pub mod completion;
pub mod config;
pub mod display;
pub mod error;
pub mod event;
pub mod fanotify;
pub mod glob;
pub mod host_numbers;
pub mod hosts;
pub mod link;
pub mod logging;
pub mod merge;
pub mod names;
pub mod plan;
pub mod pool;
pub mod pool_ops;
pub mod privs;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod retry;
pub mod scan;
pub mod sd_notify;
pub mod signals;
pub mod space;
pub mod status;
pub mod sys;
pub mod workers;

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
