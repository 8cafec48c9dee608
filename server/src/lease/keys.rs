//! Where lease records live in the reserved key range, and how they are
//! encoded. The state machine imports this (it keeps the lease -> keys index
//! as it applies puts and deletes), so it imports nothing but `txn`.
//!
//! - `0xFF 0xFF "lease/r/" ++ id` (8 bytes, big-endian): the lease record;
//!   its value is the granted TTL in seconds (i64, big-endian).
//! - `0xFF 0xFF "lease/k/" ++ id ++ key`: one entry per key attached to the
//!   lease (empty value), written and removed by the state machine when it
//!   applies a put or delete that changes a key's lease.

use crate::txn::reserved::system_key;
use crate::txn::{Key, KeyRange};

/// The reserved sub-prefix of lease records.
pub const OWNER: &[u8] = b"lease/";

/// The key of lease `id`'s record.
pub fn record(id: i64) -> Key {
    let mut rest = b"r/".to_vec();
    rest.extend_from_slice(&id.to_be_bytes());
    system_key(OWNER, &rest)
}

/// Every lease record, in id order (ids are positive, so big-endian order is id order).
pub fn records() -> KeyRange {
    KeyRange::prefix(&system_key(OWNER, b"r/"))
}

/// The lease id of a record key, if it is one.
pub fn record_id(key: &[u8]) -> Option<i64> {
    let rest = key.strip_prefix(system_key(OWNER, b"r/").as_slice())?;
    Some(i64::from_be_bytes(rest.try_into().ok()?))
}

/// The index entry saying `key` is attached to lease `id`.
pub fn attached(id: i64, key: &[u8]) -> Key {
    let mut k = attached_prefix(id);
    k.extend_from_slice(key);
    k
}

fn attached_prefix(id: i64) -> Key {
    let mut rest = b"k/".to_vec();
    rest.extend_from_slice(&id.to_be_bytes());
    system_key(OWNER, &rest)
}

/// The index entries of every key attached to lease `id`.
pub fn attached_range(id: i64) -> KeyRange {
    KeyRange::prefix(&attached_prefix(id))
}

/// The user key of an index entry of lease `id`.
pub fn attached_key(id: i64, entry: &[u8]) -> Option<Key> {
    entry
        .strip_prefix(attached_prefix(id).as_slice())
        .map(<[u8]>::to_vec)
}

/// A lease record's value: the granted TTL.
pub fn encode_record(ttl_secs: i64) -> Vec<u8> {
    ttl_secs.to_be_bytes().to_vec()
}

/// The granted TTL a record holds, or `None` if it is not a record's value.
pub fn decode_record(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_stay_in_their_ranges() {
        assert_eq!(record_id(&record(42)), Some(42));
        assert!(records().contains(&record(1)));
        assert!(records().contains(&record(i64::MAX)));
        assert!(!records().contains(&attached(1, b"k")));
        assert_eq!(attached_key(7, &attached(7, b"a/b")), Some(b"a/b".to_vec()));
        assert!(attached_range(7).contains(&attached(7, b"")));
        assert!(!attached_range(7).contains(&attached(8, b"a")));
        assert!(crate::txn::reserved::is_reserved(&record(1)));
        assert_eq!(decode_record(&encode_record(30)), Some(30));
        assert_eq!(decode_record(b"bad"), None);
    }
}
