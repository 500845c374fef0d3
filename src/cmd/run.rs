//! `distlink run`: start-up sequence and the event loop.
//!
//! One thread (this one) owns the fanotify descriptor. Each event is classified
//! ([`classify`]), a completed file goes to the worker threads as an owned [`Job`], and
//! their [`Outcome`]s come back here to be logged and counted ([`report`]); control
//! requests arrive as [`Control`] values from the signal descriptor polled beside them.

use crate::classify::{Action, Parents, Routing, classify};
use crate::completion::{Key, NameRules, Settle};
use crate::config::{Config, ConfigError};
use crate::display::Name;
use crate::error::Error;
use crate::event;
use crate::fanotify::Watch;
use crate::host_numbers::HostNumbers;
use crate::hosts::{HostSet, open_host};
use crate::link::{Candidate, Outcome, Trigger};
use crate::reconcile::{Request, Summary};
use crate::report::{Counters, Style, report};
use crate::retry::{Retries, Verdict};
use crate::sd_notify::notify;
use crate::signals::{Control, Signals};
use crate::status::{StatusFile, TextFile};
use crate::workers::{Job, Reply, Workers};
use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// Size of the buffer fanotify events are read into (many events per `read`).
const READ_BUF: usize = 256 * 1024;

struct Daemon {
    config: Config,
    hosts: Arc<HostSet>,
    /// Parent directories of the host directories, to see a host directory vanish and
    /// come back.
    parents: Parents,
    rules: NameRules,
    settle: Settle,
    watch: Watch,
    signals: Signals,
    workers: Workers,
    /// Outcomes of live fan-outs: where workers send them (waking the loop through
    /// `wake`), and where the loop takes them.
    reply: Reply,
    outcomes: Receiver<Outcome>,
    wake: Arc<EventFd>,
    counters: Arc<Counters>,
    pid: i32,
    /// Opened at start-up; a reload's new paths apply after a restart.
    status_file: StatusFile,
    textfile: Option<TextFile>,
    overflows: u64,
    bad_events: u64,
    /// The reconcile running in its own thread, if any.
    reconcile: Option<Reconcile>,
    /// Why another reconcile is needed once the running one ends.
    rescan: Option<String>,
    /// What a reconcile's outcomes leave to the event loop.
    followup_tx: Sender<Followup>,
    followup_rx: Receiver<Followup>,
    /// Failed fan-outs waiting for another try.
    retries: Retries,
    /// Pool names no host holds, to look at again when their `keep` is over.
    expiring: crate::pool::Expiring,
    /// `/proc/self/mountinfo`, polled for `POLLPRI`: the mount table changed, so a
    /// filesystem may have been mounted over a host directory (or unmounted from one).
    mounts: Option<std::fs::File>,
    /// Hosts whose path leads off the shared filesystem and mount right now.
    off_filesystem: std::collections::HashSet<String>,
    /// The pool's path leads nowhere right now (said once).
    pool_gone: bool,
    /// A look at the host directories under way: the next one to look at.
    looking: Option<usize>,
    /// Host directories came back this turn (see [`Daemon::after_hosts_back`]).
    hosts_back: bool,
    progress: Progress,
}

/// What a reconcile's outcome leaves to the event loop.
enum Followup {
    /// Changed within the settle time: to the settle tracker.
    Settle(Key),
    /// Failed: to the retries.
    Retry(Key),
}

/// A reconcile in progress.
struct Reconcile {
    cancel: Arc<AtomicBool>,
    /// The summary, and with a Prometheus textfile, where the bytes are afterwards.
    thread: std::thread::JoinHandle<(Summary, Option<crate::space::Report>)>,
}

/// What the status file reports beyond the counters.
#[derive(Default)]
struct Progress {
    started: u64,
    reconciles: u64,
    last_reconcile: u64,
    last_summary: String,
    pool_files: u64,
    pool_bytes: u64,
    last_written: Option<Instant>,
    /// Per-host figures from after the last reconcile (only with a Prometheus textfile).
    space: Option<crate::space::Report>,
}

/// How often the status file is rewritten (and the longest the event loop sleeps).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// How often every host directory's path is looked at again (see
/// [`Daemon::look_at_host_dirs`]).
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Host directories looked at per turn of the event loop: about 6 µs each, so a look at
/// 1,024 hosts holds up an event by at most about 0.4 ms rather than 6 ms.
const LOOK_SLICE: usize = 64;

/// How often the event loop looks at a running reconcile's deferred files.
const RECONCILE_TICK: Duration = Duration::from_millis(100);

/// Runs the daemon until SIGTERM or SIGINT. Only set-up errors are returned.
pub fn run(config_path: &Path, user: Option<&str>) -> Result<(), Error> {
    // 1. Configuration and host directories. Every problem is reported before anything
    //    is started, and the directories stay open as descriptors from here on.
    let mut config = Config::load(config_path)?;
    if let Some(u) = user {
        let run_as = crate::privs::RunAs::lookup(u).map_err(|why| ConfigError::Invalid {
            path: config.source.clone(),
            problems: vec![crate::config::Problem::new(None, format!("--user: {why}"))],
        })?;
        config.user = Some(run_as);
    }
    // Every configured host gets its durable record number before any record is read
    // (written to disk first when a host is new; see host_numbers.rs).
    let numbers = Arc::new(HostNumbers::assign(
        &config.host_numbers,
        config.hosts.iter().map(|h| h.name.as_str()),
    )?);
    let hosts = Arc::new(HostSet::open(&config, &numbers)?);
    // A host directory missing now (eclean-dist removed an emptied DISTDIR while distlink
    // was stopped, or it is not made yet) is left out and picked up when it appears.
    let missing = crate::hosts::missing(&config);
    if hosts.is_empty() {
        return Err(crate::hosts::none_present(&config));
    }
    // With user:, a host directory that user cannot write could get no link at all.
    crate::privs::refuse_unwritable_dirs(&config, &hosts)?;
    for h in missing {
        log::warn!(
            "host {}: directory {} does not exist; starting without it, it is picked up when it appears",
            h.name,
            h.path.display()
        );
    }
    hosts.check_records()?;

    // 2. The status file, opened as root (the daemon keeps writing it whatever user it
    //    becomes) and locked: a second daemon on the same configuration stops here,
    //    naming the first.
    let uid = config.user.as_ref().map(|u| u.uid.as_raw());
    crate::status::prepare_dir(&config.state_file).map_err(|e| {
        Error::setup(
            format!("creating the directory of {}", config.state_file.display()),
            e,
        )
    })?;
    let status_file = StatusFile::open(&config.state_file, uid).map_err(|e| {
        Error::setup(
            format!("opening the status file {}", config.state_file.display()),
            e,
        )
    })?;
    if !status_file
        .lock()
        .map_err(|e| Error::setup(format!("locking {}", config.state_file.display()), e))?
    {
        let pid = status_file
            .read()
            .map(|t| crate::status::Snapshot::parse(&t).pid)
            .unwrap_or(0);
        return Err(Error::AlreadyRunning {
            pid,
            state_file: config.state_file.clone(),
        });
    }
    // Our pid at once, for a second daemon's message (the full status comes later).
    let starting = crate::status::Snapshot {
        pid: std::process::id(),
        state: "starting".into(),
        started: crate::status::now(),
        updated: crate::status::now(),
        config: config.source.display().to_string(),
        ..Default::default()
    };
    let _ = status_file.write(&starting.render());
    let textfile = config.prometheus_textfile.as_ref().and_then(|path| {
        TextFile::open(path, uid)
            .map_err(|e| {
                log::error!(
                    "cannot write the Prometheus textfile {}: {e}; carrying on without it",
                    path.display()
                )
            })
            .ok()
    });

    // 3. Block the control signals before any thread exists, so every thread inherits
    //    the mask and they only ever arrive through the signalfd the event loop polls.
    let signals = Signals::block()?;

    // 4. The fanotify group and its marks: the filesystem mark (needs CAP_SYS_ADMIN) or
    //    inode marks on the host directories, as `mark:` says (see fanotify.rs). From the
    //    moment it succeeds, every change in the host directories is queued for us, so
    //    anything written after READY=1 below cannot be missed.
    let watch = Watch::open(&hosts, &config)?;

    // 5. Drop every privilege linking does not need (see privs.rs), before any other
    //    thread exists: capabilities are per thread and inherited. The logging thread
    //    starts right after, with what is left.
    let kept = crate::privs::drop_privileges(config.user.as_ref())?;
    crate::logging::start_writer();
    log::info!(
        "privileges dropped: capabilities kept: {}; no_new_privs set{}",
        crate::privs::describe(&kept),
        config
            .user
            .as_ref()
            .map(|u| format!("; linking as user {}", u.name))
            .unwrap_or_default()
    );

    // 6. Only now the worker threads: they need no privilege beyond linking, and they
    //    start with the signal mask from step 3 and the capabilities from step 5.
    let workers =
        Workers::start(config.workers).map_err(|e| Error::setup("starting linker threads", e))?;
    let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
        .map_err(|e| Error::setup("creating an eventfd", e))?;
    let wake = Arc::new(wake);
    let (outcomes_tx, outcomes_rx) = crossbeam_channel::unbounded();

    let (followup_tx, followup_rx) = crossbeam_channel::unbounded();
    let mut daemon = Daemon {
        parents: crate::hosts::parent_keys(&config),
        reconcile: None,
        rescan: None,
        followup_tx,
        followup_rx,
        retries: Retries::default(),
        expiring: Default::default(),
        mounts: std::fs::File::open("/proc/self/mountinfo")
            .map_err(|e| log::warn!("cannot watch the mount table (/proc/self/mountinfo): {e}; a filesystem mounted over a host directory goes unnoticed"))
            .ok(),
        off_filesystem: Default::default(),
        pool_gone: false,
        looking: None,
        hosts_back: false,
        progress: Progress {
            started: crate::status::now(),
            ..Progress::default()
        },
        rules: NameRules::new(config.ignore.clone()),
        settle: Settle::new(config.settle),
        config,
        hosts,
        watch,
        signals,
        workers,
        reply: Reply::waking(outcomes_tx, Arc::clone(&wake)),
        outcomes: outcomes_rx,
        wake,
        counters: Arc::new(Counters::default()),
        pid: std::process::id() as i32,
        status_file,
        textfile,
        overflows: 0,
        bad_events: 0,
    };
    daemon.log_start();
    log::info!("fanotify marks: {}", daemon.watch.describe());

    // 7. Tell the service manager: the mark is in place.
    daemon.notify_ready();

    // 8. Catch up with what changed while distlink was not running. The mark is already
    //    in place, so events arriving during the scan are queued, not lost.
    daemon.request_reconcile("start-up");

    let result = daemon.event_loop();
    // A reconcile stops queueing; the jobs it queued are finished like any others.
    if let Some(r) = daemon.reconcile.take() {
        r.cancel.store(true, Ordering::Relaxed);
        let _ = r.thread.join();
    }
    daemon.write_status("stopping");
    let Daemon {
        workers,
        counters,
        status_file,
        reply,
        outcomes,
        ..
    } = daemon;
    // Shutdown: the sender is dropped, the workers finish every queued job, then exit;
    // their outcomes are reported here.
    drop(reply);
    if workers.shutdown() > 0 {
        log::error!("a linker thread panicked");
    }
    for o in outcomes.try_iter() {
        report(&o, Style::Log);
        counters.add(&o);
    }
    if let Ok(text) = status_file.read() {
        let _ = status_file.write(&text.replace("state=stopping", "state=stopped"));
    }
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
            crate::report::host_list(&names),
            self.config.workers,
            self.config.settle
        );
    }

    fn event_loop(&mut self) -> Result<(), Error> {
        let mut buf = vec![0u8; READ_BUF];
        // WatchdogSec=: ping at half the interval, as sd_watchdog_enabled(3) advises.
        let watchdog = crate::sd_notify::watchdog_interval().map(|d| d / 2);
        let mut pinged = Instant::now();
        let mut looked = Instant::now();
        loop {
            let mut deadline = Instant::now() + STATUS_EVERY;
            if let Some(every) = watchdog {
                deadline = deadline.min(pinged + every);
            }
            if let Some(d) = self.settle.next_deadline() {
                deadline = deadline.min(d);
            }
            if let Some(d) = self.retries.next_deadline() {
                deadline = deadline.min(d);
            }
            if let Some(d) = self.expiring.next_deadline() {
                deadline = deadline.min(d);
            }
            if self.reconcile.is_some() {
                deadline = deadline.min(Instant::now() + RECONCILE_TICK);
            }
            if self.looking.is_some() {
                deadline = Instant::now();
            }
            let deadline = Some(deadline);
            let timeout = poll_timeout(deadline);
            // The mount table only for POLLPRI (the file is always readable); without it,
            // the watch again, with no events asked for.
            let (mounts_fd, mounts_events) = match &self.mounts {
                Some(f) => (f.as_fd(), PollFlags::POLLPRI),
                None => (self.watch.fd(), PollFlags::empty()),
            };
            let mut fds = [
                PollFd::new(self.watch.fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                PollFd::new(mounts_fd, mounts_events),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::runtime("poll", e)),
            }
            let mounts_changed = self.mounts.is_some()
                && fds[3]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR));
            // Any host may be mounted over now: a look at every one, from the first
            // (in slices, as the 5-second look; one under way starts again).
            if mounts_changed {
                self.looking = Some(0);
            }
            self.drain_events(&mut buf)?;
            let _ = self.wake.read();
            self.take_outcomes();
            for control in self.signals.drain() {
                match control {
                    Control::Shutdown(sig) => {
                        log::info!(
                            "{sig}: finishing {} queued fan-outs, then exiting",
                            self.workers.backlog()
                        );
                        return Ok(());
                    }
                    Control::Reload => self.reload(),
                }
            }
            self.take_followups();
            self.finish_settled();
            self.retry_due();
            for name in self.expiring.due(Instant::now()) {
                self.look_at_pool_name(&name);
            }
            self.check_reconcile();
            crate::logging::flush_burst();
            if self
                .progress
                .last_written
                .is_none_or(|t| t.elapsed() >= STATUS_EVERY)
            {
                self.write_status("running");
            }
            // On its own clock: status writes come with every reconcile, and a client
            // can cause those back to back.
            if self.looking.is_none() && looked.elapsed() >= LOOK_EVERY {
                looked = Instant::now();
                self.looking = Some(0);
            }
            self.look_at_host_dirs();
            self.after_hosts_back();
            // The service manager's watchdog: the loop is alive.
            if let Some(every) = watchdog
                && pinged.elapsed() >= every
            {
                pinged = Instant::now();
                let _ = notify("WATCHDOG=1");
            }
        }
    }

    /// Reads and handles everything queued now.
    fn drain_events(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        loop {
            let n = match self.watch.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::runtime("reading fanotify events", e)),
            };
            let now = Instant::now();
            for item in event::parse(&buf[..n]) {
                match item {
                    Ok(ev) => self.handle(&ev, now),
                    Err(e) => {
                        // The rest of this buffer cannot be located: those events are
                        // lost, so look at the directories instead.
                        self.bad_events += 1;
                        log::error!(
                            "malformed fanotify event ({e}; {} so far); rescanning",
                            self.bad_events
                        );
                        self.request_reconcile("malformed events");
                    }
                }
            }
        }
    }

    fn handle(&mut self, ev: &event::Event<'_>, now: Instant) {
        let routing = Routing {
            own_pid: self.pid,
            hosts: self.hosts.by_key(),
            parents: &self.parents,
            rules: &self.rules,
        };
        match classify(ev, &routing) {
            Action::Ignore => {}
            Action::Overflow => {
                self.overflows += 1;
                let limit = match self.watch.limit {
                    Some(n) => {
                        format!("the queue limit, fs.fanotify.max_queued_events = {n}, was hit")
                    }
                    None => "the kernel dropped events".to_owned(),
                };
                log::warn!(
                    "fanotify queue overflowed ({limit}); events were lost, rescanning ({} overflows so far)",
                    self.overflows
                );
                self.request_reconcile("queue overflow");
            }
            Action::HostDirs(list) => {
                for i in list {
                    self.host_dir_changed(i);
                }
            }
            Action::Gone { host, name } => {
                self.settle.forget(self.hosts.get(host).id, name);
                // Perhaps the last host name of a file: the pool's goes too.
                self.look_at_pool_name(name);
            }
            Action::Complete { host, name } => {
                self.settle.forget(self.hosts.get(host).id, name);
                self.submit(host, name.into(), Trigger::Renamed);
            }
            Action::Changed { host, name } => {
                // Events merge (a create and a delete of one name can arrive as one): what
                // is there now decides. Not a regular file now: nothing to wait for; if
                // it becomes one, that raises another event.
                let id = self.hosts.get(host).id;
                match self.hosts.file_state(host, name) {
                    Some(state) => self.settle.touch(id, name, now, Some(state)),
                    None => {
                        self.settle.forget(id, name);
                        // Perhaps Portage asking for the pool's file (see pool.rs).
                        if self.hosts.pool().is_some() && self.hosts.is_symlink(host, name) {
                            self.submit(host, name.into(), Trigger::Symlink);
                        }
                        // A deletion merged into this event may have been the last
                        // host name of a file.
                        self.look_at_pool_name(name);
                    }
                }
            }
        }
    }

    fn submit(&self, src: usize, name: Box<[u8]>, trigger: Trigger) {
        log::debug!(
            "{}/{}: complete ({trigger:?})",
            self.hosts.get(src).name,
            Name(&name)
        );
        self.workers.submit(Job {
            candidate: Candidate {
                hosts: Arc::clone(&self.hosts),
                src,
                name,
                trigger,
                present: Default::default(),
                settle: None,
                dry_run: false,
                merge: self.config.merge.then_some(self.config.settle),
            },
            reply: self.reply.clone(),
        });
    }

    /// Logs and counts what the workers did with live fan-outs.
    fn take_outcomes(&mut self) {
        let now = Instant::now();
        for o in self.outcomes.try_iter() {
            report(&o, Style::Log);
            self.counters.add(&o);
            self.retries.note(&o, now);
            // Not complete yet (a downloader's control file beside it): wait again.
            if o.fan_out().is_some_and(|f| f.deferred) {
                let state = self
                    .hosts
                    .find(o.src)
                    .and_then(|i| self.hosts.file_state(i, &o.name));
                self.settle.touch(o.src, &o.name, now, state);
            }
        }
    }

    /// The pool's `name`: removed if no host holds its inode any more and `keep` is over,
    /// or looked at again when it will be (see `pool_ops.rs`).
    fn look_at_pool_name(&mut self, name: &[u8]) {
        use crate::pool_ops::{Expired, expire};
        if self.hosts.pool().is_none() {
            return;
        }
        let (now, now_instant) = (std::time::SystemTime::now(), Instant::now());
        let e = expire(&self.hosts, name, now);
        crate::report::pool_expired(name, &e);
        match e {
            Expired::Removed(size) => {
                self.counters.pool_removed.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .pool_removed_bytes
                    .fetch_add(size, Ordering::Relaxed);
            }
            Expired::At(t) => self
                .expiring
                .schedule(name, crate::pool::instant_of(t, now, now_instant)),
            Expired::Busy | Expired::Failed(_) => {
                self.expiring.schedule(name, now_instant + e.retry_after())
            }
            Expired::Held => {}
        }
    }

    /// Failed fan-outs whose wait is over: try them again.
    fn retry_due(&mut self) {
        let now = Instant::now();
        for (host, name) in self.retries.due(now) {
            match self.hosts.find(host) {
                Some(i) => self.submit(i, name, Trigger::Retry),
                // Its directory is gone for now.
                None => self.retries.postpone(&(host, name), now),
            }
        }
    }

    /// Files whose settle time is over and that did not change: fan them out.
    fn finish_settled(&mut self) {
        let hosts = Arc::clone(&self.hosts);
        let done = self.settle.due(Instant::now(), |host, name| {
            hosts.file_state(hosts.find(host)?, name)
        });
        for (host, name) in done {
            if let Some(i) = self.hosts.find(host) {
                self.submit(i, name, Trigger::Settled);
            }
        }
    }

    /// SIGHUP: re-read the configuration; keep the running one if the new one is bad.
    fn reload(&mut self) {
        log::info!("SIGHUP: re-reading {}", self.config.source.display());
        // Type=notify-reload wants RELOADING=1 with the monotonic time, then READY=1.
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        let _ = notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
        let loaded = Config::load(&self.config.source)
            .map_err(Error::from)
            .and_then(|config| {
                // Hosts whose directory is missing right now are left out, not an error.
                // With every directory gone there is no filesystem to compare: the running
                // mark stays, and directories that come back are checked against it.
                let numbers = Arc::new(HostNumbers::assign(
                    &config.host_numbers,
                    config.hosts.iter().map(|h| h.name.as_str()),
                )?);
                let hosts = HostSet::open(&config, &numbers)?.or_filesystem_of(&self.hosts);
                // A new filesystem needs a new group; the old one goes when the new one is
                // in. On the same filesystem, directory marks are added for new hosts.
                let watch = if !self.watch.covers(hosts.dev) {
                    Some(Watch::open(&hosts, &config)?)
                } else {
                    self.watch.cover(&hosts, &config)?;
                    None
                };
                Ok((config, hosts, watch))
            });
        match loaded {
            Err(e) => log::error!(
                "reload failed, keeping the running configuration: {}",
                crate::error_chain(&e)
            ),
            Ok((config, hosts, watch)) => {
                for h in crate::hosts::missing(&config) {
                    log::warn!(
                        "host {}: directory {} does not exist; picked up when it appears",
                        h.name,
                        h.path.display()
                    );
                }
                if let Some(watch) = watch {
                    self.watch = watch;
                    log::info!("fanotify marks: {}", self.watch.describe());
                } else if config.mark != self.config.mark {
                    log::warn!("mark: a change applies after a restart");
                }
                // Files already waiting keep their deadline; the new period applies next.
                self.settle.set_period(config.settle);
                self.rules = NameRules::new(config.ignore.clone());
                let added: Vec<&str> = hosts
                    .iter()
                    .filter(|h| !self.hosts.contains(&h.name))
                    .map(|h| &*h.name)
                    .collect();
                let removed: Vec<&str> = self
                    .hosts
                    .iter()
                    .filter(|h| !hosts.contains(&h.name))
                    .map(|h| &*h.name)
                    .collect();
                for h in self.hosts.iter().filter(|h| hosts.lookup(&h.key).is_none()) {
                    self.watch.uncover_dir(h.dir.as_fd());
                }
                if let Err(e) = self.watch.cover(&hosts, &config) {
                    log::warn!(
                        "re-marking the host directories: {}",
                        crate::error_chain(&e)
                    );
                }
                if !removed.is_empty() {
                    log::info!(
                        "hosts removed (their directories are left as they are): {}",
                        crate::report::host_list(&removed)
                    );
                }
                let pool_changed = config.pool != self.config.pool;
                let added_any = !added.is_empty();
                if added_any {
                    log::info!(
                        "hosts added: {}; they get every file in the pool",
                        crate::report::host_list(&added)
                    );
                }
                self.hosts = Arc::new(hosts);
                self.parents = crate::hosts::parent_keys(&config);
                if config.workers != self.config.workers {
                    log::warn!(
                        "workers: the new count ({}) applies after a restart",
                        config.workers
                    );
                }
                if config.state_file != self.config.state_file
                    || config.prometheus_textfile != self.config.prometheus_textfile
                {
                    log::warn!("state_file, prometheus_textfile: a change applies after a restart");
                }
                if config.user != self.config.user {
                    log::warn!(
                        "user: a change applies after a restart (privileges are already dropped)"
                    );
                }
                let mut config = config;
                config.user = self.config.user.clone();
                self.config = config;
                self.log_start();
                if added_any {
                    self.request_reconcile("hosts added");
                } else if pool_changed {
                    self.request_reconcile("pool changed");
                }
            }
        }
        self.notify_ready();
    }

    /// READY=1 with the current host count (at start-up and after every reload).
    fn notify_ready(&self) {
        let present = self.hosts.len();
        let configured = self.config.hosts.len();
        let mut status = format!("READY=1\nSTATUS=watching {present} host directories");
        if present < configured {
            status.push_str(&format!(" ({} missing)", configured - present));
        }
        if let Err(e) = notify(&status) {
            log::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
        }
    }

    /// A directory event next to host directory `i` of the configuration: look at what
    /// is there now (events merge; reality decides).
    fn host_dir_changed(&mut self, i: usize) {
        let hc = self.config.hosts[i].clone();
        match open_host(&hc, &self.hosts.numbers) {
            Ok((host, dev, mount_id)) => {
                let current = self
                    .hosts
                    .position(&hc.name)
                    .map(|i| self.hosts.get(i).key.clone());
                if current.as_deref() == Some(&*host.key) {
                    return;
                }
                if !self.hosts.fits(dev, mount_id) {
                    // A filesystem mounted over the directory (or over a parent), or
                    // the directory re-created elsewhere: links through the old
                    // descriptor would land in a directory the host no longer sees.
                    let was_in = self.hosts.contains(&hc.name);
                    if was_in {
                        self.drop_host(&hc.name);
                    }
                    if was_in || current.is_none() && !self.off_filesystem.contains(&hc.name) {
                        log::error!(
                            "host {}: {} is now another filesystem or mount (mounted over, or re-created elsewhere); the host is treated as gone until the path leads back to the shared filesystem",
                            hc.name,
                            hc.path.display()
                        );
                    }
                    self.off_filesystem.insert(hc.name.clone());
                    return;
                }
                self.off_filesystem.remove(&hc.name);
                // Under directory marks the new directory (a new inode) needs its mark,
                // and a re-created parent too; the reconcile below covers what was
                // written before.
                if let Err(e) = self.watch.cover_dir(host.dir.as_fd()) {
                    log::error!(
                        "host {}: cannot mark {} ({e}); its new downloads are fanned out only by reconciles",
                        hc.name,
                        hc.path.display()
                    );
                }
                log::info!(
                    "host {}: directory {} is back; it gets new completions from now on (not the files it cleaned)",
                    hc.name,
                    hc.path.display()
                );
                let old = self
                    .hosts
                    .position(&hc.name)
                    .map(|i| Arc::clone(&self.hosts.hosts_arc(i)));
                self.hosts = Arc::new(self.hosts.with(host, &self.config.hosts));
                if let Some(old) = old
                    && self.hosts.lookup(&old.key).is_none()
                {
                    self.watch.uncover_dir(old.dir.as_fd());
                }
                self.hosts_back = true;
            }
            // The kernel refused the look itself (no descriptor left, a sandbox): says
            // nothing about the directory; the host stays as it is.
            Err(crate::hosts::OpenError::System { what, source }) => {
                log::debug!(
                    "host {}: cannot look at its directory now: {what}: {source}",
                    hc.name
                );
            }
            Err(why) => {
                if self.hosts.contains(&hc.name) {
                    log::warn!(
                        "host {}: directory {} is gone ({why}); distlink carries on and picks it up again when it is re-created",
                        hc.name,
                        hc.path.display()
                    );
                    self.drop_host(&hc.name);
                }
            }
        }
    }

    /// Once per turn of the loop after host directories came back, not once per host
    /// (each of these passes over every host: 1,024 hosts back at once, after a mount
    /// over their parent went away, held the loop for seconds): every directory and
    /// parent marked again, the parents' routing, and a reconcile.
    fn after_hosts_back(&mut self) {
        if !std::mem::take(&mut self.hosts_back) {
            return;
        }
        if let Err(e) = self.watch.cover(&self.hosts, &self.config) {
            log::warn!(
                "re-marking the host directories: {}",
                crate::error_chain(&e)
            );
        }
        self.parents = crate::hosts::parent_keys(&self.config);
        self.request_reconcile("host directory back");
    }

    /// Takes host `name` out of the set (its directory vanished or leads elsewhere).
    fn drop_host(&mut self, name: &str) {
        let old = self.hosts.position(name).map(|i| self.hosts.hosts_arc(i));
        self.hosts = Arc::new(self.hosts.without(name));
        if let Some(old) = old
            && self.hosts.lookup(&old.key).is_none()
        {
            self.watch.uncover_dir(old.dir.as_fd());
        }
    }

    /// Every configured host directory: look again at what its path leads to. Events
    /// normally say when one appears or vanishes; this catches a parent that was itself
    /// re-created or moved away (under directory marks its mark went with the old
    /// inode), or that could not be marked. [`LOOK_SLICE`] of them per call, from where
    /// the look under way is; the pool at the end.
    fn look_at_host_dirs(&mut self) {
        let Some(from) = self.looking else {
            return;
        };
        let to = (from + LOOK_SLICE).min(self.config.hosts.len());
        for i in from..to {
            self.host_dir_changed(i);
        }
        if to < self.config.hosts.len() {
            self.looking = Some(to);
        } else {
            self.looking = None;
            self.look_at_pool_dir();
        }
    }

    /// The pool's path: re-opened when it leads to another directory (moved away, or
    /// removed and re-created), so links go where clients look; said once when it is
    /// gone.
    fn look_at_pool_dir(&mut self) {
        let (Some(pc), Some(pool)) = (self.config.pool.clone(), self.hosts.pool()) else {
            return;
        };
        let first = self
            .config
            .hosts
            .iter()
            .find(|h| self.hosts.contains(&h.name))
            .map(|h| (h, self.hosts.dev, self.hosts.mount_id));
        match crate::hosts::open_pool(&pc, first) {
            Ok(now) if now.dir.key == pool.dir.key => self.pool_gone = false,
            Ok(now) => {
                log::warn!(
                    "pool: {} is another directory now (moved away, or re-created); linking into the new one",
                    pc.dir.display()
                );
                self.pool_gone = false;
                self.hosts = Arc::new(self.hosts.with_pool(now));
                self.request_reconcile("pool directory replaced");
            }
            Err(crate::hosts::OpenError::System { .. }) => {}
            Err(why) => {
                if !self.pool_gone {
                    log::error!(
                        "pool: {why}; fan-outs into it fail and are tried again until it is back"
                    );
                }
                self.pool_gone = true;
            }
        }
    }

    /// Starts a reconcile now, or once the running one ends.
    fn request_reconcile(&mut self, why: &str) {
        if self.reconcile.is_some() {
            self.rescan.get_or_insert_with(|| why.to_owned());
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let request = Request {
            label: why.to_owned(),
            hosts: Arc::clone(&self.hosts),
            rules: self.rules.clone(),
            settle: self.config.settle,
            dry_run: false,
            merge: self.config.merge.then_some(self.config.settle),
        };
        let (jobs, flag, counters, defer) = (
            self.workers.sender(),
            Arc::clone(&cancel),
            Arc::clone(&self.counters),
            self.followup_tx.clone(),
        );
        let space_of = self
            .config
            .prometheus_textfile
            .is_some()
            .then(|| self.config.clone());
        let spawned = std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || {
                let summary = crate::reconcile::run(&request, &jobs, &flag, &mut |o| {
                    report(o, Style::Log);
                    counters.add(o);
                    // May still be written: to the event loop's settle tracker; failed: to
                    // its retries.
                    if o.fan_out().is_some_and(|f| f.deferred) {
                        let _ = defer.send(Followup::Settle((o.src, o.name.clone())));
                    } else if crate::retry::verdict(o) == Verdict::Again {
                        let _ = defer.send(Followup::Retry((o.src, o.name.clone())));
                    }
                });
                // Where the bytes are now, for the textfile (no byte comparisons).
                let space = space_of.and_then(|c| crate::cmd::space::scan(&c, false).ok());
                (summary, space.map(|f| f.report))
            });
        match spawned {
            Ok(thread) => self.reconcile = Some(Reconcile { cancel, thread }),
            Err(e) => log::error!("cannot start a reconcile thread: {e}"),
        }
    }

    /// Joins a finished reconcile and starts the one asked for meanwhile.
    fn check_reconcile(&mut self) {
        if self
            .reconcile
            .as_ref()
            .is_some_and(|r| r.thread.is_finished())
        {
            if let Some(r) = self.reconcile.take() {
                match r.thread.join() {
                    Ok((summary, space)) => {
                        let p = &mut self.progress;
                        if space.is_some() {
                            p.space = space;
                        }
                        p.reconciles += 1;
                        p.last_reconcile = crate::status::now();
                        p.last_summary = summary.to_string();
                        p.pool_files = summary.pool_files;
                        p.pool_bytes = summary.pool_bytes;
                        let c = &self.counters;
                        c.pool_removed
                            .fetch_add(summary.pool_removed, Ordering::Relaxed);
                        c.pool_removed_bytes
                            .fetch_add(summary.pool_removed_bytes, Ordering::Relaxed);
                        let (now, now_instant) = (std::time::SystemTime::now(), Instant::now());
                        for (name, at) in &summary.pool_expiring {
                            self.expiring
                                .schedule(name, crate::pool::instant_of(*at, now, now_instant));
                        }
                        self.write_status("running");
                    }
                    Err(_) => log::error!("the reconcile thread panicked"),
                }
            }
            if let Some(why) = self.rescan.take() {
                self.request_reconcile(&why);
            }
        }
    }

    /// Rewrites the status file (and the Prometheus textfile, if configured).
    fn write_status(&mut self, state: &str) {
        let c = &self.counters;
        let snap = crate::status::Snapshot {
            pid: std::process::id(),
            state: state.to_owned(),
            started: self.progress.started,
            updated: crate::status::now(),
            config: self.config.source.display().to_string(),
            marks: self.watch.describe(),
            hosts: self
                .config
                .hosts
                .iter()
                .map(|h| {
                    (
                        h.name.clone(),
                        h.path.display().to_string(),
                        self.hosts.contains(&h.name),
                    )
                })
                .collect(),
            files: c.files.load(Ordering::Relaxed),
            links: c.links.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            merged: c.merged.load(Ordering::Relaxed),
            merged_bytes: c.merged_bytes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            overflows: self.overflows,
            settling: self.settle.len() as u64,
            retrying: self.retries.len() as u64,
            reconciles: self.progress.reconciles,
            pool_files: self.progress.pool_files,
            pool_bytes: self.progress.pool_bytes,
            last_reconcile: self.progress.last_reconcile,
            last_reconcile_summary: self.progress.last_summary.clone(),
            pool_dir: self
                .config
                .pool
                .as_ref()
                .map(|p| {
                    format!(
                        "{} (clients mount it at {}; keep {})",
                        p.dir.display(),
                        p.client_path.display(),
                        crate::display::duration(p.keep)
                    )
                })
                .unwrap_or_default(),
            pool_taken: c.pool_taken.load(Ordering::Relaxed),
            pool_taken_bytes: c.pool_taken_bytes.load(Ordering::Relaxed),
            pool_removed: c.pool_removed.load(Ordering::Relaxed),
            pool_removed_bytes: c.pool_removed_bytes.load(Ordering::Relaxed),
            pool_kept: self.expiring.len() as u64,
        };
        let first = self.progress.last_written.is_none();
        self.progress.last_written = Some(Instant::now());
        if let Err(e) = self.status_file.write(&snap.render())
            && first
        {
            log::error!(
                "cannot write the status file {}: {e}",
                self.config.state_file.display()
            );
        }
        if let (Some(path), Some(textfile)) = (&self.config.prometheus_textfile, &self.textfile)
            && let Err(e) = textfile.write(&format!(
                "{}{}",
                snap.prometheus(),
                self.progress
                    .space
                    .as_ref()
                    .map(crate::space::Report::prometheus)
                    .unwrap_or_default()
            ))
            && first
        {
            log::error!(
                "cannot write the Prometheus textfile {}: {e}",
                path.display()
            );
        }
    }

    /// Files a reconcile found still changing go through the settle rule; failed ones
    /// are tried again.
    fn take_followups(&mut self) {
        let now = Instant::now();
        while let Ok(f) = self.followup_rx.try_recv() {
            match f {
                Followup::Settle((host, name)) => {
                    let state = self
                        .hosts
                        .find(host)
                        .and_then(|i| self.hosts.file_state(i, &name));
                    self.settle.touch(host, &name, now, state);
                }
                Followup::Retry((host, name)) => {
                    self.retries.apply(host, &name, Verdict::Again, now)
                }
            }
        }
    }
}
