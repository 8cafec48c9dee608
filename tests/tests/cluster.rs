//! Multi-process tests of the real `trireme-server` binary: 3 nodes on
//! 127.0.0.1, replication, conditional writes, leader failure, full restart.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use trireme_client::ReadConsistency;
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_each_node_is_readable_on_every_node() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    for id in 1..=3u64 {
        let seqno = cluster
            .client_only(id)?
            .put(format!("from-{id}"), format!("value-{id}"))
            .await
            .with_context(|| cluster.logs())?;
        ensure!(seqno > 0, "a commit has a seqno");
    }
    for reader in 1..=3u64 {
        let client = cluster.client_only(reader)?;
        for writer in 1..=3u64 {
            // Linearizable by default: every acknowledged write is visible at once.
            let got = client
                .get(format!("from-{writer}"), ReadConsistency::Linearizable)
                .await?;
            let got = got
                .with_context(|| format!("node {reader} misses the write made on node {writer}"))?;
            ensure!(got.value == format!("value-{writer}").into_bytes());
        }
    }
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    Ok(())
}

/// `get_many` answers every key in the order asked (missing keys, repeats),
/// at one seqno, the same on every node, and sees a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_reads_keys_in_order_at_one_seqno_on_every_node() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let c1 = cluster.client_only(1)?;
    let a = c1.put("gm/a", "1").await?;
    let b = c1.put("gm/b", "2").await?;
    let c = c1.put("gm/c", "3").await?;
    c1.delete("gm/b", None).await?;
    let keys = ["gm/c", "gm/missing", "gm/a", "gm/b", "gm/a"];
    for id in 1..=3u64 {
        let client = cluster.client_only(id)?;
        let (found, seqno) = client
            .get_many(&keys, ReadConsistency::Linearizable)
            .await?;
        let seen: Vec<Option<(String, String, u64)>> = found
            .into_iter()
            .map(|v| {
                v.map(|v| {
                    (
                        String::from_utf8_lossy(&v.key).into_owned(),
                        String::from_utf8_lossy(&v.value).into_owned(),
                        v.version,
                    )
                })
            })
            .collect();
        let want = vec![
            Some(("gm/c".to_string(), "3".to_string(), c)),
            None,
            Some(("gm/a".to_string(), "1".to_string(), a)),
            None,
            Some(("gm/a".to_string(), "1".to_string(), a)),
        ];
        ensure!(seen == want, "node {id}: {seen:?}");
        ensure!(
            seqno > c && b < c,
            "node {id} read at {seqno}, before the delete"
        );
        // LOCAL gives the same answer once the node has applied that far.
        let values = |found: Vec<Option<trireme_client::Versioned>>| -> Vec<Option<Vec<u8>>> {
            found.into_iter().map(|v| v.map(|v| v.value)).collect()
        };
        let want_values: Vec<Option<Vec<u8>>> = want
            .iter()
            .map(|w| w.as_ref().map(|(_, v, _)| v.clone().into_bytes()))
            .collect();
        wait_for("a LOCAL get_many to see the delete", READY, || async {
            let (local, at) = client.get_many(&keys, ReadConsistency::Local).await?;
            Ok((at >= seqno).then_some(()).map(|()| values(local)))
        })
        .await
        .and_then(|local| {
            ensure!(local == want_values, "node {id} LOCAL: {local:?}");
            Ok(())
        })?;
    }
    // No keys: an empty answer, not an error.
    let (none, _) = c1
        .get_many(&Vec::<String>::new(), ReadConsistency::Linearizable)
        .await?;
    ensure!(none.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_if_version_writes_from_different_nodes_exactly_one_wins() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    for round in 0..5 {
        let key = format!("contested-{round}");
        let base = cluster.client_only(1)?.put(key.clone(), "base").await?;
        // Every node tries to replace the version all of them saw.
        let mut tasks = Vec::new();
        for id in 1..=3u64 {
            let client = cluster.client_only(id)?;
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .put_if_version(key, format!("winner-{id}"), base)
                    .await
            }));
        }
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await? {
                Ok(_) => winners.push(i as u64 + 1),
                Err(e) => ensure!(
                    e.is_compare_failed(),
                    "a loser fails its compare, not {e:?}"
                ),
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: exactly one winner, got {winners:?}"
        );
        let expected = format!("winner-{}", winners[0]).into_bytes();
        for id in 1..=3u64 {
            let got = cluster
                .client_only(id)?
                .get(&key, ReadConsistency::Linearizable)
                .await?;
            ensure!(
                got.map(|v| v.value) == Some(expected.clone()),
                "node {id} disagrees on the winner"
            );
        }
    }
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_the_node_catches_up_on_restart() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let leader = cluster.wait_leader(&[1, 2, 3], READY).await?;
    for i in 0..20 {
        cluster
            .client(leader)?
            .put(format!("before-{i}"), "x")
            .await?;
    }
    cluster.kill(leader)?;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let new_leader = cluster
        .wait_leader(&survivors, READY)
        .await
        .with_context(|| cluster.logs())?;
    ensure!(new_leader != leader);
    // Writes through either survivor succeed within seconds.
    for id in &survivors {
        let client = cluster.client_only(*id)?;
        wait_for(
            "a write through a survivor",
            Duration::from_secs(10),
            || async { Ok(client.put(format!("after-{id}"), "y").await.ok()) },
        )
        .await?;
    }
    cluster.restart(leader)?;
    let all = [1, 2, 3];
    cluster
        .wait_converged(&all, READY)
        .await
        .with_context(|| cluster.logs())?;
    let client = cluster.client_only(leader)?;
    for id in &survivors {
        ensure!(client
            .get(format!("after-{id}"), ReadConsistency::Local)
            .await?
            .is_some());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_three_and_restart_keeps_every_acknowledged_write() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    // Concurrent writers through every node; remember what was acknowledged.
    let mut tasks = Vec::new();
    for w in 0..12u64 {
        let client = cluster.client(w % 3 + 1)?;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25 {
                let key = format!("w{w}-{i}");
                if client.put(key.clone(), format!("v{i}")).await.is_ok() {
                    acked.push(key);
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await?);
    }
    ensure!(
        acked.len() == 300,
        "all writes acknowledged before the crash: {}",
        acked.len()
    );
    for id in 1..=3 {
        cluster.kill(id)?;
    }
    for id in 1..=3 {
        cluster.restart(id)?;
    }
    cluster
        .wait_leader(&[1, 2, 3], READY)
        .await
        .with_context(|| cluster.logs())?;
    for id in 1..=3u64 {
        let client = cluster.client_only(id)?;
        for key in &acked {
            let got = client.get(key, ReadConsistency::Linearizable).await?;
            ensure!(got.is_some(), "node {id} lost acknowledged write {key}");
        }
    }
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    Ok(())
}

/// A leader and its followers tell each other what the failure detector's
/// pings would, on the AppendEntries they exchange anyway, and two followers
/// on one's pings: an idle leader pings no follower, only the follower with
/// the lower id pings the other, and every node still sees every member up
/// and stays primary. A stopped follower is seen down, and
/// the leader pings it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_followers_trade_liveness_on_heartbeats_instead_of_pings() -> Result<()> {
    use std::collections::BTreeMap;
    use trireme_tests::inproc::InProcCluster;

    // (pings sent, answers taken from AppendEntries) per node.
    fn counts(c: &InProcCluster) -> BTreeMap<u64, (u64, u64)> {
        c.nodes
            .iter()
            .map(|(id, n)| (*id, n.node.cluster().health.counts()))
            .collect()
    }
    let mut cluster = InProcCluster::start(3, |_| {}).await?;
    let leader = cluster.wait_leader(READY).await?;
    cluster.client(leader)?.put("k", "v").await?;
    let interval = Duration::from_millis(trireme_server::Config::default().ping_interval_ms);
    // Past the first pings, before any answer was attached.
    let start = counts(&cluster);
    wait_for("answers attached in both directions", READY, || {
        let now = counts(&cluster);
        let ok = now.iter().all(|(id, c)| c.1 >= start[id].1 + 5);
        async move { Ok(ok.then_some(())) }
    })
    .await?;
    let before = counts(&cluster);
    let began = std::time::Instant::now();
    // Longer than a follower trusts its last word of the leader's quorum:
    // with no ping to the leader, only the answers attached to its calls
    // can keep a follower primary through this window.
    let defaults = trireme_server::Config::default();
    let word = Duration::from_millis(defaults.election_timeout_max_ms + defaults.down_after_ms);
    wait_for("the leader to take 20 more answers", READY, || {
        let ok = counts(&cluster)[&leader].1 >= before[&leader].1 + 20
            && began.elapsed() > word + interval;
        async move { Ok(ok.then_some(())) }
    })
    .await?;
    let after = counts(&cluster);
    let ticks = (began.elapsed().as_millis() / interval.as_millis()) as u64;
    let pinged = |id: u64| after[&id].0 - before[&id].0;
    // Without the attached answers: two pings per tick on every node.
    ensure!(
        pinged(leader) <= 2,
        "leader {leader} pinged {} times in {ticks} ping intervals: {before:?} -> {after:?}",
        pinged(leader)
    );
    // Of the two followers, only the lower id pings the other, once a tick.
    let followers: Vec<u64> = (1..=3u64).filter(|id| *id != leader).collect();
    let (low, high) = (followers[0], followers[1]);
    ensure!(
        pinged(low) >= 1 && pinged(low) <= ticks + 3 && pinged(high) <= 2,
        "followers {low} and {high} pinged {} and {} times in {ticks} ping intervals (only \
         {low} should ping, once a tick): {before:?} -> {after:?}",
        pinged(low),
        pinged(high)
    );
    for id in followers {
        ensure!(
            after[&id].1 > before[&id].1,
            "follower {id} took no attached answer: {before:?} -> {after:?}"
        );
    }
    for (id, n) in &cluster.nodes {
        let members = n.node.status().members;
        ensure!(
            members.len() == 3 && members.iter().all(|m| m.up),
            "node {id} does not see every member up: {members:?}"
        );
    }
    for id in [low, high] {
        cluster
            .client(id)?
            .put(format!("through-{id}"), "v")
            .await
            .with_context(|| format!("follower {id} is not primary any more"))?;
    }
    // Cut off: the leader sees the follower down and pings it again.
    let stopped = if leader == 3 { 2 } else { 3 };
    cluster.stop(stopped).await?;
    let pings = counts(&cluster)[&leader].0;
    wait_for("the leader to see the stopped follower down", READY, || {
        let down = cluster.nodes[&leader]
            .node
            .status()
            .members
            .iter()
            .any(|m| m.id == stopped && !m.up);
        async move { Ok(down.then_some(())) }
    })
    .await?;
    ensure!(
        counts(&cluster)[&leader].0 > pings,
        "the leader did not ping the follower whose heartbeat replies stopped"
    );
    cluster.shutdown().await
}
