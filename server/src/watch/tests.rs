use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::storage::MemoryEngine;

fn ev(seqno: Seqno, key: &str, value: Option<&str>) -> Event {
    Event {
        seqno,
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
        meta: crate::storage::KeyMeta::default(),
    }
}

#[test]
fn selectors_match_their_keys_only() {
    let key = Selector::Key(b"a".to_vec());
    assert!(key.matches(b"a"));
    assert!(!key.matches(b"ab") && !key.matches(b""));
    assert!(key.range().contains(b"a") && !key.range().contains(b"a\0"));
    let prefix = Selector::Prefix(b"ab".to_vec());
    assert!(prefix.matches(b"ab") && prefix.matches(b"abz"));
    assert!(!prefix.matches(b"a") && !prefix.matches(b"ac"));
    assert!(Selector::Prefix(Vec::new()).matches(b"anything"));
    let range = Selector::Range(KeyRange {
        start: b"b".to_vec(),
        end: Some(b"d".to_vec()),
    });
    assert!(range.matches(b"b") && range.matches(b"cz"));
    assert!(!range.matches(b"d") && !range.matches(b"a"));
}

#[test]
fn normalize_orders_by_seqno_then_key_and_keeps_the_last_write() {
    let out = normalize(vec![
        ev(5, "b", Some("1")),
        ev(5, "a", Some("1")),
        ev(5, "b", Some("2")),
        ev(4, "z", None),
    ]);
    assert_eq!(
        out,
        vec![
            ev(4, "z", None),
            ev(5, "a", Some("1")),
            ev(5, "b", Some("2"))
        ]
    );
}

#[test]
fn the_hub_routes_by_key_prefix_and_range_and_never_blocks() {
    let hub = Arc::new(Hub::new(10));
    let (mut k, p0) = hub.register(Selector::Key(b"a/1".to_vec()));
    let (mut p, _) = hub.register(Selector::Prefix(b"a/".to_vec()));
    let (mut r, _) = hub.register(Selector::Range(KeyRange {
        start: b"b".to_vec(),
        end: None,
    }));
    assert_eq!(p0, 10);
    assert_eq!(hub.watchers(), 3);
    hub.publish(11, Some(vec![ev(11, "a/2", Some("x"))]));
    assert!(k.rx.try_recv().is_err());
    assert_eq!(p.rx.try_recv().expect("prefix").events[0].key, b"a/2");
    assert!(r.rx.try_recv().is_err());
    hub.publish(12, Some(vec![ev(12, "c", None), ev(12, "a/1", Some("y"))]));
    assert_eq!(k.rx.try_recv().expect("key").upto, 12);
    assert!(p.rx.try_recv().is_ok() && r.rx.try_recv().is_ok());
    assert_eq!(hub.published(), 12);

    // A full queue: the watcher is dropped and flagged lagged, apply goes on.
    for s in 13..13 + QUEUE_BATCHES as u64 + 1 {
        hub.publish(s, Some(vec![ev(s, "a/1", Some("z"))]));
    }
    // Both watchers of "a/1" overflowed (nobody drained them); the range one did not.
    assert!(k.lagged.load(Ordering::Acquire) && p.lagged.load(Ordering::Acquire));
    assert!(!r.lagged.load(Ordering::Acquire));
    assert_eq!(hub.watchers(), 1);
    assert_eq!(hub.lagged_total.load(Ordering::Relaxed), 2);
    // Unregistering on drop.
    let (q, _) = hub.register(Selector::Key(b"q".to_vec()));
    drop(r);
    assert_eq!(hub.watchers(), 1);
    // Changes not collected: every watcher resynchronizes from storage.
    hub.publish(1000, None);
    assert!(q.lagged.load(Ordering::Acquire));
    assert_eq!(hub.watchers(), 0);
    assert_eq!(hub.published(), 1000);
}

struct Store {
    mvcc: Mvcc,
    horizon: std::sync::atomic::AtomicU64,
}

impl History for Store {
    fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }
    fn horizon(&self) -> Seqno {
        self.horizon.load(Ordering::Acquire)
    }
}

/// Applies like the state machine: storage first, then publish.
fn apply(store: &Store, hub: &Hub, seqno: Seqno, writes: &[(&str, Option<&str>)]) {
    let ops = writes
        .iter()
        .map(|(k, v)| Mvcc::version_op(k.as_bytes(), seqno, v.map(str::as_bytes)))
        .collect();
    store.mvcc.apply(ops).expect("apply");
    let events = hub.wants_events().then(|| {
        writes
            .iter()
            .map(|(k, v)| ev(seqno, k, *v))
            .collect::<Vec<_>>()
    });
    hub.publish(seqno, events);
}

fn spec(start: Option<Seqno>) -> WatchSpec {
    WatchSpec {
        selector: Selector::Prefix(b"w/".to_vec()),
        start,
        prev: true,
        progress: Duration::from_secs(3600),
    }
}

async fn next(rx: &mut mpsc::Receiver<Result<Message, WatchError>>) -> Message {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn catch_up_then_live_without_gap_or_repeat() {
    let store = Arc::new(Store {
        mvcc: Mvcc::new(Arc::new(MemoryEngine::default())),
        horizon: Default::default(),
    });
    let hub = Arc::new(Hub::new(0));
    apply(&store, &hub, 1, &[("w/a", Some("1")), ("x/a", Some("no"))]);
    apply(&store, &hub, 2, &[("w/a", Some("2")), ("w/b", Some("1"))]);
    apply(&store, &hub, 3, &[("w/a", None)]);
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(run(hub.clone(), store.clone(), spec(Some(2)), tx));
    // Catch-up from storage: seqnos 2 and 3, prev values from older versions.
    let m = next(&mut rx).await;
    assert_eq!(m.seqno, 3);
    let got: Vec<_> = m
        .changes
        .iter()
        .map(|c| (c.seqno, c.key.clone(), c.value.clone(), c.prev.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                b"w/a".to_vec(),
                Some(b"2".to_vec()),
                Some((1, b"1".to_vec()))
            ),
            (2, b"w/b".to_vec(), Some(b"1".to_vec()), None),
            (3, b"w/a".to_vec(), None, Some((2, b"2".to_vec()))),
        ]
    );
    // Live from the hub.
    apply(&store, &hub, 4, &[("w/c", Some("1")), ("y", Some("no"))]);
    let m = next(&mut rx).await;
    assert_eq!(m.seqno, 4);
    assert_eq!(m.changes.len(), 1);
    assert_eq!(m.changes[0].key, b"w/c");

    // A watcher whose queue overflows catches up from storage: nothing lost.
    for s in 5..5 + QUEUE_BATCHES as u64 + 50 {
        apply(&store, &hub, s, &[("w/n", Some(&s.to_string()))]);
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&(4 + QUEUE_BATCHES as u64 + 50)) {
        for c in next(&mut rx).await.changes {
            seen.push(c.seqno);
        }
    }
    let want: Vec<Seqno> = (5..5 + QUEUE_BATCHES as u64 + 50).collect();
    assert_eq!(seen, want);
    assert!(hub.lagged_total.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_start_at_or_below_the_horizon_is_compacted() {
    let store = Arc::new(Store {
        mvcc: Mvcc::new(Arc::new(MemoryEngine::default())),
        horizon: 5.into(),
    });
    let hub = Arc::new(Hub::new(0));
    for s in 1..=8 {
        apply(&store, &hub, s, &[("w/a", Some("v"))]);
    }
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(run(hub.clone(), store.clone(), spec(Some(5)), tx));
    match rx.recv().await {
        Some(Err(WatchError::Compacted { horizon: 5 })) => {}
        other => panic!("expected compacted at 5, got {other:?}"),
    }
    // From horizon + 1 it works.
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(run(hub.clone(), store.clone(), spec(Some(6)), tx));
    let m = next(&mut rx).await;
    assert_eq!(
        m.changes.iter().map(|c| c.seqno).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
}

#[tokio::test]
async fn from_now_announces_its_start_and_sends_progress_when_idle() {
    let store = Arc::new(Store {
        mvcc: Mvcc::new(Arc::new(MemoryEngine::default())),
        horizon: Default::default(),
    });
    let hub = Arc::new(Hub::new(0));
    apply(&store, &hub, 1, &[("w/a", Some("old"))]);
    let (tx, mut rx) = mpsc::channel(16);
    let mut s = spec(None);
    s.progress = Duration::from_millis(50);
    tokio::spawn(run(hub.clone(), store.clone(), s, tx));
    let m = next(&mut rx).await;
    assert!(m.changes.is_empty());
    assert_eq!(m.seqno, 1);
    // Writes elsewhere move the progress seqno.
    apply(&store, &hub, 2, &[("other", Some("x"))]);
    loop {
        let m = next(&mut rx).await;
        assert!(m.changes.is_empty());
        if m.seqno == 2 {
            break;
        }
    }
}
