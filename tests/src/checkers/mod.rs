//! Checkers: pure functions from a [`History`](crate::history::History) to a [`CheckResult`].
//!
//! | checker | call | detects |
//! |---|---|---|
//! | bank | [`bank::check`] | `wrong-total`, `negative-balance`, `missing-account`, `unknown-ledger`, `ledger-mismatch`, `duplicate-ledger`, `lost-transfer`, `aborted-transfer-visible`, `balance-mismatch` |
//! | register | [`register::check`] / [`register::check_with`] | `nonlinearizable` per key (Wing-Gong-Lowe search); `unknown` when a key's time budget runs out |
//! | set | [`set::check`] | `lost`, `phantom`, `aborted-element`, `divergent-final-reads` |
//! | list-append | [`list_append::check`] | `incompatible-order`, `duplicate-elements`, `phantom`, `G1a`, `G1b`, `internal`, `P4`, `lost-append`, `G0`, `G1c`, `G-single`, `G2` (and `-realtime` variants) |
//! | convergence | [`convergence::check`] | `diverged` (per-node seqno / checksum / verdict chain differ) |
//!
//! Every anomaly is one string `"<name>: <details>"`; [`CheckResult::has`]
//! tests for a name. A result is [`Validity::Unknown`] when the checker could
//! not decide (a search over budget, no final read): a run must treat it as a
//! failure, never as a pass. [`check_all`] runs the four history checkers
//! over the histories of [`crate::workloads::run_all`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::workloads::Histories;

pub mod bank;
pub mod convergence;
pub mod list_append;
pub mod register;
pub mod set;

/// At most this many anomalies of one name are listed (all are counted in `stats`).
pub const MAX_LISTED: usize = 20;

/// A checker's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Validity {
    /// No anomaly found.
    Valid,
    /// At least one anomaly.
    Invalid,
    /// The checker could not decide: a failed run, never a pass.
    Unknown,
}

/// What a checker found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// The verdict.
    pub valid: Validity,
    /// `"<name>: <details>"`, at most [`MAX_LISTED`] per name.
    pub anomalies: Vec<String>,
    /// Counts: operations seen, anomalies by name (`anomaly:<name>`), etc.
    pub stats: BTreeMap<String, u64>,
}

impl CheckResult {
    /// A result with no anomaly yet.
    pub fn new() -> CheckResult {
        CheckResult {
            valid: Validity::Valid,
            anomalies: Vec::new(),
            stats: BTreeMap::new(),
        }
    }

    /// Whether the verdict is [`Validity::Valid`].
    pub fn is_valid(&self) -> bool {
        self.valid == Validity::Valid
    }

    /// Records an anomaly: the result becomes Invalid.
    pub fn anomaly(&mut self, name: &str, details: impl fmt::Display) {
        self.valid = Validity::Invalid;
        let count = self.stats.entry(format!("anomaly:{name}")).or_insert(0);
        *count += 1;
        if *count as usize <= MAX_LISTED {
            self.anomalies.push(format!("{name}: {details}"));
        }
    }

    /// Records why the checker could not decide: the result becomes Unknown
    /// unless it is already Invalid.
    pub fn unknown(&mut self, details: impl fmt::Display) {
        if self.valid != Validity::Invalid {
            self.valid = Validity::Unknown;
        }
        *self.stats.entry("unknown".into()).or_insert(0) += 1;
        self.anomalies.push(format!("unknown: {details}"));
    }

    /// Sets a statistic.
    pub fn stat(&mut self, name: &str, value: u64) {
        self.stats.insert(name.to_string(), value);
    }

    /// Adds to a statistic.
    pub fn add_stat(&mut self, name: &str, value: u64) {
        *self.stats.entry(name.to_string()).or_insert(0) += value;
    }

    /// Whether an anomaly named `name` was found (`"unknown"` for undecided parts).
    pub fn has(&self, name: &str) -> bool {
        self.stats.contains_key(&format!("anomaly:{name}"))
            || (name == "unknown" && self.stats.contains_key("unknown"))
    }

    /// The names of the anomalies found.
    pub fn anomaly_names(&self) -> BTreeSet<String> {
        self.stats
            .keys()
            .filter_map(|k| k.strip_prefix("anomaly:").map(str::to_string))
            .collect()
    }

    /// Folds `other` into `self`: Invalid beats Unknown beats Valid; stats add up.
    pub fn merge(&mut self, other: CheckResult) {
        self.valid = match (self.valid, other.valid) {
            (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
            (Validity::Unknown, _) | (_, Validity::Unknown) => Validity::Unknown,
            _ => Validity::Valid,
        };
        self.anomalies.extend(other.anomalies);
        for (k, v) in other.stats {
            *self.stats.entry(k).or_insert(0) += v;
        }
    }
}

impl Default for CheckResult {
    fn default() -> Self {
        CheckResult::new()
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.valid)?;
        let stats: Vec<String> = self.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, " [{}]", stats.join(" "))?;
        for a in &self.anomalies {
            write!(f, "\n  {a}")?;
        }
        Ok(())
    }
}

/// Options of [`check_all`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// What the list-append transactions ran at (G2 is allowed for SNAPSHOT).
    pub isolation: trireme_client::Isolation,
    /// Add real-time edges to the list-append dependency graph: checks
    /// strict serializability (strong snapshot isolation for SNAPSHOT),
    /// which the design promises (one Raft log, read-index snapshots).
    /// Default: on.
    pub realtime: bool,
    /// The register search's time budget per key.
    pub register_key_budget: std::time::Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            isolation: trireme_client::Isolation::Serializable,
            realtime: true,
            register_key_budget: register::DEFAULT_KEY_BUDGET,
        }
    }
}

/// Runs every history checker over the histories of one run; returns
/// `(workload name, result)` in the order bank, register, set, list-append.
pub fn check_all(histories: &Histories, options: &CheckOptions) -> Vec<(String, CheckResult)> {
    vec![
        ("bank".to_string(), bank::check(&histories.bank)),
        (
            "register".to_string(),
            register::check_with(
                &histories.register,
                &register::Options {
                    key_budget: options.register_key_budget,
                },
            ),
        ),
        ("set".to_string(), set::check(&histories.set)),
        (
            "list-append".to_string(),
            list_append::check_with(
                &histories.list_append,
                &list_append::Options {
                    isolation: options.isolation,
                    realtime: options.realtime,
                },
            ),
        ),
    ]
}

/// Whether every result is Valid (Unknown is a failure).
pub fn all_valid(results: &[(String, CheckResult)]) -> bool {
    results.iter().all(|(_, r)| r.is_valid())
}

/// A short label of an operation for anomaly messages: `op#<index>(p<process>)`.
pub(crate) fn label(op: &crate::history::Op) -> String {
    format!("op#{}(p{})", op.index, op.process)
}
