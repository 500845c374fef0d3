//! Where log lines go, chosen with `--log-target`:
//!
//! * `stderr`: `TIMESTAMP LEVEL: message`, for the foreground.
//! * `journal`: the journal's native protocol (datagrams of `KEY=VALUE` fields to
//!   `/run/systemd/journal/socket`), with `PRIORITY`, `SYSLOG_IDENTIFIER=distlink` and
//!   the fields an admin filters on: `HOST=` and `FILE=` (`journalctl -u distlink
//!   HOST=host1`).
//! * `syslog`: RFC 3164 (formatted by the `syslog` crate) to `/dev/log`, for OpenRC
//!   systems with a syslog daemon. When the daemon restarts (log rotation, an upgrade),
//!   the socket is connected again at the next line.
//! * `auto` (default): `journal` when stderr is connected to the journal
//!   (`$JOURNAL_STREAM` names stderr's device and inode, as systemd sets it), else
//!   `stderr`.
//!
//! In every target, each kind of per-file line (every log statement of `report.rs`: a
//! fan-out, a conflict, a refused FIFO, a failed link) is limited to [`BURST_LINES`] a
//! second; the rest of a burst is counted and summarised in one line per kind, so
//! neither `emerge --fetchonly @world` nor a client renaming thousands of FIFOs can
//! flood the log.
//!
//! No sink can stall the threads that log (the event loop among them): a line is
//! formatted by the caller and handed to one logging thread through a queue of
//! [`QUEUE_LINES`]; when the queue is full the line is dropped and counted, and the
//! logging thread says how many were dropped once it can write again. Each socket send
//! waits at most [`SEND_TIMEOUT`]. [`flush`] (called before exit) waits a bounded time
//! for the queue to drain.

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The journal's socket; `$DISTLINK_JOURNAL_SOCKET` replaces it (for tests).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Fan-out lines logged per second before the rest of a burst is summarised.
pub const BURST_LINES: u32 = 10;
/// The log target that marks fan-out lines (see `report.rs`).
pub const FANOUT: &str = "distlink::fanout";

/// `--log-target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Auto,
    Stderr,
    Journal,
    Syslog,
}

/// Lines waiting for the logging thread before new ones are dropped.
pub const QUEUE_LINES: usize = 4096;
/// The longest one socket send may wait.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// Where the logging thread writes.
enum Sink {
    Stderr,
    Journal {
        sock: UnixDatagram,
        path: String,
    },
    /// Connected on first use and again after the syslog daemon went away.
    Syslog {
        path: String,
        sock: Option<UnixDatagram>,
    },
}

/// What the logging thread is handed: one line, already formatted for the sink, with
/// its priority and text for the stderr fallback. `Flush` asks for an answer once every
/// line before it was written.
enum Message {
    Line {
        bytes: Vec<u8>,
        priority: u8,
        text: String,
    },
    Flush(crossbeam_channel::Sender<()>),
}

/// The formatting half, run in the thread that logs (and in the logging thread for its
/// own note about dropped lines).
#[derive(Clone)]
enum Format {
    Stderr,
    Journal,
    Syslog(syslog::Formatter3164),
}

struct Logger {
    format: Format,
    queue: crossbeam_channel::Sender<Message>,
    level: LevelFilter,
}

/// Lines dropped because the queue was full, not yet reported.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The logging thread's half, until [`start_writer`] starts it.
type Writer = (Format, Sink, crossbeam_channel::Receiver<Message>);
static WRITER: Mutex<Option<Writer>> = Mutex::new(None);
/// The logging thread's queue, for [`flush`].
static QUEUE: Mutex<Option<crossbeam_channel::Sender<Message>>> = Mutex::new(None);

/// Per-second budget of one kind of per-file line (one log statement of `report.rs`),
/// shared by every target.
struct Burst {
    /// The log statement: its line in `report.rs`, and whether it is the fan-out line.
    line: u32,
    fanout: bool,
    level: Level,
    /// Start of the current one-second window.
    window: Instant,
    shown: u32,
    /// Lines held back since the last summary, the first of them, and when the last was.
    suppressed: u64,
    example: String,
    last: Option<Instant>,
}

/// One entry per kind of per-file line seen so far (a handful).
static BURSTS: Mutex<Vec<Burst>> = Mutex::new(Vec::new());

/// The module whose lines are per file: a client controls how many there are.
const PER_FILE: &str = "distlink::report";

/// Whether a per-file line may be shown now; counts it for its kind's summary if not.
fn admit(record: &Record<'_>) -> bool {
    let line = record.line().unwrap_or(0);
    let mut bursts = BURSTS.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let i = match bursts.iter().position(|b| b.line == line) {
        Some(i) => i,
        None => {
            bursts.push(Burst {
                line,
                fanout: record.target() == FANOUT,
                level: record.level(),
                window: now,
                shown: 0,
                suppressed: 0,
                example: String::new(),
                last: None,
            });
            bursts.len() - 1
        }
    };
    let b = &mut bursts[i];
    if now.duration_since(b.window).as_secs() >= 1 {
        b.window = now;
        b.shown = 0;
    }
    if b.shown < BURST_LINES {
        b.shown += 1;
        true
    } else {
        // A flood formats one line for its summary, not every line it holds back.
        if b.suppressed == 0 {
            b.example = record.args().to_string();
        }
        b.suppressed += 1;
        b.last = Some(now);
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

/// `$DISTLINK_SYSLOG_SOCKET` replaces `/dev/log` (for tests).
fn syslog_path() -> String {
    std::env::var("DISTLINK_SYSLOG_SOCKET").unwrap_or_else(|_| "/dev/log".to_owned())
}

/// Installs the logger; call once, first thing, then [`start_writer`]. Falls back
/// to stderr (with a note) when the chosen target cannot be reached.
pub fn init(level: LevelFilter, target: Target) {
    let target = match target {
        Target::Auto if stderr_is_journal() => Target::Journal,
        Target::Auto => Target::Stderr,
        t => t,
    };
    let mut note = None;
    let (format, sink) = match target {
        Target::Journal => {
            match UnixDatagram::unbound()
                .and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s))
            {
                Ok(sock) => (
                    Format::Journal,
                    Sink::Journal {
                        sock,
                        path: journal_path(),
                    },
                ),
                Err(e) => {
                    note = Some(format!("journal socket unusable ({e}); logging to stderr"));
                    (Format::Stderr, Sink::Stderr)
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
            // Not there yet (the syslog daemon starts later): connected at the first line
            // that finds it; until then lines go to stderr.
            let path = syslog_path();
            let sock = connect_syslog(&path).ok();
            (Format::Syslog(formatter), Sink::Syslog { path, sock })
        }
        Target::Auto | Target::Stderr => (Format::Stderr, Sink::Stderr),
    };
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_LINES);
    *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some((format.clone(), sink, rx));
    *QUEUE.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
    let logger = Logger {
        format,
        queue: tx,
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    if let Some(n) = note {
        log::warn!("{n}");
    }
}

fn connect_syslog(path: &str) -> std::io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
    sock.connect(path)?;
    Ok(sock)
}

/// Starts the logging thread; lines logged before are waiting in the queue. `run` calls
/// it once privileges are dropped, so the thread inherits the reduced capabilities and
/// the final uid (a thread started earlier would keep root's capabilities, and glibc
/// aborts the process when `setresuid` fails in any thread); every other command right
/// after [`init`]. Later calls do nothing.
pub fn start_writer() {
    let Some((format, sink, rx)) = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || {
            // Signals are for the event loop's signalfd, never for this thread.
            let _ = nix::sys::signal::SigSet::all().thread_block();
            // Nor does it need any privilege left.
            crate::privs::drop_all_in_this_thread();
            write_lines(&format, sink, &rx)
        });
    if let Err(e) = spawned {
        eprintln!("distlink: cannot start the logging thread ({e}); log lines are lost");
    }
}

/// Waits (at most `timeout`) until every line logged so far has been written.
pub fn flush(timeout: Duration) {
    start_writer();
    let Some(queue) = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    if queue.send_timeout(Message::Flush(tx), timeout).is_ok() {
        let _ = rx.recv_timeout(timeout);
    }
}

/// The logging thread: writes each line to the sink; finishes when every sender is gone.
fn write_lines(format: &Format, mut sink: Sink, rx: &crossbeam_channel::Receiver<Message>) {
    for message in rx {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            Message::Line {
                bytes,
                priority,
                text,
            } => {
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let note =
                        format!("{dropped} log lines were dropped: the log sink did not keep up");
                    let line = format.line(Level::Warn, &note, |_| {});
                    write_one(&mut sink, &line, priority_of(Level::Warn), &note);
                }
                write_one(&mut sink, &bytes, priority, &text);
            }
        }
    }
}

/// Writes one formatted line; a line that cannot be written in time is dropped (and
/// counted), one whose sink is gone goes to stderr.
fn write_one(sink: &mut Sink, bytes: &[u8], priority: u8, text: &str) {
    let result = match sink {
        Sink::Stderr => std::io::stderr().lock().write_all(bytes),
        Sink::Journal { sock, path } => sock.send_to(bytes, &*path).map(|_| ()),
        Sink::Syslog { path, sock } => {
            let mut tries = 0;
            loop {
                tries += 1;
                if sock.is_none() {
                    *sock = connect_syslog(path).ok();
                }
                let Some(s) = sock else {
                    break Err(std::io::Error::from(std::io::ErrorKind::NotConnected));
                };
                match s.send(bytes) {
                    Ok(_) => break Ok(()),
                    // The syslog daemon restarted (its old socket is gone): reconnect once.
                    Err(e) if tries == 1 && e.kind() != std::io::ErrorKind::WouldBlock => {
                        *sock = None;
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    match result {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        // The sink is gone: the line still goes somewhere.
        Err(_) if !matches!(sink, Sink::Stderr) => {
            let _ = writeln!(std::io::stderr().lock(), "<{priority}>{text}");
        }
        Err(_) => {}
    }
}

fn stderr_line(level: Level, text: &str) -> String {
    let level = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    format!("{} {level}: {text}\n", utc_timestamp(SystemTime::now()))
}

/// A journal datagram: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and whatever `fields` adds.
fn journal_message(text: &str, priority: u8, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut msg = Vec::with_capacity(256);
    journal_field(&mut msg, "MESSAGE", text.as_bytes());
    journal_field(&mut msg, "PRIORITY", priority.to_string().as_bytes());
    journal_field(&mut msg, "SYSLOG_IDENTIFIER", b"distlink");
    fields(&mut msg);
    msg
}

impl Format {
    /// `text` at `level` as the sink wants it; `fields` adds journal fields.
    fn line(&self, level: Level, text: &str, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        match self {
            Format::Journal => journal_message(text, priority_of(level), fields),
            Format::Syslog(f) => format_syslog(f, text, level),
            Format::Stderr => stderr_line(level, text).into_bytes(),
        }
    }
}

fn format_syslog(f: &syslog::Formatter3164, text: &str, level: Level) -> Vec<u8> {
    use syslog::LogFormat;
    let severity = match level {
        Level::Error => syslog::Severity::LOG_ERR,
        Level::Warn => syslog::Severity::LOG_WARNING,
        Level::Info => syslog::Severity::LOG_INFO,
        Level::Debug | Level::Trace => syslog::Severity::LOG_DEBUG,
    };
    let mut out = Vec::with_capacity(text.len() + 48);
    let _ = f.format(&mut out, severity, text);
    out
}

/// Logs, for each kind of per-file line, the summary of a burst once it is over (a
/// second without held-back lines); called from the event loop, which wakes at least
/// every few seconds.
pub fn flush_burst() {
    let mut summaries = Vec::new();
    {
        let mut bursts = BURSTS.lock().unwrap_or_else(|e| e.into_inner());
        for b in bursts.iter_mut() {
            if b.last.is_some_and(|t| t.elapsed().as_secs() >= 1) {
                b.last = None;
                let n = std::mem::take(&mut b.suppressed);
                summaries.push((b.fanout, b.level, n, std::mem::take(&mut b.example)));
            }
        }
    }
    for (fanout, level, n, example) in summaries {
        if fanout {
            log::info!(target: "distlink::summary", "{n} more files fanned out in the last burst (lines not shown)");
        } else {
            log::log!(target: "distlink::summary", level, "{n} more lines like this one in the last burst (not shown): {example}");
        }
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

fn priority_of(level: Level) -> u8 {
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
        if record.module_path_static() == Some(PER_FILE) && !admit(record) {
            return;
        }
        let text = record.args().to_string();
        let bytes = self.format.line(record.level(), &text, |msg| {
            let _ = record.key_values().visit(&mut Fields(msg));
        });
        let line = Message::Line {
            bytes,
            priority: priority_of(record.level()),
            text,
        };
        if self.queue.try_send(line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        flush(SEND_TIMEOUT);
    }
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
