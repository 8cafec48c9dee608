//! Write sets: what a transaction sends to be ordered and certified.
//!
//! A transaction executes on one node against a snapshot seqno `S`, buffers its
//! writes, and at commit ships everything certification needs in one
//! [`WriteSet`]: the mutations, the conditions (etcd-style compares), the keys it
//! read and the ranges it scanned. The server keeps no per-transaction state, so
//! a write set can be built by any client, against any node that has applied `S`.
//!
//! These are the replicated payload: they are serialized into the Raft log with
//! bincode, never as prost types, so the wire API can evolve apart from the log.
//!
//! CAVEATS: ranges are byte ranges over user keys; there is no predicate read
//! set finer than a range.
//!
//! What it owns: [`WriteSet`] and its parts, node ids and seqnos, and the
//! [`Limits`] every write set is checked against before it is ordered. It
//! is the vocabulary of the whole crate: nearly every module imports it.
//!
//! What it must never import: anything else in the crate but `error` (a
//! dependency here would be a dependency of everything), nor tonic, prost,
//! sled or openraft: the replicated payload must not change shape when a
//! library does.

mod limits;
pub mod reserved;
mod structure;

pub use limits::Limits;

use serde::{Deserialize, Serialize};

/// Position of a write set in the global order: the index of the Raft log entry
/// that carries it. Write sets batched into one entry share its seqno and are
/// certified one after the other, in batch order.
pub type Seqno = u64;

/// Identifies a node in the cluster (and in Raft).
pub type NodeId = u64;

/// A key: arbitrary non-empty bytes, ordered bytewise.
pub type Key = Vec<u8>;

/// A value: arbitrary bytes.
pub type Value = Vec<u8>;

/// A write set's unique id, chosen at random by the origin node. The state
/// machine ignores a second copy of an id it has applied within the window, so
/// that a write set resubmitted after a leader change never applies twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxnId(pub u128);

impl TxnId {
    /// A fresh random id.
    pub fn random() -> Self {
        TxnId(rand::random())
    }
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Which conflicts a write set is certified against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Written keys, read keys and scanned ranges (phantoms included).
    #[default]
    Serializable,
    /// Written keys only: first-committer-wins.
    Snapshot,
}

/// One buffered write.
///
/// Encoded (in the log and in `Forward`) as its wire form: a put without a
/// lease keeps the shape it had before leases existed (variant 0), so old
/// log entries and write sets decode unchanged, and a put with a lease is a
/// variant of its own (2), which a build that predates leases refuses
/// rather than misreads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Set `key` to `value`.
    Put {
        /// The key written.
        key: Key,
        /// The new value.
        value: Value,
        /// The lease to attach the key to (0: none). The key is deleted
        /// when the lease expires or is revoked.
        lease: i64,
    },
    /// Remove `key` (writes a tombstone version).
    Delete {
        /// The key deleted.
        key: Key,
    },
}

/// [`Mutation`] as it is encoded (borrowed, for serializing).
#[derive(Serialize)]
enum MutationRef<'a> {
    Put {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
    },
    PutWithLease {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
        lease: i64,
    },
}

/// [`Mutation`] as it is encoded (owned, for deserializing). Variants are
/// encoded by position: never reorder them, only append.
#[derive(Deserialize)]
enum MutationWire {
    Put {
        #[serde(with = "serde_bytes")]
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Value,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
    PutWithLease {
        #[serde(with = "serde_bytes")]
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Value,
        lease: i64,
    },
}

impl Serialize for Mutation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Mutation::Put {
                key,
                value,
                lease: 0,
            } => MutationRef::Put { key, value },
            Mutation::Put { key, value, lease } => MutationRef::PutWithLease {
                key,
                value,
                lease: *lease,
            },
            Mutation::Delete { key } => MutationRef::Delete { key },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Mutation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match MutationWire::deserialize(d)? {
            MutationWire::Put { key, value } => Mutation::Put {
                key,
                value,
                lease: 0,
            },
            MutationWire::PutWithLease { key, value, lease } => Mutation::Put { key, value, lease },
            MutationWire::Delete { key } => Mutation::Delete { key },
        })
    }
}

impl Mutation {
    /// The key this mutation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

/// What a [`Compare`] checks about a key's current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key's version (seqno of its newest live version) equals this; 0 means absent.
    Version(Seqno),
    /// The key exists (or not).
    Exists(bool),
    /// The key exists with exactly this value.
    Value(#[serde(with = "serde_bytes")] Value),
}

/// A condition on one key, checked at certification in log order on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key checked.
    #[serde(with = "serde_bytes")]
    pub key: Key,
    /// What must hold.
    pub condition: Condition,
}

/// A half-open key range `[start, end)`; `end: None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyRange {
    /// Inclusive start.
    #[serde(with = "serde_bytes")]
    pub start: Key,
    /// Exclusive end, or unbounded.
    pub end: Option<Key>,
}

impl KeyRange {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// The smallest key greater than every key with `prefix`, or `None` if there is
/// none (the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Key> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Everything certification needs to decide a transaction, and everything
/// apply needs to carry it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSet {
    /// Unique id, for deduplication and for the origin to find its verdict.
    pub id: TxnId,
    /// The node whose client is waiting for the verdict.
    pub origin: NodeId,
    /// The snapshot the transaction read at; `None` for a blind write, which is
    /// certified only against its compares.
    pub snapshot: Option<Seqno>,
    /// Which conflicts abort it.
    pub isolation: Isolation,
    /// The writes, applied in order (a later write of a key wins).
    pub mutations: Vec<Mutation>,
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// Keys read (SERIALIZABLE checks them).
    pub reads: Vec<Key>,
    /// Ranges scanned (SERIALIZABLE checks them, phantoms included).
    pub ranges: Vec<KeyRange>,
}

impl WriteSet {
    /// A blind write set (no snapshot, no read set) with these mutations.
    pub fn blind(origin: NodeId, mutations: Vec<Mutation>) -> Self {
        WriteSet {
            id: TxnId::random(),
            origin,
            snapshot: None,
            isolation: Isolation::Serializable,
            mutations,
            compares: Vec::new(),
            reads: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// Approximate encoded size in bytes, for limits and batching.
    pub fn size_bytes(&self) -> usize {
        let muts: usize = self
            .mutations
            .iter()
            .map(|m| match m {
                Mutation::Put { key, value, .. } => key.len() + value.len() + 16,
                Mutation::Delete { key } => key.len() + 8,
            })
            .sum();
        let cmps: usize = self
            .compares
            .iter()
            .map(|c| {
                c.key.len()
                    + 16
                    + match &c.condition {
                        Condition::Value(v) => v.len(),
                        _ => 0,
                    }
            })
            .sum();
        let reads: usize = self.reads.iter().map(|k| k.len() + 8).sum();
        let ranges: usize = self
            .ranges
            .iter()
            .map(|r| r.start.len() + r.end.as_ref().map_or(0, Vec::len) + 16)
            .sum();
        64 + muts + cmps + reads + ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Mutation` as it was encoded before leases (a derived enum).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum OldMutation {
        Put {
            #[serde(with = "serde_bytes")]
            key: Key,
            #[serde(with = "serde_bytes")]
            value: Value,
        },
        Delete {
            #[serde(with = "serde_bytes")]
            key: Key,
        },
    }

    /// A put without a lease and a delete keep their old bytes both ways;
    /// a put with a lease round-trips and is refused by the old decoder.
    #[test]
    fn mutations_keep_their_old_encoding_and_a_lease_is_a_new_variant() {
        let old = OldMutation::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let new = Mutation::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 0,
        };
        let old_bytes = bincode::serialize(&old).unwrap();
        assert_eq!(bincode::serialize(&new).unwrap(), old_bytes);
        assert_eq!(bincode::deserialize::<Mutation>(&old_bytes).unwrap(), new);
        let del = bincode::serialize(&OldMutation::Delete { key: b"k".to_vec() }).unwrap();
        assert_eq!(
            bincode::deserialize::<Mutation>(&del).unwrap(),
            Mutation::Delete { key: b"k".to_vec() }
        );
        let leased = Mutation::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 42,
        };
        let bytes = bincode::serialize(&leased).unwrap();
        assert_eq!(bincode::deserialize::<Mutation>(&bytes).unwrap(), leased);
        assert!(bincode::deserialize::<OldMutation>(&bytes).is_err());
    }
}
