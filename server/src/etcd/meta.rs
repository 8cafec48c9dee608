//! Per-key metadata as etcd presents it: `create_revision`, `version` (how
//! many writes since the key was created) and `lease`, next to the
//! `mod_revision` every stored version carries.
//!
//! This is the one place that knows where they come from. In this build the
//! store keeps only each version's seqno, so [`of`] knows the mod revision
//! and nothing else: the others are reported as 0 and a compare whose
//! outcome depends on them is refused ([`Known`] says what can be decided
//! from existence alone: a present key has `version >= 1` and
//! `0 < create_revision <= mod_revision`; an absent one has all zeros).

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
        create_revision: None,
        version: None,
        lease: None,
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
