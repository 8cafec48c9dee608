//! The register workload: LINEARIZABLE reads (50%), writes (25%) and
//! compare-and-sets on the value (25%, a `Commit` with a `Compare` on the
//! value and no snapshot) of small integers `0..VALUES`.
//!
//! Workers are grouped in slots of `n` (the node count), so each slot's key
//! is used from every node at once; every slot moves to a fresh key
//! `register/<seed>/<slot>/<generation>` after [`OPS_PER_KEY`] operations,
//! which keeps each key's linearizability search small.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trireme_client::{proto, ReadConsistency};

use super::{decode_int, Options, WorkloadStats};
use crate::history::{OpFn, Recorder, Value};

/// Operations on one key before its slot moves to a fresh key.
pub const OPS_PER_KEY: u64 = 128;
/// Values are drawn from `0..VALUES`.
pub const VALUES: i64 = 5;
/// What a read records when the value is not a decimal integer.
pub const GARBAGE: i64 = i64::MIN;

/// Traffic then (no) final reads, for runs without faults.
pub async fn run(
    endpoints: Vec<String>,
    recorder: Recorder,
    duration: Duration,
    concurrency: usize,
    seed: u64,
) -> Result<WorkloadStats> {
    let opts = Options::new(endpoints, duration, concurrency, seed);
    traffic(&opts, &recorder).await
}

/// Runs reads, writes and compare-and-sets for `opts.duration`.
pub async fn traffic(opts: &Options, recorder: &Recorder) -> Result<WorkloadStats> {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let nodes = opts.endpoints.len().max(1);
    let slots: Arc<Vec<AtomicU64>> = Arc::new(
        (0..opts.concurrency.div_ceil(nodes))
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.concurrency {
        let client = opts.client(i)?;
        let mut worker = recorder.worker(opts.node_of(i));
        let mut rng = StdRng::seed_from_u64(opts.worker_seed(2, i));
        let slots = slots.clone();
        let slot = i / nodes;
        let seed = opts.seed;
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let generation = slots[slot].fetch_add(1, Ordering::Relaxed) / OPS_PER_KEY;
                let key = format!("register/{seed:x}/{slot}/{generation}");
                let dice = rng.gen_range(0..4);
                if dice < 2 {
                    let op = worker.invoke(OpFn::Read, Value::register(&key, None));
                    match client.get(&key, ReadConsistency::Linearizable).await {
                        Ok(found) => {
                            // A value that is not a number nobody wrote: it is
                            // recorded as GARBAGE, which no write explains.
                            let v = found.map(|v| decode_int(&v.value).unwrap_or(GARBAGE));
                            op.ok(Value::register(&key, v));
                        }
                        Err(e) => {
                            op.complete_err(Value::None, &e, true);
                        }
                    }
                } else if dice == 2 {
                    let v = rng.gen_range(0..VALUES);
                    let value = Value::register(&key, Some(v));
                    let op = worker.invoke(OpFn::Write, value.clone());
                    match client.put(key.clone(), v.to_string()).await {
                        Ok(_) => op.ok(value),
                        Err(e) => {
                            op.complete_err(value, &e, false);
                        }
                    }
                } else {
                    let from = rng.gen_range(0..VALUES);
                    let to = rng.gen_range(0..VALUES);
                    let value = Value::cas(&key, from, to);
                    let op = worker.invoke(OpFn::Cas, value.clone());
                    match client.commit(cas_request(&key, from, to)).await {
                        Ok(_) => op.ok(value),
                        Err(e) => {
                            op.complete_err(value, &e, false);
                        }
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a register worker panicked")?;
    }
    Ok(WorkloadStats::from_history(
        "register",
        &recorder.history(),
        start.elapsed(),
    ))
}

/// A blind write of `to` under `key`, certified against `value == from`.
pub fn cas_request(key: &str, from: i64, to: i64) -> proto::CommitRequest {
    proto::CommitRequest {
        snapshot: None,
        isolation: proto::Isolation::Serializable as i32,
        mutations: vec![proto::Mutation {
            key: key.as_bytes().to_vec(),
            value: to.to_string().into_bytes(),
            delete: false,
            lease: 0,
        }],
        compares: vec![proto::Compare {
            key: key.as_bytes().to_vec(),
            target: Some(proto::compare::Target::Value(from.to_string().into_bytes())),
        }],
        reads: Vec::new(),
        ranges: Vec::new(),
        server_retry: false,
    }
}
