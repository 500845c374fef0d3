//! `distlink check`: validate the configuration and the environment the way `run` would
//! start, without starting (like `nginx -t`).

use crate::config::Config;
use crate::error::Error;
use crate::fanotify::Watch;
use crate::host_numbers::HostNumbers;
use crate::hosts::HostSet;
use std::path::Path;
use std::sync::Arc;

/// Everything `run` needs, tried for real: the configuration, the host directories, the
/// fanotify group in FID mode and the filesystem mark (which needs CAP_SYS_ADMIN).
/// Returns a one-paragraph summary when `run` would start.
pub fn check(config_path: &Path) -> Result<String, Error> {
    let config = Config::load(config_path)?;
    // Read only: hosts new to the file get their numbers when `run` starts.
    let mut numbers = HostNumbers::read(&config.host_numbers)?;
    let configured: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    let retired: Vec<String> = numbers
        .unconfigured(&configured)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let new = numbers
        .add(config.hosts.iter().map(|h| h.name.as_str()))
        .ok_or_else(|| crate::host_numbers::NumbersError::Full {
            path: config.host_numbers.clone(),
        })?;
    let hosts = HostSet::open(&config, &Arc::new(numbers))?;
    let missing = crate::hosts::missing(&config);
    crate::privs::refuse_unwritable_dirs(&config, &hosts)?;
    let user_warning = config.user.as_ref().and_then(|user| {
        let (files, example) = crate::privs::unrecordable_files(user, &hosts);
        example.map(|example| format!(
            "\nwarning: {files} files cannot carry records as user {}, e.g. {example}: they are not fanned out (a deletion could not be kept); chown them to that user, or run as root",
            user.name
        ))
    });
    if hosts.is_empty() {
        return Err(crate::hosts::none_present(&config));
    }
    hosts.check_records()?;
    // Opening the group and marking proves kernel support and privileges; dropping it
    // removes the mark again.
    let watch = Watch::open(&hosts, &config)?;
    let queue = match watch.limit {
        None => "unlimited queue".to_owned(),
        Some(n) => format!("queue limited to {n} events"),
    };
    let marks = watch.describe();
    drop(watch);
    let user = match &config.user {
        None => "root with CAP_FOWNER, CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE".to_owned(),
        Some(u) => format!(
            "user {} (uid {}) with CAP_FOWNER, CAP_DAC_READ_SEARCH",
            u.name, u.uid
        ),
    };
    let fs_type = hosts
        .any_dir()
        .and_then(|d| crate::sys::fs_type(d).ok())
        .map_or_else(|| "unknown".into(), |t| format!("{t:#x}"));
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
    if let Some(pool) = hosts.pool() {
        let p = &pool.dir;
        out.push_str(&format!(
            "\n  {}: {} (clients mount it read-only at {} and list that in PORTAGE_RO_DISTDIRS; keep {})",
            crate::pool::NAME,
            p.path.display(),
            String::from_utf8_lossy(&pool.client_path),
            crate::display::duration(pool.keep)
        ));
        if let Ok(st) = nix::sys::stat::fstat(&p.dir)
            && st.st_mode & 0o022 != 0
        {
            out.push_str(&format!(
                "\n  warning: pool: {} is writable by group or others (mode {:04o}): whoever can write it can put files there that every client may take",
                p.path.display(),
                st.st_mode & 0o7777
            ));
        }
    }
    for h in &missing {
        let parent = h.path.parent().filter(|p| p.is_dir());
        out.push_str(&format!(
            "\n  warning: host {}: {} does not exist{}; distlink starts without it and picks it up when it appears",
            h.name,
            h.path.display(),
            if parent.is_some() {
                ""
            } else {
                " and neither does its parent (a typo?)"
            }
        ));
    }
    out.push_str(&format!(
        "\nfanotify: FID mode (FAN_REPORT_DFID_NAME): ok, {queue}; marks: {marks}\n\
         records: user.distlink extended attributes: ok; host numbers: {} ({})\n\
         linking as: {user}",
        config.host_numbers.display(),
        if new.is_empty() {
            "every host numbered".to_owned()
        } else {
            format!("{} to number at start-up", new.len())
        }
    ));
    if !new.is_empty() && !retired.is_empty() {
        out.push_str(&format!(
            "\nnote: new hosts {} get new numbers and no history; if one is a renamed {}, stop distlink and rename it in {} first (see its header)",
            new.join(", "),
            retired.join(" or "),
            config.host_numbers.display()
        ));
    }
    if let Some(w) = user_warning {
        out.push_str(&w);
    }
    Ok(out)
}
