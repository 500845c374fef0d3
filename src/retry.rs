//! Fan-outs that failed are tried again, with backoff, until they succeed or the file is
//! gone. Pure: the event loop hands in every outcome and the time, and asks what is due.
//!
//! * Retried: a link that failed (ENOSPC, EDQUOT, EROFS, EMLINK, EIO, …: the disk fills
//!   up, a quota is hit, the filesystem is remounted read-only), a record that could not
//!   be written, a file that could not be opened (EMFILE). Waits 1 s, 2 s, 4 s, … up to
//!   [`MAX_WAIT`] between tries, for as long as it takes.
//! * Also retried: a request for the pool's file whose link failed, or whose record could
//!   not be written (see `pool_ops.rs`).
//! * Not retried: conflicts (another file under the name: left alone on purpose), a name
//!   the record has no room for, a record of another numbering, a file that is not a
//!   regular one; all are logged once.
//! * Done: any later fan-out of the same name that neither fails nor is deferred (a
//!   retry, a reconcile, a new download under the name), or the file being gone.
//! * A failed record write loses no deletion while the daemon runs: the record is kept
//!   in memory until it can be written (see `link.rs`), and every fan-out of the inode
//!   uses it, so a host that deletes the file meanwhile does not get it back.
//!
//! Pending retries live in memory: a restart's reconcile looks at every name again.

use crate::completion::Key;
use crate::hosts::HostId;
use crate::link::{NotLinked, Outcome};
use crate::pool_ops::Taken;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// First wait; doubled at each failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between two tries.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// What the retry rule makes of one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again.
    Again,
    /// Nothing more to do for this name.
    Done,
    /// Says nothing about the fan-out (deferred to the settle rule, a dry run).
    Unchanged,
}

/// The rule (see the module doc).
pub fn verdict(o: &Outcome) -> Verdict {
    if o.dry_run {
        return Verdict::Unchanged;
    }
    match &o.result {
        Err(NotLinked::Failed(_)) => Verdict::Again,
        Err(_) => Verdict::Done,
        Ok(f) if f.deferred => Verdict::Unchanged,
        Ok(f) if f.from_pool.is_some() => match &f.from_pool {
            Some(
                Taken::Failed(_)
                | Taken::Done {
                    record_unwritable: Some(_),
                    ..
                },
            ) => Verdict::Again,
            _ => Verdict::Done,
        },
        Ok(f) if f.vanished => Verdict::Done,
        Ok(f) if !f.failed.is_empty() || f.record_unwritable.is_some() => Verdict::Again,
        Ok(_) => Verdict::Done,
    }
}

/// The wait after `failures` failed tries (1 or more).
pub fn backoff(failures: u32) -> Duration {
    FIRST_WAIT
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_WAIT)
}

#[derive(Debug)]
struct Pending {
    failures: u32,
    /// `None` while a try is under way.
    due: Option<Instant>,
}

/// The names waiting for another try, and their order in time: finding what is due and
/// the next deadline costs no scan of every pending name (the event loop asks on every
/// turn, and a full disk can leave many waiting).
#[derive(Debug, Default)]
pub struct Retries {
    pending: HashMap<Key, Pending>,
    /// `(due, key)` for every pending name with a due time, and only those.
    queue: BTreeSet<(Instant, Key)>,
}

impl Retries {
    /// Takes in the outcome of any fan-out, at `now`.
    pub fn note(&mut self, o: &Outcome, now: Instant) {
        self.apply(o.src, &o.name, verdict(o), now);
    }

    /// Takes in the verdict on a fan-out of `name` from `host`.
    pub fn apply(&mut self, host: HostId, name: &[u8], v: Verdict, now: Instant) {
        match v {
            Verdict::Unchanged => {}
            Verdict::Done => {
                if self.pending.is_empty() {
                    return;
                }
                let key: Key = (host, name.into());
                if let Some(Pending { due: Some(d), .. }) = self.pending.remove(&key) {
                    self.queue.remove(&(d, key));
                }
            }
            Verdict::Again => {
                let key: Key = (host, name.into());
                let p = self.pending.entry(key.clone()).or_insert(Pending {
                    failures: 0,
                    due: None,
                });
                p.failures = p.failures.saturating_add(1);
                let due = now + backoff(p.failures);
                if let Some(old) = p.due.replace(due) {
                    self.queue.remove(&(old, key.clone()));
                }
                self.queue.insert((due, key));
            }
        }
    }

    /// The names due at `now`; they count as under way until their outcome is noted.
    pub fn due(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while self.queue.first().is_some_and(|(d, _)| *d <= now) {
            let Some((_, key)) = self.queue.pop_first() else {
                break;
            };
            if let Some(p) = self.pending.get_mut(&key) {
                p.due = None;
            }
            out.push(key);
        }
        out
    }

    /// Puts back a name whose try could not be started (its host is gone for now).
    pub fn postpone(&mut self, key: &Key, now: Instant) {
        if let Some(p) = self.pending.get_mut(key) {
            let due = now + backoff(p.failures);
            if let Some(old) = p.due.replace(due) {
                self.queue.remove(&(old, key.clone()));
            }
            self.queue.insert((due, key.clone()));
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(d, _)| *d)
    }

    /// Names waiting for another try (or being tried).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{FanOut, Trigger};
    use nix::errno::Errno;
    use std::sync::Arc;

    fn outcome(result: Result<FanOut, NotLinked>) -> Outcome {
        Outcome {
            src: HostId::from_raw(0),
            src_name: Arc::from("server"),
            name: (*b"foo").into(),
            trigger: Trigger::Settled,
            dry_run: false,
            result,
        }
    }

    fn failed_link() -> Outcome {
        outcome(Ok(FanOut {
            failed: vec![(Arc::from("host1"), Errno::ENOSPC)],
            ..FanOut::default()
        }))
    }

    fn key() -> Key {
        (HostId::from_raw(0), (*b"foo").into())
    }

    #[test]
    fn what_is_retried() {
        let unwritable = outcome(Ok(FanOut {
            record_unwritable: Some("No space left on device".into()),
            ..FanOut::default()
        }));
        assert_eq!(verdict(&unwritable), Verdict::Again);
        assert_eq!(verdict(&failed_link()), Verdict::Again);
        assert_eq!(
            verdict(&outcome(Err(NotLinked::Failed(Errno::EMFILE)))),
            Verdict::Again
        );
        for done in [
            outcome(Ok(FanOut::default())),
            outcome(Err(NotLinked::Gone)),
            outcome(Ok(FanOut {
                conflicts: vec![Arc::from("host1")],
                ..FanOut::default()
            })),
            outcome(Ok(FanOut {
                record_full: true,
                ..FanOut::default()
            })),
        ] {
            assert_eq!(verdict(&done), Verdict::Done);
        }
        let deferred = outcome(Ok(FanOut {
            deferred: true,
            ..FanOut::default()
        }));
        assert_eq!(verdict(&deferred), Verdict::Unchanged);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(10), MAX_WAIT);
        assert_eq!(backoff(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn a_name_is_tried_again_until_it_succeeds() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.note(&failed_link(), t0);
        assert_eq!(r.len(), 1);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(r.due(t0).is_empty());
        let due = r.due(t0 + Duration::from_secs(1));
        assert_eq!(due, [key()]);
        // Under way: not due again, still counted.
        assert!(r.due(t0 + Duration::from_secs(100)).is_empty());
        assert_eq!((r.len(), r.next_deadline()), (1, None));
        // Fails again: twice the wait.
        let t1 = t0 + Duration::from_secs(1);
        r.note(&failed_link(), t1);
        assert_eq!(r.next_deadline(), Some(t1 + Duration::from_secs(2)));
        // A deferred outcome changes nothing; a clean one ends it.
        let deferred = outcome(Ok(FanOut {
            deferred: true,
            ..FanOut::default()
        }));
        r.note(&deferred, t1);
        assert_eq!(r.len(), 1);
        r.note(&outcome(Ok(FanOut::default())), t1);
        assert!(r.is_empty());
        // Its queued due time went with it.
        assert_eq!(r.next_deadline(), None);
        assert!(r.due(t1 + MAX_WAIT).is_empty());
    }
}
