//! The fan-out plan: what each host gets for one completed file. Pure: the inputs are
//! values (the hosts' names, the record read from the inode, what each host directory
//! was seen to hold under the name), so every rule is tested here without a filesystem.
//!
//! * The source host holds the file.
//! * A host named in the inode's [record](crate::record) either holds it or deleted it on
//!   purpose (`eclean-dist`): it never gets a link again.
//! * Any other host gets a link, unless it was seen holding this very inode already, or
//!   another file under the name (a conflict, left alone: a host in the middle of its own
//!   download renames its copy over the name; Portage unlinks a bad one itself).
//!
//! Whether a host holds something is often not known in advance: the link is then tried
//! and the kernel answers (`EEXIST`). A dry run looks first and plans, acting on nothing.

use crate::record::Record;

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

/// Plans the fan-out of a file from host `src`. `record` is the inode's record if it
/// describes this inode and name (see [`Record::describes`]); `seen` holds one entry per
/// host (missing entries are [`Seen::Unknown`]).
pub fn plan(src: usize, hosts: &[&str], record: Option<&Record>, seen: &[Seen]) -> Plan {
    let steps = hosts
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let seen = seen.get(i).copied().unwrap_or(Seen::Unknown);
            if i == src {
                Step::Source
            } else if record.is_some_and(|r| r.has(name)) {
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

    const HOSTS: [&str; 4] = ["server", "host1", "host2", "host3"];

    fn record(hosts: &[&str]) -> Record {
        Record {
            ino: 5,
            name: b"foo".to_vec(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    #[test]
    fn no_record_links_everywhere_not_looked_at() {
        let p = plan(1, &HOSTS, None, &[]);
        assert_eq!(p.steps, [Link, Source, Link, Link]);
    }

    #[test]
    fn recorded_hosts_never_get_it_again() {
        let r = record(&["server", "host1", "host2"]);
        let p = plan(0, &HOSTS, Some(&r), &[]);
        assert_eq!(p.steps, [Source, Recorded, Recorded, Link]);
        // A dry run looked: host2 deleted it, host1 holds it.
        let p = plan(0, &HOSTS, Some(&r), &[Same, Same, Absent, Absent]);
        assert_eq!(p.steps, [Source, Holds, Deleted, Link]);
    }

    #[test]
    fn what_was_seen_decides_for_unrecorded_hosts() {
        let p = plan(0, &HOSTS, None, &[Same, Same, Other, Absent]);
        assert_eq!(p.steps, [Source, Holds, Conflict, Link]);
    }

    #[test]
    fn a_single_host_plans_nothing() {
        assert_eq!(plan(0, &["server"], None, &[]).steps, [Source]);
    }
}
