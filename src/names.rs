//! A compact table of keys (a small tag, such as a host id, and a file name), each given
//! a dense `u32` id.
//!
//! Used where a client decides how many names there are: the settle tracker holds one
//! key per file written under its final name, the census one per name found by a scan.
//! A key costs its bytes plus about 20 (one arena for every name, a 12-byte span per id,
//! an open-addressing index of `u32` ids at most three quarters full); a `HashMap` of
//! boxed names costs three to four times that. Removed keys leave their bytes in the arena
//! until the owner rebuilds the table ([`NameTable::wasteful`] says when).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

const EMPTY: u32 = u32::MAX;
/// `Span::len` of a free id.
const FREE: u16 = u16::MAX;

#[derive(Debug, Clone, Copy)]
struct Span {
    off: u32,
    tag: u32,
    len: u16,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct NameTable {
    arena: Vec<u8>,
    spans: Vec<Span>,
    /// Open addressing with linear probing; each slot an id or [`EMPTY`].
    index: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    dead_bytes: usize,
    hasher: RandomState,
}

impl NameTable {
    pub fn new() -> NameTable {
        NameTable::default()
    }

    fn hash(&self, tag: u32, name: &[u8]) -> usize {
        self.hasher.hash_one((tag, name)) as usize
    }

    fn mask(&self) -> usize {
        self.index.len().wrapping_sub(1)
    }

    /// The index slot holding `(tag, name)`, or the empty slot where it would go.
    fn probe(&self, tag: u32, name: &[u8]) -> (usize, bool) {
        let mask = self.mask();
        let mut i = self.hash(tag, name) & mask;
        loop {
            let id = self.index[i];
            if id == EMPTY {
                return (i, false);
            }
            if self.get(id) == (tag, name) {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// The id of `(tag, name)`, if present.
    pub fn find(&self, tag: u32, name: &[u8]) -> Option<u32> {
        if self.live == 0 {
            return None;
        }
        match self.probe(tag, name) {
            (i, true) => Some(self.index[i]),
            _ => None,
        }
    }

    /// The id of `(tag, name)`, added if absent (`true` when added). `None` for a name
    /// longer than any directory entry can be (more than 65,534 bytes) or an arena past
    /// 4 GiB: such keys are not kept.
    pub fn insert(&mut self, tag: u32, name: &[u8]) -> Option<(u32, bool)> {
        if name.len() >= usize::from(FREE) || self.arena.len() + name.len() > u32::MAX as usize {
            return None;
        }
        if (self.live + 1) * 4 > self.index.len() * 3 {
            self.grow();
        }
        let (slot, found) = self.probe(tag, name);
        if found {
            return Some((self.index[slot], false));
        }
        let span = Span {
            off: self.arena.len() as u32,
            tag,
            len: name.len() as u16,
        };
        self.arena.extend_from_slice(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.spans[id as usize] = span;
                id
            }
            None => {
                self.spans.push(span);
                (self.spans.len() - 1) as u32
            }
        };
        self.index[slot] = id;
        self.live += 1;
        Some((id, true))
    }

    fn grow(&mut self) {
        let cap = (self.index.len() * 2).max(16);
        self.index = vec![EMPTY; cap];
        let mask = cap - 1;
        for id in 0..self.spans.len() as u32 {
            if self.spans[id as usize].len == FREE {
                continue;
            }
            let (tag, name) = self.get(id);
            let mut i = self.hash(tag, name) & mask;
            while self.index[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.index[i] = id;
        }
    }

    /// Removes `(tag, name)`; returns its id, now free for reuse by a later insert.
    pub fn remove(&mut self, tag: u32, name: &[u8]) -> Option<u32> {
        if self.live == 0 {
            return None;
        }
        let (mut hole, true) = self.probe(tag, name) else {
            return None;
        };
        let id = self.index[hole];
        // Backward-shift deletion: later entries of the probe run move into the hole, so
        // lookups never need tombstones.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let moved = self.index[j];
            if moved == EMPTY {
                break;
            }
            let (t, n) = self.get(moved);
            let home = self.hash(t, n) & mask;
            // `moved` may fill the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.index[hole] = moved;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
        let span = &mut self.spans[id as usize];
        self.dead_bytes += usize::from(span.len);
        span.len = FREE;
        self.free.push(id);
        self.live -= 1;
        if self.live == 0 {
            // Nothing left: give everything back at once.
            *self = NameTable {
                hasher: self.hasher.clone(),
                ..NameTable::default()
            };
        }
        Some(id)
    }

    /// The key behind a live id.
    pub fn get(&self, id: u32) -> (u32, &[u8]) {
        let s = self.spans[id as usize];
        let end = s.off as usize + if s.len == FREE { 0 } else { usize::from(s.len) };
        (s.tag, &self.arena[s.off as usize..end])
    }

    /// Whether `id` is a live key.
    pub fn is_live(&self, id: u32) -> bool {
        self.spans.get(id as usize).is_some_and(|s| s.len != FREE)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live ids, in id order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.spans.len() as u32).filter(|&id| self.is_live(id))
    }

    /// Whether removed keys hold more memory than live ones: time for the owner to
    /// rebuild the table from its live keys.
    pub fn wasteful(&self) -> bool {
        self.free.len() > self.live + 1024
            || self.dead_bytes > self.arena.len() - self.dead_bytes + 64 * 1024
    }

    /// Bytes held (for tests and benchmarks).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.index.capacity() * 4
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_agree_with_a_hashmap() {
        let mut t = NameTable::new();
        let mut model = std::collections::HashMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let tag = (rng % 3) as u32;
            let name = format!("n{}", (rng >> 8) % 5000).into_bytes();
            if rng & 0x40 == 0 {
                let got = t.remove(tag, &name);
                assert_eq!(got, model.remove(&(tag, name.clone())));
            } else {
                let (id, added) = t.insert(tag, &name).unwrap();
                assert_eq!(added, !model.contains_key(&(tag, name.clone())));
                model.insert((tag, name.clone()), id);
                assert_eq!(t.get(id), (tag, &name[..]));
            }
            assert_eq!(t.len(), model.len());
        }
        for ((tag, name), id) in &model {
            assert_eq!(t.find(*tag, name), Some(*id));
        }
        assert_eq!(t.ids().count(), model.len());
        assert_eq!(t.find(9, b"n1"), None);
    }

    #[test]
    fn odd_names_and_limits() {
        let mut t = NameTable::new();
        let (a, _) = t.insert(0, b"").unwrap();
        let (b, _) = t.insert(0, b"\xff\0\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.get(b), (0, &b"\xff\0\n"[..]));
        assert!(t.insert(0, &vec![b'x'; 70_000]).is_none());
        assert_eq!(t.remove(0, b""), Some(a));
        assert_eq!(t.remove(0, b""), None);
        assert!(!t.is_live(a) && t.is_live(b));
    }

    #[test]
    fn emptied_table_gives_its_memory_back() {
        let mut t = NameTable::new();
        for i in 0..100_000u32 {
            t.insert(1, format!("name-{i}").as_bytes()).unwrap();
        }
        assert!(t.heap_bytes() > 1_000_000);
        for i in 0..100_000u32 {
            t.remove(1, format!("name-{i}").as_bytes()).unwrap();
        }
        assert_eq!(t.heap_bytes(), 0);
    }
}
