//! Integration tests: the real `distlink` binary on real filesystems (tmpfs, loop-mounted
//! ext4), as root. One binary, so helpers are shared and the link step runs once.

mod catchup;
mod config_errors;
mod fanout;
mod filesystems;
mod hostile;
mod init_systems;
mod merging;
mod nfs;
mod packaging;
mod pool;
mod promises;
mod service;
mod util;
