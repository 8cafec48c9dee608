//! Crafted peer messages against a live 3-node cluster of real processes:
//! `Forward` batches with inverted ranges, empty keys, over-limit sizes and
//! garbage; `AppendEntries` with garbage, truncated bytes and a stale vote
//! carrying invalid or over-limit write sets (see `trireme_tests::hostile`).
//! Each is refused as it must be, on the leader and on the followers; every
//! node stays up and keeps serving; the data checksum and the verdict chain
//! are unchanged and equal on every node (nothing was even certified), and
//! no crafted key is readable anywhere. Peer methods on the client port and
//! client methods on the peer port are refused, naming the right port.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tonic::Code;
use trireme_client::{Checksum, ReadConsistency, ScanSpec};
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;
use trireme_proto::v1::kv_client::KvClient;
use trireme_proto::v1::raft_client::RaftClient;
use trireme_tests::hostile::{crafted, send, Answer, HOSTILE_PREFIX};
use trireme_tests::Cluster;

const READY: Duration = Duration::from_secs(20);

async fn checksums(cluster: &Cluster) -> Result<Vec<Checksum>> {
    let mut out = Vec::new();
    for id in 1..=3u64 {
        out.push(cluster.client_only(id)?.checksum().await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_peer_messages_are_refused_and_change_nothing() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let leader = cluster.wait_leader(&[1, 2, 3], READY).await?;
    for i in 0..10 {
        cluster
            .client(1 + i % 3)?
            .put(format!("before-{i}"), format!("v{i}"))
            .await
            .with_context(|| cluster.logs())?;
    }
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    let before = checksums(&cluster).await?;

    let messages = crafted()?;
    // The leader first: it is the one that would order a Forward.
    let mut order = vec![leader];
    order.extend((1..=3u64).filter(|id| *id != leader));
    for id in order {
        let addr = cluster.node(id).peer_addr.clone();
        for m in &messages {
            let answer = send(&addr, m).await;
            ensure!(
                answer == Answer::Refused,
                "node {id}, {}: {answer:?}\n{}",
                m.name,
                cluster.logs()
            );
        }
    }

    // The wrong port: a peer method on the client port, a client method on
    // the peer port, each refused by name before any service sees it.
    for id in 1..=3u64 {
        let (client_addr, peer_addr) = {
            let n = cluster.node(id);
            (n.addr.clone(), n.peer_addr.clone())
        };
        let mut raft = RaftClient::connect(format!("http://{client_addr}")).await?;
        let status = raft
            .append_entries(messages[0].msg.clone())
            .await
            .expect_err("AppendEntries on the client port");
        ensure!(
            status.code() == Code::Unimplemented
                && status.message().contains("/trireme.v1.Raft/AppendEntries")
                && status.message().contains("peer port (peer_listen)"),
            "node {id}: {status:?}"
        );
        let mut ping = ClusterClient::connect(format!("http://{client_addr}")).await?;
        let status = ping
            .ping(pb::PingRequest {
                from: 9,
                ..Default::default()
            })
            .await
            .expect_err("Ping on the client port");
        ensure!(
            status.code() == Code::Unimplemented && status.message().contains("peer port"),
            "node {id}: {status:?}"
        );
        let mut kv = KvClient::connect(format!("http://{peer_addr}")).await?;
        let status = kv
            .get(pb::GetRequest::default())
            .await
            .expect_err("Get on the peer port");
        ensure!(
            status.code() == Code::Unimplemented
                && status.message().contains("/trireme.v1.Kv/Get")
                && status.message().contains("client port (listen)"),
            "node {id}: {status:?}"
        );
        let mut status_rpc = ClusterClient::connect(format!("http://{peer_addr}")).await?;
        let status = status_rpc
            .status(pb::StatusRequest {})
            .await
            .expect_err("Status on the peer port");
        ensure!(
            status.code() == Code::Unimplemented && status.message().contains("client port"),
            "node {id}: {status:?}"
        );
    }

    for id in 1..=3u64 {
        ensure!(
            cluster.node(id).is_running(),
            "node {id} exited after crafted messages:\n{}",
            cluster.logs()
        );
    }
    // Unchanged: nothing ordered means no verdict, so the chain is the same too.
    let after = checksums(&cluster).await?;
    for (id, (b, a)) in (1u64..).zip(before.iter().zip(&after)) {
        ensure!(
            (a.checksum, a.keys, a.verdict_chain) == (b.checksum, b.keys, b.verdict_chain),
            "node {id} changed: before {b:?}, after {a:?}"
        );
        ensure!(
            (a.checksum, a.verdict_chain) == (after[0].checksum, after[0].verdict_chain),
            "node {id} disagrees with node 1: {a:?} vs {:?}",
            after[0]
        );
    }
    // Still serving: a write through each node, readable on every node, and
    // no crafted key anywhere.
    for id in 1..=3u64 {
        cluster
            .client_only(id)?
            .put(format!("after-{id}"), "ok")
            .await
            .with_context(|| format!("node {id} stopped serving writes\n{}", cluster.logs()))?;
    }
    for id in 1..=3u64 {
        let client = cluster.client_only(id)?;
        for writer in 1..=3u64 {
            let got = client
                .get(format!("after-{writer}"), ReadConsistency::Linearizable)
                .await?;
            ensure!(
                got.is_some_and(|v| v.value == b"ok"),
                "node {id} misses the write made through node {writer}"
            );
        }
        let (hostile, _, _) = client
            .scan(
                &ScanSpec::prefix(HOSTILE_PREFIX.to_vec()),
                ReadConsistency::Linearizable,
            )
            .await?;
        ensure!(
            hostile.is_empty(),
            "node {id} holds crafted keys: {:?}",
            hostile.iter().map(|v| &v.key).collect::<Vec<_>>()
        );
        let status = cluster.status(id).await?;
        ensure!(status.state == "SYNCED", "node {id} is {status:?}");
    }
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    Ok(())
}
