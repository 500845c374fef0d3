//! The read-only pool (see `pool.rs`): every fan-out includes it, a symlink Portage makes
//! into it becomes a link of the pool's file, a name no host holds leaves it after
//! `keep`, and every other symlink is left alone.

use crate::under_both_marks;
use crate::util::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where clients mount the pool in these tests (only the text matters here).
const CLIENT: &str = "/var/cache/distfiles-pool";

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// A daemon on `n` host directories and a pool `fs/pool` kept `keep`.
pub struct PoolSetup {
    daemon: Option<Daemon>,
    pub hosts: Vec<PathBuf>,
    pub pool: PathBuf,
    pub config: PathBuf,
    pub scratch: Scratch,
}

pub fn pool_setup(scratch: Scratch, n: usize, keep: &str, client: &str) -> PoolSetup {
    let hosts = scratch.hosts(n);
    let pool = scratch.fs().join("pool");
    fs::create_dir_all(&pool).unwrap();
    let config = scratch.config_for(
        &hosts,
        &format!(
            "settle: 300ms\npool:\n  dir: {}\n  client_path: {client}\n  keep: {keep}\n",
            pool.display()
        ),
    );
    let daemon = Daemon::start(&scratch, &config);
    PoolSetup {
        daemon: Some(daemon),
        hosts,
        pool,
        config,
        scratch,
    }
}

impl PoolSetup {
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// Stops the daemon, runs `while_down`, starts it again.
    pub fn restart_after(&mut self, while_down: impl FnOnce()) {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        while_down();
        let mut dirs = self.hosts.clone();
        dirs.push(self.pool.clone());
        assert!(all_quiet(&dirs, QUIET));
        self.daemon = Some(Daemon::start(&self.scratch, &self.config));
    }
}

/// Portage's answer when the pool holds the file: `DIR/NAME -> CLIENT/NAME`.
fn ask_pool(dir: &Path, name: &str) {
    std::os::unix::fs::symlink(format!("{CLIENT}/{name}"), dir.join(name)).unwrap();
}

/// Waits until `path` is a regular file with inode `ino`.
fn becomes(path: &Path, ino: u64) -> bool {
    wait_until(DEADLINE, || {
        fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.ino() == ino)
    })
}

under_both_marks! {
    fn the_pool_gets_every_download_and_answers_a_request(mark) {
        if require_root() {
            request_case(Scratch::tmpfs("pool-request").marking(mark));
        }
    }
}

/// In a btrfs subvolume (directory marks, the pool unmarked beside the hosts).
#[test]
fn the_pool_answers_a_request_in_a_btrfs_subvolume() {
    if require_root() && require_tool("mkfs.btrfs") {
        request_case(Scratch::btrfs_subvolume("pool-btrfs-subvol"));
    }
}

fn request_case(scratch: Scratch) {
    let mut s = pool_setup(scratch, 3, "0s", CLIENT);
    let h = s.hosts.clone();
    portage_download(&h[0], "foo-1.0.tar.gz", b"a release tarball");
    let mut all = h.clone();
    all.push(s.pool.clone());
    assert!(
        wait_linked(&all, 0, "foo-1.0.tar.gz"),
        "{}",
        tree(&s.scratch.fs())
    );
    let shared = ino(&s.pool.join("foo-1.0.tar.gz"));
    // The pool is never in the record: only the hosts are.
    assert_eq!(recorded_hosts(&h[0].join("foo-1.0.tar.gz")), [0, 1, 2]);

    // host2 cleans it; later its Portage finds it in the pool and makes the symlink.
    fs::remove_file(h[2].join("foo-1.0.tar.gz")).unwrap();
    ask_pool(&h[2], "foo-1.0.tar.gz");
    assert!(
        becomes(&h[2].join("foo-1.0.tar.gz"), shared),
        "{}\n{}",
        tree(&s.scratch.fs()),
        s.daemon().log()
    );
    assert!(
        s.daemon()
            .wait_log("host2/foo-1.0.tar.gz: taken from the pool")
    );
    assert_eq!(recorded_hosts(&h[0].join("foo-1.0.tar.gz")), [0, 1, 2]);
    // The status file is rewritten every few seconds.
    assert!(
        wait_until(DEADLINE, || status(&s.config)
            .1
            .contains("1 symlinks answered with a link")),
        "{}",
        status(&s.config).1
    );

    // Deleted again, it stays deleted across a restart (the pool holds it).
    fs::remove_file(h[2].join("foo-1.0.tar.gz")).unwrap();
    s.restart_after(|| {});
    assert!(s.daemon().start_up_decided());
    assert!(
        !h[2].join("foo-1.0.tar.gz").exists(),
        "{}",
        tree(&s.scratch.fs())
    );
    assert_eq!(ino(&s.pool.join("foo-1.0.tar.gz")), shared);
}

#[test]
fn a_file_no_host_holds_leaves_the_pool_at_once_with_keep_zero() {
    if !require_root() {
        return;
    }
    let mut s = pool_setup(Scratch::tmpfs("pool-expire"), 3, "0s", CLIENT);
    let h = s.hosts.clone();
    portage_download(&h[1], "gone.tar.gz", b"cleaned everywhere");
    portage_download(&h[1], "kept.tar.gz", b"still held by host0");
    let mut all = h.clone();
    all.push(s.pool.clone());
    assert!(wait_linked(&all, 1, "gone.tar.gz"));
    assert!(wait_linked(&all, 1, "kept.tar.gz"));
    // eclean-dist in every host; kept.tar.gz stays in host0.
    for d in &h {
        fs::remove_file(d.join("gone.tar.gz")).unwrap();
    }
    for d in &h[1..] {
        fs::remove_file(d.join("kept.tar.gz")).unwrap();
    }
    assert!(
        wait_until(DEADLINE, || !s.pool.join("gone.tar.gz").exists()),
        "{}",
        s.daemon().log()
    );
    assert!(
        s.daemon()
            .wait_log("pool/gone.tar.gz: removed, no host holds it")
    );
    assert!(s.pool.join("kept.tar.gz").exists());

    // Deleted everywhere while distlink is down: the start-up reconcile removes it.
    s.restart_after(|| fs::remove_file(h[0].join("kept.tar.gz")).unwrap());
    assert!(s.daemon().start_up_decided());
    assert!(!s.pool.join("kept.tar.gz").exists(), "{}", s.daemon().log());
    assert!(
        s.daemon()
            .log()
            .contains("1 names no host holds removed from the pool")
    );
}

#[test]
fn symlinks_that_are_not_requests_are_left_alone_and_never_followed() {
    if !require_root() {
        return;
    }
    let s = pool_setup(Scratch::tmpfs("pool-hostile"), 2, "1h", CLIENT);
    let (h0, h1) = (&s.hosts[0], &s.hosts[1]);
    let names = [
        "foo",
        "a.tar.gz",
        "b.tar.gz",
        "c.tar.gz",
        "d.tar.gz",
        "e.tar.gz",
        "layout.conf",
    ];
    for n in names {
        portage_download(h0, n, n.as_bytes());
    }
    for n in &names[..6] {
        assert!(wait_linked(&[h0.clone(), s.pool.clone()], 0, n));
    }
    // A client's layout.conf would change where every client's Portage looks.
    assert!(wait_linked(&s.hosts, 0, "layout.conf"));
    assert!(
        !s.pool.join("layout.conf").exists(),
        "layout.conf reached the pool"
    );
    // What an admin (root) may have in the pool besides distfiles.
    nix::unistd::mkfifo(
        &s.pool.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fs::create_dir(s.pool.join("subdir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.pool.join("plink")).unwrap();
    fs::write(s.pool.join("layout.conf"), b"[structure]\n0=flat\n").unwrap();
    for n in names {
        fs::remove_file(h1.join(n)).unwrap();
    }
    let hostile: Vec<(&str, String)> = vec![
        ("foo", "../pool/foo".into()),
        ("a.tar.gz", format!("{CLIENT}//a.tar.gz")),
        ("b.tar.gz", format!("{CLIENT}/../pool/b.tar.gz")),
        ("c.tar.gz", "/var/cache/other/c.tar.gz".into()),
        ("other-name.tar.gz", format!("{CLIENT}/d.tar.gz")),
        ("fifo", format!("{CLIENT}/fifo")),
        ("subdir", format!("{CLIENT}/subdir")),
        ("plink", format!("{CLIENT}/plink")),
        ("layout.conf", format!("{CLIENT}/layout.conf")),
        ("missing.tar.gz", format!("{CLIENT}/missing.tar.gz")),
        ("d.tar.gz", format!("{CLIENT}/d.tar.gz/")),
    ];
    for (name, target) in &hostile {
        std::os::unix::fs::symlink(target, h1.join(name)).unwrap();
    }
    // Each is looked at and reported.
    for (name, _) in &hostile {
        let left = [
            format!("host1/{name}: not linked: a symlink"),
            format!("host1/{name}: a symlink into the pool, but the pool holds no regular file"),
        ];
        assert!(
            wait_until(DEADLINE, || {
                let log = s.daemon().log();
                left.iter().any(|l| log.contains(l.as_str()))
            }),
            "{name} not reported:\n{}",
            s.daemon().log()
        );
    }
    for (name, target) in &hostile {
        let p = h1.join(name);
        assert!(is_symlink(&p), "{name} replaced");
        assert_eq!(
            fs::read_link(&p).unwrap().to_str(),
            Some(target.as_str()),
            "{name}"
        );
    }
    assert!(
        fs::symlink_metadata(s.pool.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::read_link(s.pool.join("plink")).unwrap(),
        Path::new("/etc/passwd")
    );
    // A client deleting its own layout.conf leaves the pool's (never distlink's).
    fs::remove_file(h0.join("layout.conf")).unwrap();
    // A real request is still answered after all of them.
    ask_pool(h1, "e.tar.gz");
    assert!(becomes(&h1.join("e.tar.gz"), ino(&s.pool.join("e.tar.gz"))));
    assert!(
        s.pool.join("layout.conf").exists(),
        "the pool's layout.conf was removed"
    );
}

#[test]
fn a_kept_file_waits_for_keep_and_is_never_brought_back() {
    if !require_root() {
        return;
    }
    let mut s = pool_setup(Scratch::tmpfs("pool-keep"), 2, "2s", CLIENT);
    let h = s.hosts.clone();
    portage_download(&h[0], "kept.tar.gz", b"kept for two seconds");
    let mut all = h.clone();
    all.push(s.pool.clone());
    assert!(wait_linked(&all, 0, "kept.tar.gz"));
    // Every host cleans it; the pool keeps it, and a restart brings it back to no host.
    s.restart_after(|| {
        for d in &h {
            fs::remove_file(d.join("kept.tar.gz")).unwrap();
        }
    });
    let cleaned = fs::metadata(s.pool.join("kept.tar.gz")).unwrap().ctime();
    assert!(s.daemon().start_up_decided());
    assert!(s.pool.join("kept.tar.gz").exists(), "removed before keep");
    assert!(
        h.iter().all(|d| !d.join("kept.tar.gz").exists()),
        "{}",
        tree(&s.scratch.fs())
    );
    assert!(
        wait_until(DEADLINE, || !s.pool.join("kept.tar.gz").exists()),
        "{}",
        s.daemon().log()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        now >= cleaned + 2,
        "removed {}s after the last host dropped it",
        now - cleaned
    );
}

#[test]
fn a_pool_copy_no_host_holds_yields_to_a_new_download() {
    if !require_root() {
        return;
    }
    let s = pool_setup(Scratch::tmpfs("pool-stale"), 2, "1h", CLIENT);
    let h = &s.hosts;
    portage_download(&h[0], "snapshot.tar.xz", b"first upload");
    let mut all = h.clone();
    all.push(s.pool.clone());
    assert!(wait_linked(&all, 0, "snapshot.tar.xz"));
    for d in h {
        fs::remove_file(d.join("snapshot.tar.xz")).unwrap();
    }
    // `distlink space` shows what the pool keeps (its copy, which no host holds).
    let out = std::process::Command::new(BIN)
        .args(["space", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "read-only pool {}: 1 names, 12 B; no host holds 1 of them (12 B), kept up to 1h",
            s.pool.display()
        )),
        "{text}"
    );
    // Upstream re-rolled it: host1 downloads other bytes under the same name.
    portage_download(&h[1], "snapshot.tar.xz", b"second upload, other bytes");
    let new = ino(&h[1].join("snapshot.tar.xz"));
    assert!(
        becomes(&s.pool.join("snapshot.tar.xz"), new),
        "{}",
        s.daemon().log()
    );
    assert!(
        s.daemon()
            .wait_log("pool/snapshot.tar.xz: its copy, which no host held, is replaced")
    );
    assert_eq!(
        fs::read(s.pool.join("snapshot.tar.xz")).unwrap(),
        b"second upload, other bytes"
    );
    assert!(becomes(&h[0].join("snapshot.tar.xz"), new));
}

/// Portage's own fetch code (`integration/portage/`), in a venv made once per test run.
struct Portage {
    python: PathBuf,
    script: PathBuf,
}

impl Portage {
    fn get() -> Portage {
        static READY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("portage-venv");
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/portage");
        let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
        if !*ready {
            let st = std::process::Command::new("bash")
                .arg(here.join("setup.sh"))
                .arg(&venv)
                .status()
                .unwrap();
            assert!(st.success(), "integration/portage/setup.sh failed");
            *ready = true;
        }
        Portage {
            python: venv.join("bin/python"),
            script: here.join("fetch.py"),
        }
    }

    /// Runs Portage's fetch() for `name` (digests of `source`) into `distdir`, with the
    /// read-only pool at `ro`. Returns whether it succeeded.
    fn fetch(&self, distdir: &Path, ro: &Path, mirror: &str, name: &str, source: &Path) -> bool {
        let out = std::process::Command::new(&self.python)
            .arg(&self.script)
            .arg("--distdir")
            .arg(distdir)
            .arg("--ro-distdir")
            .arg(ro)
            .args(["--mirror", mirror, "--file"])
            .arg(format!("{name}={}", source.display()))
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }
}

/// A local HTTP mirror serving `dir`, logging every request.
struct Mirror {
    _child: Reaped,
    url: String,
    log: PathBuf,
}

impl Mirror {
    fn start(dir: &Path, log: &Path) -> Mirror {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/portage/mirror.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(dir)
            .arg(log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Mirror {
            _child: Reaped(child),
            url: format!("http://127.0.0.1:{}", line.trim()),
            log: log.to_owned(),
        }
    }

    fn requests(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn portage_takes_from_the_pool_what_another_host_holds_and_downloads_the_rest() {
    if !require_root() || !require_tool("python3") {
        return;
    }
    let portage = Portage::get();
    let mut scratch = Scratch::tmpfs("pool-portage");
    // Clients see the pool read-only at their own path (here a read-only bind mount).
    let pool = scratch.fs().join("pool");
    fs::create_dir_all(&pool).unwrap();
    let client = scratch.bind(&pool, "client-pool");
    let ro = std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&client)
        .status()
        .unwrap();
    assert!(ro.success());
    let served = scratch.fs().join("../mirror");
    fs::create_dir_all(&served).unwrap();
    let foo = served.join("foo-1.0.tar.gz");
    let bar = served.join("bar-2.0.tar.gz");
    fs::write(
        &foo,
        (0..200_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::write(
        &bar,
        (0..50_000u32)
            .map(|i| (i * 13 % 241) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let mirror = Mirror::start(&served, &scratch.fs().join("../requests.log"));

    let hosts = scratch.hosts(3);
    let config = scratch.config_for(
        &hosts,
        &format!(
            "pool:\n  dir: {}\n  client_path: {}\n  keep: 0s\n",
            pool.display(),
            client.display()
        ),
    );
    let daemon = Daemon::start(&scratch, &config);
    let mut all = hosts.clone();
    all.push(pool.clone());

    // host1 downloads it from the mirror: every host and the pool get it.
    assert!(portage.fetch(&hosts[1], &client, &mirror.url, "foo-1.0.tar.gz", &foo));
    assert_eq!(mirror.requests(), ["GET /foo-1.0.tar.gz"]);
    assert!(wait_linked(&all, 1, "foo-1.0.tar.gz"), "{}", daemon.log());

    // host2 cleaned it, and needs it again: Portage finds it in the pool, downloads
    // nothing, and host2 ends with the pool's inode as a regular file.
    fs::remove_file(hosts[2].join("foo-1.0.tar.gz")).unwrap();
    assert!(portage.fetch(&hosts[2], &client, &mirror.url, "foo-1.0.tar.gz", &foo));
    assert_eq!(
        mirror.requests(),
        ["GET /foo-1.0.tar.gz"],
        "downloaded again"
    );
    assert!(
        becomes(
            &hosts[2].join("foo-1.0.tar.gz"),
            ino(&pool.join("foo-1.0.tar.gz"))
        ),
        "{}\n{}",
        tree(&scratch.fs()),
        daemon.log()
    );
    assert_eq!(
        fs::read(hosts[2].join("foo-1.0.tar.gz")).unwrap(),
        fs::read(&foo).unwrap()
    );

    // A file no host holds is downloaded and fanned out, the pool included.
    assert!(portage.fetch(&hosts[2], &client, &mirror.url, "bar-2.0.tar.gz", &bar));
    assert_eq!(mirror.requests().len(), 2);
    assert!(wait_linked(&all, 2, "bar-2.0.tar.gz"), "{}", daemon.log());

    // eclean-dist in every host: the pool's name goes too (keep: 0s).
    for h in &hosts {
        fs::remove_file(h.join("bar-2.0.tar.gz")).unwrap();
    }
    assert!(
        wait_until(DEADLINE, || !pool.join("bar-2.0.tar.gz").exists()),
        "{}",
        daemon.log()
    );
    assert!(pool.join("foo-1.0.tar.gz").exists());
    drop(daemon);
}

#[test]
fn a_file_the_pool_holds_under_two_names_leaves_it_when_every_host_dropped_it() {
    if !require_root() {
        return;
    }
    let s = pool_setup(Scratch::tmpfs("pool-two-names"), 2, "0s", CLIENT);
    let h = &s.hosts;
    let mut all = h.clone();
    all.push(s.pool.clone());
    // A second hardlink, and a rename: each name reaches the pool as a link of one inode.
    portage_download(&h[0], "big.tar.gz", b"pinned by a second name");
    assert!(wait_linked(&all, 0, "big.tar.gz"));
    fs::hard_link(h[0].join("big.tar.gz"), h[0].join("big2.tar.gz")).unwrap();
    assert!(wait_linked(&all, 0, "big2.tar.gz"), "{}", s.daemon().log());
    portage_download(&h[1], "moved.tar.gz", b"renamed by a host");
    assert!(wait_linked(&all, 1, "moved.tar.gz"));
    fs::rename(h[1].join("moved.tar.gz"), h[1].join("renamed.tar.gz")).unwrap();
    assert!(
        wait_linked(&all, 1, "renamed.tar.gz"),
        "{}",
        s.daemon().log()
    );
    for d in h {
        for n in [
            "big.tar.gz",
            "big2.tar.gz",
            "moved.tar.gz",
            "renamed.tar.gz",
        ] {
            let _ = fs::remove_file(d.join(n));
        }
    }
    assert!(
        wait_until(DEADLINE, || names(&s.pool).is_empty()),
        "left in the pool: {:?}\n{}",
        names(&s.pool),
        s.daemon().log()
    );
}

#[test]
fn a_request_made_while_distlink_was_down_is_answered_at_start_up() {
    if !require_root() {
        return;
    }
    let mut s = pool_setup(Scratch::tmpfs("pool-request-down"), 3, "0s", CLIENT);
    let h = s.hosts.clone();
    portage_download(&h[0], "foo.tar.gz", b"asked for while down");
    let mut all = h.clone();
    all.push(s.pool.clone());
    assert!(wait_linked(&all, 0, "foo.tar.gz"));
    let shared = ino(&s.pool.join("foo.tar.gz"));
    s.restart_after(|| {
        fs::remove_file(h[2].join("foo.tar.gz")).unwrap();
        ask_pool(&h[2], "foo.tar.gz");
    });
    assert!(
        becomes(&h[2].join("foo.tar.gz"), shared),
        "{}",
        s.daemon().log()
    );
    assert!(s.daemon().wait_log("host2/foo.tar.gz: taken from the pool"));
}

#[test]
fn a_pool_directory_moved_away_and_re_created_gets_the_new_downloads() {
    if !require_root() {
        return;
    }
    let s = pool_setup(Scratch::tmpfs("pool-recreated"), 2, "0s", CLIENT);
    let h = &s.hosts;
    portage_download(&h[0], "before.tar.gz", b"in the old pool");
    let mut all = h.clone();
    all.push(s.pool.clone());
    assert!(wait_linked(&all, 0, "before.tar.gz"));
    fs::rename(&s.pool, s.scratch.fs().join("pool.old")).unwrap();
    fs::create_dir(&s.pool).unwrap();
    // Within the periodic look (5 s), the new directory is taken and reconciled.
    assert!(
        s.daemon().wait_log("pool: ") && s.daemon().wait_log("is another directory now"),
        "{}",
        s.daemon().log()
    );
    assert!(wait_until(DEADLINE, || s
        .pool
        .join("before.tar.gz")
        .exists()));
    portage_download(&h[1], "after.tar.gz", b"in the new pool");
    assert!(wait_linked(&all, 1, "after.tar.gz"), "{}", s.daemon().log());
    assert!(!s.scratch.fs().join("pool.old/after.tar.gz").exists());
}

#[test]
fn check_refuses_a_pool_on_another_filesystem_or_mount() {
    if !require_root() {
        return;
    }
    let mut scratch = Scratch::tmpfs("pool-check");
    let hosts = scratch.hosts(2);
    let fs_pool = scratch.fs().join("pool");
    fs::create_dir_all(&fs_pool).unwrap();
    let other_fs = scratch.mount_tmpfs("other-fs");
    let bound = scratch.bind(&fs_pool, "bound-pool");
    for (dir, why) in [
        (&other_fs, "is on a different filesystem than host host0"),
        (
            &bound,
            "is reached through a different mount than host host0",
        ),
    ] {
        let config = scratch.config_for(
            &hosts,
            &format!("pool:\n  dir: {}\n  client_path: {CLIENT}\n", dir.display()),
        );
        let (code, text) = check(&config);
        assert_eq!(code, 78, "{text}");
        assert!(
            text.contains(&format!("pool: {} {why}", dir.display())),
            "{text}"
        );
    }
    let config = scratch.config_for(
        &hosts,
        &format!(
            "pool:\n  dir: {}\n  client_path: {CLIENT}\n",
            fs_pool.display()
        ),
    );
    let (code, text) = check(&config);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "pool: {} (clients mount it read-only at {CLIENT}",
            fs_pool.display()
        )),
        "{text}"
    );
}
