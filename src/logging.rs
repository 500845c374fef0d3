//! Where log lines go, chosen with `--log-target`:
//!
//! * `stderr`: `TIMESTAMP LEVEL: message`, for the foreground.
//! * `journal`: the journal's native protocol (datagrams of `KEY=VALUE` fields to
//!   `/run/systemd/journal/socket`), with `PRIORITY`, `SYSLOG_IDENTIFIER=distlink` and
//!   the fields an admin filters on: `HOST=` and `FILE=` (`journalctl -u distlink
//!   HOST=host1`).
//! * `syslog`: RFC 3164 to `/dev/log` (the `syslog` crate), for OpenRC systems with a
//!   syslog daemon.
//! * `auto` (default): `journal` when stderr is connected to the journal
//!   (`$JOURNAL_STREAM` names stderr's device and inode, as systemd sets it), else
//!   `stderr`.
//!
//! In every target, fan-out lines are limited to [`BURST_LINES`] a second; the rest of a burst is counted
//! and summarised in one line, so `emerge --fetchonly @world` cannot flood the journal.

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The journal's socket; `$DISTLINK_JOURNAL_SOCKET` replaces it (for tests).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Fan-out lines logged per second before the rest of a burst is summarised.
pub const BURST_LINES: u32 = 10;
/// The log target that marks fan-out lines (see `linker.rs`).
pub const FANOUT: &str = "distlink::fanout";

/// `--log-target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Auto,
    Stderr,
    Journal,
    Syslog,
}

enum Sink {
    Stderr,
    Journal { sock: UnixDatagram, path: String },
    Syslog(syslog::BasicLogger),
}

struct Logger {
    sink: Sink,
    level: LevelFilter,
}

/// Per-second budget for fan-out lines, shared by every target.
struct Burst {
    /// Start of the current one-second window.
    window: Option<Instant>,
    shown: u32,
    /// Lines held back since the last summary, and when the last one was.
    suppressed: u64,
    last: Option<Instant>,
}

static BURST: Mutex<Burst> = Mutex::new(Burst {
    window: None,
    shown: 0,
    suppressed: 0,
    last: None,
});

/// Whether a fan-out line may be shown now; counts it for the summary if not.
fn admit() -> bool {
    let mut b = BURST.lock().unwrap_or_else(|e| e.into_inner());
    if b.window.is_none_or(|w| w.elapsed().as_secs() >= 1) {
        b.window = Some(Instant::now());
        b.shown = 0;
    }
    if b.shown < BURST_LINES {
        b.shown += 1;
        true
    } else {
        b.suppressed += 1;
        b.last = Some(Instant::now());
        false
    }
}

/// Whether stderr is connected to the journal.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

fn journal_path() -> String {
    std::env::var("DISTLINK_JOURNAL_SOCKET").unwrap_or_else(|_| JOURNAL_SOCKET.to_owned())
}

/// Installs the logger; call once, first thing. Falls back to stderr (with a note) when
/// the chosen target cannot be reached.
pub fn init(level: LevelFilter, target: Target) {
    let target = match target {
        Target::Auto if stderr_is_journal() => Target::Journal,
        Target::Auto => Target::Stderr,
        t => t,
    };
    let mut note = None;
    let sink = match target {
        // A journal that does not keep up may delay a line by at most 100 ms, then loses
        // it: logging never stalls linking for long.
        Target::Journal => {
            let timeout = Some(std::time::Duration::from_millis(100));
            match UnixDatagram::unbound().and_then(|s| s.set_write_timeout(timeout).map(|()| s)) {
                Ok(sock) => Sink::Journal {
                    sock,
                    path: journal_path(),
                },
                Err(e) => {
                    note = Some(format!("journal socket unusable ({e}); logging to stderr"));
                    Sink::Stderr
                }
            }
        }
        Target::Syslog => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: "distlink".into(),
                pid: std::process::id(),
            };
            match syslog::unix(formatter) {
                Ok(logger) => Sink::Syslog(syslog::BasicLogger::new(logger)),
                Err(e) => {
                    note = Some(format!("syslog unusable ({e}); logging to stderr"));
                    Sink::Stderr
                }
            }
        }
        Target::Auto | Target::Stderr => Sink::Stderr,
    };
    let logger = Logger { sink, level };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    if let Some(n) = note {
        log::warn!("{n}");
    }
}

/// Logs the summary of a burst once it is over (a second without held-back lines);
/// called from the event loop, which wakes at least every few seconds.
pub fn flush_burst() {
    let n = {
        let mut b = BURST.lock().unwrap_or_else(|e| e.into_inner());
        match b.last {
            Some(t) if t.elapsed().as_secs() >= 1 => {
                b.last = None;
                std::mem::take(&mut b.suppressed)
            }
            _ => 0,
        }
    };
    if n > 0 {
        log::info!(target: "distlink::summary", "{n} more files fanned out in the last burst (lines not shown)");
    }
}

/// `2026-11-25T05:59:00.123Z` without a date library (civil-from-days, H. Hinnant).
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Appends one journal field; values with a newline use the binary form.
pub fn journal_field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Collects `log` key-values as upper-case journal fields.
struct Fields<'a>(&'a mut Vec<u8>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let name: String = key
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        journal_field(self.0, &name, value.to_string().as_bytes());
        Ok(())
    }
}

fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.target() == FANOUT && record.level() == Level::Info && !admit() {
            return;
        }
        match &self.sink {
            Sink::Journal { sock, path } => {
                let mut msg = Vec::with_capacity(256);
                journal_field(&mut msg, "MESSAGE", record.args().to_string().as_bytes());
                journal_field(
                    &mut msg,
                    "PRIORITY",
                    priority(record.level()).to_string().as_bytes(),
                );
                journal_field(&mut msg, "SYSLOG_IDENTIFIER", b"distlink");
                let _ = record.key_values().visit(&mut Fields(&mut msg));
                if let Err(e) = sock.send_to(&msg, path)
                    // The journal is busy: drop the line rather than stall.
                    && !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                {
                    // The journal is gone: the line still goes somewhere.
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "<{}>{}",
                        priority(record.level()),
                        record.args()
                    );
                }
            }
            Sink::Syslog(logger) => logger.log(record),
            Sink::Stderr => {
                let level = match record.level() {
                    Level::Error => "error",
                    Level::Warn => "warning",
                    Level::Info => "info",
                    Level::Debug => "debug",
                    Level::Trace => "trace",
                };
                let line = format!(
                    "{} {level}: {}\n",
                    utc_timestamp(SystemTime::now()),
                    record.args()
                );
                // One write per line, so lines from several threads never interleave.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_586_340_250);
        assert_eq!(utc_timestamp(t), "2026-11-25T05:59:00.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&utc_timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn journal_fields() {
        let mut m = Vec::new();
        journal_field(&mut m, "MESSAGE", b"plain");
        journal_field(&mut m, "FILE", b"new\nline");
        let mut want = b"MESSAGE=plain\nFILE\n".to_vec();
        want.extend_from_slice(&8u64.to_le_bytes());
        want.extend_from_slice(b"new\nline\n");
        assert_eq!(m, want);
    }
}
