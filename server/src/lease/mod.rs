//! Leases: keys that are deleted when their lease expires or is revoked.
//!
//! A lease is a record in the reserved key range ([`keys`]): its id and the
//! TTL it was granted with. Granting, attaching a key (a put with a lease),
//! revoking and expiring are all write sets, so every node applies them at
//! the same log position: a key attached to a lease that expires is deleted
//! on every node at the same seqno. The state machine keeps an index
//! lease -> keys ([`keys::attached`]) as it applies puts and deletes, so a
//! revoke or an expiry knows what to delete.
//!
//! Deadlines are not replicated: they are the leader's, on its monotonic
//! clock ([`Deadlines`]). The leader sees each lease for the first time (it
//! just became leader, or the lease was just granted) and gives it its full
//! TTL from then; a keep-alive, sent to the leader (a follower forwards it
//! over the peer port) and never a log entry, restarts it. So after a leader
//! change no lease expires before a whole TTL from when the new leader took
//! over, the rule etcd follows. When a deadline passes, the leader (only
//! it) builds the removal write set: it reads the lease record and its keys
//! at a snapshot and deletes them, certified SERIALIZABLE against those
//! reads and the lease's index range, so a lease granted again, or a key
//! attached, re-put or deleted meanwhile aborts the removal instead of being
//! wrongly deleted; the leader tries again at its next tick.
//!
//! What it owns: the lease key layout, the deadline table and the expiry
//! decision ([`decide`], a pure function), the write sets of grant, revoke
//! and expiry, and the [`Leases`] handle that the client services call.
//!
//! What it may import: `txn`, `storage`, `certify` (abort kinds), `error`.
//! What it must never import: `group`, `node`, `api`: the node implements
//! [`LeaseBackend`] for it (and `group::state_machine` imports [`keys`]).

pub mod keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Mvcc;
use crate::txn::{Compare, Condition, Isolation, Key, Mutation, NodeId, Seqno, TxnId, WriteSet};

/// The longest TTL a lease may be granted with, in seconds (etcd's limit).
pub const MAX_TTL_SECS: i64 = 9_000_000_000;

/// How many times a revoke retries a removal that lost a conflict (a key
/// attached or re-put while it was built) before it gives up.
const REVOKE_ATTEMPTS: usize = 8;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease id (chosen by the client, or by the server when asked with 0).
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
}

/// What [`Leases::time_to_live`] reports about a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: i64,
    /// Seconds left before the leader expires it (rounded up).
    pub remaining_ttl: i64,
    /// The keys attached to it, in key order (empty unless asked for).
    pub keys: Vec<Key>,
}

/// A question for the leader about one lease, sent over the peer port when
/// this node is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderCall {
    /// The lease.
    pub id: i64,
    /// The leader answers once it has applied this seqno (what the caller
    /// has seen, so a lease granted through the caller is found).
    pub min_seqno: Seqno,
    /// Restart the lease's deadline (a keep-alive); otherwise only report it.
    pub keep_alive: bool,
}

/// The leader's answer to a [`LeaderCall`]: `(granted_ttl, remaining_ttl)`,
/// or `None` when the lease does not exist.
pub type LeaderAnswer = Option<(i64, i64)>;

/// What the lease code needs from the node it runs on.
#[tonic::async_trait]
pub trait LeaseBackend: Send + Sync + 'static {
    /// This node's id (the origin of the write sets it builds).
    fn node_id(&self) -> NodeId;
    /// The store.
    fn mvcc(&self) -> &Mvcc;
    /// The seqno this node has applied.
    fn applied(&self) -> Seqno;
    /// The Raft term, if this node is the leader of the primary component.
    fn leading(&self) -> Option<u64>;
    /// Orders and certifies `ws`; its seqno once applied here.
    async fn commit(&self, ws: WriteSet) -> Result<Seqno>;
    /// A linearizable read seqno, applied on this node.
    async fn read_seqno(&self) -> Result<Seqno>;
    /// Waits until this node has applied `seqno`.
    async fn wait_applied(&self, seqno: Seqno) -> Result<()>;
    /// Sends `call` to the leader (this node is not it) and returns its answer.
    async fn call_leader(&self, call: LeaderCall) -> Result<LeaderAnswer>;
}

/// The leader's deadlines: lease id -> when it expires, on this node's
/// monotonic clock, for the term in which this node leads. Empty on a
/// follower; emptied when the term changes, so a new leader starts every
/// lease over (see [`decide`]).
#[derive(Default)]
pub struct Deadlines {
    inner: Mutex<(u64, HashMap<i64, Instant>)>,
}

impl Deadlines {
    fn with<T>(&self, term: u64, f: impl FnOnce(&mut HashMap<i64, Instant>) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if guard.0 != term {
            *guard = (term, HashMap::new());
        }
        f(&mut guard.1)
    }

    /// Forgets every deadline (this node no longer leads).
    pub fn clear(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *guard = (0, HashMap::new());
    }

    /// How many leases have a deadline (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }

    /// Whether no lease has a deadline.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The expiry decision, a pure function of the lease records (`(id,
/// granted_ttl)` as stored at one seqno), the leader's deadlines and `now`:
/// a lease seen for the first time gets `now + ttl` (so a lease never
/// expires earlier than a full TTL after this leader first saw it);
/// deadlines of leases no longer recorded are dropped; the leases whose
/// deadline is at or before `now` are returned, in id order.
pub fn decide(
    records: &[(i64, i64)],
    deadlines: &mut HashMap<i64, Instant>,
    now: Instant,
) -> Vec<i64> {
    let live: std::collections::BTreeSet<i64> = records.iter().map(|(id, _)| *id).collect();
    deadlines.retain(|id, _| live.contains(id));
    let mut due = Vec::new();
    for (id, ttl) in records {
        let deadline = *deadlines
            .entry(*id)
            .or_insert_with(|| now + ttl_duration(*ttl));
        if deadline <= now {
            due.push(*id);
        }
    }
    due.sort_unstable();
    due
}

fn ttl_duration(ttl_secs: i64) -> Duration {
    Duration::from_secs(ttl_secs.clamp(0, MAX_TTL_SECS) as u64)
}

/// Seconds from `now` to `deadline`, rounded up (0 once passed).
fn remaining_secs(deadline: Instant, now: Instant) -> i64 {
    let left = deadline.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The lease records stored at `at`, as `(id, granted_ttl)` in id order.
pub fn records(mvcc: &Mvcc, at: Seqno) -> Result<Vec<(i64, i64)>> {
    let (rows, _) = mvcc.scan(&keys::records(), at, usize::MAX, false)?;
    rows.into_iter()
        .map(
            |r| match (keys::record_id(&r.key), keys::decode_record(&r.value)) {
                (Some(id), Some(ttl)) => Ok((id, ttl)),
                _ => Err(Error::InvalidData(format!(
                    "undecodable lease record {:?}",
                    r.key
                ))),
            },
        )
        .collect()
}

/// The granted TTL of lease `id` at `at`, if it exists.
pub fn record(mvcc: &Mvcc, id: i64, at: Seqno) -> Result<Option<i64>> {
    match mvcc.get(&keys::record(id), at)? {
        None => Ok(None),
        Some((_, v)) => keys::decode_record(&v)
            .map(Some)
            .ok_or_else(|| Error::InvalidData(format!("undecodable record of lease {id}"))),
    }
}

/// The keys attached to lease `id` at `at`, in key order.
pub fn attached_keys(mvcc: &Mvcc, id: i64, at: Seqno) -> Result<Vec<Key>> {
    let (rows, _) = mvcc.scan(&keys::attached_range(id), at, usize::MAX, true)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| keys::attached_key(id, &r.key))
        .collect())
}

/// The write set that removes lease `id` and every key attached to it, as
/// stored at `at` (`None` if the lease does not exist there). It is
/// certified SERIALIZABLE from snapshot `at` against the lease record, the
/// attached keys and the lease's whole index range: if any of them changed
/// after `at` (the lease revoked and granted again, a key re-put, detached
/// or newly attached), it aborts and deletes nothing.
pub fn removal(mvcc: &Mvcc, origin: NodeId, id: i64, at: Seqno) -> Result<Option<WriteSet>> {
    if record(mvcc, id, at)?.is_none() {
        return Ok(None);
    }
    let attached = attached_keys(mvcc, id, at)?;
    let record_key = keys::record(id);
    let mut mutations = vec![Mutation::Delete {
        key: record_key.clone(),
    }];
    mutations.extend(attached.iter().map(|k| Mutation::Delete { key: k.clone() }));
    let mut reads = vec![record_key];
    reads.extend(attached);
    Ok(Some(WriteSet {
        id: TxnId::random(),
        origin,
        snapshot: Some(at),
        isolation: Isolation::Serializable,
        mutations,
        compares: Vec::new(),
        reads,
        ranges: vec![keys::attached_range(id)],
    }))
}

/// The compares a client write set needs for the leases its puts attach
/// keys to: each lease must still exist when the write set is certified
/// (so a key is never attached to a lease revoked or expired meanwhile).
pub fn attach_compares(ws: &WriteSet) -> Vec<Compare> {
    let mut leases: Vec<i64> = ws
        .mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        })
        .collect();
    leases.sort_unstable();
    leases.dedup();
    leases
        .into_iter()
        .map(|id| Compare {
            key: keys::record(id),
            condition: Condition::Exists(true),
        })
        .collect()
}

fn not_found(id: i64) -> Error {
    Error::NotFound(format!("lease {id} not found"))
}

fn is_conflict(e: &Error) -> bool {
    matches!(
        e,
        Error::Aborted(
            crate::certify::Abort::ReadConflict { .. }
                | crate::certify::Abort::WriteConflict { .. }
                | crate::certify::Abort::RangeConflict { .. }
                | crate::certify::Abort::SnapshotTooOld { .. }
        )
    )
}

/// The lease API of one node: what the client services call (`Kv`'s lease
/// methods and the etcd `Lease` service), through `Node::leases`.
#[derive(Clone)]
pub struct Leases {
    backend: Arc<dyn LeaseBackend>,
    deadlines: Arc<Deadlines>,
}

impl Leases {
    /// The lease API over `backend`, with the node's deadline table.
    pub fn new(backend: Arc<dyn LeaseBackend>, deadlines: Arc<Deadlines>) -> Self {
        Leases { backend, deadlines }
    }

    /// Grants a lease of `ttl_secs` seconds (1 to [`MAX_TTL_SECS`]) with id
    /// `id` (positive), or an id the server picks when `id` is 0. The
    /// lease exists once the grant is applied (a write set in the log); an
    /// id already in use is refused (`InvalidInput`, naming it).
    pub async fn grant(&self, id: i64, ttl_secs: i64) -> Result<LeaseGrant> {
        if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
            return Err(Error::InvalidInput(format!(
                "lease TTL {ttl_secs} s is out of range: it must be 1 to {MAX_TTL_SECS} seconds"
            )));
        }
        if id < 0 {
            return Err(Error::InvalidInput(format!(
                "lease id {id} is negative: ids are positive (0 asks the server to pick one)"
            )));
        }
        let id = if id == 0 {
            // A random positive id: no coordination needed between nodes.
            (rand::random::<i64>() & i64::MAX).max(1)
        } else {
            id
        };
        let key = keys::record(id);
        let mut ws = WriteSet::blind(
            self.backend.node_id(),
            vec![Mutation::Put {
                key: key.clone(),
                value: keys::encode_record(ttl_secs),
                lease: 0,
            }],
        );
        ws.compares.push(Compare {
            key,
            condition: Condition::Exists(false),
        });
        match self.backend.commit(ws).await {
            Ok(_) => Ok(LeaseGrant { id, ttl: ttl_secs }),
            Err(Error::Aborted(crate::certify::Abort::CompareFailed { .. })) => {
                Err(Error::InvalidInput(format!(
                    "lease {id} already exists: revoke it or pick another id"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Revokes lease `id`: deletes it and every key attached to it, in one
    /// write set (so at one seqno on every node). `NotFound` if it does not
    /// exist. A removal that loses a conflict (a key attached meanwhile) is
    /// built again, up to a few times.
    pub async fn revoke(&self, id: i64) -> Result<Seqno> {
        let mut last = None;
        for _ in 0..REVOKE_ATTEMPTS {
            let at = self.backend.read_seqno().await?;
            let Some(ws) = removal(self.backend.mvcc(), self.backend.node_id(), id, at)? else {
                return Err(not_found(id));
            };
            match self.backend.commit(ws).await {
                Ok(seqno) => return Ok(seqno),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("revoke made no attempt".into())))
    }

    /// Restarts lease `id`'s deadline on the leader (forwarded to it from a
    /// follower) and returns its granted TTL, or 0 if the lease does not
    /// exist or its deadline already passed (its removal is under way;
    /// etcd's answer too). Not a log entry.
    pub async fn keep_alive(&self, id: i64) -> Result<i64> {
        let answer = self.ask_leader(id, true, self.backend.applied()).await?;
        Ok(answer.map_or(0, |(granted, _)| granted))
    }

    /// Lease `id`'s granted and remaining TTL (the leader's), and its
    /// attached keys when `keys`; `None` if it does not exist.
    pub async fn time_to_live(&self, id: i64, keys: bool) -> Result<Option<LeaseInfo>> {
        let at = self.backend.read_seqno().await?;
        if record(self.backend.mvcc(), id, at)?.is_none() {
            return Ok(None);
        }
        let Some((granted_ttl, remaining_ttl)) = self.ask_leader(id, false, at).await? else {
            return Ok(None);
        };
        let keys = if keys {
            attached_keys(self.backend.mvcc(), id, at)?
        } else {
            Vec::new()
        };
        Ok(Some(LeaseInfo {
            id,
            granted_ttl,
            remaining_ttl,
            keys,
        }))
    }

    /// The ids of every lease, in id order (a linearizable read).
    pub async fn list(&self) -> Result<Vec<i64>> {
        let at = self.backend.read_seqno().await?;
        Ok(records(self.backend.mvcc(), at)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Prepares a client write set whose puts attach keys to leases: a lease
    /// that does not exist is refused (`NotFound` "lease N not found"), and
    /// the compares of [`attach_compares`] are added so that certification
    /// refuses it too if the lease goes before the write set is ordered.
    /// Call it after the client checks (the compares name reserved keys).
    pub async fn attach(&self, ws: &mut WriteSet) -> Result<()> {
        let compares = attach_compares(ws);
        if compares.is_empty() {
            return Ok(());
        }
        let mvcc = self.backend.mvcc();
        let mut fresh = None;
        for c in &compares {
            let id = keys::record_id(&c.key).unwrap_or_default();
            // This node's applied state first; a lease granted elsewhere and
            // not applied here yet is looked up with a linearizable read.
            if mvcc.get(&c.key, self.backend.applied())?.is_some() {
                continue;
            }
            let at = match fresh {
                Some(at) => at,
                None => *fresh.insert(self.backend.read_seqno().await?),
            };
            if mvcc.get(&c.key, at)?.is_none() {
                return Err(Error::NotFound(format!(
                    "lease {id} not found: grant it before attaching keys to it"
                )));
            }
        }
        ws.compares.extend(compares);
        Ok(())
    }

    async fn ask_leader(&self, id: i64, keep_alive: bool, seen: Seqno) -> Result<LeaderAnswer> {
        let call = LeaderCall {
            id,
            min_seqno: seen,
            keep_alive,
        };
        if self.backend.leading().is_some() {
            self.answer(call).await
        } else {
            self.backend.call_leader(call).await
        }
    }

    /// The leader's side of a [`LeaderCall`] (from this node or from a
    /// follower over the peer port). `Unavailable` if this node does not lead.
    pub async fn answer(&self, call: LeaderCall) -> Result<LeaderAnswer> {
        self.backend.wait_applied(call.min_seqno).await?;
        let Some(term) = self.backend.leading() else {
            return Err(Error::Unavailable(
                "this node is not the leader: lease deadlines are kept by the leader".into(),
            ));
        };
        let at = self.backend.applied();
        let Some(granted) = record(self.backend.mvcc(), call.id, at)? else {
            return Ok(None);
        };
        let now = Instant::now();
        let remaining = self.deadlines.with(term, |d| {
            let deadline = *d
                .entry(call.id)
                .or_insert_with(|| now + ttl_duration(granted));
            if deadline <= now {
                // Due: its removal is decided (as etcd, a keep-alive is too late).
                return None;
            }
            if call.keep_alive {
                let renewed = now + ttl_duration(granted);
                d.insert(call.id, renewed);
                return Some(remaining_secs(renewed, now));
            }
            Some(remaining_secs(deadline, now))
        });
        Ok(remaining.map(|r| (granted, r)))
    }

    /// One pass of the leader's expiry: on the leader, reads the lease
    /// records at the applied seqno, decides which are due ([`decide`]) and
    /// commits the removal of each. Returns the leases removed. On a
    /// follower it forgets every deadline and does nothing.
    pub async fn expire_due(&self) -> Result<Vec<i64>> {
        let Some(term) = self.backend.leading() else {
            self.deadlines.clear();
            return Ok(Vec::new());
        };
        let at = self.backend.applied();
        let mvcc = self.backend.mvcc();
        let recs = records(mvcc, at)?;
        let now = Instant::now();
        let due = self.deadlines.with(term, |d| decide(&recs, d, now));
        let mut removed = Vec::new();
        for id in due {
            let Some(ws) = removal(mvcc, self.backend.node_id(), id, at)? else {
                continue;
            };
            match self.backend.commit(ws).await {
                Ok(seqno) => {
                    tracing::info!(lease = id, seqno, "lease expired: removed it and its keys");
                    self.deadlines.with(term, |d| d.remove(&id));
                    removed.push(id);
                }
                // Kept alive, re-attached or revoked meanwhile: decided again next pass.
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(lease = id, error = %e, "lease removal lost a conflict");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
