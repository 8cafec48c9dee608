//! The certifier: decides, for each write set in log order, commit or abort.
//!
//! This module is pure: no I/O, no clock, no randomness, no hash-map iteration
//! order, nothing from tonic, openraft, sled or tokio. Its verdict is a function
//! of the write set, its seqno and the committed history before it, which every
//! node holds identically because it is built from the same ordered log. That
//! is the property the whole design rests on: every node reaches the same
//! verdict for every seqno.
//!
//! The rules, for a write set at seqno `N` with snapshot `S`:
//!
//! 0. A write set that is not structurally valid (an empty key, a scanned
//!    range that ends before it starts: `WriteSet::structural_problem`)
//!    aborts (`InvalidWriteSet`). Nodes refuse such write sets before the log,
//!    but a log written before they did, or a hostile peer, may still hold
//!    one: it must become the same verdict everywhere, never a panic.
//! 1. `S >= N` is impossible for an honest client: abort (`InvalidSnapshot`).
//! 2. `N - S > window`: abort (`SnapshotTooOld`). Old history may have been
//!    garbage-collected, so it cannot be certified against.
//! 3. Every compare must hold against the state just before this write set.
//! 4. A written key whose newest version has seqno `> S` aborts (first committer
//!    wins, for every origin node, the local one included).
//! 5. SERIALIZABLE only: a read key, or any key in a scanned range, whose newest
//!    version (tombstones included) has seqno `> S` aborts.
//!
//! A blind write set (no snapshot) skips rules 1, 2, 4 and 5.
//!
//! The certifier is total: any decodable write set gets a verdict.
//!
//! Write sets batched into the same log entry share its seqno `N` and are
//! certified one after another; the [`History`] a caller passes must include the
//! effects of the earlier write sets of the batch (their versions at `N > S`).
//!
//! CAVEATS: read-set versions are not compared directly; rule 5 makes that
//! unnecessary, because a key read at `S` whose newest version is still `<= S`
//! at certification still holds the version that was read.
//!
//! What it owns: the rules above, the [`Abort`] reasons and their stable
//! names (metrics and the wire use them), and the [`History`] view the
//! caller fills from storage. What it may import: `txn` (the write set it
//! decides) and the standard library. What it must never import: anything
//! with I/O or time (`storage`, `group`, `node`, tokio, sled, openraft,
//! tonic); the state machine reads storage and hands the certifier a
//! `History`, never the other way round. The golden scripts in `testscripts`
//! pin every rule; a change to a verdict changes a script.

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::txn::{Condition, Isolation, Key, KeyRange, Seqno, Value, WriteSet};

/// The committed history the certifier reads: the state just before the write
/// set being certified. Implemented by the applier (storage plus the batch so
/// far) and by in-memory models in tests.
pub trait History {
    /// Seqno of the newest version of `key`, tombstones included; `None` if the
    /// key has no version newer than the certification window's horizon.
    fn last_write(&self, key: &[u8]) -> Option<Seqno>;

    /// The newest live (non-tombstone) version of `key`: its seqno and value.
    fn current(&self, key: &[u8]) -> Option<(Seqno, Value)>;

    /// The first key (in key order) in `range` whose newest version, tombstones
    /// included, has seqno `> after`, with that seqno.
    fn first_write_in_range_after(&self, range: &KeyRange, after: Seqno) -> Option<(Key, Seqno)>;
}

/// Why a write set was aborted. Every node computes the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Abort {
    /// A key the write set wrote was written at `seqno`, after its snapshot.
    WriteConflict {
        /// The contested key.
        key: Key,
        /// Seqno of the write that won.
        seqno: Seqno,
    },
    /// A key the write set read was written at `seqno`, after its snapshot.
    ReadConflict {
        /// The key read.
        key: Key,
        /// Seqno of the write that invalidated the read.
        seqno: Seqno,
    },
    /// A key inside a scanned range was written (or created, or deleted) at `seqno`.
    RangeConflict {
        /// The range scanned.
        range: KeyRange,
        /// The first key in it that changed.
        key: Key,
        /// Seqno of that change.
        seqno: Seqno,
    },
    /// A compare did not hold; `version` is the key's actual version (0: absent).
    CompareFailed {
        /// The key compared.
        key: Key,
        /// Its version at certification.
        version: Seqno,
    },
    /// The snapshot is more than the certification window behind.
    SnapshotTooOld {
        /// The write set's snapshot.
        snapshot: Seqno,
        /// The oldest snapshot still certifiable at this seqno.
        horizon: Seqno,
    },
    /// The snapshot is not before the write set's own seqno.
    InvalidSnapshot {
        /// The write set's snapshot.
        snapshot: Seqno,
    },
    /// The write set is not structurally valid (it can only come from a
    /// hostile peer or an old log); nothing of it was applied.
    InvalidWriteSet {
        /// What is wrong with it.
        reason: String,
    },
}

impl Abort {
    /// The key this abort is about, if any.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Abort::WriteConflict { key, .. }
            | Abort::ReadConflict { key, .. }
            | Abort::RangeConflict { key, .. }
            | Abort::CompareFailed { key, .. } => Some(key),
            Abort::SnapshotTooOld { .. }
            | Abort::InvalidSnapshot { .. }
            | Abort::InvalidWriteSet { .. } => None,
        }
    }

    /// The seqno of the conflicting write, if any.
    pub fn seqno(&self) -> Option<Seqno> {
        match self {
            Abort::WriteConflict { seqno, .. }
            | Abort::ReadConflict { seqno, .. }
            | Abort::RangeConflict { seqno, .. } => Some(*seqno),
            _ => None,
        }
    }

    /// Every value [`Abort::kind`] can return, in a fixed order (for counters).
    /// New kinds go at the end: the position is part of the verdict chain.
    pub const KINDS: [&'static str; 7] = [
        "write_conflict",
        "read_conflict",
        "range_conflict",
        "compare_failed",
        "snapshot_too_old",
        "invalid_snapshot",
        "invalid_write_set",
    ];

    /// The position of this abort's kind in [`Abort::KINDS`].
    pub fn kind_index(&self) -> usize {
        Self::KINDS
            .iter()
            .position(|k| *k == self.kind())
            .expect("every kind is listed")
    }

    /// A short machine-friendly name, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Abort::WriteConflict { .. } => "write_conflict",
            Abort::ReadConflict { .. } => "read_conflict",
            Abort::RangeConflict { .. } => "range_conflict",
            Abort::CompareFailed { .. } => "compare_failed",
            Abort::SnapshotTooOld { .. } => "snapshot_too_old",
            Abort::InvalidSnapshot { .. } => "invalid_snapshot",
            Abort::InvalidWriteSet { .. } => "invalid_write_set",
        }
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match self {
            Abort::WriteConflict { key, seqno } => {
                write!(
                    f,
                    "write conflict on key {:?}, written at seqno {seqno}",
                    k(key)
                )
            }
            Abort::ReadConflict { key, seqno } => {
                write!(
                    f,
                    "read conflict on key {:?}, written at seqno {seqno}",
                    k(key)
                )
            }
            Abort::RangeConflict { range, key, seqno } => write!(
                f,
                "range conflict in [{:?}, {}) on key {:?}, written at seqno {seqno}",
                k(&range.start),
                range
                    .end
                    .as_deref()
                    .map_or("end".to_string(), |e| format!("{:?}", k(e))),
                k(key)
            ),
            Abort::CompareFailed { key, version } => {
                write!(
                    f,
                    "compare failed on key {:?} (its version is {version})",
                    k(key)
                )
            }
            Abort::SnapshotTooOld { snapshot, horizon } => write!(
                f,
                "snapshot too old: snapshot {snapshot} is below the certification horizon {horizon}"
            ),
            Abort::InvalidSnapshot { snapshot } => {
                write!(
                    f,
                    "invalid snapshot {snapshot}: not before the write set's seqno"
                )
            }
            Abort::InvalidWriteSet { reason } => write!(f, "invalid write set: {reason}"),
        }
    }
}

/// The outcome of certifying one write set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Apply it.
    Commit,
    /// Drop it; the origin tells its client why.
    Abort(Abort),
}

/// Certifies write sets against the committed history.
#[derive(Clone, Copy, Debug)]
pub struct Certifier {
    /// How many seqnos a snapshot may lag behind the write set's seqno
    /// (cluster configuration: must be the same on every node).
    pub window: u64,
    /// The horizon never goes below this seqno (see `group::params`).
    pub floor: Seqno,
}

impl Certifier {
    /// A certifier with this window.
    pub fn new(window: u64) -> Self {
        Certifier { window, floor: 0 }
    }

    /// A certifier with this window whose horizon never goes below `floor`.
    pub fn with_floor(window: u64, floor: Seqno) -> Self {
        Certifier { window, floor }
    }

    /// The oldest snapshot still certifiable at `seqno`.
    pub fn horizon(&self, seqno: Seqno) -> Seqno {
        seqno.saturating_sub(self.window).max(self.floor)
    }

    /// Decides the write set at `seqno`, given the history just before it.
    pub fn certify(&self, ws: &WriteSet, seqno: Seqno, history: &impl History) -> Verdict {
        match self.check(ws, seqno, history) {
            Ok(()) => Verdict::Commit,
            Err(abort) => Verdict::Abort(abort),
        }
    }

    fn check(&self, ws: &WriteSet, seqno: Seqno, history: &impl History) -> Result<(), Abort> {
        if let Some(reason) = ws.structural_problem() {
            return Err(Abort::InvalidWriteSet { reason });
        }
        if let Some(snapshot) = ws.snapshot {
            if snapshot >= seqno {
                return Err(Abort::InvalidSnapshot { snapshot });
            }
            let horizon = self.horizon(seqno);
            if snapshot < horizon {
                return Err(Abort::SnapshotTooOld { snapshot, horizon });
            }
        }
        for cmp in &ws.compares {
            let current = history.current(&cmp.key);
            let version = current.as_ref().map_or(0, |(v, _)| *v);
            let holds = match &cmp.condition {
                Condition::Version(want) => version == *want,
                Condition::Exists(want) => current.is_some() == *want,
                Condition::Value(want) => current.as_ref().is_some_and(|(_, v)| v == want),
            };
            if !holds {
                return Err(Abort::CompareFailed {
                    key: cmp.key.clone(),
                    version,
                });
            }
        }
        let Some(snapshot) = ws.snapshot else {
            return Ok(());
        };
        for m in &ws.mutations {
            if let Some(seqno) = history.last_write(m.key()).filter(|s| *s > snapshot) {
                return Err(Abort::WriteConflict {
                    key: m.key().to_vec(),
                    seqno,
                });
            }
        }
        if ws.isolation == Isolation::Serializable {
            for key in &ws.reads {
                if let Some(seqno) = history.last_write(key).filter(|s| *s > snapshot) {
                    return Err(Abort::ReadConflict {
                        key: key.clone(),
                        seqno,
                    });
                }
            }
            for range in &ws.ranges {
                if let Some((key, seqno)) = history.first_write_in_range_after(range, snapshot) {
                    return Err(Abort::RangeConflict {
                        range: range.clone(),
                        key,
                        seqno,
                    });
                }
            }
        }
        Ok(())
    }
}
