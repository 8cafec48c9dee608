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

/// Per-key metadata stored with each live version (etcd's `KeyValue`
/// fields): computed by the state machine at apply time from the key's
/// previous version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyMeta {
    /// Seqno of the write that created the key (its first version after it
    /// was absent or deleted): etcd's `create_revision`.
    pub create_seqno: Seqno,
    /// Writes of the key since it was created, 1 for a new key: etcd's `version`.
    pub modifications: u64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl KeyMeta {
    /// The metadata of a key created at `seqno` with no lease.
    pub fn created(seqno: Seqno) -> Self {
        KeyMeta {
            create_seqno: seqno,
            modifications: 1,
            lease: 0,
        }
    }
}

/// Tag byte of a tombstone.
const TAG_TOMBSTONE: u8 = 0;
/// Tag byte of a value written as a new key without a lease (and of every
/// value written before metadata was stored): its metadata is
/// [`KeyMeta::created`] at its own seqno.
const TAG_VALUE: u8 = 1;
/// Tag byte of a value with its metadata: `create_seqno` (u64 BE),
/// `modifications` (u64 BE), `lease` (i64 BE), then the value.
const TAG_VALUE_META: u8 = 2;
/// Bytes of the metadata after [`TAG_VALUE_META`].
const META_LEN: usize = 24;

/// A stored version's value: a tombstone or bytes, with the metadata of
/// a key created at this version (see [`encode_value_meta`]).
pub fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![TAG_TOMBSTONE],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(TAG_VALUE);
            out.extend_from_slice(v);
            out
        }
    }
}

/// A stored version's value at `seqno` with its metadata. A new key without
/// a lease (the common case) is stored in the short form of
/// [`encode_value`], which costs one byte; anything else carries 24 bytes
/// of metadata.
pub fn encode_value_meta(value: Option<&[u8]>, seqno: Seqno, meta: &KeyMeta) -> Vec<u8> {
    match value {
        Some(v) if *meta != KeyMeta::created(seqno) => {
            let mut out = Vec::with_capacity(v.len() + 1 + META_LEN);
            out.push(TAG_VALUE_META);
            out.extend_from_slice(&meta.create_seqno.to_be_bytes());
            out.extend_from_slice(&meta.modifications.to_be_bytes());
            out.extend_from_slice(&meta.lease.to_be_bytes());
            out.extend_from_slice(v);
            out
        }
        _ => encode_value(value),
    }
}

/// Decodes a stored value: `Some(None)` is a tombstone, `None` is bytes
/// this build cannot read.
pub fn decode_value(raw: &[u8]) -> Option<Option<&[u8]>> {
    Some(decode_value_meta(raw, 0)?.map(|(v, _)| v))
}

/// Decodes a stored value written at `seqno`, with its metadata:
/// `Some(None)` is a tombstone, `None` is bytes this build cannot read.
pub fn decode_value_meta(raw: &[u8], seqno: Seqno) -> Option<Option<(&[u8], KeyMeta)>> {
    match raw.split_first()? {
        (&TAG_TOMBSTONE, []) => Some(None),
        (&TAG_VALUE, rest) => Some(Some((rest, KeyMeta::created(seqno)))),
        (&TAG_VALUE_META, rest) if rest.len() >= META_LEN => {
            let (meta, value) = rest.split_at(META_LEN);
            let word = |i: usize| -> [u8; 8] {
                let mut w = [0u8; 8];
                w.copy_from_slice(&meta[i * 8..i * 8 + 8]);
                w
            };
            Some(Some((
                value,
                KeyMeta {
                    create_seqno: u64::from_be_bytes(word(0)),
                    modifications: u64::from_be_bytes(word(1)),
                    lease: i64::from_be_bytes(word(2)),
                },
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_written_before_metadata_decode_as_new_keys() {
        // The first layout: a tag byte 1 then the value.
        let old = [1u8, b'v'];
        assert_eq!(
            decode_value_meta(&old, 7),
            Some(Some((&b"v"[..], KeyMeta::created(7))))
        );
        assert_eq!(decode_value(&[0]), Some(None));
        assert_eq!(decode_value(&[2, 1, 2]), None, "metadata cut short");
        assert_eq!(decode_value(&[3, b'v']), None, "unknown tag");
    }

    #[test]
    fn a_new_key_without_lease_keeps_the_short_form() {
        let raw = encode_value_meta(Some(b"v"), 9, &KeyMeta::created(9));
        assert_eq!(raw, vec![1, b'v']);
        assert_eq!(encode_value_meta(None, 9, &KeyMeta::created(9)), vec![0]);
    }

    proptest! {
        #[test]
        fn values_roundtrip_with_metadata(
            value in proptest::collection::vec(any::<u8>(), 0..20),
            seqno in any::<u64>(), create in any::<u64>(), mods in 1..u64::MAX, lease in any::<i64>(),
        ) {
            let meta = KeyMeta { create_seqno: create, modifications: mods, lease };
            let raw = encode_value_meta(Some(&value), seqno, &meta);
            prop_assert_eq!(decode_value_meta(&raw, seqno), Some(Some((value.as_slice(), meta))));
            prop_assert_eq!(decode_value(&raw), Some(Some(value.as_slice())));
        }

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
