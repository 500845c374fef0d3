//! Reading every host directory once into a [`Census`]. Makes the system calls and
//! returns what it found and what it could not read; the caller logs.

use crate::census::Census;
use crate::completion::NameRules;
use crate::hosts::HostSet;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};
use std::os::fd::AsFd;
use std::sync::Arc;

/// A host directory that could not be read (completely).
#[derive(Debug)]
pub struct Unreadable {
    pub host: Arc<str>,
    pub path: std::path::PathBuf,
    pub error: Errno,
}

/// Reads every host directory, and the pool last: regular files whose names `rules`
/// allow.
pub fn scan(hosts: &HostSet, rules: &NameRules) -> (Census, Vec<Unreadable>) {
    let mut census = Census::new(hosts.members());
    let mut unreadable = Vec::new();
    for i in 0..hosts.members() {
        let host = hosts.member(i);
        let failed = |error| Unreadable {
            host: Arc::clone(&host.name),
            path: host.path.clone(),
            error,
        };
        let dir = match Dir::openat(
            host.dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => {
                unreadable.push(failed(e));
                continue;
            }
        };
        for entry in dir.into_iter() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    unreadable.push(failed(e));
                    break;
                }
            };
            census.entries += 1;
            let name = entry.file_name().to_bytes();
            if rules.skip(name).is_some() {
                continue;
            }
            let kind = match entry.file_type() {
                Some(Type::File) => SFlag::S_IFREG,
                Some(Type::Symlink) => SFlag::S_IFLNK,
                Some(_) => SFlag::empty(),
                None => fstatat(host.dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_or(SFlag::empty(), |st| {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                    }),
            };
            if kind == SFlag::S_IFREG {
                census.add(i, name, entry.ino());
            } else if kind == SFlag::S_IFLNK
                && Some(i) != hosts.pool_at()
                && let Some(pool) = hosts.pool()
                && nix::fcntl::readlinkat(host.dir.as_fd(), name).is_ok_and(|t| {
                    use std::os::unix::ffi::OsStrExt;
                    crate::pool::is_request(t.as_bytes(), &pool.client_path, name)
                })
            {
                census.requests.push((i, name.into()));
            }
        }
    }
    (census, unreadable)
}
