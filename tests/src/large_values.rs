//! A burst of large writes, as a nemesis: many concurrent writers of 64 KiB
//! values and one writer of transactions near the write-set limit, on keys of
//! their own (`nemesis-burst/...`, which no workload reads), until stopped.
//! It loads replication with megabytes per log entry, the load that once cut
//! a follower off for good.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trireme_client::{Client, Isolation};

/// Bytes of each small write's value.
pub const VALUE_BYTES: usize = 64 << 10;
/// Puts of 1 MiB (the default value limit) in each large transaction.
pub const BIG_PUTS: usize = 12;

/// A running burst.
pub struct LargeValueBurst {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Writes acknowledged so far (small puts and large transactions).
    pub acked: Arc<AtomicU64>,
    /// Writes that failed (refused, timed out, outcome unknown).
    pub failed: Arc<AtomicU64>,
}

impl LargeValueBurst {
    /// Starts `writers` writers of 64 KiB values and one of ~12 MiB
    /// transactions, spread over `clients` in turn.
    pub fn start(clients: &[Client], writers: usize) -> LargeValueBurst {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = clients[w % clients.len()].clone();
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("nemesis-burst/{w}/{}", i % 4);
                    let value = vec![(w as u8) ^ (i as u8); VALUE_BYTES];
                    let counter = match client.put(key, value).await {
                        Ok(_) => &acked,
                        Err(_) => &failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        if let Some(client) = clients.first().cloned() {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let attempt = async {
                        let txn = client.begin(Isolation::Snapshot).await?;
                        for k in 0..BIG_PUTS {
                            txn.put(format!("nemesis-burst/big/{k}"), vec![k as u8; 1 << 20])?;
                        }
                        txn.commit().await
                    };
                    let counter = match attempt.await {
                        Ok(_) => &acked,
                        Err(_) => &failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        LargeValueBurst {
            stop,
            tasks,
            acked,
            failed,
        }
    }

    /// Waits up to `deadline` for a first acknowledged write: the burst is
    /// really reaching the cluster.
    pub async fn wait_acked(&self, deadline: Duration) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        while self.acked.load(Ordering::Relaxed) == 0 {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Stops every writer (each finishes the request it is in) and returns
    /// (acknowledged, failed).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
