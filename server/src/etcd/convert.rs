//! etcd message <-> node type conversions, and the errors etcd clients
//! recognize, kept apart from the services' logic.

use tonic::Status;
use trireme_proto::etcd::mvccpb;

use super::meta;
use crate::error::Error;
use crate::storage::Versioned;
use crate::txn::{reserved, Key, KeyRange, Mutation, Seqno};

/// etcd's message for an empty key (clients match on it).
pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
/// etcd's message for a revision below the history kept.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's message for a revision not reached yet.
pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
/// etcd's message for a lease that does not exist.
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// The keys a request names with etcd's `key`/`range_end` conventions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    /// `range_end` empty: exactly this key.
    One(Key),
    /// `[key, range_end)`; `range_end = "\0"`: every key from `key` on.
    Range(KeyRange),
}

impl Keys {
    /// Decodes `key`/`range_end`, keeping to the user key space: a reserved
    /// key is refused, a range reaching into the reserved range is clipped.
    pub fn from(key: &[u8], range_end: &[u8]) -> Result<Keys, Error> {
        if key.is_empty() {
            return Err(Error::InvalidInput(EMPTY_KEY.into()));
        }
        if range_end.is_empty() {
            reserved::check_client_key(key)?;
            return Ok(Keys::One(key.to_vec()));
        }
        let end = (range_end != [0u8]).then(|| range_end.to_vec());
        Ok(Keys::Range(reserved::clip_client_range(KeyRange {
            start: key.to_vec(),
            end,
        })?))
    }

    /// The key range to scan.
    pub fn range(&self) -> KeyRange {
        match self {
            Keys::One(k) => {
                let mut end = k.clone();
                end.push(0);
                KeyRange {
                    start: k.clone(),
                    end: Some(end),
                }
            }
            Keys::Range(r) => r.clone(),
        }
    }
}

/// A present key as etcd presents it (value left out with `keys_only`).
pub fn kv(v: &Versioned, keys_only: bool) -> mvccpb::KeyValue {
    let m = meta::of(v);
    mvccpb::KeyValue {
        key: v.key.clone(),
        create_revision: m.create_revision.unwrap_or(0),
        mod_revision: m.mod_revision,
        version: m.version.unwrap_or(0),
        value: if keys_only {
            Vec::new()
        } else {
            v.value.clone()
        },
        lease: m.lease.unwrap_or(0),
    }
}

/// A put of `value` at `key`, attached to `lease` (0: none).
pub fn put(key: Key, value: Vec<u8>, lease: i64) -> Mutation {
    Mutation::Put { key, value, lease }
}

/// A revision from a request: negative is refused.
pub fn revision(rev: i64, what: &str) -> Result<Seqno, Error> {
    u64::try_from(rev)
        .map_err(|_| Error::InvalidInput(format!("{what} {rev} is negative: revisions start at 1")))
}

/// Maps a node error to the status an etcd client expects: a read below the
/// history horizon is etcd's "compacted" and a revision not reached yet its
/// "future revision" (both OUT_OF_RANGE, as etcd); everything else as the
/// node's own API maps it.
pub fn status(err: Error) -> Status {
    match err {
        Error::SnapshotTooOld(m) => {
            tracing::debug!(detail = %m, "etcd read below the history horizon");
            Status::out_of_range(COMPACTED)
        }
        Error::InvalidInput(m) if m == FUTURE_REV => Status::out_of_range(m),
        other => crate::api::to_status(other),
    }
}
