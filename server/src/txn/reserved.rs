//! The reserved key range: where Trireme keeps its own replicated records.
//!
//! Records that every node must agree on (leases and the keys attached to
//! them, users and roles) are ordinary MVCC keys whose first two bytes are
//! `0xFF 0xFF`. They travel through the log in write sets like any client
//! write, so they are certified, applied in log order, kept in snapshots and
//! backups, and read at a seqno, with no second replication path.
//!
//! Clients never see or touch them: the client edges (`api`, and any other
//! listener that serves client requests) refuse a key in the range with an
//! error that names it, and clip scans and watches so that they end where
//! the range begins. The range sits at the top of the key space, so clipping
//! is one bound: an unbounded user scan ends at [`PREFIX`].
//!
//! Within the range, each owner takes a sub-prefix ([`system_key`]), e.g.
//! `0xFF 0xFF "lease/"`. Peers' `Forward` calls are not clipped or refused
//! here: a follower forwards the write sets its own services built.

use super::{KeyRange, WriteSet};
use crate::error::{Error, Result};

/// The first bytes of every reserved key. Nothing sorts after the range.
pub const PREFIX: &[u8] = &[0xff, 0xff];

/// Whether `key` is in the reserved range.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(PREFIX)
}

/// The reserved key `PREFIX ++ owner ++ rest`: `owner` names the module that
/// owns it (e.g. `b"lease/"`).
pub fn system_key(owner: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(PREFIX.len() + owner.len() + rest.len());
    key.extend_from_slice(PREFIX);
    key.extend_from_slice(owner);
    key.extend_from_slice(rest);
    key
}

fn refused(what: &str) -> Error {
    Error::InvalidInput(format!(
        "{what} begins with 0xFF 0xFF: keys in that range are reserved for Trireme's own records"
    ))
}

/// Refuses a key a client named, if it is reserved.
pub fn check_client_key(key: &[u8]) -> Result<()> {
    if is_reserved(key) {
        return Err(refused("key"));
    }
    Ok(())
}

/// A client's range clipped to the user key space: its end moves down to
/// [`PREFIX`]. A range that starts in the reserved range is refused.
pub fn clip_client_range(range: KeyRange) -> Result<KeyRange> {
    if is_reserved(&range.start) {
        return Err(refused("range start"));
    }
    let end = match range.end {
        Some(end) if end.as_slice() <= PREFIX => end,
        _ => PREFIX.to_vec(),
    };
    Ok(KeyRange {
        start: range.start,
        end: Some(end),
    })
}

/// Refuses a client's write set that writes, compares or reads a reserved
/// key, or scans from one; the ends of its scanned ranges are clipped.
pub fn check_client_write_set(ws: &mut WriteSet) -> Result<()> {
    for m in &ws.mutations {
        check_client_key(m.key())?;
    }
    for c in &ws.compares {
        check_client_key(&c.key)?;
    }
    for k in &ws.reads {
        check_client_key(k)?;
    }
    for r in ws.ranges.iter_mut() {
        *r = clip_client_range(std::mem::replace(
            r,
            KeyRange {
                start: Vec::new(),
                end: None,
            },
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::Mutation;

    fn range(start: &[u8], end: Option<&[u8]>) -> KeyRange {
        KeyRange {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn client_ranges_end_where_the_reserved_range_begins() {
        assert_eq!(
            clip_client_range(range(b"a", None)).unwrap(),
            range(b"a", Some(PREFIX))
        );
        assert_eq!(
            clip_client_range(range(b"a", Some(b"b"))).unwrap(),
            range(b"a", Some(b"b"))
        );
        assert_eq!(
            clip_client_range(range(b"a", Some(&[0xff, 0xff, 1]))).unwrap(),
            range(b"a", Some(PREFIX))
        );
        // A key just below the range stays reachable.
        assert!(range(b"a", Some(PREFIX)).contains(&[0xff, 0xfe, 0xff]));
        let err = clip_client_range(range(&[0xff, 0xff], None)).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn a_client_write_set_touching_the_range_is_refused() {
        let mut ws = WriteSet::blind(
            1,
            vec![Mutation::Put {
                key: system_key(b"lease/", b"1"),
                value: b"x".to_vec(),
                lease: 0,
            }],
        );
        let err = check_client_write_set(&mut ws).unwrap_err();
        assert!(err.to_string().contains("0xFF 0xFF"), "{err}");
        let mut ok = WriteSet::blind(
            1,
            vec![Mutation::Put {
                key: b"k".to_vec(),
                value: b"x".to_vec(),
                lease: 0,
            }],
        );
        ok.ranges.push(range(b"", None));
        check_client_write_set(&mut ok).unwrap();
        assert_eq!(ok.ranges, vec![range(b"", Some(PREFIX))]);
    }
}
