//! The bank workload: [`ACCOUNTS`] accounts `bank/acct/<i>` holding
//! [`INITIAL_BALANCE`] each, written once by the setup.
//!
//! - `Transfer` (70%): a SERIALIZABLE transaction reads two accounts and, if
//!   the source holds at least the (random, pre-chosen) amount, writes both
//!   balances and a unique ledger key `bank/ledger/<seed>-<n>` whose value
//!   names the transfer; otherwise it writes nothing and is recorded `Fail`
//!   (`insufficient_funds`).
//! - `Read` (30%): a read-only transaction scanning every account at one
//!   snapshot.
//! - `FinalRead`: on every node, one snapshot of every account and every
//!   ledger entry (scan of `bank/`).
//!
//! The accounts are fixed keys, so a cluster hosts one bank run: the setup
//! refuses accounts that already exist with other balances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trireme_client::{proto, Client, Isolation};

use super::{decode_int, on_every_node, Options, WorkloadStats, FINAL_READ_DEADLINE};
use crate::history::{OpFn, Recorder, Value};

/// Number of accounts.
pub const ACCOUNTS: u32 = 10;
/// Each account's balance after the setup.
pub const INITIAL_BALANCE: i64 = 100;
/// Largest amount a transfer tries to move.
pub const MAX_AMOUNT: i64 = 30;

const ACCOUNT_PREFIX: &str = "bank/acct/";
const LEDGER_PREFIX: &str = "bank/ledger/";

/// The key of account `i`.
pub fn account_key(i: u32) -> String {
    format!("{ACCOUNT_PREFIX}{i}")
}

fn initial() -> BTreeMap<u32, i64> {
    (0..ACCOUNTS).map(|i| (i, INITIAL_BALANCE)).collect()
}

/// Setup, traffic and final reads, for runs without faults.
pub async fn run(
    endpoints: Vec<String>,
    recorder: Recorder,
    duration: Duration,
    concurrency: usize,
    seed: u64,
) -> Result<WorkloadStats> {
    let opts = Options::new(endpoints, duration, concurrency, seed);
    let stats = traffic(&opts, &recorder).await?;
    final_read(&opts, &recorder, FINAL_READ_DEADLINE).await?;
    Ok(stats)
}

/// Writes the accounts (once), then runs transfers and reads for `opts.duration`.
pub async fn traffic(opts: &Options, recorder: &Recorder) -> Result<WorkloadStats> {
    setup(opts, recorder).await?;
    let start = Instant::now();
    let deadline = start + opts.duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.concurrency {
        let client = opts.client(i)?;
        let mut worker = recorder.worker(opts.node_of(i));
        let mut rng = StdRng::seed_from_u64(opts.worker_seed(1, i));
        let counter = counter.clone();
        let seed = opts.seed;
        tasks.spawn(async move {
            while Instant::now() < deadline {
                if rng.gen_bool(0.3) {
                    let op = worker.invoke(OpFn::Read, Value::Balances(BTreeMap::new()));
                    match read_accounts(&client).await {
                        Ok(b) => op.ok(Value::Balances(b)),
                        Err(e) => {
                            let kind = e
                                .downcast_ref::<trireme_client::Error>()
                                .map_or_else(|| "read".to_string(), |e| e.kind_name());
                            op.fail(Value::None, format!("{kind}: {e:#}"));
                        }
                    }
                    continue;
                }
                let from = rng.gen_range(0..ACCOUNTS);
                let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                let amount = rng.gen_range(1..=MAX_AMOUNT);
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let ledger_key = format!("{LEDGER_PREFIX}{seed:x}-{n}");
                let ledger_value = format!("transfer {n}: {amount} from {from} to {to}");
                let value = Value::Transfer {
                    from,
                    to,
                    amount,
                    ledger_key: ledger_key.clone(),
                    ledger_value: ledger_value.clone(),
                };
                let op = worker.invoke(OpFn::Transfer, value.clone());
                let mut committing = false;
                let result: trireme_client::Result<bool> = async {
                    let tx = client.begin(Isolation::Serializable).await?;
                    let a = balance(tx.get(account_key(from)).await?);
                    let b = balance(tx.get(account_key(to)).await?);
                    let (Some(a), Some(b)) = (a, b) else {
                        return Err(trireme_client::Error::InvalidInput(
                            "an account is missing or not a number".into(),
                        ));
                    };
                    if a < amount {
                        tx.rollback();
                        return Ok(false);
                    }
                    tx.put(account_key(from), (a - amount).to_string())?;
                    tx.put(account_key(to), (b + amount).to_string())?;
                    tx.put(ledger_key, ledger_value)?;
                    committing = true;
                    tx.commit().await?;
                    Ok(true)
                }
                .await;
                match result {
                    Ok(true) => op.ok(value),
                    Ok(false) => op.fail(value, "insufficient_funds: the source holds too little"),
                    Err(e) => {
                        op.complete_err(value, &e, !committing);
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a bank worker panicked")?;
    }
    Ok(WorkloadStats::from_history(
        "bank",
        &recorder.history(),
        start.elapsed(),
    ))
}

/// A balance, or `None` if absent or not a number.
fn balance(v: Option<Vec<u8>>) -> Option<i64> {
    v.and_then(|v| decode_int(&v).ok())
}

/// Every account at one snapshot.
async fn read_accounts(client: &Client) -> Result<BTreeMap<u32, i64>> {
    let tx = client.begin(Isolation::Serializable).await?;
    let pairs = tx.scan(ACCOUNT_PREFIX).await?;
    tx.rollback();
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        let (_, i) = parse_account(&k)?;
        out.insert(i, decode_int(&v)?);
    }
    Ok(out)
}

fn parse_account(key: &[u8]) -> Result<(String, u32)> {
    let key = String::from_utf8(key.to_vec())?;
    let i = key
        .strip_prefix(ACCOUNT_PREFIX)
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("bad account key {key:?}"))?;
    Ok((key, i))
}

/// Writes the initial balances once (idempotently: only if account 0 is
/// absent), verifies them, and records one `Setup` op.
async fn setup(opts: &Options, recorder: &Recorder) -> Result<()> {
    let client = opts.client(0)?;
    let mut worker = recorder.worker(1);
    let op = worker.invoke(OpFn::Setup, Value::Balances(initial()));
    let request = proto::CommitRequest {
        snapshot: None,
        isolation: proto::Isolation::Serializable as i32,
        mutations: initial()
            .iter()
            .map(|(i, b)| proto::Mutation {
                key: account_key(*i).into_bytes(),
                value: b.to_string().into_bytes(),
                delete: false,
                lease: 0,
            })
            .collect(),
        compares: vec![proto::Compare {
            key: account_key(0).into_bytes(),
            target: Some(proto::compare::Target::Exists(false)),
        }],
        reads: Vec::new(),
        ranges: Vec::new(),
        server_retry: false,
    };
    let until = Instant::now() + FINAL_READ_DEADLINE;
    let mut last = String::new();
    while Instant::now() < until {
        match client.commit(request.clone()).await {
            Ok(_) => {}
            // An earlier attempt that timed out may have committed.
            Err(e) if e.is_compare_failed() => {}
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        match read_accounts(&client).await {
            Ok(b) if b == initial() => {
                op.ok(Value::Balances(b));
                return Ok(());
            }
            Ok(b) => {
                op.fail(Value::None, "setup: accounts exist with other balances");
                bail!("bank accounts already exist with other balances {b:?}: use a fresh cluster");
            }
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    op.fail(Value::None, format!("setup: {last}"));
    bail!("bank setup did not succeed within {FINAL_READ_DEADLINE:?}: {last}")
}

/// On every node: one snapshot of every account and ledger entry.
pub async fn final_read(opts: &Options, recorder: &Recorder, deadline: Duration) -> Result<()> {
    on_every_node(opts, deadline, |node| async move {
        let client = opts.node_client(node)?;
        let mut worker = recorder.worker(node as u64 + 1);
        let op = worker.invoke(
            OpFn::FinalRead,
            Value::BankState {
                balances: BTreeMap::new(),
                ledger: BTreeMap::new(),
            },
        );
        let result: Result<Value> = async {
            let tx = client.begin(Isolation::Serializable).await?;
            let pairs = tx.scan("bank/").await?;
            tx.rollback();
            let mut balances = BTreeMap::new();
            let mut ledger = BTreeMap::new();
            for (k, v) in pairs {
                if k.starts_with(ACCOUNT_PREFIX.as_bytes()) {
                    let (_, i) = parse_account(&k)?;
                    balances.insert(i, decode_int(&v)?);
                } else {
                    ledger.insert(
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            Ok(Value::BankState { balances, ledger })
        }
        .await;
        match result {
            Ok(v) => {
                op.ok(v);
                Ok(())
            }
            Err(e) => {
                op.fail(Value::None, format!("final read: {e:#}"));
                Err(e)
            }
        }
    })
    .await
}
