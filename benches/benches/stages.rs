//! Stage benchmarks of the write path, so that a regression in one stage shows
//! without a cluster: the log append with its fdatasync, the encodings a write
//! set goes through (the client's protobuf, the log entry), and the whole
//! pipeline (submit, batch, Raft log, certify, apply) of a one-node cluster in
//! this process, where Raft has no peer to send to (the network is not used).
//! Certify and MVCC apply are in `components`.
//!
//! `cargo bench -p trireme-benches --bench stages -- --quick` for a fast look.

use std::hint::black_box;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openraft::{CommittedLeaderId, EntryPayload};
use prost::Message;
use trireme_client::proto;
use trireme_server::node::Backend;
use trireme_server::raft::log_store::LogStore;
use trireme_server::raft::types::{Entry, LogId, Request};
use trireme_server::storage::MemoryEngine;
use trireme_server::txn::{Mutation, WriteSet};
use trireme_server::{Config, Node};

/// Bytes per value, as in the end-to-end benchmarks.
const VALUE_BYTES: usize = 100;

/// A blind write set putting one 100-byte value under key number `i`.
fn put(i: usize) -> WriteSet {
    WriteSet::blind(
        1,
        vec![Mutation::Put {
            key: format!("key/{:06}", i % 100_000).into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
        }],
    )
}

/// The log entry at `index` carrying a batch of `n` one-put write sets.
fn entry(index: u64, n: usize) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::Batch((0..n).map(put).collect())),
    }
}

/// One append at a time, each waited for until fdatasync'd: the latency of a
/// group commit of one entry, for entries of 1 and 16 write sets.
fn log_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = LogStore::open(dir.path()).expect("open a fresh log");
    let mut index = 0;
    let mut group = c.benchmark_group("log_append_fdatasync");
    for n in [1, 16] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{n}_write_sets")),
            |b| {
                b.iter(|| {
                    index += 1;
                    let (tx, rx) = mpsc::channel();
                    store
                        .append_records(
                            [entry(index, n)],
                            Box::new(move |r| {
                                let _ = tx.send(r);
                            }),
                        )
                        .expect("queue an append");
                    rx.recv()
                        .expect("the writer reports every append")
                        .expect("append is durable");
                })
            },
        );
    }
    group.finish();
}

/// The encodings on the write path: a client's `PutRequest` (protobuf), and
/// a log entry of 16 write sets (bincode, as the log and the peers carry it).
fn encode_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_decode");
    let request = proto::PutRequest {
        key: b"key/012345".to_vec(),
        value: vec![b'v'; VALUE_BYTES],
        if_version: None,
    };
    let bytes = request.encode_to_vec();
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_request_encode", |b| {
        b.iter(|| black_box(&request).encode_to_vec())
    });
    group.bench_function("put_request_decode", |b| {
        b.iter(|| proto::PutRequest::decode(black_box(&bytes[..])).expect("valid protobuf"))
    });
    let e = entry(1, 16);
    let encoded = bincode::serialize(&e).expect("an entry encodes");
    group.throughput(Throughput::Elements(16));
    group.bench_function("log_entry_16_encode", |b| {
        b.iter(|| bincode::serialize(black_box(&e)).expect("an entry encodes"))
    });
    group.bench_function("log_entry_16_decode", |b| {
        b.iter(|| bincode::deserialize::<Entry>(black_box(&encoded)).expect("an entry decodes"))
    });
    group.finish();
}

/// Starts a one-node cluster in this process and waits until it leads.
async fn one_node(dir: &std::path::Path, memory: bool) -> Arc<Node> {
    let config = Config {
        node_id: 1,
        listen: "127.0.0.1:7420".into(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let node = if memory {
        let backend = Backend::memory(MemoryEngine::new(), Default::default(), Default::default());
        Node::start_with(config, backend).await
    } else {
        Node::start(config).await
    }
    .expect("a one-node cluster starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.check_primary().is_err() {
        assert!(Instant::now() < deadline, "the node did not elect itself");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

/// `Node::commit` of one-put write sets by 1 and by 64 concurrent callers, on
/// a one-node cluster: in memory (submit, batching, Raft, certify and apply
/// without I/O) and on disk (the log's fdatasync and sled).
fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("pipeline_one_node");
    group.throughput(Throughput::Elements(1));
    for (name, memory) in [("memory", true), ("disk", false)] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let node = rt.block_on(one_node(dir.path(), memory));
        for callers in [1usize, 64] {
            let id = BenchmarkId::new(name, format!("{callers}_callers"));
            group.bench_function(id, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let node = Arc::clone(&node);
                    async move {
                        let per_caller = iters.div_ceil(callers as u64);
                        let began = Instant::now();
                        let tasks: Vec<_> = (0..callers)
                            .map(|c| {
                                let node = Arc::clone(&node);
                                tokio::spawn(async move {
                                    for i in 0..per_caller {
                                        let ws = put(c * 1_000 + i as usize);
                                        node.commit(ws, false).await.expect("commit");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("a caller panicked");
                        }
                        // Time per write set actually committed, scaled to `iters`.
                        let done = per_caller * callers as u64;
                        began.elapsed().mul_f64(iters as f64 / done as f64)
                    }
                })
            });
        }
        rt.block_on(node.shutdown()).expect("shutdown");
    }
    group.finish();
}

criterion_group!(benches, log_append, encode_decode, pipeline);
criterion_main!(benches);
