use std::sync::Arc;

use super::*;

fn mem() -> Mvcc {
    Mvcc::new(Arc::new(MemoryEngine::new()))
}

#[test]
fn reads_see_newest_version_at_or_below_snapshot() -> Result<()> {
    let m = mem();
    m.apply(vec![Mvcc::version_op(b"a", 1, Some(b"v1"))])?;
    m.apply(vec![Mvcc::version_op(b"a", 3, Some(b"v3"))])?;
    m.apply(vec![Mvcc::version_op(b"a", 5, None)])?;
    assert_eq!(m.get(b"a", 0)?, None);
    assert_eq!(m.get(b"a", 1)?, Some((1, b"v1".to_vec())));
    assert_eq!(m.get(b"a", 2)?, Some((1, b"v1".to_vec())));
    assert_eq!(m.get(b"a", 4)?, Some((3, b"v3".to_vec())));
    assert_eq!(m.get(b"a", 5)?, None);
    assert_eq!(m.last_write(b"a", Seqno::MAX)?, Some(5));
    assert_eq!(m.get(b"a\0", 9)?, None);
    Ok(())
}

#[test]
fn scan_returns_live_keys_in_order_with_limit() -> Result<()> {
    let m = mem();
    m.apply(vec![
        Mvcc::version_op(b"b", 1, Some(b"1")),
        Mvcc::version_op(b"a", 1, Some(b"1")),
        Mvcc::version_op(b"a\0x", 1, Some(b"z")),
        Mvcc::version_op(b"c", 1, Some(b"1")),
    ])?;
    m.apply(vec![
        Mvcc::version_op(b"b", 2, None),
        Mvcc::version_op(b"c", 2, Some(b"2")),
    ])?;
    let (all, more) = m.scan(
        &KeyRange {
            start: vec![],
            end: None,
        },
        2,
        10,
        false,
    )?;
    let keys: Vec<_> = all.iter().map(|v| (v.key.clone(), v.version)).collect();
    assert_eq!(
        keys,
        vec![
            (b"a".to_vec(), 1),
            (b"a\0x".to_vec(), 1),
            (b"c".to_vec(), 2)
        ]
    );
    assert!(!more);
    let (old, _) = m.scan(&KeyRange::prefix(b"b"), 1, 10, false)?;
    assert_eq!(old.len(), 1);
    let (two, more) = m.scan(
        &KeyRange {
            start: vec![],
            end: None,
        },
        1,
        2,
        true,
    )?;
    assert_eq!(two.len(), 2);
    assert!(more);
    assert!(two[0].value.is_empty());
    assert_eq!(
        m.first_write_in_range_after(&KeyRange::prefix(b"b"), 1, Seqno::MAX)?,
        Some((b"b".to_vec(), 2))
    );
    assert_eq!(
        m.first_write_in_range_after(&KeyRange::prefix(b"a"), 1, Seqno::MAX)?,
        None
    );
    Ok(())
}

#[test]
fn gc_keeps_what_snapshots_above_the_horizon_see() -> Result<()> {
    let m = mem();
    for s in 1..=5 {
        m.apply(vec![Mvcc::version_op(
            b"k",
            s,
            Some(format!("v{s}").as_bytes()),
        )])?;
    }
    m.apply(vec![
        Mvcc::version_op(b"gone", 1, Some(b"x")),
        Mvcc::version_op(b"gone", 2, None),
    ])?;
    m.apply(vec![
        Mvcc::txn_op(crate::txn::TxnId(7), 2),
        Mvcc::txn_op(crate::txn::TxnId(8), 4),
    ])?;
    let before = m.checksum(5)?;
    let removed = m.gc(3)?;
    // k@1, k@2, gone@1, gone@2 (tombstone at the horizon), txn 7.
    assert_eq!(removed, 5);
    assert_eq!(m.get(b"k", 3)?, Some((3, b"v3".to_vec())));
    assert_eq!(m.get(b"k", 5)?, Some((5, b"v5".to_vec())));
    assert_eq!(m.last_write(b"gone", Seqno::MAX)?, None);
    assert_eq!(m.checksum(5)?, before);
    assert_eq!(m.txn_seqno(crate::txn::TxnId(7))?, None);
    assert_eq!(m.txn_seqno(crate::txn::TxnId(8))?, Some(4));
    Ok(())
}

/// Writes keys `k00000`..`k11999` at seqnos 1 (`old`) and 2 (`new`): GC at
/// a horizon of 2 or more removes 12,000 versions, over one 10,000-op batch.
fn twelve_thousand_stale_versions(m: &Mvcc) -> Result<()> {
    for chunk in (0..12_000u32).collect::<Vec<_>>().chunks(1_000) {
        let mut ops = Vec::new();
        for i in chunk {
            let key = format!("k{i:05}");
            ops.push(Mvcc::version_op(key.as_bytes(), 1, Some(b"old")));
            ops.push(Mvcc::version_op(key.as_bytes(), 2, Some(b"new")));
        }
        m.apply(ops)?;
    }
    Ok(())
}

/// GC applies its removals while it scans, in batches of 10,000. The memory
/// engine held its read lock across a scan's callback, so the first batch
/// waited for that lock forever (found when a benchmark's one-node memory
/// cluster passed its GC horizon and never shut down).
#[test]
fn gc_of_more_than_one_batch_finishes_on_the_memory_engine() -> Result<()> {
    let m = mem();
    twelve_thousand_stale_versions(&m)?;
    let before = m.checksum(3)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let gc = m.clone();
    std::thread::spawn(move || {
        let _ = tx.send(gc.gc(3));
    });
    let removed = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("GC did not finish within 30 s: it waits on the engine's lock")?;
    assert_eq!(removed, 12_000);
    assert_eq!(m.checksum(3)?, before);
    assert_eq!(m.get(b"k00000", 1)?, None);
    assert_eq!(m.get(b"k11999", 3)?, Some((2, b"new".to_vec())));
    Ok(())
}

/// The memory engine's scans copy out a chunk at a time: both directions
/// still see every entry once, in order, across chunk boundaries, and stop
/// where the callback says.
#[test]
fn memory_engine_scans_cross_chunks_in_order() -> Result<()> {
    let e = MemoryEngine::new();
    let keys: Vec<Vec<u8>> = (0..1_000u32)
        .map(|i| format!("{i:04}").into_bytes())
        .collect();
    e.apply(keys.iter().map(|k| (k.clone(), Some(k.clone()))).collect())?;
    let mut seen = Vec::new();
    e.scan(b"0100", Some(b"0900"), &mut |k, v| {
        assert_eq!(k, v);
        seen.push(k.to_vec());
        true
    })?;
    assert_eq!(seen, keys[100..900].to_vec());
    let mut back = Vec::new();
    e.scan_rev(b"0001", b"0998", &mut |k, _| {
        back.push(k.to_vec());
        true
    })?;
    let expected: Vec<Vec<u8>> = keys[1..=998].iter().rev().cloned().collect();
    assert_eq!(back, expected);
    let mut first = Vec::new();
    e.scan(b"", None, &mut |k, _| {
        first.push(k.to_vec());
        first.len() < 300
    })?;
    assert_eq!(first, keys[..300].to_vec());
    Ok(())
}

#[test]
fn sled_engine_round_trips_and_syncs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let m = Mvcc::new(Arc::new(SledEngine::open(dir.path(), 16 << 20)?));
        m.apply(vec![
            Mvcc::version_op(b"a", 1, Some(b"v")),
            Mvcc::meta_op("x", b"y".to_vec()),
        ])?;
        m.sync()?;
    }
    let m = Mvcc::new(Arc::new(SledEngine::open(dir.path(), 16 << 20)?));
    assert_eq!(m.get(b"a", 1)?, Some((1, b"v".to_vec())));
    assert_eq!(m.meta("x")?, Some(b"y".to_vec()));
    Ok(())
}

/// An engine whose large batches fail, as a full disk would fail sled's.
struct FailingBigBatches(MemoryEngine);

impl Engine for FailingBigBatches {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.0.scan(start, end, f)
    }
    fn scan_rev(
        &self,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.0.scan_rev(start, end, f)
    }
    fn apply(&self, batch: Vec<BatchOp>) -> Result<()> {
        if batch.len() >= 10_000 {
            return Err(Error::Storage("injected: no space left on device".into()));
        }
        self.0.apply(batch)
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
    fn size_on_disk(&self) -> u64 {
        self.0.size_on_disk()
    }
    fn stage(&self, batch: Vec<BatchOp>) -> Result<()> {
        self.0.stage(batch)
    }
    fn commit_staged(&self) -> Result<()> {
        self.0.commit_staged()
    }
    fn discard_staged(&self) -> Result<()> {
        self.0.discard_staged()
    }
    fn generation(&self) -> u64 {
        self.0.generation()
    }
}

#[test]
fn a_failed_gc_batch_is_an_error() -> Result<()> {
    let m = Mvcc::new(Arc::new(FailingBigBatches(MemoryEngine::new())));
    // The first 10,000-op batch of GC fails mid-scan.
    twelve_thousand_stale_versions(&m)?;
    let err = m.gc(2).expect_err("a failed batch must not report success");
    assert!(err.to_string().contains("no space left"), "{err}");
    // Nothing was removed: every key still reads its newest version.
    assert_eq!(m.get(b"k00000", 2)?, Some((2, b"new".to_vec())));
    assert_eq!(m.get(b"k00000", 1)?, Some((1, b"old".to_vec())));
    Ok(())
}

#[test]
fn a_history_over_its_byte_limit_is_refused_naming_the_limit() -> Result<()> {
    let m = mem();
    for s in 1..=10u64 {
        m.apply(vec![Mvcc::version_op(b"k", s, Some(&[7u8; 100]))])?;
    }
    let all = KeyRange {
        start: vec![],
        end: None,
    };
    let changes = m.history(&all, 0, 10, true, 10_000)?;
    assert_eq!(
        changes.iter().map(|c| c.seqno).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    match m.history(&all, 0, 10, false, 500) {
        Err(Error::Overloaded(msg)) => assert!(
            msg.contains("catch-up limit of 500 bytes") && msg.contains("from seqno 1 to 10"),
            "{msg}"
        ),
        other => panic!("expected the limit to refuse, got {other:?}"),
    }
    Ok(())
}
