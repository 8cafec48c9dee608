//! A node's configuration: one struct, defaults < TOML file < `TRIREME_*`
//! environment < command-line flags (the last two are merged in `main.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::txn::{Limits, NodeId};

/// Everything a node needs to run. See `trireme.example.toml` for a commented copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id: unique in the cluster, never reused, not 0.
    pub node_id: NodeId,
    /// Address the gRPC port binds to (client, admin and peer services).
    pub listen: String,
    /// Address peers and clients use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// Directory holding the Raft log, the MVCC store and snapshots.
    pub data_dir: PathBuf,
    /// The first members of a new cluster, by id. Ignored once the data
    /// directory is initialized, so restarting with the same flags is harmless.
    /// Empty: a single-node cluster of this node.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// A member to join through (`--join`), for a node with a fresh data
    /// directory: it is added as a learner, catches up, and is promoted.
    pub join: Option<String>,
    /// Evict a voter that has been down (or its apply stalled) this long, in
    /// milliseconds; 0: never (the default, like Galera's `evs.auto_evict`).
    pub evict_after_ms: u64,
    /// Address of the Prometheus `/metrics` HTTP endpoint; none: off.
    pub metrics_listen: Option<String>,
    /// How often each node pings every other member, in milliseconds.
    pub ping_interval_ms: u64,
    /// A member that has not answered for this long is reported down, in milliseconds.
    pub down_after_ms: u64,
    /// A voter whose apply has not advanced for this long while behind is
    /// reported stalled and no longer slows writers, in milliseconds; with
    /// eviction on, it is evicted once stalled for `evict_after_ms`.
    pub stall_after_ms: u64,
    /// Flow control: writers are slowed while any up voter's apply lag exceeds
    /// this many log entries.
    pub fc_limit: u64,
    /// A learner is promoted to voter once within this many entries of the leader.
    pub promote_lag_entries: u64,
    /// A voter lagging by more than this many entries reports JOINED, not SYNCED.
    pub synced_lag_entries: u64,
    /// Leader heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// How many seqnos a transaction's snapshot may lag its commit (Galera's
    /// `cert.max_length`). Cluster-wide: must be equal on every node.
    pub cert_window: u64,
    /// How long a commit may wait for its verdict before the client is told the
    /// outcome is unknown, in milliseconds.
    pub commit_timeout_ms: u64,
    /// How long a read may wait for a read index or for this node to catch up, in milliseconds.
    pub read_timeout_ms: u64,
    /// Most write sets batched into one log entry.
    pub batch_max_write_sets: usize,
    /// Most bytes batched into one log entry.
    pub batch_max_bytes: usize,
    /// Batches in flight at once (pipelined replication).
    pub batch_in_flight: usize,
    /// Build a snapshot (and allow purging the log) every this many log entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind the last snapshot, so a lagging node can catch up
    /// by replay instead of a full state transfer.
    pub log_retain_entries: u64,
    /// Most bytes of log entries kept (the gcache size), 0: no byte bound.
    /// Only entries a snapshot covers are purged, so the log can exceed it
    /// until the next snapshot.
    pub log_retain_bytes: u64,
    /// sled page cache, in bytes.
    pub cache_bytes: u64,
    /// How often old MVCC versions are garbage-collected, in milliseconds (0: never).
    pub gc_interval_ms: u64,
    /// How many times the server itself retries a conflicting write set that
    /// read nothing and asked for it (Galera's `wsrep_retry_autocommit`).
    pub retry_autocommit: u32,
    /// Limits on keys, values and write sets.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            listen: "127.0.0.1:7420".into(),
            advertise: None,
            data_dir: PathBuf::from("./trireme-data"),
            initial_cluster: BTreeMap::new(),
            join: None,
            evict_after_ms: 0,
            metrics_listen: None,
            ping_interval_ms: 200,
            down_after_ms: 1000,
            stall_after_ms: 10_000,
            fc_limit: 2000,
            promote_lag_entries: 64,
            synced_lag_entries: 1000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            cert_window: 100_000,
            commit_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            batch_max_write_sets: 2048,
            batch_max_bytes: 4 << 20,
            batch_in_flight: 1,
            snapshot_every_entries: 20_000,
            log_retain_entries: 10_000,
            log_retain_bytes: 256 << 20,
            cache_bytes: 256 << 20,
            gc_interval_ms: 10_000,
            retry_autocommit: 1,
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("config file {}: {e}", path.display())))
    }

    /// The address peers and clients reach this node at.
    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// The first members: `initial_cluster`, or this node alone.
    pub fn initial_members(&self) -> BTreeMap<NodeId, String> {
        if self.initial_cluster.is_empty() {
            BTreeMap::from([(self.node_id, self.advertise_addr().to_string())])
        } else {
            self.initial_cluster.clone()
        }
    }

    /// Parses `1=host:port,2=host:port`.
    pub fn parse_members(spec: &str) -> Result<BTreeMap<NodeId, String>> {
        let mut out = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part.split_once('=').ok_or_else(|| {
                Error::InvalidInput(format!(
                    "initial cluster member {part:?} is not ID=HOST:PORT"
                ))
            })?;
            let id: NodeId = id.trim().parse().map_err(|_| {
                Error::InvalidInput(format!(
                    "initial cluster member {part:?}: {id:?} is not a node id"
                ))
            })?;
            if out.insert(id, addr.trim().to_string()).is_some() {
                return Err(Error::InvalidInput(format!(
                    "initial cluster lists node {id} twice"
                )));
            }
        }
        Ok(out)
    }

    /// Checks every relation the node relies on; the error names the violated one.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidInput(msg));
        if self.node_id == 0 {
            return bad("node_id must be at least 1".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "listen {:?} is not HOST:PORT with an IP address",
                self.listen
            ));
        }
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.node_id) {
            return bad(format!(
                "initial_cluster does not list this node's id {} (it lists {:?})",
                self.node_id,
                self.initial_cluster.keys().collect::<Vec<_>>()
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 2 >= self.election_timeout_min_ms {
            return bad(format!(
                "heartbeat_ms ({}) must be positive and under half of election_timeout_min_ms ({})",
                self.heartbeat_ms, self.election_timeout_min_ms
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return bad(format!(
                "election_timeout_min_ms ({}) must be below election_timeout_max_ms ({})",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if self.join.is_some() && !self.initial_cluster.is_empty() {
            return bad(
                "join and initial_cluster exclude each other: a node starts a cluster or joins one"
                    .into(),
            );
        }
        if self.ping_interval_ms == 0 || self.down_after_ms < 2 * self.ping_interval_ms {
            return bad(format!(
                "down_after_ms ({}) must be at least twice ping_interval_ms ({}), which must be positive",
                self.down_after_ms, self.ping_interval_ms
            ));
        }
        if self.evict_after_ms != 0 && self.evict_after_ms < self.down_after_ms {
            return bad(format!(
                "evict_after_ms ({}) must be 0 (off) or at least down_after_ms ({})",
                self.evict_after_ms, self.down_after_ms
            ));
        }
        if self.cert_window < 16 {
            return bad(format!(
                "cert_window ({}) must be at least 16",
                self.cert_window
            ));
        }
        if self.batch_max_write_sets == 0 || self.batch_in_flight == 0 || self.batch_max_bytes == 0
        {
            return bad(
                "batch_max_write_sets, batch_max_bytes and batch_in_flight must be positive".into(),
            );
        }
        if self.snapshot_every_entries == 0 {
            return bad("snapshot_every_entries must be positive".into());
        }
        if self.limits.max_key_bytes == 0 || self.limits.max_ops == 0 {
            return bad("limits.max_key_bytes and limits.max_ops must be positive".into());
        }
        if self.limits.max_write_set_bytes > 64 << 20 {
            return bad(format!(
                "limits.max_write_set_bytes ({}) must be at most 64 MiB (the gRPC message limit)",
                self.limits.max_write_set_bytes
            ));
        }
        Ok(())
    }

    /// The commit timeout as a duration.
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }

    /// The read timeout as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

/// The node id of a StatefulSet pod from its hostname: the ordinal after the
/// last `-`, plus 1 (ids start at 1), e.g. `trireme-0` is node 1.
pub fn node_id_from_hostname(hostname: &str) -> Result<NodeId> {
    let hostname = hostname.trim();
    let ordinal = hostname
        .rsplit_once('-')
        .map(|(_, n)| n)
        .and_then(|n| n.parse::<NodeId>().ok())
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "hostname {hostname:?} does not end in -<ordinal> (as a StatefulSet pod's does)"
            ))
        })?;
    ordinal.checked_add(1).ok_or_else(|| {
        Error::InvalidInput(format!(
            "hostname {hostname:?}: ordinal {ordinal} is too large"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_single_node() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        assert_eq!(
            c.initial_members(),
            BTreeMap::from([(1, "127.0.0.1:7420".to_string())])
        );
    }

    #[test]
    fn validate_names_the_violated_relation() {
        let c = Config {
            heartbeat_ms: 400,
            ..Config::default()
        };
        let err = c.validate().expect_err("heartbeat too slow").to_string();
        assert!(err.contains("heartbeat_ms (400)"), "{err}");
        let c = Config {
            initial_cluster: Config::parse_members("2=127.0.0.1:1,3=127.0.0.1:2").expect("parse"),
            ..Config::default()
        };
        assert!(c
            .validate()
            .expect_err("self missing")
            .to_string()
            .contains("node's id 1"));
    }

    #[test]
    fn node_ids_come_from_pod_ordinals() {
        assert_eq!(node_id_from_hostname("trireme-0\n").expect("ordinal"), 1);
        assert_eq!(node_id_from_hostname("my-db-12").expect("ordinal"), 13);
        for bad in [
            "trireme",
            "trireme-",
            "trireme-x",
            "",
            "t-18446744073709551615",
        ] {
            assert!(node_id_from_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_members_and_rejects_junk() {
        let m = Config::parse_members("1=127.0.0.1:7001, 2=127.0.0.1:7002").expect("parse");
        assert_eq!(m.len(), 2);
        assert!(Config::parse_members("1:127.0.0.1").is_err());
        assert!(Config::parse_members("x=127.0.0.1:1").is_err());
        assert!(Config::parse_members("1=a:1,1=b:2").is_err());
    }

    #[test]
    fn toml_overrides_defaults() {
        let c: Config = toml::from_str("node_id = 3\n[limits]\nmax_ops = 10\n").expect("toml");
        assert_eq!(c.node_id, 3);
        assert_eq!(c.limits.max_ops, 10);
        assert_eq!(c.limits.max_key_bytes, 4096);
        assert!(toml::from_str::<Config>("nodeid = 3").is_err());
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let c: Config =
            toml::from_str(include_str!("../../trireme.example.toml")).expect("example parses");
        assert_eq!(c, Config::default());
    }
}
