//! Running as a service: least privilege, status, log routing, packaging files.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const CAP_DAC_OVERRIDE: u64 = 1 << 1;
const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
const CAP_FOWNER: u64 = 1 << 3;

#[test]
fn capabilities_are_dropped_and_other_users_files_still_link() {
    if !require_root() {
        return;
    }
    let _protected = Sysctl::set("/proc/sys/fs/protected_hardlinks", "1");
    let s = setup(Scratch::tmpfs("caps"), 3, "settle: 300ms\n");
    let pid = s.daemon.pid();
    assert!(s.daemon.wait_log("privileges dropped: capabilities kept: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER; no_new_privs set"));
    let keep = CAP_DAC_OVERRIDE | CAP_DAC_READ_SEARCH | CAP_FOWNER;
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
        for key in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(cap_mask(tid, key), keep, "{key} of thread {tid}");
        }
        assert_eq!(cap_mask(tid, "CapInh"), 0);
        assert_eq!(cap_mask(tid, "CapAmb"), 0);
        assert_eq!(proc_status(tid, "NoNewPrivs"), "1");
    }
    // Files of another user, even unreadable ones, are still linked.
    for (name, mode) in [("other-0644.tar.gz", 0o644), ("other-0600.tar.gz", 0o600)] {
        let tmp = s.hosts[0].join(format!("{name}.__download__"));
        fs::write(&tmp, name).unwrap();
        std::os::unix::fs::chown(&tmp, Some(4242), Some(4242)).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&tmp, s.hosts[0].join(name)).unwrap();
        assert!(wait_linked(&s.hosts, 0, name), "{name} not linked");
        assert_eq!(fs::metadata(s.hosts[2].join(name)).unwrap().uid(), 4242);
    }
}

#[test]
fn linking_as_an_unprivileged_user() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("user");
    let hosts = scratch.hosts(3);
    for h in &hosts {
        std::os::unix::fs::chown(h, Some(65534), Some(65534)).unwrap();
    }
    let config = scratch.config_for(&hosts, "settle: 300ms\nuser: nobody\n");
    let d = Daemon::start(&scratch, &config);
    assert!(d.wait_log("linking as user nobody"));
    let pid = d.pid();
    assert!(
        proc_status(pid, "Uid")
            .split_whitespace()
            .all(|u| u == "65534"),
        "{}",
        proc_status(pid, "Uid")
    );
    assert_eq!(cap_mask(pid, "CapEff"), CAP_DAC_READ_SEARCH | CAP_FOWNER);
    let tmp = hosts[1].join("as-nobody.tar.gz.__download__");
    fs::write(&tmp, b"x").unwrap();
    std::os::unix::fs::chown(&tmp, Some(65534), Some(65534)).unwrap();
    fs::rename(&tmp, hosts[1].join("as-nobody.tar.gz")).unwrap();
    assert!(wait_linked(&hosts, 1, "as-nobody.tar.gz"));
    assert!(
        wait_until(DEADLINE, || recorded_hosts(
            &hosts[0].join("as-nobody.tar.gz")
        )
        .len()
            == 3),
        "no record written as nobody"
    );
}

#[test]
fn status_reports_the_running_daemon_and_its_counters() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::tmpfs("status");
    let hosts = scratch.hosts(3);
    let prom = scratch.root.join("distlink.prom");
    let config = scratch.config_for(
        &hosts,
        &format!("settle: 300ms\nprometheus_textfile: {}\n", prom.display()),
    );
    let status = || {
        let out = std::process::Command::new(BIN)
            .args(["status", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = status();
    assert_eq!(code, Some(1), "no status file yet: {text}");
    assert!(
        text.contains("has distlink run with this configuration?"),
        "{text}"
    );

    let d = Daemon::start(&scratch, &config);
    portage_download(&hosts[0], "counted.tar.gz", b"12345");
    assert!(wait_linked(&hosts, 0, "counted.tar.gz"));
    // The status file is rewritten every few seconds and after each reconcile.
    assert!(
        wait_until(DEADLINE, || status()
            .1
            .contains("1 files fanned out, 2 links made")),
        "{}",
        status().1
    );
    let (code, text) = status();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("distlink is running (pid {})", d.pid())),
        "{text}"
    );
    assert!(
        text.contains(&format!("host1: {}", hosts[1].display())),
        "{text}"
    );
    assert!(text.contains("last reconcile: 20"), "{text}");
    assert!(text.contains("0 conflicts, 0 errors"), "{text}");
    let mode = fs::metadata(scratch.root.join("run")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "status directory readable by others");
    let metrics = fs::read_to_string(&prom).unwrap();
    assert!(metrics.contains("distlink_links_total 2\n"), "{metrics}");
    assert!(
        metrics.contains("distlink_host_present{host=\"host2\"} 1\n"),
        "{metrics}"
    );

    assert!(d.stop().success());
    let (code, text) = status();
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("distlink is not running"), "{text}");
    assert!(text.contains("state stopped"), "{text}");
}
