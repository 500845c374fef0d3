//! The only module with `unsafe`: thin, safe wrappers around the few Linux system calls
//! that neither `std` nor `nix` expose (fanotify in FID mode, file handles, `f_fsid`).
//!
//! Every file descriptor is wrapped in an [`OwnedFd`] the moment the kernel returns it,
//! every pointer handed to the kernel points into a buffer owned by the caller for the
//! whole call, and every `unsafe` block carries a `// SAFETY:` comment saying why.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Largest file handle the kernel hands out (`MAX_HANDLE_SZ` in `linux/exportfs.h`).
const MAX_HANDLE_SZ: usize = 128;

/// `fanotify_init(2)`: a new notification group.
pub fn fanotify_init(flags: libc::c_uint, event_f_flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: fanotify_init takes two integers and touches no memory of ours.
    let fd = unsafe { libc::fanotify_init(flags, event_f_flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fanotify_mark(2)` on `path` relative to `dir`. (A NULL pathname would not do: the
/// kernel looks the descriptor up without accepting `O_PATH` ones, and gives EBADF.)
pub fn fanotify_mark(
    group: BorrowedFd<'_>,
    flags: libc::c_uint,
    mask: u64,
    dir: BorrowedFd<'_>,
    path: &CStr,
) -> io::Result<()> {
    // SAFETY: both descriptors are borrowed, so open for the whole call, and `path` is a
    // NUL-terminated string that outlives it; no other memory is passed.
    let rc = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            flags,
            mask,
            dir.as_raw_fd(),
            path.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A file handle as `name_to_handle_at(2)` returns it, plus the mount it was read through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// `handle_type` of `struct file_handle`.
    pub handle_type: i32,
    /// The opaque `f_handle` bytes.
    pub bytes: Vec<u8>,
    /// The mount ID the handle was obtained through (`mount_id` out-parameter).
    pub mount_id: i32,
}

/// `struct file_handle` followed by room for the largest handle, 4-byte aligned as the
/// kernel's struct is.
#[repr(C)]
struct HandleBuf {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// `name_to_handle_at(2)` for `path` relative to `dir`, never following a final symlink.
/// An empty `path` means `dir` itself (`AT_EMPTY_PATH`).
pub fn name_to_handle_at(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<Handle> {
    let mut buf = HandleBuf {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    let flags = if path.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: `buf` is a `struct file_handle` whose `handle_bytes` tells the kernel the
    // room after the header (MAX_HANDLE_SZ bytes, which `f_handle` really has); `path` is
    // NUL-terminated and `mount_id` a valid out-pointer, all alive for the call.
    let rc = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            path.as_ptr(),
            (&raw mut buf).cast::<libc::file_handle>(),
            &raw mut mount_id,
            flags,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (buf.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(Handle {
        handle_type: buf.handle_type,
        bytes: buf.f_handle[..len].to_vec(),
        mount_id,
    })
}

/// `fstatfs(2)`.
fn statfs(fd: BorrowedFd<'_>) -> io::Result<libc::statfs> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `st` is a writable `struct statfs` that outlives the call.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so it filled the whole struct (and it was zeroed before).
    Ok(unsafe { st.assume_init() })
}

/// The filesystem ID (`statfs.f_fsid`) of the filesystem `fd` is on, as the 8 raw bytes
/// fanotify puts in its info records.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<[u8; 8]> {
    let st = statfs(fd)?;
    // `fsid_t` keeps its two ints private; it is plain data of exactly 8 bytes, so read it
    // byte-wise through a pointer to the field.
    const _: () = assert!(std::mem::size_of::<libc::fsid_t>() == 8);
    let mut out = [0u8; 8];
    // SAFETY: the field is 8 initialised bytes (asserted above) and `out` has room for 8;
    // the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const st.f_fsid).cast::<u8>(), out.as_mut_ptr(), 8);
    }
    Ok(out)
}

/// `statfs.f_type` (the filesystem magic) of the filesystem `fd` is on.
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on some targets, u32/i32 on others
    Ok(statfs(fd)?.f_type as i64)
}

/// `getxattr(2)` of the extended attribute `name` on `path` (following symlinks: used on
/// `/proc/self/fd/N`, which names exactly the inode behind descriptor N). Returns the
/// value's length, `Ok(None)` if the attribute is not set.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `path` and `name` are NUL-terminated; `buf` is writable for `buf.len()`
    // bytes, the size passed; all outlive the call.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// `setxattr(2)`: sets `name` to `value` on `path` (see [`getxattr`] for the path).
pub fn setxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated; `value` is readable for its length,
    // the size passed; all outlive the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn handle_of_a_directory_is_stable() {
        let dir = std::fs::File::open("/").unwrap();
        let a = name_to_handle_at(dir.as_fd(), c"").unwrap();
        let b = name_to_handle_at(dir.as_fd(), c"").unwrap();
        assert_eq!(a, b);
        assert!(!a.bytes.is_empty());
    }

    #[test]
    fn fsid_reads_eight_bytes() {
        let dir = std::fs::File::open("/").unwrap();
        let id = fsid(dir.as_fd()).unwrap();
        assert_eq!(id.len(), 8);
        assert!(fs_type(dir.as_fd()).unwrap() != 0);
    }
}
