//! The files in `packaging/`: systemd unit, OpenRC script, Gentoo ebuild, man page and
//! completions generated from the command-line definition.

use crate::util::{BIN, require_tool};
use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

const PACKAGING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging");

fn read(rel: &str) -> String {
    fs::read_to_string(format!("{PACKAGING}/{rel}")).unwrap()
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("distlink-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("distlink.service");
    fs::write(
        &unit,
        read("distlink.service").replace("/usr/bin/distlink", BIN),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Unknown"),
        "systemd-analyze verify:\n{text}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = fs::remove_dir_all(&dir);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for distlink.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score < 2.0, "exposure {score}, aim is under 2.0:\n{text}");
    let unit = read("distlink.service");
    for needle in [
        "Type=notify",
        "ExecReload=/usr/bin/distlink check --config /etc/distlink.yaml\n",
        "ExecReload=+/bin/kill -HUP $MAINPID",
        "ReadWritePaths=-/var/lib/node_exporter/textfile_collector",
        "Restart=on-failure",
        "WatchdogSec=",
        "SystemCallFilter=@system-service fanotify_init fanotify_mark",
        "RestrictAddressFamilies=AF_UNIX",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
    // A failing ExecStartPre= is restarted forever: RestartPreventExitStatus= is for the
    // main process only.
    assert!(!unit.lines().any(|l| l.starts_with("ExecStartPre=")));
    // One ReadWritePaths= for the distfiles tree (two would be two bind mounts: EXDEV
    // between them); the other is the textfile directory.
    assert_eq!(
        unit.lines()
            .filter(|l| l.starts_with("ReadWritePaths=") && !l.contains("node_exporter"))
            .count(),
        1
    );
}

#[test]
fn openrc_script_is_valid_shell_in_the_gentoo_style() {
    let script = format!("{PACKAGING}/distlink.initd");
    let out = Command::new("sh").arg("-n").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "sh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read("distlink.initd");
    assert!(text.starts_with("#!/sbin/openrc-run\n"));
    for needle in [
        "supervisor=\"supervise-daemon\"",
        "need localmount",
        "before nfs",
        "start_pre() {",
        "checkconfig || return 1",
        "supervise-daemon \"${RC_SVCNAME}\" --signal HUP",
        "--log-target syslog",
    ] {
        assert!(text.contains(needle), "init script lacks {needle}");
    }
    // OpenRC's notify= is broken from 0.62 on (see the script's comment).
    assert!(!text.contains("\nnotify="), "init script uses notify=");
    assert!(
        !text.contains("pidfile="),
        "supervise-daemon keeps its own pid file"
    );
    let confd = read("distlink.confd");
    assert!(confd.contains("DISTLINK_CONFIG") && confd.contains("DISTLINK_OPTS"));
}

#[test]
fn ebuild_is_consistent_with_the_project() {
    let path = format!("{PACKAGING}/gentoo/app-portage/distlink/distlink-0.1.0.ebuild");
    let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&path).unwrap();
    for var in [
        "EAPI=8",
        "DESCRIPTION=",
        "HOMEPAGE=",
        "SRC_URI=",
        "LICENSE=",
        "SLOT=",
        "KEYWORDS=",
        "CRATES=",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(var)),
            "ebuild lacks {var}"
        );
    }
    assert!(text.contains("inherit cargo shell-completion systemd"));
    // Every file the ebuild installs from the tree exists.
    for file in [
        "distlink.service",
        "distlink.initd",
        "distlink.confd",
        "distlink.yaml",
    ] {
        assert!(
            text.contains(&format!(
                "packaging/${{PN}}.{}",
                file.split_once('.').unwrap().1
            )),
            "{file} not installed"
        );
        assert!(
            fs::metadata(format!("{PACKAGING}/{file}")).is_ok(),
            "{file} missing"
        );
    }
    // CRATES is exactly the registry packages of Cargo.lock.
    let crates: BTreeSet<String> = text
        .split("CRATES=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let lock = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let mut locked = BTreeSet::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        if field("source").is_some_and(|s| s.starts_with("registry+")) {
            locked.insert(format!(
                "{}@{}",
                field("name").unwrap(),
                field("version").unwrap()
            ));
        }
    }
    assert_eq!(
        crates, locked,
        "the ebuild's CRATES differ from Cargo.lock: regenerate them"
    );
}

fn generated(what: &str) -> String {
    let out = Command::new(BIN).args(["generate", what]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_page_and_completions_come_from_the_cli() {
    let man = generated("man");
    assert!(man.contains(".TH distlink 8"), "{man}");
    for sub in ["run", "check", "sync", "status"] {
        assert!(man.contains(sub), "man page lacks {sub}");
    }
    assert!(generated("bash").contains("_distlink()"));
    assert!(generated("zsh").contains("#compdef distlink"));
    assert!(generated("fish").contains("complete -c distlink"));
}
