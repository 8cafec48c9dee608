//! Per-key linearizability of a register history: a Wing-Gong-Lowe search
//! (as porcupine does it) with memoization of (linearized set, state).
//!
//! The history holds, per key, `Read` (`Value::Register`, result `None` =
//! absent), `Write` (`Value::Register`) and `Cas` (`Value::Cas`: write `to`
//! if the value is `from`). The register starts absent.
//!
//! - `Ok` operations must take effect exactly once, between their invocation
//!   and completion.
//! - `Fail` operations never happened and are left out.
//! - `Info` operations complete at infinity and may never have happened: the
//!   search may linearize their effect at any point after their invocation,
//!   or not at all. (An indeterminate read constrains nothing and is left out.)
//!   Indeterminate ops of the same kind (same written value, same CAS pair)
//!   are interchangeable once invoked, so the search only tries the
//!   earliest-invoked one of each kind: a symmetry reduction that keeps keys
//!   with many timeouts tractable without losing any linearization.
//!
//! Anomaly: `nonlinearizable` (with the key, the longest linearizable prefix
//! and the operation that cannot follow it). A key whose search runs past
//! its time budget makes the result `Unknown`: a failed run, never a pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{label, CheckResult};
use crate::history::{History, OpFn, OpKind, Value};

/// Default time budget of one key's search.
pub const DEFAULT_KEY_BUDGET: Duration = Duration::from_secs(10);

/// Options of [`check_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How long one key's search may take before the key is `Unknown`.
    pub key_budget: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            key_budget: DEFAULT_KEY_BUDGET,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Read(Option<i64>),
    Write(i64),
    Cas(i64, i64),
}

#[derive(Debug, Clone)]
struct RegOp {
    invoke: u64,
    complete: u64,
    kind: Kind,
    info: bool,
    label: String,
}

impl Kind {
    /// The state after this operation, if it can take effect in `state`.
    fn step(self, state: Option<i64>) -> Option<Option<i64>> {
        match self {
            Kind::Read(v) => (v == state).then_some(state),
            Kind::Write(v) => Some(Some(v)),
            Kind::Cas(from, to) => (state == Some(from)).then_some(Some(to)),
        }
    }
}

enum Outcome {
    Linearizable,
    NotLinearizable {
        /// Ops in the longest linearizable prefix found.
        depth: usize,
        /// State after it.
        state: Option<i64>,
        /// The earliest-completing op that could not follow it.
        stuck: Option<usize>,
    },
    Timeout,
}

/// Checks with the default budget.
pub fn check(history: &History) -> CheckResult {
    check_with(history, &Options::default())
}

/// Checks every key's sub-history.
pub fn check_with(history: &History, options: &Options) -> CheckResult {
    let mut r = CheckResult::new();
    let mut keys: BTreeMap<String, Vec<RegOp>> = BTreeMap::new();
    for p in history.pairs() {
        let outcome = p.outcome();
        if outcome == OpKind::Fail {
            continue;
        }
        let info = outcome != OpKind::Ok;
        let (key, kind) = match (p.invoke.f, p.value()) {
            (OpFn::Read, Value::Register { key, value }) if !info => (key, Kind::Read(*value)),
            (
                OpFn::Write,
                Value::Register {
                    key,
                    value: Some(v),
                },
            ) => (key, Kind::Write(*v)),
            (OpFn::Cas, Value::Cas { key, from, to }) => (key, Kind::Cas(*from, *to)),
            _ => continue,
        };
        keys.entry(key.clone()).or_default().push(RegOp {
            invoke: p.invoke_ns(),
            complete: p.complete_ns(),
            kind,
            info,
            label: label(p.invoke),
        });
    }
    r.stat("keys", keys.len() as u64);
    let mut max_ops = 0;
    for (key, ops) in &keys {
        max_ops = max_ops.max(ops.len() as u64);
        r.add_stat("ops", ops.len() as u64);
        r.add_stat("ops_info", ops.iter().filter(|o| o.info).count() as u64);
        let (outcome, states) = search(ops, options.key_budget);
        r.add_stat("search_states", states);
        match outcome {
            Outcome::Linearizable => {}
            Outcome::Timeout => {
                r.add_stat("keys_unknown", 1);
                r.unknown(format!(
                    "key {key}: the search over {} ops ran past its budget of {:?} \
                     after {states} states",
                    ops.len(),
                    options.key_budget
                ));
            }
            Outcome::NotLinearizable {
                depth,
                state,
                stuck,
            } => {
                let stuck = stuck
                    .map(|i| format!("{} {:?}", ops[i].label, ops[i].kind))
                    .unwrap_or_else(|| "-".into());
                r.anomaly(
                    "nonlinearizable",
                    format!(
                        "key {key}: no linearization of its {} ops; the longest \
                         linearizable prefix has {depth} ops and leaves the register \
                         at {state:?}, after which {stuck} cannot take effect",
                        ops.len()
                    ),
                );
            }
        }
    }
    r.stat("max_ops_per_key", max_ops);
    r
}

/// The Wing-Gong-Lowe search over one key's ops; returns the outcome and the
/// number of (linearized set, state) pairs visited.
fn search(ops: &[RegOp], budget: Duration) -> (Outcome, u64) {
    let start = Instant::now();
    let n = ops.len();
    let required = ops.iter().filter(|o| !o.info).count();
    let words = n.div_ceil(64).max(1);
    let mut bits = vec![0u64; words];
    let mut state: Option<i64> = None;
    let mut done_required = 0usize;
    if done_required == required {
        return (Outcome::Linearizable, 0);
    }
    let is_set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;

    // The ops that may come next, with the state each leaves.
    let expand = |bits: &[u64], state: Option<i64>| -> Vec<(usize, Option<i64>)> {
        let min_complete = (0..n)
            .filter(|&i| !is_set(bits, i))
            .map(|i| ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        // Indeterminate ops of one kind are interchangeable once invoked
        // (they all complete at infinity): only the earliest-invoked one of
        // each kind is a candidate, which keeps many timeouts tractable.
        let mut first_info: HashMap<Kind, usize> = HashMap::new();
        for i in (0..n).filter(|&i| ops[i].info && !is_set(bits, i)) {
            let first = first_info.entry(ops[i].kind).or_insert(i);
            if (ops[i].invoke, i) < (ops[*first].invoke, *first) {
                *first = i;
            }
        }
        let mut cands: Vec<(usize, Option<i64>)> = (0..n)
            .filter(|&i| !is_set(bits, i) && ops[i].invoke <= min_complete)
            .filter(|&i| !ops[i].info || first_info.get(&ops[i].kind) == Some(&i))
            .filter_map(|i| ops[i].kind.step(state).map(|s| (i, s)))
            .collect();
        // Required ops first, earliest completion first.
        cands.sort_by_key(|&(i, _)| (ops[i].info, ops[i].complete, ops[i].invoke));
        cands
    };

    struct Frame {
        cands: Vec<(usize, Option<i64>)>,
        next: usize,
    }
    let mut visited: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut path: Vec<(usize, Option<i64>)> = Vec::new();
    let mut stack = vec![Frame {
        cands: expand(&bits, state),
        next: 0,
    }];
    let mut deepest = (0usize, state, bits.clone());
    let mut iterations = 0u64;
    loop {
        iterations += 1;
        if iterations.is_multiple_of(256) && start.elapsed() > budget {
            return (Outcome::Timeout, visited.len() as u64);
        }
        let Some(frame) = stack.last_mut() else {
            let (depth, state, bits) = deepest;
            let stuck = (0..n)
                .filter(|&i| !is_set(&bits, i) && !ops[i].info)
                .min_by_key(|&i| ops[i].complete);
            return (
                Outcome::NotLinearizable {
                    depth,
                    state,
                    stuck,
                },
                visited.len() as u64,
            );
        };
        if frame.next < frame.cands.len() {
            let (i, next_state) = frame.cands[frame.next];
            frame.next += 1;
            bits[i / 64] |= 1 << (i % 64);
            if !visited.insert((bits.clone(), next_state)) {
                bits[i / 64] &= !(1 << (i % 64));
                continue;
            }
            path.push((i, state));
            state = next_state;
            if !ops[i].info {
                done_required += 1;
            }
            if done_required == required {
                return (Outcome::Linearizable, visited.len() as u64);
            }
            if path.len() > deepest.0 {
                deepest = (path.len(), state, bits.clone());
            }
            stack.push(Frame {
                cands: expand(&bits, state),
                next: 0,
            });
        } else {
            stack.pop();
            if let Some((i, previous)) = path.pop() {
                bits[i / 64] &= !(1 << (i % 64));
                state = previous;
                if !ops[i].info {
                    done_required -= 1;
                }
            }
        }
    }
}
