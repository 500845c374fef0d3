//! The read-only pool: the rules. Pure: names, link counts, times and the configuration
//! come in as values, so every rule is tested here without a filesystem. The system
//! calls are in `pool_ops.rs`; fan-outs link into the pool in `link.rs`.
//!
//! The pool is a directory on the hosts' filesystem that holds one name for every
//! distfile any host holds. The server exports it read-only; clients mount it and list
//! it in `PORTAGE_RO_DISTDIRS`. When a host's Portage needs a file its DISTDIR lacks and
//! the pool holds it with the Manifest's digests, Portage creates the symlink
//! `DISTDIR/NAME -> RO_DIR/NAME` and downloads nothing.
//!
//! * **Every fan-out includes the pool**, like a host that never cleans: the pool gets a
//!   link whenever it lacks the name, whatever the inode's record says. The pool is never
//!   written into a record, so it is never "a host that deleted on purpose", and never the
//!   source of a fan-out (a name only the pool holds is linked into no host).
//! * **A request** is a symlink in a host directory whose target is exactly
//!   `client_path/NAME`, NAME being the symlink's own name ([`is_request`]), while the
//!   pool holds a regular file NAME. It is replaced, atomically, by a link of the pool's
//!   file, and the host is written into the record as holding the name: its next
//!   `eclean-dist` is a deletion like any other. Any other symlink is left alone and
//!   never followed. A host that cleaned a file never gets it back from the pool unless
//!   its Portage asks this way.
//! * **Expiry** ([`expiry`]): a pool name whose inode has no name outside the pool (its
//!   link count is the number of the pool's names of it: a rename or a second hardlink
//!   in a host gave the pool two) is removed, with the pool's other names of the inode,
//!   `keep` after its last host name went. The
//!   inode's change time is when that happened (an unlink changes it), so the rule needs
//!   no state of its own and holds across restarts. `keep: 0s` removes it at once: a
//!   tarball is still gone only when every host dropped it.
//! * `layout.conf` is never linked into the pool ([`never_pooled`]): Portage reads a
//!   read-only directory's `layout.conf` to find files in it, and a client's file of that
//!   name would change where every other client looks.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// How the pool is named in logs, status and `distlink space` (no host may be named so
/// while a pool is configured).
pub const NAME: &str = "pool";

/// Longest `keep:`.
pub const MAX_KEEP: Duration = Duration::from_secs(3650 * 86400);

/// The `pool:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool directory on the server (absolute, plain).
    pub dir: PathBuf,
    /// Where clients mount it, as they list it in `PORTAGE_RO_DISTDIRS` (absolute,
    /// plain, no trailing slash).
    pub client_path: PathBuf,
    /// How long a file stays after the last host dropped it.
    pub keep: Duration,
    /// Where `pool:` is in the configuration file.
    pub at: crate::config::Location,
}

/// Names never linked into the pool (see the module doc).
pub fn never_pooled(name: &[u8]) -> bool {
    name == b"layout.conf"
}

/// Whether a symlink named `name` whose target is `target` asks for the pool's file:
/// the target is exactly `client_path/name` (what Portage writes for a flat read-only
/// directory). Nothing is normalised: `..`, `.`, doubled slashes, another name or
/// another directory are not requests.
pub fn is_request(target: &[u8], client_path: &[u8], name: &[u8]) -> bool {
    let plain = !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/');
    plain
        && !never_pooled(name)
        && target.len() == client_path.len() + 1 + name.len()
        && target.starts_with(client_path)
        && target[client_path.len()] == b'/'
        && target.ends_with(name)
}

/// What to do with a pool name, from its inode's link count and change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A host still holds the inode (under this or another name).
    Held,
    /// No host holds it; remove it at this time.
    At(SystemTime),
    /// No host holds it and `keep` is over: remove it now.
    Now,
}

/// The expiry rule (see the module doc). `pool_names` is how many of the inode's
/// `nlink` names are the pool's; `ctime` is the inode's change time.
pub fn expiry(
    nlink: u64,
    pool_names: u64,
    ctime: SystemTime,
    now: SystemTime,
    keep: Duration,
) -> Expiry {
    if nlink > pool_names.max(1) {
        return Expiry::Held;
    }
    let due = ctime.checked_add(keep).unwrap_or(ctime);
    if due <= now {
        Expiry::Now
    } else {
        Expiry::At(due)
    }
}

/// A change time in seconds and nanoseconds as a [`SystemTime`].
pub fn time_of(sec: i64, nsec: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    if sec >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(sec as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nanos
    }
}

/// Pool names to look at again later, each at its own time (the event loop's timer).
#[derive(Debug, Default)]
pub struct Expiring {
    due: std::collections::HashMap<Box<[u8]>, Instant>,
}

impl Expiring {
    /// Look at `name` at `at` (an earlier time already set stays).
    pub fn schedule(&mut self, name: &[u8], at: Instant) {
        let e = self.due.entry(name.into()).or_insert(at);
        *e = (*e).min(at);
    }

    /// The names whose time has come, taken out.
    pub fn due(&mut self, now: Instant) -> Vec<Box<[u8]>> {
        let names: Vec<Box<[u8]>> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            self.due.remove(n);
        }
        names
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// The [`Instant`] at which wall-clock time `at` comes (now, if it is past).
pub fn instant_of(at: SystemTime, now: SystemTime, now_instant: Instant) -> Instant {
    now_instant + at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_client_path_and_the_same_name_is_a_request() {
        let cp = b"/var/cache/distfiles-pool";
        assert!(is_request(
            b"/var/cache/distfiles-pool/foo.tar.gz",
            cp,
            b"foo.tar.gz"
        ));
        for target in [
            &b"/var/cache/distfiles-pool/bar.tar.gz"[..],
            b"/var/cache/distfiles-pool//foo.tar.gz",
            b"/var/cache/distfiles-pool/./foo.tar.gz",
            b"/var/cache/distfiles-pool/../x/foo.tar.gz",
            b"/var/cache/distfiles-pool/sub/foo.tar.gz",
            b"/var/cache/distfiles-poolfoo.tar.gz",
            b"/var/cache/distfiles-pool/foo.tar.gz/",
            b"/var/cache/distfiles-pool/",
            b"../distfiles-pool/foo.tar.gz",
            b"foo.tar.gz",
            b"/var/cache/distfiles/foo.tar.gz",
            b"/var/cache/distfiles-pool/foo.tar.gzz",
            b"",
        ] {
            assert!(
                !is_request(target, cp, b"foo.tar.gz"),
                "{}",
                String::from_utf8_lossy(target)
            );
        }
        // The name is the symlink's own: a symlink `..` or to the pool itself is none.
        assert!(!is_request(b"/var/cache/distfiles-pool/..", cp, b".."));
        assert!(is_request(b"/p/\xff\n", b"/p", b"\xff\n"));
        assert!(!is_request(b"/p/layout.conf", b"/p", b"layout.conf"));
    }

    #[test]
    fn a_file_no_host_holds_goes_after_keep() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let keep = Duration::from_secs(30);
        assert_eq!(expiry(2, 1, t(0), t(1000), keep), Expiry::Held);
        assert_eq!(expiry(1, 1, t(100), t(110), keep), Expiry::At(t(130)));
        assert_eq!(expiry(1, 1, t(100), t(130), keep), Expiry::Now);
        assert_eq!(expiry(1, 1, t(100), t(100), Duration::ZERO), Expiry::Now);
        // Two pool names (a host renamed it once) and no other: no host holds it.
        assert_eq!(expiry(2, 2, t(100), t(100), Duration::ZERO), Expiry::Now);
        assert_eq!(expiry(3, 2, t(100), t(100), Duration::ZERO), Expiry::Held);
        // A change time in the future (clock set back): waits for it.
        assert_eq!(
            expiry(1, 1, t(200), t(100), Duration::ZERO),
            Expiry::At(t(200))
        );
        assert_eq!(time_of(1, 5), t(1) + Duration::from_nanos(5));
        assert_eq!(
            time_of(-1, 0),
            SystemTime::UNIX_EPOCH - Duration::from_secs(1)
        );
    }

    #[test]
    fn expiring_names_come_due_once_at_their_earliest_time() {
        let now = Instant::now();
        let mut e = Expiring::default();
        e.schedule(b"a", now + Duration::from_secs(10));
        e.schedule(b"a", now + Duration::from_secs(5));
        e.schedule(b"a", now + Duration::from_secs(20));
        e.schedule(b"b", now + Duration::from_secs(7));
        assert_eq!(e.next_deadline(), Some(now + Duration::from_secs(5)));
        assert!(e.due(now).is_empty());
        assert_eq!(e.due(now + Duration::from_secs(6)), [Box::from(&b"a"[..])]);
        assert_eq!(e.len(), 1);
        assert_eq!(e.due(now + Duration::from_secs(60)), [Box::from(&b"b"[..])]);
        assert!(e.is_empty());
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(
            instant_of(wall + Duration::from_secs(3), wall, now),
            now + Duration::from_secs(3)
        );
        assert_eq!(instant_of(wall, wall + Duration::from_secs(3), now), now);
    }
}
