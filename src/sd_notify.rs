//! The service manager's readiness protocol (`sd_notify(3)`): one datagram with
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`. With the variable unset
//! (foreground, OpenRC without `notify=`), nothing is sent.
//!
//! A message never blocks: it is sent with `MSG_DONTWAIT`, and when the manager's queue
//! is full (a manager that keeps the socket but stops reading it, as OpenRC 0.62/0.63's
//! supervise-daemon does after READY=1) it is dropped with `WouldBlock`. The event loop
//! must never sleep in `sendto`.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `"READY=1\nSTATUS=watching 3 hosts"`). Returns whether a service
/// manager was there to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the socket named `socket` (a path, or `@name` for an abstract one).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// The interval `WatchdogSec=` asks for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` is set), if any.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    /// A manager that never reads: the queue fills and later messages are dropped, the
    /// sender never waits.
    #[test]
    fn a_full_queue_never_blocks() {
        let dir = std::env::temp_dir().join(format!("distlink-notify-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let _rx = UnixDatagram::bind(&path).unwrap();
        let mut dropped = 0;
        for _ in 0..1000 {
            match super::notify_to(path.as_os_str(), "RELOADING=1") {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => dropped += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(dropped > 0, "the queue never filled");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("distlink-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        super::notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("distlink-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        super::notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
