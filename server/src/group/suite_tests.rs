//! openraft's storage conformance `Suite` against the sled-backed and the
//! in-memory state machine, each with the segment-file log store.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};
use crate::certify::Certifier;
use crate::storage::{Engine, MemoryEngine, Mvcc, SledEngine};

struct Builder {
    sled: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("log")).expect("open log");
        let engine: Arc<dyn Engine> = if self.sled {
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
        Ok((dir, log, sm))
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
