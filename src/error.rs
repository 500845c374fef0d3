//! Errors that stop distlink. Once running, only losing the event loop's own
//! descriptors is fatal ([`Error::Runtime`]): a failed fan-out is logged and counted
//! (see `report.rs`).

use crate::config::ConfigError;
use std::fmt;
use std::io;

/// A start-up failure, with what was being done and, where it helps, a hint.
#[derive(Debug)]
pub enum Error {
    /// The configuration or the host directories are wrong.
    Config(ConfigError),
    /// The kernel refused a fanotify call.
    Fanotify {
        op: &'static str,
        source: io::Error,
        hint: &'static str,
    },
    /// The filesystem cannot keep fan-out records (`user.*` extended attributes).
    Records {
        path: std::path::PathBuf,
        source: io::Error,
    },
    /// The kernel or a sandbox (a seccomp filter, a resource limit) refused a call that
    /// the configuration needs: not a configuration error, so a service manager may retry.
    Refused { what: String, source: io::Error },
    /// Another daemon holds the status file's lock (same configuration).
    AlreadyRunning {
        pid: u32,
        state_file: std::path::PathBuf,
    },
    /// `distlink sync` left files undone (they kept changing); the text lists them.
    Incomplete(String),
    /// Dropping capabilities failed (the `caps` crate's error, kept as it is).
    Capabilities {
        what: &'static str,
        source: caps::errors::CapsError,
    },
    /// The host numbers file could not be read or written (see `host_numbers.rs`).
    Numbers(crate::host_numbers::NumbersError),
    /// Some other set-up step failed.
    Setup { what: String, source: io::Error },
    /// The running event loop lost a descriptor it cannot do without (poll or the
    /// fanotify read failed). A failed fan-out is never this: it is logged and counted.
    Runtime { what: String, source: io::Error },
}

impl Error {
    /// The process exit code for this error (documented in the README and `main.rs`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => crate::EXIT_CONFIG,
            // Damaged or full: restarting cannot help; the admin must restore the file.
            Error::Numbers(e) if !matches!(e, crate::host_numbers::NumbersError::Io { .. }) => {
                crate::EXIT_CONFIG
            }
            Error::Incomplete(_) => crate::cmd::sync::EXIT_INCOMPLETE,
            _ => crate::EXIT_FAILURE,
        }
    }

    pub fn setup(what: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Setup {
            what: what.into(),
            source: source.into(),
        }
    }

    pub fn runtime(what: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Runtime {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::Fanotify { op, hint, .. } => {
                write!(f, "{op} failed")?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            Error::Records { path, .. } => write!(
                f,
                "the filesystem of {} cannot keep distlink's fan-out records (user.* extended \
                 attributes; tmpfs, ext4, xfs and btrfs can)",
                path.display()
            ),
            Error::Refused { what, .. } => f.write_str(what),
            Error::Numbers(e) => write!(f, "host numbers: {e}"),
            Error::Incomplete(text) => f.write_str(text),
            Error::AlreadyRunning { pid, state_file } => write!(
                f,
                "another distlink (pid {pid}) is already running with the status file {}; stop it first",
                state_file.display()
            ),
            Error::Setup { what, .. } => write!(f, "{what} failed"),
            Error::Capabilities { what, .. } => write!(f, "{what} failed"),
            Error::Runtime { what, .. } => write!(f, "while running: {what} failed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::AlreadyRunning { .. } | Error::Incomplete(_) => None,
            Error::Capabilities { source, .. } => Some(source),
            Error::Config(e) => e.source(),
            Error::Numbers(e) => e.source(),
            Error::Fanotify { source, .. }
            | Error::Setup { source, .. }
            | Error::Runtime { source, .. }
            | Error::Refused { source, .. }
            | Error::Records { source, .. } => Some(source),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<crate::host_numbers::NumbersError> for Error {
    fn from(e: crate::host_numbers::NumbersError) -> Error {
        Error::Numbers(e)
    }
}
