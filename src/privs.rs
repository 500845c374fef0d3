//! Least privilege: after the fanotify group and its mark exist, keep only what linking
//! needs.
//!
//! Kept (and nothing else, in the effective, permitted and bounding sets):
//! * `CAP_FOWNER`: `fs.protected_hardlinks=1` refuses to link a file one does not own
//!   without it, and Portage's files belong to `portage`.
//! * `CAP_DAC_READ_SEARCH`: `linkat(fd, "", …, AT_EMPTY_PATH)` (linking exactly the
//!   checked inode) needs it; it also lets distlink read every host directory.
//! * `CAP_DAC_OVERRIDE`: create names in host directories it does not own (a host
//!   directory is often `portage:portage 0775`) and write the record attribute on files
//!   of other users. Not needed, and dropped, when linking runs as the owner (`user:`).
//!
//! Dropped, among all others: `CAP_SYS_ADMIN`. It was needed only for the filesystem
//! mark and the unlimited queue, both in place by then. Consequence: a SIGHUP that moves
//! the host directories to another filesystem (a new mark) needs a restart.
//!
//! Also: `no_new_privs`, an empty inheritable and ambient set, and with `user:` the
//! switch to that user (with `PR_SET_KEEPCAPS` so the kept set survives `setuid`).

use crate::error::Error;
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::User;

/// What `drop_privileges` kept, for the log.
pub fn describe(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn cap_err(what: &'static str, source: caps::errors::CapsError) -> Error {
    Error::Capabilities { what, source }
}

/// Drops every capability of the calling thread (effective, permitted, inheritable,
/// ambient, bounding) and sets `no_new_privs`: for a thread that only writes logs.
/// Failures leave the thread as it was (an unprivileged process has nothing to drop).
pub fn drop_all_in_this_thread() {
    for cap in caps::all() {
        if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let _ = caps::clear(None, set);
    }
    let _ = nix::sys::prctl::set_no_new_privs();
}

/// The user linking runs as (`user:` or `run --user`), looked up once when the
/// configuration is read: an unknown name is a configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: nix::unistd::Uid,
    pub gid: nix::unistd::Gid,
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(RunAs {
                name: name.to_owned(),
                uid: u.uid,
                gid: u.gid,
            }),
            Ok(None) => Err(format!("user {name:?}: no such user on this system")),
            Err(e) => Err(format!("user {name:?}: cannot look it up: {e}")),
        }
    }

    /// Whether this user (with its primary group only, as `drop_privileges` leaves it,
    /// and no CAP_DAC_OVERRIDE) may write an object of this owner and mode.
    pub fn may_write(&self, owner: u32, group: u32, mode: u32) -> bool {
        if owner == self.uid.as_raw() {
            mode & 0o200 != 0
        } else if group == self.gid.as_raw() {
            mode & 0o020 != 0
        } else {
            mode & 0o002 != 0
        }
    }
}

/// With `user:`, refuses host directories that user cannot create names in (nothing
/// could be linked there): a configuration error listing each (`run` and `check`).
pub fn refuse_unwritable_dirs(
    config: &crate::config::Config,
    hosts: &crate::hosts::HostSet,
) -> Result<(), Error> {
    let Some(user) = &config.user else {
        return Ok(());
    };
    let problems: Vec<crate::config::Problem> = (0..hosts.members())
        .map(|i| hosts.member(i))
        .filter_map(|h| {
            let st = nix::sys::stat::fstat(&h.dir).ok()?;
            (!user.may_write(st.st_uid, st.st_gid, st.st_mode)).then(|| {
                crate::config::Problem::new(
                    None,
                    format!(
                        "{}: user {} cannot create links in {} (owner {}:{}, mode {:04o}): make the directory writable by that user, or remove user:",
                        if h.id == crate::hosts::POOL_ID {
                            crate::pool::NAME.to_owned()
                        } else {
                            format!("host {}", h.name)
                        },
                        user.name,
                        h.path.display(),
                        st.st_uid,
                        st.st_gid,
                        st.st_mode & 0o7777
                    ),
                )
            })
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::config::ConfigError::Invalid {
        path: config.source.clone(),
        problems,
    }
    .into())
}

/// The regular files in the host directories `user` cannot write, and one example: their
/// records cannot be written, so they are not fanned out (for `check`).
pub fn unrecordable_files(user: &RunAs, hosts: &crate::hosts::HostSet) -> (u64, Option<String>) {
    use nix::fcntl::{AtFlags, OFlag};
    let (mut count, mut example) = (0u64, None);
    for h in hosts.iter() {
        let Ok(dir) = nix::dir::Dir::openat(
            &h.dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            continue;
        };
        for entry in dir.into_iter().flatten() {
            let name = entry.file_name();
            let Ok(st) = nix::sys::stat::fstatat(&h.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFREG
                && !user.may_write(st.st_uid, st.st_gid, st.st_mode)
            {
                count += 1;
                example.get_or_insert_with(|| {
                    format!(
                        "{}/{} (owner {}:{}, mode {:04o})",
                        h.path.display(),
                        crate::display::Name(name.to_bytes()),
                        st.st_uid,
                        st.st_gid,
                        st.st_mode & 0o7777
                    )
                });
            }
        }
    }
    (count, example)
}

/// Drops to the capabilities linking needs, optionally as `user`. Call once, from the
/// thread that will spawn every other (capabilities are per thread and inherited).
/// Returns the set kept.
pub fn drop_privileges(user: Option<&RunAs>) -> Result<CapsHashSet, Error> {
    let mut keep: CapsHashSet = [Capability::CAP_FOWNER, Capability::CAP_DAC_READ_SEARCH]
        .into_iter()
        .collect();
    if user.is_none() {
        keep.insert(Capability::CAP_DAC_OVERRIDE);
    }
    // The bounding set first: it needs CAP_SETPCAP, which goes with the permitted set.
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| cap_err("dropping capabilities from the bounding set", e))?;
        }
    }
    if let Some(u) = user {
        nix::sys::prctl::set_keepcaps(true).map_err(|e| Error::setup("PR_SET_KEEPCAPS", e))?;
        nix::unistd::setgroups(&[u.gid]).map_err(|e| Error::setup("setgroups", e))?;
        nix::unistd::setresgid(u.gid, u.gid, u.gid).map_err(|e| Error::setup("setresgid", e))?;
        nix::unistd::setresuid(u.uid, u.uid, u.uid).map_err(|e| Error::setup("setresuid", e))?;
        nix::sys::prctl::set_keepcaps(false).map_err(|e| Error::setup("PR_SET_KEEPCAPS", e))?;
        // setuid made the process non-dumpable, which closes /proc/self/fd (used to read
        // and write the records) to its own user.
        nix::sys::prctl::set_dumpable(true).map_err(|e| Error::setup("PR_SET_DUMPABLE", e))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| cap_err("clearing ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| cap_err("clearing inheritable capabilities", e))?;
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &keep)
        .map_err(|e| cap_err("setting effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| cap_err("setting permitted capabilities", e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| Error::setup("PR_SET_NO_NEW_PRIVS", e))?;
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_user_may_write() {
        let u = RunAs {
            name: "portage".into(),
            uid: nix::unistd::Uid::from_raw(250),
            gid: nix::unistd::Gid::from_raw(250),
        };
        assert!(u.may_write(250, 0, 0o644));
        assert!(!u.may_write(250, 250, 0o464));
        assert!(u.may_write(0, 250, 0o775));
        assert!(!u.may_write(0, 250, 0o755));
        assert!(!u.may_write(0, 0, 0o644));
        assert!(u.may_write(0, 0, 0o1777));
    }
}
