//! When is a download finished? The pure rules, with no system calls in them.
//!
//! * [`NameRules`]: names that are never linked (Portage's temporaries, hidden names,
//!   NFS silly-renames, configured patterns).
//! * [`Settle`]: a file written under its final name counts as complete once its size
//!   and mtime have not changed for the settle time. A rename into a final name is
//!   complete at once and does not go through here.
//!
//! See the README's "How completion is detected" for the event sequences behind this.

use crate::glob::Glob;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Why a name is never linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Empty, `.`, `..`, or containing `/` or NUL: not a name a directory can hold.
    Invalid,
    /// Starts with a dot: Portage's `.__portage_test_write__`, lock files, rsync's
    /// `.NAME.XXXXXX`, NFS `.nfsXXXX`, `.layout.conf.*`, `.mirror-cache.json`.
    Hidden,
    /// `NAME.__download__`: a download in progress (Portage/wget).
    Download,
    /// `NAME._checksum_failure_.XXXXXXXX`: a rejected download.
    ChecksumFailure,
    /// Matches a configured `ignore` pattern.
    Ignored,
}

impl Skip {
    /// A few words for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Skip::Invalid => "not a valid file name",
            Skip::Hidden => "hidden name (temporary or lock file)",
            Skip::Download => "download in progress (.__download__)",
            Skip::ChecksumFailure => "rejected download (_checksum_failure_)",
            Skip::Ignored => "matches an ignore pattern",
        }
    }
}

/// The name filter: built-in rules plus the configured patterns.
#[derive(Debug, Clone, Default)]
pub struct NameRules {
    ignore: Vec<Glob>,
}

impl NameRules {
    pub fn new(ignore: Vec<Glob>) -> NameRules {
        NameRules { ignore }
    }

    /// `None` if `name` may be linked once complete, else why not.
    pub fn skip(&self, name: &[u8]) -> Option<Skip> {
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.iter().any(|&b| b == b'/' || b == 0)
        {
            return Some(Skip::Invalid);
        }
        if name[0] == b'.' {
            return Some(Skip::Hidden);
        }
        if name.ends_with(b".__download__") {
            return Some(Skip::Download);
        }
        if contains(name, b"._checksum_failure_.") {
            return Some(Skip::ChecksumFailure);
        }
        if self.ignore.iter().any(|g| g.matches(name)) {
            return Some(Skip::Ignored);
        }
        None
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What the settle rule compares: if any of these changed, the file is still being written
/// (or was replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

struct Pending {
    deadline: Instant,
    seen: Option<FileState>,
}

/// Tracks files written under their final name until they have been quiet for `settle`.
///
/// Keys are whatever identifies a directory entry to the caller (host, name). Time and
/// file state are passed in, so the rule is tested without a clock or a filesystem.
pub struct Settle<K> {
    settle: Duration,
    pending: HashMap<K, Pending>,
    // Min-heap of (deadline, key); stale entries (deadline moved) are skipped lazily.
    queue: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: std::fmt::Debug> std::fmt::Debug for Settle<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settle")
            .field("settle", &self.settle)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<K: Clone + Eq + std::hash::Hash + Ord> Settle<K> {
    pub fn new(settle: Duration) -> Settle<K> {
        Settle {
            settle,
            pending: HashMap::new(),
            queue: BinaryHeap::new(),
        }
    }

    /// Something happened to `key` at `now`; `state` is what the file looks like now
    /// (`None` if it could not be read). The quiet period starts again.
    pub fn touch(&mut self, key: K, now: Instant, state: Option<FileState>) {
        let deadline = now + self.settle;
        match self.pending.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                p.seen = state;
                if p.deadline == deadline {
                    return;
                }
                p.deadline = deadline;
            }
            Entry::Vacant(e) => {
                e.insert(Pending {
                    deadline,
                    seen: state,
                });
            }
        }
        self.queue.push(Reverse((deadline, key)));
        self.compact();
    }

    /// Stop tracking `key` (deleted, renamed away, or completed by a rename).
    pub fn forget(&mut self, key: &K) {
        if self.pending.remove(key).is_some() {
            self.compact();
        }
    }

    /// Drops stale queue entries (forgotten files, moved deadlines) once they outnumber
    /// the live ones, and gives memory back after a churn of names: memory follows the
    /// files pending, not the events seen.
    fn compact(&mut self) {
        if self.queue.len() <= 2 * self.pending.len() + 1024 {
            return;
        }
        self.queue = self
            .pending
            .iter()
            .map(|(k, p)| Reverse((p.deadline, k.clone())))
            .collect();
        self.queue.shrink_to_fit();
        if self.pending.capacity() > 4 * self.pending.len() + 1024 {
            self.pending.shrink_to_fit();
        }
    }

    /// Changes the quiet period for files touched from now on.
    pub fn set_period(&mut self, settle: Duration) {
        self.settle = settle;
    }

    /// Number of files being watched.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The files still being watched.
    pub fn keys(&self) -> Vec<K> {
        self.pending.keys().cloned().collect()
    }

    /// When [`Settle::due`] next has something to do.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, key))) = self.queue.peek() {
            match self.pending.get(key) {
                Some(p) if p.deadline == *deadline => return Some(*deadline),
                _ => {
                    self.queue.pop();
                }
            }
        }
        None
    }

    /// Looks at every file whose quiet period ended by `now`, with `stat` telling what it
    /// looks like now (`None`: gone or no longer a candidate). Unchanged since the last
    /// look: complete, returned. Changed: watched for another period.
    pub fn due(&mut self, now: Instant, mut stat: impl FnMut(&K) -> Option<FileState>) -> Vec<K> {
        let mut done = Vec::new();
        while let Some(Reverse((deadline, _))) = self.queue.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, key))) = self.queue.pop() else {
                break;
            };
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            if p.deadline != deadline {
                continue;
            }
            match stat(&key) {
                None => {
                    self.pending.remove(&key);
                }
                Some(cur) if p.seen == Some(cur) => {
                    self.pending.remove(&key);
                    done.push(key);
                }
                Some(cur) => {
                    p.seen = Some(cur);
                    p.deadline = now + self.settle;
                    self.queue.push(Reverse((p.deadline, key)));
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules() {
        let r = NameRules::default();
        assert_eq!(r.skip(b"foo-1.0.tar.gz"), None);
        assert_eq!(r.skip(b"foo-1.0.tar.gz.__download__"), Some(Skip::Download));
        assert_eq!(
            r.skip(b"foo-1.0.tar.gz._checksum_failure_.ab12cd34"),
            Some(Skip::ChecksumFailure)
        );
        assert_eq!(r.skip(b".__portage_test_write__"), Some(Skip::Hidden));
        assert_eq!(r.skip(b".foo.tar.gz.Xy12Ab"), Some(Skip::Hidden));
        assert_eq!(r.skip(b".nfs000000000123"), Some(Skip::Hidden));
        assert_eq!(
            r.skip(b"..foo.portage_lockfile.hardlock-host-123"),
            Some(Skip::Hidden)
        );
        assert_eq!(r.skip(b""), Some(Skip::Invalid));
        assert_eq!(r.skip(b"."), Some(Skip::Invalid));
        assert_eq!(r.skip(b".."), Some(Skip::Invalid));
        assert_eq!(r.skip(b"a/b"), Some(Skip::Invalid));
        assert_eq!(r.skip(b"a\0b"), Some(Skip::Invalid));
        // Odd but valid names are candidates.
        assert_eq!(r.skip(b"-rf"), None);
        assert_eq!(r.skip(b"with space 'quote' \"dq\"\nnewline"), None);
        assert_eq!(r.skip(b"\xff\xfe"), None);
        assert_eq!(r.skip(b"foo.__download__.tar"), None);
    }

    #[test]
    fn configured_patterns() {
        let r = NameRules::new(vec![
            Glob::new("*.part").unwrap(),
            Glob::new("tmp-*").unwrap(),
        ]);
        assert_eq!(r.skip(b"x.part"), Some(Skip::Ignored));
        assert_eq!(r.skip(b"tmp-1"), Some(Skip::Ignored));
        assert_eq!(r.skip(b"x.tar"), None);
    }

    fn st(size: u64, mtime: i64) -> FileState {
        FileState {
            ino: 1,
            size,
            mtime_sec: mtime,
            mtime_nsec: 0,
        }
    }

    #[test]
    fn quiet_file_completes_after_settle() {
        let t0 = Instant::now();
        let s10 = Duration::from_secs(10);
        let mut s = Settle::new(s10);
        s.touch("a", t0, Some(st(5, 1)));
        assert_eq!(s.next_deadline(), Some(t0 + s10));
        assert!(
            s.due(t0 + Duration::from_secs(9), |_| Some(st(5, 1)))
                .is_empty()
        );
        assert_eq!(s.due(t0 + s10, |_| Some(st(5, 1))), vec!["a"]);
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn growing_file_waits_another_period() {
        let t0 = Instant::now();
        let s10 = Duration::from_secs(10);
        let mut s = Settle::new(s10);
        s.touch("a", t0, Some(st(5, 1)));
        // Written without an event we saw (overflow, merged event): still not complete.
        assert!(s.due(t0 + s10, |_| Some(st(6, 2))).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + s10 + s10));
        assert_eq!(s.due(t0 + s10 + s10, |_| Some(st(6, 2))), vec!["a"]);
    }

    #[test]
    fn events_push_the_deadline() {
        let t0 = Instant::now();
        let s10 = Duration::from_secs(10);
        let mut s = Settle::new(s10);
        s.touch("a", t0, Some(st(1, 1)));
        s.touch("a", t0 + Duration::from_secs(8), Some(st(2, 1)));
        assert!(s.due(t0 + s10, |_| Some(st(2, 1))).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(18)));
        assert_eq!(
            s.due(t0 + Duration::from_secs(18), |_| Some(st(2, 1))),
            vec!["a"]
        );
    }

    #[test]
    fn vanished_or_replaced_files() {
        let t0 = Instant::now();
        let s1 = Duration::from_secs(1);
        let mut s = Settle::new(s1);
        s.touch("gone", t0, Some(st(1, 1)));
        s.touch("swapped", t0, Some(st(1, 1)));
        s.touch("forgotten", t0, Some(st(1, 1)));
        s.forget(&"forgotten");
        let mut other = st(1, 1);
        other.ino = 2;
        let done = s.due(t0 + s1, |k| match *k {
            "gone" => None,
            _ => Some(other),
        });
        assert!(done.is_empty());
        assert_eq!(s.len(), 1);
        assert_eq!(s.due(t0 + s1 + s1, |_| Some(other)), vec!["swapped"]);
    }

    #[test]
    fn unreadable_at_touch_needs_a_full_period() {
        let t0 = Instant::now();
        let s1 = Duration::from_secs(1);
        let mut s = Settle::new(s1);
        s.touch("a", t0, None);
        assert!(s.due(t0 + s1, |_| Some(st(1, 1))).is_empty());
        assert_eq!(s.due(t0 + s1 + s1, |_| Some(st(1, 1))), vec!["a"]);
    }
}

#[cfg(test)]
mod memory {
    use super::*;

    fn state(n: u64) -> Option<FileState> {
        Some(FileState {
            ino: n,
            size: n,
            mtime_sec: 0,
            mtime_nsec: 0,
        })
    }

    /// Names created and deleted (a churn of temporaries, a client's games) leave nothing
    /// behind once forgotten, and repeated events for one file do not pile up.
    #[test]
    fn churn_and_repeated_events_do_not_grow_the_tracker() {
        let mut s: Settle<u32> = Settle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..200_000u32 {
            s.touch(i, t0, state(u64::from(i)));
            s.forget(&i);
        }
        assert!(s.is_empty());
        assert!(s.queue.len() <= 1024 + 2, "{} stale entries", s.queue.len());
        assert!(
            s.pending.capacity() <= 4096,
            "capacity {}",
            s.pending.capacity()
        );
        // One file, many event batches, each moving its deadline.
        for ms in 0..100_000u64 {
            s.touch(7, t0 + Duration::from_millis(ms), state(ms));
        }
        assert_eq!(s.len(), 1);
        assert!(s.queue.len() <= 1024 + 2 + 2, "{} entries", s.queue.len());
    }
}
