//! Snapshots of the state machine: building one (a stream file of the state
//! at the applied log id, written while apply goes on), keeping the last one
//! for followers, installing a received one or a backup in bounded memory
//! with one durable switch at the end. The stream's byte format is
//! [`crate::group::snapshot`]'s; this module decides what goes into it and
//! what installing it does to the store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta};

use super::{io_err, StateMachine};
use crate::blocking::Blocking;
use crate::certify::Certifier;
use crate::error::{Error, Result};
use crate::group::params::{ClusterParams, MIN_CERT_WINDOW};
use crate::group::snapshot::{SnapshotHeader, StreamReader, StreamWriter};
use crate::raft::types::{LogId, StorageError, StoredMembership, TypeConfig};
use crate::storage::{keycode, BatchOp, Mvcc};
use crate::txn::NodeId;

/// The last snapshot built or installed, kept for followers that need it: a
/// snapshot stream file (see [`crate::group::snapshot`]).
#[derive(Clone)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<u64, openraft::BasicNode>,
    pub(super) path: PathBuf,
}

/// Where snapshot files live: next to the store (`snapshot.data`, with
/// `snapshot.build-N` and `snapshot.recv-N` while one is made or received),
/// or, for a node without a data directory, in a temporary directory removed
/// when the state machine goes.
pub(super) struct SnapshotFiles {
    pub(super) dir: PathBuf,
    pub(super) temporary: bool,
    pub(super) next: std::sync::atomic::AtomicU64,
    /// The file the last `begin_receiving_snapshot` handed to openraft.
    pub(super) receiving: std::sync::Mutex<Option<PathBuf>>,
}

/// The name of the current snapshot file in [`SnapshotFiles::dir`].
pub(super) const SNAPSHOT_FILE: &str = "snapshot.data";

/// Bytes of engine entries per staged batch while installing a snapshot.
pub(super) const INSTALL_BATCH_BYTES: usize = 8 << 20;

impl SnapshotFiles {
    /// Files next to `current` (the current snapshot's path), or in a fresh
    /// temporary directory. Removes what an interrupted build or transfer
    /// left, and the single-file snapshot of the first layout (`snapshot.bin`,
    /// which openraft then rebuilds from the store when it needs one).
    pub(super) fn open(current: Option<&Path>) -> Result<SnapshotFiles> {
        let (dir, temporary) = match current.and_then(Path::parent) {
            Some(dir) => (dir.to_path_buf(), false),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "trireme-snapshots-{}-{:016x}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                (dir, true)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::Storage(format!("cannot create snapshot dir {}: {e}", dir.display()))
        })?;
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot.build-")
                || name.starts_with("snapshot.recv-")
                || name == "snapshot.bin"
                || name == "snapshot.tmp"
            {
                std::fs::remove_file(dir.join(name.as_ref()))?;
            }
        }
        Ok(SnapshotFiles {
            dir,
            temporary,
            next: std::sync::atomic::AtomicU64::new(0),
            receiving: std::sync::Mutex::new(None),
        })
    }

    pub(super) fn current(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// A new scratch file name (`kind` is `build` or `recv`).
    pub(super) fn scratch(&self, kind: &str) -> PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("snapshot.{kind}-{n}"))
    }

    /// Makes `from` the current snapshot file, durably.
    pub(super) fn promote(&self, from: &Path) -> Result<PathBuf> {
        let to = self.current();
        std::fs::rename(from, &to)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(to)
    }
}

impl Drop for SnapshotFiles {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// openraft's snapshot meta as a stream header records it.
pub(super) fn meta_of(h: &SnapshotHeader) -> SnapshotMeta<u64, openraft::BasicNode> {
    SnapshotMeta {
        last_log_id: h.last_log_id,
        last_membership: h.membership.clone(),
        snapshot_id: h.snapshot_id.clone(),
    }
}

/// Replaces the whole store with the snapshot stream in `file`, in bounded
/// memory: the entries go to the engine's staging area in batches of about
/// [`INSTALL_BATCH_BYTES`], then `next`'s metadata (with the stream's chain,
/// departed nodes and parameters), then one durable switch. A failure or a
/// crash before the switch leaves the old store as it was. `check` vets the
/// header before anything is written. Returns the header.
pub(super) fn install_stream(
    mvcc: &Mvcc,
    mut file: std::fs::File,
    next: &mut StateMachine,
    what: &str,
    check: impl FnOnce(&SnapshotHeader) -> Result<()>,
) -> Result<SnapshotHeader> {
    file.sync_all()?;
    file.rewind()?;
    let mut reader = StreamReader::open(std::io::BufReader::with_capacity(1 << 20, file), what)?;
    check(reader.header())?;
    let header = reader.header().clone();
    next.chain = header.chain;
    next.departed = header.departed.clone();
    next.params = header.params;
    mvcc.discard_staged()?;
    let res = (|| -> Result<()> {
        let mut ops: Vec<BatchOp> = Vec::new();
        let mut bytes = 0usize;
        let mut staged_once = false;
        while let Some((k, v)) = reader.next_entry()? {
            bytes += k.len() + v.len();
            ops.push((k, Some(v)));
            if bytes >= INSTALL_BATCH_BYTES {
                mvcc.stage(std::mem::take(&mut ops))?;
                bytes = 0;
                if !staged_once {
                    staged_once = true;
                    crate::crash_point!("crash-mid-snapshot-install");
                }
            }
        }
        ops.extend(next.meta_ops()?);
        mvcc.stage(ops)?;
        if !staged_once {
            crate::crash_point!("crash-mid-snapshot-install");
        }
        mvcc.commit_staged()
    })();
    if let Err(e) = res {
        let _ = mvcc.discard_staged();
        return Err(e);
    }
    Ok(header)
}

impl StateMachine {
    /// Seeds an empty store from the backup file `path` (verified first, in
    /// full: a truncated or corrupt file changes nothing): its versions keep
    /// their seqnos, the store's applied log id becomes the backup's seqno
    /// (so the new cluster's seqnos continue after it), and its membership is
    /// this node alone (`node_id` at `addr`). The departed set is not
    /// carried over: a restored cluster is a new cluster. Blocking.
    pub fn restore(
        mvcc: &Mvcc,
        path: &Path,
        node_id: NodeId,
        addr: &str,
    ) -> Result<(SnapshotHeader, crate::group::snapshot::Summary)> {
        let (header, summary) = crate::group::snapshot::verify_file(path)?;
        let log_id = LogId::new(openraft::CommittedLeaderId::new(0, 0), header.seqno);
        let members = BTreeMap::from([(node_id, openraft::BasicNode::new(addr))]);
        let membership =
            openraft::Membership::new(vec![members.keys().copied().collect()], members);
        let (mut sm, _) = StateMachine::open(mvcc.clone(), Certifier::new(MIN_CERT_WINDOW), None)?;
        if sm.applied_id.is_some() {
            return Err(Error::InvalidInput(
                "--restore: the store already holds a cluster's state".into(),
            ));
        }
        sm.applied_id = Some(log_id);
        sm.membership = StoredMembership::new(Some(log_id), membership);
        let file = std::fs::File::open(path)?;
        let what = format!("backup file {}", path.display());
        let header = install_stream(mvcc, file, &mut sm, &what, |_| Ok(()))?;
        // Not carried over (see above); the rest of the metadata is.
        sm.departed = BTreeSet::new();
        mvcc.apply(sm.meta_ops()?)?;
        mvcc.sync()?;
        Ok((header, summary))
    }
}

/// Writes the stream of `mvcc`'s state at `at` (versions and write-set ids at
/// or below it; newer ones, applied meanwhile, are skipped) to `out`.
/// Blocking; bounded memory: the engine is iterated, not copied.
pub fn write_stream<W: Write>(
    mvcc: &Mvcc,
    header: &SnapshotHeader,
    out: W,
) -> Result<(W, crate::group::snapshot::Summary)> {
    let at = header.seqno;
    let mut writer = StreamWriter::new(out, header)?;
    let mut failed = None;
    mvcc.dump(&mut |k, v| {
        let keep = match k.first() {
            Some(&keycode::DATA) => keycode::decode_version_key(k).is_some_and(|(_, s)| s <= at),
            Some(&keycode::TXN) => {
                <[u8; 8]>::try_from(v).is_ok_and(|b| u64::from_be_bytes(b) <= at)
            }
            _ => false,
        };
        if keep {
            if let Err(e) = writer.entry(k, v) {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    writer.finish()
}

/// Builds a snapshot of the state at the applied log id captured when it was
/// created (MVCC makes that a consistent read while apply goes on) into a
/// snapshot stream file.
pub struct SnapshotBuilder {
    pub(super) mvcc: Mvcc,
    pub(super) chain: u64,
    pub(super) departed: BTreeSet<NodeId>,
    pub(super) params: Option<ClusterParams>,
    pub(super) applied_id: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) snapshot: Arc<std::sync::Mutex<Option<StoredSnapshot>>>,
    pub(super) files: Arc<SnapshotFiles>,
    pub(super) blocking: Blocking,
    pub(super) durable: Option<Arc<std::sync::atomic::AtomicU64>>,
    pub(super) _gc_guard: tokio::sync::OwnedMutexGuard<()>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let at = self.applied_id.map_or(0, |l| l.index);
        let snapshot_id = format!("{}-{}", self.applied_id.map_or(0, |l| l.leader_id.term), at);
        let meta = SnapshotMeta {
            last_log_id: self.applied_id,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_id.clone(),
        };
        let header = SnapshotHeader {
            seqno: at,
            last_log_id: self.applied_id,
            membership: self.membership.clone(),
            snapshot_id,
            chain: self.chain,
            departed: self.departed.clone(),
            params: self.params,
            created_unix_ms: crate::group::snapshot::now_unix_ms(),
        };
        let mvcc = self.mvcc.clone();
        let files = self.files.clone();
        let stored = self.snapshot.clone();
        let meta_owned = meta.clone();
        let (file, bytes) = Blocking::run(self.blocking, move || -> Result<_> {
            // The log is purged up to this snapshot: what it covers must be durable.
            mvcc.sync()?;
            let path = files.scratch("build");
            let res = (|| -> Result<_> {
                let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
                let (out, summary) = write_stream(&mvcc, &header, out)?;
                out.into_inner()
                    .map_err(|e| Error::Storage(format!("writing {}: {e}", path.display())))?
                    .sync_all()?;
                // Opened before the rename: it stays this snapshot whatever replaces it.
                let file = std::fs::File::open(&path)?;
                let mut guard = stored.lock().expect("snapshot lock");
                let current = files.promote(&path)?;
                *guard = Some(StoredSnapshot {
                    meta: meta_owned,
                    path: current,
                });
                Ok((file, summary.bytes))
            })();
            if res.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            res
        })
        .await
        .map_err(io_err)?
        .map_err(io_err)?;
        // The build synced the store first: everything up to `at` is durable.
        if let Some(fence) = &self.durable {
            fence.fetch_max(at, std::sync::atomic::Ordering::AcqRel);
        }
        tracing::info!(at, bytes, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}
