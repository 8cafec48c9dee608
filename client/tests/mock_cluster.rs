//! The client library against a mock cluster: failover, the error contract
//! over the wire, session tokens, and transactions.

mod mock;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mock::MockCluster;
use trireme_client::proto;
use trireme_client::{Client, ClientOptions, Error, Isolation, ReadConsistency, ScanSpec};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client(cluster: &MockCluster) -> Result<Client, Error> {
    Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )
}

#[tokio::test]
async fn writes_fail_over_to_the_next_node_when_one_is_unavailable() -> TestResult {
    let cluster = MockCluster::start(3).await?;
    cluster.nodes[0].unavailable.store(true, Ordering::SeqCst);
    let client = client(&cluster)?;

    let seqno = client.put("k", "v").await?;
    assert_eq!(seqno, 1);
    assert_eq!(cluster.nodes[0].count("put"), 1);
    assert_eq!(cluster.nodes[1].count("put"), 1);
    assert_eq!(client.current_endpoint(), cluster.nodes[1].addr);

    // The client stays on the node that answered.
    client.get("k", ReadConsistency::Linearizable).await?;
    assert_eq!(cluster.nodes[0].count("get"), 0);
    Ok(())
}

#[tokio::test]
async fn an_overloaded_node_is_left_for_the_next_after_a_backoff() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    cluster.nodes[0].overloaded.store(true, Ordering::SeqCst);
    let client = client(&cluster)?;
    // Refused at admission, a write is safe to resend: it lands on node 2.
    client.put("k", "v").await?;
    assert_eq!(cluster.nodes[0].count("put"), 1);
    assert_eq!(cluster.nodes[1].count("put"), 1);
    assert_eq!(client.current_endpoint(), cluster.nodes[1].addr);

    // Every node overloaded: one pass and the retries, each after a backoff,
    // then the refusal, naming the bound.
    cluster.nodes[1].overloaded.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = client.put("k", "w").await.expect_err("all overloaded");
    match &err {
        Error::Unavailable(m) => assert!(m.contains("max_requests_in_flight"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let total: usize = cluster.nodes.iter().map(|n| n.count("put")).sum();
    assert_eq!(total, 2 + 4);
    // Four refusals, four overload backoffs of at least 10, 20, 40, 80 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn all_nodes_unavailable_is_unavailable_naming_each() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    for node in &cluster.nodes {
        node.unavailable.store(true, Ordering::SeqCst);
    }
    let client = client(&cluster)?;
    let err = client.put("k", "v").await.expect_err("no primary");
    match &err {
        Error::Unavailable(m) => {
            assert!(m.contains(&cluster.nodes[0].addr) && m.contains(&cluster.nodes[1].addr));
            assert!(m.contains("primary component"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // One pass, then the backed-off retries.
    let total: usize = cluster.nodes.iter().map(|n| n.count("put")).sum();
    assert_eq!(total, 4);
    Ok(())
}

#[tokio::test]
async fn aborts_and_invalid_input_arrive_typed() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    let v1 = client.put("k", "a").await?;

    let err = client
        .put_if_version("k", "b", v1 + 5)
        .await
        .expect_err("stale version");
    assert!(err.is_compare_failed() && !err.is_conflict(), "{err:?}");

    assert_eq!(client.put_if_version("k", "b", v1).await?, v1 + 1);
    let err = client
        .put_if_version("k", "c", 0)
        .await
        .expect_err("exists");
    assert!(err.is_compare_failed());

    let err = client.put(vec![b'x'; 20], "v").await.expect_err("too long");
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("max_key_bytes")),
        "{err:?}"
    );

    // Binary metadata survives the trip.
    cluster.store.lock().expect("lock").force_conflicts = 1;
    let err = client
        .commit(proto::CommitRequest {
            mutations: vec![proto::Mutation {
                key: b"\x00\xffbin".to_vec(),
                value: b"v".to_vec(),
                delete: false,
                lease: 0,
            }],
            ..Default::default()
        })
        .await
        .expect_err("forced conflict");
    match err {
        Error::Aborted {
            kind, key, seqno, ..
        } => {
            assert_eq!(kind, "write_conflict");
            assert_eq!(key.as_deref(), Some(&b"\x00\xffbin"[..]));
            assert_eq!(seqno, Some(v1 + 1));
        }
        other => panic!("expected Aborted, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn session_reads_send_the_highest_seqno_seen() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    client.put("a", "1").await?;
    let seqno = client.put("b", "2").await?;
    assert_eq!(client.session_seqno(), seqno);

    let got = client
        .get("a", ReadConsistency::Session)
        .await?
        .expect("found");
    assert_eq!((got.value.as_slice(), got.version), (&b"1"[..], 1));
    let read = *cluster.nodes[0]
        .reads
        .lock()
        .expect("lock")
        .last()
        .expect("read");
    assert_eq!(read.consistency, proto::ReadConsistency::Session as i32);
    assert_eq!(read.min_seqno, seqno);
    assert_eq!(read.snapshot, None);

    assert_eq!(client.get("zzz", ReadConsistency::Local).await?, None);
    Ok(())
}

#[tokio::test]
async fn put_many_returns_each_outcome_in_order() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    let mut pairs: Vec<(String, String)> = (0..40)
        .map(|i| (format!("m/{i:02}"), format!("v{i}")))
        .collect();
    // One bad pair in the middle fails alone; the others still commit.
    pairs[17].0 = "m/a-key-over-sixteen-bytes".into();
    let results = client.put_many(pairs.clone(), 8).await;
    assert_eq!(results.len(), 40);
    let mut seqnos = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (17, Err(Error::InvalidInput(m))) => assert!(m.contains("16 bytes"), "{m}"),
            (17, other) => panic!("pair 17 should be refused, got {other:?}"),
            (_, Ok(seqno)) => seqnos.push(*seqno),
            (_, Err(e)) => panic!("pair {i} failed: {e}"),
        }
    }
    seqnos.sort_unstable();
    seqnos.dedup();
    assert_eq!(seqnos.len(), 39, "each write is its own commit");
    assert_eq!(cluster.nodes[0].count("put"), 40);
    for (i, (key, value)) in pairs.iter().enumerate().filter(|(i, _)| *i != 17) {
        let got = client.get(key, ReadConsistency::Local).await?;
        assert_eq!(
            got.map(|v| v.value),
            Some(value.clone().into_bytes()),
            "pair {i}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn scans_and_deletes() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    for k in ["p/a", "p/b", "p/c", "q/a"] {
        client.put(k, k.to_uppercase()).await?;
    }
    client.delete("p/b", None).await?;
    let (kvs, more, _) = client
        .scan(&ScanSpec::prefix("p/"), ReadConsistency::Linearizable)
        .await?;
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"p/a".to_vec(), b"p/c".to_vec()]);
    assert!(!more);
    let (kvs, more, _) = client
        .scan(
            &ScanSpec::range("", "").with_limit(1).keys_only(),
            ReadConsistency::Local,
        )
        .await?;
    assert!(more && kvs.len() == 1 && kvs[0].value.is_empty());
    Ok(())
}

#[tokio::test]
async fn transactions_read_at_their_snapshot_and_see_their_own_writes() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    client.put("p/a", "1").await?;
    client.put("p/b", "2").await?;
    client.put("p/c", "3").await?;

    let tx = client.begin(Isolation::Serializable).await?;
    let snapshot = tx.snapshot().expect("begun");
    assert_eq!(snapshot, 3);
    // A write after the snapshot is invisible to the transaction.
    client.put("p/d", "4").await?;

    assert_eq!(tx.get("p/a").await?, Some(b"1".to_vec()));
    assert_eq!(tx.get("nope").await?, None);
    tx.put("p/a", "one")?;
    tx.delete("p/b")?;
    tx.put("p/e", "5")?;
    assert_eq!(tx.get("p/a").await?, Some(b"one".to_vec()));
    assert_eq!(tx.get("p/b").await?, None);

    let seen = tx.scan("p/").await?;
    let seen: Vec<(String, String)> = seen
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("p/a".into(), "one".into()),
            ("p/c".into(), "3".into()),
            ("p/e".into(), "5".into()),
        ]
    );
    // Every read went to the snapshot, on a node that has applied it.
    for read in cluster.nodes[0].reads.lock().expect("lock").iter().skip(1) {
        if read.snapshot.is_some() {
            assert_eq!(read.snapshot, Some(snapshot));
            assert_eq!(read.min_seqno, snapshot);
        }
    }

    // p/d was written after the snapshot inside the scanned range: conflict.
    let err = tx.commit().await.expect_err("range conflict");
    assert!(err.is_conflict(), "{err:?}");
    let sent = cluster.nodes[0].commits.lock().expect("lock")[0].clone();
    assert_eq!(sent.snapshot, Some(snapshot));
    assert_eq!(sent.mutations.len(), 3);
    assert_eq!(
        sent.reads,
        vec![
            proto::ReadKey {
                key: b"nope".to_vec(),
                version: 0
            },
            proto::ReadKey {
                key: b"p/a".to_vec(),
                version: 1
            },
        ]
    );
    assert_eq!(
        sent.ranges,
        vec![proto::ReadRange {
            start: b"p/".to_vec(),
            end: b"p0".to_vec()
        }]
    );
    Ok(())
}

#[tokio::test]
async fn transaction_get_many_reads_once_at_the_snapshot_over_its_own_writes() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    client.put("m/a", "1").await?;
    client.put("m/b", "2").await?;

    let tx = client.begin(Isolation::Serializable).await?;
    let snapshot = tx.snapshot().expect("begun");
    client.put("m/c", "after").await?; // after the snapshot: invisible
    tx.put("m/b", "mine")?;
    tx.delete("m/a")?;
    tx.put("m/w", "w")?;
    let got = tx.get_many(&["m/c", "m/a", "m/b", "m/x", "m/c"]).await?;
    assert_eq!(got, vec![None, None, Some(b"mine".to_vec()), None, None]);
    // One call, at the snapshot, carrying only the keys not written here.
    assert_eq!(cluster.nodes[0].count("get_many"), 1);
    assert_eq!(cluster.nodes[0].count("get"), 0);
    let read = *cluster.nodes[0]
        .reads
        .lock()
        .expect("lock")
        .last()
        .expect("a read");
    assert_eq!(read.snapshot, Some(snapshot));
    // Keys all written here: nothing is sent.
    assert_eq!(
        tx.get_many(&["m/w", "m/b"]).await?,
        vec![Some(b"w".to_vec()), Some(b"mine".to_vec())]
    );
    assert_eq!(cluster.nodes[0].count("get_many"), 1);

    // The read set holds what came from the server, with the versions seen.
    let tx2 = client.begin(Isolation::Serializable).await?;
    let got = tx2.get_many(&["m/b", "m/a", "m/none"]).await?;
    assert_eq!(got, vec![Some(b"2".to_vec()), Some(b"1".to_vec()), None]);
    tx2.put("m/z", "z")?;
    tx2.commit().await?;
    let sent = cluster.nodes[0]
        .commits
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("sent");
    let reads: Vec<(Vec<u8>, u64)> = sent.reads.into_iter().map(|r| (r.key, r.version)).collect();
    assert_eq!(
        reads,
        vec![
            (b"m/a".to_vec(), 1),
            (b"m/b".to_vec(), 2),
            (b"m/none".to_vec(), 0)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_deferred_transaction_takes_its_snapshot_with_its_first_read() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    client.put("d/a", "1").await?;
    client.put("d/b", "2").await?;
    let node = &cluster.nodes[0];

    // No round trip at begin; the first get takes the snapshot.
    let tx = client.begin_deferred(Isolation::Serializable);
    assert_eq!(tx.snapshot(), None);
    client.put("d/c", "3").await?; // before the first read: visible
    assert_eq!(tx.get("d/c").await?, Some(b"3".to_vec()));
    assert_eq!(tx.snapshot(), Some(3));
    let first = *node.reads.lock().expect("lock").last().expect("a read");
    assert_eq!(first.snapshot, None, "the first read is fresh");
    assert_eq!(
        first.consistency,
        proto::ReadConsistency::Linearizable as i32
    );
    client.put("d/a", "after").await?; // after the snapshot: invisible
    let got = tx.get_many(&["d/a", "d/b"]).await?;
    assert_eq!(got, vec![Some(b"1".to_vec()), Some(b"2".to_vec())]);
    let second = *node.reads.lock().expect("lock").last().expect("a read");
    assert_eq!(second.snapshot, Some(3));
    tx.put("d/z", "z")?;
    // d/a was written after the snapshot and read: a conflict.
    let err = tx.commit().await.expect_err("read conflict");
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(node.commits.lock().expect("lock")[0].snapshot, Some(3));
    assert_eq!(node.count("begin"), 0);

    // get_many as the first read; clones racing it share one snapshot.
    let tx = client.begin_deferred(Isolation::Serializable);
    let clone = tx.clone();
    let (a, b) = tokio::join!(tx.get_many(&["d/a", "d/c"]), clone.get("d/b"));
    assert_eq!(a?, vec![Some(b"after".to_vec()), Some(b"3".to_vec())]);
    assert_eq!(b?, Some(b"2".to_vec()));
    assert_eq!(tx.snapshot(), Some(4));
    assert_eq!(node.count("begin"), 0);

    // A scan first, or a commit with no read, begins first.
    let tx = client.begin_deferred(Isolation::Snapshot);
    assert_eq!(tx.scan("d/").await?.len(), 3);
    assert_eq!(node.count("begin"), 1);
    let tx = client.begin_deferred(Isolation::Snapshot);
    tx.put("d/w", "w")?;
    let seqno = tx.commit().await?;
    assert_eq!(node.count("begin"), 2);
    assert_eq!(tx_snapshot_of_last_commit(&cluster), Some(4));
    assert_eq!(seqno, 5);
    Ok(())
}

fn tx_snapshot_of_last_commit(cluster: &MockCluster) -> Option<u64> {
    cluster.nodes[0]
        .commits
        .lock()
        .expect("lock")
        .last()
        .and_then(|c| c.snapshot)
}

#[tokio::test]
async fn snapshot_isolation_ignores_reads_and_read_only_commits_locally() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = client(&cluster)?;
    client.put("a", "1").await?;

    let tx = client.begin(Isolation::Snapshot).await?;
    tx.get("a").await?;
    client.put("a", "2").await?; // concurrent write of a key only read
    tx.put("b", "x")?;
    let seqno = tx.commit().await?;
    assert_eq!(seqno, 3);

    let ro = client.begin(Isolation::Serializable).await?;
    ro.get("a").await?;
    let snapshot = ro.snapshot().expect("begun");
    assert_eq!(ro.commit().await?, snapshot);
    assert_eq!(cluster.nodes[0].count("commit"), 1);
    Ok(())
}

#[tokio::test]
async fn transaction_closures_retry_conflicts_until_they_commit() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    let client = client(&cluster)?;
    client.put("counter", "0").await?;

    // Concurrent increments: every one must land exactly once.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = Client::pinned(cluster.endpoints(), i)?;
        tasks.push(tokio::spawn(async move {
            client
                .transaction(Isolation::Serializable, |tx| async move {
                    let n: u64 = tx
                        .get("counter")
                        .await?
                        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
                        .unwrap_or(0);
                    tx.put("counter", (n + 1).to_string())?;
                    Ok(n)
                })
                .await
        }));
    }
    for task in tasks {
        let (_, seqno) = task.await??;
        assert!(seqno > 1);
    }
    let counter = client
        .get("counter", ReadConsistency::Linearizable)
        .await?
        .expect("counter");
    assert_eq!(counter.value, b"8");

    // A failed compare is an answer, not retried.
    let mut runs = 0;
    let err = client
        .transaction(Isolation::Serializable, |_tx| {
            runs += 1;
            let client = client.clone();
            async move { client.put_if_version("counter", "x", 1).await }
        })
        .await
        .expect_err("compare fails");
    assert!(err.is_compare_failed());
    assert_eq!(runs, 1);
    Ok(())
}

#[tokio::test]
async fn transaction_closures_give_up_after_the_attempt_limit() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let client = Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            txn_max_attempts: 3,
            ..ClientOptions::default()
        },
    )?;
    cluster.store.lock().expect("lock").force_conflicts = 5;
    let err = client
        .transaction(Isolation::Snapshot, |tx| async move { tx.put("k", "v") })
        .await
        .expect_err("always conflicts");
    assert!(err.is_conflict());
    assert_eq!(cluster.nodes[0].count("commit"), 3);
    Ok(())
}

#[tokio::test]
async fn status_and_checksum_of_each_endpoint() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    let client = client(&cluster)?;
    client.put("k", "v").await?;
    let s = client.status_of(&cluster.nodes[1].addr).await?;
    assert_eq!((s.node_id, s.leader_id, s.applied_seqno), (2, 1, 1));
    assert_eq!(s.members.len(), 1);
    let c = client.checksum().await?;
    assert_eq!((c.seqno, c.keys), (1, 1));
    Ok(())
}
