//! `compare`: one closed-loop load driver with two backends, Trireme (the
//! `trireme-client` library) and etcd (the `etcd-client` crate), so that a
//! side-by-side run differs only in the system under test.
//!
//! One invocation measures one cell: `--clients` workers, each with its own
//! connection to endpoint `i % n`, put (and, with `--read-ratio`, get) random
//! keys out of `--keys`, values of `--value-size` bytes, for `--warmup` and
//! then `--duration`. Only operations that start and finish inside the
//! measured window count. With `--pids`, the servers' CPU time over the same
//! window is read from `/proc/PID/stat`. Prints one JSON line.
//!
//! `scripts/compare.sh` builds it with `--features etcd` and runs the matrix
//! against a local 3-node etcd and a local 3-node Trireme.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::time::Instant;

/// Largest latency the histogram tracks, in microseconds (10 minutes).
const MAX_LATENCY_US: u64 = 600_000_000;

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    /// Trireme, through `trireme-client`.
    Trireme,
    /// etcd v3, through `etcd-client` (needs the `etcd` feature).
    Etcd,
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Reads {
    /// Linearizable: Trireme's read index, etcd's default quorum read.
    Linearizable,
    /// From the node asked, possibly stale: Trireme LOCAL, etcd serializable.
    Local,
}

/// One cell of the side-by-side comparison.
#[derive(Parser, Debug)]
#[command(name = "compare", about)]
struct Args {
    /// Which system the endpoints belong to.
    #[arg(long, value_enum)]
    system: System,
    /// Comma-separated client endpoints (HOST:PORT).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Number of distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of operations that are reads (0: write-only).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Consistency of reads.
    #[arg(long, value_enum, default_value_t = Reads::Linearizable)]
    reads: Reads,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Trireme only: each operation is `Client::put_many` of this many pairs
    /// (all in flight at once on the worker's connection); its latency is
    /// the whole batch's, and each pair counts as one operation.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Comma-separated pids of the server processes, for their CPU time.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// One worker's connection, to either system.
enum Backend {
    /// A Trireme client starting at one endpoint.
    Trireme(trireme_client::Client),
    /// An etcd KV client connected to one endpoint (boxed: it is large, and
    /// there is one per worker).
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

impl Backend {
    /// Connects worker `i` to endpoint `i % n`.
    async fn connect(system: System, endpoints: &[String], i: usize) -> Result<Backend> {
        match system {
            System::Trireme => {
                let options = trireme_client::ClientOptions {
                    start_index: i,
                    ..trireme_client::ClientOptions::default()
                };
                Ok(Backend::Trireme(trireme_client::Client::with_options(
                    endpoints.to_vec(),
                    options,
                )?))
            }
            #[cfg(feature = "etcd")]
            System::Etcd => {
                let endpoint = &endpoints[i % endpoints.len()];
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("http://{endpoint}")
                };
                let client = etcd_client::Client::connect([url], None)
                    .await
                    .with_context(|| format!("cannot connect to etcd at {endpoint}"))?;
                Ok(Backend::Etcd(Box::new(client.kv_client())))
            }
            #[cfg(not(feature = "etcd"))]
            System::Etcd => bail!("this build has no etcd backend: build with --features etcd"),
        }
    }

    /// Writes `value` under `key` and waits for the acknowledgement.
    async fn put(&mut self, key: String, value: &[u8]) -> Result<()> {
        match self {
            Backend::Trireme(c) => c.put(key, value.to_vec()).await.map(drop)?,
            #[cfg(feature = "etcd")]
            Backend::Etcd(c) => c.put(key, value.to_vec(), None).await.map(drop)?,
        }
        Ok(())
    }

    /// Writes `n` random keys at once; returns how many were acknowledged.
    async fn put_many(
        &mut self,
        rng: &mut StdRng,
        keys: u64,
        n: usize,
        value: &[u8],
    ) -> Result<u64> {
        match self {
            Backend::Trireme(c) => {
                let pairs: Vec<(String, Vec<u8>)> = (0..n)
                    .map(|_| (format!("k/{:08}", rng.gen_range(0..keys)), value.to_vec()))
                    .collect();
                let results = c.put_many(pairs, n).await;
                Ok(results.iter().filter(|r| r.is_ok()).count() as u64)
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(_) => bail!("--batch is for Trireme's put_many only"),
        }
    }

    /// Reads `key`.
    async fn get(&mut self, key: String, reads: Reads) -> Result<()> {
        match self {
            Backend::Trireme(c) => {
                let consistency = match reads {
                    Reads::Linearizable => trireme_client::ReadConsistency::Linearizable,
                    Reads::Local => trireme_client::ReadConsistency::Local,
                };
                c.get(key, consistency).await.map(drop)?
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(c) => {
                let options = match reads {
                    Reads::Linearizable => None,
                    Reads::Local => Some(etcd_client::GetOptions::new().with_serializable()),
                };
                c.get(key, options).await.map(drop)?
            }
        }
        Ok(())
    }
}

/// What one worker measured inside the window.
struct Measured {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: u64,
}

/// Runs operations until `end`; counts those that start at or after `start`
/// and finish by `end`.
async fn worker(
    mut backend: Backend,
    args: Workload,
    start: Instant,
    end: Instant,
) -> Result<Measured> {
    let mut rng = StdRng::from_entropy();
    let value = vec![b'v'; args.value_size];
    let mut m = Measured {
        latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
        ok: 0,
        errors: 0,
    };
    loop {
        let began = Instant::now();
        if began >= end {
            return Ok(m);
        }
        let key = format!("k/{:08}", rng.gen_range(0..args.keys));
        let result = if args.batch > 1 {
            backend
                .put_many(&mut rng, args.keys, args.batch, &value)
                .await
        } else if rng.gen_bool(args.read_ratio) {
            backend.get(key, args.reads).await.map(|()| 1)
        } else {
            backend.put(key, &value).await.map(|()| 1)
        };
        let done = Instant::now();
        if began < start || done > end {
            continue;
        }
        match result {
            Ok(acknowledged) => {
                let us = u64::try_from((done - began).as_micros()).unwrap_or(u64::MAX);
                m.latency_us.saturating_record(us.max(1));
                m.ok += acknowledged;
            }
            Err(_) => m.errors += 1,
        }
    }
}

/// The part of [`Args`] a worker needs.
#[derive(Clone, Copy)]
struct Workload {
    keys: u64,
    value_size: usize,
    read_ratio: f64,
    reads: Reads,
    batch: usize,
}

/// User plus system CPU ticks of each pid, summed.
fn cpu_ticks(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        total += stat_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    }
    Ok(total)
}

/// utime + stime of one `/proc/PID/stat` line (fields 14 and 15 of proc(5)).
fn stat_ticks(stat: &str) -> Result<u64> {
    // The command name, in parentheses, may hold spaces and ')'; the fields
    // after its last ')' do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' after the command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3), so utime (14) is fields[11].
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("fewer fields than proc(5) describes");
    };
    Ok(utime.parse::<u64>().context("utime")? + stime.parse::<u64>().context("stime")?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.keys == 0 || !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("need at least one client and one key, and a read ratio between 0 and 1");
    }
    if args.batch > 1 && (args.system != System::Trireme || args.read_ratio > 0.0) {
        bail!("--batch is for write-only runs against Trireme (Client::put_many)");
    }
    let mut backends = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let mut b = Backend::connect(args.system, &args.endpoints, i).await?;
        // Connect now, not inside the measured window.
        b.get("k/ready".into(), Reads::Local)
            .await
            .with_context(|| format!("client {i} cannot read from its endpoint"))?;
        backends.push(b);
    }
    let workload = Workload {
        keys: args.keys,
        value_size: args.value_size,
        read_ratio: args.read_ratio,
        reads: args.reads,
        batch: args.batch,
    };
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let handles: Vec<_> = backends
        .into_iter()
        .map(|b| tokio::spawn(worker(b, workload, start, end)))
        .collect();
    tokio::time::sleep_until(start).await;
    let cpu_before = cpu_ticks(&args.pids)?;
    let wall = std::time::Instant::now();
    tokio::time::sleep_until(end).await;
    let cpu_after = cpu_ticks(&args.pids)?;
    let secs = wall.elapsed().as_secs_f64();

    let mut latency_us = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let (mut ok, mut errors) = (0, 0);
    for h in handles {
        let m = h.await.context("a worker panicked")??;
        latency_us.add(&m.latency_us)?;
        ok += m.ok;
        errors += m.errors;
    }
    let cpu_s = cpu_after.saturating_sub(cpu_before) as f64 / args.clk_tck.max(1) as f64;
    let pct = |q: f64| {
        if ok == 0 {
            0
        } else {
            latency_us.value_at_quantile(q)
        }
    };
    let line = json!({
        "system": format!("{:?}", args.system).to_lowercase(),
        "clients": args.clients,
        "read_ratio": args.read_ratio,
        "reads": format!("{:?}", args.reads).to_lowercase(),
        "batch": args.batch,
        "ok": ok,
        "errors": errors,
        "ops_per_sec": ok as f64 / secs,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "cpu_cores": if args.pids.is_empty() { None } else { Some(cpu_s / secs) },
        "cpu_us_per_op": if args.pids.is_empty() || ok == 0 { None } else { Some(cpu_s * 1e6 / ok as f64) },
    });
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_adds_utime_and_stime_after_an_odd_command_name() {
        // A command name with a space and a ')' must not shift the fields.
        let line =
            "4242 (odd) name) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_ticks(line).expect("a valid line"), 1234 + 567);
        let err = stat_ticks("4242 (short) S 1 2").expect_err("too few fields");
        assert!(err.to_string().contains("fewer fields"), "{err}");
    }
}
