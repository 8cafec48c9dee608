//! Flow control and stalled nodes, on real processes: the failpoints hook
//! slows one follower's apply (`apply-before-write=sleep(MS)`), the others
//! take a write load.
//!
//! - A slow voter makes the leader slow its writers (a quota, not a stop):
//!   `flow_control_paused_ms` grows on the leader, and the slow node reports
//!   JOINED (a voter lagging past `synced_lag_entries`) while it lags.
//! - A voter whose apply stops is reported `stalled` in `members`, no longer
//!   holds the writers back, and with eviction on is removed from the voters.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use trireme_client::Client;
use trireme_tests::netns::{self, ClusterOptions, NetCluster};
use trireme_tests::wait_for;

const CONFIG: &str = "\
fc_limit = 300
synced_lag_entries = 50
ping_interval_ms = 100
down_after_ms = 1000
stall_after_ms = 2000
evict_after_ms = 4000
";

/// Writers that put until `stop`, counting acknowledged writes.
fn load(
    client: Client,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..16)
        .map(|w| {
            let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if client.put(format!("fc/{w}/{}", i % 500), "v").await.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_voter_slows_writers_and_a_stalled_one_is_evicted() -> Result<()> {
    let _serial = netns::serial();
    let cluster = NetCluster::start(ClusterOptions {
        config_toml: Some(CONFIG.into()),
        ..ClusterOptions::default()
    })
    .await?;
    let all = cluster.ids();
    let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await?;
    let slow = *all.iter().find(|i| **i != leader).expect("a follower");
    cluster.restart_with_env(slow, &[("FAILPOINTS", "apply-before-write=sleep(2000)")])?;
    wait_for(
        "the slow node to rejoin",
        Duration::from_secs(30),
        || async {
            let s = cluster.status(leader).await?;
            Ok(s.members.iter().any(|m| m.id == slow && m.up).then_some(()))
        },
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers = load(cluster.client(leader)?, stop.clone(), acked.clone());

    // The slow voter lags, and the leader slows its writers.
    let paused = wait_for(
        "the leader to slow writers for the lagging voter",
        Duration::from_secs(30),
        || async {
            let s = cluster.status(leader).await?;
            Ok((s.flow_control_paused_ms > 0).then_some(s.flow_control_paused_ms))
        },
    )
    .await?;
    wait_for(
        "the slow node to report JOINED",
        Duration::from_secs(30),
        || async {
            let s = cluster.status(slow).await?;
            Ok((s.state == "JOINED").then_some(()))
        },
    )
    .await?;
    // Slowed, not stopped: writes are still acknowledged.
    let before = acked.load(Ordering::Relaxed);
    wait_for(
        "writes to go on under flow control",
        Duration::from_secs(10),
        || async { Ok((acked.load(Ordering::Relaxed) > before + 20).then_some(())) },
    )
    .await?;
    eprintln!(
        "flow control paused writers {paused} ms; {} writes acknowledged",
        acked.load(Ordering::Relaxed)
    );

    // Now its apply stops altogether, some time after it restarts (a node
    // replays its committed log before it serves, so a stall from the start
    // would look like a node down): reported stalled, no longer waited for.
    cluster.restart_with_env(
        slow,
        &[("FAILPOINTS", "apply-before-write=100*off->sleep(600000)")],
    )?;
    wait_for(
        "the leader to report the node stalled",
        Duration::from_secs(30),
        || async {
            let s = cluster.status(leader).await?;
            Ok(s.members
                .iter()
                .any(|m| m.id == slow && m.up && m.stalled)
                .then_some(()))
        },
    )
    .await?;
    let paused_at_stall = cluster.status(leader).await?.flow_control_paused_ms;
    let acked_at_stall = acked.load(Ordering::Relaxed);
    wait_for(
        "the stalled node to be evicted",
        Duration::from_secs(30),
        || async {
            let s = cluster.status(leader).await?;
            let voters: BTreeSet<u64> = s
                .members
                .iter()
                .filter(|m| m.role == "voter")
                .map(|m| m.id)
                .collect();
            Ok((!voters.contains(&slow) && voters.len() == 2).then_some(()))
        },
    )
    .await?;
    let s = cluster.status(leader).await?;
    anyhow::ensure!(s.evictions >= 1, "the leader reports no eviction: {s:?}");
    let acked_after = acked.load(Ordering::Relaxed);
    anyhow::ensure!(
        acked_after > acked_at_stall + 20,
        "writes stopped while the node was stalled ({acked_at_stall} -> {acked_after})"
    );
    // Flow control stopped counting the stalled node: at most a few more
    // delays (those in flight when it was declared stalled).
    anyhow::ensure!(
        s.flow_control_paused_ms <= paused_at_stall + 200,
        "writers were still slowed for a stalled node: paused {paused_at_stall} -> {} ms",
        s.flow_control_paused_ms
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    Ok(())
}
