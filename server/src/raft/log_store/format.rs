//! The log's record format: a record is framed as `[u32 len LE][u32 crc32 LE][payload]`,
//! the CRC covering the payload, and the payload is a `crate::codec` envelope whose tag
//! says which record it is (an entry, a truncation, a purge). Encoding, decoding, and
//! reading one frame off the front of a segment's bytes, telling a torn frame from a
//! damaged one.

use std::io;

use crate::codec::{self, Tag};
use crate::raft::types::{Entry, LogId};
use crate::Error;

/// Bytes of framing before each record's payload: length and CRC.
pub(super) const HEADER_LEN: usize = 8;

/// One record of a segment, as decoded.
#[derive(Debug)]
pub(super) enum Record {
    Entry(Entry),
    Truncate { since: u64 },
    Purge(LogId),
}

/// The encoding side of [`Record`], borrowing the entry instead of owning it; each
/// variant is written under its own `codec::Tag`.
pub(super) enum RecordRef<'a> {
    Entry(&'a Entry),
    Truncate { since: u64 },
    Purge(LogId),
}

/// Frames `payload` as `[len][crc][payload]`.
pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Appends one framed record to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, rec: &RecordRef<'_>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let encoded = match rec {
        RecordRef::Entry(e) => codec::encode_into(out, Tag::LogEntry, e),
        RecordRef::Truncate { since } => codec::encode_into(out, Tag::LogTruncate, since),
        RecordRef::Purge(log_id) => codec::encode_into(out, Tag::LogPurge, log_id),
    };
    if let Err(e) = encoded {
        out.truncate(start);
        return Err(io::Error::other(e));
    }
    let payload = &out[start + HEADER_LEN..];
    let Ok(len) = u32::try_from(payload.len()) else {
        out.truncate(start);
        return Err(io::Error::other("log record larger than 4 GiB"));
    };
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes one record's payload (a frame's content).
pub(super) fn decode_record(payload: &[u8], what: &str) -> Result<Record, Error> {
    let (tag, body) = codec::open(payload, what)?;
    Ok(match tag {
        Tag::LogEntry => Record::Entry(codec::body_of(body, what)?),
        Tag::LogTruncate => Record::Truncate {
            since: codec::body_of(body, what)?,
        },
        Tag::LogPurge => Record::Purge(codec::body_of(body, what)?),
        other => {
            return Err(Error::InvalidData(format!(
                "{what}: holds {other:?} ({}), not a log record",
                other as u16
            )))
        }
    })
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(super) enum FrameError {
    /// The header or payload runs past the end of the data.
    Torn,
    /// The payload does not match its CRC; the frame would end at `end`.
    Crc { end: usize },
    /// A zero length (never written by us; typically a zero-filled tail).
    ZeroLength,
}

/// Reads one frame at the start of `data`: the payload and the frame's total length.
pub(super) fn read_frame(data: &[u8]) -> Result<(&[u8], usize), FrameError> {
    if data.len() < HEADER_LEN {
        return Err(FrameError::Torn);
    }
    let len = u32::from_le_bytes(data[0..4].try_into().expect("4-byte slice")) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().expect("4-byte slice"));
    if len == 0 {
        return Err(FrameError::ZeroLength);
    }
    let end = HEADER_LEN + len;
    if data.len() < end {
        return Err(FrameError::Torn);
    }
    let payload = &data[HEADER_LEN..end];
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Crc { end });
    }
    Ok((payload, end))
}
