//! distlink against a real NFS server (nfs-ganesha, userspace, on 127.0.0.1) written to
//! by a real NFS client (libnfs, through `integration/nfs/nfs-put.c`).
//!
//! Each test gets its own tmpfs, ganesha instance (its own ports, config, log and pid
//! file under the test's scratch directory) and daemon. Server starts and stops are
//! serialised (NFSv3 registers with the one rpcbind of the machine). If the test binary
//! dies without cleaning up, the scratch directory's `guard.sh` stops the server.

use crate::util::*;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/nfs");
const SETTLE: Duration = Duration::from_millis(1500);
const SLACK: Duration = Duration::from_millis(50);

static SERIAL: Mutex<()> = Mutex::new(());
static PORT: AtomicU16 = AtomicU16::new(0);

/// NFS protocol version of a client operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V {
    V3,
    V4,
}

/// Builds the client once per test run.
fn nfs_put() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // A fresh machine gets the server and client packages here, so that `cargo test`
        // alone runs everything (setup.sh installs only what is missing).
        let installed = Command::new("sh")
            .arg("-c")
            .arg("command -v ganesha.nfsd && pkg-config --exists libnfs")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            let status = Command::new("bash")
                .arg(format!("{HARNESS}/setup.sh"))
                .status()
                .expect("setup.sh");
            assert!(status.success(), "integration/nfs/setup.sh failed");
        }
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nfs-put");
        let flags = Command::new("pkg-config")
            .args(["--cflags", "--libs", "libnfs"])
            .output();
        let flags = match flags {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
            _ => panic!("libnfs-dev is missing: run integration/nfs/setup.sh (as root)"),
        };
        let status = Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(format!("{HARNESS}/nfs-put.c"))
            .args(flags.split_whitespace())
            .status()
            .expect("cc");
        assert!(status.success(), "building nfs-put failed");
        out
    })
}

/// A running ganesha exporting the scratch filesystem.
pub struct Nfs {
    state: PathBuf,
    env: HashMap<String, String>,
}

impl Nfs {
    /// Starts ganesha with extra `start.sh` settings (e.g. `NFSH_FD_REAP_SECONDS`).
    pub fn start_with(scratch: &Scratch, env: &[(&str, &str)]) -> Nfs {
        nfs_put();
        let state = scratch.root.join("nfs-state");
        let n = PORT.fetch_add(1, Ordering::SeqCst);
        let port = 30_049 + 2 * n;
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(format!("{HARNESS}/start.sh"))
            .arg(scratch.fs())
            .arg(&state)
            .env("NFSH_PORT", port.to_string())
            .env("NFSH_MNT_PORT", (port + 1).to_string())
            .envs(env.iter().copied())
            .output()
            .expect("start.sh");
        // Released before anything can panic: `Drop` takes the lock again (a failed
        // start used to deadlock the test binary here).
        drop(serial);
        let mut nfs = Nfs {
            state,
            env: HashMap::new(),
        };
        assert!(
            out.status.success(),
            "start.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                nfs.env
                    .insert(k.to_owned(), v.trim_matches('\'').to_owned());
            }
        }
        nfs
    }

    /// `nfs://…/export/REL?version=…`.
    pub fn url(&self, rel: &str, v: V) -> String {
        let args = match v {
            V::V3 => &self.env["NFSH_ARGS_V3"],
            V::V4 => &self.env["NFSH_ARGS_V4"],
        };
        format!("{}/{rel}{args}", self.env["NFSH_BASE"])
    }

    /// Runs nfs-put with `args`; panics with its output if it fails.
    pub fn put(&self, args: &[&str]) {
        let out = Command::new(nfs_put())
            .args(args)
            .output()
            .expect("nfs-put");
        assert!(
            out.status.success(),
            "nfs-put {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts nfs-put with `args` without waiting.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(nfs_put())
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("nfs-put")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.state.join("ganesha.log")).unwrap_or_default()
    }
}

impl Drop for Nfs {
    fn drop(&mut self) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new(format!("{HARNESS}/stop.sh"))
            .arg(&self.state)
            .status();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- ganesha.log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Scratch + NFS server + daemon; drop order: daemon, server, filesystem.
struct World {
    #[allow(dead_code)] // held for its Drop (stops the daemon first)
    daemon: Daemon,
    nfs: Nfs,
    hosts: Vec<PathBuf>,
    scratch: Scratch,
}

fn world(name: &str, n: usize) -> World {
    world_with(name, n, &[])
}

fn world_with(name: &str, n: usize, env: &[(&str, &str)]) -> World {
    world_in(Scratch::tmpfs(name), n, env)
}

fn world_in(scratch: Scratch, n: usize, env: &[(&str, &str)]) -> World {
    let hosts = scratch.hosts(n);
    let config = scratch.config_for(&hosts, &format!("settle: {}ms\n", SETTLE.as_millis()));
    let nfs = Nfs::start_with(&scratch, env);
    let daemon = Daemon::start(&scratch, &config);
    World {
        daemon,
        nfs,
        hosts,
        scratch,
    }
}

impl World {
    /// A local source file of `len` pseudo-random bytes.
    fn source(&self, name: &str, len: usize) -> PathBuf {
        let p = self.scratch.root.join(name);
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        fs::write(&p, data).unwrap();
        p
    }

    fn same_content(&self, local: &Path, name: &str) {
        let want = fs::read(local).unwrap();
        for h in &self.hosts {
            let got =
                fs::read(h.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", h.display()));
            assert!(
                got == want,
                "{}/{name}: content differs ({} vs {} bytes)",
                h.display(),
                got.len(),
                want.len()
            );
        }
    }
}

fn portage_over(v: V) {
    if !require_root() {
        return;
    }
    portage_into(world(&format!("nfs-portage-{v:?}"), 4), v);
}

/// A client downloads Portage-style into host1 over NFS: fanned out at the rename.
fn portage_into(w: World, v: V) {
    let rec = Recorder::new(&w.hosts);
    let src = w.source("src", 3_000_000);
    let url = w.nfs.url("host1/pkg-1.0.tar.gz", v);
    let started = Instant::now();
    w.nfs.put(&["-q", "-r", src.to_str().unwrap(), &url]);
    let renamed = Instant::now();
    assert!(
        wait_linked(&w.hosts, 1, "pkg-1.0.tar.gz"),
        "not fanned out over {v:?}"
    );
    let promptly = rec.first(0, b"pkg-1.0.tar.gz").unwrap_or_else(|| {
        panic!(
            "inotify never reported host0/pkg-1.0.tar.gz; it saw {:?}",
            rec.seen()
        )
    });
    assert!(promptly >= started);
    // Linked at the rename, not after a settle time.
    assert!(
        promptly < renamed + SETTLE,
        "linked {:?} after the client finished",
        promptly - renamed
    );
    w.same_content(&src, "pkg-1.0.tar.gz");
    for (dir, name, _) in rec.finish() {
        assert!(
            !(dir != 1 && name.ends_with(b".__download__")),
            "temporary in host{dir}"
        );
    }
}

#[test]
fn nfs_v3_portage_download_fans_out() {
    portage_over(V::V3);
}

#[test]
fn nfs_v4_portage_download_fans_out() {
    portage_over(V::V4);
}

/// The host directories in a btrfs subvolume (directory marks, see `fanotify.rs`),
/// exported by ganesha. Ganesha finds the filesystems it exports in the mount table, so
/// the subvolume is mounted (`subvol=`), as a server exporting one would.
#[test]
fn nfs_v4_download_into_a_btrfs_subvolume_fans_out() {
    if !require_root() || !require_tool("mkfs.btrfs") {
        return;
    }
    let w = world_in(
        Scratch::btrfs_mounted_subvolume("nfs-btrfs-subvolume"),
        4,
        &[],
    );
    assert!(w.daemon.wait_log("fanotify marks: directories"));
    portage_into(w, V::V4);
}

#[test]
fn nfs_v3_direct_write_is_linked_once_settled() {
    if !require_root() {
        return;
    }
    let w = world("nfs-direct", 3);
    let rec = Recorder::new(&w.hosts);
    let src = w.source("src", 2_000_000);
    w.nfs.put(&[
        "-q",
        src.to_str().unwrap(),
        &w.nfs.url("host0/direct.tar.gz", V::V3),
    ]);
    let done = Instant::now();
    assert!(
        wait_linked(&w.hosts, 0, "direct.tar.gz"),
        "never linked (the server keeps the file open)"
    );
    let appeared = rec.first(2, b"direct.tar.gz").unwrap();
    assert!(
        appeared + SLACK >= done + SETTLE,
        "linked {:?} after the last WRITE",
        appeared - done
    );
    w.same_content(&src, "direct.tar.gz");
    // And a 0-byte file written directly: CREATE only, no MODIFY, no close.
    let empty = w.source("empty", 0);
    w.nfs.put(&[
        "-q",
        empty.to_str().unwrap(),
        &w.nfs.url("host1/empty.tar.gz", V::V3),
    ]);
    assert!(wait_linked(&w.hosts, 1, "empty.tar.gz"));
    assert_eq!(
        fs::metadata(w.hosts[0].join("empty.tar.gz")).unwrap().len(),
        0
    );
}

#[test]
fn nfs_slow_download_is_not_linked_before_the_rename() {
    if !require_root() {
        return;
    }
    let w = world("nfs-slow", 3);
    let rec = Recorder::new(&w.hosts);
    let src = w.source("src", 3 << 20);
    let pause = format!("{:.1}", SETTLE.as_secs_f64() * 1.4);
    // 3 chunks of 1 MiB with pauses longer than the settle time between them.
    let (t0_instant, t0_wall) = (Instant::now(), SystemTime::now());
    let child = w.nfs.spawn(&[
        "-r",
        "-c",
        "1M",
        "-p",
        &pause,
        src.to_str().unwrap(),
        &w.nfs.url("host2/slow.tar.gz", V::V3),
    ]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let client_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(client_log.matches(" wrote ").count(), 3, "{client_log}");
    // When the client renamed, on the wall clock it logs with.
    let renamed: f64 = client_log
        .lines()
        .find(|l| l.contains(" nfs-put renamed "))
        .and_then(|l| l.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no rename in the client's log:\n{client_log}"));
    assert!(wait_linked(&w.hosts, 2, "slow.tar.gz"));
    let seen = rec.finish();
    let wall = |i: Instant| {
        (t0_wall + (i - t0_instant))
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    for (dir, name, when) in &seen {
        if *dir != 2 {
            assert!(
                !name.ends_with(b".__download__"),
                "temporary reached host{dir}"
            );
            if name == b"slow.tar.gz" {
                assert!(
                    wall(*when) + SLACK.as_secs_f64() >= renamed,
                    "linked {:.3}s before the rename",
                    renamed - wall(*when)
                );
            }
        }
    }
    w.same_content(&src, "slow.tar.gz");
}

#[test]
fn nfs_client_deletion_leaves_the_others() {
    if !require_root() {
        return;
    }
    let w = world("nfs-delete", 3);
    let src = w.source("src", 10_000);
    w.nfs.put(&[
        "-q",
        "-r",
        src.to_str().unwrap(),
        &w.nfs.url("host0/gone.tar.gz", V::V4),
    ]);
    assert!(wait_linked(&w.hosts, 0, "gone.tar.gz"));
    w.nfs
        .put(&["-q", "--rm", &w.nfs.url("host1/gone.tar.gz", V::V4)]);
    assert!(!w.hosts[1].join("gone.tar.gz").exists());
    // A later download is linked, so the deletion's events have been handled.
    w.nfs.put(&[
        "-q",
        "-r",
        src.to_str().unwrap(),
        &w.nfs.url("host2/later.tar.gz", V::V3),
    ]);
    assert!(wait_linked(&w.hosts, 2, "later.tar.gz"));
    assert!(
        !w.hosts[1].join("gone.tar.gz").exists(),
        "the deletion was undone"
    );
    assert_eq!(
        fs::metadata(w.hosts[0].join("gone.tar.gz"))
            .unwrap()
            .nlink(),
        2
    );
    w.same_content_except(&src, "gone.tar.gz", 1);
}

impl World {
    fn same_content_except(&self, local: &Path, name: &str, except: usize) {
        let want = fs::read(local).unwrap();
        for (i, h) in self.hosts.iter().enumerate() {
            if i != except {
                assert_eq!(fs::read(h.join(name)).unwrap(), want);
            }
        }
    }
}

#[test]
fn nfs_eight_clients_at_once() {
    if !require_root() {
        return;
    }
    let w = world("nfs-eight", 8);
    let src = w.source("src", 1_000_000);
    let children: Vec<(usize, Child)> = (0..8)
        .map(|i| {
            let v = if i % 2 == 0 { V::V3 } else { V::V4 };
            let url = w.nfs.url(&format!("host{i}/client-{i}.tar.gz"), v);
            (i, w.nfs.spawn(&["-q", "-r", src.to_str().unwrap(), &url]))
        })
        .collect();
    for (i, mut c) in children {
        assert!(c.wait().unwrap().success(), "client {i} failed");
    }
    for i in 0..8 {
        assert!(
            wait_linked(&w.hosts, i, format!("client-{i}.tar.gz")),
            "client-{i}"
        );
    }
    for h in &w.hosts {
        assert_eq!(names(h).len(), 8);
    }
}

#[test]
fn nfs_large_and_empty_files() {
    if !require_root() {
        return;
    }
    let w = world("nfs-sizes", 3);
    let big = w.source("big", 200 << 20);
    w.nfs.put(&[
        "-q",
        "-r",
        big.to_str().unwrap(),
        &w.nfs.url("host0/big-200M.tar.xz", V::V3),
    ]);
    let empty = w.source("empty", 0);
    w.nfs.put(&[
        "-q",
        "-r",
        empty.to_str().unwrap(),
        &w.nfs.url("host1/empty.tar.xz", V::V4),
    ]);
    assert!(wait_linked(&w.hosts, 0, "big-200M.tar.xz"));
    assert!(wait_linked(&w.hosts, 1, "empty.tar.xz"));
    assert_eq!(
        fs::metadata(w.hosts[2].join("big-200M.tar.xz"))
            .unwrap()
            .len(),
        200 << 20
    );
    assert_eq!(
        fs::metadata(w.hosts[2].join("empty.tar.xz")).unwrap().len(),
        0
    );
    w.same_content(&big, "big-200M.tar.xz");
}

#[test]
fn nfs_v3_server_closes_mid_write_and_nothing_is_linked_early() {
    if !require_root() {
        return;
    }
    // Ganesha closing idle files every second (as knfsd does a few seconds after the last
    // WRITE): CLOSE_WRITE arrives in every pause of this write under the final name.
    let w = world_with("nfs-reap", 3, &[("NFSH_FD_REAP_SECONDS", "1")]);
    let rec = Recorder::new(&w.hosts);
    let src = w.source("src", 3 << 20);
    let pause = format!("{:.1}", SETTLE.as_secs_f64() * 0.8);
    let url = w.nfs.url("host0/reaped.tar.gz", V::V3);
    let child = w
        .nfs
        .spawn(&["-c", "1M", "-p", &pause, src.to_str().unwrap(), &url]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = Instant::now();
    assert!(wait_linked(&w.hosts, 0, "reaped.tar.gz"));
    let appeared = rec.first(1, b"reaped.tar.gz").unwrap();
    assert!(
        appeared + SLACK >= done + SETTLE,
        "linked {:?} after the last write",
        appeared - done
    );
    w.same_content(&src, "reaped.tar.gz");
}

/// Runs nfs-put with `args`: exit status, stdout, stderr.
fn nfs_put_output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(nfs_put())
        .args(args)
        .output()
        .expect("nfs-put");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The read-only pool over NFS: a client's symlink into it (what Portage makes from
/// `PORTAGE_RO_DISTDIRS`) becomes the pool's file in the client's directory, and the
/// pool's export cannot be written by a client.
#[test]
fn nfs_symlink_into_the_pool_becomes_a_link_and_the_pool_export_is_read_only() {
    if !require_root() {
        return;
    }
    const CLIENT: &str = "/var/cache/distfiles-pool";
    let scratch = Scratch::tmpfs("nfs-pool");
    let hosts = scratch.hosts(3);
    let pool = scratch.fs().join("pool");
    fs::create_dir_all(&pool).unwrap();
    let config = scratch.config_for(
        &hosts,
        &format!(
            "settle: {}ms\npool:\n  dir: {}\n  client_path: {CLIENT}\n",
            SETTLE.as_millis(),
            pool.display()
        ),
    );
    let nfs = Nfs::start_with(&scratch, &[("NFSH_RO_EXPORT", pool.to_str().unwrap())]);
    let daemon = Daemon::start(&scratch, &config);
    let pool_url = |name: &str, v: V| nfs.url(name, v).replacen("/export/", "/pool/", 1);
    for (i, v) in [V::V3, V::V4].into_iter().enumerate() {
        let name = format!("foo-{i}.tar.gz");
        let content = format!("release {i}").repeat(1000);
        portage_download(&hosts[0], &name, content.as_bytes());
        let mut all = hosts.clone();
        all.push(pool.clone());
        assert!(wait_linked(&all, 0, &name), "{}", daemon.log());
        let shared = fs::metadata(pool.join(&name)).unwrap().ino();

        // host2's Portage: the file is gone from its DISTDIR, the pool holds it.
        nfs.put(&["--rm", &nfs.url(&format!("host2/{name}"), v)]);
        let target = format!("{CLIENT}/{name}");
        nfs.put(&["--symlink", &nfs.url(&format!("host2/{name}"), v), &target]);
        let local = hosts[2].join(&name);
        assert!(
            wait_until(DEADLINE, || fs::symlink_metadata(&local)
                .is_ok_and(|m| m.file_type().is_file() && m.ino() == shared)),
            "{v:?}: not replaced:\n{}",
            daemon.log()
        );
        // ganesha may answer from its directory cache with the symlink's handle, gone
        // since the swap (ESTALE), until it notices the directory changed; a kernel
        // client then looks the name up again. So does this one.
        let (mut seen, mut first) = ((0, String::new(), String::new()), None);
        assert!(
            wait_until(DEADLINE, || {
                seen = nfs_put_output(&["--stat", &nfs.url(&format!("host2/{name}"), v)]);
                let ok = seen.0 == 0
                    && seen.1.contains("type=file")
                    && seen.1.contains(&format!("ino={shared} "));
                if !ok && first.is_none() {
                    first = Some(seen.clone());
                }
                ok
            }),
            "{v:?}: the client sees {seen:?}"
        );
        if let Some(first) = first {
            eprintln!("{v:?}: the client first saw {first:?}, then the file");
        }

        // Clients read the pool through its export, and cannot change it.
        let (code, read, _) = nfs_put_output(&["-q", "--cat", &pool_url(&name, v)]);
        assert_eq!((code, read.as_str()), (0, content.as_str()), "{v:?}");
        let source = scratch.root.join("planted");
        fs::write(&source, b"planted by a client").unwrap();
        for args in [
            vec![
                source.to_str().unwrap().to_owned(),
                pool_url("planted.tar.gz", v),
            ],
            vec!["--rm".into(), pool_url(&name, v)],
            vec![
                "--symlink".into(),
                pool_url("evil.tar.gz", v),
                "/etc/shadow".into(),
            ],
            vec!["--mv".into(), pool_url(&name, v), "renamed.tar.gz".into()],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, _, err) = nfs_put_output(&args);
            assert_eq!(code, 1, "{v:?}: {args:?} succeeded on the read-only pool");
            assert!(
                err.contains("Read-only file system"),
                "{v:?}: {args:?}: {err}"
            );
        }
        let mut in_pool: Vec<String> = fs::read_dir(&pool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        in_pool.sort();
        let want: Vec<String> = (0..=i).map(|j| format!("foo-{j}.tar.gz")).collect();
        assert_eq!(in_pool, want, "{v:?}");
    }
    drop(daemon);
    drop(nfs);
}
