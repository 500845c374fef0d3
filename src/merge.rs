//! Merging byte-identical copies: one host's name, holding another inode with the same
//! bytes as the file the other hosts share, is replaced by a link to that file, so the
//! pool keeps one copy per distfile (a host that cleaned a tarball and downloaded it
//! again; separate per-host directories moved to distlink).
//!
//! Rules ([`decide`], pure): both files regular and complete (the rules for linking, see
//! `link.rs` and `completion.rs`), of the same size, and equal byte for byte; the inode
//! with more names survives, ties to the older modification time, then to the copy that
//! was there first. Different bytes are a conflict, never replaced.
//!
//! How a name is replaced ([`replace`]) so that it is never missing nor anything but a
//! complete file, and nothing but the compared file is ever removed:
//! 1. the survivor is linked under a hidden temporary name in the same directory
//!    (`.distlink-merge.PID.N`; hidden names are never fanned out);
//! 2. `renameat2(RENAME_EXCHANGE)` swaps the temporary and the name atomically: the name
//!    now holds the survivor, the temporary what the name held an instant before;
//! 3. if that is the compared inode, unchanged (size and mtime), the temporary is
//!    unlinked; if not (a client renamed another file onto the name meanwhile), the two
//!    are swapped back and the survivor's temporary link removed, leaving the client's
//!    file as it was.
//!
//! Readers holding the old inode open keep reading the same bytes. Owner, mode and mtime
//! of the host's name become the survivor's.
//!
//! Bytes are compared through the descriptors already checked (reopened through
//! `/proc/self/fd`, never by name), and both inodes are checked unchanged (size, mtime,
//! ctime) before and after. Pages read for the comparison are dropped from the page
//! cache afterwards (`POSIX_FADV_DONTNEED`), so comparing a large tree does not evict
//! the server's other work.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, PosixFadviseAdvice, RenameFlags};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// What identifies a file's content for the rules: compared before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub ino: u64,
    pub size: i64,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Facts {
    pub fn of(st: &FileStat) -> Facts {
        Facts {
            ino: st.st_ino,
            size: st.st_size,
            nlink: st.st_nlink,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// Same inode and content stamps (the link count may change meanwhile).
    fn unchanged(&self, now: &Facts) -> bool {
        (self.ino, self.size, self.mtime, self.ctime) == (now.ino, now.size, now.mtime, now.ctime)
    }
}

/// Which of two identical files survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivor {
    /// The file being fanned out.
    Ours,
    /// The copy already under the name in the other host.
    Theirs,
}

/// Whether two files may be compared at all, and if identical, which survives. Pure.
/// `None`: never merged (different sizes).
pub fn decide(ours: &Facts, theirs: &Facts) -> Option<Survivor> {
    if ours.size != theirs.size {
        return None;
    }
    Some(if ours.nlink > theirs.nlink {
        Survivor::Ours
    } else if ours.nlink < theirs.nlink {
        Survivor::Theirs
    } else if ours.mtime < theirs.mtime {
        Survivor::Ours
    } else {
        Survivor::Theirs
    })
}

/// Bytes read per comparison step.
const CHUNK: usize = 256 * 1024;

/// Reopens the inode behind an `O_PATH` descriptor for reading (not by name: the very
/// inode that was checked).
fn reopen(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )?;
    let (a, b) = (fstat(fd)?, fstat(&file)?);
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        return Err(Errno::ESTALE);
    }
    Ok(file)
}

/// Whether the files behind `a` and `b` (`O_PATH` descriptors of regular files of
/// `size` bytes) hold the same bytes. Drops the pages read from the page cache after.
pub fn same_bytes(a: BorrowedFd<'_>, b: BorrowedFd<'_>, size: u64) -> Result<bool, Errno> {
    let (fa, fb) = (reopen(a)?, reopen(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut at: u64 = 0;
    let result = loop {
        if at >= size {
            // Nothing past the size both had when checked.
            let mut one = [0u8; 1];
            let more = (
                nix::sys::uio::pread(&fa, &mut one, at as i64)?,
                nix::sys::uio::pread(&fb, &mut one, at as i64)?,
            );
            break Ok(more == (0, 0));
        }
        let want = CHUNK.min((size - at) as usize);
        let na = read_full(&fa, &mut ba[..want], at)?;
        let nb = read_full(&fb, &mut bb[..want], at)?;
        if na != want || nb != want || ba[..want] != bb[..want] {
            break Ok(false);
        }
        at += want as u64;
    };
    for f in [&fa, &fb] {
        let _ = nix::fcntl::posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
    result
}

fn read_full(f: &OwnedFd, buf: &mut [u8], at: u64) -> Result<usize, Errno> {
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(f, &mut buf[got..], (at + got as u64) as i64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What [`replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The name now holds the survivor; the compared file lost that name.
    Done,
    /// The name held something else by then: left as it was.
    Changed,
    /// A system call failed; the name is as it was (or, if noted, see the log).
    Failed(Errno),
    /// Swapped back after a change, but the temporary could not be cleaned: it holds
    /// a client's file under a hidden name (never removed by distlink).
    LeftTemporary(Errno),
}

static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

fn temporary_name() -> String {
    format!(
        ".distlink-merge.{}.{}",
        std::process::id(),
        TEMPORARIES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces `name` in `dir`, which must hold the file `victim`, by a link to the inode
/// behind `survivor` (see the module doc for the steps).
pub fn replace(
    dir: BorrowedFd<'_>,
    name: &[u8],
    victim: &Facts,
    survivor: BorrowedFd<'_>,
) -> Replaced {
    // 1. The survivor under a fresh hidden name (a name a client made first is skipped).
    let mut tmp = temporary_name();
    let mut tries = 0;
    loop {
        match nix::unistd::linkat(survivor, c"", dir, tmp.as_str(), AtFlags::AT_EMPTY_PATH) {
            Ok(()) => break,
            Err(Errno::EEXIST) if tries < 8 => {
                tries += 1;
                tmp = temporary_name();
            }
            Err(e) => return Replaced::Failed(e),
        }
    }
    let is_victim = |st: &FileStat| {
        st.st_ino == victim.ino
            && st.st_size == victim.size
            && (st.st_mtime, st.st_mtime_nsec) == victim.mtime
    };
    // Still the compared file? (Checked again after the swap, which is what counts.)
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_victim(&st) => {}
        other => {
            let _ =
                nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            return match other {
                Err(e) if e != Errno::ENOENT => Replaced::Failed(e),
                _ => Replaced::Changed,
            };
        }
    }
    // 2. The atomic swap.
    let swap = || nix::fcntl::renameat2(dir, tmp.as_str(), dir, name, RenameFlags::RENAME_EXCHANGE);
    if let Err(e) = swap() {
        let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Replaced::Failed(e);
    }
    // 3. What came out.
    let out = fstatat(dir, tmp.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW);
    if out.as_ref().is_ok_and(is_victim) {
        return match nix::unistd::unlinkat(
            dir,
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) => Replaced::Done,
            Err(e) => Replaced::LeftTemporary(e),
        };
    }
    // Not the compared file: put it back, then remove the survivor's temporary link if
    // that is what the temporary holds now.
    if let Err(e) = swap() {
        return Replaced::LeftTemporary(e);
    }
    let survivor_ino = fstat(survivor).map(|s| s.st_ino).ok();
    match fstatat(dir, tmp.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if Some(st.st_ino) == survivor_ino => {
            let _ =
                nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            Replaced::Changed
        }
        Ok(_) => Replaced::LeftTemporary(Errno::EBUSY),
        Err(_) => Replaced::Changed,
    }
}

/// Checks `theirs` (an `O_PATH` descriptor, facts from before) against `ours` and
/// compares their bytes; `Ok(Some(survivor))` when they are identical, unchanged
/// throughout.
pub fn compare(
    ours: BorrowedFd<'_>,
    ours_before: &Facts,
    theirs: BorrowedFd<'_>,
    theirs_before: &Facts,
) -> Result<Option<Survivor>, Errno> {
    let Some(_) = decide(ours_before, theirs_before) else {
        return Ok(None);
    };
    if !same_bytes(ours, theirs, ours_before.size.max(0) as u64)? {
        return Ok(None);
    }
    let (a, b) = (Facts::of(&fstat(ours)?), Facts::of(&fstat(theirs)?));
    if !ours_before.unchanged(&a) || !theirs_before.unchanged(&b) {
        return Err(Errno::EAGAIN);
    }
    // Link counts now decide (the fan-out may have added names meanwhile).
    Ok(decide(&a, &b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn facts(size: i64, nlink: u64, mtime: i64) -> Facts {
        Facts {
            ino: 1,
            size,
            nlink,
            mtime: (mtime, 0),
            ctime: (0, 0),
        }
    }

    #[test]
    fn more_names_survive_then_older_then_the_copy_already_there() {
        assert_eq!(decide(&facts(10, 1, 5), &facts(11, 1, 5)), None);
        assert_eq!(
            decide(&facts(10, 3, 9), &facts(10, 1, 1)),
            Some(Survivor::Ours)
        );
        assert_eq!(
            decide(&facts(10, 1, 1), &facts(10, 2, 9)),
            Some(Survivor::Theirs)
        );
        assert_eq!(
            decide(&facts(10, 2, 1), &facts(10, 2, 9)),
            Some(Survivor::Ours)
        );
        assert_eq!(
            decide(&facts(10, 2, 5), &facts(10, 2, 5)),
            Some(Survivor::Theirs)
        );
    }

    #[test]
    fn replace_swaps_only_the_compared_file() {
        let dir = std::env::temp_dir().join(format!("distlink-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("pool"), b"same").unwrap();
        std::fs::write(dir.join("name"), b"same").unwrap();
        let d = crate::hosts::open_dir(&dir).unwrap();
        let open = |n: &str| {
            nix::fcntl::openat(&d, n, OFlag::O_PATH | OFlag::O_NOFOLLOW, Mode::empty()).unwrap()
        };
        let (pool, name) = (open("pool"), open("name"));
        let victim = Facts::of(&fstat(&name).unwrap());
        let ours = Facts::of(&fstat(&pool).unwrap());
        assert_eq!(
            compare(pool.as_fd(), &ours, name.as_fd(), &victim),
            Ok(Some(Survivor::Theirs))
        );
        // Another file renamed onto the name meanwhile: left alone.
        std::fs::write(dir.join("other"), b"client's").unwrap();
        std::fs::rename(dir.join("other"), dir.join("name")).unwrap();
        assert_eq!(
            replace(d.as_fd(), b"name", &victim, pool.as_fd()),
            Replaced::Changed
        );
        assert_eq!(std::fs::read(dir.join("name")).unwrap(), b"client's");
        // The compared file itself: replaced by the survivor, nothing else left behind.
        let now = open("name");
        let victim = Facts::of(&fstat(&now).unwrap());
        assert_eq!(
            replace(d.as_fd(), b"name", &victim, pool.as_fd()),
            Replaced::Done
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(dir.join("name")).unwrap().ino(),
            std::fs::metadata(dir.join("pool")).unwrap().ino()
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
