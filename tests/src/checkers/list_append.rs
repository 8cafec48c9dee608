//! An Elle-style checker of list-append transactions.
//!
//! The history holds `Txn` operations (and `FinalRead`s with the same
//! value): `Value::Txn` lists of micro-operations `append(k, x)` (x unique per
//! key) and `read(k) = [..]`. Reads are known for `Ok` transactions only; a
//! `Fail` transaction never happened; an `Info` one may have (it counts as
//! committed once any of its elements is seen).
//!
//! What it does:
//! 1. Per transaction, internal consistency: a read after the transaction's
//!    own appends ends with them, and repeated reads of a key agree
//!    (`internal`). Own appends are stripped, leaving the version read from
//!    the database (the *external* read).
//! 2. Per key, the version order is the longest external read; every read
//!    must be a prefix of it (`incompatible-order`); no element twice in a
//!    read (`duplicate-elements`); every element appended by someone
//!    (`phantom`), by a transaction that did not fail (`G1a`: aborted read),
//!    and all of that transaction's appends to the key, not some of them
//!    (`G1b`: intermediate read).
//! 3. `P4` (lost update): two committed transactions read the same version
//!    of a key and both appended to it.
//! 4. `lost-append`: a committed append missing from a `FinalRead` of its key
//!    that started after the append's transaction completed.
//! 5. The dependency graph of committed transactions, from the version
//!    orders of the keys without order anomalies: `ww` (consecutive
//!    appenders; and the last observed appender before every committed but
//!    unobserved append), `wr` (appender of a read version's last element ->
//!    reader), `rw` (reader -> appender of the next element); plus, with
//!    `realtime`, `rt` edges (T1 completed before T2 was invoked; transitive
//!    reduction). Strongly connected components (petgraph's `tarjan_scc`);
//!    each component's worst cycle is reported: `G0` (ww only), `G1c` (ww and
//!    wr), `G-single` (exactly one rw), `G2` (two or more rw). Cycles that
//!    need an `rt` edge are reported with a `-realtime` suffix.
//!
//! For SNAPSHOT runs ([`Options::isolation`]), `G2` and `G2-realtime` (write
//! skew) are allowed and only counted (`stats["g2_allowed"]`); everything
//! else is forbidden at both levels.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use trireme_client::Isolation;

use super::{label, CheckResult};
use crate::history::{History, MicroOp, OpFn, OpKind, Pair, Value};

/// Options of [`check_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The isolation the transactions ran at.
    pub isolation: Isolation,
    /// Add real-time order edges (checks strict serializability).
    pub realtime: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            isolation: Isolation::Serializable,
            realtime: false,
        }
    }
}

/// Dependency kinds, as bits of an edge's mask.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const KINDS: [(u8, &str); 4] = [(WW, "ww"), (WR, "wr"), (RW, "rw"), (RT, "rt")];

/// How many edges of one kind a component's cycle search starts from.
const MAX_CYCLE_TRIES: usize = 2_000;

struct Txn<'a> {
    pair: Pair<'a>,
    mops: &'a [MicroOp],
    outcome: OpKind,
    final_read: bool,
}

/// An external read: transaction, key, version read.
struct Read {
    txn: usize,
    key: String,
    version: Vec<u64>,
}

/// Out-edges (target, mask) by vertex.
type Adj = BTreeMap<usize, Vec<(usize, u8)>>;
/// Edges `(from, to, kind)` of a cycle or path, in order.
type Cycle = Vec<(usize, usize, u8)>;

#[derive(Default)]
struct Edge {
    mask: u8,
    keys: [Option<String>; 4],
}

/// Checks a SERIALIZABLE list-append history without real-time edges.
pub fn check(history: &History) -> CheckResult {
    check_with(history, &Options::default())
}

/// Checks a list-append history.
pub fn check_with(history: &History, options: &Options) -> CheckResult {
    let mut r = CheckResult::new();
    let pairs = history.pairs();
    let txns: Vec<Txn<'_>> = pairs
        .iter()
        .filter(|p| matches!(p.invoke.f, OpFn::Txn | OpFn::FinalRead))
        .filter_map(|p| {
            let mops = match (p.value(), &p.invoke.value) {
                (Value::Txn(m), _) => m,
                (_, Value::Txn(m)) => m,
                _ => return None,
            };
            Some(Txn {
                pair: *p,
                mops,
                outcome: p.outcome(),
                final_read: p.invoke.f == OpFn::FinalRead,
            })
        })
        .collect();
    for t in &txns {
        match t.outcome {
            OpKind::Ok => r.add_stat("txns_ok", 1),
            OpKind::Fail => r.add_stat("txns_fail", 1),
            _ => r.add_stat("txns_info", 1),
        }
    }
    let name = |i: usize| format!("T{i}={}", label(txns[i].pair.invoke));

    // Who appended what, and each transaction's appends per key in order.
    let mut appender: HashMap<(&str, u64), usize> = HashMap::new();
    let mut appends_of: Vec<BTreeMap<&str, Vec<u64>>> = Vec::with_capacity(txns.len());
    for (i, t) in txns.iter().enumerate() {
        let mut mine: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in t.mops {
            if let MicroOp::Append { key, value } = m {
                mine.entry(key).or_default().push(*value);
                if appender.insert((key, *value), i).is_some() {
                    r.add_stat("duplicate_append_invocations", 1);
                }
            }
        }
        appends_of.push(mine);
    }

    // 1. Internal consistency; external reads of ok transactions.
    let mut reads: Vec<Read> = Vec::new();
    // (txn, key) -> the version it read before appending (for P4).
    let mut read_before_append: Vec<(usize, String, Vec<u64>)> = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        if t.outcome != OpKind::Ok {
            continue;
        }
        let mut own: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in t.mops {
            match m {
                MicroOp::Append { key, value } => own.entry(key).or_default().push(*value),
                MicroOp::Read {
                    key,
                    value: Some(v),
                } => {
                    let mine = own.get(key.as_str()).map_or(&[][..], Vec::as_slice);
                    if !v.ends_with(mine) {
                        r.anomaly(
                            "internal",
                            format!(
                                "{}: read {key} = {v:?} does not end with its own appends {mine:?}",
                                name(i)
                            ),
                        );
                        continue;
                    }
                    let external = v[..v.len() - mine.len()].to_vec();
                    if let Some(before) = seen.get(key.as_str()) {
                        if *before != external {
                            r.anomaly(
                                "internal",
                                format!(
                                    "{}: read {key} = {v:?} after reading {before:?} (own appends {mine:?})",
                                    name(i)
                                ),
                            );
                        }
                        continue;
                    }
                    seen.insert(key, external.clone());
                    if appends_of[i].contains_key(key.as_str()) {
                        read_before_append.push((i, key.clone(), external.clone()));
                    }
                    reads.push(Read {
                        txn: i,
                        key: key.clone(),
                        version: external,
                    });
                }
                MicroOp::Read { value: None, .. } => {}
            }
        }
    }
    r.stat("reads", reads.len() as u64);

    // 2. Version orders.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (ri, rd) in reads.iter().enumerate() {
        by_key.entry(rd.key.as_str()).or_default().push(ri);
    }
    r.stat("keys", by_key.len() as u64);
    // Transactions known to have committed: ok, or info with an element seen.
    let mut committed: Vec<bool> = txns.iter().map(|t| t.outcome == OpKind::Ok).collect();
    let mut orders: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (&key, ris) in &by_key {
        let mut consistent = true;
        for &ri in ris {
            let rd = &reads[ri];
            let mut in_read = HashSet::new();
            for &e in &rd.version {
                if !in_read.insert(e) {
                    consistent = false;
                    r.anomaly(
                        "duplicate-elements",
                        format!(
                            "{}: read {key} = {:?} holds {e} twice",
                            name(rd.txn),
                            rd.version
                        ),
                    );
                }
            }
            let mut intermediate = HashSet::new();
            for &e in &rd.version {
                match appender.get(&(key, e)) {
                    None => r.anomaly(
                        "phantom",
                        format!(
                            "{}: read {key} = {:?} holds {e}, which nobody appended",
                            name(rd.txn),
                            rd.version
                        ),
                    ),
                    Some(&w) if txns[w].outcome == OpKind::Fail => r.anomaly(
                        "G1a",
                        format!(
                            "{}: read {key} = {:?} holds {e}, appended by failed {}",
                            name(rd.txn),
                            rd.version,
                            name(w)
                        ),
                    ),
                    Some(&w) => {
                        if txns[w].outcome == OpKind::Info {
                            committed[w] = true;
                        }
                        // One intermediate-read report per writer and read.
                        if w != rd.txn && intermediate.insert(w) {
                            let all = &appends_of[w][key];
                            if let Some(missing) = all.iter().find(|x| !in_read.contains(x)) {
                                r.anomaly(
                                    "G1b",
                                    format!(
                                        "{}: read {key} = {:?} holds {e} of {} but not its later append {missing}",
                                        name(rd.txn),
                                        rd.version,
                                        name(w)
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
        let longest = ris
            .iter()
            .map(|&ri| &reads[ri])
            .max_by_key(|rd| rd.version.len())
            .expect("a key with reads");
        for &ri in ris {
            let rd = &reads[ri];
            if !longest.version.starts_with(&rd.version) {
                consistent = false;
                r.anomaly(
                    "incompatible-order",
                    format!(
                        "key {key}: {} read {:?}, but {} read {:?}",
                        name(rd.txn),
                        rd.version,
                        name(longest.txn),
                        longest.version
                    ),
                );
                break;
            }
        }
        if consistent {
            orders.insert(key, longest.version.clone());
        }
    }

    // 3. P4: two committed transactions read the same version and both appended.
    let mut lost_updates: HashMap<(&str, &[u64]), usize> = HashMap::new();
    for (i, key, version) in &read_before_append {
        if let Some(&j) = lost_updates.get(&(key.as_str(), version.as_slice())) {
            r.anomaly(
                "P4",
                format!(
                    "{} and {} both read {key} = {version:?} and both appended to it",
                    name(j),
                    name(*i)
                ),
            );
        } else {
            lost_updates.insert((key, version), *i);
        }
    }

    // 4. Lost appends: missing from a final read that started after the commit.
    for rd in &reads {
        let reader = &txns[rd.txn];
        if !reader.final_read {
            continue;
        }
        let present: HashSet<u64> = rd.version.iter().copied().collect();
        for (w, t) in txns.iter().enumerate() {
            if t.outcome != OpKind::Ok || t.pair.complete_ns() >= reader.pair.invoke_ns() {
                continue;
            }
            for x in appends_of[w].get(rd.key.as_str()).into_iter().flatten() {
                if !present.contains(x) {
                    r.anomaly(
                        "lost-append",
                        format!(
                            "{}: final read of {} misses {x}, appended by committed {}",
                            name(rd.txn),
                            rd.key,
                            name(w)
                        ),
                    );
                }
            }
        }
    }

    // 5. The dependency graph.
    let mut edges: HashMap<(usize, usize), Edge> = HashMap::new();
    let add =
        |edges: &mut HashMap<(usize, usize), Edge>, a: usize, b: usize, kind: u8, key: &str| {
            if a == b {
                return;
            }
            let e = edges.entry((a, b)).or_default();
            e.mask |= kind;
            let slot = KINDS.iter().position(|(k, _)| *k == kind).expect("a kind");
            if e.keys[slot].is_none() {
                e.keys[slot] = Some(key.to_string());
            }
        };
    for (&key, order) in &orders {
        let writer = |e: u64| appender.get(&(key, e)).copied();
        for pair in order.windows(2) {
            if let (Some(a), Some(b)) = (writer(pair[0]), writer(pair[1])) {
                add(&mut edges, a, b, WW, key);
            }
        }
        let observed: HashSet<u64> = order.iter().copied().collect();
        let mut unobserved: Vec<usize> = Vec::new();
        for (w, t) in txns.iter().enumerate() {
            if t.outcome == OpKind::Ok
                && appends_of[w]
                    .get(key)
                    .is_some_and(|xs| xs.iter().any(|x| !observed.contains(x)))
            {
                unobserved.push(w);
            }
        }
        if let Some(last) = order.last().and_then(|&e| writer(e)) {
            for &w in &unobserved {
                add(&mut edges, last, w, WW, key);
            }
        }
        for &ri in &by_key[key] {
            let rd = &reads[ri];
            if let Some(w) = rd.version.last().and_then(|&e| writer(e)) {
                add(&mut edges, w, rd.txn, WR, key);
            }
            if rd.version.len() < order.len() {
                if let Some(w) = writer(order[rd.version.len()]) {
                    add(&mut edges, rd.txn, w, RW, key);
                }
            } else {
                for &w in &unobserved {
                    add(&mut edges, rd.txn, w, RW, key);
                }
            }
        }
    }
    // Only committed transactions are vertices.
    edges.retain(|(a, b), _| committed[*a] && committed[*b]);
    let data_edges = edges.len();
    if options.realtime {
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, t) in txns.iter().enumerate() {
            if committed[i] {
                events.push((t.pair.invoke_ns(), 0, i));
                if t.outcome == OpKind::Ok {
                    events.push((t.pair.complete_ns(), 1, i));
                }
            }
        }
        events.sort();
        let mut frontier: Vec<usize> = Vec::new();
        let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
        for (_, kind, i) in events {
            if kind == 0 {
                for &p in &frontier {
                    add(&mut edges, p, i, RT, "");
                }
                preds.insert(i, frontier.clone());
            } else {
                let covered = preds.remove(&i).unwrap_or_default();
                frontier.retain(|x| !covered.contains(x));
                frontier.push(i);
            }
        }
    }
    r.stat("graph_edges", edges.len() as u64);
    r.stat("graph_data_edges", data_edges as u64);

    let snapshot = options.isolation == Isolation::Snapshot;
    let describe = |cycle: &[(usize, usize, u8)]| -> String {
        let mut s = name(cycle[0].0);
        for &(a, b, kind) in cycle {
            let e = &edges[&(a, b)];
            let slot = KINDS.iter().position(|(k, _)| *k == kind).expect("a kind");
            let key = e.keys[slot].as_deref().unwrap_or("");
            if key.is_empty() {
                s.push_str(&format!(" -{}-> {}", KINDS[slot].1, name(b)));
            } else {
                s.push_str(&format!(" -{}[{key}]-> {}", KINDS[slot].1, name(b)));
            }
        }
        s
    };

    // Pass 1: data dependencies only.
    let data: HashMap<(usize, usize), u8> = edges
        .iter()
        .filter(|(_, e)| e.mask & (WW | WR | RW) != 0)
        .map(|(k, e)| (*k, e.mask & (WW | WR | RW)))
        .collect();
    let mut cyclic = 0;
    for scc in components(&data) {
        cyclic += 1;
        let (name, cycle) = classify(&data, &scc);
        if snapshot && name == "G2" {
            r.add_stat("g2_allowed", 1);
            continue;
        }
        r.anomaly(name, describe(&cycle));
    }
    r.stat("cyclic_components", cyclic);

    // Pass 2: cycles that need a real-time edge.
    if options.realtime {
        let all: HashMap<(usize, usize), u8> = edges.iter().map(|(k, e)| (*k, e.mask)).collect();
        for scc in components(&all) {
            let Some(cycle) = cheapest_rt_cycle(&all, &scc) else {
                continue;
            };
            let rws = cycle.iter().filter(|c| c.2 == RW).count();
            let name = match rws {
                0 if cycle.iter().all(|c| c.2 != WR) => "G0-realtime",
                0 => "G1c-realtime",
                1 => "G-single-realtime",
                _ => "G2-realtime",
            };
            if snapshot && name == "G2-realtime" {
                r.add_stat("g2_allowed", 1);
                continue;
            }
            r.anomaly(name, describe(&cycle));
        }
    }
    r
}

/// The strongly connected components with more than one vertex.
fn components(edges: &HashMap<(usize, usize), u8>) -> Vec<HashSet<usize>> {
    let mut g: DiGraph<usize, u8> = DiGraph::new();
    let mut index: HashMap<usize, NodeIndex> = HashMap::new();
    let mut keys: Vec<&(usize, usize)> = edges.keys().collect();
    keys.sort();
    for &(a, b) in keys {
        let na = *index.entry(a).or_insert_with(|| g.add_node(a));
        let nb = *index.entry(b).or_insert_with(|| g.add_node(b));
        g.add_edge(na, nb, edges[&(a, b)]);
    }
    let mut out: Vec<HashSet<usize>> = tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.into_iter().map(|n| g[n]).collect())
        .collect();
    // Deterministic order: by smallest member.
    out.sort_by_key(|c| c.iter().min().copied());
    out
}

/// Adjacency of `edges` restricted to `scc`, sorted for determinism.
fn adjacency(edges: &HashMap<(usize, usize), u8>, scc: &HashSet<usize>) -> (Adj, Cycle) {
    let mut adj: BTreeMap<usize, Vec<(usize, u8)>> = BTreeMap::new();
    let mut list: Vec<(usize, usize, u8)> = Vec::new();
    for (&(a, b), &m) in edges {
        if scc.contains(&a) && scc.contains(&b) {
            adj.entry(a).or_default().push((b, m));
            list.push((a, b, m));
        }
    }
    for v in adj.values_mut() {
        v.sort();
    }
    list.sort();
    (adj, list)
}

/// The label of an edge of mask `m` when only `allowed` kinds may be used:
/// the first allowed kind in ww, wr, rt, rw order (weakest claim first).
fn pick(m: u8, allowed: u8) -> Option<u8> {
    [WW, WR, RT, RW].into_iter().find(|k| m & allowed & k != 0)
}

/// A shortest path `from` -> `to` over edges of the `allowed` kinds.
fn bfs(adj: &Adj, from: usize, to: usize, allowed: u8) -> Option<Cycle> {
    let mut prev: HashMap<usize, (usize, u8)> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = HashSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = Vec::new();
            let mut cur = to;
            while cur != from {
                let (p, k) = prev[&cur];
                path.push((p, cur, k));
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for &(w, m) in adj.get(&v).into_iter().flatten() {
            if let Some(k) = pick(m, allowed) {
                if seen.insert(w) {
                    prev.insert(w, (v, k));
                    queue.push_back(w);
                }
            }
        }
    }
    None
}

/// The worst cycle of a component of data edges: G0, else G1c, else G-single, else G2.
fn classify(edges: &HashMap<(usize, usize), u8>, scc: &HashSet<usize>) -> (&'static str, Cycle) {
    let (adj, list) = adjacency(edges, scc);
    let through = |kind: u8, back: u8| -> Option<Cycle> {
        list.iter()
            .filter(|(_, _, m)| m & kind != 0)
            .take(MAX_CYCLE_TRIES)
            .find_map(|&(a, b, _)| {
                bfs(&adj, b, a, back).map(|mut path| {
                    path.insert(0, (a, b, kind));
                    path
                })
            })
    };
    if let Some(c) = through(WW, WW) {
        return ("G0", c);
    }
    if let Some(c) = through(WR, WW | WR) {
        return ("G1c", c);
    }
    if let Some(c) = through(RW, WW | WR) {
        return ("G-single", c);
    }
    let c = through(WW | WR | RW, WW | WR | RW).expect("a component has a cycle");
    let (a, b, _) = c[0];
    let first = pick(edges[&(a, b)], WW | WR | RW).expect("an edge kind");
    let mut c = c;
    c[0] = (a, b, first);
    ("G2", c)
}

/// The cycle through a real-time edge with the fewest rw edges (0-1 BFS),
/// or `None` when every cycle of the component is made of data edges only.
fn cheapest_rt_cycle(edges: &HashMap<(usize, usize), u8>, scc: &HashSet<usize>) -> Option<Cycle> {
    let (adj, list) = adjacency(edges, scc);
    let mut best: Option<(usize, Cycle)> = None;
    for &(a, b, m) in list
        .iter()
        .filter(|(_, _, m)| m & RT != 0)
        .take(MAX_CYCLE_TRIES)
    {
        // The edge a -> b, labelled rt unless it is also a non-rw data edge.
        let first = pick(m, WW | WR | RT).expect("an rt edge");
        // 0-1 BFS from b to a: rw edges cost 1.
        let mut dist: HashMap<usize, usize> = HashMap::from([(b, 0)]);
        let mut prev: HashMap<usize, (usize, u8)> = HashMap::new();
        let mut deque = VecDeque::from([b]);
        while let Some(v) = deque.pop_front() {
            let dv = dist[&v];
            for &(w, m) in adj.get(&v).into_iter().flatten() {
                let (k, cost) = match pick(m, WW | WR | RT) {
                    Some(k) => (k, 0),
                    None => (RW, 1),
                };
                if dist.get(&w).is_none_or(|&dw| dv + cost < dw) {
                    dist.insert(w, dv + cost);
                    prev.insert(w, (v, k));
                    if cost == 0 {
                        deque.push_front(w);
                    } else {
                        deque.push_back(w);
                    }
                }
            }
        }
        let Some(&cost) = dist.get(&a) else { continue };
        if best.as_ref().is_some_and(|(c, _)| *c <= cost) {
            continue;
        }
        let mut path = Vec::new();
        let mut cur = a;
        while cur != b {
            let (p, k) = prev[&cur];
            path.push((p, cur, k));
            cur = p;
        }
        path.push((a, b, first));
        // Now [(a, b), (b, ..), .., (.., a)].
        path.reverse();
        best = Some((cost, path));
        if cost == 0 {
            break;
        }
    }
    let (_, cycle) = best?;
    // A cycle whose rt edges are all also data edges was found in pass 1.
    cycle.iter().any(|c| c.2 == RT).then_some(cycle)
}
