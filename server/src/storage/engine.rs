//! The ordered byte store under MVCC, behind a small trait so that the same
//! MVCC and state-machine code runs on sled and on an in-memory model.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// One write of an atomic batch: `Some(value)` sets, `None` removes.
pub type BatchOp = (Vec<u8>, Option<Vec<u8>>);

/// An ordered key-value store with atomic batches.
///
/// Contract: `apply` is atomic (after a crash, all of a batch or none of it is
/// visible), `apply_in_order` keeps a prefix of its batch, and writes become
/// visible in the order they were applied; after `sync` returns, every
/// applied write survives a machine crash.
pub trait Engine: Send + Sync + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `f` for each pair in `[start, end)` in key order (`end: None` is
    /// unbounded) until it returns false.
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;

    /// Calls `f` for each pair in `[start, end]` in reverse key order until it returns false.
    fn scan_rev(
        &self,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;

    /// Applies all writes atomically.
    fn apply(&self, batch: Vec<BatchOp>) -> Result<()>;

    /// Applies the writes one after another, without [`Engine::apply`]'s
    /// atomicity: after a crash, the batch's writes are visible up to some
    /// point in its order and none after it (a prefix). For a caller that can
    /// repair a torn batch by writing it again; an engine whose batches are
    /// atomic anyway keeps this default.
    fn apply_in_order(&self, batch: Vec<BatchOp>) -> Result<()> {
        self.apply(batch)
    }

    /// Makes everything applied so far durable (a real fsync).
    fn sync(&self) -> Result<()>;

    /// Approximate on-disk size in bytes.
    fn size_on_disk(&self) -> u64;

    /// Applies `batch` to the staging area: a second store, created empty on
    /// first use, that reads do not see until [`Engine::commit_staged`]. A
    /// snapshot install streams into it in bounded batches.
    fn stage(&self, batch: Vec<BatchOp>) -> Result<()>;

    /// Makes the staging area the store, durably and atomically (after a
    /// crash the store is the old one or the whole staged one, never a mix),
    /// and drops the old store.
    fn commit_staged(&self) -> Result<()>;

    /// Drops the staging area (what a failed or crashed install left).
    fn discard_staged(&self) -> Result<()>;

    /// How many times the store was replaced by [`Engine::commit_staged`]:
    /// a long read that sees it change read two different stores.
    fn generation(&self) -> u64;
}

/// sled 0.34 as an [`Engine`]. `sync` flushes sled and then fdatasyncs its data
/// file, because sled 0.34's own `flush()` only calls `sync_file_range`,
/// which does not make the data durable.
///
/// The store is one sled tree; the default tree names which (`CURRENT_TREE`),
/// so that replacing the whole store (a snapshot install) is one durable
/// write of that name after the new tree is complete.
pub struct SledEngine {
    db: sled::Db,
    /// The current tree and its generation.
    tree: RwLock<(sled::Tree, u64)>,
    /// The staging tree and its generation, while an install fills it.
    staging: std::sync::Mutex<Option<(sled::Tree, u64)>>,
    data_file: std::fs::File,
}

/// The default-tree key that holds the current tree's generation (absent: 0).
const CURRENT_TREE: &[u8] = b"trireme/current-tree";

/// The sled tree name of generation `gen` (0 is the tree of the first layout).
fn tree_name(gen: u64) -> Vec<u8> {
    if gen == 0 {
        b"mvcc".to_vec()
    } else {
        format!("mvcc-{gen}").into_bytes()
    }
}

fn lock_err() -> Error {
    Error::Internal("sled engine lock poisoned".into())
}

impl SledEngine {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let gen = match db.get(CURRENT_TREE)? {
            None => 0,
            Some(raw) => u64::from_be_bytes(raw.as_ref().try_into().map_err(|_| {
                Error::InvalidData(format!(
                    "store {}: the current-tree record holds {} bytes, expected 8",
                    dir.display(),
                    raw.len()
                ))
            })?),
        };
        let current = tree_name(gen);
        // A tree other than the current one is what an install left when it
        // crashed before switching: it was never visible, drop it.
        for name in db.tree_names() {
            if name.starts_with(b"mvcc") && name.as_ref() != current.as_slice() {
                tracing::info!(
                    tree = %String::from_utf8_lossy(&name),
                    "dropping the staging tree of an unfinished snapshot install"
                );
                db.drop_tree(&name)?;
            }
        }
        let tree = db.open_tree(&current)?;
        let data_file = std::fs::OpenOptions::new()
            .read(true)
            .open(dir.join("db"))?;
        Ok(SledEngine {
            db,
            tree: RwLock::new((tree, gen)),
            staging: std::sync::Mutex::new(None),
            data_file,
        })
    }

    fn tree(&self) -> Result<sled::Tree> {
        Ok(self.tree.read().map_err(|_| lock_err())?.0.clone())
    }
}

fn sled_batch(batch: Vec<BatchOp>) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (k, v) in batch {
        match v {
            Some(v) => b.insert(k, v),
            None => b.remove(k),
        }
    }
    b
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree()?.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let tree = self.tree()?;
        let iter = match end {
            Some(end) => tree.range::<&[u8], _>((Bound::Included(start), Bound::Excluded(end))),
            None => tree.range::<&[u8], _>(start..),
        };
        for item in iter {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn scan_rev(
        &self,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for item in self.tree()?.range::<&[u8], _>(start..=end).rev() {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Vec<BatchOp>) -> Result<()> {
        self.tree()?.apply_batch(sled_batch(batch))?;
        Ok(())
    }

    /// One insert or remove after another. sled's `apply_batch` makes a batch
    /// atomic by pinning its log, which seals and writes the current IO
    /// buffer twice through sled's IO threads: on every node, for every
    /// applied run, two writes and a chain of thread wake-ups. Written in
    /// order instead, the run's writes stay in the IO buffer until sled's
    /// periodic flush or [`Engine::sync`]. A crash keeps a prefix of them:
    /// sled recovers its log in LSN order and stops at the first write that
    /// did not reach the file (what sled's own crash-recovery test checks
    /// for writes from one thread; every apply runs on one thread at a time).
    fn apply_in_order(&self, batch: Vec<BatchOp>) -> Result<()> {
        let tree = self.tree()?;
        for (k, v) in batch {
            match v {
                Some(v) => {
                    tree.insert(k, v)?;
                }
                None => {
                    tree.remove(k)?;
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn stage(&self, batch: Vec<BatchOp>) -> Result<()> {
        let mut staging = self.staging.lock().map_err(|_| lock_err())?;
        if staging.is_none() {
            let gen = self.tree.read().map_err(|_| lock_err())?.1 + 1;
            // Left by an earlier install of this process that failed.
            self.db.drop_tree(tree_name(gen))?;
            *staging = Some((self.db.open_tree(tree_name(gen))?, gen));
        }
        let (tree, _) = staging.as_ref().expect("just set");
        tree.apply_batch(sled_batch(batch))?;
        Ok(())
    }

    fn commit_staged(&self) -> Result<()> {
        let Some((tree, gen)) = self.staging.lock().map_err(|_| lock_err())?.take() else {
            return Err(Error::Internal("no staged store to commit".into()));
        };
        // The staged tree is durable before the name that points at it.
        self.sync()?;
        self.db.insert(CURRENT_TREE, &gen.to_be_bytes())?;
        self.sync()?;
        let (_, old) = std::mem::replace(
            &mut *self.tree.write().map_err(|_| lock_err())?,
            (tree, gen),
        );
        // Removing every entry of the old tree takes a while and nothing
        // waits for it (a restart drops what is left): in the background.
        let db = self.db.clone();
        std::thread::spawn(move || {
            if let Err(e) = db.drop_tree(tree_name(old)) {
                tracing::warn!(error = %e, "dropping the replaced store tree");
            }
        });
        Ok(())
    }

    fn discard_staged(&self) -> Result<()> {
        if let Some((_, gen)) = self.staging.lock().map_err(|_| lock_err())?.take() {
            self.db.drop_tree(tree_name(gen))?;
        }
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.tree.read().map(|t| t.1).unwrap_or(u64::MAX)
    }
}

/// An in-memory store's contents.
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`Engine`]: the model for tests and the store for simulation.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>,
    /// The staging store while an install fills it (shared by clones, like
    /// the store: a simulated crash leaves it behind, as on disk).
    staging: Arc<std::sync::Mutex<Option<Tree>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryEngine {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>>> {
        self.map
            .read()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))
    }

    /// Feeds `f` the entries `next` copies out under the read lock, a chunk
    /// at a time from `resume` (then from just past the last entry seen),
    /// with the lock released while `f` runs. Ends when `f` says so or a
    /// chunk comes back short.
    fn scan_chunks(
        &self,
        mut resume: Bound<Vec<u8>>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        next: impl Fn(&Tree, &Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        loop {
            let chunk = next(&*self.read()?, &resume);
            for (k, v) in &chunk {
                if !f(k, v) {
                    return Ok(());
                }
            }
            match chunk.last() {
                Some((last, _)) if chunk.len() == SCAN_CHUNK => {
                    resume = Bound::Excluded(last.clone());
                }
                _ => return Ok(()),
            }
        }
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read()?.get(key).cloned())
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        // In chunks, the lock released before `f` sees them, as sled's
        // iterator holds no lock either: `f` may write to this engine
        // (garbage collection applies its removals while it scans), which
        // under a held read lock would wait for itself forever.
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.scan_chunks(Bound::Included(start.to_vec()), f, |map, from| {
            map.range::<[u8], _>((from.as_ref().map(Vec::as_slice), upper))
                .take(SCAN_CHUNK)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    fn scan_rev(
        &self,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        // In chunks without the lock, as `scan` does.
        self.scan_chunks(Bound::Included(end.to_vec()), f, |map, to| {
            map.range::<[u8], _>((Bound::Included(start), to.as_ref().map(Vec::as_slice)))
                .rev()
                .take(SCAN_CHUNK)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    fn apply(&self, batch: Vec<BatchOp>) -> Result<()> {
        let mut map = self
            .map
            .write()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))?;
        apply_to(&mut map, batch);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.read()
            .map(|m| m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
            .unwrap_or(0)
    }

    fn stage(&self, batch: Vec<BatchOp>) -> Result<()> {
        let mut staging = self
            .staging
            .lock()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))?;
        apply_to(staging.get_or_insert_with(BTreeMap::new), batch);
        Ok(())
    }

    fn commit_staged(&self) -> Result<()> {
        let staged = self
            .staging
            .lock()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))?
            .take()
            .ok_or_else(|| Error::Internal("no staged store to commit".into()))?;
        *self
            .map
            .write()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))? = staged;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    fn discard_staged(&self) -> Result<()> {
        self.staging
            .lock()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))?
            .take();
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Entries [`MemoryEngine`]'s scans copy out under the lock at a time.
const SCAN_CHUNK: usize = 256;

fn apply_to(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: Vec<BatchOp>) {
    for (k, v) in batch {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}
