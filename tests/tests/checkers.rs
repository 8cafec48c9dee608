//! The checkers on hand-made histories (each anomaly caught by name, valid
//! histories pass), and one live smoke run of each workload against a real
//! 3-node cluster without faults.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use trireme_client::Isolation;
use trireme_tests::checkers::{self, bank, convergence, list_append, register, set, Validity};
use trireme_tests::history::{Builder, History, MicroOp, OpFn, Recorder, Value};
use trireme_tests::{workloads, Cluster};

// ---------------------------------------------------------------- helpers

fn balances(b: &[i64]) -> Value {
    Value::Balances(b.iter().enumerate().map(|(i, v)| (i as u32, *v)).collect())
}

fn transfer(from: u32, to: u32, amount: i64, ledger: &str) -> Value {
    Value::Transfer {
        from,
        to,
        amount,
        ledger_key: ledger.to_string(),
        ledger_value: format!("{amount} from {from} to {to}"),
    }
}

fn bank_state(b: &[i64], ledger: &[(&str, u32, u32, i64)]) -> Value {
    let Value::Balances(balances) = balances(b) else {
        unreachable!()
    };
    Value::BankState {
        balances,
        ledger: ledger
            .iter()
            .map(|(k, from, to, amount)| (k.to_string(), format!("{amount} from {from} to {to}")))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A bank history: setup of three accounts of 100, one ok transfer (L1:
/// 10 from 0 to 1), one failed (L2), one indeterminate (L3: 5 from 1 to 2),
/// then a read and a final read given by the caller.
fn bank_history(read: &[i64], final_state: Value) -> History {
    let mut b = Builder::new();
    b.op(0, OpFn::Setup, balances(&[100, 100, 100]));
    b.invoke(1, OpFn::Transfer, transfer(0, 1, 10, "L1"))
        .ok(1, transfer(0, 1, 10, "L1"));
    b.invoke(2, OpFn::Transfer, transfer(2, 0, 50, "L2"))
        .fail(2, transfer(2, 0, 50, "L2"));
    b.invoke(3, OpFn::Transfer, transfer(1, 2, 5, "L3"))
        .info(3, transfer(1, 2, 5, "L3"));
    b.invoke(4, OpFn::Read, balances(&[])).ok(4, balances(read));
    b.invoke(5, OpFn::FinalRead, Value::None).ok(5, final_state);
    b.build()
}

fn reg(key: &str, v: Option<i64>) -> Value {
    Value::register(key, v)
}

fn txn(b: &mut Builder, process: u64, mops: Vec<MicroOp>) {
    b.invoke(process, OpFn::Txn, Value::Txn(mops.clone()))
        .ok(process, Value::Txn(mops));
}

fn append(k: &str, x: u64) -> MicroOp {
    MicroOp::append(k, x)
}

fn read(k: &str, xs: &[u64]) -> MicroOp {
    MicroOp::read(k, xs)
}

fn la(h: &History) -> checkers::CheckResult {
    list_append::check(h)
}

fn la_with(h: &History, isolation: Isolation, realtime: bool) -> checkers::CheckResult {
    list_append::check_with(
        h,
        &list_append::Options {
            isolation,
            realtime,
        },
    )
}

fn expect(r: &checkers::CheckResult, name: &str) {
    println!("expect {name}: {r}");
    assert_eq!(r.valid, Validity::Invalid, "expected {name}, got {r}");
    assert!(r.has(name), "expected {name}, got {r}");
}

fn expect_valid(r: &checkers::CheckResult) {
    assert_eq!(r.valid, Validity::Valid, "expected valid, got {r}");
}

// ---------------------------------------------------------------- history

#[test]
fn histories_round_trip_through_json_lines() -> Result<()> {
    let h = bank_history(
        &[90, 110, 100],
        bank_state(&[90, 105, 105], &[("L1", 0, 1, 10), ("L3", 1, 2, 5)]),
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("run/bank.jsonl");
    h.save(&path)?;
    ensure!(
        History::load(&path)? == h,
        "the history reads back identical"
    );
    Ok(())
}

#[test]
fn recorder_retires_a_process_after_info_and_abandoned_ops_are_info() {
    let recorder = Recorder::new();
    let mut w = recorder.worker(2);
    let first = w.process();
    w.invoke(OpFn::Write, reg("k", Some(1)))
        .ok(reg("k", Some(1)));
    assert_eq!(w.process(), first, "an ok op keeps the process");
    w.invoke(OpFn::Write, reg("k", Some(2)))
        .info(reg("k", Some(2)), "timeout");
    let op = w.invoke(OpFn::Write, reg("k", Some(3)));
    assert_ne!(w.process(), first, "a process retires after info");
    drop(op);
    let h = recorder.history();
    let pairs = h.pairs();
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[2].outcome(), trireme_tests::history::OpKind::Info);
    assert!(h.ops.iter().all(|o| o.node == 2));
    assert!(h.ops.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    let err = trireme_client::Error::Aborted {
        kind: "write_conflict".into(),
        key: None,
        seqno: None,
        message: String::new(),
    };
    use trireme_tests::history::{outcome_of, OpKind};
    assert_eq!(outcome_of(&err, false), OpKind::Fail);
    assert_eq!(
        outcome_of(&trireme_client::Error::Indeterminate(String::new()), false),
        OpKind::Info
    );
    assert_eq!(
        outcome_of(&trireme_client::Error::Other(String::new()), false),
        OpKind::Info
    );
    assert_eq!(
        outcome_of(&trireme_client::Error::Other(String::new()), true),
        OpKind::Fail,
        "a read has no effect"
    );
}

// ---------------------------------------------------------------- bank

#[test]
fn bank_valid_history_passes() {
    let h = bank_history(
        &[90, 110, 100],
        bank_state(&[90, 105, 105], &[("L1", 0, 1, 10), ("L3", 1, 2, 5)]),
    );
    let r = bank::check(&h);
    expect_valid(&r);
    assert_eq!(r.stats["transfers_info"], 1);
}

#[test]
fn bank_catches_sum_drift() {
    let h = bank_history(
        &[90, 100, 100],
        bank_state(&[90, 110, 100], &[("L1", 0, 1, 10)]),
    );
    expect(&bank::check(&h), "wrong-total");
}

#[test]
fn bank_catches_negative_balance() {
    let h = bank_history(
        &[-10, 210, 100],
        bank_state(&[90, 110, 100], &[("L1", 0, 1, 10)]),
    );
    let r = bank::check(&h);
    expect(&r, "negative-balance");
    assert!(!r.has("wrong-total"), "{r}");
}

#[test]
fn bank_catches_ledger_anomalies() {
    // The ok transfer L1 is lost (its effect too).
    let r = bank::check(&bank_history(
        &[100, 100, 100],
        bank_state(&[100, 100, 100], &[]),
    ));
    expect(&r, "lost-transfer");
    assert!(!r.has("balance-mismatch"), "{r}");
    // A ledger entry no transfer wrote.
    let r = bank::check(&bank_history(
        &[90, 110, 100],
        bank_state(&[90, 110, 100], &[("L1", 0, 1, 10), ("L9", 0, 1, 0)]),
    ));
    expect(&r, "unknown-ledger");
    // The failed transfer's entry, and its effect, are visible.
    let r = bank::check(&bank_history(
        &[90, 110, 100],
        bank_state(&[140, 110, 50], &[("L1", 0, 1, 10), ("L2", 2, 0, 50)]),
    ));
    expect(&r, "aborted-transfer-visible");
    // Balances that do not match the ledger: a lost update on account 1.
    let r = bank::check(&bank_history(
        &[90, 110, 100],
        bank_state(&[90, 100, 110], &[("L1", 0, 1, 10)]),
    ));
    expect(&r, "balance-mismatch");
}

#[test]
fn bank_without_a_final_read_is_unknown() {
    let mut b = Builder::new();
    b.op(0, OpFn::Setup, balances(&[100, 100]));
    b.invoke(1, OpFn::Read, balances(&[]))
        .ok(1, balances(&[100, 100]));
    assert_eq!(bank::check(&b.build()).valid, Validity::Unknown);
}

// ---------------------------------------------------------------- register

#[test]
fn register_valid_history_with_concurrency_and_info_passes() {
    let mut b = Builder::new();
    // Concurrent write of 1 and read that sees it.
    b.invoke(1, OpFn::Write, reg("x", Some(1)));
    b.invoke(2, OpFn::Read, reg("x", None));
    b.ok(2, reg("x", Some(1)));
    b.ok(1, reg("x", Some(1)));
    // A CAS 1 -> 2 whose outcome is unknown; a later read shows it happened.
    b.invoke(3, OpFn::Cas, Value::cas("x", 1, 2));
    b.info(3, Value::cas("x", 1, 2));
    b.invoke(4, OpFn::Read, reg("x", None))
        .ok(4, reg("x", Some(2)));
    // A write of 3 whose outcome is unknown and that never shows.
    b.invoke(5, OpFn::Write, reg("x", Some(3)));
    b.info(5, reg("x", Some(3)));
    b.invoke(6, OpFn::Read, reg("x", None))
        .ok(6, reg("x", Some(2)));
    // A failed CAS never happened.
    b.invoke(6, OpFn::Cas, Value::cas("x", 2, 4));
    b.fail(6, Value::cas("x", 2, 4));
    // Two writes concurrent with a read that sees the first, then a read of the second.
    b.invoke(7, OpFn::Write, reg("x", Some(5)));
    b.invoke(8, OpFn::Write, reg("x", Some(6)));
    b.invoke(9, OpFn::Read, reg("x", None));
    b.ok(8, reg("x", Some(6)));
    b.ok(7, reg("x", Some(5)));
    b.ok(9, reg("x", Some(6)));
    b.invoke(10, OpFn::Read, reg("x", None))
        .ok(10, reg("x", Some(5)));
    // Another key: absent at first, then written, then compare-and-set.
    b.invoke(11, OpFn::Read, reg("y", None))
        .ok(11, reg("y", None));
    b.op(11, OpFn::Write, reg("y", Some(0)));
    b.op(11, OpFn::Cas, Value::cas("y", 0, 1));
    b.invoke(12, OpFn::Read, reg("y", None))
        .ok(12, reg("y", Some(1)));
    let r = register::check(&b.build());
    expect_valid(&r);
    // An ok compare-and-set whose compare cannot hold is caught.
    b.op(12, OpFn::Cas, Value::cas("y", 0, 2));
    let bad = register::check(&b.build());
    expect(&bad, "nonlinearizable");
    assert!(bad.anomalies.iter().any(|a| a.contains("key y")), "{bad}");
    assert_eq!(r.stats["keys"], 2);
}

#[test]
fn register_catches_a_stale_read_after_a_completed_write() {
    let mut b = Builder::new();
    b.op(1, OpFn::Write, reg("x", Some(1)));
    b.op(2, OpFn::Write, reg("x", Some(2)));
    b.invoke(3, OpFn::Read, reg("x", None))
        .ok(3, reg("x", Some(1)));
    expect(&register::check(&b.build()), "nonlinearizable");
}

#[test]
fn register_catches_reads_in_an_impossible_order() {
    let mut b = Builder::new();
    b.op(1, OpFn::Write, reg("x", Some(1)));
    b.invoke(1, OpFn::Write, reg("x", Some(2)));
    // While the write of 2 is in flight, one read sees 2, then a later read sees 1.
    b.invoke(2, OpFn::Read, reg("x", None))
        .ok(2, reg("x", Some(2)));
    b.invoke(3, OpFn::Read, reg("x", None))
        .ok(3, reg("x", Some(1)));
    b.ok(1, reg("x", Some(2)));
    let r = register::check(&b.build());
    expect(&r, "nonlinearizable");
    // Reversed, the reads are fine.
    let mut b = Builder::new();
    b.op(1, OpFn::Write, reg("x", Some(1)));
    b.invoke(1, OpFn::Write, reg("x", Some(2)));
    b.invoke(2, OpFn::Read, reg("x", None))
        .ok(2, reg("x", Some(1)));
    b.invoke(3, OpFn::Read, reg("x", None))
        .ok(3, reg("x", Some(2)));
    b.ok(1, reg("x", Some(2)));
    expect_valid(&register::check(&b.build()));
}

#[test]
fn register_indeterminate_write_may_take_effect_late_or_never() {
    // An info write is concurrent with everything after its invocation.
    let mut b = Builder::new();
    b.op(1, OpFn::Write, reg("x", Some(1)));
    b.invoke(2, OpFn::Write, reg("x", Some(2)));
    b.info(2, reg("x", Some(2)));
    b.invoke(3, OpFn::Read, reg("x", None))
        .ok(3, reg("x", Some(1)));
    b.invoke(3, OpFn::Read, reg("x", None))
        .ok(3, reg("x", Some(2)));
    expect_valid(&register::check(&b.build()));
    // But not before its invocation.
    let mut b = Builder::new();
    b.op(1, OpFn::Write, reg("x", Some(1)));
    b.invoke(3, OpFn::Read, reg("x", None))
        .ok(3, reg("x", Some(2)));
    b.invoke(2, OpFn::Write, reg("x", Some(2)));
    b.info(2, reg("x", Some(2)));
    expect(&register::check(&b.build()), "nonlinearizable");
}

/// `n` concurrent writes of distinct values, and a read of a value nobody
/// wrote: the search must try every order of the writes.
fn hard_register_history(n: u64) -> History {
    let mut b = Builder::new();
    for p in 0..n {
        b.invoke(p, OpFn::Write, reg("x", Some(p as i64)));
    }
    b.invoke(n, OpFn::Read, reg("x", None));
    for p in 0..n {
        b.ok(p, reg("x", Some(p as i64)));
    }
    b.ok(n, reg("x", Some(-1)));
    b.build()
}

/// 30 writes of values 0..5 that all time out, with ok reads in between
/// that see each write, then a final read of `last`: valid for 4 (the
/// value already there), not for 2 (every write of 2 was needed by an
/// earlier read of 2, between reads of other values) nor for 7.
fn many_info_register_history(last: i64) -> History {
    let mut b = Builder::new();
    for i in 0..30u64 {
        b.invoke(i, OpFn::Write, reg("x", Some((i % 5) as i64)));
        b.info(i, reg("x", Some((i % 5) as i64)));
        b.invoke(100 + i, OpFn::Read, reg("x", None))
            .ok(100 + i, reg("x", Some((i % 5) as i64)));
    }
    b.invoke(200, OpFn::Read, reg("x", None))
        .ok(200, reg("x", Some(last)));
    b.build()
}

#[test]
fn register_many_indeterminate_writes_stay_decidable() {
    let options = register::Options {
        key_budget: Duration::from_secs(20),
    };
    let r = register::check_with(&many_info_register_history(4), &options);
    expect_valid(&r);
    for last in [2, 7] {
        let r = register::check_with(&many_info_register_history(last), &options);
        expect(&r, "nonlinearizable");
    }
}

#[test]
fn register_search_over_budget_is_unknown_not_a_pass() {
    let small = register::check(&hard_register_history(6));
    expect(&small, "nonlinearizable");
    let r = register::check_with(
        &hard_register_history(40),
        &register::Options {
            key_budget: Duration::from_millis(50),
        },
    );
    assert_eq!(r.valid, Validity::Unknown, "{r}");
    assert!(r.has("unknown") && !r.is_valid(), "{r}");
}

// ---------------------------------------------------------------- set

fn set_history(finals: &[(u64, &[u64])]) -> History {
    let mut b = Builder::new();
    b.op(1, OpFn::Add, Value::Element(1));
    b.invoke(2, OpFn::Add, Value::Element(2))
        .fail(2, Value::Element(2));
    b.invoke(3, OpFn::Add, Value::Element(3))
        .info(3, Value::Element(3));
    b.op(4, OpFn::Add, Value::Element(4));
    let mut h = b.build();
    for (i, (node, els)) in finals.iter().enumerate() {
        let mut f = Builder::new();
        f.invoke(100 + i as u64, OpFn::FinalRead, Value::None)
            .ok(100 + i as u64, Value::Elements(els.to_vec()));
        let base = h.ops.len() as u64;
        for mut op in f.build().ops {
            op.index += base;
            op.time_ns += 1000 * (i as u64 + 1);
            op.node = *node;
            h.ops.push(op);
        }
    }
    h
}

#[test]
fn set_valid_history_passes() {
    let r = set::check(&set_history(&[
        (1, &[1, 3, 4]),
        (2, &[1, 3, 4]),
        (3, &[1, 3, 4]),
    ]));
    expect_valid(&r);
    assert_eq!(r.stats["adds_info_seen"], 1);
}

#[test]
fn set_catches_a_lost_element() {
    let r = set::check(&set_history(&[(1, &[1, 4]), (2, &[4])]));
    expect(&r, "lost");
    assert!(r.anomalies.iter().any(|a| a.contains("node 2")), "{r}");
    // An info element seen on one node and gone on a later read is lost too.
    let r = set::check(&set_history(&[(1, &[1, 3, 4]), (2, &[1, 4])]));
    expect(&r, "lost");
}

#[test]
fn set_catches_phantom_and_aborted_elements() {
    let r = set::check(&set_history(&[(1, &[1, 4, 7])]));
    expect(&r, "phantom");
    let r = set::check(&set_history(&[(1, &[1, 2, 4])]));
    expect(&r, "aborted-element");
}

#[test]
fn set_without_final_reads_is_unknown() {
    assert_eq!(set::check(&set_history(&[])).valid, Validity::Unknown);
}

// ---------------------------------------------------------------- list-append

#[test]
fn list_append_valid_history_passes() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1)]);
    txn(
        &mut b,
        2,
        vec![read("x", &[1]), append("x", 2), read("x", &[1, 2])],
    );
    txn(&mut b, 3, vec![read("x", &[1, 2]), read("y", &[])]);
    b.invoke(4, OpFn::Txn, Value::Txn(vec![append("y", 9)]))
        .fail(4, Value::Txn(vec![append("y", 9)]));
    b.invoke(
        5,
        OpFn::Txn,
        Value::Txn(vec![read("y", &[]), append("y", 5)]),
    )
    .info(5, Value::Txn(vec![append("y", 5)]));
    txn(&mut b, 6, vec![read("y", &[5]), append("x", 3)]);
    b.invoke(7, OpFn::FinalRead, Value::None)
        .ok(7, Value::Txn(vec![read("x", &[1, 2, 3]), read("y", &[5])]));
    let h = b.build();
    expect_valid(&la(&h));
    let r = la_with(&h, Isolation::Serializable, true);
    expect_valid(&r);
    assert!(r.stats["graph_edges"] > 0, "{r}");
}

#[test]
fn list_append_catches_g0() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1), append("y", 1)]);
    txn(&mut b, 2, vec![append("x", 2), append("y", 2)]);
    txn(&mut b, 3, vec![read("x", &[1, 2])]);
    txn(&mut b, 4, vec![read("y", &[2, 1])]);
    expect(&la(&b.build()), "G0");
}

#[test]
fn list_append_catches_g1a_aborted_read() {
    let mut b = Builder::new();
    b.invoke(1, OpFn::Txn, Value::Txn(vec![append("x", 1)]))
        .fail(1, Value::Txn(vec![append("x", 1)]));
    txn(&mut b, 2, vec![read("x", &[1])]);
    expect(&la(&b.build()), "G1a");
}

#[test]
fn list_append_catches_g1b_intermediate_read() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1), append("x", 2)]);
    txn(&mut b, 2, vec![read("x", &[1])]);
    expect(&la(&b.build()), "G1b");
}

#[test]
fn list_append_catches_g1c_circular_information_flow() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1), read("y", &[1])]);
    txn(&mut b, 2, vec![append("y", 1), read("x", &[1])]);
    expect(&la(&b.build()), "G1c");
}

/// Read skew: T2 sees T1's write to y but not its write to x.
fn g_single_history() -> History {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1), append("y", 1)]);
    txn(&mut b, 2, vec![read("x", &[]), read("y", &[1])]);
    txn(&mut b, 3, vec![read("x", &[1]), read("y", &[1])]);
    b.build()
}

/// Write skew: each reads the key the other writes, both commit.
fn write_skew_history() -> History {
    let mut b = Builder::new();
    b.invoke(1, OpFn::Txn, Value::Txn(vec![]));
    b.invoke(2, OpFn::Txn, Value::Txn(vec![]));
    b.ok(1, Value::Txn(vec![read("x", &[]), append("y", 1)]));
    b.ok(2, Value::Txn(vec![read("y", &[]), append("x", 1)]));
    txn(&mut b, 3, vec![read("x", &[1]), read("y", &[1])]);
    b.build()
}

#[test]
fn list_append_catches_g_single_read_skew() {
    let r = la(&g_single_history());
    expect(&r, "G-single");
    assert!(!r.has("G2"), "{r}");
}

#[test]
fn list_append_catches_g2_write_skew() {
    let r = la(&write_skew_history());
    expect(&r, "G2");
    assert!(!r.has("G-single"), "{r}");
}

#[test]
fn snapshot_isolation_allows_write_skew_but_not_g_single() {
    let r = la_with(&write_skew_history(), Isolation::Snapshot, false);
    expect_valid(&r);
    assert_eq!(r.stats["g2_allowed"], 1, "{r}");
    expect(
        &la_with(&g_single_history(), Isolation::Snapshot, false),
        "G-single",
    );
}

#[test]
fn list_append_catches_p4_lost_update() {
    let mut b = Builder::new();
    b.invoke(1, OpFn::Txn, Value::Txn(vec![]));
    b.invoke(2, OpFn::Txn, Value::Txn(vec![]));
    b.ok(1, Value::Txn(vec![read("x", &[]), append("x", 1)]));
    b.ok(2, Value::Txn(vec![read("x", &[]), append("x", 2)]));
    txn(&mut b, 3, vec![read("x", &[2])]);
    let r = la(&b.build());
    expect(&r, "P4");
    // Also under SNAPSHOT: first-committer-wins forbids it.
    let r = la_with(&b.build(), Isolation::Snapshot, false);
    expect(&r, "P4");
}

#[test]
fn list_append_catches_incompatible_orders() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1)]);
    txn(&mut b, 2, vec![append("x", 2)]);
    txn(&mut b, 3, vec![read("x", &[1, 2])]);
    txn(&mut b, 4, vec![read("x", &[2])]);
    expect(&la(&b.build()), "incompatible-order");
}

#[test]
fn list_append_catches_a_duplicated_append() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1)]);
    txn(&mut b, 2, vec![append("x", 2)]);
    txn(&mut b, 3, vec![read("x", &[1, 2, 1])]);
    expect(&la(&b.build()), "duplicate-elements");
}

#[test]
fn list_append_catches_phantoms_internal_reads_and_lost_appends() {
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1)]);
    txn(&mut b, 2, vec![read("x", &[1, 77])]);
    expect(&la(&b.build()), "phantom");

    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1), read("x", &[])]);
    expect(&la(&b.build()), "internal");

    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1)]);
    txn(&mut b, 2, vec![append("x", 2)]);
    b.invoke(3, OpFn::FinalRead, Value::None)
        .ok(3, Value::Txn(vec![read("x", &[2])]));
    expect(&la(&b.build()), "lost-append");
}

#[test]
fn list_append_realtime_catches_a_stale_read() {
    // T1 commits x=[1]; T2 starts after and reads x=[] (a stale snapshot).
    let mut b = Builder::new();
    txn(&mut b, 1, vec![append("x", 1)]);
    txn(&mut b, 2, vec![read("x", &[])]);
    let h = b.build();
    expect_valid(&la(&h));
    expect(
        &la_with(&h, Isolation::Serializable, true),
        "G-single-realtime",
    );
}

// ---------------------------------------------------------------- convergence

#[test]
fn convergence_requires_identical_states() {
    let s = |node, seqno, checksum, verdict_chain| convergence::NodeState {
        node,
        seqno,
        checksum,
        verdict_chain,
    };
    expect_valid(&convergence::check(&[
        s(1, 9, 7, 5),
        s(2, 9, 7, 5),
        s(3, 9, 7, 5),
    ]));
    expect(
        &convergence::check(&[s(1, 9, 7, 5), s(2, 9, 7, 6)]),
        "diverged",
    );
    expect(
        &convergence::check(&[s(1, 9, 7, 5), s(2, 8, 7, 5)]),
        "diverged",
    );
    assert_eq!(convergence::check(&[]).valid, Validity::Unknown);
}

// ---------------------------------------------------------------- live smoke runs

const READY: Duration = Duration::from_secs(30);
const SMOKE: Duration = Duration::from_secs(5);
const CONCURRENCY: usize = 6;

async fn smoke(
    name: &str,
    run: impl AsyncFnOnce(Vec<String>, Recorder) -> Result<workloads::WorkloadStats>,
    check: impl FnOnce(&History) -> checkers::CheckResult,
) -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let recorder = Recorder::new();
    let stats = run(cluster.endpoints(), recorder.clone()).await?;
    let history = recorder.history();
    history.save(trireme_tests::history::run_dir("smoke").join(format!("{name}.jsonl")))?;
    let result = check(&history);
    println!("smoke {stats}");
    println!("smoke {name} check: {result}");
    ensure!(result.is_valid(), "{name}: {result}\n{}", cluster.logs());
    ensure!(stats.ok > 0, "{name}: no ok operation: {stats}");
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    let states = workloads::node_states(&cluster.endpoints(), Duration::from_secs(5)).await?;
    let converged = convergence::check(&states);
    ensure!(converged.is_valid(), "{converged}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_bank() -> Result<()> {
    smoke(
        "bank",
        async |eps, rec| workloads::bank::run(eps, rec, SMOKE, CONCURRENCY, 1).await,
        bank::check,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_register() -> Result<()> {
    smoke(
        "register",
        async |eps, rec| workloads::register::run(eps, rec, SMOKE, CONCURRENCY, 2).await,
        register::check,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_set() -> Result<()> {
    smoke(
        "set",
        async |eps, rec| workloads::set::run(eps, rec, SMOKE, CONCURRENCY, 3).await,
        set::check,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_list_append() -> Result<()> {
    smoke(
        "list-append",
        async |eps, rec| workloads::list_append::run(eps, rec, SMOKE, CONCURRENCY, 4).await,
        |h| la_with(h, Isolation::Serializable, true),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_all_workloads_at_once() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let run = workloads::run_all(cluster.endpoints(), SMOKE, 3, 5).await?;
    run.histories
        .save(&trireme_tests::history::run_dir("smoke-all"))?;
    for s in &run.stats {
        println!("smoke run_all {s}");
    }
    let results = checkers::check_all(&run.histories, &checkers::CheckOptions::default());
    for (name, r) in &results {
        println!("smoke run_all {name}: {r}");
    }
    ensure!(
        checkers::all_valid(&results),
        "{results:?}\n{}",
        cluster.logs()
    );
    Ok(())
}
