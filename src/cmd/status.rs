//! `distlink status`: what the running daemon last wrote to its status file, for a
//! human.

use crate::config::Config;
use crate::display::bytes;
use crate::error::Error;
use crate::status::{Snapshot, now, read_status};
use std::fmt::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

fn when(t: u64) -> String {
    if t == 0 {
        return "never".into();
    }
    let ago = now().saturating_sub(t);
    format!(
        "{} ({ago}s ago)",
        crate::logging::utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(t))
    )
}

/// Whether `pid` is a running distlink.
fn alive(pid: u32) -> bool {
    pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "distlink")
}

/// `distlink status`: the report, and whether the daemon is running.
pub fn report(config_path: &Path) -> Result<(String, bool), Error> {
    let config = Config::load(config_path)?;
    let path = &config.state_file;
    let text = match read_status(path) {
        Ok(text) => text,
        // No status file (after a reboot: /run is empty): simply not running.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "distlink is not running (no status file {}; it has not run since boot)",
                path.display()
            );
            return Ok((text, false));
        }
        Err(e) => {
            return Err(Error::setup(
                format!("reading the status file {}", path.display()),
                e,
            ));
        }
    };
    let s = Snapshot::parse(&text);
    let running = s.state == "running" && alive(s.pid);
    let mut out = String::new();
    if running {
        let _ = writeln!(
            out,
            "distlink is running (pid {}), started {}",
            s.pid,
            when(s.started)
        );
    } else {
        let _ = writeln!(
            out,
            "distlink is not running (last status {}, state {})",
            when(s.updated),
            s.state
        );
    }
    let _ = writeln!(out, "configuration: {}", s.config);
    if !s.marks.is_empty() {
        let _ = writeln!(out, "fanotify marks: {}", s.marks);
    }
    let _ = writeln!(out, "hosts:");
    for (name, dir, present) in &s.hosts {
        let _ = writeln!(
            out,
            "  {name}: {dir}{}",
            if *present {
                ""
            } else {
                "  (directory missing)"
            }
        );
    }
    let _ = writeln!(
        out,
        "pool: {} files, {} (at the last reconcile)",
        s.pool_files,
        bytes(s.pool_bytes)
    );
    if !s.pool_dir.is_empty() {
        let _ = writeln!(
            out,
            "read-only pool: {}: {} symlinks answered with a link ({} not downloaded), {} names no host held removed ({}), {} kept until keep is over",
            s.pool_dir,
            s.pool_taken,
            bytes(s.pool_taken_bytes),
            s.pool_removed,
            bytes(s.pool_removed_bytes),
            s.pool_kept
        );
    }
    let _ = writeln!(
        out,
        "since start: {} files fanned out, {} links made, {} conflicts, {} errors, {} skipped, {} queue overflows",
        s.files, s.links, s.conflicts, s.errors, s.skipped, s.overflows
    );
    let _ = writeln!(
        out,
        "merged: {} identical copies replaced by links, {} freed",
        s.merged,
        bytes(s.merged_bytes)
    );
    let _ = writeln!(
        out,
        "settling: {} files written under their final name, waiting to be quiet",
        s.settling
    );
    let _ = writeln!(
        out,
        "retrying: {} failed fan-outs waiting for another try",
        s.retrying
    );
    let _ = write!(out, "last reconcile: {}", when(s.last_reconcile));
    if !s.last_reconcile_summary.is_empty() {
        let _ = write!(out, ": {}", s.last_reconcile_summary);
    }
    Ok((out, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
