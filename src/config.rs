//! The YAML configuration: parsing and the checks that need no filesystem.
//!
//! ```yaml
//! hosts:                     # host name -> its directory; at least two
//!   server: /var/cache/distfiles/server
//!   host1: /var/cache/distfiles/host1
//! workers: 4                 # linker threads
//! settle: 10s                # quiet time before a directly written file counts as complete
//! ignore: ["*.part"]         # extra glob patterns never linked
//! host_numbers: /var/lib/distlink/host-numbers   # the key to every record; keep it
//! mark: auto                 # auto | filesystem | directories (see fanotify.rs)
//! merge: true                # replace byte-identical copies by links (see merge.rs)
//! pool:                      # optional read-only pool for PORTAGE_RO_DISTDIRS (pool.rs)
//!   dir: /var/cache/distfiles/pool
//!   client_path: /var/cache/distfiles-pool
//!   keep: 0s                 # how long a file stays after the last host dropped it
//! ```
//!
//! Checks that need the filesystem (the directories exist, hold no symlink, share one
//! filesystem and mount) live in `hosts.rs`; both report [`Problem`]s with the line and
//! column of the offending entry, all of them at once.

use crate::glob::Glob;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where the daemon looks without `--config`.
pub const DEFAULT_PATH: &str = "/etc/distlink.yaml";
/// Default number of linker threads.
pub const DEFAULT_WORKERS: usize = 4;
/// Default quiet time for files written under their final name.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
const MAX_WORKERS: usize = 256;
/// Hosts per configuration (a record keeps one bit per host; see `record.rs`).
pub const MAX_HOSTS: usize = 1024;
const MAX_SETTLE: Duration = Duration::from_secs(24 * 3600);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub hosts: Vec<HostConfig>,
    pub workers: usize,
    pub settle: Duration,
    pub ignore: Vec<Glob>,
    /// Ask for a fanotify queue without the kernel's `max_queued_events` limit.
    pub unlimited_queue: bool,
    /// Link as this user (e.g. `portage`) instead of root with a reduced capability set.
    pub user: Option<crate::privs::RunAs>,
    /// Where the daemon writes its status for `distlink status`.
    pub state_file: PathBuf,
    /// The durable host numbers records use (see `host_numbers.rs`).
    pub host_numbers: PathBuf,
    /// Optional Prometheus node-exporter textfile with the same counters.
    pub prometheus_textfile: Option<PathBuf>,
    /// `--log-level` when the command line does not give one.
    pub log_level: Option<String>,
    /// How the fanotify group is marked (see [`crate::fanotify::MarkStrategy`]).
    pub mark: crate::fanotify::MarkStrategy,
    /// Replace byte-identical copies by links (see `merge.rs`); default on.
    pub merge: bool,
    /// The read-only pool (see `pool.rs`).
    pub pool: Option<crate::pool::PoolConfig>,
}

/// Default status file.
pub const DEFAULT_STATE_FILE: &str = "/run/distlink/status";

/// One `hosts:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub name: String,
    /// Absolute, without `.` components (`..` is refused).
    pub path: PathBuf,
    /// Line and column of the entry in the file, for messages.
    pub at: Location,
}

/// A line and column (1-based) in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl Location {
    fn of<T>(s: &Spanned<T>) -> Location {
        Location {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Option<Location>,
    pub message: String,
}

impl Problem {
    pub fn new(at: Option<Location>, message: impl Into<String>) -> Problem {
        Problem {
            at,
            message: message.into(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not the YAML we expect (syntax, types, unknown or missing keys).
    Yaml {
        path: PathBuf,
        at: Option<Location>,
        message: String,
    },
    /// The file parsed but says something impossible; every problem found is listed.
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = |f: &mut fmt::Formatter<'_>, path: &Path, at: &Option<Location>| match at {
            Some(at) => write!(f, "{}:{}:{}", path.display(), at.line, at.column),
            None => write!(f, "{}", path.display()),
        };
        match self {
            ConfigError::Read { path, .. } => {
                write!(f, "cannot read configuration {}", path.display())
            }
            ConfigError::Yaml { path, at, message } => {
                place(f, path, at)?;
                write!(f, ": {message}")
            }
            ConfigError::Invalid { path, problems } => {
                write!(
                    f,
                    "invalid configuration {} ({} problem{})",
                    path.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    f.write_str("\n  ")?;
                    place(f, path, &p.at)?;
                    write!(f, ": {}", p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    hosts: Spanned<RawHosts>,
    workers: Option<Spanned<u64>>,
    settle: Option<Spanned<RawDuration>>,
    ignore: Option<Vec<Spanned<String>>>,
    unlimited_queue: Option<bool>,
    user: Option<Spanned<String>>,
    state_file: Option<Spanned<String>>,
    host_numbers: Option<Spanned<String>>,
    prometheus_textfile: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    mark: Option<Spanned<String>>,
    merge: Option<bool>,
    pool: Option<Spanned<RawPool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    dir: Spanned<String>,
    client_path: Spanned<String>,
    keep: Option<Spanned<RawDuration>>,
}

/// `hosts:` in file order (a plain map would lose the order, which logs follow).
struct RawHosts(Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for RawHosts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHosts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of host name to directory")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawHosts, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    v.push(entry);
                }
                Ok(RawHosts(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// `settle:` as written: `10s`, `500ms`, `2m`, or a bare number of seconds.
struct RawDuration(String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 500ms or 2m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a duration: a number with an optional unit `ms`, `s`, `m`, `h` or `d` (seconds
/// when none), e.g. `10s`, `1.5s`, `250ms`; at most a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_upto(text, MAX_SETTLE)
}

/// [`parse_duration`] up to `max`.
pub fn parse_duration_upto(text: &str, max: Duration) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m, h or d)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs > max.as_secs_f64() {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Host directories used twice or nested in one another, in O(n log n): sorted by
/// components, every directory's subtree follows it without a gap, so a stack of the
/// enclosing directories finds each nesting.
fn overlapping_dirs(hosts: &[HostConfig]) -> Vec<Problem> {
    let mut order: Vec<&HostConfig> = hosts.iter().collect();
    // Stable: of two hosts with one directory, the first in the file comes first.
    order.sort_by(|a, b| a.path.cmp(&b.path));
    let mut problems = Vec::new();
    let mut enclosing: Vec<&HostConfig> = Vec::new();
    for h in order {
        while enclosing
            .last()
            .is_some_and(|outer| !h.path.starts_with(&outer.path))
        {
            enclosing.pop();
        }
        match enclosing.last() {
            Some(outer) if outer.path == h.path => problems.push(Problem::new(
                Some(h.at),
                format!(
                    "host {}: directory {} is already used by host {}",
                    h.name,
                    h.path.display(),
                    outer.name
                ),
            )),
            Some(outer) => problems.push(Problem::new(
                Some(h.at),
                format!(
                    "host directories are nested: {} ({}) is inside {} ({})",
                    h.path.display(),
                    h.name,
                    outer.path.display(),
                    outer.name
                ),
            )),
            None => {}
        }
        if enclosing.last().is_none_or(|outer| outer.path != h.path) {
            enclosing.push(h);
        }
    }
    // In file order, as every other problem.
    problems.sort_by_key(|p| p.at.map(|a| (a.line, a.column)));
    problems
}

/// The largest configuration file read: far beyond 1,024 hosts, far below trouble.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a configuration file, refusing anything but a regular file of sane size: a FIFO
/// would block the reader (and a reload would freeze the event loop), `/dev/zero` never
/// ends. The open itself cannot block (`O_NONBLOCK`).
fn read_config_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO, device or directory is never read)",
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes; a configuration is at most {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "grew past {MAX_CONFIG_BYTES} bytes while being read"
        )));
    }
    Ok(text)
}

impl Config {
    /// Reads and validates (without touching the host directories) the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(text).map_err(|e| ConfigError::Yaml {
            path: path.to_owned(),
            at: None,
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Yaml {
                path: path.to_owned(),
                at: None,
                message: "the file is empty; it needs at least a `hosts:` mapping".into(),
            });
        }
        let raw: Raw = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
        let mut problems = Vec::new();

        let hosts_at = Location::of(&raw.hosts);
        let mut hosts: Vec<HostConfig> = Vec::new();
        for (name, dir) in raw.hosts.value.0 {
            let at = Location::of(&name);
            let name = name.value;
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
                problems.push(Problem::new(
                    Some(at),
                    format!(
                        "host name {name:?} must be non-empty, without '/' or control characters"
                    ),
                ));
                continue;
            }
            match check_path(&dir.value) {
                Ok(path) => hosts.push(HostConfig {
                    name,
                    path,
                    at: Location::of(&dir),
                }),
                Err(why) => problems.push(Problem::new(
                    Some(Location::of(&dir)),
                    format!("host {name}: {why}"),
                )),
            }
        }
        if hosts.len() > MAX_HOSTS {
            problems.push(Problem::new(
                Some(hosts_at),
                format!(
                    "at most {MAX_HOSTS} hosts are supported, found {}",
                    hosts.len()
                ),
            ));
        }
        if hosts.len() + problems.len() < 2 {
            problems.push(Problem::new(
                Some(hosts_at),
                format!("at least two hosts are needed, found {}", hosts.len()),
            ));
        }
        // Over the limit, the set is refused anyway: no pairwise checks.
        if hosts.len() <= MAX_HOSTS {
            problems.extend(overlapping_dirs(&hosts));
        }

        let workers = match raw.workers {
            None => DEFAULT_WORKERS,
            Some(w) if (1..=MAX_WORKERS as u64).contains(&w.value) => w.value as usize,
            Some(w) => {
                problems.push(Problem::new(
                    Some(Location::of(&w)),
                    format!(
                        "workers must be between 1 and {MAX_WORKERS}, not {}",
                        w.value
                    ),
                ));
                DEFAULT_WORKERS
            }
        };
        let settle = match raw.settle {
            None => DEFAULT_SETTLE,
            Some(s) => match parse_duration(&s.value.0) {
                Ok(d) if d >= Duration::from_millis(10) => d,
                Ok(_) => {
                    problems.push(Problem::new(
                        Some(Location::of(&s)),
                        "settle must be at least 10ms",
                    ));
                    DEFAULT_SETTLE
                }
                Err(why) => {
                    problems.push(Problem::new(
                        Some(Location::of(&s)),
                        format!("settle: {why}"),
                    ));
                    DEFAULT_SETTLE
                }
            },
        };
        let mut ignore = Vec::new();
        for pattern in raw.ignore.unwrap_or_default() {
            match Glob::new(&pattern.value) {
                Ok(g) => ignore.push(g),
                Err(e) => problems.push(Problem::new(Some(Location::of(&pattern)), e.to_string())),
            }
        }

        let mut absolute = |key: &str, v: Option<Spanned<String>>| -> Option<PathBuf> {
            let v = v?;
            if Path::new(&v.value).is_absolute() {
                Some(PathBuf::from(&v.value))
            } else {
                problems.push(Problem::new(
                    Some(Location::of(&v)),
                    format!("{key} must be an absolute path, not {:?}", v.value),
                ));
                None
            }
        };
        let state_file = absolute("state_file", raw.state_file)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE));
        let host_numbers = absolute("host_numbers", raw.host_numbers)
            .unwrap_or_else(|| PathBuf::from(crate::host_numbers::DEFAULT_PATH));
        let prometheus_textfile = absolute("prometheus_textfile", raw.prometheus_textfile);
        let log_level = match raw.log_level {
            Some(l) if crate::cli::LogLevel::parse(&l.value).is_some() => Some(l.value),
            Some(l) => {
                problems.push(Problem::new(
                    Some(Location::of(&l)),
                    format!(
                        "log_level must be error, warn, info or debug, not {:?}",
                        l.value
                    ),
                ));
                None
            }
            None => None,
        };
        let mark = match raw.mark {
            None => crate::fanotify::MarkStrategy::Auto,
            Some(m) => match crate::fanotify::MarkStrategy::parse(&m.value) {
                Some(s) => s,
                None => {
                    problems.push(Problem::new(
                        Some(Location::of(&m)),
                        format!(
                            "mark must be auto, filesystem or directories, not {:?}",
                            m.value
                        ),
                    ));
                    crate::fanotify::MarkStrategy::Auto
                }
            },
        };
        let user = raw
            .user
            .and_then(|u| match crate::privs::RunAs::lookup(&u.value) {
                Ok(r) => Some(r),
                Err(why) => {
                    problems.push(Problem::new(Some(Location::of(&u)), why));
                    None
                }
            });
        let pool = raw.pool.and_then(|p| check_pool(p, &hosts, &mut problems));
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(Config {
            source: path.to_owned(),
            hosts,
            workers,
            settle,
            ignore,
            unlimited_queue: raw.unlimited_queue.unwrap_or(true),
            user,
            state_file,
            host_numbers,
            prometheus_textfile,
            log_level,
            mark,
            merge: raw.merge.unwrap_or(true),
            pool,
        })
    }
}

/// The `pool:` section: plain absolute paths, a pool directory that is no host's and in
/// none, and no host named like the pool.
fn check_pool(
    raw: Spanned<RawPool>,
    hosts: &[HostConfig],
    problems: &mut Vec<Problem>,
) -> Option<crate::pool::PoolConfig> {
    let at = Location::of(&raw);
    let p = raw.value;
    let before = problems.len();
    let dir = check_path(&p.dir.value)
        .map_err(|why| {
            problems.push(Problem::new(
                Some(Location::of(&p.dir)),
                format!("pool: {why}"),
            ))
        })
        .ok();
    let client_path = check_path(&p.client_path.value)
        .map_err(|why| {
            problems.push(Problem::new(
                Some(Location::of(&p.client_path)),
                format!("pool: client_path: {why}"),
            ))
        })
        .ok();
    let keep = match p.keep {
        None => Duration::ZERO,
        Some(k) => parse_duration_upto(&k.value.0, crate::pool::MAX_KEEP)
            .map_err(|why| {
                problems.push(Problem::new(
                    Some(Location::of(&k)),
                    format!("pool: keep: {why}"),
                ))
            })
            .unwrap_or_default(),
    };
    if let Some(dir) = &dir {
        for h in hosts {
            let problem = if *dir == h.path {
                format!(
                    "pool: {} is host {}'s directory; the pool needs its own",
                    dir.display(),
                    h.name
                )
            } else if dir.starts_with(&h.path) {
                format!(
                    "pool: {} is inside host {}'s directory {}; give a directory beside the hosts'",
                    dir.display(),
                    h.name,
                    h.path.display()
                )
            } else if h.path.starts_with(dir) {
                format!(
                    "pool: host {}'s directory {} is inside the pool {}; clients mounting the pool would see it",
                    h.name,
                    h.path.display(),
                    dir.display()
                )
            } else {
                continue;
            };
            problems.push(Problem::new(Some(Location::of(&p.dir)), problem));
        }
    }
    for h in hosts.iter().filter(|h| h.name == crate::pool::NAME) {
        problems.push(Problem::new(
            Some(h.at),
            format!(
                "host name {:?} is how logs and status name the pool; rename the host",
                crate::pool::NAME
            ),
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(crate::pool::PoolConfig {
        dir: dir?,
        client_path: client_path?,
        keep,
        at,
    })
}

/// A host path must be absolute and plain: no `..` (it would hide where the directory
/// really is), `.` components dropped.
fn check_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("empty directory".into());
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("directory {text:?} must be an absolute path"));
    }
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                return Err(format!("directory {text:?} must not contain '..'"));
            }
            Component::Prefix(_) => return Err(format!("directory {text:?} is not a Unix path")),
        }
    }
    if clean == Path::new("/") {
        return Err("the root directory cannot be a host directory".into());
    }
    Ok(clean)
}

fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> ConfigError {
    let at = e.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut message = e.without_snippet().to_string();
    // The library puts its own "line N column M:" in front; ours is in `at`.
    if let Some(at) = at {
        for prefix in [
            format!("error: line {} column {}: ", at.line, at.column),
            format!("line {} column {}: ", at.line, at.column),
        ] {
            if let Some(rest) = message.strip_prefix(&prefix) {
                message = rest.to_owned();
                break;
            }
        }
    }
    let mut message = message.lines().next().unwrap_or("invalid YAML").to_owned();
    if let Some(at) = at {
        let suffix = format!(" at line {}, column {}", at.line, at.column);
        if let Some(rest) = message.strip_suffix(&suffix) {
            message = rest.to_owned();
        }
    }
    ConfigError::Yaml {
        path: path.to_owned(),
        at,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/distlink.yaml"), text)
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|p| {
                    let at =
                        p.at.map(|a| format!("{}:{}: ", a.line, a.column))
                            .unwrap_or_default();
                    format!("{at}{}", p.message)
                })
                .collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn yaml(text: &str) -> String {
        match parse(text) {
            Err(e @ ConfigError::Yaml { .. }) => e.to_string(),
            other => panic!("expected Yaml, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("hosts:\n  server: /d/server\n  host1: /d/host1/\n").unwrap();
        assert_eq!(c.hosts.len(), 2);
        assert_eq!(c.hosts[0].name, "server");
        assert_eq!(c.hosts[1].path, PathBuf::from("/d/host1"));
        assert_eq!(
            c.hosts[1].at,
            Location {
                line: 3,
                column: 10
            }
        );
        assert_eq!(c.workers, DEFAULT_WORKERS);
        assert_eq!(c.settle, DEFAULT_SETTLE);
        assert!(c.ignore.is_empty());
    }

    #[test]
    fn pool_section() {
        let c = parse("hosts: {a: /d/a, b: /d/b}\npool:\n  dir: /d/pool/\n  client_path: /mnt/pool/\n  keep: 30d\n").unwrap();
        let p = c.pool.unwrap();
        assert_eq!(p.dir, PathBuf::from("/d/pool"));
        assert_eq!(p.client_path, PathBuf::from("/mnt/pool"));
        assert_eq!(p.keep, Duration::from_secs(30 * 86400));
        assert_eq!((p.at.line, p.at.column), (3, 3));
        let c =
            parse("hosts: {a: /d/a, b: /d/b}\npool: {dir: /d/pool, client_path: /p}\n").unwrap();
        assert_eq!(c.pool.unwrap().keep, Duration::ZERO);
        assert_eq!(
            problems("hosts: {a: /d/a, b: /d/b}\npool: {dir: /d/a, client_path: p, keep: 1y}\n"),
            [
                "2:32: pool: client_path: directory \"p\" must be an absolute path",
                "2:41: pool: keep: unknown unit \"y\" in \"1y\" (use ms, s, m, h or d)",
                "2:13: pool: /d/a is host a's directory; the pool needs its own",
            ]
        );
        assert_eq!(
            problems("hosts: {a: /d/a, b: /d/b}\npool: {dir: /d/a/pool, client_path: /p}\n"),
            [
                "2:13: pool: /d/a/pool is inside host a's directory /d/a; give a directory beside the hosts'"
            ]
        );
        assert_eq!(
            problems("hosts: {a: /d/a, b: /d/b}\npool: {dir: /d, client_path: /p}\n")[0],
            "2:13: pool: host a's directory /d/a is inside the pool /d; clients mounting the pool would see it"
        );
        assert_eq!(
            problems("hosts: {a: /d/a, pool: /d/b}\npool: {dir: /d/p, client_path: /p}\n"),
            ["1:24: host name \"pool\" is how logs and status name the pool; rename the host"]
        );
        assert!(yaml("hosts: {a: /d/a, b: /d/b}\npool: {dir: /d/p}\n").contains("client_path"));
        // Without a pool, a host may be called so.
        assert!(parse("hosts: {a: /d/a, pool: /d/b}\n").is_ok());
    }

    #[test]
    fn all_keys() {
        let c = parse("hosts:\n  a: /d/a\n  b: /d/b\n  c: /d/./c\nworkers: 2\nsettle: 1500ms\nignore: ['*.part', 'x?']\n").unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.settle, Duration::from_millis(1500));
        assert_eq!(c.ignore.len(), 2);
        assert_eq!(c.hosts[2].path, PathBuf::from("/d/c"));
        let c = parse("hosts: {a: /a, b: /b}\nsettle: 3\n").unwrap();
        assert_eq!(c.settle, Duration::from_secs(3));
    }

    #[test]
    fn mark_strategy() {
        let c = parse("hosts:\n  a: /d/a\n  b: /d/b\n").unwrap();
        assert_eq!(c.mark, crate::fanotify::MarkStrategy::Auto);
        let c = parse("hosts:\n  a: /d/a\n  b: /d/b\nmark: directories\n").unwrap();
        assert_eq!(c.mark, crate::fanotify::MarkStrategy::Directories);
        assert_eq!(
            problems("hosts:\n  a: /d/a\n  b: /d/b\nmark: mount\n"),
            ["4:7: mark must be auto, filesystem or directories, not \"mount\""]
        );
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        assert_eq!(
            yaml("hosts:\n  a: /a\n  b: /b\nworkerz: 3\n"),
            "/etc/distlink.yaml:4:1: unknown field `workerz`, expected one of hosts, workers, settle, ignore, unlimited_queue, user, state_file, host_numbers, prometheus_textfile, log_level, mark, merge, pool"
        );
        assert!(
            yaml("hosts:\n  a: /a\n  a: /b\n")
                .starts_with("/etc/distlink.yaml:3:3: duplicate mapping key: a")
        );
        assert!(yaml("hosts: [\n").starts_with("/etc/distlink.yaml:1:"));
        assert!(yaml("workers: 3\n").contains("missing field `hosts`"));
        assert!(
            yaml("hosts:\n  a: /a\n  b: /b\nworkers: -1\n").starts_with("/etc/distlink.yaml:4:10:")
        );
        assert!(yaml("").contains("empty"));
        assert!(yaml("hosts:\n  a: [1]\n").starts_with("/etc/distlink.yaml:2:6:"));
    }

    #[test]
    fn every_problem_is_reported() {
        let p = problems(
            "hosts:\n  a: relative/dir\n  b: /d/b\n  c: /d/b\n  d: /d/b/sub\n  e: /x/../y\nworkers: 0\nsettle: 10 parsecs\nignore: ['a/b']\n",
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("2:6: host a: directory \"relative/dir\" must be an absolute path"),
            "{joined}"
        );
        assert!(
            joined.contains("4:6: host c: directory /d/b is already used by host b"),
            "{joined}"
        );
        assert!(
            joined.contains("host directories are nested: /d/b/sub (d) is inside /d/b (b)"),
            "{joined}"
        );
        assert!(
            joined.contains("host e: directory \"/x/../y\" must not contain '..'"),
            "{joined}"
        );
        assert!(
            joined.contains("7:10: workers must be between 1 and 256, not 0"),
            "{joined}"
        );
        assert!(joined.contains("8:9: settle: unknown unit"), "{joined}");
        assert!(
            joined.contains("9:10: bad ignore pattern \"a/b\""),
            "{joined}"
        );
    }

    #[test]
    fn fewer_than_two_hosts() {
        let p = problems("hosts:\n  only: /d/only\n");
        assert_eq!(
            p,
            vec!["2:3: at least two hosts are needed, found 1".to_string()]
        );
        let p = problems("hosts: {}\n");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999h").is_err());
        assert!(parse_duration("1e999").is_err());
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../packaging/distlink.yaml");
        let c =
            super::Config::parse(std::path::Path::new("packaging/distlink.yaml"), text).unwrap();
        assert_eq!(c.hosts.len(), 3);
        assert_eq!(c.ignore.len(), 1);
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn optional_keys_are_checked() {
        let base = "hosts:\n  a: /d/a\n  b: /d/b\n";
        let c = Config::parse(
            Path::new("c"),
            &format!("{base}log_level: debug\nuser: root\n"),
        )
        .unwrap();
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.user.map(|u| u.uid.as_raw()), Some(0));
        // An unknown user is the configuration's fault, with its line.
        let Err(e) = Config::parse(
            Path::new("c"),
            &format!("{base}user: no-such-user-distlink\n"),
        ) else {
            panic!("accepted an unknown user");
        };
        assert!(
            e.to_string().ends_with(
                "\n  c:4:7: user \"no-such-user-distlink\": no such user on this system"
            ),
            "{e}"
        );
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        let text =
            format!("{base}log_level: loud\nstate_file: run/status\nprometheus_textfile: x.prom\n");
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(Path::new("c"), &text)
        else {
            panic!("accepted");
        };
        let all: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            all.iter()
                .any(|m| m.contains("log_level must be error, warn, info or debug")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|m| m.contains("state_file must be an absolute path")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|m| m.contains("prometheus_textfile must be an absolute path")),
            "{all:?}"
        );
    }
}
