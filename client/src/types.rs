//! The client API's own types; prost types are converted at the edge.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use trireme_proto::v1 as proto;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Sees every write acknowledged before the read started (Raft read index).
    #[default]
    Linearizable,
    /// Sees at least everything this client has committed or read.
    Session,
    /// Whatever the node has applied: fast, possibly stale, never partial.
    Local,
}

impl ReadConsistency {
    /// The wire value.
    pub(crate) fn to_proto(self) -> proto::ReadConsistency {
        match self {
            ReadConsistency::Linearizable => proto::ReadConsistency::Linearizable,
            ReadConsistency::Session => proto::ReadConsistency::Session,
            ReadConsistency::Local => proto::ReadConsistency::Local,
        }
    }
}

impl FromStr for ReadConsistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linearizable" => Ok(ReadConsistency::Linearizable),
            "session" => Ok(ReadConsistency::Session),
            "local" => Ok(ReadConsistency::Local),
            other => Err(format!(
                "unknown read consistency {other:?} (expected linearizable, session or local)"
            )),
        }
    }
}

impl fmt::Display for ReadConsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Session => "session",
            ReadConsistency::Local => "local",
        })
    }
}

/// Which conflicts a transaction is certified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Keys and ranges read, and keys written.
    #[default]
    Serializable,
    /// Keys written only: first-committer-wins snapshot isolation.
    Snapshot,
}

impl Isolation {
    /// The wire value.
    pub(crate) fn to_proto(self) -> proto::Isolation {
        match self {
            Isolation::Serializable => proto::Isolation::Serializable,
            Isolation::Snapshot => proto::Isolation::Snapshot,
        }
    }
}

impl FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "serializable" => Ok(Isolation::Serializable),
            "snapshot" => Ok(Isolation::Snapshot),
            other => Err(format!(
                "unknown isolation {other:?} (expected serializable or snapshot)"
            )),
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Serializable => "serializable",
            Isolation::Snapshot => "snapshot",
        })
    }
}

/// A key, its value, and the seqno of the write set that wrote that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for keys-only scans).
    pub value: Vec<u8>,
    /// The seqno of the write that produced this version.
    pub version: u64,
}

impl From<proto::KeyValue> for Versioned {
    fn from(kv: proto::KeyValue) -> Self {
        Versioned {
            key: kv.key,
            value: kv.value,
            version: kv.version,
        }
    }
}

/// Which keys a scan covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyRange {
    /// Every key.
    #[default]
    All,
    /// Keys starting with these bytes.
    Prefix(Vec<u8>),
    /// Keys in `[start, end)`; an empty `end` means no upper bound.
    Range {
        /// Inclusive lower bound (empty: the first key).
        start: Vec<u8>,
        /// Exclusive upper bound (empty: unbounded).
        end: Vec<u8>,
    },
}

impl KeyRange {
    /// The range as `[start, end)`, with an empty `end` meaning unbounded.
    pub fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyRange::All => (Vec::new(), Vec::new()),
            KeyRange::Prefix(p) => (p.clone(), prefix_end(p)),
            KeyRange::Range { start, end } => (start.clone(), end.clone()),
        }
    }

    /// Whether `key` falls in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::All => true,
            KeyRange::Prefix(p) => key.starts_with(p),
            KeyRange::Range { start, end } => in_bounds(key, start, end),
        }
    }
}

/// Whether `key` is in `[start, end)`, an empty `end` being unbounded.
pub(crate) fn in_bounds(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// The smallest key greater than every key starting with `prefix`, or empty
/// (unbounded) when there is none (an empty or all-`0xff` prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// What a scan reads: a range, at most `limit` pairs, with or without values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanSpec {
    /// The keys to scan.
    pub range: KeyRange,
    /// At most this many pairs; 0 lets the server choose.
    pub limit: u32,
    /// Return keys and versions only, with empty values.
    pub keys_only: bool,
}

impl ScanSpec {
    /// Every key with this prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        ScanSpec {
            range: KeyRange::Prefix(prefix.into()),
            ..ScanSpec::default()
        }
    }

    /// Keys in `[start, end)`; an empty bound is open.
    pub fn range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        ScanSpec {
            range: KeyRange::Range {
                start: start.into(),
                end: end.into(),
            },
            ..ScanSpec::default()
        }
    }

    /// The same scan, returning at most `limit` pairs.
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// The same scan, without values.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
}

/// One cluster member as a node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The member's node id.
    pub id: u64,
    /// The member's peer address (what the membership records).
    pub address: String,
    /// The member's client address; empty when the reporting node does not know it yet.
    pub client_address: String,
    /// "voter" or "learner".
    pub role: String,
    /// Whether the reporting node currently reaches it.
    pub up: bool,
    /// Up, but its apply has not progressed for a while although behind.
    pub stalled: bool,
}

/// A node's view of itself and of the cluster (the `Status` RPC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: u64,
    /// The node's own advertised peer address.
    pub address: String,
    /// The node's own advertised client address.
    pub client_address: String,
    /// Raft role: leader, follower, candidate, learner or shutdown.
    pub role: String,
    /// Galera-like state: SYNCED, JOINING, DONOR, JOINED, NON_PRIMARY.
    pub state: String,
    /// Why the node is NON_PRIMARY (empty otherwise).
    pub state_reason: String,
    /// Voters in the membership.
    pub cluster_size: u64,
    /// On the leader: HEALTHY, or DEGRADED while a voter is unreplicated; empty elsewhere.
    pub cluster_health: String,
    /// On the leader: voters it has not replicated to for a while although behind.
    pub unreplicated_voters: Vec<u64>,
    /// Log entries held but not yet applied.
    pub apply_lag: u64,
    /// State transfers (snapshots) sent to other nodes.
    pub snapshots_sent: u64,
    /// State transfers installed from the leader.
    pub snapshots_received: u64,
    /// Log entries retained for replay.
    pub log_retained: u64,
    /// Raft log index of the newest entry.
    pub last_log_index: u64,
    /// First Raft log index retained (older entries were purged after a snapshot).
    pub log_first_index: u64,
    /// Bytes of the log entries retained.
    pub log_retained_bytes: u64,
    /// Time writers were slowed by flow control, in milliseconds.
    pub flow_control_paused_ms: u64,
    /// Voters this node evicted as leader.
    pub evictions: u64,
    /// The leader's node id; 0 when none is known.
    pub leader_id: u64,
    /// The Raft term.
    pub term: u64,
    /// Highest seqno applied to this node's store.
    pub applied_seqno: u64,
    /// Highest seqno known committed in the log.
    pub committed_seqno: u64,
    /// Write sets this node certified as committed.
    pub commits: u64,
    /// Write sets this node certified as aborted.
    pub cert_failures: u64,
    /// Certification failures by reason (`write_conflict`, `read_conflict`, ...).
    pub cert_failures_by_reason: BTreeMap<String, u64>,
    /// Duplicate copies of write sets ignored (resubmissions after a leader change).
    pub duplicates: u64,
    /// Blind writes the server retried after a conflict.
    pub server_retries: u64,
    /// Write sets applied.
    pub write_sets_applied: u64,
    /// Batches of write sets applied.
    pub batches_applied: u64,
    /// The members of the cluster.
    pub members: Vec<MemberStatus>,
}

impl From<proto::StatusResponse> for NodeStatus {
    fn from(s: proto::StatusResponse) -> Self {
        NodeStatus {
            node_id: s.node_id,
            address: s.address,
            client_address: s.client_address,
            role: s.role,
            state: s.state,
            state_reason: s.state_reason,
            cluster_size: s.cluster_size,
            cluster_health: s.cluster_health,
            unreplicated_voters: s.unreplicated_voters,
            apply_lag: s.apply_lag,
            snapshots_sent: s.snapshots_sent,
            snapshots_received: s.snapshots_received,
            log_retained: s.log_retained,
            last_log_index: s.last_log_index,
            log_first_index: s.log_first_index,
            log_retained_bytes: s.log_retained_bytes,
            flow_control_paused_ms: s.flow_control_paused_ms,
            evictions: s.evictions,
            leader_id: s.leader_id,
            term: s.term,
            applied_seqno: s.applied_seqno,
            committed_seqno: s.committed_seqno,
            commits: s.commits,
            cert_failures: s.cert_failures,
            cert_failures_by_reason: s.cert_failures_by_reason.into_iter().collect(),
            duplicates: s.duplicates,
            server_retries: s.server_retries,
            write_sets_applied: s.write_sets_applied,
            batches_applied: s.batches_applied,
            members: s
                .members
                .into_iter()
                .map(|m| MemberStatus {
                    id: m.id,
                    address: m.address,
                    client_address: m.client_address,
                    role: m.role,
                    up: m.up,
                    stalled: m.stalled,
                })
                .collect(),
        }
    }
}

/// The cluster-wide parameters that decide verdicts, as one node has applied them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// The answering node.
    pub node_id: u64,
    /// How many seqnos a transaction's snapshot may lag its commit.
    pub cert_window: u64,
    /// The seqno of the log entry that set the values (0: not set yet).
    pub since_seqno: u64,
    /// The answering node's own `cert_window` flag (ignored when it differs).
    pub node_cert_window: u64,
}

impl From<proto::ClusterConfig> for ClusterConfig {
    fn from(c: proto::ClusterConfig) -> Self {
        ClusterConfig {
            node_id: c.node_id,
            cert_window: c.cert_window,
            since_seqno: c.since_seqno,
            node_cert_window: c.node_cert_window,
        }
    }
}

/// The membership as one node sees it (the `Members` RPC and join/leave replies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Members {
    /// The leader's node id; 0 when none is known.
    pub leader_id: u64,
    /// The members.
    pub members: Vec<MemberStatus>,
}

impl Members {
    /// Converts members from the wire.
    pub fn from_proto(leader_id: u64, members: Vec<proto::Member>) -> Self {
        Members {
            leader_id,
            members: members
                .into_iter()
                .map(|m| MemberStatus {
                    id: m.id,
                    address: m.address,
                    client_address: m.client_address,
                    role: m.role,
                    up: m.up,
                    stalled: m.stalled,
                })
                .collect(),
        }
    }
}

/// A digest of a node's data at a seqno: equal on every node at equal seqnos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Checksum {
    /// The seqno the digest was taken at.
    pub seqno: u64,
    /// The digest of every live key and value.
    pub checksum: u64,
    /// The number of live keys.
    pub keys: u64,
    /// Hash chain over every certification verdict up to `seqno`.
    pub verdict_chain: u64,
}

impl From<proto::ChecksumResponse> for Checksum {
    fn from(c: proto::ChecksumResponse) -> Self {
        Checksum {
            seqno: c.seqno,
            checksum: c.checksum,
            keys: c.keys,
            verdict_chain: c.verdict_chain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
        assert_eq!(prefix_end(b""), Vec::<u8>::new());
    }

    #[test]
    fn ranges_contain_what_their_bounds_say() {
        let p = KeyRange::Prefix(b"k/".to_vec());
        let (start, end) = p.bounds();
        for key in [&b"k/"[..], b"k/a", b"k/\xff", b"k0", b"k", b"j"] {
            assert_eq!(p.contains(key), in_bounds(key, &start, &end), "{key:?}");
        }
        let r = KeyRange::Range {
            start: b"b".to_vec(),
            end: Vec::new(),
        };
        assert!(r.contains(b"zzz") && r.contains(b"b") && !r.contains(b"a"));
    }

    #[test]
    fn consistency_and_isolation_parse_their_names() {
        assert_eq!("LOCAL".parse(), Ok(ReadConsistency::Local));
        assert_eq!("session".parse(), Ok(ReadConsistency::Session));
        assert!("eventual".parse::<ReadConsistency>().is_err());
        assert_eq!("snapshot".parse(), Ok(Isolation::Snapshot));
        assert_eq!(Isolation::Serializable.to_string(), "serializable");
    }
}
