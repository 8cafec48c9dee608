//! Operation histories, as Jepsen records them: every client operation is an
//! `Invoke` followed (by the same process) by exactly one completion: `Ok`
//! (it happened, with this result), `Fail` (it certainly did not happen) or
//! `Info` (indeterminate: it may or may not have happened; the checkers give
//! it a completion time of infinity).
//!
//! # Recording
//!
//! A [`Recorder`] is cheap to clone and thread-safe; every worker of a
//! workload holds a [`Worker`] (a process id and the node it talks to):
//!
//! ```no_run
//! # use trireme_tests::history::*;
//! let recorder = Recorder::new();
//! let mut worker = recorder.worker(1);
//! let op = worker.invoke(OpFn::Write, Value::register("r/0", Some(3)));
//! op.ok(Value::register("r/0", Some(3)));
//! // A client error is mapped to Fail or Info by `complete_err`:
//! // op.complete_err(&error, false);
//! let history = recorder.history();
//! history.save("target/chaos/run-1/register.jsonl").unwrap();
//! ```
//!
//! A process that gets `Info` retires: the next [`Worker::invoke`] takes a
//! fresh process id, so that no process ever has two operations open. An
//! [`OpHandle`] dropped without a completion (the task was cancelled at the
//! end of a run) records `Info`.
//!
//! Client errors map as follows ([`outcome_of`]): `Aborted`, `InvalidInput`,
//! `Unavailable`, `SnapshotTooOld` (the server promises nothing was applied)
//! are `Fail`; `Indeterminate` and `Other` (transport, unknown) are `Info`.
//! A read has no effect, so a read that fails for any reason is `Fail`.
//!
//! Histories are written as JSON lines, one [`Op`] a line, under
//! [`run_dir`]`(run)/<workload>.jsonl`, and read back with [`History::load`].
//!
//! For hand-made histories in tests, [`Builder`] assigns times and indexes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The process id of nemesis (fault) events; the checkers ignore them.
pub const NEMESIS_PROCESS: u64 = u64::MAX;

/// What an entry of the history says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// The operation started.
    Invoke,
    /// It happened, with the value given.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Indeterminate: it may or may not have happened (timeout, broken connection).
    Info,
}

/// The function an operation performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpFn {
    /// Initial state written once before the traffic (bank accounts).
    Setup,
    /// A read: a register, or all bank accounts.
    Read,
    /// A register write.
    Write,
    /// A register compare-and-set on the value.
    Cas,
    /// A set insert.
    Add,
    /// A bank transfer.
    Transfer,
    /// A list-append transaction of micro-operations.
    Txn,
    /// A read after the traffic, on one node (set, bank, list-append).
    FinalRead,
    /// A fault injected or healed (process [`NEMESIS_PROCESS`]).
    Nemesis,
}

/// One micro-operation of a list-append transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroOp {
    /// Append a unique integer to the list under `key`.
    Append {
        /// The key.
        key: String,
        /// The element appended.
        value: u64,
    },
    /// Read the list under `key`: `None` until known (invocations, and
    /// transactions that did not complete `Ok`), an empty list if absent.
    Read {
        /// The key.
        key: String,
        /// The list read.
        value: Option<Vec<u64>>,
    },
}

impl MicroOp {
    /// `append(key, value)`.
    pub fn append(key: &str, value: u64) -> MicroOp {
        MicroOp::Append {
            key: key.to_string(),
            value,
        }
    }

    /// `read(key) = value`.
    pub fn read(key: &str, value: &[u64]) -> MicroOp {
        MicroOp::Read {
            key: key.to_string(),
            value: Some(value.to_vec()),
        }
    }

    /// `read(key)` with the result not known yet.
    pub fn read_unknown(key: &str) -> MicroOp {
        MicroOp::Read {
            key: key.to_string(),
            value: None,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        match self {
            MicroOp::Append { key, .. } | MicroOp::Read { key, .. } => key,
        }
    }
}

/// The argument or result of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// Nothing.
    #[default]
    None,
    /// A register read (`value`: what was read, `None` = absent; unknown at
    /// invocation) or write (`value`: what is written).
    Register {
        /// The key.
        key: String,
        /// The value.
        value: Option<i64>,
    },
    /// A register compare-and-set: write `to` if the value is `from`.
    Cas {
        /// The key.
        key: String,
        /// The expected value.
        from: i64,
        /// The new value.
        to: i64,
    },
    /// A set element inserted.
    Element(u64),
    /// The elements of a set read.
    Elements(Vec<u64>),
    /// Bank balances by account (setup and reads; empty at a read's invocation).
    Balances(BTreeMap<u32, i64>),
    /// A bank transfer and the ledger entry it writes.
    Transfer {
        /// Source account.
        from: u32,
        /// Destination account.
        to: u32,
        /// Amount moved (if the source has enough).
        amount: i64,
        /// The transfer's unique ledger key.
        ledger_key: String,
        /// The value written under the ledger key.
        ledger_value: String,
    },
    /// The whole bank as read at the end: balances and ledger entries.
    BankState {
        /// Balances by account.
        balances: BTreeMap<u32, i64>,
        /// Every ledger key and its value.
        ledger: BTreeMap<String, String>,
    },
    /// A list-append transaction.
    Txn(Vec<MicroOp>),
    /// Free text (nemesis events).
    Text(String),
}

impl Value {
    /// A register value.
    pub fn register(key: &str, value: Option<i64>) -> Value {
        Value::Register {
            key: key.to_string(),
            value,
        }
    }

    /// A compare-and-set.
    pub fn cas(key: &str, from: i64, to: i64) -> Value {
        Value::Cas {
            key: key.to_string(),
            from,
            to,
        }
    }
}

/// One entry of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The logical client; a process has at most one operation open.
    pub process: u64,
    /// Position in the history (0-based).
    pub index: u64,
    /// Invocation or completion.
    pub kind: OpKind,
    /// What the operation does.
    pub f: OpFn,
    /// Its argument (invocation) or result (completion).
    pub value: Value,
    /// Nanoseconds since the run started (monotonic clock).
    pub time_ns: u64,
    /// The node (1-based position in the endpoint list) the client sent it to first.
    pub node: u64,
    /// For `Fail` and `Info`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An invocation and its completion, as the checkers see it.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// The invocation.
    pub invoke: &'a Op,
    /// The completion; `None` if the history ended first (treated as `Info`).
    pub completion: Option<&'a Op>,
}

impl<'a> Pair<'a> {
    /// `Ok`, `Fail` or `Info` (an operation that never completed is `Info`).
    pub fn outcome(&self) -> OpKind {
        self.completion.map_or(OpKind::Info, |c| c.kind)
    }

    /// Whether the operation completed `Ok`.
    pub fn is_ok(&self) -> bool {
        self.outcome() == OpKind::Ok
    }

    /// Invocation time.
    pub fn invoke_ns(&self) -> u64 {
        self.invoke.time_ns
    }

    /// Completion time: infinity (`u64::MAX`) unless `Ok` or `Fail`.
    pub fn complete_ns(&self) -> u64 {
        match self.completion {
            Some(c) if c.kind != OpKind::Info => c.time_ns,
            _ => u64::MAX,
        }
    }

    /// The result for `Ok` operations, else the invocation's value.
    pub fn value(&self) -> &'a Value {
        match self.completion {
            Some(c) if c.kind == OpKind::Ok => &c.value,
            _ => &self.invoke.value,
        }
    }
}

/// A recorded history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Entries in the order they happened.
    pub ops: Vec<Op>,
}

impl History {
    /// Every client operation (nemesis events excluded) as an invocation and
    /// its completion, in invocation order.
    pub fn pairs(&self) -> Vec<Pair<'_>> {
        let mut open: HashMap<u64, usize> = HashMap::new();
        let mut pairs: Vec<Pair<'_>> = Vec::new();
        for op in &self.ops {
            if op.process == NEMESIS_PROCESS || op.f == OpFn::Nemesis {
                continue;
            }
            match op.kind {
                OpKind::Invoke => {
                    open.insert(op.process, pairs.len());
                    pairs.push(Pair {
                        invoke: op,
                        completion: None,
                    });
                }
                _ => {
                    if let Some(i) = open.remove(&op.process) {
                        pairs[i].completion = Some(op);
                    }
                }
            }
        }
        pairs
    }

    /// Counts of completed operations by outcome, excluding setup, final
    /// reads and nemesis events: `(ok, fail, info)`.
    pub fn counts(&self) -> (u64, u64, u64) {
        let (mut ok, mut fail, mut info) = (0, 0, 0);
        for p in self.pairs() {
            if matches!(p.invoke.f, OpFn::Setup | OpFn::FinalRead) {
                continue;
            }
            match p.outcome() {
                OpKind::Ok => ok += 1,
                OpKind::Fail => fail += 1,
                _ => info += 1,
            }
        }
        (ok, fail, info)
    }

    /// Writes the history as JSON lines to `path` (creating its directory).
    pub fn save(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in &self.ops {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Reads a history written by [`History::save`].
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<History> {
        let file = std::io::BufReader::new(std::fs::File::open(path.as_ref())?);
        let mut ops = Vec::new();
        for line in file.lines() {
            let line = line?;
            if !line.trim().is_empty() {
                ops.push(serde_json::from_str(&line)?);
            }
        }
        Ok(History { ops })
    }
}

/// The directory for the histories of run `run`: `<target>/chaos/<run>`
/// (`$CARGO_TARGET_DIR` if set, else the workspace's `target`).
pub fn run_dir(run: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| crate::bin_dir().parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("chaos").join(run)
}

/// How a client error completes an operation: `Fail` when the server
/// promises nothing was applied, or for reads (which change nothing); `Info`
/// when the outcome is unknown.
pub fn outcome_of(error: &trireme_client::Error, is_read: bool) -> OpKind {
    use trireme_client::Error as E;
    if is_read {
        return OpKind::Fail;
    }
    match error {
        E::Aborted { .. }
        | E::InvalidInput(_)
        | E::Unavailable(_)
        | E::SnapshotTooOld(_)
        | E::Compacted { .. }
        // Refused by the auth checks before anything was ordered.
        | E::Unauthenticated(_)
        | E::PermissionDenied(_) => OpKind::Fail,
        E::Indeterminate(_) | E::Other(_) => OpKind::Info,
    }
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    ops: Vec<Op>,
    next_process: u64,
    retired: HashSet<u64>,
}

/// Records a history; cheap to clone, shared by every worker of a workload.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder::with_start(Instant::now())
    }

    /// A recorder whose clock started at `start` (share one start between
    /// the recorders of one run so that their times compare).
    pub fn with_start(start: Instant) -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(Inner {
                start,
                ops: Vec::new(),
                next_process: 0,
                retired: HashSet::new(),
            })),
        }
    }

    /// A fresh process id.
    pub fn new_process(&self) -> u64 {
        let mut inner = self.inner.lock();
        let p = inner.next_process;
        inner.next_process += 1;
        p
    }

    /// A worker with a fresh process id that sends to `node` (1-based).
    pub fn worker(&self, node: u64) -> Worker {
        Worker {
            recorder: self.clone(),
            process: self.new_process(),
            node,
        }
    }

    /// Records the invocation of `f(value)` by `process` on `node`. Prefer
    /// [`Worker::invoke`], which retires processes after `Info`.
    pub fn invoke(&self, process: u64, node: u64, f: OpFn, value: Value) -> OpHandle {
        self.push(process, node, OpKind::Invoke, f, value, None);
        OpHandle {
            recorder: self.clone(),
            process,
            node,
            f,
            done: false,
        }
    }

    /// Records a nemesis event (`Invoke` when a fault starts, `Info` when it
    /// is in place or healed, as Jepsen does), ignored by the checkers.
    pub fn nemesis(&self, kind: OpKind, what: impl Into<String>) {
        self.push(
            NEMESIS_PROCESS,
            0,
            kind,
            OpFn::Nemesis,
            Value::Text(what.into()),
            None,
        );
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History {
            ops: self.inner.lock().ops.clone(),
        }
    }

    /// Nanoseconds since the recorder's start.
    pub fn now_ns(&self) -> u64 {
        self.inner.lock().start.elapsed().as_nanos() as u64
    }

    fn push(
        &self,
        process: u64,
        node: u64,
        kind: OpKind,
        f: OpFn,
        value: Value,
        error: Option<String>,
    ) {
        let mut inner = self.inner.lock();
        if kind == OpKind::Info && process != NEMESIS_PROCESS {
            inner.retired.insert(process);
        }
        let time_ns = inner.start.elapsed().as_nanos() as u64;
        let index = inner.ops.len() as u64;
        inner.ops.push(Op {
            process,
            index,
            kind,
            f,
            value,
            time_ns,
            node,
            error,
        });
    }

    fn is_retired(&self, process: u64) -> bool {
        self.inner.lock().retired.contains(&process)
    }
}

/// One logical client of a workload: a process id (replaced after `Info`)
/// and the node its client is pinned to.
#[derive(Debug)]
pub struct Worker {
    recorder: Recorder,
    process: u64,
    node: u64,
}

impl Worker {
    /// The current process id.
    pub fn process(&self) -> u64 {
        self.process
    }

    /// The node the worker's client talks to first.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Records an invocation; takes a fresh process id first if the last
    /// operation ended `Info`.
    pub fn invoke(&mut self, f: OpFn, value: Value) -> OpHandle {
        if self.recorder.is_retired(self.process) {
            self.process = self.recorder.new_process();
        }
        self.recorder.invoke(self.process, self.node, f, value)
    }
}

/// An invoked operation waiting for its completion. Dropping it without one
/// records `Info` ("abandoned").
#[derive(Debug)]
#[must_use = "complete the operation with ok, fail or info"]
pub struct OpHandle {
    recorder: Recorder,
    process: u64,
    node: u64,
    f: OpFn,
    done: bool,
}

impl OpHandle {
    /// The operation happened, with result `value`.
    pub fn ok(mut self, value: Value) {
        self.complete(OpKind::Ok, value, None);
    }

    /// The operation certainly did not happen.
    pub fn fail(mut self, value: Value, error: impl Into<String>) {
        self.complete(OpKind::Fail, value, Some(error.into()));
    }

    /// The outcome is unknown.
    pub fn info(mut self, value: Value, error: impl Into<String>) {
        self.complete(OpKind::Info, value, Some(error.into()));
    }

    /// Completes with the outcome [`outcome_of`] gives for `error` (the
    /// error text starts with its `kind_name()` and a colon); returns it.
    pub fn complete_err(
        mut self,
        value: Value,
        error: &trireme_client::Error,
        is_read: bool,
    ) -> OpKind {
        let kind = outcome_of(error, is_read);
        self.complete(kind, value, Some(format!("{}: {error}", error.kind_name())));
        kind
    }

    fn complete(&mut self, kind: OpKind, value: Value, error: Option<String>) {
        if !self.done {
            self.done = true;
            self.recorder
                .push(self.process, self.node, kind, self.f, value, error);
        }
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        self.complete(
            OpKind::Info,
            Value::None,
            Some("abandoned without a completion".into()),
        );
    }
}

/// Builds hand-made histories for tests: each call appends one entry, one
/// time unit after the previous; a completion repeats the `f` of its
/// process's open invocation.
#[derive(Debug, Default)]
pub struct Builder {
    ops: Vec<Op>,
    open: HashMap<u64, OpFn>,
}

impl Builder {
    /// An empty history.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// `process` invokes `f(value)`.
    pub fn invoke(&mut self, process: u64, f: OpFn, value: Value) -> &mut Builder {
        self.open.insert(process, f);
        self.push(process, OpKind::Invoke, f, value)
    }

    /// `process`'s open operation completes `Ok` with `value`.
    pub fn ok(&mut self, process: u64, value: Value) -> &mut Builder {
        self.complete(process, OpKind::Ok, value)
    }

    /// `process`'s open operation fails.
    pub fn fail(&mut self, process: u64, value: Value) -> &mut Builder {
        self.complete(process, OpKind::Fail, value)
    }

    /// `process`'s open operation is indeterminate.
    pub fn info(&mut self, process: u64, value: Value) -> &mut Builder {
        self.complete(process, OpKind::Info, value)
    }

    /// An invocation immediately completed `Ok` with the same value.
    pub fn op(&mut self, process: u64, f: OpFn, value: Value) -> &mut Builder {
        self.invoke(process, f, value.clone()).ok(process, value)
    }

    /// The history.
    pub fn build(&self) -> History {
        History {
            ops: self.ops.clone(),
        }
    }

    fn complete(&mut self, process: u64, kind: OpKind, value: Value) -> &mut Builder {
        let f = self
            .open
            .remove(&process)
            .unwrap_or_else(|| panic!("process {process} has no open operation"));
        self.push(process, kind, f, value)
    }

    fn push(&mut self, process: u64, kind: OpKind, f: OpFn, value: Value) -> &mut Builder {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            process,
            index,
            kind,
            f,
            value,
            time_ns: index + 1,
            node: 1,
            error: None,
        });
        self
    }
}
