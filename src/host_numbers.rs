//! Durable host numbers: the small number that stands for a host in every
//! [record](crate::record).
//!
//! A record names the hosts that held a file by number, so that one record fits an
//! extended attribute for up to 1,024 hosts. The numbers are kept in one file
//! (`host_numbers:`, default `/var/lib/distlink/host-numbers`):
//!
//! ```text
//! # distlink host numbers: a number is never changed or reused.
//! tag 5e1f09a2
//! 0 server
//! 1 host1
//! ```
//!
//! * A host gets the next free number the first time a configuration names it, and keeps
//!   it for ever: removing a host from the configuration and adding it back gives it its
//!   old number, and so its history (what it deleted is still deleted). A number is never
//!   given to another name.
//! * The file is written before any record uses a new number: a copy is written, synced
//!   and renamed over the old one, and the directory is synced. A crash leaves the old
//!   file or the new one, never a mix; a number in a record is always in the file.
//!   Writers (the daemon, `distlink sync`) take an exclusive `flock` on the directory.
//! * `tag` is random, made with the file; every record carries it. A record whose tag
//!   is not this file's was written under another numbering (the file was lost or
//!   replaced): distlink cannot tell who deleted the file, so it links it nowhere and
//!   says so (see `record.rs`).
//! * Renaming a host in the configuration alone makes it a new host: a new number, no
//!   history, so it would get back every file it had deleted. To rename one, stop
//!   distlink and change the name on its line here too (the file's header says so);
//!   `distlink check` points at numbered names no longer configured when a new one
//!   appears.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Default file.
pub const DEFAULT_PATH: &str = "/var/lib/distlink/host-numbers";
/// Numbers are `u16`: the file refuses a name once all are given.
const MAX_NUMBERS: usize = u16::MAX as usize;
const HEADER: &str = "# distlink host numbers: a number is never changed or reused.\n\
# To rename a host (same directory, new name), stop distlink and change its name\n\
# here and in the configuration: it keeps its number, and what it deleted stays deleted.\n";

/// Host name → number, and the tag of this numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNumbers {
    pub tag: u32,
    by_name: HashMap<String, u16>,
    /// By number.
    names: Vec<String>,
}

/// Why the numbers could not be read or written.
#[derive(Debug)]
pub enum NumbersError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Damaged {
        path: PathBuf,
        line: usize,
        why: String,
    },
    Full {
        path: PathBuf,
    },
}

impl std::fmt::Display for NumbersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NumbersError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            NumbersError::Damaged { path, line, why } => write!(
                f,
                "{}:{line}: {why} (the host numbers are the key to every record: restore the file, do not edit it)",
                path.display()
            ),
            NumbersError::Full { path } => {
                write!(
                    f,
                    "{}: all {MAX_NUMBERS} host numbers are used",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for NumbersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NumbersError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl HostNumbers {
    /// A new numbering with a fresh tag and no host.
    pub fn fresh() -> HostNumbers {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        HostNumbers {
            tag: h.finish() as u32,
            by_name: HashMap::new(),
            names: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    /// Numbered names not in `configured` (hosts removed, or renamed in the
    /// configuration only).
    pub fn unconfigured<'a>(&'a self, configured: &[&str]) -> Vec<&'a str> {
        self.names
            .iter()
            .map(String::as_str)
            .filter(|n| !configured.contains(n))
            .collect()
    }

    /// The name behind a number.
    pub fn name(&self, number: u16) -> Option<&str> {
        self.names.get(usize::from(number)).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Gives every name without a number the next one. Returns the names added; `None`
    /// when the numbers ran out (nothing added then).
    pub fn add<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Option<Vec<String>> {
        let new: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            names
                .into_iter()
                .filter(|n| !self.by_name.contains_key(*n) && seen.insert(*n))
                .map(str::to_owned)
                .collect()
        };
        if self.names.len() + new.len() > MAX_NUMBERS {
            return None;
        }
        for n in &new {
            self.by_name.insert(n.clone(), self.names.len() as u16);
            self.names.push(n.clone());
        }
        Some(new)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        out.push_str(&format!("tag {:08x}\n", self.tag));
        for (i, n) in self.names.iter().enumerate() {
            out.push_str(&format!("{i} {n}\n"));
        }
        out
    }

    /// Parses the file's text; `Err((line, why))`. Numbers must run 0, 1, 2, … in order.
    pub fn parse(text: &str) -> Result<HostNumbers, (usize, String)> {
        let mut tag = None;
        let mut out = HostNumbers {
            tag: 0,
            by_name: HashMap::new(),
            names: Vec::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let at = i + 1;
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(t) = line.strip_prefix("tag ") {
                let t = u32::from_str_radix(t.trim(), 16)
                    .map_err(|_| (at, format!("bad tag {t:?}")))?;
                if tag.replace(t).is_some() {
                    return Err((at, "a second tag line".into()));
                }
                continue;
            }
            let (num, name) = line
                .split_once(' ')
                .ok_or_else(|| (at, format!("expected \"NUMBER NAME\", found {line:?}")))?;
            let num: usize = num
                .parse()
                .map_err(|_| (at, format!("bad number {num:?}")))?;
            if num != out.names.len() {
                return Err((
                    at,
                    format!("number {num} out of order (expected {})", out.names.len()),
                ));
            }
            if name.is_empty() || out.by_name.contains_key(name) || num >= MAX_NUMBERS {
                return Err((at, format!("host {name:?} is empty or numbered twice")));
            }
            out.by_name.insert(name.to_owned(), num as u16);
            out.names.push(name.to_owned());
        }
        out.tag = tag.ok_or((0, "no tag line".to_string()))?;
        Ok(out)
    }

    /// Reads the numbers at `path` without changing anything; a missing file is a fresh
    /// numbering (for `distlink check`).
    pub fn read(path: &Path) -> Result<HostNumbers, NumbersError> {
        match open_parent(path, false) {
            Ok(dir) => read_in(&dir, path),
            Err(NumbersError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(HostNumbers::fresh())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the numbers at `path`, gives every name in `names` a number, and writes the
    /// file back if any was added (creating the directory and file if needed). Holds the
    /// directory's lock throughout. (A daemon running as `user:` cannot write root's
    /// file: a reload that adds a host never numbered fails and says so; a restart
    /// numbers it.)
    pub fn assign<'a>(
        path: &Path,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<HostNumbers, NumbersError> {
        let io = |source: io::Error| NumbersError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = open_parent(path, true)?;
        // Released when `dir` is dropped, after the write.
        let dir = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(e.into()))?;
        let mut numbers = read_in(&dir, path)?;
        let existed = exists_in(&dir, path);
        let added = numbers.add(names).ok_or_else(|| NumbersError::Full {
            path: path.to_owned(),
        })?;
        if !added.is_empty() || !existed {
            write_in(&dir, path, &numbers.render()).map_err(io)?;
        }
        Ok(numbers)
    }
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name()
        .unwrap_or(std::ffi::OsStr::new("host-numbers"))
}

/// The directory holding `path`, opened without following symlinks; created (0755,
/// root's) when `create` is set.
fn open_parent(path: &Path, create: bool) -> Result<OwnedFd, NumbersError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let io = |e: Errno| NumbersError::Io {
        path: dir.to_owned(),
        source: e.into(),
    };
    if create && dir.symlink_metadata().is_err() {
        std::fs::create_dir_all(dir).map_err(|source| NumbersError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    // O_PATH descriptors cannot be flocked: open the directory for reading.
    let path_fd = crate::hosts::open_dir(dir).map_err(io)?;
    nix::fcntl::openat(
        path_fd.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)
}

fn exists_in(dir: &OwnedFd, path: &Path) -> bool {
    nix::sys::stat::fstatat(dir, file_name(path), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

fn read_in(dir: &OwnedFd, path: &Path) -> Result<HostNumbers, NumbersError> {
    let io = |e: io::Error| NumbersError::Io {
        path: path.to_owned(),
        source: e,
    };
    let fd = match nix::fcntl::openat(
        dir,
        file_name(path),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(HostNumbers::fresh()),
        Err(e) => return Err(io(e.into())),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| io(e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size > 8 << 20 {
        return Err(NumbersError::Damaged {
            path: path.to_owned(),
            line: 0,
            why: "not a regular file of at most 8 MiB".into(),
        });
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(io)?;
    HostNumbers::parse(&text).map_err(|(line, why)| NumbersError::Damaged {
        path: path.to_owned(),
        line,
        why,
    })
}

/// Writes `text` as `path`: a synced copy renamed over it, then the directory synced.
fn write_in(dir: &OwnedFd, path: &Path, text: &str) -> io::Result<()> {
    let name = file_name(path);
    let mut tmp_name = name.to_owned();
    tmp_name.push(".new");
    let _ = nix::unistd::unlinkat(
        dir,
        tmp_name.as_os_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    let fd = nix::fcntl::openat(
        dir,
        tmp_name.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    nix::fcntl::renameat2(dir, tmp_name.as_os_str(), dir, name, RenameFlags::empty())?;
    nix::unistd::fsync(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_kept_and_never_reused() {
        let mut n = HostNumbers::fresh();
        assert_eq!(
            n.add(["server", "host1", "server"]).unwrap(),
            ["server", "host1"]
        );
        assert_eq!((n.get("server"), n.get("host1")), (Some(0), Some(1)));
        // host1 left the configuration and came back, after host2 was added.
        assert_eq!(n.add(["server", "host2"]).unwrap(), ["host2"]);
        assert!(n.add(["host1", "host2"]).unwrap().is_empty());
        assert_eq!((n.get("host1"), n.get("host2")), (Some(1), Some(2)));
        assert_eq!(n.name(2), Some("host2"));
        let back = HostNumbers::parse(&n.render()).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn damaged_files_are_refused_with_their_line() {
        for (text, line) in [
            ("tag 1\n0 a\n2 b\n", 3),
            ("tag 1\n0 a\n1 a\n", 3),
            ("tag zz\n", 1),
            ("tag 1\nx a\n", 2),
            ("tag 1\nnospace\n", 2),
            ("0 a\n", 0),
            ("tag 1\ntag 2\n", 2),
        ] {
            assert_eq!(HostNumbers::parse(text).unwrap_err().0, line, "{text:?}");
        }
        let n = HostNumbers::parse("# c\n\ntag 0000ff01\n0 host with spaces\n").unwrap();
        assert_eq!((n.tag, n.get("host with spaces")), (0xff01, Some(0)));
    }

    #[test]
    fn assign_writes_once_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("distlink-numbers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/host-numbers");
        let a = HostNumbers::assign(&path, ["a", "b"]).unwrap();
        let b = HostNumbers::assign(&path, ["b", "c"]).unwrap();
        assert_eq!(a.tag, b.tag);
        assert_eq!(
            (b.get("a"), b.get("b"), b.get("c")),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(HostNumbers::read(&path).unwrap(), b);
        assert!(!dir.join("sub/host-numbers.new").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
