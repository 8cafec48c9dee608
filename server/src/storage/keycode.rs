//! Order-preserving encoding of MVCC keys.
//!
//! A version of user key `K` written at seqno `N` is stored under
//! `b'd' ++ escape(K) ++ [0, 0] ++ (u64::MAX - N) as big-endian`. Escaping maps
//! `0x00` to `0x00 0xff`, so the terminator `0x00 0x00` sorts before any
//! continuation of the key: the encoding orders by user key first, and within
//! a key, newest version first. "Newest version at or below S" is then a seek
//! to `(K, S)` and one step.

use crate::txn::Seqno;

/// Namespace of MVCC versions.
pub const DATA: u8 = b'd';
/// Namespace of node metadata (applied log id, membership).
pub const META: u8 = b'm';
/// Namespace of applied write-set ids (deduplication).
pub const TXN: u8 = b't';

/// The encoded prefix shared by all versions of `key` (ends with the terminator).
pub fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 11);
    out.push(DATA);
    escape_into(key, &mut out);
    out.extend_from_slice(&[0, 0]);
    out
}

/// The encoded start of the key space at or after `key` (no terminator), for range scans.
pub fn range_start(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(DATA);
    escape_into(key, &mut out);
    out
}

/// The encoded end of the whole data namespace (exclusive).
pub fn data_end() -> Vec<u8> {
    vec![DATA + 1]
}

/// The encoded version of `key` at `seqno`.
pub fn version_key(key: &[u8], seqno: Seqno) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&(u64::MAX - seqno).to_be_bytes());
    out
}

fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

/// Splits an encoded version key into the user key and the seqno.
pub fn decode_version_key(enc: &[u8]) -> Option<(Vec<u8>, Seqno)> {
    let body = enc.strip_prefix(&[DATA])?;
    if body.len() < 10 {
        return None;
    }
    let (escaped, seqno) = body.split_at(body.len() - 8);
    let escaped = escaped.strip_suffix(&[0, 0])?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let b = escaped[i];
        key.push(b);
        if b == 0 {
            if escaped.get(i + 1) != Some(&0xff) {
                return None;
            }
            i += 1;
        }
        i += 1;
    }
    let inv = u64::from_be_bytes(seqno.try_into().ok()?);
    Some((key, u64::MAX - inv))
}

/// A stored version's value: a tombstone or bytes.
pub fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![0],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(1);
            out.extend_from_slice(v);
            out
        }
    }
}

/// Decodes [`encode_value`]: `Ok(None)` is a tombstone.
pub fn decode_value(raw: &[u8]) -> Option<Option<&[u8]>> {
    match raw.split_first()? {
        (0, []) => Some(None),
        (1, rest) => Some(Some(rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(key in proptest::collection::vec(any::<u8>(), 0..20), seqno in any::<u64>()) {
            let enc = version_key(&key, seqno);
            prop_assert_eq!(decode_version_key(&enc), Some((key, seqno)));
        }

        #[test]
        fn order_is_key_then_newest_first(
            a in proptest::collection::vec(any::<u8>(), 0..6), sa in any::<u64>(),
            b in proptest::collection::vec(any::<u8>(), 0..6), sb in any::<u64>(),
        ) {
            let expected = (a.clone(), std::cmp::Reverse(sa)).cmp(&(b.clone(), std::cmp::Reverse(sb)));
            prop_assert_eq!(version_key(&a, sa).cmp(&version_key(&b, sb)), expected);
        }

        #[test]
        fn range_start_bounds_keys(a in proptest::collection::vec(any::<u8>(), 0..6),
                                   b in proptest::collection::vec(any::<u8>(), 0..6), s in any::<u64>()) {
            // b >= a as user keys iff every version of b sorts at or after range_start(a).
            prop_assert_eq!(b >= a, version_key(&b, s) >= range_start(&a));
        }
    }
}
