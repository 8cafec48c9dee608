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
/// visible) and batches become visible in the order they were applied; after
/// `sync` returns, every applied batch survives a machine crash.
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

    /// Makes everything applied so far durable (a real fsync).
    fn sync(&self) -> Result<()>;

    /// Approximate on-disk size in bytes.
    fn size_on_disk(&self) -> u64;
}

/// sled 0.34 as an [`Engine`]. `sync` flushes sled and then fdatasyncs its data
/// file, because sled 0.34's own `flush()` only calls `sync_file_range`,
/// which does not make the data durable.
pub struct SledEngine {
    db: sled::Db,
    tree: sled::Tree,
    data_file: std::fs::File,
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
        let tree = db.open_tree("mvcc")?;
        let data_file = std::fs::OpenOptions::new()
            .read(true)
            .open(dir.join("db"))?;
        Ok(SledEngine {
            db,
            tree,
            data_file,
        })
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let iter = match end {
            Some(end) => self
                .tree
                .range::<&[u8], _>((Bound::Included(start), Bound::Excluded(end))),
            None => self.tree.range::<&[u8], _>(start..),
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
        for item in self.tree.range::<&[u8], _>(start..=end).rev() {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Vec<BatchOp>) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b)?;
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
}

/// An in-memory [`Engine`]: the model for tests and the store for simulation.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>,
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
        let map = self.read()?;
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (k, v) in map.range::<[u8], _>((Bound::Included(start), upper)) {
            if !f(k, v) {
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
        let map = self.read()?;
        for (k, v) in map
            .range::<[u8], _>((Bound::Included(start), Bound::Included(end)))
            .rev()
        {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Vec<BatchOp>) -> Result<()> {
        let mut map = self
            .map
            .write()
            .map_err(|_| Error::Internal("memory engine lock poisoned".into()))?;
        for (k, v) in batch {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
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
}
