//! MVCC storage: every write is a version tagged with the seqno that wrote it.
//!
//! A read at snapshot `S` sees, for each key, the newest version with seqno
//! `<= S`; a delete writes a tombstone version. Versions of one key sort newest
//! first (see [`keycode`]), so a point read is one seek. Apply writes a run
//! of log entries' versions and write-set ids, then the applied log id,
//! in order ([`Mvcc::apply_in_order`]): a crash keeps a prefix of those
//! writes, and the state machine applies the run again from the log, reading
//! nothing above the last applied id, so a restart resumes exactly where the
//! store left off.
//!
//! Garbage collection is local: each node removes versions no snapshot at or
//! above the certification horizon can see. Certification never depends on
//! whether GC has run (see `certify`), so verdicts stay identical everywhere.
//!
//! CAVEATS: the applied state is made durable lazily (the Raft log is the
//! durable record; replay repairs a store that lost its tail in a crash), and
//! explicitly with [`Mvcc::sync`] before the log is purged.
//!
//! What it owns: the MVCC key encoding ([`keycode`]), the engine seam
//! (`engine`: sled in production, memory in the simulation), the versions,
//! tombstones, applied log id, write-set ids and snapshot streams stored in
//! it, and garbage collection. It knows nothing of Raft or certification: it
//! stores what apply hands it, in order or atomically, and reads at a seqno.
//!
//! What it may import: `txn` (keys and mutations) and `error`. What it must
//! never import: `group`, `certify`, `cluster`, `node` or `api`: everything
//! above reads and writes through [`Mvcc`], and the certifier gets its
//! history from the state machine, not from here.

mod engine;
pub mod keycode;

use std::sync::Arc;

pub use engine::{BatchOp, Engine, MemoryEngine, SledEngine};
pub use keycode::KeyMeta;

use crate::error::{Error, Result};
use crate::txn::{Key, KeyRange, Seqno, TxnId, Value};

/// One pair of a scan result: key, version seqno, value (empty if keys only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The user key.
    pub key: Key,
    /// Seqno of the version read.
    pub version: Seqno,
    /// Its value.
    pub value: Value,
    /// Seqno of the write that created the key (etcd's `create_revision`).
    pub create_seqno: Seqno,
    /// Writes of the key since it was created, 1 for a new key (etcd's `version`).
    pub modifications: u64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// One change of a key: what a watch delivers (see [`Mvcc::history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The seqno that wrote it: the key's new version.
    pub seqno: Seqno,
    /// The user key.
    pub key: Key,
    /// The new value, or `None` for a delete.
    pub value: Option<Value>,
    /// The previous version and value, when asked for and the key existed.
    pub prev: Option<(Seqno, Value)>,
    /// Seqno of the write that created the key (0 for a delete).
    pub create_seqno: Seqno,
    /// Writes of the key since it was created (0 for a delete).
    pub modifications: u64,
    /// The lease the key is attached to (0: none, and for a delete).
    pub lease: i64,
}

impl Change {
    /// The change of `key` at `seqno` to `value`, with the new version's
    /// metadata (ignored for a delete) and no previous version.
    pub fn new(seqno: Seqno, key: Key, value: Option<Value>, meta: KeyMeta) -> Self {
        let meta = if value.is_some() {
            meta
        } else {
            KeyMeta {
                create_seqno: 0,
                modifications: 0,
                lease: 0,
            }
        };
        Change {
            seqno,
            key,
            value,
            prev: None,
            create_seqno: meta.create_seqno,
            modifications: meta.modifications,
            lease: meta.lease,
        }
    }
}

/// The MVCC layer over an [`Engine`].
#[derive(Clone)]
pub struct Mvcc {
    engine: Arc<dyn Engine>,
}

/// A visitor of the newest visible version per key: (key, seqno, value or tombstone) -> continue?
pub type VersionVisitor<'a> = dyn FnMut(&[u8], Seqno, Option<&[u8]>) -> bool + 'a;
/// A visitor of the newest visible version per key with its metadata:
/// (key, seqno, value and metadata or tombstone) -> continue?
pub type MetaVisitor<'a> = dyn FnMut(&[u8], Seqno, Option<(&[u8], KeyMeta)>) -> bool + 'a;
/// A stored value with its key's metadata.
pub type ValueMeta = (Value, KeyMeta);

impl Mvcc {
    /// MVCC over this engine.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Mvcc { engine }
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The newest version of `key` at or below `at`: its seqno and value, or
    /// `None` if the key is absent (or deleted) at `at`.
    pub fn get(&self, key: &[u8], at: Seqno) -> Result<Option<(Seqno, Value)>> {
        Ok(self.newest(key, at)?.and_then(|(s, v)| v.map(|v| (s, v))))
    }

    /// The newest version of `key` at or below `at`, tombstones included.
    pub fn newest(&self, key: &[u8], at: Seqno) -> Result<Option<(Seqno, Option<Value>)>> {
        let start = keycode::version_key(key, at);
        let end = keycode::version_key(key, 0);
        let mut found = None;
        let mut bad = None;
        // Inclusive end: the bound `version_key(key, 0)` is itself a valid version.
        self.engine.scan(&start, None, &mut |k, v| {
            if k > end.as_slice() {
                return false;
            }
            match (keycode::decode_version_key(k), keycode::decode_value(v)) {
                (Some((_, seqno)), Some(value)) => found = Some((seqno, value.map(<[u8]>::to_vec))),
                _ => bad = Some(k.to_vec()),
            }
            false
        })?;
        if let Some(k) = bad {
            return Err(Error::InvalidData(format!("undecodable MVCC entry {k:?}")));
        }
        Ok(found)
    }

    /// The newest version of `key` at or below `at` with its metadata,
    /// tombstones included (as `None`).
    pub fn newest_meta(&self, key: &[u8], at: Seqno) -> Result<Option<(Seqno, Option<ValueMeta>)>> {
        let start = keycode::version_key(key, at);
        let end = keycode::version_key(key, 0);
        let mut found = None;
        let mut bad = None;
        self.engine.scan(&start, None, &mut |k, v| {
            if k > end.as_slice() {
                return false;
            }
            match keycode::decode_version_key(k) {
                Some((_, seqno)) => match keycode::decode_value_meta(v, seqno) {
                    Some(value) => found = Some((seqno, value.map(|(v, m)| (v.to_vec(), m)))),
                    None => bad = Some(k.to_vec()),
                },
                None => bad = Some(k.to_vec()),
            }
            false
        })?;
        if let Some(k) = bad {
            return Err(Error::InvalidData(format!("undecodable MVCC entry {k:?}")));
        }
        Ok(found)
    }

    /// The live version of `key` at `at` with its metadata, or `None` if the
    /// key is absent (or deleted) at `at`.
    pub fn get_versioned(&self, key: &[u8], at: Seqno) -> Result<Option<Versioned>> {
        Ok(match self.newest_meta(key, at)? {
            Some((version, Some((value, meta)))) => Some(Versioned {
                key: key.to_vec(),
                version,
                value,
                create_seqno: meta.create_seqno,
                modifications: meta.modifications,
                lease: meta.lease,
            }),
            _ => None,
        })
    }

    /// The metadata of `key`'s live version at `at`, or `None` if the key
    /// is absent (or deleted) at `at`.
    pub fn get_meta(&self, key: &[u8], at: Seqno) -> Result<Option<KeyMeta>> {
        Ok(match self.newest_meta(key, at)? {
            Some((_, Some((_, meta)))) => Some(meta),
            _ => None,
        })
    }

    /// Seqno of the newest version of `key` at or below `at`, tombstones included.
    pub fn last_write(&self, key: &[u8], at: Seqno) -> Result<Option<Seqno>> {
        Ok(self.newest(key, at)?.map(|(s, _)| s))
    }

    /// Visits, in key order, the newest version at or below `at` of each key in
    /// `range` (tombstones included, as `None`), until `f` returns false.
    pub fn visit(&self, range: &KeyRange, at: Seqno, f: &mut VersionVisitor<'_>) -> Result<()> {
        self.visit_meta(range, at, &mut |key, seqno, value| {
            f(key, seqno, value.map(|(v, _)| v))
        })
    }

    /// [`Mvcc::visit`] with each live version's metadata.
    pub fn visit_meta(&self, range: &KeyRange, at: Seqno, f: &mut MetaVisitor<'_>) -> Result<()> {
        let start = keycode::range_start(&range.start);
        let end = match &range.end {
            Some(e) => keycode::range_start(e),
            None => keycode::data_end(),
        };
        // An inverted range holds no key (and would panic the engine's range).
        if end < start {
            return Ok(());
        }
        // The key whose newest visible version was already handed to `f`.
        let mut done: Option<Vec<u8>> = None;
        let mut bad = None;
        self.engine.scan(&start, Some(&end), &mut |k, v| {
            let Some((key, seqno)) = keycode::decode_version_key(k) else {
                bad = Some(k.to_vec());
                return false;
            };
            if done.as_deref() == Some(key.as_slice()) || seqno > at {
                return true;
            }
            let Some(value) = keycode::decode_value_meta(v, seqno) else {
                bad = Some(k.to_vec());
                return false;
            };
            if !f(&key, seqno, value) {
                return false;
            }
            done = Some(key);
            true
        })?;
        if let Some(k) = bad {
            return Err(Error::InvalidData(format!("undecodable MVCC entry {k:?}")));
        }
        Ok(())
    }

    /// Live pairs in `range` at `at`, at most `limit`; the flag says whether more remain.
    pub fn scan(
        &self,
        range: &KeyRange,
        at: Seqno,
        limit: usize,
        keys_only: bool,
    ) -> Result<(Vec<Versioned>, bool)> {
        let mut out = Vec::new();
        let mut more = false;
        self.visit_meta(range, at, &mut |key, version, value| {
            let Some((value, meta)) = value else {
                return true;
            };
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(Versioned {
                key: key.to_vec(),
                version,
                value: if keys_only {
                    Vec::new()
                } else {
                    value.to_vec()
                },
                create_seqno: meta.create_seqno,
                modifications: meta.modifications,
                lease: meta.lease,
            });
            true
        })?;
        Ok((out, more))
    }

    /// The first key in `range` whose newest version at or below `upto`
    /// (tombstones included) is newer than `after`.
    pub fn first_write_in_range_after(
        &self,
        range: &KeyRange,
        after: Seqno,
        upto: Seqno,
    ) -> Result<Option<(Key, Seqno)>> {
        let mut found = None;
        self.visit(range, upto, &mut |key, seqno, _| {
            if seqno > after {
                found = Some((key.to_vec(), seqno));
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Every version in `range` written at a seqno in `(after, upto]`, as
    /// (seqno, key, value or tombstone, previous version), sorted by seqno then
    /// key: the change history a watch catches up from. The previous version
    /// (`with_prev`) is the key's next older stored version when it is a value
    /// (`None` for a tombstone or none). Complete only for seqnos above the
    /// GC horizon; the caller checks it. The scan reads every version of the
    /// range (key-major order), so its cost follows the range's size; what it
    /// returns is held in memory, so past `max_bytes` of keys and values it
    /// stops with `Overloaded` naming the limit.
    pub fn history(
        &self,
        range: &KeyRange,
        after: Seqno,
        upto: Seqno,
        with_prev: bool,
        max_bytes: usize,
    ) -> Result<Vec<Change>> {
        let start = keycode::range_start(&range.start);
        let end = match &range.end {
            Some(e) => keycode::range_start(e),
            None => keycode::data_end(),
        };
        let mut out: Vec<Change> = Vec::new();
        if end < start || upto <= after {
            return Ok(out);
        }
        // The change whose previous version is the next entry of the same key.
        let mut waiting: Option<usize> = None;
        let mut bad = None;
        let (mut bytes, mut over) = (0usize, false);
        self.engine.scan(&start, Some(&end), &mut |k, v| {
            let Some((key, seqno)) = keycode::decode_version_key(k) else {
                bad = Some(k.to_vec());
                return false;
            };
            let Some(decoded) = keycode::decode_value_meta(v, seqno) else {
                bad = Some(k.to_vec());
                return false;
            };
            let meta = decoded.map(|(_, m)| m).unwrap_or_default();
            let value = decoded.map(|(v, _)| v);
            if let Some(i) = waiting.take() {
                if out[i].key == key {
                    bytes += value.map_or(0, <[u8]>::len);
                    out[i].prev = value.map(|v| (seqno, v.to_vec()));
                }
            }
            if seqno > after && seqno <= upto {
                bytes += key.len() + value.map_or(0, <[u8]>::len);
                out.push(Change::new(seqno, key, value.map(<[u8]>::to_vec), meta));
                if with_prev {
                    waiting = Some(out.len() - 1);
                }
            }
            if bytes > max_bytes {
                over = true;
                return false;
            }
            true
        })?;
        if let Some(k) = bad {
            return Err(Error::InvalidData(format!("undecodable MVCC entry {k:?}")));
        }
        if over {
            return Err(Error::Overloaded(format!(
                "the changes in this range from seqno {} to {upto} are over the catch-up \
                 limit of {max_bytes} bytes held at once: start from a later seqno or \
                 watch a narrower range",
                after + 1
            )));
        }
        out.sort_by(|a, b| (a.seqno, &a.key).cmp(&(b.seqno, &b.key)));
        Ok(out)
    }

    /// The engine writes that store `value` (or a tombstone) as `key`'s version at `seqno`.
    pub fn version_op(key: &[u8], seqno: Seqno, value: Option<&[u8]>) -> BatchOp {
        (
            keycode::version_key(key, seqno),
            Some(keycode::encode_value(value)),
        )
    }

    /// The engine write that stores `value` (or a tombstone) as `key`'s
    /// version at `seqno`, with the key's metadata.
    pub fn version_op_meta(
        key: &[u8],
        seqno: Seqno,
        value: Option<&[u8]>,
        meta: &KeyMeta,
    ) -> BatchOp {
        (
            keycode::version_key(key, seqno),
            Some(keycode::encode_value_meta(value, seqno, meta)),
        )
    }

    /// The engine write that records write set `id` as applied at `seqno`.
    pub fn txn_op(id: TxnId, seqno: Seqno) -> BatchOp {
        (txn_key(id), Some(seqno.to_be_bytes().to_vec()))
    }

    /// The seqno at which write set `id` was applied, if it still is recorded.
    pub fn txn_seqno(&self, id: TxnId) -> Result<Option<Seqno>> {
        match self.engine.get(&txn_key(id))? {
            None => Ok(None),
            Some(raw) => {
                let bytes: [u8; 8] = raw
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::InvalidData(format!("bad txn record for {id}")))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// The engine write that stores metadata `name`.
    pub fn meta_op(name: &str, value: Vec<u8>) -> BatchOp {
        (meta_key(name), Some(value))
    }

    /// Reads metadata `name`.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.engine.get(&meta_key(name))
    }

    /// Applies engine writes atomically.
    pub fn apply(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.engine.apply(ops)
    }

    /// Applies engine writes in order, not atomically: a crash keeps a
    /// prefix of them (see [`Engine::apply_in_order`]).
    pub fn apply_in_order(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.engine.apply_in_order(ops)
    }

    /// Makes everything applied so far durable.
    pub fn sync(&self) -> Result<()> {
        self.engine.sync()
    }

    /// Writes to the staging store that [`Mvcc::commit_staged`] swaps in
    /// whole (a snapshot install; see [`Engine::stage`]).
    pub fn stage(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.engine.stage(ops)
    }

    /// Makes the staging store the store, durably and atomically.
    pub fn commit_staged(&self) -> Result<()> {
        self.engine.commit_staged()
    }

    /// Drops the staging store.
    pub fn discard_staged(&self) -> Result<()> {
        self.engine.discard_staged()
    }

    /// Changes each time the store is replaced (see [`Engine::generation`]).
    pub fn generation(&self) -> u64 {
        self.engine.generation()
    }

    /// A digest of the live data at `at`: every key, value and version, in key
    /// order. Identical on nodes that applied the same log (GC does not change it).
    pub fn checksum(&self, at: Seqno) -> Result<(u64, u64)> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut keys = 0u64;
        self.visit(
            &KeyRange {
                start: Vec::new(),
                end: None,
            },
            at,
            &mut |key, version, value| {
                if let Some(value) = value {
                    keys += 1;
                    hasher.update(&(key.len() as u64).to_le_bytes());
                    hasher.update(key);
                    hasher.update(&version.to_le_bytes());
                    hasher.update(&(value.len() as u64).to_le_bytes());
                    hasher.update(value);
                }
                true
            },
        )?;
        Ok((hasher.digest(), keys))
    }

    /// Removes versions that no snapshot at or above `horizon` can read, and
    /// write-set ids recorded below it. Returns how many entries were removed.
    pub fn gc(&self, horizon: Seqno) -> Result<u64> {
        let mut ops: Vec<BatchOp> = Vec::new();
        let mut removed = 0u64;
        // The key whose newest version at or below the horizon has been seen.
        let mut kept: Option<Vec<u8>> = None;
        let mut failed: Option<Error> = None;
        self.engine
            .scan(&[keycode::DATA], Some(&keycode::data_end()), &mut |k, v| {
                let Some((key, seqno)) = keycode::decode_version_key(k) else {
                    return true;
                };
                if seqno > horizon {
                    return true;
                }
                if kept.as_deref() == Some(key.as_slice()) {
                    ops.push((k.to_vec(), None));
                } else {
                    // The newest version at or below the horizon: keep it, unless it
                    // is a tombstone (then the key is absent for every such snapshot).
                    if keycode::decode_value(v) == Some(None) {
                        ops.push((k.to_vec(), None));
                    }
                    kept = Some(key);
                }
                if ops.len() >= 10_000 {
                    removed += ops.len() as u64;
                    let batch = std::mem::take(&mut ops);
                    if let Err(e) = self.engine.apply(batch) {
                        // Stop the scan; the error is returned below, not swallowed.
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.engine
            .scan(&[keycode::TXN], Some(&[keycode::TXN + 1]), &mut |k, v| {
                if v.len() == 8 && u64::from_be_bytes(v.try_into().expect("8 bytes")) < horizon {
                    ops.push((k.to_vec(), None));
                }
                true
            })?;
        removed += ops.len() as u64;
        self.engine.apply(ops)?;
        Ok(removed)
    }

    /// Every replicated entry (versions and write-set ids), in key order, for a
    /// state-transfer snapshot.
    pub fn dump(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.engine
            .scan(&[keycode::DATA], Some(&keycode::data_end()), f)?;
        self.engine
            .scan(&[keycode::TXN], Some(&[keycode::TXN + 1]), f)
    }

    /// The engine writes that remove every replicated entry. Installing a
    /// snapshot applies them in the same atomic batch as the snapshot's own
    /// entries (a later write of a key in a batch wins), so a crash leaves
    /// either the old state or the new one.
    pub fn clear_ops(&self) -> Result<Vec<BatchOp>> {
        let mut ops: Vec<BatchOp> = Vec::new();
        self.dump(&mut |k, _| {
            ops.push((k.to_vec(), None));
            true
        })?;
        Ok(ops)
    }
}

fn txn_key(id: TxnId) -> Vec<u8> {
    let mut k = vec![keycode::TXN];
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![keycode::META];
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests;
