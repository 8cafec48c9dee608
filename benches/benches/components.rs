//! Component benchmarks: the certifier against MVCC storage, and MVCC apply.
//!
//! `cargo bench -p trireme-benches -- --quick` for a fast look.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use trireme_server::certify::{Certifier, History, Verdict};
use trireme_server::storage::{BatchOp, Engine, MemoryEngine, Mvcc, SledEngine};
use trireme_server::txn::{Isolation, Key, KeyRange, Mutation, Seqno, TxnId, Value, WriteSet};

/// Keys preloaded before certifying.
const KEYS: usize = 100_000;
/// Versions per preloaded log entry.
const PRELOAD_BATCH: usize = 1_000;
/// Versions per applied batch.
const APPLY_BATCH: usize = 100;
/// Bytes per value in applied batches.
const VALUE_BYTES: usize = 100;
/// Distinct seqnos cycled through by apply, so that the store stays bounded.
const APPLY_SEQNOS: u64 = 1_000;

/// The certifier's view of committed history, read straight from MVCC.
struct MvccHistory<'a>(&'a Mvcc);

impl History for MvccHistory<'_> {
    fn last_write(&self, key: &[u8]) -> Option<Seqno> {
        self.0
            .last_write(key, Seqno::MAX)
            .expect("memory engine reads do not fail")
    }

    fn current(&self, key: &[u8]) -> Option<(Seqno, Value)> {
        self.0
            .get(key, u64::MAX)
            .expect("memory engine reads do not fail")
    }

    fn first_write_in_range_after(&self, range: &KeyRange, after: Seqno) -> Option<(Key, Seqno)> {
        self.0
            .first_write_in_range_after(range, after, u64::MAX)
            .expect("memory engine reads do not fail")
    }
}

fn key(i: usize) -> Key {
    format!("key/{:06}", i % KEYS).into_bytes()
}

/// Writes `KEYS` keys, `PRELOAD_BATCH` per seqno; returns the last seqno.
fn preload(mvcc: &Mvcc) -> Seqno {
    let mut seqno = 0;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(PRELOAD_BATCH) {
        seqno += 1;
        let ops = chunk
            .iter()
            .map(|&i| Mvcc::version_op(&key(i), seqno, Some(&[b'v'; 16])))
            .collect();
        mvcc.apply(ops).expect("memory engine writes do not fail");
    }
    seqno
}

/// A write set of `puts` puts spread over the key space; SERIALIZABLE ones
/// also read 10 keys and scan a range of 100 keys.
fn write_set(puts: usize, snapshot: Option<Seqno>, isolation: Isolation) -> WriteSet {
    let mut ws = WriteSet::blind(1, Vec::new());
    ws.id = TxnId(1);
    ws.snapshot = snapshot;
    ws.isolation = isolation;
    ws.mutations = (0..puts)
        .map(|i| Mutation::Put {
            key: key(i * 7_919),
            value: vec![b'x'; VALUE_BYTES],
            lease: 0,
        })
        .collect();
    if isolation == Isolation::Serializable && snapshot.is_some() {
        ws.reads = (0..10).map(|i| key(1_000 + i * 4_099)).collect();
        ws.ranges = vec![KeyRange {
            start: key(50_000),
            end: Some(key(50_100)),
        }];
    }
    ws
}

fn certify(c: &mut Criterion) {
    let mvcc = Mvcc::new(Arc::new(MemoryEngine::new()));
    let head = preload(&mvcc);
    let history = MvccHistory(&mvcc);
    let certifier = Certifier::new(1_000);
    let seqno = head + 1;

    let mut group = c.benchmark_group("certify");
    group.throughput(Throughput::Elements(1));
    for puts in [1, 10] {
        let cases = [
            ("blind", write_set(puts, None, Isolation::Serializable)),
            ("snapshot", write_set(puts, Some(head), Isolation::Snapshot)),
            (
                "serializable_10_reads_1_range",
                write_set(puts, Some(head), Isolation::Serializable),
            ),
        ];
        for (name, ws) in cases {
            // Nothing conflicts, so every rule runs to the end.
            assert_eq!(certifier.certify(&ws, seqno, &history), Verdict::Commit);
            group.bench_with_input(
                BenchmarkId::new(name, format!("{puts}_puts")),
                &ws,
                |b, ws| b.iter(|| certifier.certify(black_box(ws), seqno, &history)),
            );
        }
    }
    group.finish();
}

/// One applied log entry: `APPLY_BATCH` versions and the applied seqno.
fn apply_batch(seqno: Seqno) -> Vec<BatchOp> {
    let value = [b'v'; VALUE_BYTES];
    let first = seqno as usize * APPLY_BATCH;
    let mut ops: Vec<BatchOp> = (first..first + APPLY_BATCH)
        .map(|i| Mvcc::version_op(&key(i), seqno, Some(&value)))
        .collect();
    ops.push(Mvcc::meta_op("applied", seqno.to_be_bytes().to_vec()));
    ops
}

fn apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("mvcc_apply");
    group.throughput(Throughput::Elements(APPLY_BATCH as u64));
    for engine_name in ["memory", "sled"] {
        // What the state machine does: one atomic batch per applied run
        // (`no_sync`), the same with a sync each (`sync_per_batch`), and
        // one write after another (`in_order`, `Mvcc::apply_in_order`).
        for (mode, in_order, sync) in [
            ("no_sync", false, false),
            ("sync_per_batch", false, true),
            ("in_order", true, false),
        ] {
            let engine: Arc<dyn Engine> = match engine_name {
                "memory" => Arc::new(MemoryEngine::new()),
                _ => {
                    let path = dir.path().join(format!("sled-{mode}"));
                    Arc::new(SledEngine::open(&path, 64 << 20).expect("open sled"))
                }
            };
            let mvcc = Mvcc::new(engine);
            let mut n: u64 = 0;
            let id = BenchmarkId::new(engine_name, mode);
            group.bench_function(id, |b| {
                b.iter_batched(
                    || {
                        n += 1;
                        apply_batch(n % APPLY_SEQNOS + 1)
                    },
                    |ops| {
                        if in_order {
                            mvcc.apply_in_order(ops).expect("apply");
                        } else {
                            mvcc.apply(ops).expect("apply");
                        }
                        if sync {
                            mvcc.sync().expect("sync");
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, certify, apply);
criterion_main!(benches);
