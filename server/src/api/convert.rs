//! prost <-> domain conversions, kept apart from the services' logic.

use trireme_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::node::{Consistency, ReadOptions};
use crate::txn::{Compare, Condition, Isolation, KeyRange, Mutation, TxnId, WriteSet};

/// The read options of a request (absent: linearizable, at the applied seqno).
pub fn read_options(read: Option<pb::ReadOptions>) -> Result<ReadOptions> {
    let read = read.unwrap_or_default();
    let consistency = match pb::ReadConsistency::try_from(read.consistency) {
        Ok(pb::ReadConsistency::Linearizable) => Consistency::Linearizable,
        Ok(pb::ReadConsistency::Session) => Consistency::Session(read.min_seqno),
        Ok(pb::ReadConsistency::Local) => Consistency::Local,
        Err(_) => {
            return Err(Error::InvalidInput(format!(
                "unknown read consistency {}",
                read.consistency
            )))
        }
    };
    Ok(ReadOptions {
        consistency,
        snapshot: read.snapshot,
    })
}

/// The key range of a scan request.
pub fn scan_range(req: &pb::ScanRequest) -> Result<KeyRange> {
    if !req.prefix.is_empty() {
        if !req.start.is_empty() || !req.end.is_empty() {
            return Err(Error::InvalidInput(
                "scan takes a prefix or a start/end range, not both".into(),
            ));
        }
        return Ok(KeyRange::prefix(&req.prefix));
    }
    let end = (!req.end.is_empty()).then(|| req.end.clone());
    if let Some(end) = &end {
        if end < &req.start {
            return Err(Error::InvalidInput("scan end is before its start".into()));
        }
    }
    Ok(KeyRange {
        start: req.start.clone(),
        end,
    })
}

/// The write set of a commit request (origin is set by the node).
pub fn write_set(req: pb::CommitRequest) -> Result<WriteSet> {
    let isolation = match pb::Isolation::try_from(req.isolation) {
        Ok(pb::Isolation::Serializable) => Isolation::Serializable,
        Ok(pb::Isolation::Snapshot) => Isolation::Snapshot,
        Err(_) => {
            return Err(Error::InvalidInput(format!(
                "unknown isolation {}",
                req.isolation
            )))
        }
    };
    let mut mutations = Vec::with_capacity(req.mutations.len());
    let mut written = std::collections::BTreeSet::new();
    for m in req.mutations {
        if !written.insert(m.key.clone()) {
            return Err(Error::InvalidInput(format!(
                "write set writes key {:?} twice (send the final value once)",
                String::from_utf8_lossy(&m.key)
            )));
        }
        mutations.push(if m.delete {
            if !m.value.is_empty() {
                return Err(Error::InvalidInput("a delete carries no value".into()));
            }
            if m.lease != 0 {
                return Err(Error::InvalidInput("a delete carries no lease".into()));
            }
            Mutation::Delete { key: m.key }
        } else {
            Mutation::Put {
                key: m.key,
                value: m.value,
                lease: m.lease,
            }
        });
    }
    let compares = req
        .compares
        .into_iter()
        .map(|c| {
            let condition = match c.target {
                Some(pb::compare::Target::Version(v)) => Condition::Version(v),
                Some(pb::compare::Target::Exists(e)) => Condition::Exists(e),
                Some(pb::compare::Target::Value(v)) => Condition::Value(v),
                None => {
                    return Err(Error::InvalidInput(
                        "a compare needs a version, exists or value target".into(),
                    ))
                }
            };
            Ok(Compare {
                key: c.key,
                condition,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ranges = req
        .ranges
        .into_iter()
        .map(|r| KeyRange {
            start: r.start,
            end: (!r.end.is_empty()).then_some(r.end),
        })
        .collect();
    Ok(WriteSet {
        id: TxnId::random(),
        origin: 0,
        snapshot: req.snapshot,
        isolation,
        mutations,
        compares,
        reads: req.reads.into_iter().map(|r| r.key).collect(),
        ranges,
    })
}

/// A single put or delete, optionally conditional on the key's version.
pub fn single(mutation: Mutation, if_version: Option<u64>) -> WriteSet {
    let mut ws = WriteSet::blind(0, vec![mutation]);
    if let Some(v) = if_version {
        ws.compares.push(Compare {
            key: ws.mutations[0].key().to_vec(),
            condition: Condition::Version(v),
        });
    }
    ws
}

pub use crate::cluster::member_messages as members;

/// The longest key, prefix or range bound a watch takes (bytes).
const MAX_WATCH_KEY_BYTES: usize = 4096;

/// The watch a request asks for.
pub fn watch_spec(req: pb::WatchRequest) -> Result<crate::watch::WatchSpec> {
    use crate::watch::Selector;
    if req.key.len() > MAX_WATCH_KEY_BYTES || req.end.len() > MAX_WATCH_KEY_BYTES {
        return Err(Error::InvalidInput(format!(
            "watch key or range bound over the limit of {MAX_WATCH_KEY_BYTES} bytes"
        )));
    }
    let kind = pb::WatchKind::try_from(req.kind)
        .map_err(|_| Error::InvalidInput(format!("unknown watch kind {}", req.kind)))?;
    if kind != pb::WatchKind::WatchRange && !req.end.is_empty() {
        return Err(Error::InvalidInput(
            "a watch end bound needs kind WATCH_RANGE".into(),
        ));
    }
    let selector = match kind {
        pb::WatchKind::WatchKey => Selector::Key(req.key),
        pb::WatchKind::WatchPrefix => Selector::Prefix(req.key),
        pb::WatchKind::WatchRange => {
            let end = (!req.end.is_empty()).then_some(req.end);
            if end.as_ref().is_some_and(|e| e < &req.key) {
                return Err(Error::InvalidInput(
                    "watch range end is before its start".into(),
                ));
            }
            Selector::Range(KeyRange {
                start: req.key,
                end,
            })
        }
    };
    let progress_ms = match req.progress_interval_ms {
        0 => 5000,
        ms if ms < 100 => {
            return Err(Error::InvalidInput(format!(
                "progress_interval_ms {ms} is under the minimum of 100"
            )))
        }
        ms => ms,
    };
    Ok(crate::watch::WatchSpec {
        selector,
        start: (req.start_seqno > 0).then_some(req.start_seqno),
        prev: req.prev_value,
        progress: std::time::Duration::from_millis(progress_ms.into()),
    })
}

/// A watch stream message on the wire.
pub fn watch_response(msg: crate::watch::Message) -> pb::WatchResponse {
    let progress = msg.changes.is_empty();
    let events = msg
        .changes
        .into_iter()
        .map(|c| {
            let (has_prev, prev_version, prev_value) = match c.prev {
                Some((v, value)) => (true, v, value),
                None => (false, 0, Vec::new()),
            };
            pb::WatchEvent {
                key: c.key,
                put: c.value.is_some(),
                value: c.value.unwrap_or_default(),
                version: c.seqno,
                has_prev,
                prev_value,
                prev_version,
            }
        })
        .collect();
    pb::WatchResponse {
        events,
        seqno: msg.seqno,
        progress,
    }
}
