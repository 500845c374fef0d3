//! `distlink check`: validate the configuration and the environment the way `run` would
//! start, without starting (like `nginx -t`).

use crate::config::Config;
use crate::error::Error;
use crate::hosts::HostSet;
use crate::watch::Watch;
use std::path::Path;

/// Everything `run` needs, tried for real: the configuration, the host directories, the
/// fanotify group in FID mode and the filesystem mark (which needs CAP_SYS_ADMIN).
/// Returns a one-paragraph summary when `run` would start.
pub fn check(config_path: &Path) -> Result<String, Error> {
    let config = Config::load(config_path)?;
    let hosts = HostSet::open(&config)?;
    hosts.check_records()?;
    // Opening the group and marking proves kernel support and privileges; dropping it
    // removes the mark again.
    drop(Watch::open(&hosts, config.unlimited_queue)?);
    let fs_type = crate::sys::fs_type(hosts.any_dir())
        .map(|t| format!("{t:#x}"))
        .unwrap_or_else(|_| "unknown".into());
    let mut out = format!(
        "{}: configuration OK: {} hosts on one filesystem (dev {}:{}, type {fs_type}), {} workers, settle {:?}",
        config.source.display(),
        hosts.len(),
        nix::sys::stat::major(hosts.dev),
        nix::sys::stat::minor(hosts.dev),
        config.workers,
        config.settle,
    );
    for h in hosts.iter() {
        out.push_str(&format!("\n  {}: {}", h.name, h.path.display()));
    }
    Ok(out)
}
