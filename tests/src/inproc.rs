//! A cluster of nodes inside the test process: real gRPC on 127.0.0.1 ports
//! bound to port 0 before the nodes start, so no port is ever guessed.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::oneshot;
use trireme_client::{Checksum, Client};
use trireme_server::{Config, Node};

use crate::harness::Harness;

/// One in-process node and the means to stop it.
pub struct InProcNode {
    /// The running node.
    pub node: Arc<Node>,
    /// Its client address.
    pub addr: String,
    /// Its peer address.
    pub peer_addr: String,
    stop_tx: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

/// N nodes in this process.
pub struct InProcCluster {
    /// The nodes by id.
    pub nodes: BTreeMap<u64, InProcNode>,
    configs: BTreeMap<u64, Config>,
    /// Holds the data directories.
    pub dir: tempfile::TempDir,
}

impl InProcCluster {
    /// Starts `n` nodes; `tweak` adjusts every node's configuration.
    pub async fn start(n: u64, tweak: impl Fn(&mut Config)) -> Result<InProcCluster> {
        let dir = tempfile::Builder::new()
            .prefix("trireme-inproc-")
            .tempdir()?;
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let client = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            listeners.insert(id, (client, peer));
        }
        let addrs: BTreeMap<u64, (String, String)> = listeners
            .iter()
            .map(|(id, (c, p))| {
                Ok((
                    *id,
                    (c.local_addr()?.to_string(), p.local_addr()?.to_string()),
                ))
            })
            .collect::<Result<_>>()?;
        let members: BTreeMap<u64, String> =
            addrs.iter().map(|(id, (_, p))| (*id, p.clone())).collect();
        let mut cluster = InProcCluster {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            dir,
        };
        for (id, listener) in listeners {
            let mut config = Config {
                node_id: id,
                listen: addrs[&id].0.clone(),
                peer_listen: addrs[&id].1.clone(),
                data_dir: cluster.dir.path().join(format!("node{id}")),
                initial_cluster: members.clone(),
                // Generous for a loaded 2-core machine: a leader that misses a
                // quorum for longer than the maximum election timeout leaves
                // the primary component.
                heartbeat_ms: 100,
                election_timeout_min_ms: 800,
                election_timeout_max_ms: 1600,
                ..Config::default()
            };
            tweak(&mut config);
            cluster.configs.insert(id, config.clone());
            let node = Self::launch(config, listener).await?;
            cluster.nodes.insert(id, node);
        }
        Ok(cluster)
    }

    async fn launch(
        config: Config,
        (listener, peer_listener): (tokio::net::TcpListener, tokio::net::TcpListener),
    ) -> Result<InProcNode> {
        let addr = config.listen.clone();
        let peer_addr = config.peer_listen.clone();
        let node = Node::start(config).await?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let served = tokio::spawn({
            let node = node.clone();
            async move {
                let _ = trireme_server::server::serve(node, listener, peer_listener, async {
                    let _ = stop_rx.await;
                })
                .await;
            }
        });
        Ok(InProcNode {
            node,
            addr,
            peer_addr,
            stop_tx: Some(stop_tx),
            served: Some(served),
        })
    }

    /// Every node's client address, by id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.configs.values().map(|c| c.listen.clone()).collect()
    }

    /// A client that talks to node `id` only.
    pub fn client(&self, id: u64) -> Result<Client> {
        Ok(Client::new(vec![self.configs[&id].listen.clone()])?)
    }

    /// Waits until every running node follows one leader, itself running
    /// ([`Harness::wait_leader`] over the running nodes).
    pub async fn wait_leader(&self, deadline: std::time::Duration) -> Result<u64> {
        let running: Vec<u64> = self.nodes.keys().copied().collect();
        Harness::wait_leader(self, &running, deadline).await
    }

    /// Stops node `id` (gRPC server and Raft), keeping its data directory.
    pub async fn stop(&mut self, id: u64) -> Result<()> {
        if let Some(mut n) = self.nodes.remove(&id) {
            if let Some(tx) = n.stop_tx.take() {
                let _ = tx.send(());
            }
            if let Some(h) = n.served.take() {
                let _ = h.await;
            }
            n.node.shutdown().await?;
        }
        Ok(())
    }

    /// Starts node `id` again on its data directory and address.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.stop(id).await?;
        Harness::start(self, id).await
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await?;
        }
        Ok(())
    }
}

/// Graceful stops and restarts only: the nodes share the test's process, so
/// there is no pid to kill or freeze, and no link of their own to cut.
impl Harness for InProcCluster {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn ids(&self) -> Vec<u64> {
        self.configs.keys().copied().collect()
    }

    async fn leader_seen_by(&self, id: u64) -> Result<Option<u64>> {
        let n = self
            .nodes
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} is stopped"))?;
        let leader = n.node.raft_metrics().current_leader;
        Ok(leader)
    }

    async fn checksum_of(&self, id: u64) -> Result<Checksum> {
        Ok(self.client(id)?.checksum().await?)
    }

    async fn start(&mut self, id: u64) -> Result<()> {
        if self.nodes.contains_key(&id) {
            return Ok(());
        }
        let config = self
            .configs
            .get(&id)
            .ok_or_else(|| anyhow!("no node {id} in this cluster"))?
            .clone();
        let client = tokio::net::TcpListener::bind(&config.listen).await?;
        let peer = tokio::net::TcpListener::bind(&config.peer_listen).await?;
        let node = Self::launch(config, (client, peer)).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    async fn stop(&mut self, id: u64) -> Result<()> {
        InProcCluster::stop(self, id).await
    }
}
