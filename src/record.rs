//! The durable record of a fan-out, kept on the inode itself.
//!
//! When distlink starts and finds `foo.tar.gz` in `host1/` but not in `host2/`, either it
//! was downloaded while distlink was down (link it), or host2 cleaned it (leave it). The
//! record tells them apart: after a file has been linked into every host, distlink sets
//! the extended attribute `user.distlink` on the inode, naming the file and the hosts
//! that had it. A host named in the record that lacks the name deleted it on purpose; a
//! host not named (added since, or a fan-out cut short) gets the link.
//!
//! Why an extended attribute and not a database:
//! * It lives and dies with the inode. A name cleaned everywhere frees the inode and its
//!   record; a new download is a new inode with no record, so it is linked again.
//! * It is written after the links, in the same filesystem, so a crash at any instant
//!   leaves either no record (the next reconcile links what is missing) or a record for
//!   links that exist. On journalling filesystems (ext4, xfs, btrfs) metadata operations
//!   reach the disk in order, so after power loss too a record never claims a link that
//!   is not there. There is no second store to keep consistent with the tree.
//! * It is a `user.*` attribute, so writing it needs only what linking needs (write
//!   access to the file: distlink keeps CAP_DAC_OVERRIDE or runs as the owner), not
//!   CAP_SYS_ADMIN, which distlink drops after start-up. The price: an NFSv4.2 client
//!   with user-xattr support can read or change it on its own names. Changing it can
//!   only make distlink link a file into a host that had deleted it, or skip a host on a
//!   later reconcile; it can never make distlink write outside a host directory.
//! * The record names the inode number and the file name: a copy made with its
//!   attributes (`rsync -X`, `cp -a` as root) or a renamed name does not count as
//!   fanned out.

use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The attribute name.
pub const XATTR: &CStr = c"user.distlink";
const MAGIC: &[u8] = b"distlink1";
/// Largest record read back (a record for 64 hosts with long names fits easily).
const MAX_LEN: usize = 8192;

/// What a record says: inode `ino`, under `name`, was in these `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ino: u64,
    pub name: Vec<u8>,
    pub hosts: Vec<String>,
}

impl Record {
    /// `distlink1 NUL ino NUL name NUL host NUL host …` (names hold no NUL, host names no
    /// control characters).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.name.len() + self.hosts.len() * 16);
        out.extend_from_slice(MAGIC);
        out.push(0);
        out.extend_from_slice(self.ino.to_string().as_bytes());
        out.push(0);
        out.extend_from_slice(&self.name);
        for h in &self.hosts {
            out.push(0);
            out.extend_from_slice(h.as_bytes());
        }
        out
    }

    /// Parses a record; `None` for anything else (foreign or damaged values are treated
    /// as "no record", which can only cause a link, never hide one).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let mut parts = bytes.split(|&b| b == 0);
        if parts.next()? != MAGIC {
            return None;
        }
        let ino = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let name = parts.next()?.to_vec();
        let hosts = parts
            .map(|h| String::from_utf8(h.to_vec()).ok())
            .collect::<Option<Vec<String>>>()?;
        Some(Record { ino, name, hosts })
    }

    /// Whether the record is about this inode under this name.
    pub fn describes(&self, ino: u64, name: &[u8]) -> bool {
        self.ino == ino && self.name == name
    }

    pub fn has(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }

    /// The merge rule: the record to write after inode `ino`, under `name`, was fanned
    /// out and `holders` now hold it. Every host of `prev` stays named (one lacking the
    /// name deleted it on purpose, and must stay that way); `prev` counts only if it
    /// [describes](Record::describes) this inode and name. `None`: `prev` already says it
    /// all, nothing to write.
    pub fn after<'h>(
        prev: Option<&Record>,
        ino: u64,
        name: &[u8],
        holders: impl IntoIterator<Item = &'h str>,
    ) -> Option<Record> {
        let prev = prev.filter(|r| r.describes(ino, name));
        let mut hosts: Vec<String> = prev.map(|r| r.hosts.clone()).unwrap_or_default();
        let before = hosts.len();
        for h in holders {
            if !hosts.iter().any(|n| n == h) {
                hosts.push(h.to_owned());
            }
        }
        (prev.is_none() || hosts.len() != before).then(|| Record {
            ino,
            name: name.to_vec(),
            hosts,
        })
    }
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Digits only: never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reads the record of the inode behind `fd` (an `O_PATH` descriptor is fine).
pub fn read(fd: BorrowedFd<'_>) -> io::Result<Option<Record>> {
    let mut buf = vec![0u8; MAX_LEN];
    match sys::getxattr(&proc_path(fd), XATTR, &mut buf) {
        Ok(Some(n)) => Ok(Record::decode(&buf[..n])),
        Ok(None) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `record` on the inode behind `fd`.
pub fn write(fd: BorrowedFd<'_>, record: &Record) -> io::Result<()> {
    sys::setxattr(&proc_path(fd), XATTR, &record.encode())
}

/// Whether the filesystem of `dir` can keep records: asks for the attribute on the
/// directory itself, which changes nothing (`ENODATA` means supported).
pub fn supported(dir: BorrowedFd<'_>) -> io::Result<()> {
    let mut buf = [0u8; 64];
    match sys::getxattr(&proc_path(dir), XATTR, &mut buf) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Record {
            ino: 42,
            name: b"we\xffird\nname".to_vec(),
            hosts: vec!["server".into(), "host 1".into()],
        };
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        assert!(r.describes(42, b"we\xffird\nname"));
        assert!(!r.describes(43, b"we\xffird\nname"));
        assert!(r.has("host 1") && !r.has("host2"));
        let empty = Record {
            ino: 1,
            name: b"x".to_vec(),
            hosts: vec![],
        };
        assert_eq!(Record::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn merge_keeps_deletions_and_adds_holders() {
        let prev = Record {
            ino: 7,
            name: b"foo".to_vec(),
            hosts: vec!["server".into(), "host1".into(), "host2".into()],
        };
        // host2 deleted it; host3 is new and got it: host2 stays named.
        let next = Record::after(Some(&prev), 7, b"foo", ["server", "host3"]).unwrap();
        assert_eq!(next.hosts, ["server", "host1", "host2", "host3"]);
        // Nothing new: nothing to write.
        assert_eq!(Record::after(Some(&prev), 7, b"foo", ["host1"]), None);
        // A record about another inode or name counts as none.
        let other = Record::after(Some(&prev), 8, b"foo", ["host1"]).unwrap();
        assert_eq!(other.hosts, ["host1"]);
        let renamed = Record::after(Some(&prev), 7, b"bar", ["host1"]).unwrap();
        assert_eq!(
            (renamed.name.as_slice(), renamed.hosts.len()),
            (&b"bar"[..], 1)
        );
        // No record yet: always written, even with the source alone.
        assert_eq!(
            Record::after(None, 7, b"foo", ["server"]).unwrap().hosts,
            ["server"]
        );
    }

    #[test]
    fn foreign_values_are_no_record() {
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(b"distlink2\x001\x00x"), None);
        assert_eq!(Record::decode(b"distlink1\x00notanumber\x00x"), None);
        assert_eq!(Record::decode(b"distlink1\x001"), None);
        assert_eq!(Record::decode(b"distlink1\x001\x00x\x00\xff"), None);
    }
}
