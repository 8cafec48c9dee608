//! The one cluster interface ([`trireme_tests::harness::Harness`]) driven the
//! same way on the in-process and the loopback-process clusters: elect,
//! write, stop or kill a node, write without it, start it again and wait for
//! every node to converge on the same data; the faults a harness cannot
//! inject are refused with an error naming the harness. (The namespace
//! cluster implements the same trait; the chaos tier drives it.)

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use trireme_client::{Client, ReadConsistency};
use trireme_tests::harness::Harness;
use trireme_tests::inproc::InProcCluster;
use trireme_tests::Cluster;

const READY: Duration = Duration::from_secs(30);

/// Writes `key` through `client` and checks that `reader` reads it back.
async fn write_and_read(client: &Client, reader: &Client, key: &str) -> Result<()> {
    client.put(key, format!("v-{key}")).await?;
    let got = reader
        .get(key, ReadConsistency::Linearizable)
        .await?
        .with_context(|| format!("{key} missing after its write"))?;
    ensure!(
        got.value == format!("v-{key}").into_bytes(),
        "{key}: {got:?}"
    );
    Ok(())
}

/// One scenario over any harness: `take_down` stops (or kills) a follower,
/// the others keep writing, it comes back and catches up.
async fn survive_a_follower_going_down<H: Harness>(
    h: &mut H,
    client: impl Fn(&H, u64) -> Result<Client>,
    kill: bool,
) -> Result<()> {
    let ids = h.ids();
    ensure!(ids == [1, 2, 3], "ids {ids:?}");
    let leader = h.wait_leader(&ids, READY).await?;
    let follower = *ids.iter().find(|id| **id != leader).expect("3 nodes");
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != follower).collect();
    write_and_read(&client(h, leader)?, &client(h, follower)?, "before").await?;
    let before = h.wait_converged(&ids, READY).await?;
    ensure!(before.keys == 1, "one key before: {before:?}");

    if kill {
        h.kill(follower).await?;
    } else {
        h.stop(follower).await?;
    }
    ensure!(
        h.leader_seen_by(follower).await.is_err(),
        "node {follower} still answers after going down"
    );
    write_and_read(&client(h, others[0])?, &client(h, others[1])?, "during").await?;
    let during = h.wait_converged(&others, READY).await?;
    ensure!(
        during.seqno > before.seqno && during.keys == 2,
        "{during:?}"
    );

    h.start(follower).await?;
    h.wait_leader(&ids, READY).await?;
    let after = h.wait_converged(&ids, READY).await?;
    ensure!(
        after.seqno >= during.seqno && after.keys == 2,
        "after: {after:?}, during: {during:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_cluster_stops_and_restarts_a_node() -> Result<()> {
    let mut cluster = InProcCluster::start(3, |_| {}).await?;
    survive_a_follower_going_down(&mut cluster, |c, id| c.client(id), false).await?;
    for (fault, err) in [
        ("kill", cluster.kill(1).await.err()),
        ("pause", cluster.pause(1).err()),
        ("partition", cluster.partition(&[(1, 2)]).err()),
    ] {
        let err = err.with_context(|| format!("{fault} should be refused"))?;
        ensure!(err.to_string().contains("in-process"), "{fault}: {err}");
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_cluster_kills_pauses_and_restarts_a_node() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    survive_a_follower_going_down(&mut cluster, |c, id| c.client_only(id), true).await?;
    // A paused node answers nothing, then catches up once resumed.
    let leader = Harness::wait_leader(&cluster, &[1, 2, 3], READY).await?;
    let frozen = if leader == 3 { 2 } else { 3 };
    cluster.pause(frozen)?;
    let status = tokio::time::timeout(Duration::from_secs(2), cluster.status(frozen)).await;
    ensure!(
        !matches!(status, Ok(Ok(_))),
        "paused node {frozen} answered: {status:?}"
    );
    cluster.client_only(leader)?.put("paused", "x").await?;
    cluster.resume(frozen)?;
    let sum = Harness::wait_converged(&cluster, &[1, 2, 3], READY).await?;
    ensure!(sum.keys == 3, "{sum:?}");
    Harness::stop(&mut cluster, frozen).await?;
    ensure!(!cluster.node(frozen).is_running(), "SIGTERM stopped it");
    let err = cluster
        .partition(&[(1, 2)])
        .expect_err("loopback cannot cut links");
    ensure!(err.to_string().contains("loopback"), "{err}");
    Ok(())
}
