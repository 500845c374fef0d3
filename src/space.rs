//! Where the bytes are: a tally of the host directories' regular files (top level only,
//! as distlink links them), by inode and by host. Pure: [`Tally::add`] takes what one
//! directory entry's `fstatat` found; `distlink space` (`cmd/space.rs`) gathers and
//! prints, and the daemon writes the per-host figures to the Prometheus textfile.
//!
//! Definitions (bytes are `st_size` sums):
//! - **pool**: distinct inodes across all host directories, each counted once.
//! - **per host**: its names, the bytes of the distinct inodes it references, and the
//!   bytes it holds **alone**: inodes all of whose links are names in that host, which is
//!   what its `eclean-dist` would free.
//! - **split names**: a name held as two or more inodes across hosts; they waste the
//!   bytes of every inode but the largest.
//! - **read-only pool** (see `pool.rs`), when configured: its names and bytes, and those
//!   no host holds (link count 1), kept until `keep` is over. Its names do not count
//!   against a host's "alone": with `keep: 0s` a host's `eclean-dist` still frees them.

use std::collections::HashMap;

/// One inode as seen so far.
#[derive(Debug, Clone)]
struct Inode {
    size: u64,
    nlink: u64,
    /// Names seen, and the host of the first one.
    names_seen: u64,
    host: usize,
    /// Every name seen was in `host`.
    one_host: bool,
    first_name: Box<[u8]>,
}

/// Per-host figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSpace {
    pub name: String,
    pub files: u64,
    pub bytes: u64,
    pub alone_files: u64,
    pub alone_bytes: u64,
}

/// The finished figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub pool_files: u64,
    pub pool_bytes: u64,
    /// In configuration order.
    pub hosts: Vec<HostSpace>,
    pub split_names: u64,
    pub split_bytes: u64,
    /// The largest files held by one host alone: (host, name, bytes), largest first.
    pub largest_alone: Vec<(String, Box<[u8]>, u64)>,
    /// Every split name with its copies, by name (whether their bytes differ is for
    /// the caller to find out: [`Split::sizes_differ`], or a comparison).
    pub splits: Vec<Split>,
    /// The read-only pool directory, if one was tallied.
    pub pool_dir: Option<PoolSpace>,
}

/// The read-only pool directory's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSpace {
    pub files: u64,
    pub bytes: u64,
    /// Names no host holds (their inode has no other name), waiting for `keep`.
    pub kept_files: u64,
    pub kept_bytes: u64,
}

/// One inode under a split name, and a host holding it under that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub host: usize,
    pub ino: u64,
    pub size: u64,
}

/// A name held as several inodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub name: Box<[u8]>,
    pub copies: Vec<Copy>,
}

impl Split {
    /// Copies of different sizes: a conflict without reading a byte.
    pub fn sizes_differ(&self) -> bool {
        self.copies.iter().any(|c| c.size != self.copies[0].size)
    }
}

/// A per-host metric: name, help text, and its value for a host.
type Metric = (&'static str, &'static str, fn(&HostSpace) -> u64);

/// How many of the largest single-host files a report keeps.
pub const LARGEST: usize = 10;

/// The running tally.
#[derive(Debug, Default)]
pub struct Tally {
    hosts: Vec<String>,
    inodes: HashMap<u64, Inode>,
    /// Per host: names, and distinct inodes referenced (bytes summed at the end).
    names: Vec<u64>,
    referenced: Vec<Vec<u64>>,
    /// Per name: the distinct inodes under it, each with a host holding it there.
    by_name: HashMap<Box<[u8]>, Vec<(u64, usize)>>,
    pool: Option<PoolSpace>,
}

impl Tally {
    pub fn new(hosts: Vec<String>) -> Tally {
        let n = hosts.len();
        Tally {
            hosts,
            names: vec![0; n],
            referenced: vec![Vec::new(); n],
            ..Tally::default()
        }
    }

    /// A regular file `name` in host `host`: inode, size, link count.
    pub fn add(&mut self, host: usize, name: &[u8], ino: u64, size: u64, nlink: u64) {
        self.names[host] += 1;
        let e = self.inodes.entry(ino).or_insert_with(|| Inode {
            size,
            nlink,
            names_seen: 0,
            host,
            one_host: true,
            first_name: name.into(),
        });
        e.names_seen += 1;
        if e.host != host {
            e.one_host = false;
        }
        // The smallest name stands for the inode (directory order is no order).
        if *name < *e.first_name {
            e.first_name = name.into();
        }
        self.referenced[host].push(ino);
        // Most names are seen once per host: no allocation for the ones already known.
        match self.by_name.get_mut(name) {
            Some(under) => {
                if !under.iter().any(|&(i, _)| i == ino) {
                    under.push((ino, host));
                }
            }
            None => {
                self.by_name.insert(name.into(), vec![(ino, host)]);
            }
        }
    }

    /// A regular file in the read-only pool, after every host was added: inode, size,
    /// link count.
    pub fn add_pool(&mut self, ino: u64, size: u64, nlink: u64) {
        let pool = self.pool.get_or_insert_with(PoolSpace::default);
        pool.files += 1;
        pool.bytes += size;
        match self.inodes.get_mut(&ino) {
            // Its name is not a host's: it does not stop a host holding it alone.
            Some(i) => i.names_seen += 1,
            None if nlink <= 1 => {
                pool.kept_files += 1;
                pool.kept_bytes += size;
            }
            None => {}
        }
    }

    pub fn finish(mut self) -> Report {
        let mut r = Report {
            pool_files: self.inodes.len() as u64,
            pool_bytes: self.inodes.values().map(|i| i.size).sum(),
            pool_dir: self.pool.take(),
            ..Report::default()
        };
        for (h, name) in self.hosts.iter().enumerate() {
            let refs = &mut self.referenced[h];
            refs.sort_unstable();
            refs.dedup();
            let mut s = HostSpace {
                name: name.clone(),
                files: self.names[h],
                ..HostSpace::default()
            };
            for ino in refs.iter() {
                let i = &self.inodes[ino];
                s.bytes += i.size;
                if i.one_host && i.names_seen >= i.nlink {
                    s.alone_files += 1;
                    s.alone_bytes += i.size;
                }
            }
            r.hosts.push(s);
        }
        for (name, inos) in self.by_name.iter().filter(|(_, v)| v.len() > 1) {
            r.split_names += 1;
            let copies: Vec<Copy> = inos
                .iter()
                .map(|&(ino, host)| Copy {
                    host,
                    ino,
                    size: self.inodes[&ino].size,
                })
                .collect();
            r.split_bytes += copies.iter().map(|c| c.size).sum::<u64>()
                - copies.iter().map(|c| c.size).max().unwrap_or(0);
            r.splits.push(Split {
                name: name.clone(),
                copies,
            });
        }
        r.splits.sort_by(|a, b| a.name.cmp(&b.name));
        let mut alone: Vec<(String, Box<[u8]>, u64)> = self
            .inodes
            .values()
            .filter(|i| i.one_host && i.names_seen >= i.nlink)
            .map(|i| (self.hosts[i.host].clone(), i.first_name.clone(), i.size))
            .collect();
        alone.sort_by(|a, b| {
            b.2.cmp(&a.2)
                .then_with(|| a.1.cmp(&b.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        alone.truncate(LARGEST);
        r.largest_alone = alone;
        r
    }
}

impl Report {
    /// Per-host figures as labelled node-exporter metrics.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let metrics: [Metric; 4] = [
            ("host_files", "Names in the host directory.", |h| h.files),
            (
                "host_bytes",
                "Bytes of the files the host references.",
                |h| h.bytes,
            ),
            ("host_alone_files", "Files only this host holds.", |h| {
                h.alone_files
            }),
            (
                "host_alone_bytes",
                "Bytes only this host holds (what its eclean-dist would free).",
                |h| h.alone_bytes,
            ),
        ];
        for (name, help, value) in metrics {
            let _ = writeln!(
                s,
                "# HELP distlink_{name} {help}\n# TYPE distlink_{name} gauge"
            );
            for h in &self.hosts {
                let label = h.name.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(s, "distlink_{name}{{host=\"{label}\"}} {}", value(h));
            }
        }
        let _ = writeln!(
            s,
            "# HELP distlink_split_names Names held as several inodes.\n# TYPE distlink_split_names gauge\ndistlink_split_names {}",
            self.split_names
        );
        let _ = writeln!(
            s,
            "# HELP distlink_split_bytes Bytes split names waste.\n# TYPE distlink_split_bytes gauge\ndistlink_split_bytes {}",
            self.split_bytes
        );
        s
    }

    /// Hosts by bytes held alone, largest first.
    pub fn by_alone(&self) -> Vec<&HostSpace> {
        let mut v: Vec<&HostSpace> = self.hosts.iter().collect();
        v.sort_by(|a, b| b.alone_bytes.cmp(&a.alone_bytes).then(a.name.cmp(&b.name)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_do_not_stop_a_host_holding_alone_and_kept_ones_are_counted() {
        let mut t = Tally::new(vec!["a".into(), "b".into()]);
        // Inode 1 in a and the pool (nlink 2): a holds it alone. Inode 2 in a and b and
        // the pool. Inode 3 only in the pool: kept. Inode 4 only in the pool, with a
        // link elsewhere: not kept.
        t.add(0, b"one", 1, 100, 2);
        t.add(0, b"two", 2, 10, 3);
        t.add(1, b"two", 2, 10, 3);
        t.add_pool(1, 100, 2);
        t.add_pool(2, 10, 3);
        t.add_pool(3, 7, 1);
        t.add_pool(4, 5, 2);
        let r = t.finish();
        assert_eq!((r.hosts[0].alone_files, r.hosts[0].alone_bytes), (1, 100));
        assert_eq!(r.hosts[1].alone_files, 0);
        assert_eq!((r.pool_files, r.pool_bytes), (2, 110));
        assert_eq!(
            r.pool_dir,
            Some(PoolSpace {
                files: 4,
                bytes: 122,
                kept_files: 1,
                kept_bytes: 7
            })
        );
    }

    #[test]
    fn a_constructed_tree_gives_exact_figures() {
        let mut t = Tally::new(vec!["a".into(), "b".into(), "c".into()]);
        // Inode 1 (100 B) shared by a and b; inode 2 (50 B) only in a, two names there;
        // inode 3 (70 B) in c under "x" and inode 4 (30 B) in a under "x": a split name;
        // inode 5 (10 B) in b with a link outside the host directories (nlink 2).
        t.add(0, b"shared", 1, 100, 2);
        t.add(1, b"shared", 1, 100, 2);
        t.add(0, b"two", 2, 50, 2);
        t.add(0, b"two-again", 2, 50, 2);
        t.add(2, b"x", 3, 70, 1);
        t.add(0, b"x", 4, 30, 1);
        t.add(1, b"elsewhere", 5, 10, 2);
        let r = t.finish();
        assert_eq!((r.pool_files, r.pool_bytes), (5, 260));
        assert_eq!(
            r.hosts[0],
            HostSpace {
                name: "a".into(),
                files: 4,
                bytes: 180,
                alone_files: 2,
                alone_bytes: 80
            }
        );
        assert_eq!(
            (r.hosts[1].files, r.hosts[1].bytes, r.hosts[1].alone_bytes),
            (2, 110, 0)
        );
        assert_eq!((r.hosts[2].alone_files, r.hosts[2].alone_bytes), (1, 70));
        assert_eq!((r.split_names, r.split_bytes), (1, 30));
        assert_eq!(&*r.splits[0].name, b"x");
        assert!(r.splits[0].sizes_differ());
        assert_eq!(r.largest_alone[0], ("c".into(), b"x".to_vec().into(), 70));
        assert_eq!(r.largest_alone.len(), 3);
        assert_eq!(r.by_alone()[0].name, "a");
        let p = r.prometheus();
        assert!(
            p.contains("distlink_host_alone_bytes{host=\"a\"} 80\n"),
            "{p}"
        );
        assert!(p.contains("distlink_split_bytes 30\n"), "{p}");
    }
}
