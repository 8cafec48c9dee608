//! Per-key metadata as etcd presents it: `create_revision`, `version` (how
//! many writes since the key was created) and `lease`, next to the
//! `mod_revision` every stored version carries.
//!
//! This is the one place that knows where they come from: the store keeps
//! them with each version (`storage::KeyMeta`, computed at apply from the
//! key's previous version). Values written by a build that predates them
//! read as new keys (created at their own seqno, version 1, no lease).
//! [`Known`] still lets a compare be decided from bounds where a field is
//! not known exactly.

use crate::storage::Versioned;

/// What is known of one present key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Seqno of its newest write.
    pub mod_revision: i64,
    /// Seqno that created it, if the store records it.
    pub create_revision: Option<i64>,
    /// Writes since it was created, if the store records it.
    pub version: Option<i64>,
    /// Its lease (0: none), if the store records it.
    pub lease: Option<i64>,
}

/// The metadata of a present key's newest version.
pub fn of(v: &Versioned) -> Meta {
    Meta {
        mod_revision: v.version as i64,
        create_revision: Some(v.create_seqno as i64),
        version: Some(v.modifications as i64),
        lease: Some(v.lease),
    }
}

/// Whether a compare's outcome on a present key can be decided without the
/// exact value: `Some(outcome)` when the bounds decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// The exact value.
    Exact(i64),
    /// Only bounds: `lo <= value <= hi`.
    Within(i64, i64),
}

impl Known {
    /// A field as far as it is known: exact, or within `[lo, hi]`.
    pub fn from(value: Option<i64>, lo: i64, hi: i64) -> Known {
        match value {
            Some(v) => Known::Exact(v),
            None => Known::Within(lo, hi),
        }
    }
}
