//! Replays arbitrary bytes as committed log entries through certification
//! and apply, on the in-memory engine: the harness of the fuzz target
//! (`fuzz/`) and of the property test in this module's tests.
//!
//! The bytes are decoded as the log decodes an entry's payload (bincode of
//! [`Request`]s); what does not decode is refused, as the log and the peer
//! wire refuse it. What decodes must be applied without a panic or an error,
//! whatever it holds, and must reach the same verdicts, chain and data
//! however the entries are grouped into apply runs and across a restart of
//! the state machine: that is what keeps replicas equal when one of them
//! applies a log in other chunks than another.

use std::sync::Arc;

use openraft::{CommittedLeaderId, EntryPayload};

use super::state_machine::StateMachine;
use crate::certify::{Abort, Certifier, Verdict};
use crate::raft::types::{Entry, LogId, Outcome, Request, Response};
use crate::storage::{MemoryEngine, Mvcc};

/// A small window, so that snapshots fall below the horizon often.
const WINDOW: u64 = 4;

/// What a replay applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries applied.
    pub entries: usize,
    /// Write sets certified (duplicates included).
    pub write_sets: usize,
    /// Write sets committed.
    pub commits: usize,
    /// Write sets aborted as `invalid_write_set`.
    pub invalid: usize,
}

/// Decodes `data` as a run of log payloads and applies it twice: in one
/// apply run, and one entry per run with a restart halfway. `Ok(None)`: the
/// bytes do not decode. `Err`: a broken promise (an apply error, an
/// invalid write set not aborted as such, replicas that disagree), named.
pub fn replay_bytes(data: &[u8]) -> Result<Option<Replayed>, String> {
    match bincode::deserialize::<Vec<Request>>(data) {
        Ok(requests) => replay(requests).map(Some),
        Err(_) => Ok(None),
    }
}

/// Applies `requests` as entries 1, 2, ... (see [`replay_bytes`]).
pub fn replay(requests: Vec<Request>) -> Result<Replayed, String> {
    let entries: Vec<Entry> = requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
            payload: EntryPayload::Normal(r),
        })
        .collect();
    let open = |mvcc: &Mvcc| {
        StateMachine::open(mvcc.clone(), Certifier::new(WINDOW), None)
            .map_err(|e| format!("opening the state machine: {e}"))
    };
    let apply = |sm: &mut StateMachine, run: &[Entry]| {
        sm.apply_entries(run.to_vec())
            .map_err(|e| format!("apply failed: {e}"))
    };

    // Replica A: every entry in one apply run.
    let a = Mvcc::new(Arc::new(MemoryEngine::new()));
    let (mut sm_a, applied_a) = open(&a)?;
    let responses = apply(&mut sm_a, &entries)?;

    // Replica B: one entry per run, reopened halfway (ids then come from storage).
    let b = Mvcc::new(Arc::new(MemoryEngine::new()));
    let (mut sm_b, mut applied_b) = open(&b)?;
    let mut responses_b: Vec<Response> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == entries.len() / 2 {
            (sm_b, applied_b) = open(&b)?;
        }
        responses_b.extend(apply(&mut sm_b, std::slice::from_ref(e))?);
    }
    if responses != responses_b {
        return Err(format!(
            "verdicts depend on how entries are grouped into apply runs:\n{responses:?}\n{responses_b:?}"
        ));
    }
    if applied_a.chain() != applied_b.chain() {
        return Err(format!(
            "verdict chains differ between replicas: {:?} and {:?}",
            applied_a.chain(),
            applied_b.chain()
        ));
    }
    let last = entries.len() as u64;
    let sums = (a.checksum(last), b.checksum(last));
    match sums {
        (Ok(x), Ok(y)) if x == y => {}
        other => return Err(format!("data differs between replicas: {other:?}")),
    }

    let mut out = Replayed {
        entries: entries.len(),
        ..Replayed::default()
    };
    if responses.len() != entries.len() {
        return Err(format!(
            "{} responses for {} entries",
            responses.len(),
            entries.len()
        ));
    }
    for (entry, response) in entries.iter().zip(&responses) {
        let wss: &[crate::txn::WriteSet] = match &entry.payload {
            EntryPayload::Normal(Request::Batch(wss)) => wss,
            _ => &[],
        };
        if response.outcomes.len() != wss.len() || response.seqno != entry.log_id.index {
            return Err(format!(
                "entry {}: response {response:?}",
                entry.log_id.index
            ));
        }
        for (ws, (id, outcome)) in wss.iter().zip(&response.outcomes) {
            out.write_sets += 1;
            if *id != ws.id {
                return Err(format!("outcome for {id} given to write set {}", ws.id));
            }
            let invalid = ws.structural_problem().is_some();
            match outcome {
                Outcome::Certified(_, Verdict::Abort(Abort::InvalidWriteSet { .. })) => {
                    if !invalid {
                        return Err(format!("valid write set aborted as invalid: {ws:?}"));
                    }
                    out.invalid += 1;
                }
                _ if invalid && !matches!(outcome, Outcome::Duplicate(_)) => {
                    return Err(format!("invalid write set {ws:?} got {outcome:?}"));
                }
                Outcome::Certified(seqno, Verdict::Commit) => {
                    out.commits += 1;
                    // Its writes are there (or overwritten later).
                    for m in &ws.mutations {
                        match a.last_write(m.key(), crate::txn::Seqno::MAX) {
                            Ok(Some(s)) if s >= *seqno => {}
                            other => {
                                return Err(format!(
                                    "committed write of {:?} at {seqno} missing: {other:?}",
                                    m.key()
                                ))
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::txn::{Compare, Condition, Isolation, KeyRange, Mutation, TxnId, WriteSet};

    /// Keys from a tiny alphabet (the empty key included), so write sets collide.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(vec![&b""[..], b"a", b"b", b"c", b"z", b"a\0"])
            .prop_map(<[u8]>::to_vec)
    }

    fn range() -> impl Strategy<Value = KeyRange> {
        (key(), prop::option::of(key())).prop_map(|(start, end)| KeyRange { start, end })
    }

    fn write_set() -> impl Strategy<Value = WriteSet> {
        let mutation = prop_oneof![
            (key(), prop::collection::vec(any::<u8>(), 0..3)).prop_map(|(key, value)| {
                Mutation::Put {
                    key,
                    value,
                    lease: 0,
                }
            }),
            key().prop_map(|key| Mutation::Delete { key }),
        ];
        let condition = prop_oneof![
            (0u64..6).prop_map(Condition::Version),
            any::<bool>().prop_map(Condition::Exists),
            prop::collection::vec(any::<u8>(), 0..2).prop_map(Condition::Value),
        ];
        let compare = (key(), condition).prop_map(|(key, condition)| Compare { key, condition });
        (
            0u128..6,
            prop::option::of(0u64..12),
            any::<bool>(),
            prop::collection::vec(mutation, 0..3),
            prop::collection::vec(compare, 0..2),
            prop::collection::vec(key(), 0..2),
            prop::collection::vec(range(), 0..2),
        )
            .prop_map(
                |(id, snapshot, snapshot_iso, mutations, compares, reads, ranges)| WriteSet {
                    id: TxnId(id),
                    origin: 1,
                    snapshot,
                    isolation: if snapshot_iso {
                        Isolation::Snapshot
                    } else {
                        Isolation::Serializable
                    },
                    mutations,
                    compares,
                    reads,
                    ranges,
                },
            )
    }

    fn requests() -> impl Strategy<Value = Vec<Request>> {
        let request = prop_oneof![
            9 => prop::collection::vec(write_set(), 0..4).prop_map(Request::Batch),
            1 => (1u64..4).prop_map(Request::Depart),
        ];
        prop::collection::vec(request, 0..10)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any decodable log, invalid write sets included, applies without a
        /// panic or an error and to the same result on every replica.
        #[test]
        fn any_log_applies_identically(requests in requests()) {
            if let Err(broken) = replay(requests) {
                prop_assert!(false, "{}", broken);
            }
        }

        /// Bytes near a valid encoding (flipped, cut short) decode to
        /// something that applies cleanly, or are refused as undecodable.
        #[test]
        fn corrupted_encodings_apply_or_are_refused(
            requests in requests(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = bincode::serialize(&requests).expect("requests encode");
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Err(broken) = replay_bytes(&bytes) {
                prop_assert!(false, "{}", broken);
            }
        }

        /// Random bytes never break a promise either.
        #[test]
        fn random_bytes_apply_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(broken) = replay_bytes(&bytes) {
                prop_assert!(false, "{}", broken);
            }
        }
    }

    /// The harness sees what it claims to: a commit, a conflict, an invalid
    /// write set (inverted range after a pending write), and undecodable bytes.
    #[test]
    fn replay_counts_commits_and_invalid_write_sets() {
        let put = |id: u128, key: &[u8]| {
            let mut ws = WriteSet::blind(
                1,
                vec![Mutation::Put {
                    key: key.to_vec(),
                    value: b"v".to_vec(),
                    lease: 0,
                }],
            );
            ws.id = TxnId(id);
            ws
        };
        let mut inverted = put(2, b"m");
        inverted.snapshot = Some(0);
        inverted.ranges = vec![KeyRange {
            start: b"z".to_vec(),
            end: Some(b"a".to_vec()),
        }];
        let mut conflict = put(3, b"a");
        conflict.snapshot = Some(0);
        let requests = vec![
            Request::Batch(vec![put(1, b"a"), inverted, conflict]),
            Request::Batch(vec![put(1, b"a")]),
        ];
        let bytes = bincode::serialize(&requests).expect("requests encode");
        let replayed = replay_bytes(&bytes).expect("no promise broken");
        assert_eq!(
            replayed,
            Some(Replayed {
                entries: 2,
                write_sets: 4,
                commits: 1,
                invalid: 1,
            })
        );
        assert_eq!(replay_bytes(&[0xff; 9]), Ok(None));
    }
}
