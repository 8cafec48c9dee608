//! The list-append workload (Elle-style): transactions of 1-4 micro-ops over
//! [`HOT_KEYS`] hot keys `la/<seed>/<id>`, each `append(k, x)` of a unique
//! integer or `read(k)`, at [`Options::isolation`] (SERIALIZABLE by default).
//!
//! A value is a list of integers encoded as `1,2,3` (absent = empty). An
//! append reads the list at the transaction's snapshot (or its own earlier
//! write) and writes the list with `x` added; it is recorded as what it did:
//! `read(k) = [..]` then `append(k, x)`. After [`MAX_APPENDS_PER_KEY`]
//! appends a hot key is replaced by a fresh one, keeping lists short.
//!
//! `FinalRead`: on every node, one transaction scanning every key of the run,
//! recorded as a `Value::Txn` of reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trireme_client::{Isolation, Transaction};

use super::{decode_list, encode_list, on_every_node, Options, WorkloadStats, FINAL_READ_DEADLINE};
use crate::history::{MicroOp, OpFn, Recorder, Value};

/// Keys in use at once.
pub const HOT_KEYS: usize = 5;
/// Appends (invoked) to a key before it is replaced by a fresh one.
pub const MAX_APPENDS_PER_KEY: u64 = 64;
/// Most micro-ops a transaction plans (each append also records its read).
pub const MAX_MOPS: usize = 4;
/// What a read records for a value that is not a list of integers: an
/// element nobody appends, which the checker reports as a phantom.
pub const GARBAGE: u64 = u64::MAX;

fn prefix(seed: u64) -> String {
    format!("la/{seed:x}/")
}

/// The hot keys and how many appends each has had.
struct KeyPool {
    active: Vec<u64>,
    next: u64,
    appends: HashMap<u64, u64>,
}

impl KeyPool {
    fn new() -> KeyPool {
        KeyPool {
            active: (0..HOT_KEYS as u64).collect(),
            next: HOT_KEYS as u64,
            appends: HashMap::new(),
        }
    }

    fn pick(&self, rng: &mut StdRng) -> u64 {
        self.active[rng.gen_range(0..self.active.len())]
    }

    fn appended(&mut self, key: u64) {
        let n = self.appends.entry(key).or_insert(0);
        *n += 1;
        if *n >= MAX_APPENDS_PER_KEY {
            if let Some(slot) = self.active.iter_mut().find(|k| **k == key) {
                *slot = self.next;
                self.next += 1;
            }
        }
    }
}

enum Step {
    Read(String),
    Append(String, u64),
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

/// Runs transactions for `opts.duration`.
pub async fn traffic(opts: &Options, recorder: &Recorder) -> Result<WorkloadStats> {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let pool = Arc::new(Mutex::new(KeyPool::new()));
    let elements = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.concurrency {
        let client = opts.client(i)?;
        let mut worker = recorder.worker(opts.node_of(i));
        let mut rng = StdRng::seed_from_u64(opts.worker_seed(4, i));
        let pool = pool.clone();
        let elements = elements.clone();
        let prefix = prefix(opts.seed);
        let isolation = opts.isolation;
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let mut steps = Vec::new();
                {
                    let mut pool = pool.lock();
                    for _ in 0..rng.gen_range(1..=MAX_MOPS) {
                        let id = pool.pick(&mut rng);
                        let key = format!("{prefix}{id}");
                        if rng.gen_bool(0.5) {
                            pool.appended(id);
                            let x = elements.fetch_add(1, Ordering::Relaxed);
                            steps.push(Step::Append(key, x));
                        } else {
                            steps.push(Step::Read(key));
                        }
                    }
                }
                let mut planned = Vec::new();
                for s in &steps {
                    match s {
                        Step::Read(k) => planned.push(MicroOp::read_unknown(k)),
                        Step::Append(k, x) => {
                            planned.push(MicroOp::read_unknown(k));
                            planned.push(MicroOp::append(k, *x));
                        }
                    }
                }
                let op = worker.invoke(OpFn::Txn, Value::Txn(planned.clone()));
                let mut committing = false;
                let result: trireme_client::Result<Vec<MicroOp>> = async {
                    let tx = client.begin(isolation).await?;
                    let mut done = Vec::new();
                    for s in &steps {
                        let (Step::Read(k) | Step::Append(k, _)) = s;
                        let Some(mut list) = read_list(&tx, k).await? else {
                            // Garbage: record the read alone, change nothing.
                            tx.rollback();
                            return Ok(vec![MicroOp::read(k, &[GARBAGE])]);
                        };
                        done.push(MicroOp::read(k, &list));
                        if let Step::Append(k, x) = s {
                            list.push(*x);
                            tx.put(k.clone(), encode_list(&list))?;
                            done.push(MicroOp::append(k, *x));
                        }
                    }
                    committing = true;
                    tx.commit().await?;
                    Ok(done)
                }
                .await;
                match result {
                    Ok(done) => op.ok(Value::Txn(done)),
                    Err(e) => {
                        op.complete_err(Value::Txn(planned), &e, !committing);
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a list-append worker panicked")?;
    }
    Ok(WorkloadStats::from_history(
        "list-append",
        &recorder.history(),
        start.elapsed(),
    ))
}

/// The list under `key` (empty if absent), or `None` if it is not a list.
async fn read_list(tx: &Transaction, key: &str) -> trireme_client::Result<Option<Vec<u64>>> {
    Ok(match tx.get(key).await? {
        None => Some(Vec::new()),
        Some(v) => decode_list(&v).ok(),
    })
}

/// On every node: every key of the run, at one snapshot.
pub async fn final_read(opts: &Options, recorder: &Recorder, deadline: Duration) -> Result<()> {
    on_every_node(opts, deadline, |node| async move {
        let client = opts.node_client(node)?;
        let mut worker = recorder.worker(node as u64 + 1);
        let op = worker.invoke(OpFn::FinalRead, Value::Txn(Vec::new()));
        let result: Result<Vec<MicroOp>> = async {
            let tx = client.begin(Isolation::Serializable).await?;
            let pairs = tx.scan(prefix(opts.seed)).await?;
            tx.rollback();
            Ok(pairs
                .iter()
                .map(|(k, v)| {
                    let list = decode_list(v).unwrap_or_else(|_| vec![GARBAGE]);
                    MicroOp::read(&String::from_utf8_lossy(k), &list)
                })
                .collect())
        }
        .await;
        match result {
            Ok(mops) => {
                op.ok(Value::Txn(mops));
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
