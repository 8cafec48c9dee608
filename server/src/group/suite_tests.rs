//! openraft's storage conformance `Suite` against the sled-backed and the
//! in-memory state machine, each with the segment-file log store and with the
//! in-memory log store of the simulation.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::state_machine::StateMachine;
use crate::blocking::Blocking;
use crate::certify::Certifier;
use crate::raft::log_store::LogStore;
use crate::raft::mem_log::MemLogStore;
use crate::raft::types::{StorageError, TypeConfig};
use crate::storage::{Engine, MemoryEngine, Mvcc, SledEngine};

/// A state machine over sled (in `dir`) or over the in-memory engine.
fn state_machine(dir: &tempfile::TempDir, sled: bool) -> StateMachine {
    let engine: Arc<dyn Engine> = if sled {
        Arc::new(SledEngine::open(&dir.path().join("db"), 8 << 20).expect("open sled"))
    } else {
        Arc::new(MemoryEngine::new())
    };
    let (sm, _) = StateMachine::open(
        Mvcc::new(engine),
        Certifier::new(1000),
        Some(dir.path().join("snap")),
    )
    .expect("open state machine");
    sm
}

struct Builder {
    sled: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("log")).expect("open log");
        let sm = state_machine(&dir, self.sled);
        Ok((dir, log, sm))
    }
}

/// The simulation's log store; the in-memory state machine runs as in the
/// simulation (blocking work inline, no snapshot file).
struct MemBuilder {
    sled: bool,
}

impl StoreBuilder<TypeConfig, MemLogStore, StateMachine, tempfile::TempDir> for MemBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, MemLogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = if self.sled {
            state_machine(&dir, true)
        } else {
            let (mut sm, _) = StateMachine::open(
                Mvcc::new(Arc::new(MemoryEngine::new())),
                Certifier::new(1000),
                None,
            )
            .expect("open state machine");
            sm.set_blocking(Blocking::Inline);
            sm
        };
        Ok((dir, MemLogStore::new(), sm))
    }
}

// openraft's StorageError is large by design; the Suite returns it.
#[allow(clippy::result_large_err)]
#[test]
fn suite_with_sled_state_machine() -> Result<(), StorageError> {
    Suite::test_all(Builder { sled: true })
}

#[allow(clippy::result_large_err)]
#[test]
fn suite_with_memory_state_machine() -> Result<(), StorageError> {
    Suite::test_all(Builder { sled: false })
}

#[allow(clippy::result_large_err)]
#[test]
fn suite_memory_log_with_sled_state_machine() -> Result<(), StorageError> {
    Suite::test_all(MemBuilder { sled: true })
}

#[allow(clippy::result_large_err)]
#[test]
fn suite_memory_log_with_memory_state_machine() -> Result<(), StorageError> {
    Suite::test_all(MemBuilder { sled: false })
}
