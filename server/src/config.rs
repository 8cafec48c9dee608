//! A node's configuration: one struct, layered in one place here:
//! defaults < TOML file < `TRIREME_*` environment < command-line flags.
//!
//! The layers are merged as serde values, like figment does: the defaults
//! are [`Config`]'s `#[serde(default)]`, the file is its TOML table, and the
//! environment and flags are [`Overrides`] (clap reads both, a flag beating
//! its variable), serialized to a table whose keys are configuration keys.
//! [`Config::layered`] merges them and deserializes once, so a wrong type or
//! an unknown key is reported the same way wherever it came from.
//!
//! Adding a setting: a field (with its doc) in [`Config`] and its default in
//! `Default for Config`; that makes it a TOML key. To give it a flag and an
//! environment variable too, add one `Option` field to [`Overrides`] with
//! `#[arg(long, env = "TRIREME_NAME")]`, named like the key (or with
//! `#[serde(rename = "the_key")]`; a nested key is written `"limits.max_ops"`).
//! Relations between settings go in [`Config::validate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    /// Address the client port binds to (Kv, Cluster admin, health, reflection).
    pub listen: String,
    /// Address clients use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// Address the peer port binds to (Raft, Forward, ReadIndex, Ping, state
    /// transfer, and admin requests a member forwards to the leader).
    pub peer_listen: String,
    /// Address peers use to reach this node (what `initial_cluster` and
    /// `join` name, and the membership records); defaults to `peer_listen`.
    pub peer_advertise: Option<String>,
    /// Directory holding the Raft log, the MVCC store and snapshots.
    pub data_dir: PathBuf,
    /// The first members of a new cluster, by id, at their peer addresses. Ignored once the data
    /// directory is initialized, so restarting with the same flags is harmless.
    /// Empty: a single-node cluster of this node.
    #[serde(
        serialize_with = "members_to_table",
        deserialize_with = "members_from_table"
    )]
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// A member's peer address to join through (`--join`), for a node with a fresh data
    /// directory: it is added as a learner, catches up, and is promoted.
    pub join: Option<String>,
    /// Evict a voter that has been down (or its apply stalled) this long, in
    /// milliseconds; 0: never (the default, like Galera's `evs.auto_evict`).
    pub evict_after_ms: u64,
    /// Address of the Prometheus `/metrics` HTTP endpoint; none: off.
    pub metrics_listen: Option<String>,
    /// Address of the etcd v3 gRPC listener (etcdctl, etcd client
    /// libraries; see the `etcd` module); none: off.
    pub etcd_listen: Option<String>,
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
    /// `cert.max_length`). Only bootstraps a new cluster: the value in force is
    /// the replicated one (`group::params`, `trireme config set`).
    pub cert_window: u64,
    /// How long a commit may wait for its verdict before the client is told the
    /// outcome is unknown, in milliseconds.
    pub commit_timeout_ms: u64,
    /// How long a read may wait for a read index or for this node to catch up, in milliseconds.
    pub read_timeout_ms: u64,
    /// How long a node asked to stop (SIGTERM, SIGINT) may take to finish the
    /// requests it took and hand its leadership over, in milliseconds; then it
    /// stops anyway (see OPERATIONS.md, "Rolling restart").
    pub drain_timeout_ms: u64,
    /// Most write sets batched into one log entry.
    pub batch_max_write_sets: usize,
    /// Most bytes batched into one log entry.
    pub batch_max_bytes: usize,
    /// Batches in flight at once (pipelined replication).
    pub batch_in_flight: usize,
    /// Most bytes of log entries one AppendEntries carries to a follower (at
    /// least one entry goes, whatever its size), so each fits the
    /// heartbeat-sized RPC timeout.
    pub append_max_bytes: u64,
    /// An AppendEntries larger than this many bytes is sent in the background
    /// with a timeout that follows its size, while heartbeats keep the
    /// follower's election timer quiet; smaller ones go inline.
    pub append_inline_bytes: u64,
    /// The slowest transfer rate a background AppendEntries is allowed before
    /// it is timed out, in bytes per second (its timeout is the election
    /// timeout plus its size at this rate).
    pub append_min_rate: u64,
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
    /// Client requests a node serves at once; more are refused at once with
    /// RESOURCE_EXHAUSTED (admin and peer requests are not counted).
    pub max_requests_in_flight: usize,
    /// Write sets the batcher holds at once (queued or being ordered); more
    /// are refused with RESOURCE_EXHAUSTED.
    pub max_pending_write_sets: usize,
    /// LINEARIZABLE reads waiting for a read index at once; more are refused
    /// with RESOURCE_EXHAUSTED.
    pub max_pending_reads: usize,
    /// Limits on keys, values and write sets.
    pub limits: Limits,
    /// TLS on the client and peer ports (PEM file paths; off by default).
    pub tls: crate::tls::TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            listen: "127.0.0.1:7420".into(),
            advertise: None,
            peer_listen: "127.0.0.1:7421".into(),
            peer_advertise: None,
            data_dir: PathBuf::from("./trireme-data"),
            initial_cluster: BTreeMap::new(),
            join: None,
            evict_after_ms: 0,
            metrics_listen: None,
            etcd_listen: None,
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
            drain_timeout_ms: 10_000,
            batch_max_write_sets: 2048,
            batch_max_bytes: 4 << 20,
            batch_in_flight: 1,
            append_max_bytes: 1 << 20,
            append_inline_bytes: 256 << 10,
            append_min_rate: 1 << 20,
            snapshot_every_entries: 20_000,
            log_retain_entries: 10_000,
            log_retain_bytes: 256 << 20,
            cache_bytes: 256 << 20,
            gc_interval_ms: 10_000,
            retry_autocommit: 1,
            max_requests_in_flight: 1024,
            max_pending_write_sets: 512,
            max_pending_reads: 512,
            limits: Limits::default(),
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config> {
        Config::merged(Some(path), &Overrides::default())
    }

    /// The configuration of defaults < the TOML file at `file` (if any) <
    /// `overrides` (environment and flags), validated.
    pub fn layered(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let config = Config::merged(file, overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// The layers merged, not yet validated.
    fn merged(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let overlay = toml::Table::try_from(overrides)
            .map_err(|e| Error::InvalidInput(format!("flags or TRIREME_* environment: {e}")))?;
        for (key, value) in overlay {
            set_path(&mut table, &key, value);
        }
        let from = match file {
            Some(path) => format!("config file {} with flags and environment", path.display()),
            None => "flags and environment".to_string(),
        };
        Config::deserialize(toml::Value::Table(table))
            .map_err(|e| Error::InvalidInput(format!("{from}: {e}")))
    }

    /// The address clients reach this node at.
    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// The address peers reach this node at.
    pub fn peer_advertise_addr(&self) -> &str {
        self.peer_advertise.as_deref().unwrap_or(&self.peer_listen)
    }

    /// The first members at their peer addresses: `initial_cluster`, or this node alone.
    pub fn initial_members(&self) -> BTreeMap<NodeId, String> {
        if self.initial_cluster.is_empty() {
            BTreeMap::from([(self.node_id, self.peer_advertise_addr().to_string())])
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
        for (key, addr) in [("listen", &self.listen), ("peer_listen", &self.peer_listen)] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!(
                    "{key} {addr:?} is not HOST:PORT with an IP address"
                ));
            }
        }
        if let Some(addr) = &self.etcd_listen {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!(
                    "etcd_listen {addr:?} is not HOST:PORT with an IP address"
                ));
            }
            if (addr == &self.listen || addr == &self.peer_listen) && !addr.ends_with(":0") {
                return bad(format!(
                    "etcd_listen {addr:?} is also the client or peer port: it needs its own"
                ));
            }
        }
        if self.listen == self.peer_listen && !self.listen.ends_with(":0") {
            return bad(format!(
                "listen and peer_listen are both {:?}: the client and peer ports must differ",
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
        self.tls.validate()?;
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
        if self.append_max_bytes == 0 || self.append_min_rate == 0 {
            return bad("append_max_bytes and append_min_rate must be positive".into());
        }
        if self.max_requests_in_flight == 0
            || self.max_pending_write_sets == 0
            || self.max_pending_reads == 0
        {
            return bad(
                "max_requests_in_flight, max_pending_write_sets and max_pending_reads must be positive"
                    .into(),
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

    /// The largest client request a node decodes: twice a write set at
    /// `limits.max_write_set_bytes`, plus protobuf framing for each of its
    /// operations and reads. The margin lets a request somewhat over the
    /// limit reach the write-set check, whose error names the setting
    /// (`max_write_set_bytes`); anything larger is cut off by the transport
    /// before it is held in memory.
    pub fn max_client_message_bytes(&self) -> usize {
        let framing = 32 * (self.limits.max_ops + self.limits.max_reads) + (64 << 10);
        self.limits
            .max_write_set_bytes
            .saturating_mul(2)
            .saturating_add(framing)
    }

    /// The read timeout as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

/// The TOML table of the file at `path`; the error names the file.
fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::InvalidInput(format!("cannot read config file {}: {e}", path.display()))
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| Error::InvalidInput(format!("config file {}: {e}", path.display())))
}

/// Sets the dotted key `path` (`"limits.max_ops"`) in `table` to `value`,
/// replacing what was there: a flag for a map (`initial_cluster`) replaces the
/// file's map rather than adding to it.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    match path.split_once('.') {
        None => {
            table.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

/// Parses a duration with a unit (`30s`, `500ms`, `2m`, `1h 30m`) or a plain
/// number of seconds into milliseconds; anything past `u64` milliseconds is
/// an error, not a wrapped value.
pub fn parse_duration_ms(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration (like 30s, 500ms or 2m): {e}"))?,
    };
    u64::try_from(duration.as_millis())
        .map_err(|_| format!("{text:?} is too long: at most {} ms", u64::MAX))
}

/// The settings that can also be given as flags or `TRIREME_*` environment
/// variables: clap reads both, and a flag beats its variable. Each field is
/// serialized under the configuration key it sets; `None` (not given) leaves
/// the key to the file or the default.
#[derive(clap::Args, Serialize, Debug, Default, Clone, PartialEq)]
pub struct Overrides {
    /// This node's id (unique, not 0).
    #[arg(long, env = "TRIREME_NODE_ID")]
    pub node_id: Option<u64>,
    /// Client port: Kv, Cluster admin, health (HOST:PORT; port 0 picks a free one; default 127.0.0.1:7420).
    #[arg(long, env = "TRIREME_LISTEN")]
    pub listen: Option<String>,
    /// Address clients reach this node at (default: the listen address).
    #[arg(long, env = "TRIREME_ADVERTISE")]
    pub advertise: Option<String>,
    /// Peer port: Raft, forwarding, pings (HOST:PORT; port 0 picks a free one; default 127.0.0.1:7421).
    #[arg(long, env = "TRIREME_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Address peers reach this node at (default: the peer listen address).
    #[arg(long, env = "TRIREME_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// Data directory.
    #[arg(long, env = "TRIREME_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// First members of a new cluster at their peer addresses: ID=HOST:PORT,... (ignored once initialized).
    #[arg(long, env = "TRIREME_INITIAL_CLUSTER", value_parser = parse_members_flag)]
    #[serde(serialize_with = "members_table")]
    pub initial_cluster: Option<BTreeMap<NodeId, String>>,
    /// Join an existing cluster through any member's peer address (HOST:PORT), with a fresh data dir.
    #[arg(long, env = "TRIREME_JOIN")]
    pub join: Option<String>,
    /// Evict a voter that stays down (or stalled) this long, e.g. 30s; 0 = never (default).
    #[arg(long = "evict-after", env = "TRIREME_EVICT_AFTER", value_parser = parse_duration_ms)]
    pub evict_after_ms: Option<u64>,
    /// On SIGTERM, take this long at most to finish requests in flight and
    /// hand leadership over before stopping, e.g. 10s (default).
    #[arg(long = "drain-timeout", env = "TRIREME_DRAIN_TIMEOUT", value_parser = parse_duration_ms)]
    pub drain_timeout_ms: Option<u64>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, env = "TRIREME_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Serve etcd's v3 gRPC API (etcdctl, etcd clients) on HOST:PORT (port 0 picks a free one; default: off).
    #[arg(long, env = "TRIREME_ETCD_LISTEN")]
    pub etcd_listen: Option<String>,
    /// Flow control: slow writers while a voter's apply lag exceeds this many log entries.
    #[arg(long, env = "TRIREME_FC_LIMIT")]
    pub fc_limit: Option<u64>,
    /// Certification window in seqnos (cluster-wide).
    #[arg(long, env = "TRIREME_CERT_WINDOW")]
    pub cert_window: Option<u64>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, env = "TRIREME_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Election timeout lower bound in milliseconds.
    #[arg(long, env = "TRIREME_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Election timeout upper bound in milliseconds.
    #[arg(long, env = "TRIREME_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot every this many log entries.
    #[arg(long, env = "TRIREME_SNAPSHOT_EVERY_ENTRIES")]
    pub snapshot_every_entries: Option<u64>,
    /// Log entries kept behind the last snapshot (replayable to a lagging node).
    #[arg(long, env = "TRIREME_LOG_RETAIN_ENTRIES")]
    pub log_retain_entries: Option<u64>,
    /// Most bytes of log entries kept (the gcache size); 0: no byte bound.
    #[arg(long, env = "TRIREME_LOG_RETAIN_BYTES")]
    pub log_retain_bytes: Option<u64>,
    /// Client port TLS: this node's certificate chain (PEM).
    #[arg(long, env = "TRIREME_TLS_CERT")]
    #[serde(rename = "tls.cert")]
    pub tls_cert: Option<PathBuf>,
    /// Client port TLS: the private key of --tls-cert (PEM).
    #[arg(long, env = "TRIREME_TLS_KEY")]
    #[serde(rename = "tls.key")]
    pub tls_key: Option<PathBuf>,
    /// Client port TLS: the CA (PEM) client certificates are verified against.
    #[arg(long, env = "TRIREME_TLS_CA")]
    #[serde(rename = "tls.ca")]
    pub tls_ca: Option<PathBuf>,
    /// Every client must present a certificate signed by --tls-ca.
    #[arg(long, env = "TRIREME_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    #[serde(rename = "tls.client_cert_auth")]
    pub client_cert_auth: Option<bool>,
    /// Peer port mutual TLS: this node's certificate (PEM), with SAN `node-<ID>.trireme`.
    #[arg(long, env = "TRIREME_PEER_TLS_CERT")]
    #[serde(rename = "tls.peer_cert")]
    pub peer_tls_cert: Option<PathBuf>,
    /// Peer port mutual TLS: the private key of --peer-tls-cert (PEM).
    #[arg(long, env = "TRIREME_PEER_TLS_KEY")]
    #[serde(rename = "tls.peer_key")]
    pub peer_tls_key: Option<PathBuf>,
    /// Peer port mutual TLS: the cluster CA (PEM) peers' certificates are verified against.
    #[arg(long, env = "TRIREME_PEER_TLS_CA")]
    #[serde(rename = "tls.peer_ca")]
    pub peer_tls_ca: Option<PathBuf>,
}

/// Reads `[initial_cluster]`: TOML keys are always strings, so each id is
/// parsed here (a plain map of `u64` keys would refuse every file).
fn members_from_table<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<NodeId, String>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(deserializer)?;
    table
        .into_iter()
        .map(|(id, addr)| match id.trim().parse::<NodeId>() {
            Ok(id) => Ok((id, addr)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "initial_cluster key {id:?} is not a node id"
            ))),
        })
        .collect()
}

/// `--initial-cluster` as clap wants it: the error as text.
fn parse_members_flag(spec: &str) -> std::result::Result<BTreeMap<NodeId, String>, String> {
    Config::parse_members(spec).map_err(|e| e.to_string())
}

/// TOML keys are strings: the member map is written with its ids as text,
/// which [`members_from_table`] reads back as numbers.
fn members_to_table<S: serde::Serializer>(
    members: &BTreeMap<NodeId, String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_map(members.iter().map(|(id, addr)| (id.to_string(), addr)))
}

/// [`members_to_table`] for a flag that may be absent.
fn members_table<S: serde::Serializer>(
    members: &Option<BTreeMap<NodeId, String>>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match members {
        Some(m) => members_to_table(m, serializer),
        None => serializer.serialize_none(),
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
            BTreeMap::from([(1, "127.0.0.1:7421".to_string())])
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
mod layers {
    use clap::Parser;

    use super::*;

    /// The server's flags as `main.rs` flattens them.
    #[derive(Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        overrides: Overrides,
    }

    fn flags(args: &[&str]) -> Overrides {
        let argv = std::iter::once("trireme-server").chain(args.iter().copied());
        Flags::try_parse_from(argv).expect("flags parse").overrides
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), text).expect("write config");
        f
    }

    #[test]
    fn nothing_given_is_the_defaults() {
        assert!(toml::Table::try_from(Overrides::default())
            .expect("serializes")
            .is_empty());
        assert_eq!(
            Config::layered(None, &Overrides::default()).expect("valid"),
            Config::default()
        );
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let f = file("fc_limit = 5\ncert_window = 64\n[limits]\nmax_ops = 10\n");
        let c = Config::layered(Some(f.path()), &flags(&["--fc-limit", "7"])).expect("valid");
        assert_eq!(c.fc_limit, 7, "flag over file");
        assert_eq!(c.cert_window, 64, "file over default");
        assert_eq!(c.limits.max_ops, 10, "a nested file key survives the flags");
        assert_eq!(c.limits.max_key_bytes, Limits::default().max_key_bytes);
        assert_eq!(c.heartbeat_ms, Config::default().heartbeat_ms);
    }

    #[test]
    fn every_flag_sets_its_key() {
        let c = Config::layered(
            None,
            &flags(&[
                "--node-id=2",
                "--listen=127.0.0.1:7002",
                "--advertise=10.0.0.2:7002",
                "--peer-listen=127.0.0.1:8002",
                "--peer-advertise=10.0.0.2:8002",
                "--data-dir=/tmp/d2",
                "--initial-cluster=1=127.0.0.1:7001,2=127.0.0.1:7002",
                "--evict-after=1m",
                "--metrics-listen=127.0.0.1:9002",
                "--etcd-listen=127.0.0.1:2379",
                "--fc-limit=11",
                "--cert-window=99",
                "--heartbeat-ms=90",
                "--election-timeout-min-ms=400",
                "--election-timeout-max-ms=900",
                "--snapshot-every-entries=12",
                "--log-retain-entries=13",
                "--log-retain-bytes=14",
            ]),
        )
        .expect("valid");
        let want = Config {
            node_id: 2,
            listen: "127.0.0.1:7002".into(),
            advertise: Some("10.0.0.2:7002".into()),
            peer_listen: "127.0.0.1:8002".into(),
            peer_advertise: Some("10.0.0.2:8002".into()),
            data_dir: PathBuf::from("/tmp/d2"),
            initial_cluster: BTreeMap::from([
                (1, "127.0.0.1:7001".to_string()),
                (2, "127.0.0.1:7002".to_string()),
            ]),
            evict_after_ms: 60_000,
            metrics_listen: Some("127.0.0.1:9002".into()),
            etcd_listen: Some("127.0.0.1:2379".into()),
            fc_limit: 11,
            cert_window: 99,
            heartbeat_ms: 90,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 900,
            snapshot_every_entries: 12,
            log_retain_entries: 13,
            log_retain_bytes: 14,
            ..Config::default()
        };
        assert_eq!(c, want);
    }

    #[test]
    fn tls_flags_set_the_tls_table_over_the_file() {
        let f = file("[tls]\npeer_ca = \"/etc/ca.crt\"\ncert = \"/file/c.crt\"\n");
        let c = Config::layered(
            Some(f.path()),
            &flags(&[
                "--tls-cert=/c.crt",
                "--tls-key=/c.key",
                "--tls-ca=/ca.crt",
                "--client-cert-auth",
                "--peer-tls-cert=/p.crt",
                "--peer-tls-key=/p.key",
            ]),
        )
        .expect("valid");
        let want = crate::tls::TlsConfig {
            cert: Some("/c.crt".into()),
            key: Some("/c.key".into()),
            ca: Some("/ca.crt".into()),
            client_cert_auth: true,
            peer_cert: Some("/p.crt".into()),
            peer_key: Some("/p.key".into()),
            peer_ca: Some("/etc/ca.crt".into()),
        };
        assert_eq!(c.tls, want);
        let half = Config::layered(None, &flags(&["--peer-tls-cert=/p.crt"]))
            .unwrap_err()
            .to_string();
        assert!(half.contains("--peer-tls-ca"), "{half}");
    }

    #[test]
    fn the_environment_sits_between_the_file_and_the_flags() {
        // The only test that reads this variable (tests run in threads).
        std::env::set_var("TRIREME_LOG_RETAIN_ENTRIES", "21");
        let f = file("log_retain_entries = 20\n");
        let env_only = Config::layered(Some(f.path()), &flags(&[])).expect("valid");
        let flag_too = Config::layered(Some(f.path()), &flags(&["--log-retain-entries", "22"]))
            .expect("valid");
        std::env::remove_var("TRIREME_LOG_RETAIN_ENTRIES");
        assert_eq!(env_only.log_retain_entries, 21, "environment over file");
        assert_eq!(flag_too.log_retain_entries, 22, "flag over environment");
    }

    #[test]
    fn the_printed_configuration_reads_back() {
        let c = Config::layered(
            None,
            &flags(&[
                "--node-id=2",
                "--initial-cluster=1=127.0.0.1:1,2=127.0.0.1:2",
            ]),
        )
        .expect("valid");
        let printed = toml::to_string(&c).expect("print");
        let f = file(&printed);
        assert_eq!(
            Config::layered(Some(f.path()), &Overrides::default()).expect("reads"),
            c
        );
    }

    #[test]
    fn a_member_flag_replaces_the_file_members() {
        let f = file("node_id = 1\n[initial_cluster]\n1 = \"127.0.0.1:1\"\n3 = \"127.0.0.1:3\"\n");
        let from_file = Config::layered(Some(f.path()), &Overrides::default()).expect("valid");
        assert_eq!(
            from_file.initial_cluster.keys().collect::<Vec<_>>(),
            [&1, &3]
        );
        let c = Config::layered(
            Some(f.path()),
            &flags(&["--initial-cluster", "1=127.0.0.1:5,2=127.0.0.1:6"]),
        )
        .expect("valid");
        assert_eq!(
            c.initial_cluster,
            BTreeMap::from([
                (1, "127.0.0.1:5".to_string()),
                (2, "127.0.0.1:6".to_string())
            ])
        );
    }

    #[test]
    fn errors_name_the_layer_and_the_problem() {
        let f = file("fc_limit = \"many\"\n");
        let err = Config::layered(Some(f.path()), &Overrides::default())
            .expect_err("wrong type")
            .to_string();
        assert!(
            err.contains("fc_limit") && err.contains(&f.path().display().to_string()),
            "{err}"
        );
        let f = file("nodeid = 3\n");
        let err = Config::layered(Some(f.path()), &Overrides::default())
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("nodeid"), "{err}");
        let err = Config::layered(None, &flags(&["--heartbeat-ms", "400"]))
            .expect_err("validated")
            .to_string();
        assert!(err.contains("heartbeat_ms (400)"), "{err}");
        let err = Flags::try_parse_from(["trireme-server", "--initial-cluster", "1:x"])
            .expect_err("bad members")
            .to_string();
        assert!(err.contains("not ID=HOST:PORT"), "{err}");
    }

    #[test]
    fn durations_take_units_and_refuse_overflow() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h 30m"), Ok(5_400_000));
        assert_eq!(
            parse_duration_ms(" 3 "),
            Ok(3_000),
            "a plain number is seconds"
        );
        assert_eq!(parse_duration_ms("0"), Ok(0));
        // The old parser multiplied without a check: these wrapped around.
        for huge in [
            "18446744073709551615",
            "18446744073709551615ms",
            "999999999999999999h",
        ] {
            let err = parse_duration_ms(huge).expect_err(huge);
            assert!(err.contains(huge), "{err}");
        }
        for junk in ["", "s", "ten seconds", "5 parsecs", "-1s"] {
            let err = parse_duration_ms(junk).expect_err(junk);
            assert!(err.contains("not a duration"), "{junk:?}: {err}");
        }
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
