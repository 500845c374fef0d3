//! The durable record of a fan-out, kept on the inode itself.
//!
//! When distlink starts and finds `foo.tar.gz` in `host1/` but not in `host2/`, either it
//! was downloaded while distlink was down (link it), or host2 cleaned it (leave it). The
//! record tells them apart: after a file has been linked, distlink sets the extended
//! attribute `user.distlink` on the inode, listing **every name of the inode it fanned
//! out, each with the hosts that held that name**. A host listed for a name that lacks it
//! deleted it on purpose and never gets it back; a host not listed (added since, or a
//! fan-out cut short) gets the link. A second hardlink or a rename inside one host is a
//! name of its own: it is fanned out and listed beside the first, and never replaces it.
//!
//! **Format `distlink2`** (see [`Record::encode`]): magic, the [host
//! numbering](crate::host_numbers)'s tag, the inode number, then per name its bytes and
//! its host set, by durable host number, as a bitmap or a list (whichever is smaller) or
//! "same as the name before". 1,024 hosts and a 60-byte name take 213 bytes; a record is
//! at most [`MAX_RECORD`] bytes (one ext4 block of 1 KiB holds all of an inode's
//! attributes). A name that would not fit is **not fanned out** (logged as an error):
//! dropping an older name's entry could bring back a deletion, and an unrecorded link
//! would.
//!
//! **Older and newer binaries.** A `distlink1` record (one name, hosts by name) is read,
//! its host names mapped to numbers (names never numbered are dropped), and written in
//! the new format at the inode's next fan-out. The previous binary does not know
//! `distlink2` and treats such a record as none: it would link those files into every
//! host, bringing back their deletions, and overwrite the record with its own. Do not
//! downgrade a pool that ran this version.
//!
//! Why an extended attribute and not a database:
//! * It lives and dies with the inode. A name cleaned everywhere frees the inode and its
//!   record; a new download is a new inode with no record, so it is linked again.
//! * It is written after the links, in the same filesystem, so a crash at any instant
//!   leaves either no record, or the previous one (the next reconcile links what is
//!   missing), or a record for links that exist. `setxattr` replaces the value as a
//!   whole. On journalling filesystems (ext4, xfs, btrfs) metadata operations reach the
//!   disk in order, so after power loss too a record never claims a link that is not
//!   there. There is no second store to keep consistent with the tree, only the host
//!   numbers, which are written before any record uses them.
//! * Fan-outs of one inode (two names at once) are serialised (`link.rs`), so neither
//!   loses the other's names. A record the filesystem refuses (ENOSPC, EDQUOT) is kept in
//!   memory and merged into every later fan-out of the inode until one can be written.
//! * It is a `user.*` attribute, so writing it needs only write access to the file
//!   (distlink keeps CAP_DAC_OVERRIDE, or with `user:` the file must be that user's to
//!   write: otherwise it is not linked, see `link.rs`), not CAP_SYS_ADMIN, which distlink
//!   drops after start-up. The price: an NFSv4.2 client with user-xattr support can read
//!   or change it on its own names. Changing it can only make distlink link a file into a
//!   host that had deleted it, or skip a host on a later reconcile; it can never make
//!   distlink write outside a host directory.
//! * The record names the inode number: a copy made with its attributes (`rsync -X`,
//!   `cp -a` as root) does not count as fanned out.

use crate::host_numbers::HostNumbers;
use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The attribute name.
pub const XATTR: &CStr = c"user.distlink";
const MAGIC: &[u8] = b"distlink2";
const MAGIC_V1: &[u8] = b"distlink1";
/// Largest record written. ext4 with 1 KiB blocks keeps all of an inode's extended
/// attributes in one block (about 950 bytes of value for one attribute); this leaves
/// room for a small ACL or security label beside it. A record for 1,024 hosts takes 22
/// bytes, plus per name its length + 1, plus 130 bytes for its set of hosts (1 byte when
/// the set is the one before it).
pub const MAX_RECORD: usize = 800;
/// Largest value read back.
const MAX_LEN: usize = 8192;

/// What a record says: inode `ino` was fanned out under each of `names`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ino: u64,
    pub names: Vec<Entry>,
    /// Read from a `distlink1` record: written again in the new format at the next
    /// fan-out, even if nothing else changed.
    pub old_format: bool,
}

/// One name of the inode, and the hosts (by [number](crate::host_numbers)) that held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Box<[u8]>,
    /// Sorted, no repeats.
    pub hosts: Vec<u16>,
}

/// What the attribute on an inode holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// No record, or a value distlink did not write (counts as none: that can only cause
    /// a link, never hide one).
    None,
    Record(Record),
    /// A record written under another host numbering (tag): who deleted the file cannot
    /// be told, so it is linked nowhere.
    Foreign(u32),
}

/// How one host set is written: 0 = the previous entry's set, 1 = bitmap (byte count
/// u8, bytes; bit `n` of byte `n / 8` is host number `n`; numbers below 2,040), 2 = list
/// (count `u16` LE, then `u16` LE each). The smaller form that can hold the set.
fn encode_set(out: &mut Vec<u8>, hosts: &[u16], prev: Option<&[u16]>) {
    if prev == Some(hosts) {
        out.push(0);
        return;
    }
    let bitmap_len = hosts.last().map_or(0, |&n| usize::from(n) / 8 + 1);
    if bitmap_len <= 255 && bitmap_len <= 2 * hosts.len() {
        out.push(1);
        out.push(bitmap_len as u8);
        let start = out.len();
        out.resize(start + bitmap_len, 0);
        for &n in hosts {
            out[start + usize::from(n) / 8] |= 1 << (n % 8);
        }
    } else {
        out.push(2);
        out.extend_from_slice(&(hosts.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        for &n in hosts.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Reads bytes off the front of a slice, trusting no length.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

impl Record {
    /// `distlink2`, tag (u32 LE), inode (u64 LE), name count (u8), then per name: its
    /// length (u8, names are at most 255 bytes), the name, its host set (see
    /// `encode_set`).
    pub fn encode(&self, tag: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.push(self.names.len().min(255) as u8);
        let mut prev: Option<&[u16]> = None;
        for e in self.names.iter().take(255) {
            out.push(e.name.len().min(255) as u8);
            out.extend_from_slice(&e.name[..e.name.len().min(255)]);
            encode_set(&mut out, &e.hosts, prev);
            prev = Some(&e.hosts);
        }
        out
    }

    /// Whether the record fits [`MAX_RECORD`].
    pub fn fits(&self, tag: u32) -> bool {
        self.encode(tag).len() <= MAX_RECORD
    }

    /// Parses an attribute value. `numbers` gives the tag to expect, and the numbers of
    /// the host names in an old `distlink1` record (a name never numbered, a host
    /// removed from the configuration before the upgrade, is dropped).
    pub fn decode(bytes: &[u8], numbers: &HostNumbers) -> Decoded {
        if let Some(rest) = bytes.strip_prefix(MAGIC) {
            return match decode_v2(rest) {
                Some((tag, r)) if tag == numbers.tag => Decoded::Record(r),
                Some((tag, _)) => Decoded::Foreign(tag),
                None => Decoded::None,
            };
        }
        decode_v1(bytes, numbers).map_or(Decoded::None, Decoded::Record)
    }

    /// The hosts that held `name`, if the record has it.
    pub fn hosts_of(&self, name: &[u8]) -> Option<&[u16]> {
        self.names
            .iter()
            .find(|e| *e.name == *name)
            .map(|e| e.hosts.as_slice())
    }

    /// Both records in one: every name of either, each with the hosts of both (`b`
    /// counts only if it is about the same inode as `a`, or `a` is `None`).
    pub fn merge(a: Option<Record>, b: &Record) -> Record {
        let Some(mut out) = a.filter(|a| a.ino == b.ino) else {
            return b.clone();
        };
        for e in &b.names {
            match out.names.iter_mut().find(|o| o.name == e.name) {
                Some(o) => {
                    o.hosts.extend(&e.hosts);
                    o.hosts.sort_unstable();
                    o.hosts.dedup();
                }
                None => out.names.push(e.clone()),
            }
        }
        out.old_format |= b.old_format;
        out
    }

    /// The merge rule: the record to write after inode `ino` was fanned out under `name`
    /// and `holders` (host numbers) now hold it. Every entry of `prev` stays, with every
    /// host in it (a host lacking a recorded name deleted it on purpose, and must stay
    /// that way); `prev` counts only if it is about this inode (a copy made with its
    /// attributes is not). `None`: `prev` already says it all, nothing to write.
    pub fn after(
        prev: Option<&Record>,
        ino: u64,
        name: &[u8],
        holders: impl IntoIterator<Item = u16>,
    ) -> Option<Record> {
        let prev = prev.filter(|r| r.ino == ino);
        let mut next = prev.cloned().unwrap_or(Record {
            ino,
            names: Vec::new(),
            old_format: false,
        });
        let changed = match next.names.iter_mut().find(|e| *e.name == *name) {
            Some(e) => {
                let before = e.hosts.len();
                e.hosts.extend(holders);
                e.hosts.sort_unstable();
                e.hosts.dedup();
                e.hosts.len() != before
            }
            None => {
                let mut hosts: Vec<u16> = holders.into_iter().collect();
                hosts.sort_unstable();
                hosts.dedup();
                next.names.push(Entry {
                    name: name.into(),
                    hosts,
                });
                true
            }
        };
        let write = changed || prev.is_none_or(|p| p.old_format);
        next.old_format = false;
        write.then_some(next)
    }
}

fn decode_v2(bytes: &[u8]) -> Option<(u32, Record)> {
    let mut c = Cursor(bytes);
    let tag = c.u32()?;
    let ino = c.u64()?;
    let count = c.u8()?;
    let mut names: Vec<Entry> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = c.u8()?;
        let name: Box<[u8]> = c.take(usize::from(len))?.into();
        if name.is_empty() || name.contains(&0) || name.contains(&b'/') {
            return None;
        }
        let hosts = match c.u8()? {
            0 => names.last()?.hosts.clone(),
            1 => {
                let n = c.u8()?;
                let bytes = c.take(usize::from(n))?;
                (0..usize::from(n) * 8)
                    .filter(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
                    .map(|i| i as u16)
                    .collect()
            }
            2 => {
                let n = u16::from_le_bytes(c.take(2)?.try_into().ok()?);
                let mut hosts: Vec<u16> = (0..n)
                    .map(|_| Some(u16::from_le_bytes(c.take(2)?.try_into().ok()?)))
                    .collect::<Option<_>>()?;
                hosts.sort_unstable();
                hosts.dedup();
                hosts
            }
            _ => return None,
        };
        names.push(Entry { name, hosts });
    }
    if !c.0.is_empty() {
        return None;
    }
    Some((
        tag,
        Record {
            ino,
            names,
            old_format: false,
        },
    ))
}

/// `distlink1 NUL ino NUL name NUL host NUL host …`: one name, hosts by name.
fn decode_v1(bytes: &[u8], numbers: &HostNumbers) -> Option<Record> {
    let mut parts = bytes.split(|&b| b == 0);
    if parts.next()? != MAGIC_V1 {
        return None;
    }
    let ino = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let name: Box<[u8]> = parts.next()?.into();
    let mut hosts = parts
        .map(|h| std::str::from_utf8(h).ok().map(|h| numbers.get(h)))
        .collect::<Option<Vec<Option<u16>>>>()?
        .into_iter()
        .flatten()
        .collect::<Vec<u16>>();
    hosts.sort_unstable();
    hosts.dedup();
    Some(Record {
        ino,
        names: vec![Entry { name, hosts }],
        old_format: true,
    })
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Digits only: never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reads the record of the inode behind `fd` (an `O_PATH` descriptor is fine).
pub fn read(fd: BorrowedFd<'_>, numbers: &HostNumbers) -> io::Result<Decoded> {
    let mut buf = vec![0u8; MAX_LEN];
    match sys::getxattr(&proc_path(fd), XATTR, &mut buf) {
        Ok(Some(n)) => Ok(Record::decode(&buf[..n], numbers)),
        Ok(None) => Ok(Decoded::None),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => Ok(Decoded::None),
        Err(e) => Err(e),
    }
}

/// Writes `record` on the inode behind `fd`.
pub fn write(fd: BorrowedFd<'_>, record: &Record, tag: u32) -> io::Result<()> {
    sys::setxattr(&proc_path(fd), XATTR, &record.encode(tag))
}

/// Whether this process may write the record of the inode behind `fd` (write access,
/// with its effective ids and capabilities: `user:` mode has no CAP_DAC_OVERRIDE).
pub fn writable(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        proc_path(fd).as_c_str(),
        nix::unistd::AccessFlags::W_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
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

    fn numbers(names: &[&str]) -> HostNumbers {
        let mut n = HostNumbers::fresh();
        n.add(names.iter().copied()).unwrap();
        n
    }

    fn entry(name: impl AsRef<[u8]>, hosts: &[u16]) -> Entry {
        Entry {
            name: name.as_ref().into(),
            hosts: hosts.to_vec(),
        }
    }

    #[test]
    fn round_trip_and_every_truncation_is_no_record() {
        let n = numbers(&["server", "host1"]);
        let r = Record {
            ino: 42,
            names: vec![
                entry(b"we\xffird\nname", &[0, 1, 5]),
                entry("copy", &[0, 1, 5]),
                entry("sparse", &[3, 1000]),
                entry("high", &(1800..2100).collect::<Vec<u16>>()),
                entry("none", &[]),
            ],
            old_format: false,
        };
        let bytes = r.encode(n.tag);
        assert_eq!(Record::decode(&bytes, &n), Decoded::Record(r.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(
                Record::decode(&bytes[..cut], &n),
                Decoded::None,
                "cut {cut}"
            );
        }
        assert_eq!(
            Record::decode(&r.encode(n.tag ^ 1), &n),
            Decoded::Foreign(n.tag ^ 1)
        );
        assert_eq!(r.hosts_of(b"sparse"), Some(&[3, 1000][..]));
        assert_eq!(r.hosts_of(b"other"), None);
    }

    #[test]
    fn a_thousand_hosts_and_a_few_names_fit() {
        let all: Vec<u16> = (0..1024).collect();
        let name = "x".repeat(60);
        let mut r = Record {
            ino: 1,
            names: vec![entry(&name, &all)],
            old_format: false,
        };
        // 22 + 61 + 130 bytes.
        assert_eq!(r.encode(0).len(), 213);
        // Three more names with sets of their own still fit; a fifth does not.
        for i in 0..3 {
            let mut hosts = all.clone();
            hosts.remove(i);
            r.names.push(entry(format!("{name}{i}"), &hosts));
        }
        assert!(r.fits(0), "{}", r.encode(0).len());
        r.names.push(entry(format!("{name}4"), &all[4..]));
        assert!(!r.fits(0));
        // Names sharing a set cost their bytes and one.
        r.names.pop();
        let before = r.encode(0).len();
        r.names.push(entry("y", &r.names[3].hosts.clone()));
        assert_eq!(r.encode(0).len(), before + 3);
    }

    #[test]
    fn merge_keeps_every_name_and_every_deletion() {
        let prev = Record {
            ino: 7,
            names: vec![entry("foo", &[0, 1, 2])],
            old_format: false,
        };
        // host2 deleted foo; host3 is new and got it: host2 stays.
        let next = Record::after(Some(&prev), 7, b"foo", [0, 3]).unwrap();
        assert_eq!(next.names, [entry("foo", &[0, 1, 2, 3])]);
        // Nothing new: nothing to write.
        assert_eq!(Record::after(Some(&prev), 7, b"foo", [1]), None);
        // A second name of the inode is added beside the first, which stays whole.
        let both = Record::after(Some(&prev), 7, b"foo-copy", [1, 2]).unwrap();
        assert_eq!(
            both.names,
            [entry("foo", &[0, 1, 2]), entry("foo-copy", &[1, 2])]
        );
        // A record about another inode counts as none.
        let other = Record::after(Some(&prev), 8, b"foo", [1]).unwrap();
        assert_eq!(other.names, [entry("foo", &[1])]);
        // No record yet: always written, even with the source alone.
        assert_eq!(
            Record::after(None, 7, b"foo", [0]).unwrap().names,
            [entry("foo", &[0])]
        );
    }

    #[test]
    fn two_records_merge_into_every_name_and_host() {
        let disk = Record {
            ino: 7,
            names: vec![entry("foo", &[0, 1])],
            old_format: false,
        };
        let kept = Record {
            ino: 7,
            names: vec![entry("foo", &[2]), entry("bar", &[1])],
            old_format: false,
        };
        let m = Record::merge(Some(disk.clone()), &kept);
        assert_eq!(m.names, [entry("foo", &[0, 1, 2]), entry("bar", &[1])]);
        assert_eq!(Record::merge(None, &kept), kept);
        let other = Record { ino: 8, ..disk };
        assert_eq!(Record::merge(Some(other), &kept), kept);
    }

    #[test]
    fn old_records_are_read_and_upgraded() {
        let n = numbers(&["server", "host1", "host2"]);
        let v1 = b"distlink1\x0042\x00foo\x00server\x00host2\x00gone-host";
        let Decoded::Record(r) = Record::decode(v1, &n) else {
            panic!("not read");
        };
        assert_eq!((r.ino, r.old_format), (42, true));
        assert_eq!(r.names, [entry("foo", &[0, 2])]);
        // Nothing new, but written again in the new format.
        let next = Record::after(Some(&r), 42, b"foo", [0]).unwrap();
        assert!(!next.old_format);
        assert_eq!(
            Record::decode(&next.encode(n.tag), &n),
            Decoded::Record(next)
        );
    }

    #[test]
    fn foreign_values_are_no_record() {
        let n = numbers(&["a"]);
        for v in [
            &b""[..],
            b"distlink3\x001\x00x",
            b"distlink1\x00notanumber\x00x",
            b"distlink1\x001",
            b"distlink1\x001\x00x\x00\xff",
            b"distlink2",
        ] {
            assert_eq!(Record::decode(v, &n), Decoded::None, "{v:?}");
        }
    }
}
