//! The host directories, opened once and then only used through their descriptors.
//!
//! Each directory is opened with `openat2(RESOLVE_NO_SYMLINKS)`, so a symlink anywhere on
//! the configured path is refused, and every later operation is an `*at` call relative to
//! that descriptor. Where `openat2` is refused (systemd's seccomp filter answers ENOSYS
//! to it under `RestrictSUIDSGID=`, as do some container runtimes and kernels before
//! 5.6), the path is walked one component at a time with
//! `openat(O_PATH|O_NOFOLLOW|O_DIRECTORY)`, which refuses symlinks the same way. A host directory is recognised in fanotify events by its file handle
//! and filesystem ID, read here with `name_to_handle_at` and `fstatfs`.

use crate::config::{Config, ConfigError, HostConfig, Problem};
use crate::error::Error;
use crate::host_numbers::HostNumbers;
use crate::sys;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A host's identity for the life of the process: the same name always gets the same
/// id, across reloads and a directory vanishing and coming back. Pending files, deferred
/// files and outcomes name their host by it; a [`HostSet`] maps it to the open directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(u32);

/// Every host name seen by this process, with its id (looked up for every host at each
/// look at the host directories: a map, not a search).
static HOST_NAMES: Mutex<Option<HashMap<Box<str>, HostId>>> = Mutex::new(None);

impl HostId {
    /// The id of host `name`, given on first use.
    pub fn of(name: &str) -> HostId {
        let mut names = HOST_NAMES.lock().unwrap_or_else(|p| p.into_inner());
        let names = names.get_or_insert_with(HashMap::new);
        if let Some(&id) = names.get(name) {
            return id;
        }
        let id = HostId(names.len() as u32);
        names.insert(name.into(), id);
        id
    }

    /// The number behind the id (a tag in [`crate::names::NameTable`]).
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The id behind a number from [`HostId::raw`].
    pub const fn from_raw(raw: u32) -> HostId {
        HostId(raw)
    }
}

/// The pool's id: no host name is given it (see [`HostId::of`]).
pub const POOL_ID: HostId = HostId::from_raw(u32::MAX);

/// The pool's number among a fan-out's holders; never written into a record (see
/// `pool.rs`), and never given to a host (see `host_numbers.rs`).
pub const POOL_NUMBER: u16 = u16::MAX;

/// The opened pool directory (see `pool.rs`).
#[derive(Debug)]
pub struct Pool {
    /// Its directory, as a fan-out's last member: id [`POOL_ID`], number
    /// [`POOL_NUMBER`], name [`crate::pool::NAME`].
    pub dir: Host,
    /// Where clients mount it: a request's symlink points into it.
    pub client_path: Box<[u8]>,
    pub keep: std::time::Duration,
}

/// Hosts of one [`HostSet`], a bit per position in the set. Empty takes no memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMask(Vec<u64>);

impl HostMask {
    /// The mask whose bits are these words.
    pub fn from_words(words: &[u64]) -> HostMask {
        HostMask(words.to_vec())
    }

    pub fn with(mut self, i: usize) -> HostMask {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
        self
    }

    pub fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Positions in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.0.len() * 64).filter(move |&i| self.has(i))
    }
}

/// One opened host directory.
#[derive(Debug)]
pub struct Host {
    pub id: HostId,
    pub name: Arc<str>,
    /// Its durable number in records (see `host_numbers.rs`).
    pub number: u16,
    pub path: PathBuf,
    /// `O_PATH | O_DIRECTORY` descriptor: every link, stat and open goes through it.
    pub dir: OwnedFd,
    /// fsid + file handle: how events name this directory (see [`object_key`]).
    pub key: Box<[u8]>,
}

/// All host directories of one configuration, on one filesystem and one mount.
#[derive(Debug, Clone)]
pub struct HostSet {
    hosts: Vec<Arc<Host>>,
    /// Every host ever numbered: records name hosts by these numbers.
    pub numbers: Arc<HostNumbers>,
    by_key: HashMap<Box<[u8]>, usize>,
    /// Positions by host name (a search through 1,024 names for each of 1,024 hosts took
    /// most of the 5-second look at the host directories).
    by_name: HashMap<Arc<str>, usize>,
    /// `st_dev` of the filesystem holding them.
    pub dev: u64,
    /// The mount they are all reached through.
    pub mount_id: i32,
    /// The read-only pool, a fan-out's member after the hosts (see [`HostSet::member`]).
    pool: Option<Arc<Pool>>,
}

/// The bytes fanotify puts before a name in a `DFID_NAME` record: fsid, `handle_bytes`,
/// `handle_type`, `f_handle`. Equal keys mean the same directory.
pub fn object_key(fsid: [u8; 8], handle: &sys::Handle) -> Box<[u8]> {
    let mut key = Vec::with_capacity(16 + handle.bytes.len());
    key.extend_from_slice(&fsid);
    key.extend_from_slice(&(handle.bytes.len() as u32).to_ne_bytes());
    key.extend_from_slice(&handle.handle_type.to_ne_bytes());
    key.extend_from_slice(&handle.bytes);
    key.into_boxed_slice()
}

/// Opens `path` as a directory, refusing symlinks anywhere on the way (ELOOP).
pub fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    match nix::fcntl::openat2(AT_FDCWD, path, how) {
        // Refused by a seccomp filter or unknown to the kernel: walk instead.
        Err(Errno::ENOSYS | Errno::EPERM) => walk_dir(path),
        r => r,
    }
}

/// [`open_dir`] without `openat2`: one `openat(O_PATH|O_NOFOLLOW|O_DIRECTORY)` per
/// component, each relative to the descriptor of the one before. A symlink component
/// gives ELOOP, as `RESOLVE_NO_SYMLINKS` does. Relative paths start at the working
/// directory.
pub fn walk_dir(path: &Path) -> Result<OwnedFd, Errno> {
    use std::path::Component;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::empty();
    let start = if path.has_root() { "/" } else { "." };
    let mut cur = nix::fcntl::open(start, flags, mode)?;
    for c in path.components() {
        let name: &std::ffi::OsStr = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir => "..".as_ref(),
            Component::Normal(n) => n,
            Component::Prefix(_) => return Err(Errno::EINVAL),
        };
        cur = match nix::fcntl::openat(&cur, name, flags, mode) {
            Ok(fd) => fd,
            // O_NOFOLLOW|O_DIRECTORY on a symlink: ENOTDIR (O_PATH) or ELOOP. Say which.
            Err(Errno::ENOTDIR) => {
                let st = fstatat(&cur, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
                let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                    & nix::sys::stat::SFlag::S_IFMT;
                return Err(if kind == nix::sys::stat::SFlag::S_IFLNK {
                    Errno::ELOOP
                } else {
                    Errno::ENOTDIR
                });
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// The event key of the directory behind `fd`, and the mount it was reached through.
pub fn dir_key(fd: BorrowedFd<'_>) -> std::io::Result<(Box<[u8]>, i32)> {
    let handle = sys::name_to_handle_at(fd, c"")?;
    let fsid = sys::fsid(fd)?;
    Ok((object_key(fsid, &handle), handle.mount_id))
}

/// Event keys of the host directories' parents, each with the hosts below it
/// (configuration index and directory name): how a host directory is seen to vanish and
/// come back.
pub fn parent_keys(config: &Config) -> crate::classify::Parents {
    use std::os::unix::ffi::OsStrExt;
    let mut map = crate::classify::Parents::new();
    for (i, h) in config.hosts.iter().enumerate() {
        let (Some(parent), Some(dir)) = (h.path.parent(), h.path.file_name()) else {
            continue;
        };
        match open_dir(parent)
            .ok()
            .and_then(|fd| dir_key(fd.as_fd()).ok())
        {
            Some((key, _)) => map.entry(key).or_default().push((i, dir.as_bytes().into())),
            None => log::warn!(
                "host {}: cannot watch {} for the directory vanishing",
                h.name,
                parent.display()
            ),
        }
    }
    map
}

/// The parents of `config`'s host directories, each once (marked under `mark:
/// directories`, see `fanotify.rs`).
pub fn parent_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for h in &config.hosts {
        if let Some(p) = h.path.parent()
            && !dirs.iter().any(|d| d == p)
        {
            dirs.push(p.to_owned());
        }
    }
    dirs
}

/// The first component of `path` that is a symlink, for messages.
fn first_symlink(path: &Path) -> Option<PathBuf> {
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(cur);
        }
    }
    None
}

fn is_missing(h: &HostConfig) -> bool {
    h.path
        .symlink_metadata()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The hosts of `config` whose directory does not exist (left out of the set).
pub fn missing(config: &Config) -> Vec<&HostConfig> {
    config.hosts.iter().filter(|h| is_missing(h)).collect()
}

/// The error when no host directory of `config` exists: there is no filesystem to
/// watch (`run` and `check` at start; a running daemon keeps its mark).
pub fn none_present(config: &Config) -> Error {
    ConfigError::Invalid {
        path: config.source.clone(),
        problems: vec![Problem::new(
            None,
            "none of the host directories exists: nothing to watch",
        )],
    }
    .into()
}

/// Why a host directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The configuration is wrong: missing, not a directory, behind a symlink, another
    /// filesystem's rules.
    Config(String),
    /// The kernel or a sandbox refused a call (a seccomp filter, a resource limit, an old
    /// kernel): the configuration is not at fault.
    System {
        what: String,
        source: std::io::Error,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Config(m) => f.write_str(m),
            OpenError::System { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

/// Errors that say the system refused, not that the path is wrong.
fn refused(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOSYS | Errno::EPERM | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE | Errno::EIO
    )
}

/// Opens one host directory and reads what identifies it.
pub fn open_host(h: &HostConfig, numbers: &HostNumbers) -> Result<(Host, u64, i32), OpenError> {
    let number = numbers.get(&h.name).ok_or_else(|| OpenError::System {
        what: format!("host {}: no host number", h.name),
        source: std::io::Error::from(Errno::ENOENT),
    })?;
    open_dir_of(h, number)
}

/// Opens the directory of `h` (a host, or the pool) and reads what identifies it.
fn open_dir_of(h: &HostConfig, number: u16) -> Result<(Host, u64, i32), OpenError> {
    let path = h.path.display();
    let label = if number == POOL_NUMBER {
        "pool".to_owned()
    } else {
        format!("host {}", h.name)
    };
    let system = |what: String, e: Errno| OpenError::System {
        what,
        source: std::io::Error::from(e),
    };
    let dir = open_dir(&h.path).map_err(|e| match e {
        e if refused(e) => system(
            format!(
                "{}: opening {path} was refused by the kernel or a sandbox (seccomp, limits)",
                label
            ),
            e,
        ),
        Errno::ENOENT => OpenError::Config(format!("{}: directory {path} does not exist", label)),
        Errno::ENOTDIR => OpenError::Config(format!("{}: {path} is not a directory", label)),
        Errno::ELOOP | Errno::EXDEV => OpenError::Config(match first_symlink(&h.path) {
            Some(link) if link == h.path => {
                format!("{}: {path} is a symlink; give the real directory", label)
            }
            Some(link) => format!(
                "{}: {path} passes through the symlink {}; give the real path",
                label,
                link.display()
            ),
            None => format!(
                "{}: {path} cannot be opened without following symlinks ({e})",
                label
            ),
        }),
        Errno::EACCES => OpenError::Config(format!(
            "{}: {path}: permission denied (distlink runs as root)",
            label
        )),
        e => OpenError::Config(format!("{}: cannot open {path}: {e}", label)),
    })?;
    let st = fstat(&dir).map_err(|e| system(format!("{}: stat of {path}", label), e))?;
    let (key, mount_id) = dir_key(dir.as_fd()).map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
        Some(e) if refused(e) && e != Errno::EPERM => system(
            format!("{}: reading the file handle of {path}", label),
            e,
        ),
        _ => OpenError::Config(format!(
            "{}: cannot get a file handle for {path}: {e} (the filesystem must support file handles)",
            label
        )),
    })?;
    let host = Host {
        id: HostId::of(&h.name),
        name: Arc::from(h.name.as_str()),
        number,
        path: h.path.clone(),
        dir,
        key,
    };
    Ok((host, st.st_dev, mount_id))
}

/// Why `path` (of `label`: a host, the pool), on filesystem and mount `at`, cannot share
/// links with `first` (a host opened: its configuration, `st_dev` and mount id).
fn elsewhere(
    label: &str,
    path: &Path,
    at: (u64, i32),
    first: (&HostConfig, u64, i32),
) -> Option<String> {
    let (h, dev0, mnt0) = first;
    if at.0 != dev0 {
        Some(format!(
            "{label}: {} is on a different filesystem than host {} ({}); hardlinks between them would fail with EXDEV",
            path.display(),
            h.name,
            h.path.display()
        ))
    } else if at.1 != mnt0 {
        Some(format!(
            "{label}: {} is reached through a different mount than host {} ({}), e.g. a bind mount; links across mounts fail with EXDEV: give paths under one mount",
            path.display(),
            h.name,
            h.path.display()
        ))
    } else {
        None
    }
}

/// Opens the pool directory, and checks it is on the filesystem and mount of `first`
/// (a host opened: its configuration, `st_dev` and mount id), if any.
pub fn open_pool(
    p: &crate::pool::PoolConfig,
    first: Option<(&HostConfig, u64, i32)>,
) -> Result<Pool, OpenError> {
    use std::os::unix::ffi::OsStrExt;
    let as_host = HostConfig {
        name: crate::pool::NAME.to_owned(),
        path: p.dir.clone(),
        at: p.at,
    };
    let (mut dir, dev, mount_id) = open_dir_of(&as_host, POOL_NUMBER)?;
    dir.id = POOL_ID;
    if let Some(why) = first.and_then(|f| elsewhere(crate::pool::NAME, &p.dir, (dev, mount_id), f))
    {
        return Err(OpenError::Config(why));
    }
    Ok(Pool {
        dir,
        client_path: p.client_path.as_os_str().as_bytes().into(),
        keep: p.keep,
    })
}

impl HostSet {
    /// Opens every host directory of `config` that exists and checks that hardlinks can
    /// work between them. Every problem is reported, each with the entry's line and
    /// column. A directory that does not exist is left out, not an error (`eclean-dist`
    /// removes an emptied DISTDIR; a new host's directory may come later): see
    /// [`missing`]; the daemon picks it up when it appears.
    /// A refusal by the kernel or a sandbox is [`Error::Refused`], never a configuration
    /// error.
    pub fn open(config: &Config, numbers: &Arc<HostNumbers>) -> Result<HostSet, Error> {
        let mut problems = Vec::new();
        let mut opened: Vec<(&HostConfig, Host, u64, i32)> = Vec::new();
        for h in &config.hosts {
            if is_missing(h) {
                continue;
            }
            match open_host(h, numbers) {
                Ok((host, dev, mount_id)) => opened.push((h, host, dev, mount_id)),
                Err(OpenError::Config(message)) => problems.push(Problem::new(Some(h.at), message)),
                Err(OpenError::System { what, source }) => {
                    return Err(Error::Refused { what, source });
                }
            }
        }
        if let Some((first, _, dev0, mnt0)) = opened.first() {
            for (h, _, dev, mount_id) in &opened[1..] {
                let label = format!("host {}", h.name);
                if let Some(why) =
                    elsewhere(&label, &h.path, (*dev, *mount_id), (first, *dev0, *mnt0))
                {
                    problems.push(Problem::new(Some(h.at), why));
                }
            }
        }
        let first = opened.first().map(|o| (o.0, o.2, o.3));
        let pool = match &config.pool {
            Some(p) => match open_pool(p, first) {
                Ok(pool) => Some(Arc::new(pool)),
                Err(OpenError::Config(message)) => {
                    problems.push(Problem::new(Some(p.at), message));
                    None
                }
                Err(OpenError::System { what, source }) => {
                    return Err(Error::Refused { what, source });
                }
            },
            None => None,
        };
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: config.source.clone(),
                problems,
            }
            .into());
        }
        let dev = opened.first().map_or(0, |o| o.2);
        let mount_id = opened.first().map_or(0, |o| o.3);
        Ok(HostSet::from_hosts(
            opened.into_iter().map(|o| Arc::new(o.1)).collect(),
            Arc::clone(numbers),
            dev,
            mount_id,
            pool,
        ))
    }

    fn from_hosts(
        hosts: Vec<Arc<Host>>,
        numbers: Arc<HostNumbers>,
        dev: u64,
        mount_id: i32,
        pool: Option<Arc<Pool>>,
    ) -> HostSet {
        let by_key = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.key.clone(), i))
            .collect();
        let by_name = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (Arc::clone(&h.name), i))
            .collect();
        HostSet {
            hosts,
            numbers,
            by_key,
            by_name,
            dev,
            mount_id,
            pool,
        }
    }

    /// Places a fan-out links into: the hosts (positions `0..len()`), then the pool if
    /// there is one (position `len()`).
    pub fn members(&self) -> usize {
        self.hosts.len() + usize::from(self.pool.is_some())
    }

    /// Member `i` (see [`HostSet::members`]).
    pub fn member(&self, i: usize) -> &Host {
        match (&self.pool, i == self.hosts.len()) {
            (Some(p), true) => &p.dir,
            _ => &self.hosts[i],
        }
    }

    /// The position of member `name` (a host, or the pool by [`crate::pool::NAME`]).
    pub fn member_position(&self, name: &str) -> Option<usize> {
        self.position(name).or_else(|| {
            self.pool
                .as_ref()
                .filter(|_| name == crate::pool::NAME)
                .map(|_| self.hosts.len())
        })
    }

    /// The pool, if one is configured.
    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_deref()
    }

    /// The pool's member position, if one is configured.
    pub fn pool_at(&self) -> Option<usize> {
        self.pool.as_ref().map(|_| self.hosts.len())
    }

    /// The same set without host `name` (its directory vanished).
    pub fn without(&self, name: &str) -> HostSet {
        let hosts = self
            .hosts
            .iter()
            .filter(|h| *h.name != *name)
            .cloned()
            .collect();
        self.with_hosts(hosts, self.pool.clone())
    }

    /// The same set plus a re-opened host, placed in configuration order.
    pub fn with(&self, host: Host, order: &[HostConfig]) -> HostSet {
        let mut hosts: Vec<Arc<Host>> = self
            .hosts
            .iter()
            .filter(|h| h.name != host.name)
            .cloned()
            .collect();
        hosts.push(Arc::new(host));
        let place: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        hosts.sort_by_key(|h| place.get(&*h.name).copied().unwrap_or(usize::MAX));
        self.with_hosts(hosts, self.pool.clone())
    }

    /// The same set with the pool re-opened (its path leads to another directory now).
    pub fn with_pool(&self, pool: Pool) -> HostSet {
        self.with_hosts(self.hosts.clone(), Some(Arc::new(pool)))
    }

    /// This set's filesystem, mount and numbering with other hosts and pool.
    fn with_hosts(&self, hosts: Vec<Arc<Host>>, pool: Option<Arc<Pool>>) -> HostSet {
        HostSet::from_hosts(
            hosts,
            Arc::clone(&self.numbers),
            self.dev,
            self.mount_id,
            pool,
        )
    }

    /// Whether a directory is on this set's filesystem and mount (for a re-created host
    /// directory). The set keeps both even when every directory is gone.
    pub fn fits(&self, dev: u64, mount_id: i32) -> bool {
        dev == self.dev && mount_id == self.mount_id
    }

    /// The position of host `id` in the set, if it is there.
    pub fn find(&self, id: HostId) -> Option<usize> {
        self.hosts.iter().position(|h| h.id == id)
    }

    /// The index of host `name`, if it is in the set.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Positions in the set by event key (for [`crate::classify`]).
    pub fn by_key(&self) -> &HashMap<Box<[u8]>, usize> {
        &self.by_key
    }

    /// The host whose directory has this event key.
    pub fn lookup(&self, key: &[u8]) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    pub fn hosts_arc(&self, i: usize) -> Arc<Host> {
        Arc::clone(&self.hosts[i])
    }

    pub fn get(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().map(|h| &**h)
    }

    /// Checks that the shared filesystem can keep fan-out records.
    pub fn check_records(&self) -> Result<(), crate::error::Error> {
        match self.hosts.first() {
            Some(h) => crate::record::supported(h.dir.as_fd()).map_err(|source| {
                crate::error::Error::Records {
                    path: h.path.clone(),
                    source,
                }
            }),
            None => Ok(()),
        }
    }

    /// The settle rule's view of `name` in host `host`: `Some` only for a regular file.
    pub fn file_state(&self, host: usize, name: &[u8]) -> Option<crate::completion::FileState> {
        let st = fstatat(
            self.hosts[host].dir.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        Some(crate::completion::FileState {
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        })
    }

    /// Whether host `host` holds a symlink under `name` now.
    pub fn is_symlink(&self, host: usize, name: &[u8]) -> bool {
        fstatat(
            self.hosts[host].dir.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    }

    /// An object on the shared filesystem, for the filesystem-wide fanotify mark; `None`
    /// when no host directory is present.
    pub fn any_dir(&self) -> Option<BorrowedFd<'_>> {
        self.hosts.first().map(|h| h.dir.as_fd())
    }

    /// An empty set (every directory gone) keeps the filesystem and mount of `running`,
    /// so a re-created directory is still checked against them.
    pub fn or_filesystem_of(self, running: &HostSet) -> HostSet {
        if self.hosts.is_empty() {
            HostSet::from_hosts(
                Vec::new(),
                Arc::clone(&self.numbers),
                running.dev,
                running.mount_id,
                self.pool.clone(),
            )
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_dir(a: &OwnedFd, b: &OwnedFd) -> bool {
        let (a, b) = (fstat(a).unwrap(), fstat(b).unwrap());
        (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    }

    /// The walk used where `openat2` is refused agrees with `openat2` on every case.
    #[test]
    fn walk_refuses_what_openat2_refuses() {
        let base = std::env::temp_dir().join(format!("distlink-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        std::fs::write(base.join("real/file"), b"").unwrap();

        let good = base.join("real/sub");
        assert!(same_dir(
            &walk_dir(&good).unwrap(),
            &open_dir(&good).unwrap()
        ));
        let dotted = base.join("real/./sub/../sub");
        assert!(same_dir(
            &walk_dir(&dotted).unwrap(),
            &open_dir(&good).unwrap()
        ));
        for (path, errno) in [
            (base.join("link"), Errno::ELOOP),
            (base.join("link/sub"), Errno::ELOOP),
            (base.join("real/file"), Errno::ENOTDIR),
            (base.join("real/missing"), Errno::ENOENT),
        ] {
            assert_eq!(walk_dir(&path).unwrap_err(), errno, "{}", path.display());
            assert_eq!(open_dir(&path).unwrap_err(), errno, "{}", path.display());
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
