//! Large AppendEntries go in the background.
//!
//! openraft times every AppendEntries out after one heartbeat interval
//! (`RPCOption::hard_ttl`), whatever it carries. An append of megabytes to a
//! busy follower may never fit, and every retry would time out the same way:
//! the follower stays behind for good. So an append larger than
//! `inline_bytes` is sent by a task of its own, with a timeout that follows
//! its size. Each call from openraft waits for that task for part of its ttl;
//! if it has not finished, the call sends a heartbeat instead and answers with
//! what the heartbeat proved, `PartialSuccess(prev_log_id)` (the follower
//! holds the entries up to `prev_log_id`). openraft then asks again at once
//! for the rest, so the follower hears from the leader every few tens of
//! milliseconds while the bulk is on the wire and never starts an election.

use std::time::Duration;

use openraft::error::{NetworkError, RPCError, RaftError};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::Vote;
use tokio::sync::oneshot;

use super::{Kind, PeerNetwork, RpcResult};
use crate::config::Config;
use crate::raft::types::{LogId, TypeConfig};

/// When and how an AppendEntries is sent in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkSettings {
    /// Appends whose encoded size is above this many bytes go in the background.
    pub inline_bytes: u64,
    /// The slowest transfer allowed before a background append times out, in bytes per second.
    pub min_rate: u64,
    /// The part of a background append's timeout that does not depend on its size.
    pub base_timeout: Duration,
}

impl Default for BulkSettings {
    fn default() -> Self {
        BulkSettings::from_config(&Config::default())
    }
}

impl BulkSettings {
    /// The settings a node's configuration asks for: the base timeout is the
    /// longest election timeout (a follower that hears nothing for that long
    /// would have started an election anyway).
    pub fn from_config(config: &Config) -> Self {
        BulkSettings {
            inline_bytes: config.append_inline_bytes,
            min_rate: config.append_min_rate.max(1),
            base_timeout: Duration::from_millis(config.election_timeout_max_ms),
        }
    }

    /// How long a background append of `bytes` may take.
    pub fn timeout(&self, bytes: u64) -> Duration {
        self.base_timeout + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }
}

type AppendResult = RpcResult<AppendEntriesResponse<u64>, RaftError<u64>>;

/// An AppendEntries on the wire in the background.
pub(super) struct InFlight {
    vote: Vote<u64>,
    prev: Option<LogId>,
    /// The last entry it carries.
    last: LogId,
    done: oneshot::Receiver<AppendResult>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Superseded (another leader, another position) or the stream ended:
        // its answer would no longer mean anything.
        self.task.abort();
    }
}

impl InFlight {
    /// Whether `rpc` asks for what this append carries, and maybe more after it.
    fn covers(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        rpc.vote == self.vote
            && rpc.prev_log_id == self.prev
            && rpc
                .entries
                .last()
                .is_some_and(|e| e.log_id.index >= self.last.index)
    }
}

fn network_error(
    msg: impl std::fmt::Display,
) -> RPCError<u64, openraft::BasicNode, RaftError<u64>> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg.to_string())))
}

impl PeerNetwork {
    /// openraft's AppendEntries: small ones (and heartbeats) inline, large
    /// ones in the background (see the module comment).
    pub(super) async fn append(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        if rpc.entries.is_empty() {
            return self.call(Kind::Append, &rpc, Vec::new(), &option).await;
        }
        if !self.in_flight.as_ref().is_some_and(|f| f.covers(&rpc)) {
            self.in_flight = None;
            let bytes = bincode::serialized_size(&rpc).map_err(network_error)?;
            if bytes <= self.bulk.inline_bytes {
                return self.call(Kind::Append, &rpc, Vec::new(), &option).await;
            }
            self.start(rpc.clone(), bytes);
        }
        self.wait(rpc, option).await
    }

    /// Starts sending `rpc` (`bytes` long encoded) in the background.
    fn start(&mut self, rpc: AppendEntriesRequest<TypeConfig>, bytes: u64) {
        let Some(last) = rpc.entries.last().map(|e| e.log_id) else {
            return;
        };
        let (vote, prev) = (rpc.vote, rpc.prev_log_id);
        let timeout = self.bulk.timeout(bytes);
        let (tx, done) = oneshot::channel();
        let sender = PeerNetwork {
            target: self.target,
            addr: self.addr.clone(),
            peers: self.peers.clone(),
            bulk: self.bulk,
            in_flight: None,
        };
        let target = self.target;
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let option = RPCOption::new(timeout);
            let result = sender.call(Kind::Append, &rpc, Vec::new(), &option).await;
            match &result {
                Ok(_) => {
                    tracing::debug!(target, bytes, elapsed = ?started.elapsed(), "background append done")
                }
                Err(e) => {
                    tracing::warn!(target, bytes, ?timeout, error = %e, "background append failed")
                }
            }
            let _ = tx.send(result);
        });
        self.in_flight = Some(InFlight {
            vote,
            prev,
            last,
            done,
            task,
        });
    }

    /// Waits part of the ttl for the background append; past it, a heartbeat
    /// proves the follower still follows, and the answer says nothing new
    /// was accepted yet.
    async fn wait(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        let patience = option.soft_ttl() / 2;
        let Some(flight) = self.in_flight.as_mut() else {
            return Err(network_error("no background append to wait for"));
        };
        let last = flight.last;
        match tokio::time::timeout(patience, &mut flight.done).await {
            Ok(result) => {
                self.in_flight = None;
                let reply = result
                    .map_err(|_| network_error("background append ended without an answer"))??;
                let sent_all = rpc.entries.last().is_some_and(|e| e.log_id == last);
                Ok(match reply {
                    // It carried a prefix of what openraft asks for now.
                    AppendEntriesResponse::Success if !sent_all => {
                        AppendEntriesResponse::PartialSuccess(Some(last))
                    }
                    other => other,
                })
            }
            Err(_still_sending) => {
                let heartbeat = AppendEntriesRequest::<TypeConfig> {
                    vote: rpc.vote,
                    prev_log_id: rpc.prev_log_id,
                    leader_commit: rpc.leader_commit,
                    entries: Vec::new(),
                };
                let rest = RPCOption::new(option.hard_ttl().saturating_sub(patience));
                match self
                    .call(Kind::Append, &heartbeat, Vec::new(), &rest)
                    .await?
                {
                    AppendEntriesResponse::Success => {
                        Ok(AppendEntriesResponse::PartialSuccess(rpc.prev_log_id))
                    }
                    other => {
                        // A conflict or a higher vote: the bulk cannot succeed either.
                        self.in_flight = None;
                        Ok(other)
                    }
                }
            }
        }
    }
}
