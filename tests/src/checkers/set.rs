//! The set checker.
//!
//! The history holds `Add(Element(n))` inserts of unique elements and reads
//! (`Read` or `FinalRead`, `Value::Elements`), with at least one ok
//! `FinalRead` on each node after the traffic.
//!
//! Anomalies:
//! - `lost`: an ok insert missing from a final read that started after the
//!   insert completed; or any element (an indeterminate insert's included)
//!   seen by a read and missing from a read that started after that one
//!   completed (once visible, always visible);
//! - `aborted-element`: an element of a failed insert in a read;
//! - `phantom`: an element nobody inserted in a read.
//!
//! Unknown: no ok final read at all, or a node whose final reads all failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{label, CheckResult};
use crate::history::{History, OpFn, OpKind, Pair, Value};

/// Checks a set history.
pub fn check(history: &History) -> CheckResult {
    let mut r = CheckResult::new();
    let pairs = history.pairs();

    let mut adds: HashMap<u64, Pair<'_>> = HashMap::new();
    let mut reads: Vec<(Pair<'_>, BTreeSet<u64>)> = Vec::new();
    // Final reads by node: (invoked, ok).
    let mut final_nodes: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for p in &pairs {
        match p.invoke.f {
            OpFn::Add => {
                if let Value::Element(e) = p.invoke.value {
                    match p.outcome() {
                        OpKind::Ok => r.add_stat("adds_ok", 1),
                        OpKind::Fail => r.add_stat("adds_fail", 1),
                        _ => r.add_stat("adds_info", 1),
                    }
                    if adds.insert(e, *p).is_some() {
                        r.add_stat("duplicate_inserts", 1);
                    }
                }
            }
            OpFn::Read | OpFn::FinalRead => {
                if p.invoke.f == OpFn::FinalRead {
                    let entry = final_nodes.entry(p.invoke.node).or_insert((0, 0));
                    entry.0 += 1;
                    if p.is_ok() {
                        entry.1 += 1;
                    }
                }
                if let (true, Value::Elements(els)) = (p.is_ok(), p.value()) {
                    reads.push((*p, els.iter().copied().collect()));
                }
            }
            _ => {}
        }
    }

    for (p, els) in &reads {
        let who = format!("{} on node {}", label(p.invoke), p.invoke.node);
        for e in els {
            match adds.get(e) {
                None => r.anomaly("phantom", format!("{who}: element {e} was never inserted")),
                Some(a) if a.outcome() == OpKind::Fail => r.anomaly(
                    "aborted-element",
                    format!("{who}: element {e} of failed insert {}", label(a.invoke)),
                ),
                _ => {}
            }
        }
    }

    // Ok inserts are in every final read that started after they completed.
    let mut oks: Vec<(&u64, &Pair<'_>)> = adds.iter().filter(|(_, a)| a.is_ok()).collect();
    oks.sort_by_key(|(e, _)| **e);
    for (p, els) in reads.iter().filter(|(p, _)| p.invoke.f == OpFn::FinalRead) {
        for (e, a) in &oks {
            if a.complete_ns() < p.invoke_ns() && !els.contains(e) {
                r.anomaly(
                    "lost",
                    format!(
                        "final read {} on node {}: ok insert {} of element {e} is missing",
                        label(p.invoke),
                        p.invoke.node,
                        label(a.invoke)
                    ),
                );
            }
        }
    }

    // Once visible, always visible (covers indeterminate inserts too).
    let mut by_completion: Vec<&(Pair<'_>, BTreeSet<u64>)> = reads.iter().collect();
    by_completion.sort_by_key(|(p, _)| p.complete_ns());
    for (later, later_els) in &reads {
        let mut seen_before: BTreeSet<u64> = BTreeSet::new();
        for (earlier, els) in &by_completion {
            if earlier.complete_ns() >= later.invoke_ns() {
                break;
            }
            seen_before.extend(els.iter().copied());
        }
        for e in seen_before.difference(later_els) {
            // Ok inserts missing from final reads are reported above.
            let reported = later.invoke.f == OpFn::FinalRead
                && adds
                    .get(e)
                    .is_some_and(|a| a.is_ok() && a.complete_ns() < later.invoke_ns());
            if !reported {
                r.anomaly(
                    "lost",
                    format!(
                        "read {} on node {}: element {e}, seen by an earlier read, is missing",
                        label(later.invoke),
                        later.invoke.node
                    ),
                );
            }
        }
    }

    let info_seen = adds
        .iter()
        .filter(|(e, a)| {
            a.outcome() == OpKind::Info
                && reads
                    .iter()
                    .any(|(p, els)| p.invoke.f == OpFn::FinalRead && els.contains(e))
        })
        .count();
    r.stat("adds_info_seen", info_seen as u64);
    let finals_ok: u64 = final_nodes.values().map(|(_, ok)| ok).sum();
    r.stat("final_reads_ok", finals_ok);
    if finals_ok == 0 {
        r.unknown("no ok final read");
    }
    for (node, (invoked, ok)) in &final_nodes {
        if *ok == 0 {
            r.unknown(format!(
                "node {node}: none of its {invoked} final reads succeeded"
            ));
        }
    }
    r
}
