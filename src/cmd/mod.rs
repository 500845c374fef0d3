//! The commands: each reads the configuration, uses the library, and returns what to
//! print or the error to exit with. `main.rs` only dispatches to them.
//!
//! * [`run`]: the daemon (start-up sequence and event loop).
//! * [`check`]: everything `run` needs, tried for real, without starting.
//! * [`sync`]: one reconcile in the foreground.
//! * [`status`]: the running daemon's status file, for a human.
//! * [`space`]: where the bytes are, from the host directories.

pub mod check;
pub mod run;
pub mod space;
pub mod status;
pub mod sync;
