//! What the daemon tells `distlink status`: a small `key=value` file it rewrites every
//! few seconds and at exit, in a directory only root can write. Optionally the same
//! counters as a Prometheus node-exporter textfile. Nothing is ever served on the network.
//!
//! Both files are opened at start-up, as root, before privileges are dropped, and never
//! through a symlink: each directory is opened without following symlinks and must be
//! owned by root (or the configured user) and writable by nobody else.
//! * The status file ([`StatusFile`]) is kept open and rewritten in place under an
//!   exclusive `flock`; `distlink status` reads it under a shared one. So a daemon
//!   linking as `user:` still writes it although its directory is root's (systemd's
//!   `RuntimeDirectory=` gives it back to root at every command it spawns).
//! * The textfile ([`TextFile`]) is replaced atomically, as node-exporter expects: a
//!   temporary with an unpredictable name created `O_EXCL|O_NOFOLLOW` relative to the
//!   directory's descriptor, then `renameat` over the name. With `user:`, that user must
//!   be able to write the directory.

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Exit code of `distlink status` when the daemon is not running (LSB convention).
pub const EXIT_NOT_RUNNING: i32 = 3;

/// Everything the status file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pid: u32,
    pub state: String,
    pub started: u64,
    pub updated: u64,
    pub config: String,
    /// The fanotify mark strategy in use and why (see `fanotify.rs`).
    pub marks: String,
    /// (name, directory, present)
    pub hosts: Vec<(String, String, bool)>,
    pub files: u64,
    pub links: u64,
    pub conflicts: u64,
    /// Copies merged into one inode since start, and the bytes that freed.
    pub merged: u64,
    pub merged_bytes: u64,
    pub errors: u64,
    pub skipped: u64,
    pub overflows: u64,
    /// Files written under their final name, waiting for their quiet period.
    pub settling: u64,
    /// Failed fan-outs waiting for another try (see `retry.rs`).
    pub retrying: u64,
    pub reconciles: u64,
    pub pool_files: u64,
    pub pool_bytes: u64,
    pub last_reconcile: u64,
    pub last_reconcile_summary: String,
    /// The read-only pool (see `pool.rs`): empty without one, else where it is.
    pub pool_dir: String,
    /// Symlinks into the pool replaced by links since start, and their bytes.
    pub pool_taken: u64,
    pub pool_taken_bytes: u64,
    /// Pool names removed since start (no host held them), and their bytes.
    pub pool_removed: u64,
    pub pool_removed_bytes: u64,
    /// Pool names no host holds, kept until their `keep` is over.
    pub pool_kept: u64,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line per value; strings are escaped so a value never spans lines.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unesc(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    out
}

impl Snapshot {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pid={}\nstate={}\nstarted={}\nupdated={}\nconfig={}\nmarks={}",
            self.pid,
            self.state,
            self.started,
            self.updated,
            esc(&self.config),
            esc(&self.marks)
        );
        for (name, path, present) in &self.hosts {
            let _ = writeln!(
                s,
                "host={}\t{}\t{}",
                esc(name),
                esc(path),
                if *present { "present" } else { "missing" }
            );
        }
        let _ = writeln!(
            s,
            "files={}\nlinks={}\nconflicts={}\nmerged={}\nmerged_bytes={}\nerrors={}\nskipped={}\noverflows={}\nsettling={}\nretrying={}\nreconciles={}\npool_files={}\npool_bytes={}\nlast_reconcile={}\nlast_reconcile_summary={}",
            self.files,
            self.links,
            self.conflicts,
            self.merged,
            self.merged_bytes,
            self.errors,
            self.skipped,
            self.overflows,
            self.settling,
            self.retrying,
            self.reconciles,
            self.pool_files,
            self.pool_bytes,
            self.last_reconcile,
            esc(&self.last_reconcile_summary)
        );
        if !self.pool_dir.is_empty() {
            let _ = writeln!(
                s,
                "pool_dir={}\npool_taken={}\npool_taken_bytes={}\npool_removed={}\npool_removed_bytes={}\npool_kept={}",
                esc(&self.pool_dir),
                self.pool_taken,
                self.pool_taken_bytes,
                self.pool_removed,
                self.pool_removed_bytes,
                self.pool_kept
            );
        }
        s
    }

    /// Parses what [`Snapshot::render`] wrote; unknown keys are ignored, bad numbers are 0.
    pub fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        let mut nums: BTreeMap<&str, u64> = BTreeMap::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "state" => s.state = v.to_owned(),
                "config" => s.config = unesc(v),
                "marks" => s.marks = unesc(v),
                "pool_dir" => s.pool_dir = unesc(v),
                "last_reconcile_summary" => s.last_reconcile_summary = unesc(v),
                "host" => {
                    let mut parts = v.split('\t');
                    let (name, path) = (
                        unesc(parts.next().unwrap_or("")),
                        unesc(parts.next().unwrap_or("")),
                    );
                    s.hosts.push((name, path, parts.next() == Some("present")));
                }
                k => {
                    nums.insert(k, v.parse().unwrap_or(0));
                }
            }
        }
        let n = |k: &str| nums.get(k).copied().unwrap_or(0);
        s.pid = n("pid") as u32;
        s.started = n("started");
        s.updated = n("updated");
        s.files = n("files");
        s.links = n("links");
        s.conflicts = n("conflicts");
        s.merged = n("merged");
        s.merged_bytes = n("merged_bytes");
        s.errors = n("errors");
        s.skipped = n("skipped");
        s.overflows = n("overflows");
        s.settling = n("settling");
        s.retrying = n("retrying");
        s.reconciles = n("reconciles");
        s.pool_files = n("pool_files");
        s.pool_bytes = n("pool_bytes");
        s.last_reconcile = n("last_reconcile");
        s.pool_taken = n("pool_taken");
        s.pool_taken_bytes = n("pool_taken_bytes");
        s.pool_removed = n("pool_removed");
        s.pool_removed_bytes = n("pool_removed_bytes");
        s.pool_kept = n("pool_kept");
        s
    }

    /// The node-exporter textfile format.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                s,
                "# HELP distlink_{name} {help}\n# TYPE distlink_{name} {kind}\ndistlink_{name} {value}"
            );
        };
        metric(
            "files_fanned_out_total",
            "counter",
            "Files linked into at least one other host since start.",
            self.files,
        );
        metric(
            "links_total",
            "counter",
            "Hardlinks made since start.",
            self.links,
        );
        metric(
            "conflicts_total",
            "counter",
            "Names (per host) that held another file, left alone; each counted once.",
            self.conflicts,
        );
        metric(
            "merged_total",
            "counter",
            "Byte-identical copies replaced by a link since start.",
            self.merged,
        );
        metric(
            "merged_bytes_total",
            "counter",
            "Bytes freed by merging identical copies since start.",
            self.merged_bytes,
        );
        metric(
            "errors_total",
            "counter",
            "Failed link or record attempts.",
            self.errors,
        );
        metric(
            "queue_overflows_total",
            "counter",
            "fanotify queue overflows.",
            self.overflows,
        );
        metric(
            "settling",
            "gauge",
            "Files written under their final name, waiting for their quiet period.",
            self.settling,
        );
        metric(
            "retrying",
            "gauge",
            "Failed fan-outs waiting for another try.",
            self.retrying,
        );
        metric(
            "reconciles_total",
            "counter",
            "Reconciles run since start.",
            self.reconciles,
        );
        metric(
            "pool_files",
            "gauge",
            "Distinct files in the host directories at the last reconcile.",
            self.pool_files,
        );
        metric(
            "pool_bytes",
            "gauge",
            "Bytes of those files at the last reconcile.",
            self.pool_bytes,
        );
        if !self.pool_dir.is_empty() {
            metric(
                "pool_taken_total",
                "counter",
                "Symlinks into the read-only pool replaced by a link of its file since start.",
                self.pool_taken,
            );
            metric(
                "pool_taken_bytes_total",
                "counter",
                "Bytes hosts took from the read-only pool instead of downloading, since start.",
                self.pool_taken_bytes,
            );
            metric(
                "pool_removed_total",
                "counter",
                "Read-only pool names removed since start because no host held them.",
                self.pool_removed,
            );
            metric(
                "pool_kept",
                "gauge",
                "Read-only pool names no host holds, kept until keep is over.",
                self.pool_kept,
            );
        }
        metric(
            "last_reconcile_timestamp_seconds",
            "gauge",
            "When the last reconcile ended.",
            self.last_reconcile,
        );
        metric(
            "start_time_seconds",
            "gauge",
            "When the daemon started.",
            self.started,
        );
        s.push_str("# HELP distlink_host_present Whether a host directory is present.\n# TYPE distlink_host_present gauge\n");
        for (name, _, present) in &self.hosts {
            let name = name.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                s,
                "distlink_host_present{{host=\"{name}\"}} {}",
                u8::from(*present)
            );
        }
        s
    }
}

/// Opens the directory of `path` (no symlinks anywhere) and checks that nobody but root
/// or `uid` can change what is in it. Returns it with the file name.
fn open_parent(path: &Path, uid: Option<u32>) -> std::io::Result<(OwnedFd, std::ffi::OsString)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a file path"));
    };
    let fd = crate::hosts::open_dir(dir).map_err(std::io::Error::from)?;
    let st = nix::sys::stat::fstat(&fd)?;
    let owner_ok = st.st_uid == 0 || Some(st.st_uid) == uid;
    if !owner_ok || st.st_mode & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is owned by uid {} with mode {:o}: it must be owned by root (or the configured user) and writable by nobody else",
            dir.display(),
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok((fd, name.to_owned()))
}

/// The status file, open for the daemon's whole life.
#[derive(Debug)]
pub struct StatusFile {
    file: std::fs::File,
}

impl StatusFile {
    /// Creates (or opens) the status file, mode 0600, before privileges are dropped.
    /// Refuses a symlink, a non-regular file and a file with other names.
    pub fn open(path: &Path, uid: Option<u32>) -> std::io::Result<StatusFile> {
        let (dir, name) = open_parent(path, uid)?;
        let fd = nix::fcntl::openat(
            &dir,
            name.as_os_str(),
            OFlag::O_RDWR
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP => std::io::Error::other(format!(
                "{} is a symlink; refusing to write through it",
                path.display()
            )),
            e => e.into(),
        })?;
        let st = nix::sys::stat::fstat(&fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 1 {
            return Err(std::io::Error::other(format!(
                "{} is not a plain file with one name; remove it",
                path.display()
            )));
        }
        Ok(StatusFile {
            file: std::fs::File::from(fd),
        })
    }

    /// Replaces the contents with `text` (under an exclusive lock, so a reader taking
    /// the shared lock sees the old or the new text, never a mix).
    pub fn write(&self, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let _lock = Lock::take(&self.file, nix::fcntl::FlockArg::LockExclusive)?;
        self.file.write_all_at(text.as_bytes(), 0)?;
        self.file.set_len(text.len() as u64)
    }

    /// Takes the daemon's lock on the file (an open-file-description lock, which
    /// `flock` readers and writers do not see): `false` when another daemon holds it.
    /// Released when the process ends, however it ends.
    pub fn lock(&self) -> std::io::Result<bool> {
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match nix::fcntl::fcntl(&self.file, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// What the file holds now.
    pub fn read(&self) -> std::io::Result<String> {
        read_locked(&self.file)
    }
}

/// A `flock` held until dropped.
struct Lock<'a>(&'a std::fs::File);

impl<'a> Lock<'a> {
    fn take(file: &'a std::fs::File, how: nix::fcntl::FlockArg) -> std::io::Result<Lock<'a>> {
        #[allow(deprecated)] // nix's Flock wrapper wants an owned descriptor
        nix::fcntl::flock(file.as_raw_fd(), how)?;
        Ok(Lock(file))
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        #[allow(deprecated)]
        let _ = nix::fcntl::flock(self.0.as_raw_fd(), nix::fcntl::FlockArg::Unlock);
    }
}

fn read_locked(file: &std::fs::File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let _lock = Lock::take(file, nix::fcntl::FlockArg::LockShared)?;
    let len = file.metadata()?.len().min(1 << 20) as usize;
    let mut buf = vec![0u8; len];
    let n = file.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads a status file for `distlink status` (never through a symlink).
pub fn read_status(path: &Path) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    read_locked(&file)
}

/// A file replaced atomically (temporary + rename) in a directory opened at start-up.
#[derive(Debug)]
pub struct TextFile {
    dir: OwnedFd,
    name: std::ffi::OsString,
}

impl TextFile {
    pub fn open(path: &Path, uid: Option<u32>) -> std::io::Result<TextFile> {
        let (dir, name) = open_parent(path, uid)?;
        Ok(TextFile { dir, name })
    }

    pub fn write(&self, text: &str) -> std::io::Result<()> {
        use std::hash::{BuildHasher, Hasher};
        // Unpredictable, hidden, and without the `.prom` suffix node-exporter reads.
        let salt = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(&self.name);
        tmp.push(format!(".{}.{salt:016x}.tmp", std::process::id()));
        let fd = nix::fcntl::openat(
            &self.dir,
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        let mut file = std::fs::File::from(fd);
        let written = file.write_all(text.as_bytes()).and_then(|()| {
            nix::fcntl::renameat(&self.dir, tmp.as_os_str(), &self.dir, self.name.as_os_str())
                .map_err(std::io::Error::from)
        });
        if written.is_err() {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        written
    }
}

/// Creates the directory of the status file if it is missing (mode 0700, root's) before
/// privileges are dropped.
pub fn prepare_dir(path: &Path) -> std::io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Snapshot {
            pid: 42,
            state: "running".into(),
            started: 1,
            updated: 2,
            config: "/etc/distlink.yaml".into(),
            marks: "directories (mark: auto, and\nEXDEV)".into(),
            hosts: vec![
                ("a".into(), "/d/a".into(), true),
                ("b x".into(), "/d/b\nc".into(), false),
            ],
            files: 3,
            links: 4,
            conflicts: 5,
            merged: 15,
            merged_bytes: 16,
            errors: 6,
            skipped: 7,
            overflows: 8,
            settling: 13,
            retrying: 14,
            reconciles: 9,
            pool_files: 10,
            pool_bytes: 11,
            last_reconcile: 12,
            last_reconcile_summary: "done in 1s".into(),
            pool_dir: "/d/pool (clients mount it at /p; keep 0s)".into(),
            pool_taken: 17,
            pool_taken_bytes: 18,
            pool_removed: 19,
            pool_removed_bytes: 20,
            pool_kept: 21,
        };
        let back = Snapshot::parse(&s.render());
        assert_eq!(back, s);
        assert_eq!(back.hosts[0], s.hosts[0]);
        assert_eq!(back.hosts[1].1, "/d/b\nc");
        assert_eq!(back.pool_bytes, 11);
        assert_eq!(back.settling, 13);
        assert_eq!(back.retrying, 14);
        assert_eq!(back.marks, s.marks);
        assert_eq!((back.merged, back.merged_bytes), (15, 16));
        assert_eq!(back.last_reconcile_summary, "done in 1s");
        let p = s.prometheus();
        assert!(p.contains("distlink_links_total 4\n"));
        assert!(p.contains("# TYPE distlink_settling gauge\ndistlink_settling 13\n"));
        assert!(p.contains("distlink_host_present{host=\"a\"} 1\n"));
    }
}
