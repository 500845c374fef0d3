//! When is a download finished? The rules, written once here (the README points here),
//! and the pure code that applies them.
//!
//! distlink asks for `FAN_CREATE`, `FAN_MODIFY`, `FAN_CLOSE_WRITE`, `FAN_ATTRIB` and
//! `FAN_MOVED_TO` (plus `FAN_DELETE`, `FAN_MOVED_FROM` and `FAN_ONDIR`, to see host
//! directories vanish and come back) with a filesystem mark, in FID mode with directory
//! handle and name (`FAN_REPORT_DFID_NAME`). A host directory is recognised by its fsid and
//! file handle, read at start-up with `name_to_handle_at`; events elsewhere on the
//! filesystem, in subdirectories, on directories, and events caused by distlink itself are
//! dropped.
//!
//! - **Rename into a final name → complete at once.** Portage writes `F.__download__`
//!   (wget), closes it, checks it, and renames it to `F`:
//!   `CREATE F.__download__ · MODIFY… · CLOSE_WRITE F.__download__ · MOVED_TO F`.
//!   Only the `MOVED_TO` counts; `CLOSE_WRITE` on a `.__download__` never means
//!   "complete" (an interrupted download is closed and later resumed with `wget -c`).
//! - **Written under its final name → complete once quiet.** `CREATE F · MODIFY… ·
//!   CLOSE_WRITE F` (or, over NFS, maybe no close at all: the server may keep the file
//!   open). Every event restarts a `settle` timer and records size and mtime; when the
//!   timer runs out the file is looked at again, and it is complete only if size, mtime
//!   and inode are unchanged. So a close is a hint, never required.
//! - **Never linked**: Portage's temporaries (every name containing `.__download__`,
//!   so also what aria2 and axel add to it; `*.aria2` control files;
//!   `*._checksum_failure_.*`, `.__portage_test_write__`), every hidden name (rsync's
//!   `.NAME.XXXXXX`, `.nfs*`, lock files, `.layout.conf.*`, `.mirror-cache.json`),
//!   configured `ignore` patterns, anything that is not a regular file (symlink, FIFO,
//!   device, directory) and setuid/setgid files.
//! - **Not while a downloader's control file is beside it.** aria2 (`-o NAME`) keeps
//!   `NAME.aria2` and axel keeps `NAME.st` next to a download written under its final
//!   name, and deletes it when done; a stalled download is quiet longer than `settle`.
//!   While either exists, `NAME` waits (it is looked at again each settle period), and
//!   so does `NAME.st` itself while `NAME` exists ([`busy_markers`]).
//! - **When acting, the file is checked again.** A worker opens the name with
//!   `O_PATH|O_NOFOLLOW`, checks that it is a regular file, and links that very inode
//!   with `linkat(fd, "", dir, name, AT_EMPTY_PATH)`.
//! - **A name already there is never replaced.** Same inode: nothing to do. Another file:
//!   a logged conflict, left alone (Portage unlinks a bad name and a host mid-download
//!   renames its own copy over it). Deletions never propagate. Work is idempotent: the
//!   same file may be reported many times.
//!
//! In this module, with no system calls: [`NameRules`] (names never linked),
//! [`Settle`] (the quiet period of files written under their final name, for the event
//! loop and `distlink sync`), [`may_still_be_written`] (a file found by a scan that
//! changed within the settle time goes through [`Settle`] too). Events are sorted into
//! renames, writes and deletions by [`crate::classify`]; the re-check when acting is in
//! [`crate::link`]; over NFS, see the README's "Over NFS".

use crate::glob::Glob;
use crate::hosts::HostId;
use crate::names::NameTable;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a name is never linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Empty, `.`, `..`, or containing `/` or NUL: not a name a directory can hold.
    Invalid,
    /// Starts with a dot: Portage's `.__portage_test_write__`, lock files, rsync's
    /// `.NAME.XXXXXX`, NFS `.nfsXXXX`, `.layout.conf.*`, `.mirror-cache.json`.
    Hidden,
    /// Containing `.__download__`: a download in progress. Portage's FETCHCOMMAND
    /// writes `NAME.__download__`; downloaders add their own suffixes to it (aria2's
    /// control file `NAME.__download__.aria2`, axel's state file `NAME.__download__.st`).
    Download,
    /// `NAME.aria2`: aria2's control file, beside a download it writes under its final
    /// name.
    ControlFile,
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
            Skip::ControlFile => "a downloader's control file (.aria2)",
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
        if contains(name, b".__download__") {
            return Some(Skip::Download);
        }
        if name.ends_with(b".aria2") {
            return Some(Skip::ControlFile);
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

/// Whether a file whose inode last changed at `ctime` (seconds, nanoseconds) may still
/// be written at `now`: changed less than `settle` ago. ctime cannot be set by a client.
/// A ctime in the future (the clock was set back since) gives no age: it counts as
/// recent, and the caller's settle tracker, on the monotonic clock, decides.
pub fn may_still_be_written(ctime: (i64, i64), now: SystemTime, settle: Duration) -> bool {
    let ctime =
        UNIX_EPOCH + Duration::new(ctime.0.max(0) as u64, ctime.1.clamp(0, 999_999_999) as u32);
    now.duration_since(ctime).map_or(true, |age| age < settle)
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

/// One pending file: 24 bytes beside its key in the [`NameTable`]. Times are
/// nanoseconds after [`Settle`]'s epoch.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the quiet period ends.
    deadline: u64,
    /// When its queue entry comes up ([`NOT_QUEUED`]: it has none). Never later than
    /// `deadline`; an entry that comes up early is put back at `deadline`. Kept when the
    /// file is forgotten, until its entry comes up.
    queued_at: u64,
    /// What the file looked like at the last look, as [`Settle::fingerprint`].
    seen: u64,
}

const NOT_QUEUED: u64 = u64::MAX;

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            deadline: 0,
            queued_at: NOT_QUEUED,
            seen: 0,
        }
    }
}

/// A pending file: its host and name.
pub type Key = (HostId, Box<[u8]>);

/// Tracks files written under their final name until they have been quiet for `settle`.
///
/// Time and file state are passed in, so the rule is tested without a clock or a
/// filesystem. Memory follows the files pending, not the events seen (a client may
/// create and delete names without end): each file is one key in a [`NameTable`], one
/// 24-byte slot and at most one queue entry (16 bytes): about 80 bytes with a 20-byte name.
/// A file touched again only moves its deadline; its queue entry, when it comes up,
/// is put back at the new deadline. Forgotten files leave their queue entry and bytes
/// until the tracker is rebuilt from the live files (when they hold more than those do).
pub struct Settle {
    settle: Duration,
    epoch: Instant,
    /// Keyed per process: a client cannot make two states look alike.
    hasher: RandomState,
    keys: NameTable,
    /// By key id.
    slots: Vec<Slot>,
    /// Min-heap of (deadline, key id).
    queue: BinaryHeap<Reverse<(u64, u32)>>,
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settle")
            .field("settle", &self.settle)
            .field("pending", &self.keys.len())
            .finish()
    }
}

impl Settle {
    pub fn new(settle: Duration) -> Settle {
        Settle::starting(settle, Instant::now())
    }

    /// A tracker whose clock starts at `epoch` (no time passed to it may be earlier).
    pub fn starting(settle: Duration, epoch: Instant) -> Settle {
        Settle {
            settle,
            epoch,
            hasher: RandomState::new(),
            keys: NameTable::new(),
            slots: Vec::new(),
            queue: BinaryHeap::new(),
        }
    }

    /// A file state as 64 bits (0: unreadable). Only compared for equality: two
    /// different states agree with probability 2^-64, under a key the client never sees.
    fn fingerprint(&self, state: Option<FileState>) -> u64 {
        match state {
            None => 0,
            Some(s) => self
                .hasher
                .hash_one((s.ino, s.size, s.mtime_sec, s.mtime_nsec))
                .max(1),
        }
    }

    fn ticks(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    fn instant(&self, ticks: u64) -> Instant {
        self.epoch + Duration::from_nanos(ticks)
    }

    /// Something happened to `name` in `host` at `now`; `state` is what the file looks
    /// like now (`None` if it could not be read). The quiet period starts again.
    pub fn touch(&mut self, host: HostId, name: &[u8], now: Instant, state: Option<FileState>) {
        let deadline = self.ticks(now + self.settle);
        let seen = self.fingerprint(state);
        let Some((id, _)) = self.keys.insert(host.raw(), name) else {
            // Longer than any file name: nothing on disk can have it.
            return;
        };
        let i = id as usize;
        if i == self.slots.len() {
            self.slots.push(Slot::default());
        }
        let slot = &mut self.slots[i];
        slot.deadline = deadline;
        slot.seen = seen;
        // A shorter settle period since the entry was queued can make the deadline
        // earlier than the entry: then a new one (the old one is dropped when it comes up).
        if deadline < slot.queued_at {
            slot.queued_at = deadline;
            self.queue.push(Reverse((deadline, id)));
        }
        self.compact();
    }

    /// Stop tracking `name` in `host` (deleted, renamed away, or completed by a rename).
    pub fn forget(&mut self, host: HostId, name: &[u8]) {
        if self.keys.remove(host.raw(), name).is_some() {
            self.compact();
        }
    }

    /// Rebuilds the tracker from the live files once forgotten ones hold more memory
    /// than they do, and gives that memory back.
    fn compact(&mut self) {
        if self.keys.is_empty() {
            self.slots = Vec::new();
            self.queue = BinaryHeap::new();
            return;
        }
        if !self.keys.wasteful() && self.queue.len() <= 2 * self.keys.len() + 1024 {
            return;
        }
        let mut fresh = Settle::starting(self.settle, self.epoch);
        fresh.hasher = self.hasher.clone();
        for id in self.keys.ids() {
            let (tag, name) = self.keys.get(id);
            let Some((new, _)) = fresh.keys.insert(tag, name) else {
                continue;
            };
            let mut slot = self.slots[id as usize];
            slot.queued_at = slot.deadline;
            debug_assert_eq!(new as usize, fresh.slots.len());
            fresh.slots.push(slot);
            fresh.queue.push(Reverse((slot.deadline, new)));
        }
        fresh.slots.shrink_to_fit();
        *self = fresh;
    }

    /// Changes the quiet period for files touched from now on.
    pub fn set_period(&mut self, settle: Duration) {
        self.settle = settle;
    }

    /// Number of files being watched.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The files still being watched.
    pub fn keys(&self) -> Vec<Key> {
        self.keys.ids().map(|id| self.key(id)).collect()
    }

    fn key(&self, id: u32) -> Key {
        let (tag, name) = self.keys.get(id);
        (HostId::from_raw(tag), name.into())
    }

    /// When [`Settle::due`] next has something to do.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.queue.peek() {
            if self.keep(at, id) {
                return Some(self.instant(at));
            }
        }
        None
    }

    /// Looks at every file whose quiet period ended by `now`, with `stat` telling what it
    /// looks like now (`None`: gone or no longer a candidate). Unchanged since the last
    /// look: complete, returned. Changed: watched for another period.
    pub fn due(
        &mut self,
        now: Instant,
        mut stat: impl FnMut(HostId, &[u8]) -> Option<FileState>,
    ) -> Vec<Key> {
        let now_ticks = self.ticks(now);
        let next = self.ticks(now + self.settle);
        let mut done = Vec::new();
        while let Some(&Reverse((at, id))) = self.queue.peek() {
            if at > now_ticks {
                break;
            }
            if !self.keep(at, id) {
                continue;
            }
            self.queue.pop();
            let i = id as usize;
            self.slots[i].queued_at = NOT_QUEUED;
            let (tag, name) = self.keys.get(id);
            let host = HostId::from_raw(tag);
            let cur = stat(host, name);
            let print = self.fingerprint(cur);
            let slot = &mut self.slots[i];
            match cur {
                Some(_) if slot.seen != print => {
                    slot.seen = print;
                    slot.deadline = next;
                    slot.queued_at = next;
                    self.queue.push(Reverse((next, id)));
                }
                complete => {
                    let name: Box<[u8]> = name.into();
                    self.keys.remove(tag, &name);
                    if complete.is_some() {
                        done.push((host, name));
                    }
                }
            }
        }
        self.compact();
        done
    }

    /// Looks at the queue's first entry, `(at, id)`: `true` if it stands for a file due
    /// at `at`. Otherwise it is dropped (a forgotten file, or a duplicate) or put back at
    /// its file's later deadline, and `false`.
    fn keep(&mut self, at: u64, id: u32) -> bool {
        let slot = &mut self.slots[id as usize];
        if slot.queued_at != at {
            self.queue.pop();
            return false;
        }
        if !self.keys.is_live(id) {
            slot.queued_at = NOT_QUEUED;
            self.queue.pop();
            return false;
        }
        if slot.deadline > at {
            // Touched since it was queued.
            slot.queued_at = slot.deadline;
            self.queue.pop();
            self.queue.push(Reverse((slot.deadline, id)));
            return false;
        }
        true
    }

    /// Bytes held (for tests and benchmarks).
    pub fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.queue.capacity() * 16
    }
}

/// Names whose presence beside `name`, in the same directory, means `name` is not
/// complete: aria2's and axel's control files, and for an axel state file `X.st`, the
/// download `X` it belongs to.
pub fn busy_markers(name: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [&b".aria2"[..], b".st"]
        .iter()
        .map(|suffix| [name, suffix].concat())
        .collect();
    if let Some(download) = name.strip_suffix(b".st").filter(|d| !d.is_empty()) {
        out.push(download.to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloaders_control_files_keep_a_download_waiting() {
        assert_eq!(
            busy_markers(b"foo.iso"),
            [b"foo.iso.aria2".to_vec(), b"foo.iso.st".to_vec()]
        );
        // axel's state file waits while its download is there.
        assert!(busy_markers(b"foo.iso.st").contains(&b"foo.iso".to_vec()));
        assert_eq!(busy_markers(b".st").len(), 2);
    }

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
        // What downloaders put after Portage's suffix (issue 11.5).
        for temp in [
            &b"foo.__download__.tar"[..],
            b"foo-1.0.tar.gz.__download__.aria2",
            b"foo-1.0.tar.gz.__download__.st",
            b"foo-1.0.tar.gz.__download__.1",
        ] {
            assert_eq!(r.skip(temp), Some(Skip::Download));
        }
        assert_eq!(r.skip(b"foo-1.0.tar.gz.aria2"), Some(Skip::ControlFile));
        assert_eq!(r.skip(b"download-1.0.tar.gz"), None);
    }

    #[test]
    fn scanned_files_changed_within_settle_may_still_be_written() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s10 = Duration::from_secs(10);
        assert!(may_still_be_written((999_995, 0), now, s10));
        assert!(!may_still_be_written((999_990, 0), now, s10));
        // The clock was set back: a ctime in the future says nothing.
        assert!(may_still_be_written((2_000_000, 0), now, s10));
        // Nonsense from a filesystem: clamped, not a panic.
        assert!(!may_still_be_written((-5, -1), now, s10));
        assert!(may_still_be_written((999_999, 5_000_000_000), now, s10));
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

    const H: HostId = HostId::from_raw(0);

    fn keys(names: &[&str]) -> Vec<Key> {
        names.iter().map(|n| (H, n.as_bytes().into())).collect()
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
        s.touch(H, b"a", t0, Some(st(5, 1)));
        assert_eq!(s.next_deadline(), Some(t0 + s10));
        assert!(
            s.due(t0 + Duration::from_secs(9), |_, _| Some(st(5, 1)))
                .is_empty()
        );
        assert_eq!(s.due(t0 + s10, |_, _| Some(st(5, 1))), keys(&["a"]));
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn growing_file_waits_another_period() {
        let t0 = Instant::now();
        let s10 = Duration::from_secs(10);
        let mut s = Settle::new(s10);
        s.touch(H, b"a", t0, Some(st(5, 1)));
        // Written without an event we saw (overflow, merged event): still not complete.
        assert!(s.due(t0 + s10, |_, _| Some(st(6, 2))).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + s10 + s10));
        assert_eq!(s.due(t0 + s10 + s10, |_, _| Some(st(6, 2))), keys(&["a"]));
    }

    #[test]
    fn events_push_the_deadline() {
        let t0 = Instant::now();
        let s10 = Duration::from_secs(10);
        let mut s = Settle::new(s10);
        s.touch(H, b"a", t0, Some(st(1, 1)));
        s.touch(H, b"a", t0 + Duration::from_secs(8), Some(st(2, 1)));
        assert!(s.due(t0 + s10, |_, _| Some(st(2, 1))).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(18)));
        assert_eq!(
            s.due(t0 + Duration::from_secs(18), |_, _| Some(st(2, 1))),
            keys(&["a"])
        );
    }

    #[test]
    fn vanished_or_replaced_files() {
        let t0 = Instant::now();
        let s1 = Duration::from_secs(1);
        let mut s = Settle::new(s1);
        s.touch(H, b"gone", t0, Some(st(1, 1)));
        s.touch(H, b"swapped", t0, Some(st(1, 1)));
        s.touch(H, b"forgotten", t0, Some(st(1, 1)));
        s.forget(H, b"forgotten");
        let mut other = st(1, 1);
        other.ino = 2;
        let done = s.due(t0 + s1, |_, k| match k {
            b"gone" => None,
            _ => Some(other),
        });
        assert!(done.is_empty());
        assert_eq!(s.len(), 1);
        assert_eq!(s.due(t0 + s1 + s1, |_, _| Some(other)), keys(&["swapped"]));
    }

    #[test]
    fn unreadable_at_touch_needs_a_full_period() {
        let t0 = Instant::now();
        let s1 = Duration::from_secs(1);
        let mut s = Settle::new(s1);
        s.touch(H, b"a", t0, None);
        assert!(s.due(t0 + s1, |_, _| Some(st(1, 1))).is_empty());
        assert_eq!(s.due(t0 + s1 + s1, |_, _| Some(st(1, 1))), keys(&["a"]));
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

    fn name(i: u64) -> Vec<u8> {
        format!("distfile-{i:07}.tar.gz").into_bytes()
    }

    /// Names created and deleted (a churn of temporaries, a client's games) leave nothing
    /// behind once forgotten, and repeated events for one file do not pile up.
    #[test]
    fn churn_and_repeated_events_do_not_grow_the_tracker() {
        const H: HostId = HostId::from_raw(3);
        let mut s = Settle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        // One file stays pending throughout, so the tracker never simply empties.
        s.touch(H, b"stays", t0, state(1));
        for i in 0..200_000u64 {
            s.touch(H, &name(i), t0 + Duration::from_micros(i), state(i));
            s.forget(H, &name(i));
        }
        assert_eq!(s.keys(), vec![(H, b"stays"[..].into())]);
        assert!(s.heap_bytes() < 256 * 1024, "{} bytes", s.heap_bytes());
        // One file, many event batches, each moving its deadline: one queue entry.
        let before = s.queue.len();
        for ms in 0..100_000u64 {
            s.touch(H, b"busy", t0 + Duration::from_millis(ms), state(ms));
        }
        assert_eq!(s.len(), 2);
        assert!(s.queue.len() <= before + 1, "{} entries", s.queue.len());
        s.forget(H, b"busy");
        s.forget(H, b"stays");
        assert_eq!(s.heap_bytes(), 0);
    }

    /// 500,000 files pending at once (issue 9.11: under 64 MiB for the whole daemon).
    #[test]
    fn half_a_million_pending_files_fit_in_about_100_bytes_each() {
        let mut s = Settle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..500_000u64 {
            s.touch(HostId::from_raw(0), &name(i), t0, state(i));
        }
        let per = s.heap_bytes() / 500_000;
        assert!(per <= 128, "{per} bytes per pending file");
    }

    /// The queue tricks (one entry per file, put back when its deadline moved, entries of
    /// forgotten files dropped lazily, rebuilds) agree with the rule computed naively.
    #[test]
    fn agrees_with_a_naive_tracker() {
        use std::collections::HashMap;
        let settle = Duration::from_millis(50);
        let t0 = Instant::now();
        let mut s = Settle::starting(settle, t0);
        // Naive: (deadline, seen) per key, every key looked at on every step.
        let mut model: HashMap<Key, (Instant, Option<FileState>)> = HashMap::new();
        let mut disk: HashMap<Key, Option<FileState>> = HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut now = t0;
        for step in 0..60_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            now += Duration::from_millis(rng % 7);
            let key: Key = (
                HostId::from_raw((rng >> 8) as u32 % 2),
                name((rng >> 16) % 300).into(),
            );
            let period = if step > 30_000 { settle / 2 } else { settle };
            match (rng >> 32) % 10 {
                0..=4 => {
                    let st = if (rng >> 40).is_multiple_of(8) {
                        None
                    } else {
                        state(step)
                    };
                    disk.insert(key.clone(), st);
                    s.touch(key.0, &key.1, now, st);
                    model.insert(key, (now + period, st));
                }
                5 => {
                    s.forget(key.0, &key.1);
                    model.remove(&key);
                    disk.remove(&key);
                }
                6 => {
                    // Changed without an event we saw.
                    disk.insert(key, state(step));
                }
                _ => {}
            }
            if step == 30_000 {
                s.set_period(settle / 2);
            }
            let period = if step >= 30_000 { settle / 2 } else { settle };
            let look = |h: HostId, n: &[u8]| disk.get(&(h, n.into())).copied().flatten();
            let mut got = s.due(now, look);
            let mut want = Vec::new();
            let mut keys: Vec<Key> = model.keys().cloned().collect();
            keys.sort();
            for k in keys {
                let (deadline, seen) = model[&k];
                if deadline > now {
                    continue;
                }
                match look(k.0, &k.1) {
                    Some(cur) if seen != Some(cur) => {
                        model.insert(k, (now + period, Some(cur)));
                    }
                    cur => {
                        model.remove(&k);
                        if cur.is_some() {
                            want.push(k);
                        }
                    }
                }
            }
            got.sort();
            assert_eq!(got, want, "step {step}");
            assert_eq!(s.len(), model.len(), "step {step}");
        }
    }
}
