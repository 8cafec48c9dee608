//! `bench`: concurrent workers doing random gets and puts for a while, with a
//! latency histogram and error counts. With `--txn N`, each operation is a
//! transaction that reads N random keys and writes them all back; the report
//! adds commits, aborts and the abort rate (a contended workload with few
//! keys measures certification under conflict).
//!
//! Each worker has its own [`Client`] (own connections), and worker `i`
//! starts at endpoint `i % n`, so the load spreads over the cluster and moves
//! on when a node fails. Latency is recorded for successful operations only;
//! failed ones are counted by error kind.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::time::Instant;
use trireme_client::{Client, ClientOptions, Error, Isolation, ReadConsistency, Result};

use super::output::json_line;
use super::{BenchArgs, GlobalArgs, Reply, EXIT_ABORTED, EXIT_OTHER, EXIT_UNAVAILABLE};

/// Largest latency the histogram tracks exactly, in microseconds (1 hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What one worker did.
struct WorkerStats {
    /// Latency of successful operations, in microseconds.
    latency_us: Histogram<u64>,
    /// Successful reads.
    reads: u64,
    /// Successful writes.
    writes: u64,
    /// Committed transactions (`--txn`).
    txns: u64,
    /// Failed operations by error kind.
    errors: BTreeMap<String, u64>,
}

impl WorkerStats {
    fn new() -> Result<Self> {
        Ok(WorkerStats {
            latency_us: histogram()?,
            reads: 0,
            writes: 0,
            txns: 0,
            errors: BTreeMap::new(),
        })
    }
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| Error::Other(format!("cannot create the latency histogram: {e}")))
}

/// Most keys `--zipf` takes (its table holds one f64 per key: 80 MB).
const MAX_ZIPF_KEYS: u64 = 10_000_000;

/// How keys are chosen.
enum Keys {
    /// Uniformly among this many.
    Uniform(u64),
    /// By Zipf's law: `cdf[k]` is the probability of a key at or below k.
    Zipf(Vec<f64>),
}

impl Keys {
    /// The key chooser of `keys` keys, Zipf with exponent `s` if given.
    fn new(keys: u64, zipf: Option<f64>) -> Result<Keys> {
        let Some(s) = zipf else {
            return Ok(Keys::Uniform(keys));
        };
        if keys > MAX_ZIPF_KEYS {
            return Err(Error::InvalidInput(format!(
                "--zipf takes at most {MAX_ZIPF_KEYS} keys (--keys is {keys})"
            )));
        }
        let mut cdf = Vec::with_capacity(keys as usize);
        let mut sum = 0.0;
        for k in 1..=keys {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Ok(Keys::Zipf(cdf))
    }

    /// One key's index.
    fn pick(&self, rng: &mut impl Rng) -> u64 {
        match self {
            Keys::Uniform(n) => rng.gen_range(0..*n),
            Keys::Zipf(cdf) => {
                let u: f64 = rng.gen();
                (cdf.partition_point(|c| *c < u) as u64).min(cdf.len() as u64 - 1)
            }
        }
    }

    /// `n` distinct keys' indexes (`n` at most the number of keys).
    fn pick_distinct(&self, rng: &mut impl Rng, n: usize) -> Vec<usize> {
        match self {
            Keys::Uniform(keys) => rand::seq::index::sample(rng, *keys as usize, n).into_vec(),
            Keys::Zipf(_) => {
                let mut out: Vec<usize> = Vec::with_capacity(n);
                while out.len() < n {
                    let k = self.pick(rng) as usize;
                    if !out.contains(&k) {
                        out.push(k);
                    }
                }
                out
            }
        }
    }
}

/// What a worker needs to know.
#[derive(Clone)]
struct Workload {
    /// How keys are chosen.
    keys: Arc<Keys>,
    /// Key prefix.
    prefix: String,
    /// Bytes per value.
    value_size: usize,
    /// Probability that an operation is a read.
    read_ratio: f64,
    /// Consistency of reads.
    consistency: ReadConsistency,
    /// Keys per transaction, when operations are transactions.
    txn: Option<u64>,
    /// Isolation of the transactions.
    isolation: Isolation,
    /// Read a transaction's keys one `get` at a time, not in one `get_many`.
    one_by_one: bool,
    /// When to stop starting operations.
    until: Instant,
    /// Successful operations so far, for the progress line.
    ok: Arc<AtomicU64>,
    /// Failed operations so far, for the progress line.
    failed: Arc<AtomicU64>,
}

/// Runs the benchmark and reports it.
pub async fn run(global: &GlobalArgs, args: &BenchArgs) -> Result<Reply> {
    if args.clients == 0 || args.keys == 0 {
        return Err(Error::InvalidInput(
            "bench needs at least one client and one key".into(),
        ));
    }
    if let Some(n) = args.txn {
        if n > args.keys {
            return Err(Error::InvalidInput(format!(
                "--txn {n} reads {n} distinct keys: --keys must be at least {n} (it is {})",
                args.keys
            )));
        }
    }
    // Idle watchers on prefixes the workload never writes, held open for
    // the whole run (they measure what watchers cost a write).
    let mut idle = Vec::with_capacity(args.idle_watchers);
    if args.idle_watchers > 0 {
        let client = Client::with_options(
            global.endpoints.clone(),
            ClientOptions {
                timeout: global.timeout,
                tls: global.tls()?,
                credentials: global.credentials()?,
                ..ClientOptions::default()
            },
        )?;
        for i in 0..args.idle_watchers {
            let mut w = Box::pin(client.watch(
                trireme_client::WatchTarget::Prefix(format!("idle-watch/{i}/").into_bytes()),
                trireme_client::WatchOptions::default(),
            ));
            // The first message (the start notice) says the watch is registered.
            match futures::StreamExt::next(&mut w).await {
                Some(Ok(_)) => idle.push(w),
                Some(Err(e)) => return Err(e),
                None => return Err(Error::Other("a watch ended at once".into())),
            }
        }
    }
    let keys = Arc::new(Keys::new(args.keys, args.zipf)?);
    let start = Instant::now();
    let workload = Workload {
        keys,
        prefix: args.prefix.clone(),
        value_size: args.value_size,
        read_ratio: args.read_ratio,
        consistency: args.consistency.into(),
        txn: args.txn,
        isolation: args.isolation.into(),
        one_by_one: args.txn_one_by_one,
        until: start + args.duration,
        ok: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
    };
    let mut handles = Vec::with_capacity(args.clients);
    let tls = global.tls()?;
    for i in 0..args.clients {
        let options = ClientOptions {
            timeout: global.timeout,
            tls: tls.clone(),
            start_index: i,
            credentials: global.credentials()?,
            ..ClientOptions::default()
        };
        let client = Client::with_options(global.endpoints.clone(), options)?;
        handles.push(tokio::spawn(worker(client, workload.clone())));
    }

    let progress = progress_bar(global.json);
    let ticker = tokio::spawn(tick(progress.clone(), workload.clone(), start));

    let mut total = WorkerStats::new()?;
    for handle in handles {
        let stats = handle
            .await
            .map_err(|e| Error::Other(format!("a bench worker failed: {e}")))??;
        total
            .latency_us
            .add(&stats.latency_us)
            .map_err(|e| Error::Other(format!("cannot merge latency histograms: {e}")))?;
        total.reads += stats.reads;
        total.writes += stats.writes;
        total.txns += stats.txns;
        for (kind, n) in stats.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    let elapsed = start.elapsed();
    drop(idle);
    ticker.abort();
    progress.finish_and_clear();
    Ok(render(&total, elapsed, args, global.json))
}

async fn worker(client: Client, w: Workload) -> Result<WorkerStats> {
    let mut stats = WorkerStats::new()?;
    let mut rng = StdRng::from_entropy();
    let value: Vec<u8> = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(w.value_size)
        .collect();
    while Instant::now() < w.until {
        let read = w.txn.is_none() && rng.gen_bool(w.read_ratio);
        let began = Instant::now();
        let result = match w.txn {
            Some(n) => {
                let keys = w.keys.pick_distinct(&mut rng, n as usize);
                read_modify_write(&client, &w, keys.into_iter(), &value).await
            }
            None => {
                let key = format!("{}{}", w.prefix, w.keys.pick(&mut rng));
                if read {
                    client.get(&key, w.consistency).await.map(|_| ())
                } else {
                    client.put(key, value.clone()).await.map(|_| ())
                }
            }
        };
        match result {
            Ok(()) => {
                let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.latency_us.saturating_record(us.max(1));
                if w.txn.is_some() {
                    stats.txns += 1;
                } else if read {
                    stats.reads += 1;
                } else {
                    stats.writes += 1;
                }
                w.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *stats.errors.entry(e.kind_name()).or_default() += 1;
                w.failed.fetch_add(1, Ordering::Relaxed);
                // Do not spin on a cluster that refuses everything at once.
                if matches!(e, Error::Unavailable(_)) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    Ok(stats)
}

/// One transaction: read the keys (in one `get_many` that also takes the
/// snapshot, or, the old way, a begin and one `get` per key), write each
/// back (its old value with one more byte cycled, or `value` when absent),
/// commit once.
async fn read_modify_write(
    client: &Client,
    w: &Workload,
    keys: impl Iterator<Item = usize>,
    value: &[u8],
) -> Result<()> {
    let keys: Vec<String> = keys.map(|k| format!("{}{}", w.prefix, k)).collect();
    // The old way begins first; the new takes the snapshot with the read.
    let tx = if w.one_by_one {
        client.begin(w.isolation).await?
    } else {
        client.begin_deferred(w.isolation)
    };
    let olds = if w.one_by_one {
        let mut olds = Vec::with_capacity(keys.len());
        for key in &keys {
            olds.push(tx.get(key).await?);
        }
        olds
    } else {
        tx.get_many(&keys).await?
    };
    for (key, old) in keys.into_iter().zip(olds) {
        let next = match old {
            Some(mut old) if !old.is_empty() => {
                old.rotate_left(1);
                old
            }
            _ => value.to_vec(),
        };
        tx.put(key, next)?;
    }
    tx.commit().await.map(|_| ())
}

/// A live `ops/s` line on stderr, hidden for JSON output or when stderr is
/// not a terminal.
fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

async fn tick(bar: ProgressBar, w: Workload, start: Instant) {
    let mut last = (start, 0u64);
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        interval.tick().await;
        let now = Instant::now();
        let ok = w.ok.load(Ordering::Relaxed);
        let rate = (ok - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, ok);
        bar.set_message(format!(
            "{ok} ops  {rate:.0} ops/s  {} errors",
            w.failed.load(Ordering::Relaxed)
        ));
    }
}

fn render(total: &WorkerStats, elapsed: Duration, args: &BenchArgs, json: bool) -> Reply {
    let ok = total.reads + total.writes + total.txns;
    let failed: u64 = total.errors.values().sum();
    let aborts: u64 = total
        .errors
        .iter()
        .filter(|(kind, _)| kind.starts_with("aborted:"))
        .map(|(_, n)| n)
        .sum();
    let abort_rate = aborts as f64 / (total.txns + aborts).max(1) as f64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = ok as f64 / secs;
    let h = &total.latency_us;
    let pct = |q: f64| if ok == 0 { 0 } else { h.value_at_quantile(q) };
    let (p50, p99, p999, max) = (pct(0.50), pct(0.99), pct(0.999), h.max());
    let out = if json {
        json_line(&json!({
            "clients": args.clients,
            "duration_s": secs,
            "ops": ok + failed,
            "ok": ok,
            "reads": total.reads,
            "writes": total.writes,
            "ops_per_sec": rate,
            "latency_us": {
                "p50": p50, "p99": p99, "p999": p999, "max": max, "mean": h.mean(),
            },
            "errors": total.errors,
            "errors_total": failed,
            "keys": args.keys,
            "zipf": args.zipf,
            "txn_keys": args.txn,
            "txn_reads": args.txn.map(|_| if args.txn_one_by_one { "one_by_one" } else { "get_many" }),
            "isolation": args.txn.map(|_| format!("{:?}", args.isolation).to_lowercase()),
            "commits": total.txns,
            "aborts": aborts,
            "abort_rate": abort_rate,
        }))
    } else {
        let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
        let errors = if total.errors.is_empty() {
            "none".to_string()
        } else {
            total
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let counts = match args.txn {
            Some(n) => format!(
                "transactions {} keys each, {:?}: {} committed, {aborts} aborted (abort rate {:.1}%)\n",
                n,
                args.isolation,
                total.txns,
                abort_rate * 100.0
            )
            .to_lowercase(),
            None => format!("reads        {}\nwrites       {}\n", total.reads, total.writes),
        };
        format!(
            "ops          {} ({ok} ok, {failed} failed)\n\
             duration     {secs:.2}s\n\
             throughput   {rate:.1} ops/s\n\
             {counts}\
             latency      p50 {}  p99 {}  p999 {}  max {}\n\
             errors       {errors}\n",
            ok + failed,
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max),
        )
        .into_bytes()
    };
    Reply {
        out,
        note: None,
        code: exit_code_for(ok, &total.errors),
    }
}

/// 0 if anything succeeded; otherwise the code of the most frequent error.
fn exit_code_for(ok: u64, errors: &BTreeMap<String, u64>) -> u8 {
    if ok > 0 {
        return 0;
    }
    match errors.iter().max_by_key(|(_, n)| **n) {
        None => 0,
        Some((kind, _)) if kind == "unavailable" => EXIT_UNAVAILABLE,
        Some((kind, _)) if kind.starts_with("aborted:") => EXIT_ABORTED,
        Some(_) => EXIT_OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_keys_follow_the_law_and_uniform_keys_do_not() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(7);
        let zipf = Keys::new(1000, Some(0.99))?;
        let mut counts = vec![0u64; 1000];
        for _ in 0..200_000 {
            counts[zipf.pick(&mut rng) as usize] += 1;
        }
        // P(k) ~ 1/(k+1)^0.99 / H: key 0 about 13% of picks, key 1 half of
        // key 0, key 9 a tenth of it.
        let share = |k: usize| counts[k] as f64 / 200_000.0;
        assert!((0.12..0.145).contains(&share(0)), "key 0: {}", share(0));
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((1.8..2.2).contains(&ratio), "key 0 / key 1: {ratio}");
        let ratio = counts[0] as f64 / counts[9] as f64;
        assert!((8.0..12.5).contains(&ratio), "key 0 / key 9: {ratio}");
        assert!(counts[999] < counts[0] / 100);
        let uniform = Keys::new(1000, None)?;
        let mut counts = vec![0u64; 1000];
        for _ in 0..200_000 {
            counts[uniform.pick(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (100..320).contains(c)),
            "uniform spread"
        );
        // Distinct picks are distinct, also under heavy skew.
        let hot = Keys::new(4, Some(5.0))?;
        let mut four = hot.pick_distinct(&mut rng, 4);
        four.sort_unstable();
        assert_eq!(four, [0, 1, 2, 3]);
        let e = Keys::new(MAX_ZIPF_KEYS + 1, Some(1.0))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("at most 10000000 keys")));
        Ok(())
    }

    #[test]
    fn report_shows_percentiles_and_errors() -> Result<()> {
        let mut stats = WorkerStats::new()?;
        for us in 1..=1000 {
            stats.latency_us.saturating_record(us);
        }
        stats.reads = 600;
        stats.writes = 400;
        stats.errors.insert("unavailable".into(), 3);
        let args = BenchArgs {
            clients: 2,
            keys: 10,
            value_size: 4,
            read_ratio: 0.6,
            duration: Duration::from_secs(1),
            consistency: super::super::ConsistencyArg::Linearizable,
            prefix: "b/".into(),
            txn: None,
            txn_one_by_one: false,
            isolation: super::super::IsolationArg::Serializable,
            idle_watchers: 0,
            zipf: None,
        };
        let reply = render(&stats, Duration::from_secs(2), &args, true);
        let v: serde_json::Value =
            serde_json::from_slice(&reply.out).map_err(|e| Error::Other(e.to_string()))?;
        assert_eq!(v["ok"], 1000);
        assert_eq!(v["ops"], 1003);
        assert_eq!(v["ops_per_sec"], 500.0);
        assert_eq!(v["errors"]["unavailable"], 3);
        let p50 = v["latency_us"]["p50"].as_u64().unwrap_or(0);
        assert!((495..=505).contains(&p50), "{p50}");
        assert_eq!(reply.code, 0);
        let text =
            String::from_utf8_lossy(&render(&stats, Duration::from_secs(2), &args, false).out)
                .into_owned();
        assert!(
            text.contains("500.0 ops/s") && text.contains("unavailable=3"),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn all_failures_exit_with_the_main_error() {
        let errors = BTreeMap::from([("unavailable".to_string(), 5), ("other".to_string(), 1)]);
        assert_eq!(exit_code_for(0, &errors), EXIT_UNAVAILABLE);
        assert_eq!(exit_code_for(1, &errors), 0);
    }
}
