//! `distlink check` (and `run`) on every kind of bad configuration: each gives its own
//! clear message and exit code 78; a good one gives exit code 0.

use crate::util::*;
use std::fs;
use std::path::Path;

/// Asserts that `check` refuses `yaml` with exit code 78 and a message containing each
/// of `want`.
fn refused(scratch: &Scratch, case: &str, yaml: &str, want: &[&str]) {
    let config = scratch.config(yaml);
    let (code, text) = check(&config);
    assert_eq!(code, 78, "{case}: exit code {code}, output:\n{text}");
    for w in want {
        assert!(text.contains(w), "{case}: missing {w:?} in:\n{text}");
    }
    assert!(
        text.starts_with("distlink: "),
        "{case}: message not prefixed:\n{text}"
    );
}

#[test]
fn every_kind_of_config_error_has_its_message() {
    if !require_root() {
        return;
    }
    let mut s = Scratch::tmpfs("config");
    let fs_ = s.fs();
    let d = |n: &str| {
        let p = fs_.join(n);
        fs::create_dir_all(&p).unwrap();
        p.display().to_string()
    };
    let (a, b) = (d("a"), d("b"));
    fs::write(fs_.join("file"), b"").unwrap();
    std::os::unix::fs::symlink(&a, fs_.join("link-to-a")).unwrap();
    std::os::unix::fs::symlink(&fs_, s.root.join("link-to-fs")).unwrap();
    let other = s.mount_tmpfs("otherfs");
    fs::create_dir(other.join("c")).unwrap();
    let bound = s.bind(&fs_, "bound");
    let f = fs_.display();
    let cfg = s.root.join("distlink.yaml");
    let cfg = cfg.display();

    refused(&s, "syntax", "hosts: [\n", &[&format!("{cfg}:1:")]);
    refused(
        &s,
        "unknown key",
        &format!("hosts:\n  a: {a}\n  b: {b}\nworkerz: 2\n"),
        &[&format!("{cfg}:4:1: unknown field `workerz`")],
    );
    refused(
        &s,
        "duplicate name",
        &format!("hosts:\n  a: {a}\n  a: {b}\n"),
        &[&format!("{cfg}:3:3: duplicate mapping key: a")],
    );
    refused(
        &s,
        "missing hosts",
        "workers: 2\n",
        &["missing field `hosts`"],
    );
    refused(&s, "empty file", "", &["empty"]);
    // A missing directory is a warning: distlink starts without it (issue 11.3).
    let (code, text) = check(&s.config(&format!("hosts:\n  a: {a}\n  b: {f}/nope\n")));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "warning: host b: {f}/nope does not exist; distlink starts without it"
        )),
        "{text}"
    );
    let (code, text) = check(&s.config(&format!("hosts:\n  a: {a}\n  b: {f}/typo/b\n")));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("and neither does its parent (a typo?)"),
        "{text}"
    );
    refused(
        &s,
        "no directory at all",
        &format!("hosts:\n  a: {f}/nope1\n  b: {f}/nope2\n"),
        &["none of the host directories exists"],
    );
    refused(
        &s,
        "not a dir",
        &format!("hosts:\n  a: {a}\n  b: {f}/file\n"),
        &[&format!("host b: {f}/file is not a directory")],
    );
    refused(
        &s,
        "symlink",
        &format!("hosts:\n  a: {a}\n  b: {f}/link-to-a\n"),
        &[&format!("host b: {f}/link-to-a is a symlink")],
    );
    let via = s.root.join("link-to-fs");
    refused(
        &s,
        "through symlink",
        &format!("hosts:\n  a: {a}\n  b: {}/b\n", via.display()),
        &[&format!("passes through the symlink {}", via.display())],
    );
    refused(
        &s,
        "relative",
        &format!("hosts:\n  a: {a}\n  b: relative/b\n"),
        &["host b: directory \"relative/b\" must be an absolute path"],
    );
    refused(
        &s,
        "duplicate path",
        &format!("hosts:\n  a: {a}\n  b: {a}/\n"),
        &[&format!("host b: directory {a} is already used by host a")],
    );
    refused(
        &s,
        "nested",
        &format!("hosts:\n  a: {f}\n  b: {b}\n"),
        &[&format!(
            "host directories are nested: {b} (b) is inside {f} (a)"
        )],
    );
    refused(
        &s,
        "one host",
        &format!("hosts:\n  a: {a}\n"),
        &["at least two hosts are needed, found 1"],
    );
    refused(
        &s,
        "other filesystem",
        &format!("hosts:\n  a: {a}\n  c: {}/c\n", other.display()),
        &[
            "host c:",
            "is on a different filesystem than host a",
            "EXDEV",
        ],
    );
    refused(
        &s,
        "bind mount",
        &format!("hosts:\n  a: {a}\n  b: {}/b\n", bound.display()),
        &["host b:", "reached through a different mount", "EXDEV"],
    );
    refused(
        &s,
        "bad values",
        &format!("hosts:\n  a: {a}\n  b: {b}\nworkers: 0\nsettle: soon\nignore: ['x/y']\n"),
        &[
            "workers must be between 1 and 256",
            "settle: ",
            "bad ignore pattern",
        ],
    );
    // Several problems at once are all reported, each with its place.
    fs::write(fs_.join("file2"), b"").unwrap();
    refused(
        &s,
        "several",
        &format!("hosts:\n  a: {f}/file\n  b: {f}/file2\n"),
        &["(2 problems)", ":2:6: host a:", ":3:6: host b:"],
    );

    let (code, text) = check(Path::new("/nonexistent/distlink.yaml"));
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains(
            "cannot read configuration /nonexistent/distlink.yaml: No such file or directory"
        ),
        "{text}"
    );

    let good = s.config(&format!("hosts:\n  a: {a}\n  b: {b}\n"));
    let (code, text) = check(&good);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("configuration OK: 2 hosts"), "{text}");
    assert!(
        text.contains("ok, unlimited queue; marks: filesystem (mark: auto; the kernel granted"),
        "{text}"
    );
    assert!(
        text.contains("records: user.distlink extended attributes: ok"),
        "{text}"
    );
    let bad_user = s.config(&format!(
        "hosts:\n  a: {a}\n  b: {b}\nuser: no-such-user-here\n"
    ));
    // An unknown user is the configuration's fault: EX_CONFIG, with the line.
    let (code, text) = check(&bad_user);
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains(":4:7: user \"no-such-user-here\": no such user on this system"),
        "{text}"
    );
    let good = s.config(&format!("hosts:\n  a: {a}\n  b: {b}\n"));
    let out = std::process::Command::new(BIN)
        .args(["run", "--user", "no-such-user-here", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--user: user \"no-such-user-here\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `run` refuses the same way, before READY=1.
    let bad = s.config(&format!("hosts:\n  a: {f}/file\n  b: {b}\n"));
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}

#[test]
fn usage_errors_exit_two() {
    let out = std::process::Command::new(BIN)
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
}
