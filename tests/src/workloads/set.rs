//! The set workload: every worker inserts unique elements `n` as keys
//! `set/<seed>/<n>` (value `n`); after the traffic, a `FinalRead` on every
//! node scans the prefix at one snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use trireme_client::Isolation;

use super::{on_every_node, Options, WorkloadStats, FINAL_READ_DEADLINE};
use crate::history::{OpFn, Recorder, Value};

fn prefix(seed: u64) -> String {
    format!("set/{seed:x}/")
}

/// Traffic and final reads, for runs without faults.
pub async fn run(
    endpoints: Vec<String>,
    recorder: Recorder,
    duration: Duration,
    concurrency: usize,
    seed: u64,
) -> Result<WorkloadStats> {
    let opts = Options::new(endpoints, duration, concurrency, seed);
    let stats = traffic(&opts, &recorder).await?;
    final_read(&opts, &recorder, FINAL_READ_DEADLINE).await?;
    Ok(stats)
}

/// Inserts unique elements for `opts.duration`.
pub async fn traffic(opts: &Options, recorder: &Recorder) -> Result<WorkloadStats> {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.concurrency {
        let client = opts.client(i)?;
        let mut worker = recorder.worker(opts.node_of(i));
        let counter = counter.clone();
        let prefix = prefix(opts.seed);
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let op = worker.invoke(OpFn::Add, Value::Element(n));
                match client.put(format!("{prefix}{n:010}"), n.to_string()).await {
                    Ok(_) => op.ok(Value::Element(n)),
                    Err(e) => {
                        op.complete_err(Value::Element(n), &e, false);
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a set worker panicked")?;
    }
    Ok(WorkloadStats::from_history(
        "set",
        &recorder.history(),
        start.elapsed(),
    ))
}

/// On every node: every element, at one snapshot.
pub async fn final_read(opts: &Options, recorder: &Recorder, deadline: Duration) -> Result<()> {
    on_every_node(opts, deadline, |node| async move {
        let client = opts.node_client(node)?;
        let mut worker = recorder.worker(node as u64 + 1);
        let op = worker.invoke(OpFn::FinalRead, Value::Elements(Vec::new()));
        let result: Result<Vec<u64>> = async {
            let tx = client.begin(Isolation::Serializable).await?;
            let pairs = tx.scan(prefix(opts.seed)).await?;
            tx.rollback();
            pairs
                .iter()
                .map(|(k, v)| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .with_context(|| {
                            format!("bad element {:?} under {:?}", v, String::from_utf8_lossy(k))
                        })
                })
                .collect()
        }
        .await;
        match result {
            Ok(els) => {
                op.ok(Value::Elements(els));
                Ok(())
            }
            Err(e) => {
                op.fail(Value::None, format!("final read: {e:#}"));
                Err(e)
            }
        }
    })
    .await
}
