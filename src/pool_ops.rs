//! The pool's system calls: answering a request (a symlink into the pool turned into a
//! link of the pool's file) and removing a pool name no host holds. Each returns what
//! happened as a value; the caller logs and counts. The rules are in `pool.rs`.
//!
//! Both work on the inode under its stripe lock (the one fan-outs take, `link.rs`), so a
//! request, an expiry and a fan-out of one file never interleave: an expiry looks at the
//! link count again under the lock, and a request links only the inode it checked.

use crate::hosts::HostSet;
use crate::link::{Candidate, NotLinked, lock_inode, open_candidate, try_lock_inode};
use crate::merge::{Facts, Replaced};
use crate::record::{Decoded, Record};
use nix::errno::Errno;
use nix::sys::stat::{fstat, fstatat};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The symlink is now a link of the pool's file (a dry run: would be), of `size`
    /// bytes; the host is in the record (unless `record_unwritable` says why not: kept in
    /// memory and written at the next fan-out).
    Done {
        size: u64,
        record_unwritable: Option<String>,
    },
    /// The pool holds no regular file under the name: the symlink is left alone.
    NotInPool,
    /// The symlink changed or went meanwhile: left alone.
    Changed,
    /// Not answered, and why (the record cannot take the host): left alone.
    Refused(&'static str),
    /// A system call failed: the name is as it was.
    Failed(Errno),
}

/// Answers the symlink `c.name` in host `c.src`, opened (not followed) as `link`, if it
/// is a request for the pool's file. `None`: no pool, or not a request (left alone, and
/// reported as any symlink is).
pub fn request(c: &Candidate, link: &OwnedFd) -> Option<Taken> {
    let hosts = &c.hosts;
    let pool = hosts.pool()?;
    let at = hosts.pool_at()?;
    if c.src == at {
        return None;
    }
    let target = nix::fcntl::readlinkat(link, "").ok()?;
    if !crate::pool::is_request(target.as_bytes(), &pool.client_path, &c.name) {
        return None;
    }
    let Ok(link_st) = fstat(link) else {
        return Some(Taken::Changed);
    };
    let (file, st) = match open_candidate(hosts, at, &c.name) {
        Ok(f) => f,
        Err(NotLinked::Failed(e)) => return Some(Taken::Failed(e)),
        Err(_) => return Some(Taken::NotInPool),
    };
    let size = st.st_size.max(0) as u64;
    let _inode = lock_inode(st.st_ino);
    // Under the lock: still the pool's file under the name (an expiry or a new download
    // may have replaced it meanwhile).
    match fstatat(
        hosts.member(at).dir.as_fd(),
        c.name.as_ref(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(now) if now.st_ino == st.st_ino => {}
        _ => return Some(Taken::Changed),
    }
    let host = hosts.member(c.src);
    let record = match crate::record::read(file.as_fd(), &hosts.numbers) {
        Ok(Decoded::Record(r)) if r.ino == st.st_ino => Some(r),
        Ok(Decoded::Foreign(_)) => {
            return Some(Taken::Refused(
                "its record was written under another host numbering",
            ));
        }
        _ => None,
    };
    let record = crate::link::unwritten::merged(record, &st);
    let next = Record::after(record.as_ref(), st.st_ino, &c.name, [host.number]);
    if let Some(next) = &next {
        if !next.fits(hosts.numbers.tag) {
            return Some(Taken::Refused("its record has no room for another name"));
        }
        if !c.dry_run && !crate::record::writable(file.as_fd()) {
            return Some(Taken::Refused("distlink may not write its record"));
        }
    }
    if c.dry_run {
        return Some(Taken::Done {
            size,
            record_unwritable: None,
        });
    }
    match crate::merge::replace(
        host.dir.as_fd(),
        &c.name,
        &Facts::of(&link_st),
        file.as_fd(),
    ) {
        Replaced::Done => {}
        Replaced::Changed => return Some(Taken::Changed),
        Replaced::Failed(e) | Replaced::LeftTemporary(e) => return Some(Taken::Failed(e)),
    }
    let mut record_unwritable = None;
    if let Some(next) = next {
        match crate::record::write(file.as_fd(), &next, hosts.numbers.tag) {
            Ok(()) => crate::link::unwritten::written(&st),
            Err(e) => {
                record_unwritable = Some(e.to_string());
                crate::link::unwritten::keep(next, &st);
            }
        }
    }
    Some(Taken::Done {
        size,
        record_unwritable,
    })
}

/// What [`expire`] did with a pool name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Removed: no host held it and `keep` was over. Its size.
    Removed(u64),
    /// A host holds the inode (or the name holds no regular file, or nothing).
    Held,
    /// No host holds it; look again at this time.
    At(SystemTime),
    /// Another fan-out or request of the inode is under way: look again soon.
    Busy,
    Failed(Errno),
}

impl Expired {
    /// How long until a busy or failed look is made again.
    pub fn retry_after(&self) -> std::time::Duration {
        match self {
            Expired::Failed(_) => std::time::Duration::from_secs(60),
            _ => std::time::Duration::from_secs(1),
        }
    }
}

/// Looks at the pool's `name` and removes it, with every other pool name of its inode,
/// if no host holds the inode and `keep` is over (see `pool.rs`). The pool's other names
/// of the inode are found among the names its record lists (every name it was fanned out
/// under). Never waits for the inode's lock.
pub fn expire(hosts: &HostSet, name: &[u8], now: SystemTime) -> Expired {
    let (Some(pool), Some(at)) = (hosts.pool(), hosts.pool_at()) else {
        return Expired::Held;
    };
    // Never linked there by distlink: not its to remove.
    if crate::pool::never_pooled(name) {
        return Expired::Held;
    }
    let (file, st) = match open_candidate(hosts, at, name) {
        Ok(f) => f,
        Err(NotLinked::Failed(e)) => return Expired::Failed(e),
        Err(_) => return Expired::Held,
    };
    let mut candidates: Vec<Box<[u8]>> = vec![name.into()];
    if st.st_nlink > 1 {
        match crate::record::read(file.as_fd(), &hosts.numbers) {
            Ok(Decoded::Record(r)) if r.ino == st.st_ino => {
                for e in r.names {
                    if !candidates.contains(&e.name) {
                        candidates.push(e.name);
                    }
                }
            }
            _ => {}
        }
        // More names than the pool can hold: a host holds it.
        if st.st_nlink > candidates.len() as u64 {
            return Expired::Held;
        }
    }
    let Some(_inode) = try_lock_inode(st.st_ino) else {
        return Expired::Busy;
    };
    // Under the lock: which candidates are this inode in the pool, and its link count now.
    let dir = pool.dir.dir.as_fd();
    let mut names = Vec::new();
    let mut fresh = None;
    for n in candidates {
        match fstatat(dir, n.as_ref(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino) => {
                fresh = Some(s);
                names.push(n);
            }
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Expired::Failed(e),
        }
    }
    let Some(fresh) = fresh else {
        return Expired::Held;
    };
    let ctime = crate::pool::time_of(fresh.st_ctime, fresh.st_ctime_nsec);
    match crate::pool::expiry(fresh.st_nlink, names.len() as u64, ctime, now, pool.keep) {
        crate::pool::Expiry::Held => return Expired::Held,
        crate::pool::Expiry::At(t) => return Expired::At(t),
        crate::pool::Expiry::Now => {}
    }
    for n in &names {
        match nix::unistd::unlinkat(dir, n.as_ref(), nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Expired::Failed(e),
        }
    }
    Expired::Removed(fresh.st_size.max(0) as u64)
}
