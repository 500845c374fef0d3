//! `distlink space`: where the bytes are (see `space.rs` for the definitions). Reads the
//! host directories only; needs no daemon and changes nothing.

use crate::config::Config;
use crate::display::{Name, bytes};
use crate::error::Error;
use crate::host_numbers::HostNumbers;
use crate::hosts::HostSet;
use crate::space::{Report, Split, Tally};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};
use std::fmt::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

/// What a scan found, with the split names sorted into identical copies and conflicts.
#[derive(Debug)]
pub struct Found {
    pub report: Report,
    /// Split names whose copies hold the same bytes (a merge would join them).
    pub mergeable: u64,
    /// Split names whose copies differ.
    pub conflicts: u64,
}

/// Scans every present host directory of `config`; with `compare`, reads the copies of
/// split names of equal size to tell identical copies from conflicts.
pub fn scan(config: &Config, compare: bool) -> Result<Found, Error> {
    let mut numbers = HostNumbers::fresh();
    let _ = numbers.add(config.hosts.iter().map(|h| h.name.as_str()));
    let hosts = HostSet::open(config, &Arc::new(numbers))?;
    let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    let mut tally = Tally::new(names);
    // The hosts, then the pool (its names count after every host's).
    for i in 0..hosts.members() {
        let host = hosts.member(i);
        let dir = nix::dir::Dir::openat(
            host.dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::setup(format!("reading {}", host.path.display()), e))?;
        for entry in dir {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(st) = fstatat(host.dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                continue;
            }
            let size = st.st_size.max(0) as u64;
            if Some(i) == hosts.pool_at() {
                tally.add_pool(st.st_ino, size, st.st_nlink);
            } else {
                tally.add(i, name, st.st_ino, size, st.st_nlink);
            }
        }
    }
    let report = tally.finish();
    let (mut mergeable, mut conflicts) = (0, 0);
    for split in report.splits.iter().filter(|_| compare) {
        if identical(&hosts, split) {
            mergeable += 1;
        } else {
            conflicts += 1;
        }
    }
    Ok(Found {
        report,
        mergeable,
        conflicts,
    })
}

/// Whether every copy of a split name holds the same bytes (compared through
/// descriptors of the inodes the scan saw; a copy changed since counts as different).
fn identical(hosts: &HostSet, split: &Split) -> bool {
    if split.sizes_differ() {
        return false;
    }
    let open = |c: &crate::space::Copy| {
        let (fd, st) = crate::link::open_candidate(hosts, c.host, &split.name).ok()?;
        (st.st_ino == c.ino).then_some((fd, st))
    };
    let Some((first, first_st)) = split.copies.first().and_then(open) else {
        return false;
    };
    split.copies[1..].iter().all(|c| {
        open(c).is_some_and(|(fd, _)| {
            crate::merge::same_bytes(first.as_fd(), fd.as_fd(), first_st.st_size.max(0) as u64)
                .unwrap_or(false)
        })
    })
}

/// `distlink space`: the report as text or JSON.
pub fn space(config_path: &Path, json: bool) -> Result<String, Error> {
    let config = Config::load(config_path)?;
    let found = scan(&config, true)?;
    Ok(if json {
        render_json(&found, config.pool.as_ref())
    } else {
        render_text(&found, config.pool.as_ref())
    })
}

const BAR: usize = 30;

fn render_text(f: &Found, pool: Option<&crate::pool::PoolConfig>) -> String {
    let r = &f.report;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pool: {} files, {} (each inode counted once)",
        r.pool_files,
        bytes(r.pool_bytes)
    );
    if let Some(p) = pool {
        let s = r.pool_dir.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "read-only pool {}: {} names, {}; no host holds {} of them ({}), kept up to {} after the last host dropped them",
            p.dir.display(),
            s.files,
            bytes(s.bytes),
            s.kept_files,
            bytes(s.kept_bytes),
            crate::display::duration(p.keep)
        );
    }
    let _ = writeln!(
        out,
        "hosts, by bytes held alone (what each one's eclean-dist would free):"
    );
    let top = r
        .hosts
        .iter()
        .map(|h| h.alone_bytes)
        .max()
        .unwrap_or(0)
        .max(1);
    let width = r.hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
    for h in r.by_alone() {
        let filled = (h.alone_bytes as u128 * BAR as u128).div_ceil(top as u128) as usize;
        let _ = writeln!(
            out,
            "  {:<width$}  {}{}  alone {} in {} files; references {} in {} names",
            h.name,
            "#".repeat(filled),
            ".".repeat(BAR - filled),
            bytes(h.alone_bytes),
            h.alone_files,
            bytes(h.bytes),
            h.files,
        );
    }
    let _ = writeln!(
        out,
        "split names (one name, several inodes): {}, wasting {}; identical copies (merged by the daemon) {}, conflicts (different bytes) {}",
        r.split_names,
        bytes(r.split_bytes),
        f.mergeable,
        f.conflicts
    );
    if !r.largest_alone.is_empty() {
        let _ = writeln!(out, "largest files held by one host alone:");
        for (host, name, size) in &r.largest_alone {
            let _ = writeln!(out, "  {:>10}  {host}/{}", bytes(*size), Name(name));
        }
    }
    out.pop();
    out
}

/// A JSON string: UTF-8 as is, everything else escaped (invalid bytes as U+FFFD would
/// lose them, so they are written `\u00XX` of their byte value, as `Name` does in text).
fn json_str(out: &mut String, s: &[u8]) {
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\u{:04x}", b);
        }
    }
    out.push('"');
}

fn render_json(f: &Found, pool: Option<&crate::pool::PoolConfig>) -> String {
    let r = &f.report;
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"pool\": {{\"files\": {}, \"bytes\": {}}}, ",
        r.pool_files, r.pool_bytes
    );
    if let Some(p) = pool {
        use std::os::unix::ffi::OsStrExt;
        let s = r.pool_dir.clone().unwrap_or_default();
        out.push_str("\"pool_dir\": {\"dir\": ");
        json_str(&mut out, p.dir.as_os_str().as_bytes());
        let _ = write!(
            out,
            ", \"keep_seconds\": {}, \"files\": {}, \"bytes\": {}, \"kept_files\": {}, \"kept_bytes\": {}}}, ",
            p.keep.as_secs(),
            s.files,
            s.bytes,
            s.kept_files,
            s.kept_bytes
        );
    }
    out.push_str("\"hosts\": [");
    for (i, h) in r.hosts.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str("{\"name\": ");
        json_str(&mut out, h.name.as_bytes());
        let _ = write!(
            out,
            ", \"files\": {}, \"bytes\": {}, \"alone_files\": {}, \"alone_bytes\": {}}}",
            h.files, h.bytes, h.alone_files, h.alone_bytes
        );
    }
    let _ = write!(
        out,
        "], \"split_names\": {}, \"split_bytes\": {}, \"mergeable\": {}, \"conflicts\": {}, \"largest_alone\": [",
        r.split_names, r.split_bytes, f.mergeable, f.conflicts
    );
    for (i, (host, name, size)) in r.largest_alone.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str("{\"host\": ");
        json_str(&mut out, host.as_bytes());
        out.push_str(", \"name\": ");
        json_str(&mut out, name);
        let _ = write!(out, ", \"bytes\": {size}}}");
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_controls_and_invalid_bytes() {
        let mut s = String::new();
        json_str(&mut s, b"a\"b\\c\nd\xffe\xc3\xa9");
        assert_eq!(s, "\"a\\\"b\\\\c\\u000ad\\u00ffe\u{e9}\"");
    }
}
