//! One interface to the three clusters the tests run: nodes in the test's
//! own process ([`crate::inproc::InProcCluster`]), server processes on
//! loopback ([`crate::Cluster`]) and server processes in network namespaces
//! or behind proxies ([`crate::netns::NetCluster`]).
//!
//! A harness implements the few things that differ (how to reach a node,
//! start, stop, kill, pause and cut it off); the waits every test needs,
//! [`Harness::wait_leader`] and [`Harness::wait_converged`], are written once
//! here on top of them, so a test means the same thing on every cluster. A
//! fault a harness cannot inject (killing a node that shares the test's
//! process, cutting links on plain loopback) is an error that names the
//! harness and the fault, never a silent no-op.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use trireme_client::Checksum;

use crate::wait_for;

/// A cluster a test drives (see the module docs).
// Tests await these futures in place; no caller needs them `Send`.
#[allow(async_fn_in_trait)]
pub trait Harness {
    /// Which harness this is, for messages.
    fn kind(&self) -> &'static str;

    /// Every node id the cluster was started with.
    fn ids(&self) -> Vec<u64>;

    /// The leader node `id` follows now (`None`: it knows none); an error
    /// when the node cannot be asked.
    async fn leader_seen_by(&self, id: u64) -> Result<Option<u64>>;

    /// Node `id`'s checksum (applied seqno, data digest, verdict chain).
    async fn checksum_of(&self, id: u64) -> Result<Checksum>;

    /// Starts node `id` again on its data directory (a no-op if it runs).
    async fn start(&mut self, id: u64) -> Result<()>;

    /// Stops node `id` cleanly (SIGTERM or a graceful shutdown), keeping its data.
    async fn stop(&mut self, id: u64) -> Result<()>;

    /// Kills node `id` at once (SIGKILL), keeping its data.
    async fn kill(&mut self, id: u64) -> Result<()> {
        bail!("the {} cluster cannot kill node {id}", self.kind())
    }

    /// Freezes node `id` (SIGSTOP) until [`Harness::resume`].
    fn pause(&mut self, id: u64) -> Result<()> {
        bail!("the {} cluster cannot pause node {id}", self.kind())
    }

    /// Lets a paused node `id` run again (SIGCONT).
    fn resume(&mut self, id: u64) -> Result<()> {
        bail!("the {} cluster cannot resume node {id}", self.kind())
    }

    /// Drops every byte from `from` to `to`, for each pair (one-way cuts;
    /// list both directions for a full partition).
    fn partition(&mut self, links: &[(u64, u64)]) -> Result<()> {
        bail!("the {} cluster cannot cut links {links:?}", self.kind())
    }

    /// Removes every cut made by [`Harness::partition`].
    fn heal(&mut self) -> Result<()> {
        bail!("the {} cluster cannot cut links", self.kind())
    }

    /// Waits until every node of `ids` follows one leader, itself among
    /// `ids`; returns it.
    async fn wait_leader(&self, ids: &[u64], deadline: Duration) -> Result<u64> {
        wait_for("a leader every node agrees on", deadline, || async {
            let mut leader = None;
            for id in ids {
                match self.leader_seen_by(*id).await? {
                    Some(l) if ids.contains(&l) && leader.is_none_or(|prev| prev == l) => {
                        leader = Some(l)
                    }
                    _ => return Ok(None),
                }
            }
            Ok(leader)
        })
        .await
    }

    /// Waits until every node of `ids` reports the same applied seqno,
    /// checksum and verdict chain; returns that checksum. On timeout the
    /// error lists the last checksum of each node.
    async fn wait_converged(&self, ids: &[u64], deadline: Duration) -> Result<Checksum> {
        let last = Mutex::new(BTreeMap::new());
        let res = wait_for(
            "every node to reach the same seqno, checksum and verdict chain",
            deadline,
            || async {
                let mut seen: Option<Checksum> = None;
                let mut agree = true;
                for id in ids {
                    let c = self.checksum_of(*id).await?;
                    last.lock().expect("not poisoned").insert(*id, c);
                    match &seen {
                        None => seen = Some(c),
                        Some(s) => {
                            agree &= (s.seqno, s.checksum, s.verdict_chain)
                                == (c.seqno, c.checksum, c.verdict_chain)
                        }
                    }
                }
                Ok(if agree { seen } else { None })
            },
        )
        .await;
        let last = last.into_inner().expect("not poisoned");
        res.map_err(|e| anyhow!("{e}; last checksums: {last:?}"))
    }
}
