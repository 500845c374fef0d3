//! The fan-out plan: what each host gets for one completed file. Pure: the inputs are
//! values (the hosts' numbers, the hosts the inode's record lists for this name, what
//! each host directory was seen to hold under the name), so every rule is tested here
//! without a filesystem.
//!
//! * The source host holds the file.
//! * A host listed for this name in the inode's [record](crate::record) either holds it
//!   or deleted it on purpose (`eclean-dist`): it never gets a link again. Other names of
//!   the inode have entries of their own and do not count.
//! * The [pool](crate::pool) (the member numbered [`POOL_NUMBER`]) is never in a record:
//!   it gets a link whenever it lacks the name, like a host that never cleans.
//! * Any other host gets a link, unless it was seen holding this very inode already, or
//!   another file under the name (a conflict, left alone: a host in the middle of its own
//!   download renames its copy over the name; Portage unlinks a bad one itself).
//!
//! Whether a host holds something is often not known in advance: the link is then tried
//! and the kernel answers (`EEXIST`). A dry run looks first and plans, acting on nothing.

use crate::hosts::POOL_NUMBER;

/// What a host directory holds under the file's name, if anyone looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not looked at: the link will be tried.
    Unknown,
    Absent,
    /// The same inode.
    Same,
    /// Another file (or anything else) under the name.
    Other,
}

/// What one host gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The host the file completed in.
    Source,
    /// Link the file in (or try to).
    Link,
    /// It already holds this inode.
    Holds,
    /// Named in the record and holding nothing under the name: deleted on purpose.
    Deleted,
    /// Named in the record; not looked at.
    Recorded,
    /// Another file under the name: left alone.
    Conflict,
}

/// One [`Step`] per host, by position in the host set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// Plans the fan-out of a file from host `src`. `hosts` are the host numbers by position
/// in the set; `recorded` the (sorted) numbers the inode's record lists for this name;
/// `seen` holds one entry per host (missing entries are [`Seen::Unknown`]).
pub fn plan(src: usize, hosts: &[u16], recorded: &[u16], seen: &[Seen]) -> Plan {
    let steps = hosts
        .iter()
        .enumerate()
        .map(|(i, number)| {
            let seen = seen.get(i).copied().unwrap_or(Seen::Unknown);
            if i == src {
                Step::Source
            } else if *number != POOL_NUMBER && recorded.binary_search(number).is_ok() {
                match seen {
                    Seen::Same => Step::Holds,
                    Seen::Absent => Step::Deleted,
                    Seen::Unknown | Seen::Other => Step::Recorded,
                }
            } else {
                match seen {
                    Seen::Same => Step::Holds,
                    Seen::Other => Step::Conflict,
                    Seen::Absent | Seen::Unknown => Step::Link,
                }
            }
        })
        .collect();
    Plan { steps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Seen::*;
    use Step::*;

    /// server, host1, host2, host3 (host numbers need not follow positions).
    const HOSTS: [u16; 4] = [0, 1, 2, 7];

    #[test]
    fn no_record_links_everywhere_not_looked_at() {
        let p = plan(1, &HOSTS, &[], &[]);
        assert_eq!(p.steps, [Link, Source, Link, Link]);
    }

    #[test]
    fn recorded_hosts_never_get_it_again() {
        let r = [0, 1, 2];
        let p = plan(0, &HOSTS, &r, &[]);
        assert_eq!(p.steps, [Source, Recorded, Recorded, Link]);
        // A dry run looked: host2 deleted it, host1 holds it.
        let p = plan(0, &HOSTS, &r, &[Same, Same, Absent, Absent]);
        assert_eq!(p.steps, [Source, Holds, Deleted, Link]);
    }

    #[test]
    fn what_was_seen_decides_for_unrecorded_hosts() {
        let p = plan(0, &HOSTS, &[], &[Same, Same, Other, Absent]);
        assert_eq!(p.steps, [Source, Holds, Conflict, Link]);
    }

    #[test]
    fn the_pool_gets_every_name_it_lacks_whatever_the_record_says() {
        let members = [0, 1, POOL_NUMBER];
        let r = [0, 1, POOL_NUMBER];
        assert_eq!(plan(0, &members, &r, &[]).steps, [Source, Recorded, Link]);
        let p = plan(0, &members, &r, &[Same, Absent, Absent]);
        assert_eq!(p.steps, [Source, Deleted, Link]);
        let p = plan(0, &members, &[], &[Same, Same, Same]);
        assert_eq!(p.steps, [Source, Holds, Holds]);
        let p = plan(1, &members, &[], &[Unknown, Unknown, Other]);
        assert_eq!(p.steps, [Link, Source, Conflict]);
    }

    #[test]
    fn a_single_host_plans_nothing() {
        assert_eq!(plan(0, &[0], &[], &[]).steps, [Source]);
    }
}
