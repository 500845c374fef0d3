//! Control of the running daemon: signals become [`Control`] values for the event loop.
//!
//! SIGTERM, SIGINT and SIGHUP are blocked before any thread is spawned (threads inherit
//! the mask) and read from a `signalfd` that the event loop polls beside the fanotify
//! descriptor, so no handler runs at an arbitrary point and no signal is lost.

use crate::error::Error;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};

/// What the event loop is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Finish the links in flight and exit 0 (SIGTERM, SIGINT).
    Shutdown(Signal),
    /// Re-read the configuration (SIGHUP).
    Reload,
}

/// The blocked signals and the descriptor that delivers them.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the control signals in this thread (and every thread it spawns later).
    pub fn block() -> Result<Signals, Error> {
        let mut set = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            set.add(s);
        }
        set.thread_block()
            .map_err(|e| Error::setup("blocking signals", e))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::setup("signalfd", e))?;
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every control request pending now.
    pub fn drain(&mut self) -> Vec<Control> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => out.push(Control::Reload),
                Ok(s) => out.push(Control::Shutdown(s)),
                Err(_) => {}
            }
        }
        out
    }
}
