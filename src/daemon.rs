//! `distlink run`: start-up sequence and the event loop.
//!
//! One thread (this one) owns the fanotify descriptor. It turns events into completed
//! files and hands them, as owned [`Job`]s, to the linker pool; control requests arrive
//! as [`Control`] values from the signal descriptor it polls beside fanotify.

use crate::completion::{FileState, NameRules, Settle};
use crate::config::Config;
use crate::control::{Control, Signals};
use crate::display::Name;
use crate::error::Error;
use crate::event;
use crate::hosts::HostSet;
use crate::linker::{Counters, Job, Linker, Trigger};
use crate::notify::notify;
use crate::watch::Watch;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::{SFlag, fstatat};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Size of the buffer fanotify events are read into (many events per `read`).
const READ_BUF: usize = 256 * 1024;

/// A pending direct write: host name (stable across reloads) and file name.
type PendingKey = (Arc<str>, Box<[u8]>);

struct Daemon {
    config: Config,
    hosts: Arc<HostSet>,
    rules: NameRules,
    settle: Settle<PendingKey>,
    watch: Watch,
    signals: Signals,
    linker: Linker,
    counters: Arc<Counters>,
    pid: i32,
    overflows: u64,
    bad_events: u64,
}

/// Runs the daemon until SIGTERM or SIGINT. Only set-up errors are returned.
pub fn run(config_path: &Path) -> Result<(), Error> {
    // 1. Configuration and host directories. Every problem is reported before anything
    //    is started, and the directories stay open as descriptors from here on.
    let config = Config::load(config_path)?;
    let hosts = Arc::new(HostSet::open(&config)?);

    // 2. Block the control signals before any thread exists, so every thread inherits
    //    the mask and they only ever arrive through the signalfd the event loop polls.
    let signals = Signals::block()?;

    // 3. The fanotify group and its filesystem mark. This is the step that needs
    //    CAP_SYS_ADMIN; from the moment it succeeds, every change on the filesystem is
    //    queued for us, so anything written after READY=1 below cannot be missed.
    let watch = Watch::open(&hosts)?;

    // 4. Only now the linker threads: they need no privilege beyond linking, and they
    //    start with the signal mask from step 2.
    let counters = Arc::new(Counters::default());
    let linker = Linker::start(config.workers, Arc::clone(&counters))
        .map_err(|e| Error::setup("starting linker threads", e))?;

    let mut daemon = Daemon {
        rules: NameRules::new(config.ignore.clone()),
        settle: Settle::new(config.settle),
        config,
        hosts,
        watch,
        signals,
        linker,
        counters,
        pid: std::process::id() as i32,
        overflows: 0,
        bad_events: 0,
    };
    daemon.log_start();

    // 5. Tell the service manager: the mark is in place.
    let status = format!(
        "READY=1\nSTATUS=watching {} host directories",
        daemon.hosts.len()
    );
    if let Err(e) = notify(&status) {
        log::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }

    let result = daemon.event_loop();
    let Daemon {
        linker, counters, ..
    } = daemon;
    // Shutdown: the sender is dropped, the workers finish every queued job, then exit.
    linker.shutdown();
    log::info!(
        "stopped: {} files fanned out, {} links made, {} conflicts, {} errors",
        counters.files.load(Ordering::Relaxed),
        counters.links.load(Ordering::Relaxed),
        counters.conflicts.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    result
}

/// Milliseconds from now until `deadline`, rounded up, for `poll`.
fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// The settle rule's view of a name: `Some` only for a regular file.
fn file_state(hosts: &HostSet, host: usize, name: &[u8]) -> Option<FileState> {
    let st = fstatat(
        hosts.get(host).dir.as_fd(),
        name,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return None;
    }
    Some(FileState {
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
    })
}

impl Daemon {
    fn log_start(&self) {
        let names: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("{}={}", h.name, h.path.display()))
            .collect();
        log::info!(
            "watching {} hosts ({}); {} workers, settle {:?}",
            self.hosts.len(),
            names.join(" "),
            self.config.workers,
            self.config.settle
        );
    }

    fn event_loop(&mut self) -> Result<(), Error> {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let timeout = poll_timeout(self.settle.next_deadline());
            let mut fds = [
                PollFd::new(self.watch.fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::setup("poll", e)),
            }
            self.drain_events(&mut buf)?;
            for control in self.signals.drain() {
                match control {
                    Control::Shutdown(sig) => {
                        log::info!(
                            "{sig}: finishing {} queued links, then exiting",
                            self.linker.backlog()
                        );
                        return Ok(());
                    }
                    Control::Reload => self.reload(),
                }
            }
            self.finish_settled();
        }
    }

    /// Reads and handles everything queued now.
    fn drain_events(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        loop {
            let n = match self.watch.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::setup("reading fanotify events", e)),
            };
            let now = Instant::now();
            for item in event::parse(&buf[..n]) {
                match item {
                    Ok(ev) => self.handle(&ev, now),
                    Err(e) => {
                        self.bad_events += 1;
                        log::error!("malformed fanotify event ignored: {e}");
                    }
                }
            }
        }
    }

    fn handle(&mut self, ev: &event::Event<'_>, now: Instant) {
        if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.overflows += 1;
            log::warn!(
                "fanotify queue overflowed (fs.fanotify.max_queued_events); events were lost \
                 ({} overflows so far)",
                self.overflows
            );
            return;
        }
        // Our own links raise FAN_CREATE in the other hosts: not news.
        if ev.pid == self.pid || ev.mask & libc::FAN_ONDIR != 0 {
            return;
        }
        let Some(rec) = ev.dir_entry() else { return };
        let Some(host) = self.hosts.lookup(rec.key) else {
            return;
        };
        let Some(name) = rec.name else { return };
        if self.rules.skip(name).is_some() {
            return;
        }
        let key: PendingKey = (Arc::from(self.hosts.get(host).name.as_str()), name.into());
        if ev.mask & libc::FAN_MOVED_TO != 0 {
            // A rename into a final name: complete now.
            self.settle.forget(&key);
            self.submit(host, key.1, Trigger::Renamed);
        } else {
            // Created, written, closed or chmodded under its final name: wait until quiet.
            let state = file_state(&self.hosts, host, name);
            self.settle.touch(key, now, state);
        }
    }

    fn submit(&self, src: usize, name: Box<[u8]>, trigger: Trigger) {
        log::debug!(
            "{}/{}: complete ({trigger:?})",
            self.hosts.get(src).name,
            Name(&name)
        );
        self.linker.submit(Job {
            hosts: Arc::clone(&self.hosts),
            src,
            name,
            trigger,
        });
    }

    fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    /// Files whose settle time is over and that did not change: fan them out.
    fn finish_settled(&mut self) {
        let hosts = Arc::clone(&self.hosts);
        let index = |host: &str| hosts.iter().position(|h| h.name == host);
        let done = self.settle.due(Instant::now(), |(host, name)| {
            file_state(&hosts, index(host)?, name)
        });
        for (host, name) in done {
            if let Some(i) = self.host_index(&host) {
                self.submit(i, name, Trigger::Settled);
            }
        }
    }

    /// SIGHUP: re-read the configuration; keep the running one if the new one is bad.
    fn reload(&mut self) {
        log::info!("SIGHUP: re-reading {}", self.config.source.display());
        let loaded = Config::load(&self.config.source)
            .map_err(Error::from)
            .and_then(|config| {
                let hosts = HostSet::open(&config)?;
                // A new filesystem needs a new mark; the old group goes when the new one is in.
                let watch = if hosts.dev != self.hosts.dev {
                    Some(Watch::open(&hosts)?)
                } else {
                    None
                };
                Ok((config, hosts, watch))
            });
        match loaded {
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
            Ok((config, hosts, watch)) => {
                if let Some(watch) = watch {
                    self.watch = watch;
                }
                // Files already waiting keep their deadline; the new period applies next.
                self.settle.set_period(config.settle);
                self.rules = NameRules::new(config.ignore.clone());
                self.hosts = Arc::new(hosts);
                if config.workers != self.config.workers {
                    log::warn!(
                        "workers: the new count ({}) applies after a restart",
                        config.workers
                    );
                }
                self.config = config;
                self.log_start();
            }
        }
    }
}
