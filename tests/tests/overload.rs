//! Overload, on real processes: far more concurrent client requests than a
//! node admits (3,000 in flight against the default `max_requests_in_flight`
//! of 1,024), for 20 s, all aimed at the leader of a 3-node cluster.
//!
//! Checked: every request either is admitted and acknowledged, or is refused
//! with RESOURCE_EXHAUSTED naming the bound (and refusals do happen); the
//! leader's RSS stays under [`RSS_BOUND_MIB`]; it reports SYNCED throughout;
//! admitted requests finish with a p99 under a generous [`P99_BOUND`]
//! (reported, not a speed claim); afterwards every acknowledged write reads
//! back with its own value and no refused write is anywhere, on every node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tonic::transport::Channel;
use trireme_client::{KeyRange, ReadConsistency, ScanSpec};
use trireme_proto::v1 as pb;
use trireme_proto::v1::kv_client::KvClient;
use trireme_tests::Cluster;

/// Concurrent client requests, each task sending one after another.
const CLIENTS: usize = 3000;
/// HTTP/2 connections they share (each well under the server's stream limit).
const CONNECTIONS: usize = 30;
/// How long the load lasts.
const LOAD: Duration = Duration::from_secs(20);
/// The leader's resident memory must stay under this (its idle RSS is about
/// 40 MiB; an unbounded node reached 2 GiB under a similar burst).
const RSS_BOUND_MIB: u64 = 512;
/// Admitted requests' p99 must stay under this: a bound that only an
/// unbounded queue (or a hang) breaks, not a speed claim.
const P99_BOUND: Duration = Duration::from_secs(5);

/// What happened to one request.
enum Outcome {
    /// Acknowledged, after this long.
    Acked(Duration),
    /// Refused at admission, after this long, with this message.
    Refused(Duration, String),
}

fn rss_mib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS in /proc/PID/status")?
        .parse()?;
    Ok(kb / 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_refuses_at_once_and_keeps_its_promises() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    let all = [1, 2, 3];
    let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await?;
    let pid = cluster.nodes[(leader - 1) as usize]
        .pid()
        .context("leader pid")?;
    let addr = format!("http://{}", cluster.nodes[(leader - 1) as usize].addr);
    let idle_rss = rss_mib(pid)?;

    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(Channel::from_shared(addr.clone())?.connect().await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // key -> value of every acknowledged write; every refused key.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let refused_keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut kv = KvClient::new(channels[c % CONNECTIONS].clone());
        let (stop, acked, refused_keys) = (stop.clone(), acked.clone(), refused_keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("ov/{c:04}/{i:06}");
                let value = format!("{key}:{}", "x".repeat(200));
                let mut req = tonic::Request::new(pb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    if_version: None,
                    lease: 0,
                });
                req.set_timeout(Duration::from_secs(15));
                let sent = Instant::now();
                match kv.put(req).await {
                    Ok(_) => {
                        outcomes.push(Outcome::Acked(sent.elapsed()));
                        acked.lock().expect("lock").insert(key, value);
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        outcomes.push(Outcome::Refused(sent.elapsed(), s.message().to_string()));
                        refused_keys.lock().expect("lock").push(key);
                        // A refused client backs off, as the client library does.
                        tokio::time::sleep(Duration::from_millis(20 + (c as u64 % 30))).await;
                    }
                    Err(s) => bail!(
                        "admitted write {key} failed: {:?}: {}",
                        s.code(),
                        s.message()
                    ),
                }
                i += 1;
            }
            Ok(outcomes)
        }));
    }

    // While the load runs: the leader's RSS and state, twice a second.
    let mut max_rss = idle_rss;
    let mut states = Vec::new();
    while started.elapsed() < LOAD {
        max_rss = max_rss.max(rss_mib(pid)?);
        let s = cluster.status(leader).await?;
        states.push(s.state.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked_lat = Vec::new();
    let mut refused_lat = Vec::new();
    let mut messages = BTreeMap::<String, usize>::new();
    for t in tasks {
        for o in t.await?? {
            match o {
                Outcome::Acked(d) => acked_lat.push(d),
                Outcome::Refused(d, m) => {
                    refused_lat.push(d);
                    // The bound's name, e.g. "(max_requests_in_flight)".
                    let bound = m
                        .rsplit_once('(')
                        .and_then(|(_, b)| b.split_once(')'))
                        .map_or(m.clone(), |(b, _)| b.to_string());
                    *messages.entry(bound).or_default() += 1;
                }
            }
        }
    }
    max_rss = max_rss.max(rss_mib(pid)?);
    acked_lat.sort();
    refused_lat.sort();
    let p99 = percentile(&acked_lat, 0.99);
    println!(
        "overload: {} acked (p50 {:?}, p99 {:?}, max {:?}), {} refused (p99 {:?}) by {messages:?}; \
         leader RSS idle {idle_rss} MiB, max {max_rss} MiB; states {states:?}",
        acked_lat.len(),
        percentile(&acked_lat, 0.5),
        p99,
        acked_lat.last().copied().unwrap_or_default(),
        refused_lat.len(),
        percentile(&refused_lat, 0.99),
    );
    ensure!(!acked_lat.is_empty(), "no write was acknowledged");
    ensure!(
        !refused_lat.is_empty(),
        "no request was refused: the load did not reach the admission bound"
    );
    ensure!(
        messages
            .keys()
            .all(|b| b == "max_requests_in_flight" || b == "max_pending_write_sets"),
        "a refusal did not name its bound: {messages:?}"
    );
    ensure!(
        max_rss < RSS_BOUND_MIB,
        "leader RSS reached {max_rss} MiB (bound {RSS_BOUND_MIB})"
    );
    ensure!(
        states.iter().all(|s| s == "SYNCED"),
        "the leader left SYNCED under load: {states:?}"
    );
    ensure!(p99 < P99_BOUND, "admitted p99 {p99:?} over {P99_BOUND:?}");

    // Every acknowledged write is there with its own value, on every node,
    // and no refused write is anywhere.
    cluster
        .wait_converged(&all, Duration::from_secs(30))
        .await?;
    let acked = acked.lock().expect("lock").clone();
    let refused_keys = refused_keys.lock().expect("lock").clone();
    for id in all {
        let client = cluster.client_only(id)?;
        let mut found = BTreeMap::new();
        let mut start = b"ov/".to_vec();
        loop {
            let spec = ScanSpec {
                range: KeyRange::Range {
                    start: start.clone(),
                    end: b"ov0".to_vec(),
                },
                limit: 10_000,
                keys_only: false,
            };
            let (pairs, more, _) = client.scan(&spec, ReadConsistency::Local).await?;
            for p in &pairs {
                found.insert(
                    String::from_utf8(p.key.clone())?,
                    String::from_utf8(p.value.clone())?,
                );
            }
            match (more, pairs.last()) {
                (true, Some(last)) => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        for (k, v) in &acked {
            match found.get(k) {
                Some(got) if got == v => {}
                Some(got) => bail!("node {id}: acknowledged {k} reads {got:?}, wrote {v:?}"),
                None => bail!("node {id}: acknowledged write {k} is missing"),
            }
        }
        for k in &refused_keys {
            ensure!(
                !found.contains_key(k),
                "node {id}: refused write {k} was applied"
            );
        }
        ensure!(
            found.len() == acked.len(),
            "node {id}: {} keys under ov/, {} acknowledged",
            found.len(),
            acked.len()
        );
        let s = cluster.status(id).await?;
        ensure!(
            s.state == "SYNCED",
            "node {id} is {} after the load",
            s.state
        );
    }
    Ok(())
}
