//! A rolling restart clients do not notice, on the real binaries: 3 nodes,
//! 4 writers (the client library, every endpoint known) writing unique keys
//! without pause; each node in turn gets SIGTERM by pid, must exit 0, is
//! started again with the same command line and must report SYNCED before the
//! next one goes; two rounds. Each round starts with the leader of the moment
//! and then takes a follower, so both a leader's drain (hand leadership over,
//! finish what is in flight) and a follower's are exercised.
//!
//! Required: zero failed requests (no UNAVAILABLE, no "outcome unknown"),
//! every acknowledged write present with its value on every node at the end,
//! and every node on the same seqno, checksum and verdict chain. The test
//! prints what it measured (drain and restart times, the slowest write).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use trireme_client::{Client, KeyRange, ReadConsistency, ScanSpec};
use trireme_tests::harness::Harness;
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(30);
/// From SIGTERM to exit: the drain default (10 s) plus start-up margin.
const EXIT_WITHIN: Duration = Duration::from_secs(25);
const WRITERS: usize = 4;
/// Every node is restarted this many times.
const ROUNDS: usize = 2;
/// Writes acknowledged after a node is back before the next one stops, so
/// every restart happens under load.
const WRITES_BETWEEN: u64 = 100;

/// What the writers saw.
#[derive(Default)]
struct Outcomes {
    /// Acknowledged writes: key -> value.
    acked: Mutex<BTreeMap<String, String>>,
    /// Failed requests, with their errors.
    failed: Mutex<Vec<String>>,
    /// Slowest acknowledged write, in microseconds.
    slowest_us: AtomicU64,
    count: AtomicU64,
}

async fn writer(w: usize, client: Client, stop: Arc<AtomicBool>, out: Arc<Outcomes>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("roll/w{w}/{i:08}");
        let value = format!("value-{w}-{i}");
        let t = Instant::now();
        match client.put(key.clone(), value.clone()).await {
            Ok(_) => {
                out.slowest_us
                    .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                out.acked.lock().expect("lock").insert(key, value);
                out.count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => out
                .failed
                .lock()
                .expect("lock")
                .push(format!("{key}: {e} ({})", e.kind_name())),
        }
        i += 1;
    }
}

/// Waits until node `id` answers SYNCED and follows a leader.
async fn wait_synced(cluster: &Cluster, id: u64) -> Result<()> {
    wait_for(
        &format!("node {id} SYNCED with a leader"),
        READY,
        || async {
            let s = cluster.status(id).await?;
            Ok((s.state == "SYNCED" && s.leader_id != 0).then_some(()))
        },
    )
    .await
}

/// Waits until the writers have had `more` further writes acknowledged.
async fn wait_progress(out: &Outcomes, more: u64) -> Result<()> {
    let target = out.count.load(Ordering::Relaxed) + more;
    wait_for("writes to go on", READY, || async {
        Ok((out.count.load(Ordering::Relaxed) >= target).then_some(()))
    })
    .await
}

/// Every live pair under `prefix` on node `id`, read locally, paging.
async fn all_pairs(cluster: &Cluster, id: u64, prefix: &str) -> Result<BTreeMap<String, String>> {
    let client = cluster.client_only(id)?;
    let mut pairs = BTreeMap::new();
    let mut start = prefix.as_bytes().to_vec();
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    loop {
        let spec = ScanSpec {
            range: KeyRange::Range {
                start: start.clone(),
                end: end.clone(),
            },
            limit: 0,
            keys_only: false,
        };
        let (page, more, _) = client.scan(&spec, ReadConsistency::Local).await?;
        for p in &page {
            pairs.insert(
                String::from_utf8(p.key.clone())?,
                String::from_utf8(p.value.clone())?,
            );
        }
        if !more {
            return Ok(pairs);
        }
        let last = page.last().ok_or_else(|| anyhow!("empty page with more"))?;
        start = last.key.clone();
        start.push(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request_and_loses_no_write() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let leader = cluster.wait_leader(&[1, 2, 3], READY).await?;
    for id in 1..=3 {
        wait_synced(&cluster, id).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Outcomes::default());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // Every writer knows every endpoint; they start on different nodes.
        let client = Client::pinned(cluster.endpoints(), w % 3)?;
        tasks.push(tokio::spawn(writer(w, client, stop.clone(), out.clone())));
    }
    wait_progress(&out, WRITES_BETWEEN).await?;

    // Each round restarts every node once: the leader first, then a
    // follower (a leader hands over to some voter, so the order is decided
    // as it goes), then the last one, whatever it is by then.
    let mut leaders_restarted = 0;
    let mut followers_restarted = 0;
    let mut report = Vec::new();
    let run = async {
        for step in 0..3 * ROUNDS {
            let done_this_round: Vec<u64> = report
                .iter()
                .skip(step / 3 * 3)
                .map(|(id, _)| *id)
                .collect();
            let mut left = Vec::new();
            for id in (1..=3u64).filter(|id| !done_this_round.contains(id)) {
                left.push((id, cluster.status(id).await?.role == "leader"));
            }
            let want_leader = step % 3 == 0;
            let (id, was_leader) = left
                .iter()
                .find(|(_, leads)| *leads == want_leader)
                .or(left.first())
                .copied()
                .ok_or_else(|| anyhow!("no node left to restart"))?;
            if step == 0 {
                ensure!(id == leader && was_leader, "the first node restarted leads");
            }
            leaders_restarted += u32::from(was_leader);
            followers_restarted += u32::from(!was_leader);
            let t = Instant::now();
            let node = cluster.node(id);
            let status = tokio::task::block_in_place(|| node.terminate(EXIT_WITHIN))?;
            let drained = t.elapsed();
            ensure!(
                status.success(),
                "node {id} exited with {status} after SIGTERM; a drained node exits 0"
            );
            Harness::start(&mut cluster, id).await?;
            wait_synced(&cluster, id).await?;
            report.push((
                id,
                format!(
                    "node {id} ({}): exited 0 {drained:?} after SIGTERM, SYNCED again {:?} after it",
                    if was_leader { "leader" } else { "follower" },
                    t.elapsed()
                ),
            ));
            wait_progress(&out, WRITES_BETWEEN).await?;
        }
        Ok(())
    };
    let ran: Result<()> = run.await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    ran.with_context(|| cluster.logs())?;
    let failed = out.failed.lock().expect("lock").clone();
    let acked = out.acked.lock().expect("lock").clone();
    let report: Vec<String> = report.into_iter().map(|(_, r)| r).collect();
    println!(
        "{} writes acknowledged, {} failed, slowest {} ms; {}",
        acked.len(),
        failed.len(),
        out.slowest_us.load(Ordering::Relaxed) / 1000,
        report.join("; ")
    );
    ensure!(
        leaders_restarted >= ROUNDS as u32 && followers_restarted >= ROUNDS as u32,
        "each round restarts the leader and a follower: {report:?}"
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} requests failed during the rolling restart: {:#?}\n{}",
            failed.len(),
            failed.len() + acked.len(),
            &failed[..failed.len().min(20)],
            cluster.logs()
        );
    }

    cluster.wait_converged(&[1, 2, 3], READY).await?;
    for id in 1..=3 {
        let pairs = all_pairs(&cluster, id, "roll/").await?;
        for (key, value) in &acked {
            match pairs.get(key) {
                Some(v) if v == value => {}
                other => bail!("node {id}: acknowledged {key}={value} reads as {other:?}"),
            }
        }
        ensure!(
            pairs.len() >= acked.len(),
            "node {id} holds {} keys, fewer than the {} acknowledged",
            pairs.len(),
            acked.len()
        );
    }
    Ok(())
}
