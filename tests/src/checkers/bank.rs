//! The bank checker.
//!
//! The history holds one `Setup` (the initial balances: their sum is the
//! total), `Read`s of every account (`Value::Balances`), `Transfer`s (each
//! with its unique ledger key and value) and at least one `FinalRead`
//! (`Value::BankState`: balances and every ledger entry, at one snapshot).
//!
//! Anomalies:
//! - `wrong-total`: an ok read (or final read) whose balances do not sum to the total;
//! - `negative-balance`: an account below zero;
//! - `missing-account` / `unknown-account`: a read without one of the set-up
//!   accounts, or with an account nobody set up;
//! - `duplicate-ledger`: two invoked transfers claim the same ledger key;
//! - `unknown-ledger`: a ledger key in the final state that no transfer
//!   wrote (a value no client wrote);
//! - `ledger-mismatch`: a ledger value differing from what its transfer wrote;
//! - `aborted-transfer-visible`: the ledger entry of a failed transfer;
//! - `lost-transfer`: an ok transfer's ledger entry missing from a final
//!   read that started after it completed;
//! - `balance-mismatch`: final balances differ from the initial balances
//!   with exactly the transfers whose ledger entries are present applied
//!   (a lost or doubled update).
//!
//! Unknown: no ok setup, or no ok final read.

use std::collections::{BTreeMap, HashMap};

use super::{label, CheckResult};
use crate::history::{History, OpFn, OpKind, Pair, Value};

struct Transfer<'a> {
    pair: Pair<'a>,
    from: u32,
    to: u32,
    amount: i64,
    ledger_value: &'a str,
}

/// Checks a bank history.
pub fn check(history: &History) -> CheckResult {
    let mut r = CheckResult::new();
    let pairs = history.pairs();

    let initial = pairs.iter().find_map(|p| match (p.invoke.f, p.value()) {
        (OpFn::Setup, Value::Balances(b)) if p.is_ok() => Some(b.clone()),
        _ => None,
    });
    let Some(initial) = initial else {
        r.unknown("no ok setup: the initial balances are unknown");
        return r;
    };
    let total: i64 = initial.values().sum();
    r.stat("accounts", initial.len() as u64);
    r.stat("total", total.max(0) as u64);

    // Every invoked transfer, by ledger key.
    let mut transfers: HashMap<&str, Transfer<'_>> = HashMap::new();
    for p in &pairs {
        if p.invoke.f != OpFn::Transfer {
            continue;
        }
        let Value::Transfer {
            from,
            to,
            amount,
            ledger_key,
            ledger_value,
        } = &p.invoke.value
        else {
            continue;
        };
        match p.outcome() {
            OpKind::Ok => r.add_stat("transfers_ok", 1),
            OpKind::Fail => r.add_stat("transfers_fail", 1),
            _ => r.add_stat("transfers_info", 1),
        }
        let t = Transfer {
            pair: *p,
            from: *from,
            to: *to,
            amount: *amount,
            ledger_value,
        };
        if let Some(other) = transfers.insert(ledger_key, t) {
            r.anomaly(
                "duplicate-ledger",
                format!(
                    "ledger key {ledger_key} claimed by {} and {}",
                    label(other.pair.invoke),
                    label(p.invoke)
                ),
            );
        }
    }

    let mut finals = 0;
    for p in &pairs {
        if !p.is_ok() {
            continue;
        }
        match (p.invoke.f, p.value()) {
            (OpFn::Read, Value::Balances(b)) => {
                r.add_stat("reads_ok", 1);
                check_balances(&mut r, p, b, &initial, total);
            }
            (OpFn::FinalRead, Value::BankState { balances, ledger }) => {
                finals += 1;
                check_balances(&mut r, p, balances, &initial, total);
                check_final(&mut r, p, balances, ledger, &initial, &transfers);
            }
            _ => {}
        }
    }
    r.stat("final_reads_ok", finals);
    if finals == 0 {
        r.unknown("no ok final read: the ledger cannot be checked");
    }
    r
}

fn check_balances(
    r: &mut CheckResult,
    p: &Pair<'_>,
    balances: &BTreeMap<u32, i64>,
    initial: &BTreeMap<u32, i64>,
    total: i64,
) {
    let who = format!("{} on node {}", label(p.invoke), p.invoke.node);
    for account in initial.keys() {
        if !balances.contains_key(account) {
            r.anomaly(
                "missing-account",
                format!("{who}: account {account} absent"),
            );
        }
    }
    for account in balances.keys() {
        if !initial.contains_key(account) {
            r.anomaly(
                "unknown-account",
                format!("{who}: account {account} was never set up"),
            );
        }
    }
    let sum: i64 = balances.values().sum();
    if sum != total {
        r.anomaly(
            "wrong-total",
            format!("{who}: balances {balances:?} sum to {sum}, not {total}"),
        );
    }
    for (account, balance) in balances {
        if *balance < 0 {
            r.anomaly(
                "negative-balance",
                format!("{who}: account {account} has {balance}"),
            );
        }
    }
}

fn check_final(
    r: &mut CheckResult,
    p: &Pair<'_>,
    balances: &BTreeMap<u32, i64>,
    ledger: &BTreeMap<String, String>,
    initial: &BTreeMap<u32, i64>,
    transfers: &HashMap<&str, Transfer<'_>>,
) {
    let who = format!("final read {} on node {}", label(p.invoke), p.invoke.node);
    let mut derived = initial.clone();
    for (key, value) in ledger {
        let Some(t) = transfers.get(key.as_str()) else {
            r.anomaly(
                "unknown-ledger",
                format!("{who}: ledger key {key} = {value:?} was written by no transfer"),
            );
            continue;
        };
        if value != t.ledger_value {
            r.anomaly(
                "ledger-mismatch",
                format!(
                    "{who}: ledger key {key} = {value:?}, but {} wrote {:?}",
                    label(t.pair.invoke),
                    t.ledger_value
                ),
            );
        }
        if t.pair.outcome() == OpKind::Fail {
            r.anomaly(
                "aborted-transfer-visible",
                format!(
                    "{who}: ledger key {key} of failed transfer {}",
                    label(t.pair.invoke)
                ),
            );
        }
        *derived.entry(t.from).or_insert(0) -= t.amount;
        *derived.entry(t.to).or_insert(0) += t.amount;
    }
    for (key, t) in transfers {
        if t.pair.is_ok() && t.pair.complete_ns() < p.invoke_ns() && !ledger.contains_key(*key) {
            r.anomaly(
                "lost-transfer",
                format!(
                    "{who}: ok transfer {} (ledger key {key}) is missing",
                    label(t.pair.invoke)
                ),
            );
        }
    }
    r.add_stat("ledger_entries_final", ledger.len() as u64);
    if &derived != balances {
        r.anomaly(
            "balance-mismatch",
            format!(
                "{who}: balances {balances:?}, but the initial balances with the {} \
                 transfers in the ledger applied are {derived:?}",
                ledger.len()
            ),
        );
    }
}
