//! Limits on what a client may submit, checked before anything is ordered.

use serde::{Deserialize, Serialize};

use super::{Condition, WriteSet};
use crate::error::{Error, Result};

/// Size limits on keys, values and write sets. Every violation is an
/// `InvalidInput` error that names the limit; nothing is ordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest key, in bytes (keys must also be non-empty).
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest write set (all keys, values, reads and ranges), in bytes.
    pub max_write_set_bytes: usize,
    /// Most operations (mutations + compares) in one write set.
    pub max_ops: usize,
    /// Most keys and ranges in one write set's read set.
    pub max_reads: usize,
    /// Most pairs one scan returns.
    pub max_scan_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_write_set_bytes: 16 << 20,
            max_ops: 1000,
            max_reads: 10_000,
            max_scan_limit: 10_000,
        }
    }
}

impl Limits {
    /// Checks one key.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidInput("key is empty".into()));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::InvalidInput(format!(
                "key is {} bytes, over the limit of {} bytes (max_key_bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Checks one value.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::InvalidInput(format!(
                "value is {} bytes, over the limit of {} bytes (max_value_bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Checks a whole write set: non-empty, structurally valid
    /// ([`WriteSet::structural_problem`]), every key and value, the counts and
    /// the size. The one check every write set passes before it is ordered,
    /// whether a client sent it or a peer forwarded it.
    pub fn check_write_set(&self, ws: &WriteSet) -> Result<()> {
        if let Some(problem) = ws.structural_problem() {
            return Err(Error::InvalidInput(format!("invalid write set: {problem}")));
        }
        if ws.mutations.is_empty() {
            return Err(Error::InvalidInput(
                "write set has no mutations (a read-only transaction needs no commit)".into(),
            ));
        }
        let ops = ws.mutations.len() + ws.compares.len();
        if ops > self.max_ops {
            return Err(Error::InvalidInput(format!(
                "write set has {ops} operations, over the limit of {} (max_ops)",
                self.max_ops
            )));
        }
        let reads = ws.reads.len() + ws.ranges.len();
        if reads > self.max_reads {
            return Err(Error::InvalidInput(format!(
                "read set has {reads} keys and ranges, over the limit of {} (max_reads)",
                self.max_reads
            )));
        }
        for m in &ws.mutations {
            self.check_key(m.key())?;
            if let super::Mutation::Put { value, .. } = m {
                self.check_value(value)?;
            }
        }
        for c in &ws.compares {
            self.check_key(&c.key)?;
            if let Condition::Value(v) = &c.condition {
                self.check_value(v)?;
            }
        }
        for k in &ws.reads {
            self.check_key(k)?;
        }
        for r in &ws.ranges {
            if r.start.len() > self.max_key_bytes
                || r.end.as_ref().is_some_and(|e| e.len() > self.max_key_bytes)
            {
                return Err(Error::InvalidInput(format!(
                    "range bound over the limit of {} bytes (max_key_bytes)",
                    self.max_key_bytes
                )));
            }
        }
        let size = ws.size_bytes();
        if size > self.max_write_set_bytes {
            return Err(Error::InvalidInput(format!(
                "write set is about {size} bytes, over the limit of {} bytes (max_write_set_bytes)",
                self.max_write_set_bytes
            )));
        }
        Ok(())
    }

    /// Checks a batch a peer forwarded for ordering: every write set passes
    /// [`Limits::check_write_set`]. The error names the first bad write set;
    /// the caller orders none of the batch.
    pub fn check_forwarded(&self, wss: &[WriteSet]) -> Result<()> {
        for (i, ws) in wss.iter().enumerate() {
            if let Err(e) = self.check_write_set(ws) {
                let reason = match e {
                    Error::InvalidInput(m) => m,
                    other => other.to_string(),
                };
                return Err(Error::InvalidInput(format!(
                    "forwarded write set {i} of {} (id {}) refused, nothing of the batch was ordered: {reason}",
                    wss.len(),
                    ws.id
                )));
            }
        }
        Ok(())
    }
}
