//! What one fanotify event means for distlink. Pure: the routing tables (which
//! directory is which host, which are the host directories' parents) come in as values,
//! so every rule is tested on crafted events without a kernel.
//!
//! The completion rules themselves (which names are never linked, when a file written
//! under its final name is complete) live in [`crate::completion`].

use crate::completion::NameRules;
use crate::event::Event;
use std::collections::HashMap;

/// What to do about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Nothing: another directory, our own link, a name never linked.
    Ignore,
    /// The kernel dropped events: look at the directories instead.
    Overflow,
    /// A directory appeared or vanished next to these host directories (configuration
    /// indexes): look at what is there now.
    HostDirs(Vec<usize>),
    /// `name` left host `host` (deleted or renamed away): nothing to wait for.
    Gone { host: usize, name: &'a [u8] },
    /// Renamed into its final name in host `host`: complete now.
    Complete { host: usize, name: &'a [u8] },
    /// Created, written, closed or chmodded under its final name: complete once quiet.
    Changed { host: usize, name: &'a [u8] },
}

/// Parents of host directories, by event key: each with the hosts below it, as
/// (configuration index, directory name).
pub type Parents = HashMap<Box<[u8]>, Vec<(usize, Box<[u8]>)>>;

/// What [`classify`] needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Routing<'r> {
    /// Our own pid: our links raise events in the other hosts, which are not news.
    pub own_pid: i32,
    /// Host directories by event key: their position in the host set.
    pub hosts: &'r HashMap<Box<[u8]>, usize>,
    pub parents: &'r Parents,
    pub rules: &'r NameRules,
}

/// Classifies one event.
pub fn classify<'a>(ev: &Event<'a>, r: &Routing<'_>) -> Action<'a> {
    if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
        return Action::Overflow;
    }
    if ev.pid == r.own_pid {
        return Action::Ignore;
    }
    let Some(rec) = ev.dir_entry() else {
        return Action::Ignore;
    };
    if ev.mask & libc::FAN_ONDIR != 0 {
        let (Some(below), Some(name)) = (r.parents.get(rec.key), rec.name) else {
            return Action::Ignore;
        };
        let hits: Vec<usize> = below
            .iter()
            .filter(|(_, dir)| **dir == *name)
            .map(|(i, _)| *i)
            .collect();
        return if hits.is_empty() {
            Action::Ignore
        } else {
            Action::HostDirs(hits)
        };
    }
    let (Some(&host), Some(name)) = (r.hosts.get(rec.key), rec.name) else {
        return Action::Ignore;
    };
    let gone = libc::FAN_DELETE | libc::FAN_MOVED_FROM;
    if ev.mask & gone != 0 && ev.mask & !gone == 0 {
        return Action::Gone { host, name };
    }
    if r.rules.skip(name).is_some() {
        return Action::Ignore;
    }
    if ev.mask & libc::FAN_MOVED_TO != 0 {
        Action::Complete { host, name }
    } else {
        Action::Changed { host, name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::craft::{event, record};
    use crate::event::parse;

    const FSID: [u8; 8] = [9, 9, 9, 9, 1, 2, 3, 4];
    const DFID_NAME: u8 = 2;

    fn key(handle: &[u8]) -> Box<[u8]> {
        let rec = record(DFID_NAME, FSID, 1, handle, Some(b"x"));
        let buf = event(libc::FAN_CREATE, 1, &[rec]);
        parse(&buf)
            .next()
            .unwrap()
            .unwrap()
            .dir_entry()
            .unwrap()
            .key
            .into()
    }

    struct Fixture {
        hosts: HashMap<Box<[u8]>, usize>,
        parents: Parents,
        rules: NameRules,
    }

    impl Fixture {
        fn new() -> Fixture {
            let mut hosts = HashMap::new();
            hosts.insert(key(b"host0dir"), 0);
            hosts.insert(key(b"host1dir"), 1);
            let mut parents = Parents::new();
            parents.insert(
                key(b"parent"),
                vec![(0, b"server"[..].into()), (1, b"host1"[..].into())],
            );
            Fixture {
                hosts,
                parents,
                rules: NameRules::default(),
            }
        }

        fn classify(&self, mask: u64, pid: i32, dir: &[u8], name: &[u8]) -> Action<'static> {
            let rec = record(DFID_NAME, FSID, 1, dir, Some(name));
            let buf = event(mask, pid, &[rec]);
            let routing = Routing {
                own_pid: 100,
                hosts: &self.hosts,
                parents: &self.parents,
                rules: &self.rules,
            };
            let ev = parse(&buf).next().unwrap().unwrap();
            // Owned copy of the action, so the buffer can go.
            match classify(&ev, &routing) {
                Action::Gone { host, name } => Action::Gone {
                    host,
                    name: Box::leak(name.into()),
                },
                Action::Complete { host, name } => Action::Complete {
                    host,
                    name: Box::leak(name.into()),
                },
                Action::Changed { host, name } => Action::Changed {
                    host,
                    name: Box::leak(name.into()),
                },
                Action::Ignore => Action::Ignore,
                Action::Overflow => Action::Overflow,
                Action::HostDirs(v) => Action::HostDirs(v),
            }
        }
    }

    #[test]
    fn renames_complete_writes_wait_deletions_forget() {
        let f = Fixture::new();
        let n: &[u8] = b"foo-1.0.tar.gz";
        assert_eq!(
            f.classify(libc::FAN_MOVED_TO, 7, b"host1dir", n),
            Action::Complete { host: 1, name: n }
        );
        for mask in [
            libc::FAN_CREATE,
            libc::FAN_MODIFY,
            libc::FAN_CLOSE_WRITE,
            libc::FAN_ATTRIB,
            // Merged with a deletion: what is there now decides (the caller looks).
            libc::FAN_CREATE | libc::FAN_DELETE,
        ] {
            assert_eq!(
                f.classify(mask, 7, b"host0dir", n),
                Action::Changed { host: 0, name: n },
                "{mask:#x}"
            );
        }
        for mask in [
            libc::FAN_DELETE,
            libc::FAN_MOVED_FROM,
            libc::FAN_DELETE | libc::FAN_MOVED_FROM,
        ] {
            assert_eq!(
                f.classify(mask, 7, b"host0dir", n),
                Action::Gone { host: 0, name: n }
            );
        }
    }

    #[test]
    fn ignored_events() {
        let f = Fixture::new();
        // Our own link.
        assert_eq!(
            f.classify(libc::FAN_CREATE, 100, b"host0dir", b"a"),
            Action::Ignore
        );
        // Another directory on the filesystem.
        assert_eq!(
            f.classify(libc::FAN_CREATE, 7, b"elsewhere", b"a"),
            Action::Ignore
        );
        // Temporaries are never linked, even renamed.
        assert_eq!(
            f.classify(libc::FAN_MOVED_TO, 7, b"host0dir", b"a.__download__"),
            Action::Ignore
        );
        // A subdirectory inside a host directory.
        assert_eq!(
            f.classify(
                libc::FAN_CREATE | libc::FAN_ONDIR,
                7,
                b"host0dir",
                b"git3-src"
            ),
            Action::Ignore
        );
    }

    #[test]
    fn host_directories_coming_and_going() {
        let f = Fixture::new();
        assert_eq!(
            f.classify(libc::FAN_DELETE | libc::FAN_ONDIR, 7, b"parent", b"host1"),
            Action::HostDirs(vec![1])
        );
        assert_eq!(
            f.classify(libc::FAN_CREATE | libc::FAN_ONDIR, 7, b"parent", b"other"),
            Action::Ignore
        );
        assert_eq!(
            f.classify(libc::FAN_Q_OVERFLOW, 7, b"parent", b"x"),
            Action::Overflow
        );
    }
}
