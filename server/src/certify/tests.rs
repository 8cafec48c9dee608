//! Tests of the certifier, in three layers:
//!
//! - `rules`: one unit test per rule of the module doc, against [`Model`], an
//!   in-memory [`History`].
//! - `golden`: scenario scripts in `testscripts/*.txt`, one anomaly per file,
//!   run with the `goldenscript` crate. Regenerate their expected output with
//!   `UPDATE_GOLDENFILES=1 cargo test -p trireme-server --lib certify`, then
//!   read the diff: it is the specification.
//! - `props`: random histories certified in order, checked against a naive
//!   reference certifier that scans the log of committed write sets, and
//!   checked for serializability of what committed.

use std::collections::BTreeMap;

use super::{Abort, Certifier, History, Verdict};
use crate::txn::{
    Compare, Condition, Isolation, Key, KeyRange, Mutation, Seqno, TxnId, Value, WriteSet,
};

/// Committed history for tests: every version of every key, oldest first, as
/// `(seqno, value)`; `None` is a tombstone. Nothing is ever garbage-collected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    /// Versions of each key, in increasing seqno order.
    versions: BTreeMap<Key, Vec<(Seqno, Option<Value>)>>,
}

impl Model {
    /// Applies a committed write set at `seqno`. A key written twice at the
    /// same seqno (later mutation of one write set, or a later write set of the
    /// same batch) keeps the last write, as apply does.
    fn apply(&mut self, seqno: Seqno, ws: &WriteSet) {
        for m in &ws.mutations {
            let value = match m {
                Mutation::Put { value, .. } => Some(value.clone()),
                Mutation::Delete { .. } => None,
            };
            let versions = self.versions.entry(m.key().to_vec()).or_default();
            match versions.last_mut() {
                Some((last, v)) if *last == seqno => *v = value,
                Some((last, _)) if *last > seqno => panic!("seqno {seqno} applied after {last}"),
                _ => versions.push((seqno, value)),
            }
        }
    }

    /// The newest version of `key` at or below `at`, tombstones included.
    fn newest(&self, key: &[u8], at: Seqno) -> Option<&(Seqno, Option<Value>)> {
        self.versions.get(key)?.iter().rev().find(|(s, _)| *s <= at)
    }

    /// The live value of `key` at snapshot `at`, with its version.
    fn get(&self, key: &[u8], at: Seqno) -> Option<(Seqno, Value)> {
        let (seqno, value) = self.newest(key, at)?;
        value.clone().map(|v| (*seqno, v))
    }

    /// Every key in `range` that has any version, with its versions. Filters
    /// with `contains` rather than `BTreeMap::range`, which panics on an
    /// inverted range.
    fn keys_in<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = (&'a Key, &'a Vec<(Seqno, Option<Value>)>)> {
        self.versions
            .range(range.start.clone()..)
            .take_while(|(k, _)| range.contains(k))
    }

    /// The live pairs in `range` at snapshot `at`, in key order.
    fn scan(&self, range: &KeyRange, at: Seqno) -> Vec<(Key, Seqno, Value)> {
        self.keys_in(range)
            .filter_map(|(k, _)| self.get(k, at).map(|(s, v)| (k.clone(), s, v)))
            .collect()
    }
}

impl History for Model {
    fn last_write(&self, key: &[u8]) -> Option<Seqno> {
        self.versions.get(key)?.last().map(|(s, _)| *s)
    }

    fn current(&self, key: &[u8]) -> Option<(Seqno, Value)> {
        let (seqno, value) = self.versions.get(key)?.last()?;
        value.clone().map(|v| (*seqno, v))
    }

    fn first_write_in_range_after(&self, range: &KeyRange, after: Seqno) -> Option<(Key, Seqno)> {
        self.keys_in(range).find_map(|(k, versions)| {
            let (seqno, _) = versions.last()?;
            (*seqno > after).then(|| (k.clone(), *seqno))
        })
    }
}

/// A write set with no mutations yet: blind if `snapshot` is `None`.
fn write_set(snapshot: Option<Seqno>, isolation: Isolation) -> WriteSet {
    WriteSet {
        id: TxnId(0),
        origin: 1,
        snapshot,
        isolation,
        mutations: Vec::new(),
        compares: Vec::new(),
        reads: Vec::new(),
        ranges: Vec::new(),
    }
}

/// Builder methods on [`WriteSet`], to keep test bodies to one line each.
trait Build {
    fn put(self, key: &str, value: &str) -> Self;
    fn del(self, key: &str) -> Self;
    fn read(self, key: &str) -> Self;
    fn range(self, range: KeyRange) -> Self;
    fn cmp(self, key: &str, condition: Condition) -> Self;
}

impl Build for WriteSet {
    fn put(mut self, key: &str, value: &str) -> Self {
        self.mutations.push(Mutation::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        });
        self
    }

    fn del(mut self, key: &str) -> Self {
        self.mutations.push(Mutation::Delete { key: key.into() });
        self
    }

    fn read(mut self, key: &str) -> Self {
        self.reads.push(key.into());
        self
    }

    fn range(mut self, range: KeyRange) -> Self {
        self.ranges.push(range);
        self
    }

    fn cmp(mut self, key: &str, condition: Condition) -> Self {
        self.compares.push(Compare {
            key: key.into(),
            condition,
        });
        self
    }
}

/// `[start, end)`.
fn span(start: &str, end: &str) -> KeyRange {
    KeyRange {
        start: start.into(),
        end: Some(end.into()),
    }
}

/// How a verdict is counted and printed: "commit" or the abort's kind.
fn verdict_kind(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Commit => "commit",
        Verdict::Abort(abort) => abort.kind(),
    }
}

mod rules {
    use super::*;

    const SER: Isolation = Isolation::Serializable;
    const SI: Isolation = Isolation::Snapshot;
    const BOTH: [Isolation; 2] = [SER, SI];
    const COMMIT: Verdict = Verdict::Commit;

    /// Certifies with a window that never gets in the way.
    fn certify(ws: &WriteSet, seqno: Seqno, history: &Model) -> Verdict {
        Certifier::new(1000).certify(ws, seqno, history)
    }

    fn blind() -> WriteSet {
        write_set(None, SER)
    }

    fn at(snapshot: Seqno, isolation: Isolation) -> WriteSet {
        write_set(Some(snapshot), isolation)
    }

    /// A history of blind write sets, one per seqno starting at 1.
    fn history(log: &[WriteSet]) -> Model {
        let mut model = Model::default();
        for (i, ws) in log.iter().enumerate() {
            model.apply(i as Seqno + 1, ws);
        }
        model
    }

    fn compare_failed(key: &str, version: Seqno) -> Verdict {
        let key = key.into();
        Verdict::Abort(Abort::CompareFailed { key, version })
    }

    fn write_conflict(key: &str, seqno: Seqno) -> Verdict {
        let key = key.into();
        Verdict::Abort(Abort::WriteConflict { key, seqno })
    }

    fn read_conflict(key: &str, seqno: Seqno) -> Verdict {
        let key = key.into();
        Verdict::Abort(Abort::ReadConflict { key, seqno })
    }

    fn range_conflict(range: &KeyRange, key: &[u8], seqno: Seqno) -> Verdict {
        let (range, key) = (range.clone(), key.to_vec());
        Verdict::Abort(Abort::RangeConflict { range, key, seqno })
    }

    /// Rule 0: a structurally invalid write set aborts before any other rule,
    /// blind or not, whatever the history (an inverted range never reaches it).
    #[test]
    fn invalid_write_set_aborts_first() {
        let h = history(&[blind().put("a", "1")]);
        let invalid = |reason: &str| {
            Verdict::Abort(Abort::InvalidWriteSet {
                reason: reason.into(),
            })
        };
        let inverted = at(0, SER).put("a", "2").range(span("z", "b"));
        assert_eq!(
            certify(&inverted, 2, &h),
            invalid("read range 0 ends (\"b\") before it starts (\"z\")")
        );
        // Before the snapshot rules: an invalid snapshot still reports the structure.
        assert_eq!(
            certify(&at(5, SI).put("", "x"), 2, &h),
            invalid("mutation 0 has an empty key")
        );
        assert_eq!(
            certify(&blind().put("b", "x").read(""), 2, &h),
            invalid("read 0 has an empty key")
        );
        // An empty range (start == end) is valid and holds no key.
        assert_eq!(
            certify(&at(0, SER).put("b", "x").range(span("a", "a")), 2, &h),
            COMMIT
        );
    }

    #[test]
    fn blind_write_ignores_conflicts() {
        let h = history(&[
            blind().put("a", "1"),
            blind().put("a", "2"),
            blind().del("a"),
        ]);
        let ws = blind().put("a", "3").read("a").range(span("a", "z"));
        assert_eq!(certify(&ws, 4, &h), COMMIT);
        // Nor is a blind write set subject to the window: it has no snapshot.
        assert_eq!(Certifier::new(1).certify(&ws, 400, &h), COMMIT);
    }

    /// a: live since 2. b: written at 1, deleted at 3. c: never written.
    /// e: the empty value, since 2.
    fn compare_history() -> Model {
        history(&[
            blind().put("b", "1"),
            blind().put("a", "1").put("e", ""),
            blind().del("b"),
        ])
    }

    #[test]
    fn compare_version() {
        let h = compare_history();
        let check = |key: &str, v: Seqno| {
            certify(
                &blind().put("x", "1").cmp(key, Condition::Version(v)),
                4,
                &h,
            )
        };
        assert_eq!(check("a", 2), COMMIT);
        assert_eq!(check("a", 1), compare_failed("a", 2));
        assert_eq!(check("a", 0), compare_failed("a", 2));
        // Version 0 is "absent": never written, or deleted.
        assert_eq!(check("c", 0), COMMIT);
        assert_eq!(check("c", 1), compare_failed("c", 0));
        assert_eq!(check("b", 0), COMMIT);
        assert_eq!(check("b", 1), compare_failed("b", 0));
        assert_eq!(check("b", 3), compare_failed("b", 0));
    }

    #[test]
    fn compare_exists() {
        let h = compare_history();
        let check = |key: &str, exists: bool| {
            certify(
                &blind().put("x", "1").cmp(key, Condition::Exists(exists)),
                4,
                &h,
            )
        };
        assert_eq!(check("a", true), COMMIT);
        assert_eq!(check("e", true), COMMIT);
        assert_eq!(check("a", false), compare_failed("a", 2));
        for absent in ["b", "c"] {
            assert_eq!(check(absent, false), COMMIT, "{absent}");
            assert_eq!(check(absent, true), compare_failed(absent, 0), "{absent}");
        }
    }

    #[test]
    fn compare_value() {
        let h = compare_history();
        let check = |key: &str, value: &str| {
            let cmp = Condition::Value(value.into());
            certify(&blind().put("x", "1").cmp(key, cmp), 4, &h)
        };
        assert_eq!(check("a", "1"), COMMIT);
        assert_eq!(check("a", "2"), compare_failed("a", 2));
        // An empty value is a value; absence is not an empty value.
        assert_eq!(check("e", ""), COMMIT);
        assert_eq!(check("c", ""), compare_failed("c", 0));
        // A deleted key compares as absent, not as its last live value.
        assert_eq!(check("b", "1"), compare_failed("b", 0));
    }

    #[test]
    fn every_compare_must_hold_and_the_first_failure_is_reported() {
        let h = history(&[blind().put("a", "1").put("b", "1")]);
        let ws = blind()
            .put("x", "1")
            .cmp("a", Condition::Exists(true))
            .cmp("b", Condition::Value("2".into()))
            .cmp("c", Condition::Exists(true));
        assert_eq!(certify(&ws, 2, &h), compare_failed("b", 1));
    }

    #[test]
    fn compares_see_the_state_at_certification_not_the_snapshot() {
        // a changed after the snapshot; a compare on it sees the new version,
        // and under SNAPSHOT a key only compared (not written) is no conflict.
        let h = history(&[blind().put("a", "1"), blind().put("a", "2")]);
        let ws = at(1, SI).put("x", "1").cmp("a", Condition::Version(2));
        assert_eq!(certify(&ws, 3, &h), COMMIT);
        let ws = at(1, SI).put("x", "1").cmp("a", Condition::Version(1));
        assert_eq!(certify(&ws, 3, &h), compare_failed("a", 2));
    }

    #[test]
    fn write_write_conflict_under_both_isolations() {
        // a written at 2 and 3, b deleted at 3.
        let h = history(&[
            blind().put("b", "0"),
            blind().put("a", "1"),
            blind().put("a", "2").del("b"),
        ]);
        for iso in BOTH {
            // The newest conflicting write is reported.
            assert_eq!(
                certify(&at(1, iso).put("a", "9"), 4, &h),
                write_conflict("a", 3)
            );
            // A write exactly at the snapshot was seen: no conflict.
            assert_eq!(certify(&at(3, iso).put("a", "9"), 4, &h), COMMIT, "{iso:?}");
            // Deletes conflict both ways: deleting a key written after the
            // snapshot, and writing a key deleted after it.
            assert_eq!(certify(&at(2, iso).del("a"), 4, &h), write_conflict("a", 3));
            assert_eq!(
                certify(&at(2, iso).put("b", "1"), 4, &h),
                write_conflict("b", 3)
            );
            // Mutations are checked in write-set order.
            let ws = at(2, iso).put("x", "1").put("b", "1").put("a", "1");
            assert_eq!(certify(&ws, 4, &h), write_conflict("b", 3), "{iso:?}");
        }
    }

    #[test]
    fn read_conflict_only_under_serializable() {
        // b written at 2, c created at 3, d deleted at 3.
        let h = history(&[
            blind().put("d", "0"),
            blind().put("b", "1"),
            blind().put("c", "1").del("d"),
        ]);
        for (key, seqno) in [("b", 2), ("c", 3), ("d", 3)] {
            let ws = at(1, SER).read(key).put("x", "1");
            assert_eq!(certify(&ws, 4, &h), read_conflict(key, seqno));
            let ws = at(1, SI).read(key).put("x", "1");
            assert_eq!(certify(&ws, 4, &h), COMMIT, "{key}");
        }
        // A read of a key last written at or before the snapshot holds.
        let ws = at(3, SER).read("b").read("c").put("x", "1");
        assert_eq!(certify(&ws, 4, &h), COMMIT);
        // Reads are checked in write-set order; write conflicts come first.
        let ws = at(1, SER).read("c").read("b").put("x", "1");
        assert_eq!(certify(&ws, 4, &h), read_conflict("c", 3));
        let ws = at(1, SER).read("c").put("b", "1");
        assert_eq!(certify(&ws, 4, &h), write_conflict("b", 2));
    }

    /// Certifies, at seqno 3, a SERIALIZABLE and a SNAPSHOT write set that
    /// scanned `range` at snapshot 1, and checks their verdicts.
    fn assert_range(h: &Model, range: KeyRange, conflict: Option<(&str, Seqno)>) {
        let want = match conflict {
            None => COMMIT,
            Some((key, seqno)) => range_conflict(&range, key.as_bytes(), seqno),
        };
        let ser = at(1, SER).range(range.clone()).put("x", "1");
        assert_eq!(certify(&ser, 3, h), want, "{range:?}");
        let si = at(1, SI).range(range.clone()).put("x", "1");
        assert_eq!(certify(&si, 3, h), COMMIT, "{range:?}");
    }

    #[test]
    fn range_conflict_on_insert_phantom() {
        let h = history(&[
            blind().put("c1", "1").put("c3", "1"),
            blind().put("c2", "1"),
        ]);
        assert_range(&h, span("c", "d"), Some(("c2", 2)));
    }

    #[test]
    fn range_conflict_on_delete_in_range() {
        let h = history(&[blind().put("c1", "1").put("c3", "1"), blind().del("c3")]);
        assert_range(&h, span("c", "d"), Some(("c3", 2)));
    }

    #[test]
    fn range_conflict_on_update_in_range() {
        let h = history(&[
            blind().put("c1", "1").put("c3", "1"),
            blind().put("c1", "2"),
        ]);
        assert_range(&h, span("c", "d"), Some(("c1", 2)));
    }

    #[test]
    fn range_bounds_are_half_open() {
        let h = history(&[blind().put("a", "0"), blind().put("c", "1").put("m", "1")]);
        // The start is in the range, the end is not.
        assert_range(&h, span("c", "d"), Some(("c", 2)));
        assert_range(&h, span("b", "c"), None);
        assert_range(&h, span("d", "m"), None);
        // An unbounded end reaches every later key.
        let from_d = KeyRange {
            start: b"d".to_vec(),
            end: None,
        };
        assert_range(&h, from_d, Some(("m", 2)));
        // An empty range, and a write before the snapshot, are no conflict.
        assert_range(&h, span("c", "c"), None);
        assert_range(&h, span("a", "b"), None);
        // The first changed key in key order is reported.
        assert_range(&h, span("a", "z"), Some(("c", 2)));
    }

    #[test]
    fn prefix_ranges() {
        let h = history(&[
            blind()
                .put("user", "1")
                .put("user0", "1")
                .put("users", "1")
                .put("use", "1"),
            blind().put("user/42", "1"),
        ]);
        assert_range(&h, KeyRange::prefix(b"user/"), Some(("user/42", 2)));
        assert_range(&h, KeyRange::prefix(b"user/4"), Some(("user/42", 2)));
        assert_range(&h, KeyRange::prefix(b"user/5"), None);
        // The empty prefix is the whole key space.
        assert_range(&h, KeyRange::prefix(b""), Some(("user/42", 2)));

        // A prefix ending in 0xff ends at the next shorter prefix's successor.
        let mut ff = Model::default();
        ff.apply(2, &blind().put("b", "1"));
        ff.versions
            .insert(vec![b'a', 0xff, 1], vec![(2, Some(b"1".to_vec()))]);
        let prefix = KeyRange::prefix(&[b'a', 0xff]);
        assert_eq!(prefix.end.as_deref(), Some(&b"b"[..]));
        let ws = at(1, SER).range(prefix.clone()).put("x", "1");
        assert_eq!(
            certify(&ws, 3, &ff),
            range_conflict(&prefix, &[b'a', 0xff, 1], 2)
        );
    }

    #[test]
    fn snapshot_too_old_at_exactly_the_window_boundary() {
        let c = Certifier::new(3);
        let h = Model::default();
        // N - S == window: still certifiable.
        assert_eq!(c.certify(&at(7, SER).put("a", "1"), 10, &h), COMMIT);
        // N - S == window + 1: too old, whatever else holds.
        let too_old =
            |snapshot, horizon| Verdict::Abort(Abort::SnapshotTooOld { snapshot, horizon });
        assert_eq!(c.certify(&at(6, SER).put("a", "1"), 10, &h), too_old(6, 7));
        assert_eq!(c.horizon(10), 7);
        // Too old is decided before compares and conflicts.
        let h = history(&[blind().put("a", "1")]);
        let ws = at(0, SER).put("a", "2").cmp("b", Condition::Exists(true));
        assert_eq!(c.certify(&ws, 5, &h), too_old(0, 2));
        // Early in the log the horizon saturates at 0.
        assert_eq!(c.horizon(2), 0);
        assert_eq!(c.certify(&at(0, SER).put("b", "1"), 2, &h), COMMIT);
    }

    #[test]
    fn invalid_snapshot_not_before_the_seqno() {
        let h = Model::default();
        for snapshot in [5, 6, u64::MAX] {
            let want = Verdict::Abort(Abort::InvalidSnapshot { snapshot });
            assert_eq!(certify(&at(snapshot, SER).put("a", "1"), 5, &h), want);
        }
        assert_eq!(certify(&at(4, SER).put("a", "1"), 5, &h), COMMIT);
    }

    #[test]
    fn batch_member_sees_the_earlier_members_of_its_batch() {
        // Two write sets in the log entry at seqno 3, both with snapshot 2.
        let mut h = history(&[blind().put("a", "0"), blind().put("b", "0")]);
        let first = at(2, SER).put("a", "1");
        assert_eq!(certify(&first, 3, &h), COMMIT);
        h.apply(3, &first);
        assert_eq!(
            certify(&at(2, SI).put("a", "2"), 3, &h),
            write_conflict("a", 3)
        );
        let ws = at(2, SER).read("a").put("b", "1");
        assert_eq!(certify(&ws, 3, &h), read_conflict("a", 3));
        let ws = blind().put("b", "1").cmp("a", Condition::Version(1));
        assert_eq!(certify(&ws, 3, &h), compare_failed("a", 3));
        let ws = blind().put("b", "1").cmp("a", Condition::Version(3));
        assert_eq!(certify(&ws, 3, &h), COMMIT);
    }

    #[test]
    fn verdicts_are_deterministic() {
        // The same committed log...
        let log = [
            (1, blind().put("a", "1").put("c1", "1")),
            (2, blind().put("b", "1")),
            (3, blind().del("c1").put("c2", "1")),
            (4, blind().put("a", "2").put("d", "1")),
        ];
        let mut in_order = Model::default();
        for (seqno, ws) in &log {
            in_order.apply(*seqno, ws);
        }
        // ...built key by key in reverse key order, versions newest first.
        let mut per_key: BTreeMap<Key, Vec<(Seqno, Option<Value>)>> = BTreeMap::new();
        for (seqno, ws) in log.iter().rev() {
            for m in ws.mutations.iter().rev() {
                let value = match m {
                    Mutation::Put { value, .. } => Some(value.clone()),
                    Mutation::Delete { .. } => None,
                };
                per_key
                    .entry(m.key().to_vec())
                    .or_default()
                    .insert(0, (*seqno, value));
            }
        }
        let mut reversed = Model::default();
        for (key, versions) in per_key.into_iter().rev() {
            reversed.versions.insert(key, versions);
        }
        assert_eq!(in_order, reversed);

        let candidates = [
            at(1, SER).put("a", "9"),
            at(1, SER).read("d").read("b").put("x", "1"),
            at(2, SER).range(span("c", "d")).put("x", "1"),
            at(2, SI).range(span("c", "d")).read("a").put("x", "1"),
            at(0, SER).put("x", "1"),
            blind().put("x", "1").cmp("a", Condition::Version(4)),
            blind().put("x", "1").cmp("c1", Condition::Exists(true)),
        ];
        for window in [3, 4, 100] {
            let c = Certifier::new(window);
            for ws in &candidates {
                // The write set as every node sees it: decoded from the log entry.
                let encoded = bincode::serialize(ws).unwrap();
                let decoded: WriteSet = bincode::deserialize(&encoded).unwrap();
                let first = c.certify(ws, 5, &in_order);
                assert_eq!(
                    first,
                    Certifier::new(window).certify(&decoded, 5, &reversed)
                );
                assert_eq!(first, c.certify(ws, 5, &in_order), "{ws:?}");
            }
        }
    }

    #[test]
    fn abort_accessors() {
        let cases = [
            (
                Abort::WriteConflict {
                    key: b"a".to_vec(),
                    seqno: 3,
                },
                Some(3),
                "write_conflict",
            ),
            (
                Abort::ReadConflict {
                    key: b"a".to_vec(),
                    seqno: 4,
                },
                Some(4),
                "read_conflict",
            ),
            (
                Abort::RangeConflict {
                    range: span("a", "b"),
                    key: b"a".to_vec(),
                    seqno: 5,
                },
                Some(5),
                "range_conflict",
            ),
            (
                Abort::CompareFailed {
                    key: b"a".to_vec(),
                    version: 6,
                },
                None,
                "compare_failed",
            ),
        ];
        for (abort, seqno, kind) in cases {
            assert_eq!(abort.key(), Some(&b"a"[..]), "{abort:?}");
            assert_eq!(abort.seqno(), seqno, "{abort:?}");
            assert_eq!(abort.kind(), kind, "{abort:?}");
            assert!(abort.to_string().contains("\"a\""), "{abort}");
        }
        let too_old = Abort::SnapshotTooOld {
            snapshot: 1,
            horizon: 2,
        };
        let invalid = Abort::InvalidSnapshot { snapshot: 9 };
        for (abort, kind) in [(too_old, "snapshot_too_old"), (invalid, "invalid_snapshot")] {
            assert_eq!(
                (abort.key(), abort.seqno(), abort.kind()),
                (None, None, kind)
            );
        }
    }
}

mod golden {
    //! The runner for `testscripts/*.txt`. Commands, with `T1` standing for
    //! any transaction name (a goldenscript prefix):
    //!
    //! - `window N`: the certification window (default 100).
    //! - `put K=V...`, `del K...`: a blind write set, certified at the next seqno.
    //! - `get K...`, `scan [RANGE]`: read the latest state.
    //! - `skip N`: N log entries that carry no write set (leader blanks, membership).
    //! - `dump`: every version of every key.
    //! - `T1: begin [snapshot=S] [iso=serializable|snapshot] [origin=NODE] [blind]`:
    //!   start a transaction at snapshot S (default: the head).
    //! - `T1: get K...`, `T1: scan [RANGE | prefix=P]`: snapshot reads, recorded
    //!   in the read set. RANGE is `a..b`, or `a..` for no end; none is everything.
    //! - `T1: put K=V...`, `T1: del K...`: buffered writes.
    //! - `T1: cmp K [version=N] [exists=BOOL] [value=V]`: compares.
    //! - `T1: commit`: certify at the next seqno (and apply on commit).
    //! - `batch T1 T2...`: certify several write sets at one seqno, in order.

    use std::error::Error;
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use super::*;

    /// The whole state of one script.
    struct Runner {
        /// The certifier, with the window the script set.
        certifier: Certifier,
        /// The committed history.
        model: Model,
        /// The last seqno used.
        head: Seqno,
        /// Open transactions by name, as the write sets they will ship.
        txns: BTreeMap<String, WriteSet>,
        /// The next write set id: deterministic, unlike `TxnId::random`.
        next_id: u128,
    }

    type Result<T> = std::result::Result<T, Box<dyn Error>>;

    impl Runner {
        fn new() -> Self {
            Runner {
                certifier: Certifier::new(100),
                model: Model::default(),
                head: 0,
                txns: BTreeMap::new(),
                next_id: 1,
            }
        }

        fn write_set(
            &mut self,
            snapshot: Option<Seqno>,
            isolation: Isolation,
            origin: u64,
        ) -> WriteSet {
            let mut ws = write_set(snapshot, isolation);
            ws.id = TxnId(self.next_id);
            ws.origin = origin;
            self.next_id += 1;
            ws
        }

        fn txn(&mut self, name: &str) -> Result<&mut WriteSet> {
            self.txns
                .get_mut(name)
                .ok_or_else(|| format!("no open transaction {name}").into())
        }

        /// Certifies `ws` at `seqno` against the history so far and applies it
        /// on commit. Checks, as it goes, that a committed SERIALIZABLE write
        /// set's reads still hold at its commit point.
        fn certify(&mut self, ws: &WriteSet, seqno: Seqno) -> Result<Verdict> {
            if ws.mutations.is_empty() {
                return Err("empty write set: the server rejects it before ordering (read-only needs no commit)".into());
            }
            let verdict = self.certifier.certify(ws, seqno, &self.model);
            if verdict == Verdict::Commit {
                if let (Some(snapshot), Isolation::Serializable) = (ws.snapshot, ws.isolation) {
                    for key in &ws.reads {
                        if self.model.get(key, snapshot) != self.model.get(key, seqno) {
                            return Err(format!(
                                "committed, but its read of {key:?} no longer holds"
                            )
                            .into());
                        }
                    }
                    for range in &ws.ranges {
                        if self.model.scan(range, snapshot) != self.model.scan(range, seqno) {
                            return Err(format!(
                                "committed, but its scan of {range:?} no longer holds"
                            )
                            .into());
                        }
                    }
                }
                self.model.apply(seqno, ws);
            }
            Ok(verdict)
        }

        fn next_seqno(&mut self) -> Seqno {
            self.head += 1;
            self.head
        }
    }

    fn show(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn show_range(range: &KeyRange) -> String {
        format!(
            "{}..{}",
            show(&range.start),
            range.end.as_deref().map(show).unwrap_or_default()
        )
    }

    fn show_verdict(verdict: &Verdict) -> String {
        let Verdict::Abort(abort) = verdict else {
            return "commit".into();
        };
        let detail = match abort {
            Abort::WriteConflict { key, seqno } | Abort::ReadConflict { key, seqno } => {
                format!(" on {:?} at {seqno}", show(key))
            }
            Abort::RangeConflict { range, key, seqno } => {
                format!(" in {} on {:?} at {seqno}", show_range(range), show(key))
            }
            Abort::CompareFailed { key, version } => {
                format!(" on {:?} (version {version})", show(key))
            }
            Abort::SnapshotTooOld { snapshot, horizon } => {
                format!(": snapshot {snapshot} is below horizon {horizon}")
            }
            Abort::InvalidSnapshot { snapshot } => format!(": snapshot {snapshot}"),
            Abort::InvalidWriteSet { reason } => format!(": {reason}"),
        };
        format!("abort {}{detail}", abort.kind())
    }

    fn show_get(out: &mut String, key: &[u8], found: Option<(Seqno, Value)>) -> Result<()> {
        match found {
            Some((seqno, value)) => {
                writeln!(out, "{} = {} (seqno {seqno})", show(key), show(&value))?
            }
            None => writeln!(out, "{} = absent", show(key))?,
        }
        Ok(())
    }

    fn show_scan(
        out: &mut String,
        range: &KeyRange,
        found: Vec<(Key, Seqno, Value)>,
    ) -> Result<()> {
        if found.is_empty() {
            writeln!(out, "{}: empty", show_range(range))?;
        }
        for (key, seqno, value) in found {
            writeln!(out, "{} = {} (seqno {seqno})", show(&key), show(&value))?;
        }
        Ok(())
    }

    /// `a..b`, `a..`, `prefix=p`, or nothing (the whole key space).
    fn parse_range(args: &mut goldenscript::ArgumentConsumer) -> Result<KeyRange> {
        if let Some(prefix) = args.take_key("prefix") {
            return Ok(KeyRange::prefix(prefix.as_bytes()));
        }
        let Some(spec) = args.next_pos() else {
            return Ok(KeyRange {
                start: Vec::new(),
                end: None,
            });
        };
        let (start, end) = spec
            .split_once("..")
            .ok_or_else(|| format!("range {spec:?} is not START..END"))?;
        Ok(KeyRange {
            start: start.into(),
            end: (!end.is_empty()).then(|| end.into()),
        })
    }

    fn parse_mutations(
        command: &str,
        args: &mut goldenscript::ArgumentConsumer,
    ) -> Result<Vec<Mutation>> {
        let mut mutations = Vec::new();
        if command == "put" {
            while let Some((key, value)) = args.next_key() {
                mutations.push(Mutation::Put {
                    key: key.into(),
                    value: value.into(),
                    lease: 0,
                });
            }
        } else {
            while let Some(key) = args.next_pos() {
                mutations.push(Mutation::Delete { key: key.into() });
            }
        }
        if mutations.is_empty() {
            return Err(format!("{command}: no keys given").into());
        }
        Ok(mutations)
    }

    impl goldenscript::Runner for Runner {
        type Command = goldenscript::Command;

        fn run(
            &mut self,
            command: &goldenscript::Command,
            context: &goldenscript::Context,
        ) -> Result<String> {
            let mut out = String::new();
            let mut args = command.consume_args();
            match (context.prefix.as_deref(), command.name.as_str()) {
                (None, "window") => {
                    let window = args.next_pos().ok_or("window: no size given")?.parse()?;
                    self.certifier = Certifier::new(window);
                    writeln!(out, "window {window}")?;
                }
                (None, "skip") => {
                    let n: Seqno = args.next_pos().ok_or("skip: no count given")?.parse()?;
                    self.head += n;
                    writeln!(out, "head {}", self.head)?;
                }
                (None, name @ ("put" | "del")) => {
                    let mut ws = self.write_set(None, Isolation::Serializable, 1);
                    ws.mutations = parse_mutations(name, &mut args)?;
                    let seqno = self.next_seqno();
                    let verdict = self.certify(&ws, seqno)?;
                    writeln!(out, "seqno {seqno}: {}", show_verdict(&verdict))?;
                }
                (None, "get") => {
                    while let Some(key) = args.next_pos() {
                        show_get(
                            &mut out,
                            key.as_bytes(),
                            self.model.get(key.as_bytes(), self.head),
                        )?;
                    }
                }
                (None, "scan") => {
                    let range = parse_range(&mut args)?;
                    show_scan(&mut out, &range, self.model.scan(&range, self.head))?;
                }
                (None, "dump") => {
                    for (key, versions) in &self.model.versions {
                        let versions: Vec<String> = versions
                            .iter()
                            .map(|(seqno, value)| match value {
                                Some(value) => format!("{}@{seqno}", show(value)),
                                None => format!("<deleted>@{seqno}"),
                            })
                            .collect();
                        writeln!(out, "{}: {}", show(key), versions.join(" "))?;
                    }
                }
                (None, "batch") => {
                    let seqno = self.next_seqno();
                    while let Some(name) = args.next_pos() {
                        let ws = self
                            .txns
                            .remove(name)
                            .ok_or_else(|| format!("no open transaction {name}"))?;
                        let verdict = self.certify(&ws, seqno)?;
                        writeln!(out, "seqno {seqno}: {name} {}", show_verdict(&verdict))?;
                    }
                }
                (Some(name), "begin") => {
                    if self.txns.contains_key(name) {
                        return Err(format!("{name} is already open").into());
                    }
                    let blind = match args.next_pos() {
                        None => false,
                        Some("blind") => true,
                        Some(other) => return Err(format!("begin: unknown flag {other}").into()),
                    };
                    let snapshot = match args.take_key("snapshot") {
                        Some(s) => Some(s.parse()?),
                        None => Some(self.head),
                    };
                    let isolation = match args.take_key("iso") {
                        None | Some("serializable") => Isolation::Serializable,
                        Some("snapshot") => Isolation::Snapshot,
                        Some(other) => return Err(format!("unknown isolation {other}").into()),
                    };
                    let origin = args.take_key("origin").map(str::parse).transpose()?;
                    let ws =
                        self.write_set(snapshot.filter(|_| !blind), isolation, origin.unwrap_or(1));
                    match ws.snapshot {
                        None => write!(out, "begin blind")?,
                        Some(s) => write!(
                            out,
                            "begin snapshot={s} iso={}",
                            format!("{isolation:?}").to_lowercase()
                        )?,
                    }
                    match origin {
                        Some(origin) => writeln!(out, " origin={origin}")?,
                        None => writeln!(out)?,
                    }
                    self.txns.insert(name.to_string(), ws);
                }
                (Some(name), "get") => {
                    let snapshot = self
                        .txn(name)?
                        .snapshot
                        .ok_or("a blind transaction does not read")?;
                    while let Some(key) = args.next_pos() {
                        show_get(
                            &mut out,
                            key.as_bytes(),
                            self.model.get(key.as_bytes(), snapshot),
                        )?;
                        self.txn(name)?.reads.push(key.into());
                    }
                }
                (Some(name), "scan") => {
                    let snapshot = self
                        .txn(name)?
                        .snapshot
                        .ok_or("a blind transaction does not read")?;
                    let range = parse_range(&mut args)?;
                    show_scan(&mut out, &range, self.model.scan(&range, snapshot))?;
                    self.txn(name)?.ranges.push(range);
                }
                (Some(name), command @ ("put" | "del")) => {
                    let mutations = parse_mutations(command, &mut args)?;
                    self.txn(name)?.mutations.extend(mutations);
                }
                (Some(name), "cmp") => {
                    let key: Key = args.next_pos().ok_or("cmp: no key given")?.into();
                    let mut compares = Vec::new();
                    while let Some((what, arg)) = args.next_key() {
                        let condition = match what {
                            "version" => Condition::Version(arg.parse()?),
                            "exists" => Condition::Exists(arg.parse()?),
                            "value" => Condition::Value(arg.into()),
                            other => return Err(format!("unknown compare {other}").into()),
                        };
                        compares.push(Compare {
                            key: key.clone(),
                            condition,
                        });
                    }
                    self.txn(name)?.compares.extend(compares);
                }
                (Some(name), "commit") => {
                    let ws = self
                        .txns
                        .remove(name)
                        .ok_or_else(|| format!("no open transaction {name}"))?;
                    let seqno = self.head + 1;
                    let verdict = self.certify(&ws, seqno)?;
                    self.head = seqno;
                    writeln!(out, "seqno {seqno}: {}", show_verdict(&verdict))?;
                }
                (prefix, name) => {
                    let on = prefix.map(|p| format!(" for {p}")).unwrap_or_default();
                    return Err(format!("unknown command {name}{on}").into());
                }
            }
            args.reject_next()?;
            Ok(out)
        }
    }

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/certify/testscripts")
    }

    macro_rules! scripts {
        ($($name:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() -> std::io::Result<()> {
                    goldenscript::run(&mut Runner::new(), dir().join(concat!(stringify!($name), ".txt")))
                }
            )*

            /// Every script that has a test above.
            const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
        };
    }

    scripts!(
        batch,
        conditional,
        lost_update,
        phantom,
        read_only,
        same_node,
        snapshot_too_old,
        write_skew,
    );

    #[test]
    fn every_script_is_run() -> std::io::Result<()> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "txt") {
                found.push(
                    path.file_stem()
                        .expect("a .txt file has a stem")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        found.sort();
        assert_eq!(found, SCRIPTS, "add new scripts to scripts!()");
        Ok(())
    }
}

mod props {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    use super::*;

    /// Keys, chosen so that prefixes and ranges overlap in interesting ways.
    const KEYS: &[&str] = &["a", "a1", "a2", "b", "b1", "c"];
    /// Prefixes for prefix scans; "" is the whole key space.
    const PREFIXES: &[&str] = &["", "a", "a1", "b", "c"];
    /// The certification window of every generated history.
    const WINDOW: u64 = 5;

    /// A scanned range, by indexes into [`KEYS`] and [`PREFIXES`].
    #[derive(Clone, Debug)]
    enum RangeSpec {
        /// `[KEYS[i], KEYS[j])`; empty or inverted when `j <= i`.
        Between(usize, usize),
        /// `[KEYS[i], ..)`.
        From(usize),
        /// `KeyRange::prefix(PREFIXES[i])`.
        Prefix(usize),
    }

    /// A compare, some resolved against what the transaction read, as a
    /// client doing read-then-compare-and-set would.
    #[derive(Clone, Debug)]
    enum CondSpec {
        /// The version the transaction saw (blind: the one at the head).
        SeenVersion,
        /// The value the transaction saw, or non-existence.
        SeenValue,
        /// A fixed version.
        Version(Seqno),
        /// Existence.
        Exists(bool),
        /// A fixed value.
        Value(u8),
    }

    /// One generated transaction.
    #[derive(Clone, Debug)]
    struct TxnSpec {
        /// `None`: blind. `Some(lag)`: snapshot `head - lag` (clamped at 0);
        /// a negative lag asks for the invalid snapshot `N`.
        lag: Option<i8>,
        /// Its isolation.
        isolation: Isolation,
        /// Writes: key index, value digit or delete.
        writes: Vec<(usize, Option<u8>)>,
        /// Read key indexes.
        reads: Vec<usize>,
        /// Scanned ranges.
        ranges: Vec<RangeSpec>,
        /// Compares: key index, condition.
        compares: Vec<(usize, CondSpec)>,
    }

    impl TxnSpec {
        /// The write set this transaction ships to be certified at `seqno`,
        /// having executed at its snapshot against `model` (head `head`).
        fn build(&self, model: &Model, head: Seqno, seqno: Seqno) -> WriteSet {
            let snapshot = self.lag.map(|lag| match u64::try_from(lag) {
                Ok(lag) => head.saturating_sub(lag),
                Err(_) => seqno,
            });
            let seen_at = snapshot.unwrap_or(head).min(head);
            let mut ws = write_set(snapshot, self.isolation);
            for &(k, value) in &self.writes {
                let key = KEYS[k].into();
                ws.mutations.push(match value {
                    Some(v) => Mutation::Put {
                        key,
                        value: vec![b'0' + v],
                        lease: 0,
                    },
                    None => Mutation::Delete { key },
                });
            }
            ws.reads = self.reads.iter().map(|&k| KEYS[k].into()).collect();
            ws.ranges = self
                .ranges
                .iter()
                .map(|r| match *r {
                    RangeSpec::Between(i, j) => span(KEYS[i], KEYS[j]),
                    RangeSpec::From(i) => KeyRange {
                        start: KEYS[i].into(),
                        end: None,
                    },
                    RangeSpec::Prefix(i) => KeyRange::prefix(PREFIXES[i].as_bytes()),
                })
                .collect();
            for (k, cond) in &self.compares {
                let key: Key = KEYS[*k].into();
                let seen = model.get(&key, seen_at);
                let condition = match cond {
                    CondSpec::SeenVersion => Condition::Version(seen.map_or(0, |(s, _)| s)),
                    CondSpec::SeenValue => match seen {
                        Some((_, v)) => Condition::Value(v),
                        None => Condition::Exists(false),
                    },
                    CondSpec::Version(v) => Condition::Version(*v),
                    CondSpec::Exists(e) => Condition::Exists(*e),
                    CondSpec::Value(v) => Condition::Value(vec![b'0' + v]),
                };
                ws.compares.push(Compare { key, condition });
            }
            ws
        }
    }

    fn range_spec() -> impl Strategy<Value = RangeSpec> {
        let n = KEYS.len();
        prop_oneof![
            3 => (0..n, 0..n).prop_map(|(i, j)| RangeSpec::Between(i, j)),
            1 => (0..n).prop_map(RangeSpec::From),
            2 => (0..PREFIXES.len()).prop_map(RangeSpec::Prefix),
        ]
    }

    fn cond_spec() -> impl Strategy<Value = CondSpec> {
        prop_oneof![
            4 => Just(CondSpec::SeenVersion),
            2 => Just(CondSpec::SeenValue),
            1 => (0..12u64).prop_map(CondSpec::Version),
            1 => any::<bool>().prop_map(CondSpec::Exists),
            1 => (0..3u8).prop_map(CondSpec::Value),
        ]
    }

    fn txn_spec() -> impl Strategy<Value = TxnSpec> {
        let n = KEYS.len();
        (
            prop_oneof![1 => Just(None), 8 => (-1i8..8).prop_map(Some)],
            prop_oneof![Just(Isolation::Serializable), Just(Isolation::Snapshot)],
            vec(
                (
                    0..n,
                    prop_oneof![4 => (0..3u8).prop_map(Some), 1 => Just(None)],
                ),
                1..3,
            ),
            vec(0..n, 0..3),
            vec(range_spec(), 0..2),
            prop_oneof![3 => Just(Vec::new()), 1 => vec((0..n, cond_spec()), 1..3)],
        )
            .prop_map(
                |(lag, isolation, writes, reads, ranges, compares)| TxnSpec {
                    lag,
                    isolation,
                    writes,
                    reads,
                    ranges,
                    compares,
                },
            )
    }

    /// A log: each entry carries a batch of write sets (empty: a blank entry).
    fn log_spec() -> impl Strategy<Value = Vec<Vec<TxnSpec>>> {
        let entry = prop_oneof![
            1 => Just(Vec::new()),
            8 => vec(txn_spec(), 1..2),
            2 => vec(txn_spec(), 2..4),
        ];
        vec(entry, 1..40)
    }

    /// The reference certifier: no [`History`], just the log of committed
    /// `(seqno, write set)` pairs, scanned naively. Every entry in it has a
    /// seqno `<= n`; entries at `n` are earlier write sets of the same batch,
    /// so "written in `(S, N)`" includes them.
    fn reference(window: u64, log: &[(Seqno, WriteSet)], ws: &WriteSet, n: Seqno) -> Verdict {
        // Every (seqno, key) written, in log order.
        let writes = || {
            log.iter()
                .flat_map(|(s, w)| w.mutations.iter().map(move |m| (*s, m)))
        };
        let newest = |key: &[u8]| {
            writes()
                .filter(|(_, m)| m.key() == key)
                .map(|(s, _)| s)
                .max()
        };
        let written_after =
            |key: &[u8], s: Seqno| writes().any(|(seqno, m)| seqno > s && m.key() == key);

        // Rule 0, detected independently (the generator makes no empty keys);
        // the reason's wording is the implementation's.
        if ws
            .ranges
            .iter()
            .any(|r| r.end.as_ref().is_some_and(|e| *e < r.start))
        {
            let reason = ws.structural_problem().unwrap_or_default();
            return Verdict::Abort(Abort::InvalidWriteSet { reason });
        }
        if let Some(s) = ws.snapshot {
            if s >= n {
                return Verdict::Abort(Abort::InvalidSnapshot { snapshot: s });
            }
            if n - s > window {
                return Verdict::Abort(Abort::SnapshotTooOld {
                    snapshot: s,
                    horizon: n - window,
                });
            }
        }
        for cmp in &ws.compares {
            let current = log_value(log, &cmp.key);
            let version = current.as_ref().map_or(0, |(s, _)| *s);
            let holds = match &cmp.condition {
                Condition::Version(v) => *v == version,
                Condition::Exists(e) => *e == current.is_some(),
                Condition::Value(v) => current.as_ref().map(|(_, value)| value) == Some(v),
            };
            if !holds {
                return Verdict::Abort(Abort::CompareFailed {
                    key: cmp.key.clone(),
                    version,
                });
            }
        }
        let Some(s) = ws.snapshot else {
            return Verdict::Commit;
        };
        for m in &ws.mutations {
            if written_after(m.key(), s) {
                return Verdict::Abort(Abort::WriteConflict {
                    key: m.key().to_vec(),
                    seqno: newest(m.key()).expect("written"),
                });
            }
        }
        if ws.isolation == Isolation::Serializable {
            for key in &ws.reads {
                if written_after(key, s) {
                    return Verdict::Abort(Abort::ReadConflict {
                        key: key.clone(),
                        seqno: newest(key).expect("written"),
                    });
                }
            }
            for range in &ws.ranges {
                let first = writes()
                    .filter(|(seqno, m)| *seqno > s && range.contains(m.key()))
                    .map(|(_, m)| m.key().to_vec())
                    .min();
                if let Some(key) = first {
                    let seqno = newest(&key).expect("written");
                    return Verdict::Abort(Abort::RangeConflict {
                        range: range.clone(),
                        key,
                        seqno,
                    });
                }
            }
        }
        Verdict::Commit
    }

    /// The live value of `key` after the whole log: its last write wins.
    fn log_value(log: &[(Seqno, WriteSet)], key: &[u8]) -> Option<(Seqno, Value)> {
        let last = log
            .iter()
            .flat_map(|(s, w)| w.mutations.iter().map(move |m| (*s, m)))
            .rfind(|(_, m)| m.key() == key)?;
        match last {
            (seqno, Mutation::Put { value, .. }) => Some((seqno, value.clone())),
            (_, Mutation::Delete { .. }) => None,
        }
    }

    /// The live pairs in `range` after the whole log.
    fn log_scan(log: &[(Seqno, WriteSet)], range: &KeyRange) -> Vec<(Key, Seqno, Value)> {
        let keys: BTreeSet<&[u8]> = log
            .iter()
            .flat_map(|(_, w)| w.mutations.iter().map(Mutation::key))
            .filter(|k| range.contains(k))
            .collect();
        keys.into_iter()
            .filter_map(|k| log_value(log, k).map(|(s, v)| (k.to_vec(), s, v)))
            .collect()
    }

    /// What a run checks.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Property {
        /// Every verdict equals the reference certifier's.
        MatchesReference,
        /// Every committed SERIALIZABLE write set's reads and scans, made at its
        /// snapshot, still hold at its commit point.
        Serializable,
    }

    /// Certifies a generated log in order, checking `property`, and counts verdicts by kind.
    fn run_log(
        entries: &[Vec<TxnSpec>],
        property: Property,
        counts: &mut BTreeMap<&'static str, usize>,
    ) -> Result<(), TestCaseError> {
        let certifier = Certifier::new(WINDOW);
        let mut model = Model::default();
        let mut log: Vec<(Seqno, WriteSet)> = Vec::new();
        let mut head: Seqno = 0;
        for batch in entries {
            let seqno = head + 1;
            for spec in batch {
                let ws = spec.build(&model, head, seqno);
                let verdict = certifier.certify(&ws, seqno, &model);
                *counts.entry(verdict_kind(&verdict)).or_default() += 1;
                if property == Property::MatchesReference {
                    let want = reference(WINDOW, &log, &ws, seqno);
                    prop_assert_eq!(&verdict, &want, "write set {:?} at seqno {}", ws, seqno);
                }
                if verdict != Verdict::Commit {
                    continue;
                }
                if let (Property::Serializable, Some(s), Isolation::Serializable) =
                    (property, ws.snapshot, ws.isolation)
                {
                    // The commit point: everything committed before it,
                    // earlier members of its batch included.
                    for key in &ws.reads {
                        prop_assert_eq!(
                            model.get(key, s),
                            log_value(&log, key),
                            "read {:?} at {}",
                            key,
                            s
                        );
                    }
                    for range in &ws.ranges {
                        prop_assert_eq!(
                            model.scan(range, s),
                            log_scan(&log, range),
                            "scan {:?} at {}",
                            range,
                            s
                        );
                    }
                }
                model.apply(seqno, &ws);
                log.push((seqno, ws));
            }
            head = seqno;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn verdicts_match_the_reference_certifier(entries in log_spec()) {
            run_log(&entries, Property::MatchesReference, &mut BTreeMap::new())?;
        }

        #[test]
        fn committed_serializable_reads_hold_at_the_commit_point(entries in log_spec()) {
            run_log(&entries, Property::Serializable, &mut BTreeMap::new())?;
        }
    }

    /// A property that never meets an abort proves little: check that the
    /// generator reaches every verdict.
    #[test]
    fn generated_logs_reach_every_verdict() {
        let counts = RefCell::new(BTreeMap::new());
        TestRunner::deterministic()
            .run(&log_spec(), |entries| {
                run_log(
                    &entries,
                    Property::MatchesReference,
                    &mut counts.borrow_mut(),
                )
            })
            .unwrap();
        let counts = counts.into_inner();
        for kind in [
            "commit",
            "write_conflict",
            "read_conflict",
            "range_conflict",
            "compare_failed",
            "snapshot_too_old",
            "invalid_snapshot",
            "invalid_write_set",
        ] {
            assert!(
                counts.get(kind).copied().unwrap_or(0) >= 10,
                "{kind} too rare: {counts:?}"
            );
        }
    }
}
