//! Bounds-checked parser for the records `read(2)` returns from a fanotify group created
//! with `FAN_REPORT_DFID_NAME` (FID mode).
//!
//! Layout (fanotify(7)): each event is a `struct fanotify_event_metadata` (24 bytes:
//! `u32 event_len; u8 vers; u8 reserved; u16 metadata_len; u64 mask; i32 fd; i32 pid`)
//! followed by info records up to `event_len`. Each info record is
//! `{u8 type; u8 pad; u16 len}`, an 8-byte fsid, a `struct file_handle`
//! (`u32 handle_bytes; i32 handle_type; u8 f_handle[handle_bytes]`) and, for the `*_NAME`
//! types, a NUL-terminated name padded to 4 bytes.
//!
//! Nothing here trusts a length field: every slice is taken with `get`, names stay bytes
//! (any byte but `/` and NUL is valid in a name), and a malformed buffer yields
//! [`ParseError`] instead of a panic.

use std::fmt;

/// Size of `struct fanotify_event_metadata`.
pub const METADATA_LEN: usize = 24;
/// `FANOTIFY_METADATA_VERSION`.
pub const METADATA_VERSION: u8 = 3;

/// Info record types (`FAN_EVENT_INFO_TYPE_*`).
pub const INFO_FID: u8 = 1;
pub const INFO_DFID_NAME: u8 = 2;
pub const INFO_DFID: u8 = 3;
pub const INFO_OLD_DFID_NAME: u8 = 10;
pub const INFO_NEW_DFID_NAME: u8 = 12;

/// Size of an info record header plus fsid plus `struct file_handle` header.
const FID_HEADER_LEN: usize = 4 + 8 + 8;

/// Why a buffer could not be parsed further. Parsing stops at the first error, because
/// once a length is wrong there is no way to find the next event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes left than a metadata header.
    Truncated { offset: usize, left: usize },
    /// `event_len` is smaller than the header or runs past the buffer.
    BadEventLen {
        offset: usize,
        event_len: u32,
        left: usize,
    },
    /// `metadata_len` is below 24 or above `event_len`.
    BadMetadataLen { offset: usize, metadata_len: u16 },
    /// A kernel speaking another metadata version.
    Version { offset: usize, vers: u8 },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated { offset, left } => {
                write!(f, "truncated event at byte {offset}: {left} bytes left")
            }
            ParseError::BadEventLen {
                offset,
                event_len,
                left,
            } => write!(
                f,
                "bad event_len {event_len} at byte {offset} ({left} bytes left)"
            ),
            ParseError::BadMetadataLen {
                offset,
                metadata_len,
            } => {
                write!(f, "bad metadata_len {metadata_len} at byte {offset}")
            }
            ParseError::Version { offset, vers } => write!(
                f,
                "unsupported fanotify metadata version {vers} at byte {offset} (expected {METADATA_VERSION})"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// One event, borrowing the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// `FAN_*` bits.
    pub mask: u64,
    /// Always `FAN_NOFD` (-1) in FID mode; kept for completeness.
    pub fd: i32,
    /// Process (thread group) that caused the event.
    pub pid: i32,
    /// The info records, unparsed; see [`Event::records`].
    info: &'a [u8],
}

/// One file-identifier info record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FidRecord<'a> {
    /// `FAN_EVENT_INFO_TYPE_*`.
    pub info_type: u8,
    /// fsid + `handle_bytes` + `handle_type` + `f_handle`, contiguous as in the record:
    /// the key a directory is recognised by (see `hosts::object_key`).
    pub key: &'a [u8],
    /// The name after the handle for the `*_NAME` types, without its NUL; `None` for the
    /// other types or when the record holds no NUL-terminated name.
    pub name: Option<&'a [u8]>,
}

impl<'a> Event<'a> {
    /// The info records that could be parsed, in buffer order. A malformed record ends the
    /// walk (later records of the same event cannot be located reliably).
    pub fn records(&self) -> impl Iterator<Item = FidRecord<'a>> + 'a {
        let mut rest = self.info;
        std::iter::from_fn(move || {
            let (record, next) = parse_record(rest)?;
            rest = next;
            Some(record)
        })
    }

    /// The record naming the directory entry this event is about: `DFID_NAME` (create,
    /// modify, close, moved-to, …) or, for `FAN_RENAME`, the new name.
    pub fn dir_entry(&self) -> Option<FidRecord<'a>> {
        self.records().find(|r| {
            matches!(r.info_type, INFO_DFID_NAME | INFO_NEW_DFID_NAME) && r.name.is_some()
        })
    }
}

/// Parses one info record at the front of `buf`; returns it and the rest.
fn parse_record(buf: &[u8]) -> Option<(FidRecord<'_>, &[u8])> {
    let info_type = *buf.first()?;
    let len = u16::from_ne_bytes([*buf.get(2)?, *buf.get(3)?]) as usize;
    if len < 4 {
        return None;
    }
    let record = buf.get(..len)?;
    let rest = &buf[len..];
    // Types this parser does not know (pidfd, error, range, …) are skipped by length.
    if !matches!(
        info_type,
        INFO_FID | INFO_DFID_NAME | INFO_DFID | INFO_OLD_DFID_NAME | INFO_NEW_DFID_NAME
    ) {
        return Some((
            FidRecord {
                info_type,
                key: &[],
                name: None,
            },
            rest,
        ));
    }
    let handle_bytes = u32::from_ne_bytes(record.get(12..16)?.try_into().ok()?) as usize;
    let key_end = FID_HEADER_LEN.checked_add(handle_bytes)?;
    let key = record.get(4..key_end)?;
    let name = if matches!(
        info_type,
        INFO_DFID_NAME | INFO_OLD_DFID_NAME | INFO_NEW_DFID_NAME
    ) {
        let tail = record.get(key_end..)?;
        tail.iter().position(|&b| b == 0).map(|nul| &tail[..nul])
    } else {
        None
    };
    Some((
        FidRecord {
            info_type,
            key,
            name,
        },
        rest,
    ))
}

/// Iterator over the events in one `read(2)` buffer.
#[derive(Debug, Clone)]
pub struct Events<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

/// Parses the events in `buf`.
pub fn parse(buf: &[u8]) -> Events<'_> {
    Events {
        buf,
        offset: 0,
        failed: false,
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<Event<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let result = self.parse_one();
        self.failed = result.is_err();
        Some(result)
    }
}

impl<'a> Events<'a> {
    fn parse_one(&mut self) -> Result<Event<'a>, ParseError> {
        let offset = self.offset;
        let rest = &self.buf[offset..];
        let left = rest.len();
        let Some(header) = rest.get(..METADATA_LEN) else {
            return Err(ParseError::Truncated { offset, left });
        };
        let u32_at =
            |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let event_len = u32_at(0);
        let vers = header[4];
        let metadata_len = u16::from_ne_bytes([header[6], header[7]]);
        let mut mask_bytes = [0u8; 8];
        mask_bytes.copy_from_slice(&header[8..16]);
        let mask = u64::from_ne_bytes(mask_bytes);
        let fd = u32_at(16) as i32;
        let pid = u32_at(20) as i32;
        if vers != METADATA_VERSION {
            return Err(ParseError::Version { offset, vers });
        }
        let len = event_len as usize;
        if len < METADATA_LEN || len > left {
            return Err(ParseError::BadEventLen {
                offset,
                event_len,
                left,
            });
        }
        let meta = metadata_len as usize;
        if meta < METADATA_LEN || meta > len {
            return Err(ParseError::BadMetadataLen {
                offset,
                metadata_len,
            });
        }
        self.offset = offset + len;
        Ok(Event {
            mask,
            fd,
            pid,
            info: &rest[meta..len],
        })
    }
}

/// Builders for crafted buffers, shared by the unit tests here and elsewhere.
#[cfg(test)]
pub mod craft {
    use super::*;

    /// An info record of `info_type` with `fsid`, a handle and an optional name.
    pub fn record(
        info_type: u8,
        fsid: [u8; 8],
        handle_type: i32,
        handle: &[u8],
        name: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&fsid);
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&handle_type.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(name) = name {
            body.extend_from_slice(name);
            body.push(0);
        }
        while (body.len() + 4) % 4 != 0 {
            body.push(0);
        }
        let mut out = vec![info_type, 0];
        out.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A whole event: metadata header followed by `records`.
    pub fn event(mask: u64, pid: i32, records: &[Vec<u8>]) -> Vec<u8> {
        let info: Vec<u8> = records.concat();
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_LEN + info.len()) as u32).to_ne_bytes());
        out.push(METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        out.extend_from_slice(&info);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::craft::{event, record};
    use super::*;

    const FSID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn collect(buf: &[u8]) -> Vec<Result<Event<'_>, ParseError>> {
        parse(buf).collect()
    }

    #[test]
    fn parses_dfid_name_event() {
        let buf = event(
            libc::FAN_MOVED_TO,
            42,
            &[record(
                INFO_DFID_NAME,
                FSID,
                1,
                &[9, 9, 9, 9, 9, 9, 9, 9],
                Some(b"foo.tar.gz"),
            )],
        );
        let events = collect(&buf);
        assert_eq!(events.len(), 1);
        let ev = events[0].clone().unwrap();
        assert_eq!(ev.mask, libc::FAN_MOVED_TO);
        assert_eq!(ev.pid, 42);
        let rec = ev.dir_entry().unwrap();
        assert_eq!(rec.name, Some(&b"foo.tar.gz"[..]));
        assert_eq!(&rec.key[..8], &FSID);
        assert_eq!(rec.key.len(), 8 + 8 + 8);
    }

    #[test]
    fn keeps_non_utf8_names_as_bytes() {
        let name: &[u8] = b"\xff\xfe weird\n'\"-name";
        let buf = event(
            libc::FAN_CLOSE_WRITE,
            1,
            &[record(INFO_DFID_NAME, FSID, 1, &[1; 12], Some(name))],
        );
        let ev = parse(&buf).next().unwrap().unwrap();
        assert_eq!(ev.dir_entry().unwrap().name, Some(name));
    }

    #[test]
    fn parses_several_events_and_several_records() {
        let mut buf = event(
            libc::FAN_RENAME,
            7,
            &[
                record(
                    INFO_OLD_DFID_NAME,
                    FSID,
                    1,
                    &[1; 8],
                    Some(b"a.__download__"),
                ),
                record(INFO_NEW_DFID_NAME, FSID, 1, &[2; 8], Some(b"a")),
            ],
        );
        buf.extend(event(
            libc::FAN_CREATE,
            8,
            &[record(INFO_DFID_NAME, FSID, 1, &[3; 8], Some(b"b"))],
        ));
        let events: Vec<_> = collect(&buf).into_iter().map(Result::unwrap).collect();
        assert_eq!(events.len(), 2);
        let rename = events[0].dir_entry().unwrap();
        assert_eq!(rename.info_type, INFO_NEW_DFID_NAME);
        assert_eq!(rename.name, Some(&b"a"[..]));
        assert_eq!(events[0].records().count(), 2);
        assert_eq!(events[1].dir_entry().unwrap().name, Some(&b"b"[..]));
    }

    #[test]
    fn overflow_event_has_no_records() {
        let buf = event(libc::FAN_Q_OVERFLOW, -1, &[]);
        let ev = parse(&buf).next().unwrap().unwrap();
        assert_eq!(ev.mask, libc::FAN_Q_OVERFLOW);
        assert!(ev.dir_entry().is_none());
        assert_eq!(ev.records().count(), 0);
    }

    #[test]
    fn fid_record_identifies_object() {
        let buf = event(
            libc::FAN_DELETE_SELF,
            1,
            &[record(INFO_DFID, FSID, 1, &[5; 8], None)],
        );
        let ev = parse(&buf).next().unwrap().unwrap();
        assert!(ev.dir_entry().is_none());
        let rec = ev.records().next().unwrap();
        assert_eq!(
            (rec.info_type, rec.key.len(), rec.name),
            (INFO_DFID, 24, None)
        );
    }

    #[test]
    fn unknown_record_types_are_skipped() {
        let mut pidfd = vec![4u8, 0];
        pidfd.extend_from_slice(&8u16.to_ne_bytes());
        pidfd.extend_from_slice(&5i32.to_ne_bytes());
        let buf = event(
            libc::FAN_CREATE,
            1,
            &[pidfd, record(INFO_DFID_NAME, FSID, 1, &[1; 8], Some(b"x"))],
        );
        let ev = parse(&buf).next().unwrap().unwrap();
        assert_eq!(ev.dir_entry().unwrap().name, Some(&b"x"[..]));
    }

    #[test]
    fn truncated_buffers_give_errors_not_panics() {
        let buf = event(
            libc::FAN_CREATE,
            1,
            &[record(INFO_DFID_NAME, FSID, 1, &[1; 8], Some(b"name"))],
        );
        for cut in 0..buf.len() {
            // A cut buffer can never yield a whole event: its event_len runs past the end.
            assert!(
                parse(&buf[..cut]).all(|item| item.is_err()),
                "cut at {cut} parsed as an event"
            );
        }
        assert!(matches!(
            collect(&buf[..10])[0],
            Err(ParseError::Truncated { .. })
        ));
    }

    #[test]
    fn lying_lengths_are_rejected() {
        let mut buf = event(
            libc::FAN_CREATE,
            1,
            &[record(INFO_DFID_NAME, FSID, 1, &[1; 8], Some(b"n"))],
        );
        let good = buf.clone();
        buf[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(
            collect(&buf)[0],
            Err(ParseError::BadEventLen { .. })
        ));
        buf[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(matches!(
            collect(&buf)[0],
            Err(ParseError::BadEventLen { .. })
        ));
        let mut buf = good.clone();
        buf[6..8].copy_from_slice(&2u16.to_ne_bytes());
        assert!(matches!(
            collect(&buf)[0],
            Err(ParseError::BadMetadataLen { .. })
        ));
        let mut buf = good.clone();
        buf[4] = 2;
        assert!(matches!(collect(&buf)[0], Err(ParseError::Version { .. })));
        // handle_bytes claiming more than the record holds: the record is dropped.
        let mut buf = good.clone();
        buf[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&u32::MAX.to_ne_bytes());
        let ev = parse(&buf).next().unwrap().unwrap();
        assert!(ev.dir_entry().is_none());
        // Record len below its header: dropped, no infinite loop.
        let mut buf = good.clone();
        buf[METADATA_LEN + 2..METADATA_LEN + 4].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(parse(&buf).next().unwrap().unwrap().records().count(), 0);
        // Name without NUL terminator.
        let mut buf = good;
        let n = buf.len();
        for b in &mut buf[n - 4..] {
            *b = b'z';
        }
        assert!(parse(&buf).next().unwrap().unwrap().dir_entry().is_none());
    }

    #[test]
    fn stops_after_first_error() {
        let mut buf = vec![0u8; 24];
        buf.extend(event(libc::FAN_CREATE, 1, &[]));
        let items = collect(&buf);
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }

    /// A deterministic fuzz loop: random and mutated buffers must never panic.
    #[test]
    fn hostile_buffers_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = [
            event(
                libc::FAN_CREATE,
                1,
                &[record(INFO_DFID_NAME, FSID, 1, &[1; 8], Some(b"name"))],
            ),
            event(
                libc::FAN_RENAME,
                1,
                &[
                    record(INFO_OLD_DFID_NAME, FSID, 1, &[1; 8], Some(b"a")),
                    record(INFO_NEW_DFID_NAME, FSID, 1, &[1; 20], Some(b"bb")),
                ],
            ),
        ]
        .concat();
        for round in 0..20_000 {
            let mut buf = if round % 2 == 0 {
                let mut b = good.clone();
                for _ in 0..(rand() % 6 + 1) {
                    let i = (rand() as usize) % b.len();
                    b[i] = rand() as u8;
                }
                b.truncate((rand() as usize) % (b.len() + 1));
                b
            } else {
                (0..(rand() % 200)).map(|_| rand() as u8).collect()
            };
            if round % 7 == 0 && buf.len() > 4 {
                buf[4] = METADATA_VERSION;
            }
            for ev in parse(&buf).flatten() {
                for r in ev.records() {
                    let _ = (r.key.len(), r.name.map(<[u8]>::len));
                }
                let _ = ev.dir_entry();
            }
        }
    }
}
