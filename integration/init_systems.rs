//! The shipped service files under real init systems, booted in containers: the unit
//! under systemd 252 (`systemd-nspawn --boot`) and the init script under Debian's
//! OpenRC (`openrc-init` as PID 1), both over a cached debootstrapped Debian 12 root.
//! The checks themselves are the shell scripts in `integration/init/`; each prints one
//! `ok - ...` line per check with what it saw.

use crate::util::{BIN, require_root};
use std::process::Command;
use std::sync::Mutex;

/// The two containers boot one after the other: they share the cached root (built on
/// first use) and the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_suite(script: &str) {
    // mkroot.sh installs debootstrap and systemd-nspawn where they are missing.
    if !require_root() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = crate::util::Scratch::new(script);
    let out = Command::new("bash")
        .arg(format!(
            "{}/integration/init/{script}.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("DISTLINK_BIN", BIN)
        .env("SCRATCH", &scratch.root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The checks and what they saw, also when they pass (`cargo test -- --nocapture`).
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script}.sh failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("not ok"), "{stdout}");
}

#[test]
fn systemd_runs_the_shipped_unit() {
    run_suite("systemd");
}

#[test]
fn openrc_runs_the_shipped_init_script() {
    run_suite("openrc");
}
