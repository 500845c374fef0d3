//! What a scan of the host directories found: per name, the first host holding a
//! regular file under it, that inode, and every host holding that same inode; every
//! other inode seen under the name (copies, conflicts) is kept too. Pure: the scan
//! (`scan.rs`) adds what readdir returned; reconcile reads it back.
//!
//! A client decides how many names there are, so a name costs its bytes plus about 50
//! (a [`NameTable`] key, its first inode and source) plus one bit per host, in 8-byte
//! words: a 500,000-name census of two hosts takes about 35 MB; 20,000 names of 256
//! hosts, about 2 MB.

use crate::hosts::HostMask;
use crate::names::NameTable;

/// The first inode found under a name, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// First host (in set order) holding a regular file under the name.
    pub src: u16,
    pub ino: u64,
    /// Hosts holding that same inode under the name.
    pub present: HostMask,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Census {
    names: NameTable,
    /// Source host and first inode, by name id.
    first: Vec<(u16, u64)>,
    /// `words` host bits per name id: who holds the first inode.
    present: Vec<u64>,
    words: usize,
    /// (name id, host, inode) for every entry whose inode is not the name's first one.
    others: Vec<(u32, u16, u64)>,
    /// Directory entries read (all of them, names skipped included).
    pub entries: u64,
    /// Symlinks in host directories asking for the pool's file (see `pool.rs`): host
    /// position and name.
    pub requests: Vec<(usize, Box<[u8]>)>,
}

impl Census {
    /// A census of `hosts` host directories.
    pub fn new(hosts: usize) -> Census {
        Census {
            words: hosts.div_ceil(64).max(1),
            ..Census::default()
        }
    }

    fn set(&mut self, id: u32, host: u16) {
        let i = id as usize * self.words + usize::from(host) / 64;
        self.present[i] |= 1 << (host % 64);
    }

    fn holding(&self, id: u32) -> Holding {
        let (src, ino) = self.first[id as usize];
        let at = id as usize * self.words;
        Holding {
            src,
            ino,
            present: HostMask::from_words(&self.present[at..at + self.words]),
        }
    }

    /// Host `host` (set position, in increasing order) holds inode `ino` as `name`.
    pub fn add(&mut self, host: usize, name: &[u8], ino: u64) {
        let Some((id, added)) = self.names.insert(0, name) else {
            return;
        };
        let host = host as u16;
        if usize::from(host) >= self.words * 64 {
            return;
        }
        if added {
            debug_assert_eq!(id as usize, self.first.len());
            self.first.push((host, ino));
            self.present.resize(self.present.len() + self.words, 0);
            self.set(id, host);
            return;
        }
        if self.first[id as usize].1 == ino {
            self.set(id, host);
        } else {
            self.others.push((id, host, ino));
        }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every name with its first holding.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Holding)> + '_ {
        self.names
            .ids()
            .map(|id| (self.names.get(id).1, self.holding(id)))
    }

    /// Every (host, inode) seen under `name`, the first holding's hosts first.
    pub fn inodes(&self, name: &[u8]) -> Vec<(usize, u64)> {
        let Some(id) = self.names.find(0, name) else {
            return Vec::new();
        };
        let h = self.holding(id);
        let mut out: Vec<(usize, u64)> = h.present.iter().map(|i| (i, h.ino)).collect();
        out.extend(
            self.others
                .iter()
                .filter(|o| o.0 == id)
                .map(|&(_, host, ino)| (usize::from(host), ino)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_inode_per_name_with_its_hosts_and_every_other_inode() {
        let mut c = Census::new(4);
        c.add(0, b"a", 10);
        c.add(1, b"b", 20);
        c.add(1, b"a", 10);
        c.add(2, b"a", 11); // another file under the same name
        c.add(3, b"a", 10);
        assert_eq!(c.len(), 2);
        let all: Vec<_> = c.iter().collect();
        assert_eq!(
            all[0],
            (
                &b"a"[..],
                Holding {
                    src: 0,
                    ino: 10,
                    present: HostMask::default().with(0).with(1).with(3)
                }
            )
        );
        assert_eq!(all[1].1.src, 1);
        assert_eq!(c.inodes(b"a"), [(0, 10), (1, 10), (3, 10), (2, 11)]);
        assert_eq!(c.inodes(b"zzz"), []);
    }
}
