//! Helpers for the integration tests: throw-away filesystems, the real daemon binary
//! started with a readiness socket, deadlines instead of sleeps, and a dump of the
//! daemon's log and the directory trees when a test fails.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_distlink");

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Longer than the `settle: 300ms` most tests configure: a file quiet this long is
/// settled.
pub const QUIET: Duration = Duration::from_millis(350);

/// Root tests need root. In CI (which is root) a missing privilege is a failure, never a
/// silent skip; elsewhere the test says it was skipped.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("integration tests must run as root (mounts, fanotify filesystem marks)");
    }
    eprintln!("SKIPPED: not root (mounts and fanotify filesystem marks need root)");
    false
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Tools `.ci/run` installs are required in CI; elsewhere a missing one skips loudly.
pub fn require_tool(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is missing (.ci/run installs it)"
    );
    eprintln!("SKIPPED: {tool} is not installed");
    false
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory with its own filesystems mounted in it; unmounted and removed on
/// drop.
pub struct Scratch {
    pub root: PathBuf,
    mounts: Vec<PathBuf>,
    /// `guard.sh`: cleans up if this process dies without running `Drop`.
    guard: Option<Child>,
    /// Where the host directories go, below `root` (`fs`, or a subvolume in it).
    fs_rel: PathBuf,
    /// `mark:` for [`Scratch::config_for`] (`None`: the default, auto).
    pub mark: Option<&'static str>,
}

impl Scratch {
    /// An empty scratch directory (nothing mounted yet).
    pub fn new(test: &str) -> Scratch {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let root =
            std::env::temp_dir().join(format!("distlink-it-{}-{n}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let guard = Command::new("setsid")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/integration/guard.sh"))
            .arg(std::process::id().to_string())
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Scratch {
            root,
            mounts: Vec::new(),
            guard,
            fs_rel: PathBuf::from("fs"),
            mark: None,
        }
    }

    /// The same scratch area with `mark: strategy` in its configurations.
    pub fn marking(mut self, strategy: &'static str) -> Scratch {
        self.mark = Some(strategy);
        self
    }

    /// A loop-mounted btrfs with the host directories at its top level.
    pub fn btrfs(test: &str) -> Scratch {
        Scratch::image(test, 256, "mkfs.btrfs", &["-q", "-f"])
    }

    /// A loop-mounted btrfs with the host directories in the subvolume `distfiles`, the
    /// filesystem mounted at its top level (the layout that keeps distfiles out of
    /// snapshots).
    pub fn btrfs_subvolume(test: &str) -> Scratch {
        let mut s = Scratch::btrfs(test);
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(s.fs().join("distfiles")));
        s.fs_rel = PathBuf::from("fs/distfiles");
        s
    }

    /// A loop-mounted btrfs mounted with `subvol=distfiles`: the mount root is itself a
    /// subvolume (as `/` is with `subvol=@`).
    pub fn btrfs_mounted_subvolume(test: &str) -> Scratch {
        let mut s = Scratch::btrfs(test);
        let fs = s.fs();
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(fs.join("distfiles")));
        run(Command::new("umount").arg(&fs));
        run(Command::new("mount")
            .args(["-o", "loop,subvol=distfiles"])
            .arg(s.root.join("fs.img"))
            .arg(&fs));
        s.mounts.dedup();
        s
    }

    /// A scratch directory with a fresh tmpfs at `fs/`.
    pub fn tmpfs(test: &str) -> Scratch {
        let mut s = Scratch::new(test);
        let mnt = s.mount_tmpfs("fs");
        assert_eq!(mnt, s.fs());
        s
    }

    /// A scratch directory with a fresh loop-mounted ext4 image at `fs/`.
    pub fn ext4(test: &str, megabytes: u64) -> Scratch {
        Scratch::image(test, megabytes, "mkfs.ext4", &["-q", "-F"])
    }

    /// ext4 made with 1 KiB blocks: all of an inode's extended attributes must fit one
    /// block.
    pub fn ext4_1k(test: &str) -> Scratch {
        Scratch::image(test, 64, "mkfs.ext4", &["-q", "-F", "-b", "1024"])
    }

    /// A scratch directory with a fresh loop-mounted xfs image at `fs/` (xfs wants at
    /// least 300 MiB; the image is sparse).
    pub fn xfs(test: &str) -> Scratch {
        Scratch::image(test, 320, "mkfs.xfs", &["-q", "-f"])
    }

    fn image(test: &str, megabytes: u64, mkfs: &str, args: &[&str]) -> Scratch {
        let mut s = Scratch::new(test);
        let img = s.root.join("fs.img");
        fs::File::create(&img)
            .unwrap()
            .set_len(megabytes << 20)
            .unwrap();
        run(Command::new(mkfs).args(args).arg(&img));
        let mnt = s.root.join("fs");
        fs::create_dir_all(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        s.mounts.push(mnt);
        s
    }

    /// Mounts another tmpfs at `root/rel`.
    pub fn mount_tmpfs(&mut self, rel: &str) -> PathBuf {
        self.mount_tmpfs_with(rel, "size=512m")
    }

    /// Mounts a tmpfs with mount options `opts` at `root/rel`.
    pub fn mount_tmpfs_with(&mut self, rel: &str, opts: &str) -> PathBuf {
        let mnt = self.root.join(rel);
        fs::create_dir_all(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "distlink-it"])
            .arg(&mnt));
        self.mounts.push(mnt.clone());
        mnt
    }

    /// Bind-mounts `src` at `root/rel`.
    pub fn bind(&mut self, src: &Path, rel: &str) -> PathBuf {
        let mnt = self.root.join(rel);
        fs::create_dir_all(&mnt).unwrap();
        run(Command::new("mount").arg("--bind").arg(src).arg(&mnt));
        self.mounts.push(mnt.clone());
        mnt
    }

    /// The main test filesystem.
    pub fn fs(&self) -> PathBuf {
        self.root.join(&self.fs_rel)
    }

    /// Creates `n` host directories `fs/host0` … and returns them.
    pub fn hosts(&self, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = self.fs().join(format!("host{i}"));
                fs::create_dir_all(&p).unwrap();
                p
            })
            .collect()
    }

    /// Writes a configuration file (outside the watched filesystem).
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.root.join("distlink.yaml");
        fs::write(&p, text).unwrap();
        p
    }

    /// The `host_numbers:` line giving this scratch area its own numbers file.
    pub fn numbers_line(&self) -> String {
        format!("host_numbers: {}/host-numbers\n", self.root.display())
    }

    /// A configuration for `hosts` plus `extra` YAML lines.
    pub fn config_for(&self, hosts: &[PathBuf], extra: &str) -> PathBuf {
        let mut text = String::from("hosts:\n");
        for (i, h) in hosts.iter().enumerate() {
            text.push_str(&format!("  host{i}: {}\n", h.display()));
        }
        if !extra.contains("state_file:") {
            text.push_str(&format!("state_file: {}/run/status\n", self.root.display()));
        }
        if !extra.contains("host_numbers:") {
            text.push_str(&self.numbers_line());
        }
        if let Some(mark) = self.mark
            && !extra.contains("mark:")
        {
            text.push_str(&format!("mark: {mark}\n"));
        }
        text.push_str(extra);
        self.config(&text)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let _ = g.kill();
            let _ = g.wait();
        }
        for m in self.mounts.iter().rev() {
            let ok = Command::new("umount")
                .arg(m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `ls -li`-like listing of every directory below `dir`, for failure reports.
pub fn tree(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        out.push_str(&format!("{}:\n", d.display()));
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            out.push_str(&format!(
                "  {:>8} {:o} nlink={} size={} {}\n",
                m.ino(),
                m.mode(),
                m.nlink(),
                m.len(),
                e.file_name().to_string_lossy().escape_debug()
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// The daemon under test: the real binary, started with its own readiness socket.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    dump: Vec<PathBuf>,
}

impl Daemon {
    /// Starts `distlink run --config CONFIG` and waits for `READY=1`. `dump` lists the
    /// directories to show if the test fails.
    pub fn start(scratch: &Scratch, config: &Path) -> Daemon {
        Daemon::start_with(scratch, config, &[])
    }

    pub fn start_with(scratch: &Scratch, config: &Path, args: &[&str]) -> Daemon {
        Daemon::start_env(scratch, config, args, &[])
    }

    /// Starts the daemon with extra arguments after `run` and extra environment.
    pub fn start_env(
        scratch: &Scratch,
        config: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Daemon {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let sock_path = scratch.root.join(format!("notify-{n}.sock"));
        let log = scratch.root.join(format!("daemon-{n}.log"));
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        // The daemon may have switched to another user (`user:`) when it reports.
        fs::set_permissions(
            &sock_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let child = Command::new(BIN)
            .args(["--log-level", "debug", "run", "--config"])
            .arg(config)
            .args(args)
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(fs::File::create(scratch.root.join(format!("daemon-{n}.out"))).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn distlink");
        let mut d = Daemon {
            child: Some(child),
            log,
            dump: vec![scratch.fs()],
        };
        let end = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(len) = sock.recv(&mut buf)
                && buf[..len].split(|&b| b == b'\n').any(|l| l == b"READY=1")
            {
                break;
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("distlink exited before READY=1 ({status}):\n{}", d.log());
            }
            assert!(
                Instant::now() < end,
                "no READY=1 within {DEADLINE:?}:\n{}",
                d.log()
            );
        }
        let _ = fs::remove_file(&sock_path);
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The daemon's stderr, which outlives it.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(DEADLINE, || self.log().contains(needle))
    }

    /// Waits for the start-up reconcile's summary, and checks that it left nothing to
    /// settle. A file changed within `settle` is deferred and fanned out later: a check
    /// right after the summary that a deletion was not undone would come too early for
    /// it. Tests that make such checks let the files be quiet first ([`all_quiet`]).
    pub fn start_up_decided(&self) -> bool {
        self.reconcile_decided("start-up")
    }

    /// The same for the reconcile started for `why` (its label in the log).
    pub fn reconcile_decided(&self, why: &str) -> bool {
        let done = format!("reconcile ({why}) done");
        if !self.wait_log(&done) {
            return false;
        }
        let log = self.log();
        let line = log.lines().find(|l| l.contains(&done)).unwrap_or_default();
        assert!(
            line.contains(", 0 deferred to settle"),
            "the {why} reconcile deferred files to settle; a check now would come before \
             their fan-out (let them be quiet first): {line}"
        );
        true
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// SIGKILL: a crash at an arbitrary instant.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends `sig`, then waits for the exit status.
    pub fn stop_with(mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        self.signal(sig);
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                panic!(
                    "distlink did not exit within {DEADLINE:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "---- distlink log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
            for d in &self.dump {
                let _ = writeln!(err, "---- tree ----\n{}", tree(d));
            }
        }
    }
}

/// Whether `name` in every one of `dirs` is the same inode as `reference`.
pub fn linked_everywhere(reference: &Path, dirs: &[PathBuf], name: &OsStr) -> bool {
    let Ok(want) = reference.symlink_metadata() else {
        return false;
    };
    dirs.iter().all(|d| {
        d.join(name)
            .symlink_metadata()
            .is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev())
    })
}

/// Waits until `dir/name` is linked into every one of `hosts`.
pub fn wait_linked(hosts: &[PathBuf], src: usize, name: impl AsRef<OsStr>) -> bool {
    let name = name.as_ref();
    let reference = hosts[src].join(name);
    wait_until(DEADLINE, || linked_everywhere(&reference, hosts, name))
}

/// A Portage-style download into `dir`: write `NAME.__download__`, close, rename.
pub fn portage_download(dir: &Path, name: impl AsRef<OsStr>, content: &[u8]) {
    let name = name.as_ref();
    let mut tmp = name.to_os_string();
    tmp.push(".__download__");
    fs::write(dir.join(&tmp), content).unwrap();
    fs::rename(dir.join(&tmp), dir.join(name)).unwrap();
}

/// Names (as bytes) in `dir`.
pub fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// One name appearing: (directory index, name, when).
pub type Seen = (usize, Vec<u8>, Instant);

/// Every name that appears (created or moved in) in the watched directories, with when,
/// recorded with inotify from a thread, so a test can assert that something never
/// appeared, not just that it is absent at the end.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn new(dirs: &[PathBuf]) -> Recorder {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        let mut wds = Vec::new();
        for d in dirs {
            wds.push(
                ino.add_watch(d, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    .unwrap(),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            loop {
                let done = stop2.load(Ordering::SeqCst);
                while let Ok(events) = ino.read_events() {
                    let now = Instant::now();
                    let mut seen = seen2.lock().unwrap();
                    for ev in events {
                        if let (Some(i), Some(name)) =
                            (wds.iter().position(|w| *w == ev.wd), ev.name)
                        {
                            seen.push((i, name.as_bytes().to_vec(), now));
                        }
                    }
                }
                if done {
                    return;
                }
                let mut fds = [nix::poll::PollFd::new(
                    ino.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u8));
            }
        });
        Recorder {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Everything seen so far: (directory index, name, when).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// When `name` first appeared in directory `dir`.
    ///
    /// Waits (with the deadline) for the recording thread to have read it: a test that
    /// saw the name with `stat` may get here before the thread read the event.
    pub fn first(&self, dir: usize, name: &[u8]) -> Option<Instant> {
        let find = || {
            self.seen()
                .into_iter()
                .find(|(d, n, _)| *d == dir && n == name)
                .map(|(_, _, t)| t)
        };
        wait_until(DEADLINE, || find().is_some());
        find()
    }

    /// Stops recording and returns everything seen.
    pub fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `distlink check --config CONFIG`; returns (exit code, stdout + stderr).
/// `distlink status --config CONFIG`: its exit code and output (stdout, then stderr).
pub fn status(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn check(config: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The fan-out record (`user.distlink`) of the file at `path`, decoded by
/// [`distlink::record::Record::decode`].
pub fn record(path: &Path) -> Option<distlink::record::Record> {
    let value = xattr(path, "user.distlink")?;
    // Whatever numbering wrote it: the tag follows the 9-byte magic.
    let tag = u32::from_le_bytes(value.get(9..13)?.try_into().ok()?);
    let numbers = distlink::host_numbers::HostNumbers::parse(&format!("tag {tag:08x}\n")).ok()?;
    match distlink::record::Record::decode(&value, &numbers) {
        distlink::record::Decoded::Record(r) => Some(r),
        _ => None,
    }
}

/// Host numbers the fan-out record of `path` lists for its name.
pub fn recorded_hosts(path: &Path) -> Vec<u16> {
    let name = path.file_name().unwrap().as_bytes();
    record(path)
        .and_then(|r| r.hosts_of(name).map(<[u16]>::to_vec))
        .unwrap_or_default()
}

/// The raw value of extended attribute `name` on `path`.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = distlink::sys::getxattr(&path, &name, &mut buf).ok()??;
    buf.truncate(n);
    Some(buf)
}

/// Sets a sysctl for the lifetime of the guard, restoring the old value on drop (also
/// when the test fails).
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    pub fn set(path: &str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).unwrap();
        fs::write(path, value).unwrap();
        Sysctl {
            path: PathBuf::from(path),
            old,
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, self.old.trim());
    }
}

/// A daemon running on `n` fresh host directories of a scratch filesystem.
pub struct Setup {
    // Field order is drop order: the daemon goes before its filesystem is unmounted.
    pub daemon: Daemon,
    pub hosts: Vec<PathBuf>,
    pub scratch: Scratch,
}

/// Makes `n` host directories on `scratch`, a configuration with `extra` lines, and
/// starts the daemon.
pub fn setup(scratch: Scratch, n: usize, extra: &str) -> Setup {
    let hosts = scratch.hosts(n);
    let config = scratch.config_for(&hosts, extra);
    let daemon = Daemon::start(&scratch, &config);
    Setup {
        daemon,
        hosts,
        scratch,
    }
}

/// A `Cap*:` or other line of `/proc/PID/status`, parsed as hex where it is a mask.
pub fn proc_status(pid: i32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

pub fn cap_mask(pid: i32, key: &str) -> u64 {
    u64::from_str_radix(&proc_status(pid, key), 16).unwrap()
}

/// A child process killed when dropped (a test that fails leaves nothing running).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test run under both mark strategies (see `fanotify.rs`), as
/// `NAME::filesystem_mark` and `NAME::directory_marks`: the body gets the strategy as
/// `$mark`, for [`Scratch::marking`].
#[macro_export]
macro_rules! under_both_marks {
    ($(#[$meta:meta])* fn $name:ident($mark:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            fn run($mark: &'static str) $body
            #[test]
            fn filesystem_mark() {
                run("filesystem")
            }
            #[test]
            fn directory_marks() {
                run("directories")
            }
        }
    };
}

/// Waits until every name in `dirs` has not changed for `quiet`, so that a start-up
/// reconcile decides each at once (see [`Daemon::start_up_decided`]).
pub fn all_quiet(dirs: &[PathBuf], quiet: Duration) -> bool {
    let paths: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    quiet_for(&paths, quiet)
}

/// Waits until every file in `paths` has not changed (ctime) for `quiet`: what the settle
/// rule and a merge ask of a file before they act on it.
pub fn quiet_for(paths: &[PathBuf], quiet: Duration) -> bool {
    wait_until(DEADLINE, || {
        paths.iter().all(|p| {
            fs::symlink_metadata(p).is_ok_and(|m| {
                let ctime = std::time::UNIX_EPOCH
                    + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
                std::time::SystemTime::now()
                    .duration_since(ctime)
                    .is_ok_and(|age| age >= quiet)
            })
        })
    })
}
