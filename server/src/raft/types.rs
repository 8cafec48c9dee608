//! The group channel's types: what travels through the Raft log.

use serde::{Deserialize, Serialize};

use crate::certify::Verdict;
use crate::txn::{Seqno, TxnId, WriteSet};

openraft::declare_raft_types!(
    /// Trireme's openraft configuration: log entries carry [`Request`]s.
    pub TypeConfig:
        D = Request,
        R = Response,
        // A snapshot stream file (`group::snapshot`): built, sent, received
        // and installed without holding the store in memory.
        SnapshotData = tokio::fs::File,
);

/// The openraft handle for this configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log id (term, leader, index).
pub type LogId = openraft::LogId<u64>;
/// A stored membership (log id + membership config).
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<u64>;

/// The application payload of one log entry. Its encoding (explicit tags,
/// not variant order) is in `crate::codec`: a new variant needs a new tag there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Write sets batched by the leader (group commit): certified and applied in
    /// order, all at the entry's index as their seqno.
    Batch(Vec<WriteSet>),
    /// A node left the cluster for good (`trireme leave`): its id may never
    /// join again. Recorded before the membership change that removes it.
    Depart(crate::txn::NodeId),
    /// Changes the replicated cluster parameters (`trireme config set`, or a
    /// new cluster's first leader proposing its own configuration).
    Params(crate::group::params::ParamsChange),
}

/// What applying one entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The entry's seqno (its log index).
    pub seqno: Seqno,
    /// One outcome per write set of a batch, in batch order.
    pub outcomes: Vec<(TxnId, Outcome)>,
}

/// The result of one write set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Certified (commit or abort) at this seqno.
    Certified(Seqno, Verdict),
    /// Already applied at this seqno: this copy was ignored.
    Duplicate(Seqno),
}
