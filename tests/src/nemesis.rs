//! Nemeses: the faults of the chaos tier, injected into a [`NetCluster`], each
//! recorded in a [`FaultLog`] with whether it was really installed (checked,
//! not assumed: a stopped process is seen in state `T`, a rule is read back
//! from iptables, a preload library is seen mapped in the process, a disk is
//! seen full, a crash point is seen in the node's log).
//!
//! | fault | mechanism |
//! |---|---|
//! | kill (one, leader, minority, all) + restart | SIGKILL by pid; restart on the same data directory |
//! | pause (leader, follower) | SIGSTOP / SIGCONT, held past the election timeout |
//! | partition (one node, leader in minority, leader in majority, one-way, ring/bridge) | iptables DROP in the receiving node's namespace, or the proxy; after a cut into two sides, the minority must refuse fast ([`crate::refusal`]) |
//! | packet loss | iptables `statistic --mode random` DROP of peer packets |
//! | latency | the proxy only (`tc netem` is tried and recorded as not installed when the kernel lacks it) |
//! | clock jump / strobe | libfaketime's timestamp file of a node started with the library preloaded |
//! | disk full | a filler file on the node's size-limited tmpfs until `ENOSPC` |
//! | fsync failure | `fiu-ctrl` enabling `posix/io/sync/*` in a node started with libfiu preloaded |
//! | crash point | restart with `FAILPOINTS=<name>=1*return` (the tests' server has failpoints compiled in), wait for the abort |
//! | crafted peer messages | `Forward` / `AppendEntries` of [`crate::hostile`] sent to every running node; each must be refused |
//! | large-value burst | 64 writers of 64 KiB values and one of 12 MiB transactions ([`LargeValueBurst`]), installed once a write is acknowledged |
//!
//! [`Monitor`] polls every node's status, to show that an intended fault had
//! its effect (a leader change, certification conflicts).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::history::{OpKind, Recorder};
use crate::large_values::LargeValueBurst;
use crate::netns::{run, NetCluster, NetMode, FAKETIME_LIB, FIU_LIBS};

/// One fault event.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// Milliseconds since the scenario started.
    pub time_ms: u64,
    /// What (`kill`, `restart`, `partition`, `heal-partition`, ...).
    pub fault: String,
    /// Which nodes, or the partition's shape.
    pub target: String,
    /// Whether the fault was really in place (checked).
    pub installed: bool,
    /// How it was checked, or why it was not installed.
    pub detail: String,
}

/// Every fault event of a scenario; cheap to clone.
#[derive(Debug, Clone)]
pub struct FaultLog {
    start: Instant,
    events: Arc<Mutex<Vec<FaultEvent>>>,
    recorders: Vec<Recorder>,
}

impl FaultLog {
    /// A log whose clock starts at `start`; events are also written into
    /// `recorders`' histories as nemesis operations.
    pub fn new(start: Instant, recorders: Vec<Recorder>) -> FaultLog {
        FaultLog {
            start,
            events: Arc::new(Mutex::new(Vec::new())),
            recorders,
        }
    }

    /// Records an event (and prints it).
    pub fn record(
        &self,
        fault: &str,
        target: impl Into<String>,
        installed: bool,
        detail: impl Into<String>,
    ) -> FaultEvent {
        let e = FaultEvent {
            time_ms: self.start.elapsed().as_millis() as u64,
            fault: fault.to_string(),
            target: target.into(),
            installed,
            detail: detail.into(),
        };
        let text = format!(
            "{} {} {}{}",
            e.fault,
            e.target,
            if e.installed { "" } else { "NOT INSTALLED " },
            e.detail
        );
        for r in &self.recorders {
            r.nemesis(OpKind::Info, text.clone());
        }
        let _ = writeln!(
            std::io::stderr(),
            "  [{:>6.1}s] nemesis: {text}",
            e.time_ms as f64 / 1000.0
        );
        self.events.lock().unwrap().push(e.clone());
        e
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.events.lock().unwrap().clone()
    }

    /// How many events of `fault` were installed.
    pub fn installed(&self, fault: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.fault == fault && e.installed)
            .count()
    }

    /// Events of `fault` that were not installed.
    pub fn not_installed(&self, fault: &str) -> Vec<FaultEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.fault == fault && !e.installed)
            .cloned()
            .collect()
    }
}

/// The shapes of partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Partition {
    /// One random node cut off from every other node.
    IsolateOne,
    /// The leader alone (or with a minority) on the minority side.
    LeaderInMinority,
    /// The leader on the majority side; a minority cut off.
    LeaderInMajority,
    /// Packets from one node to another dropped, the other way kept.
    OneWay,
    /// Every node sees a majority but no two majorities agree: a ring for 5
    /// or more nodes (each node reaches its two neighbours); for 3 nodes, a
    /// bridge (two nodes cannot reach each other, the third reaches both).
    Ring,
}

/// What one nemesis episode does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum FaultKind {
    /// SIGKILL a random node, restart it later.
    KillOne,
    /// SIGKILL the leader, restart it later.
    KillLeader,
    /// SIGKILL a minority, restart it later.
    KillMinority,
    /// SIGKILL every node at once, restart them all.
    KillAll,
    /// SIGSTOP the leader past the election timeout.
    PauseLeader,
    /// SIGSTOP a follower past the election timeout.
    PauseFollower,
    /// A network partition.
    Partition(Partition),
    /// Drop this fraction of a minority's incoming peer packets.
    Loss(f64),
    /// Delay every peer link by this many milliseconds (proxy only).
    Latency(u64),
    /// Jump a node's wall clock (libfaketime).
    ClockJump,
    /// Make a node's wall clock run fast by repeated small jumps.
    ClockStrobe,
    /// Fill the leader's disk.
    DiskFullLeader,
    /// Fill a follower's disk.
    DiskFullFollower,
    /// Make the leader's fsyncs fail.
    FsyncFailLeader,
    /// Make a follower's fsyncs fail.
    FsyncFailFollower,
    /// Crash one node at a named crash point.
    CrashPoint(&'static str),
    /// Crash every node at a named crash point (they all reach it).
    CrashPointAll(&'static str),
    /// Kill a follower, let the leader snapshot and purge its log past it,
    /// restart it armed with `crash-mid-snapshot-install`, so that it aborts
    /// while installing the snapshot it is sent (needs a small
    /// `snapshot_every_entries` and `log_retain_entries`).
    CrashSnapshotInstall,
    /// Send every crafted peer message of [`crate::hostile`] to every
    /// running node; a message not refused is recorded as
    /// `crafted-peer-message-accepted`.
    CraftedPeerMessages,
    /// Many concurrent writers of large values (see [`LargeValueBurst`]).
    LargeValueBurst,
}

impl FaultKind {
    /// A short name for logs and summaries.
    pub fn name(&self) -> String {
        match self {
            FaultKind::Partition(p) => format!("partition-{p:?}"),
            FaultKind::CrashPoint(n) => format!("crash-point:{n}"),
            FaultKind::CrashPointAll(n) => format!("crash-point-all:{n}"),
            FaultKind::Loss(p) => format!("loss-{p}"),
            FaultKind::Latency(ms) => format!("latency-{ms}ms"),
            other => format!("{other:?}"),
        }
    }
}

/// Injects faults into a cluster and records them.
pub struct Nemesis {
    /// The cluster.
    pub cluster: Arc<NetCluster>,
    /// Every event.
    pub log: FaultLog,
    rng: StdRng,
    /// Filler files of full disks, by node.
    fillers: BTreeMap<u64, std::path::PathBuf>,
    /// Nodes whose fsyncs fail.
    fsync_broken: BTreeSet<u64>,
    /// Nodes whose clock is skewed.
    skewed: BTreeSet<u64>,
    /// Packets dropped by packet-loss rules, summed at each heal.
    pub loss_dropped: u64,
    /// Exits of each node that a fault caused on purpose (a crash point
    /// reached, a node stopping on an I/O fault); any other exit is a crash.
    pub expected_exits: BTreeMap<u64, usize>,
    /// Exit counts of nodes when an I/O fault was put on them.
    io_exits_base: BTreeMap<u64, usize>,
    partitioned: bool,
    lossy: bool,
    delayed: bool,
    burst: Option<LargeValueBurst>,
}

/// What a crash point's or an I/O fault's node did.
fn exit_or_refusal(cluster: &NetCluster, id: u64) -> Option<String> {
    let mut n = cluster.node(id);
    if !n.is_running() {
        let status = n.exits.last().map(|e| e.status.clone()).unwrap_or_default();
        return Some(format!("node {id} exited ({status})"));
    }
    None
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn maps_contain(pid: u32, lib: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(lib))
}

impl Nemesis {
    /// A nemesis over `cluster`, its random choices seeded by `seed`.
    pub fn new(cluster: Arc<NetCluster>, log: FaultLog, seed: u64) -> Nemesis {
        Nemesis {
            cluster,
            log,
            rng: StdRng::seed_from_u64(seed),
            fillers: BTreeMap::new(),
            fsync_broken: BTreeSet::new(),
            skewed: BTreeSet::new(),
            loss_dropped: 0,
            expected_exits: BTreeMap::new(),
            io_exits_base: BTreeMap::new(),
            partitioned: false,
            lossy: false,
            delayed: false,
            burst: None,
        }
    }

    fn ids(&self) -> Vec<u64> {
        self.cluster.ids()
    }

    async fn leader(&mut self) -> Option<u64> {
        self.cluster.current_leader().await
    }

    async fn leader_or_random(&mut self) -> u64 {
        match self.leader().await {
            Some(l) => l,
            None => self.random_running(),
        }
    }

    fn random_running(&mut self) -> u64 {
        let running = self.cluster.running();
        let pool = if running.is_empty() {
            self.ids()
        } else {
            running
        };
        *pool.choose(&mut self.rng).expect("a node")
    }

    async fn follower(&mut self) -> u64 {
        let leader = self.leader().await;
        let pool: Vec<u64> = self
            .cluster
            .running()
            .into_iter()
            .filter(|id| Some(*id) != leader)
            .collect();
        match pool.choose(&mut self.rng) {
            Some(id) => *id,
            None => self.random_running(),
        }
    }

    /// A random minority ((n-1)/2 nodes).
    fn minority(&mut self) -> Vec<u64> {
        let mut ids = self.ids();
        ids.shuffle(&mut self.rng);
        ids.truncate((self.cluster.len() - 1) / 2);
        ids.sort();
        ids
    }

    // ---- processes ---------------------------------------------------------

    /// SIGKILLs these nodes.
    pub fn kill(&mut self, ids: &[u64], what: &str) {
        for id in ids {
            let pid = self.cluster.node(*id).pid();
            let res = self.cluster.kill(*id);
            let gone = !self.cluster.is_running(*id);
            self.log.record(
                "kill",
                format!("n{id}"),
                pid.is_some() && res.is_ok() && gone,
                match (pid, res) {
                    (Some(p), Ok(())) => format!("{what}: SIGKILL pid {p}"),
                    (None, _) => format!("{what}: was not running"),
                    (_, Err(e)) => format!("{what}: {e}"),
                },
            );
        }
    }

    /// Starts every node whose process is not running.
    pub fn restart_dead(&mut self) {
        for id in self.ids() {
            if self.cluster.is_running(id) {
                continue;
            }
            let res = self.cluster.ensure_running(id);
            let pid = self.cluster.node(id).pid();
            self.log.record(
                "restart",
                format!("n{id}"),
                res.is_ok() && pid.is_some(),
                match res {
                    Ok(_) => format!("pid {}", pid.unwrap_or(0)),
                    Err(e) => format!("{e:#}"),
                },
            );
        }
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64, what: &str) {
        let res = self.cluster.pause(id);
        let pid = self.cluster.node(id).pid();
        // Signal delivery is asynchronous: wait (bounded) for the stop.
        let t = Instant::now();
        let mut state = pid.and_then(proc_state);
        while res.is_ok() && state != Some('T') && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
            state = pid.and_then(proc_state);
        }
        self.log.record(
            "pause",
            format!("n{id}"),
            res.is_ok() && state == Some('T'),
            match res {
                Ok(()) => format!("{what}: SIGSTOP pid {}, state {state:?}", pid.unwrap_or(0)),
                Err(e) => format!("{what}: {e:#}"),
            },
        );
    }

    /// SIGCONTs every paused node.
    pub fn resume_all(&mut self) {
        for id in self.ids() {
            if !self.cluster.node(id).paused {
                continue;
            }
            let res = self.cluster.resume(id);
            let pid = self.cluster.node(id).pid();
            let t = Instant::now();
            let mut state = pid.and_then(proc_state);
            while res.is_ok() && state == Some('T') && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
                state = pid.and_then(proc_state);
            }
            self.log.record(
                "resume",
                format!("n{id}"),
                res.is_ok() && state != Some('T'),
                format!("SIGCONT, state {state:?}"),
            );
        }
    }

    // ---- network -----------------------------------------------------------

    /// The directed links a partition blocks, and its description.
    pub async fn partition_links(&mut self, shape: Partition) -> (Vec<(u64, u64)>, String) {
        let ids = self.ids();
        let n = ids.len();
        let cut = |a: &[u64], b: &[u64]| {
            let mut links = Vec::new();
            for x in a {
                for y in b {
                    links.push((*x, *y));
                    links.push((*y, *x));
                }
            }
            links
        };
        let rest = |side: &[u64]| -> Vec<u64> {
            ids.iter().copied().filter(|i| !side.contains(i)).collect()
        };
        match shape {
            Partition::IsolateOne => {
                let one = [*ids.choose(&mut self.rng).expect("node")];
                (
                    cut(&one, &rest(&one)),
                    format!("{one:?} | {:?}", rest(&one)),
                )
            }
            Partition::LeaderInMinority => {
                let leader = self.leader_or_random().await;
                let mut minority = vec![leader];
                let mut others = rest(&minority);
                others.shuffle(&mut self.rng);
                minority.extend(others.iter().take((n - 1) / 2 - 1));
                minority.sort();
                let majority = rest(&minority);
                (
                    cut(&minority, &majority),
                    format!("leader n{leader} in minority {minority:?} | {majority:?}"),
                )
            }
            Partition::LeaderInMajority => {
                let leader = self.leader_or_random().await;
                let mut others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
                others.shuffle(&mut self.rng);
                let mut minority: Vec<u64> = others.into_iter().take((n - 1) / 2).collect();
                minority.sort();
                let majority = rest(&minority);
                (
                    cut(&minority, &majority),
                    format!("leader n{leader} in majority {majority:?} | {minority:?}"),
                )
            }
            Partition::OneWay => {
                // Packets from the leader to one follower are lost; the
                // follower's packets still reach the leader.
                let from = self.leader_or_random().await;
                let to = *ids
                    .iter()
                    .filter(|i| **i != from)
                    .collect::<Vec<_>>()
                    .choose(&mut self.rng)
                    .expect("another node");
                (vec![(from, *to)], format!("n{from} -> n{to} dropped"))
            }
            Partition::Ring => {
                let mut order = ids.clone();
                order.shuffle(&mut self.rng);
                if n <= 4 {
                    // A bridge: the ends cannot talk; the middle reaches both.
                    let (a, b) = (order[0], order[n - 1]);
                    (
                        cut(&[a], &[b]),
                        format!("bridge: n{a} x n{b}, n{} in the middle", order[1]),
                    )
                } else {
                    let mut links = Vec::new();
                    for (i, x) in order.iter().enumerate() {
                        for (j, y) in order.iter().enumerate() {
                            let d = (i as i64 - j as i64).rem_euclid(n as i64);
                            if x != y && d != 1 && d != n as i64 - 1 {
                                links.push((*x, *y));
                            }
                        }
                    }
                    (
                        links,
                        format!("ring {order:?}: each node reaches its neighbours"),
                    )
                }
            }
        }
    }

    /// Installs a partition; after a cut into two sides, checks that the
    /// minority refuses fast (event `minority-refused`, see [`crate::refusal`]).
    pub async fn partition(&mut self, shape: Partition) {
        let (links, desc) = self.partition_links(shape).await;
        self.partitioned = true;
        let cluster = self.cluster.clone();
        let cut = Instant::now();
        let res = tokio::task::block_in_place(|| cluster.block_links(&links));
        let installed = res.is_ok() && self.links_blocked(&links);
        self.log.record(
            "partition",
            format!("{shape:?}"),
            installed,
            match res {
                Ok(()) => format!(
                    "{desc}; {} links blocked {}",
                    links.len(),
                    self.cluster.link_rules()
                ),
                Err(e) => format!("{desc}: {e:#}"),
            },
        );
        let two_sides = matches!(
            shape,
            Partition::IsolateOne | Partition::LeaderInMinority | Partition::LeaderInMajority
        );
        if installed && two_sides {
            let minority = crate::refusal::minority_of(&self.ids(), &links);
            let checked = crate::refusal::minority_refuses(&self.cluster, &minority, cut).await;
            self.log.record(
                "minority-refused",
                format!("{shape:?} {minority:?}"),
                checked.is_ok(),
                match checked {
                    Ok(after) => format!("NON_PRIMARY and UNAVAILABLE after {after:?}"),
                    Err(e) => format!("{e:#}"),
                },
            );
        }
    }

    fn links_blocked(&self, links: &[(u64, u64)]) -> bool {
        match self.cluster.mode {
            NetMode::Proxy => {
                let p = self.cluster.proxy.as_ref().expect("proxy");
                links.iter().all(|(a, b)| p.rule(*a, *b).blocked)
            }
            NetMode::Netns => {
                let rules = self.cluster.link_rules();
                let count = rules.matches("-j DROP").count();
                count >= links.len()
            }
        }
    }

    /// Removes every partition.
    pub fn heal_partition(&mut self) {
        self.partitioned = false;
        let cluster = self.cluster.clone();
        let res = tokio::task::block_in_place(|| cluster.heal_links());
        let left = self.cluster.link_rules();
        self.log.record(
            "heal-partition",
            "all",
            res.is_ok() && !left.contains("DROP"),
            match res {
                Ok(()) => "partition rules flushed".to_string(),
                Err(e) => format!("{e:#}"),
            },
        );
    }

    /// Packet loss on `ids`.
    pub fn loss(&mut self, ids: &[u64], p: f64) {
        self.lossy = true;
        for id in ids {
            let cluster = self.cluster.clone();
            let res = tokio::task::block_in_place(|| cluster.set_loss(*id, p));
            self.log.record(
                "loss",
                format!("n{id}"),
                res.is_ok(),
                match res {
                    Ok(()) => format!("iptables statistic random p={p} on peer packets"),
                    Err(e) => format!("{e:#}"),
                },
            );
        }
    }

    /// Removes packet loss; records how many packets were dropped.
    pub fn heal_loss(&mut self) {
        self.lossy = false;
        let drops: Vec<(u64, u64)> = self
            .ids()
            .into_iter()
            .map(|id| (id, self.cluster.loss_drops(id)))
            .collect();
        self.loss_dropped += drops.iter().map(|(_, d)| d).sum::<u64>();
        let cluster = self.cluster.clone();
        let res = tokio::task::block_in_place(|| cluster.heal_loss());
        self.log.record(
            "heal-loss",
            "all",
            res.is_ok(),
            format!("packets dropped by node: {drops:?}"),
        );
    }

    /// Latency on every peer link (proxy), or netem (recorded as not
    /// installed where the kernel has none).
    pub fn latency(&mut self, ms: u64) {
        self.delayed = true;
        match self.cluster.mode {
            NetMode::Proxy => {
                let p = self.cluster.proxy.as_ref().expect("proxy");
                let ids = self.cluster.ids();
                let links: Vec<(u64, u64)> = ids
                    .iter()
                    .flat_map(|a| ids.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
                    .collect();
                p.set_delay(&links, Duration::from_millis(ms));
                let ok = links
                    .iter()
                    .all(|(a, b)| p.rule(*a, *b).delay == Duration::from_millis(ms));
                self.log.record(
                    "latency",
                    "all links",
                    ok,
                    format!("proxy delays every chunk by {ms} ms"),
                );
            }
            NetMode::Netns => {
                let id = self.random_running();
                let cluster = self.cluster.clone();
                let res = tokio::task::block_in_place(|| cluster.try_netem(id, ms));
                self.log.record(
                    "latency",
                    format!("n{id}"),
                    res.is_ok(),
                    match res {
                        Ok(()) => format!("tc netem delay {ms}ms"),
                        Err(e) => format!("tc netem unavailable: {e:#}"),
                    },
                );
            }
        }
    }

    /// Removes latency.
    pub fn heal_latency(&mut self) {
        self.delayed = false;
        match self.cluster.mode {
            NetMode::Proxy => {
                let p = self.cluster.proxy.as_ref().expect("proxy");
                p.clear_delays();
                let delayed = p
                    .stats()
                    .delayed_chunks
                    .load(std::sync::atomic::Ordering::Relaxed);
                self.log.record(
                    "heal-latency",
                    "all links",
                    true,
                    format!("{delayed} chunks delayed so far"),
                );
            }
            NetMode::Netns => {
                for id in self.ids() {
                    self.cluster.clear_netem(id);
                }
            }
        }
    }

    // ---- clocks ------------------------------------------------------------

    /// Sets node `id`'s fake clock offset (libfaketime syntax, e.g. `+3600`, `-86400`).
    pub fn clock_set(&mut self, id: u64, offset_s: i64, what: &str) {
        let (file, pid) = {
            let n = self.cluster.node(id);
            (n.faketime_file.clone(), n.pid())
        };
        let Some(file) = file else {
            self.log.record(
                "clock",
                format!("n{id}"),
                false,
                "node not started with libfaketime",
            );
            return;
        };
        let spec = format!("{offset_s:+}\n");
        let res = std::fs::write(&file, &spec);
        let mapped = pid.is_some_and(|p| maps_contain(p, FAKETIME_LIB));
        if offset_s != 0 {
            self.skewed.insert(id);
        } else {
            self.skewed.remove(&id);
        }
        self.log.record(
            "clock",
            format!("n{id}"),
            res.is_ok() && mapped,
            format!(
                "{what}: offset {offset_s:+} s (libfaketime mapped: {mapped}; takes effect within 1 s)"
            ),
        );
    }

    /// Resets every skewed clock.
    pub fn clock_reset(&mut self) {
        for id in self.skewed.clone() {
            self.clock_set(id, 0, "reset");
        }
    }

    // ---- disks -------------------------------------------------------------

    /// Fills node `id`'s tmpfs until `ENOSPC`.
    pub fn disk_fill(&mut self, id: u64, what: &str) {
        self.note_io_fault(id);
        let fs_dir = self.cluster.node(id).fs_dir.clone();
        let Some(fs_dir) = fs_dir else {
            self.log.record(
                "disk-full",
                format!("n{id}"),
                false,
                "node data is not on a tmpfs",
            );
            return;
        };
        let path = fs_dir.join("filler");
        let res = (|| -> std::io::Result<(u64, bool)> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let chunk = vec![0u8; 1 << 20];
            let mut written = 0u64;
            loop {
                match f.write(&chunk) {
                    Ok(0) => return Ok((written, true)),
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        return Ok((written, true));
                    }
                    Err(e) => return Err(e),
                }
                if written > 64 << 30 {
                    return Ok((written, false));
                }
            }
        })();
        self.fillers.insert(id, path);
        let (installed, detail) = match res {
            Ok((w, full)) => (
                full,
                format!("{what}: {} MiB filler, ENOSPC: {full}", w >> 20),
            ),
            Err(e) => (false, format!("{what}: {e}")),
        };
        self.log
            .record("disk-full", format!("n{id}"), installed, detail);
    }

    /// Frees every filled disk.
    pub fn disk_free(&mut self) {
        for (id, path) in std::mem::take(&mut self.fillers) {
            let res = std::fs::remove_file(&path);
            self.log.record(
                "disk-free",
                format!("n{id}"),
                res.is_ok(),
                format!("removed {}", path.display()),
            );
        }
    }

    // ---- fsync -------------------------------------------------------------

    fn fiu_ctrl(&self, id: u64, command: &str) -> anyhow::Result<()> {
        let (prefix, pid) = {
            let n = self.cluster.node(id);
            (n.fiu_prefix.clone(), n.pid())
        };
        let prefix = prefix.ok_or_else(|| anyhow::anyhow!("node not started with libfiu"))?;
        let pid = pid.ok_or_else(|| anyhow::anyhow!("node {id} is not running"))?;
        if !maps_contain(pid, FIU_LIBS[1]) {
            anyhow::bail!("libfiu is not mapped in pid {pid}");
        }
        let p = prefix.display().to_string();
        run("fiu-ctrl", &["-f", &p, "-c", command, &pid.to_string()])?;
        Ok(())
    }

    /// Remembers how often node `id` had exited when an I/O fault was put on it.
    fn note_io_fault(&mut self, id: u64) {
        let exits = self.cluster.node(id).exits.len();
        self.io_exits_base.entry(id).or_insert(exits);
    }

    /// Exits of nodes under I/O faults are what they must do: expected.
    fn settle_io_exits(&mut self) {
        for (id, base) in std::mem::take(&mut self.io_exits_base) {
            let mut n = self.cluster.node(id);
            n.poll_exit();
            let new = n.exits.len().saturating_sub(base);
            drop(n);
            *self.expected_exits.entry(id).or_insert(0) += new;
        }
    }

    /// Makes node `id`'s fsync/fdatasync calls fail (EIO and friends).
    pub fn fsync_fail(&mut self, id: u64, what: &str) {
        self.note_io_fault(id);
        let res = tokio::task::block_in_place(|| self.fiu_ctrl(id, "enable name=posix/io/sync/*"));
        if res.is_ok() {
            self.fsync_broken.insert(id);
        }
        self.log.record(
            "fsync-fail",
            format!("n{id}"),
            res.is_ok(),
            match res {
                Ok(()) => format!("{what}: fiu-ctrl enabled posix/io/sync/*"),
                Err(e) => format!("{what}: {e:#}"),
            },
        );
    }

    /// Whether node `id` stopped after an I/O fault: exited, or refuses
    /// (its status says it is not serving, or it does not answer at all).
    pub async fn io_fault_effect(&self, id: u64) -> Option<String> {
        if let Some(exit) = exit_or_refusal(&self.cluster, id) {
            return Some(exit);
        }
        match self.cluster.status(id).await {
            Ok(s) if s.role == "shutdown" || s.state == "NON_PRIMARY" => Some(format!(
                "node {id} refuses: role {} state {}",
                s.role, s.state
            )),
            Ok(_) => None,
            Err(e) => Some(format!("node {id} does not answer: {e}")),
        }
    }

    /// Restores fsync on every node where it was broken.
    pub fn fsync_ok(&mut self) {
        for id in std::mem::take(&mut self.fsync_broken) {
            if !self.cluster.is_running(id) {
                self.log.record(
                    "fsync-ok",
                    format!("n{id}"),
                    true,
                    "the node had exited; it restarts without the fault",
                );
                continue;
            }
            let res =
                tokio::task::block_in_place(|| self.fiu_ctrl(id, "disable name=posix/io/sync/*"));
            self.log.record(
                "fsync-ok",
                format!("n{id}"),
                res.is_ok(),
                match res {
                    Ok(()) => "fiu-ctrl disabled posix/io/sync/*".to_string(),
                    Err(e) => format!("{e:#}"),
                },
            );
        }
    }

    // ---- crash points ------------------------------------------------------

    /// Restarts `ids` with `FAILPOINTS=<name>=1*return` and waits (up to
    /// `deadline`) for each to abort there; then starts them again clean.
    pub async fn crash_point(&mut self, ids: &[u64], name: &str, deadline: Duration) {
        let spec = format!("{name}=1*return");
        for id in ids {
            let res = self
                .cluster
                .restart_with_env(*id, &[("FAILPOINTS", spec.as_str())]);
            if let Err(e) = res {
                self.log.record(
                    "crash-point",
                    format!("n{id}"),
                    false,
                    format!("{name}: {e:#}"),
                );
            }
        }
        let start = Instant::now();
        let needle = format!("crash point {name} reached");
        let mut pending: BTreeSet<u64> = ids.iter().copied().collect();
        // Once a majority has crashed, nothing commits: a node that had not
        // yet applied the entry they crashed on never will.
        let majority = self.ids().len() / 2 + 1;
        let mut stuck_since: Option<Instant> = None;
        while !pending.is_empty() && start.elapsed() < deadline {
            if ids.len() - pending.len() >= majority {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(3) {
                    for id in std::mem::take(&mut pending) {
                        let _ = self.cluster.kill(id);
                        self.log.record(
                            "kill",
                            format!("n{id}"),
                            true,
                            format!(
                                "{name}: a majority crashed there first, so no entry was left to reach it; SIGKILL"
                            ),
                        );
                    }
                    break;
                }
            }
            for id in pending.clone() {
                if !self.cluster.is_running(id) {
                    pending.remove(&id);
                    *self.expected_exits.entry(id).or_insert(0) += 1;
                    let reached = self.cluster.log_contains(id, &needle);
                    let status = self
                        .cluster
                        .node(id)
                        .exits
                        .last()
                        .map(|e| e.status.clone())
                        .unwrap_or_default();
                    self.log.record(
                        "crash-point",
                        format!("n{id}"),
                        reached,
                        format!(
                            "{name}: exited ({status}) after {:.1} s; log says reached: {reached}",
                            start.elapsed().as_secs_f64()
                        ),
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in pending {
            self.log.record(
                "crash-point",
                format!("n{id}"),
                false,
                format!("{name}: not reached within {deadline:?}"),
            );
        }
        // Every node runs again, without the failpoint.
        for id in ids {
            if self.cluster.is_running(*id) {
                let _ = self.cluster.kill(*id);
            }
        }
        self.restart_dead();
    }

    // ---- episodes ----------------------------------------------------------

    /// Installs one fault of `kind`.
    pub async fn install(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::KillOne => {
                let id = self.random_running();
                self.kill(&[id], "one");
            }
            FaultKind::KillLeader => {
                let id = self.leader_or_random().await;
                self.kill(&[id], "leader");
            }
            FaultKind::KillMinority => {
                let ids = self.minority();
                self.kill(&ids, "minority");
            }
            FaultKind::KillAll => {
                let ids = self.ids();
                self.kill(&ids, "all");
            }
            FaultKind::PauseLeader => {
                let id = self.leader_or_random().await;
                self.pause(id, "leader");
            }
            FaultKind::PauseFollower => {
                let id = self.follower().await;
                self.pause(id, "follower");
            }
            FaultKind::Partition(p) => self.partition(p).await,
            FaultKind::Loss(p) => {
                let mut ids = self.minority();
                if ids.is_empty() {
                    ids = vec![self.random_running()];
                }
                // Sometimes the leader too.
                if self.rng.gen_bool(0.5) {
                    if let Some(l) = self.leader().await {
                        if !ids.contains(&l) {
                            ids.push(l);
                        }
                    }
                }
                self.loss(&ids, p);
            }
            FaultKind::Latency(ms) => self.latency(ms),
            FaultKind::ClockJump => {
                let id = self.random_running();
                let magnitudes = [5i64, 60, 600, 3600, 86_400, 7 * 86_400];
                let m = *magnitudes.choose(&mut self.rng).expect("magnitude");
                let sign = if self.rng.gen_bool(0.5) { 1 } else { -1 };
                self.clock_set(id, sign * m, "jump");
            }
            FaultKind::ClockStrobe => {
                let id = self.random_running();
                let mut offset = 0i64;
                for _ in 0..5 {
                    offset += self.rng.gen_range(1..30);
                    self.clock_set(id, offset, "strobe");
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
            }
            FaultKind::DiskFullLeader => {
                let id = self.leader_or_random().await;
                self.disk_fill(id, "leader");
            }
            FaultKind::DiskFullFollower => {
                let id = self.follower().await;
                self.disk_fill(id, "follower");
            }
            FaultKind::FsyncFailLeader => {
                let id = self.leader_or_random().await;
                self.fsync_fail(id, "leader");
            }
            FaultKind::FsyncFailFollower => {
                let id = self.follower().await;
                self.fsync_fail(id, "follower");
            }
            FaultKind::CrashPoint(name) => {
                let id = if self.rng.gen_bool(0.5) {
                    self.leader_or_random().await
                } else {
                    self.follower().await
                };
                self.crash_point(&[id], name, Duration::from_secs(20)).await;
            }
            FaultKind::CrashPointAll(name) => {
                let ids = self.ids();
                // Every node must reach the point on the same entries: first let
                // a node still catching up (after a snapshot crash) get there.
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(20) {
                    let mut applied = Vec::new();
                    for id in &ids {
                        if let Ok(s) = self.cluster.status(*id).await {
                            applied.push(s.applied_seqno);
                        }
                    }
                    let spread = applied
                        .iter()
                        .max()
                        .zip(applied.iter().min())
                        .map(|(a, b)| a - b);
                    if applied.len() == ids.len() && spread.is_some_and(|d| d < 50) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                self.crash_point(&ids, name, Duration::from_secs(20)).await;
            }
            FaultKind::CrashSnapshotInstall => self.crash_snapshot_install().await,
            FaultKind::CraftedPeerMessages => self.crafted_peer_messages().await,
            FaultKind::LargeValueBurst => self.large_value_burst().await,
        }
    }

    /// See [`FaultKind::CraftedPeerMessages`]. Installed on a node when every
    /// message reached it and was refused as it must be.
    pub async fn crafted_peer_messages(&mut self) {
        let messages = match crate::hostile::crafted() {
            Ok(m) => m,
            Err(e) => {
                self.log
                    .record("crafted-peer-message", "all", false, format!("{e:#}"));
                return;
            }
        };
        for id in self.cluster.running() {
            let addr = self.cluster.peer_endpoint(id);
            let (mut refused, mut unreachable) = (0, Vec::new());
            for m in &messages {
                match crate::hostile::send(&addr, m).await {
                    crate::hostile::Answer::Refused => refused += 1,
                    crate::hostile::Answer::Unreachable(why) => unreachable.push(why),
                    crate::hostile::Answer::Wrong(what) => {
                        self.log.record(
                            "crafted-peer-message-accepted",
                            format!("node {id}"),
                            true,
                            what,
                        );
                    }
                }
            }
            self.log.record(
                "crafted-peer-message",
                format!("node {id}"),
                refused == messages.len(),
                format!(
                    "{refused} of {} refused; not delivered: {unreachable:?}",
                    messages.len()
                ),
            );
        }
    }

    /// Starts a [`LargeValueBurst`] through every node; installed once one
    /// of its writes is acknowledged.
    pub async fn large_value_burst(&mut self) {
        let clients: Vec<_> = self
            .ids()
            .into_iter()
            .filter_map(|id| self.cluster.client(id).ok())
            .collect();
        let burst = LargeValueBurst::start(&clients, 64);
        let acked = burst.wait_acked(Duration::from_secs(10)).await;
        self.log.record(
            "large-value-burst",
            "all nodes",
            acked,
            if acked {
                "64 writers of 64 KiB values, one of 12 MiB transactions: writes acknowledged"
            } else {
                "no write of the burst acknowledged within 10 s"
            },
        );
        self.burst = Some(burst);
    }

    /// Stops the burst, if one runs.
    pub async fn stop_burst(&mut self) {
        if let Some(burst) = self.burst.take() {
            let (acked, failed) = burst.stop().await;
            self.log.record(
                "heal-large-value-burst",
                "all nodes",
                true,
                format!("{acked} burst writes acknowledged, {failed} failed"),
            );
        }
    }

    /// See [`FaultKind::CrashSnapshotInstall`].
    pub async fn crash_snapshot_install(&mut self) {
        let id = self.follower().await;
        let others: Vec<u64> = self.ids().into_iter().filter(|i| *i != id).collect();
        // Where the follower's log can end when it goes down: it needs a
        // snapshot once every other node has purged its log past that. Its
        // own `last_log_index` is not enough: a follower catching up (after a
        // restart that replays its store's tail) can have a large append
        // written but not yet counted when asked, so take the greatest log
        // end of any node, asked after the kill: no follower's log reaches
        // past the leader's.
        let mut last = match self.cluster.status(id).await {
            Ok(s) => s.last_log_index,
            Err(_) => 0,
        };
        self.kill(&[id], "follower, to lag behind a snapshot");
        for o in &others {
            if let Ok(s) = self.cluster.status(*o).await {
                last = last.max(s.last_log_index);
            }
        }
        let t = Instant::now();
        let mut purged_past = false;
        while t.elapsed() < Duration::from_secs(40) {
            let mut firsts = Vec::new();
            for o in &others {
                if let Ok(s) = self.cluster.status(*o).await {
                    firsts.push(s.log_first_index);
                }
            }
            if firsts.len() == others.len() && firsts.iter().all(|f| *f > last + 1) {
                purged_past = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !purged_past {
            self.log.record(
                "crash-point",
                format!("n{id}"),
                false,
                format!(
                    "crash-mid-snapshot-install: the others did not purge their logs past index {last} within 40 s"
                ),
            );
        }
        self.crash_point(&[id], "crash-mid-snapshot-install", Duration::from_secs(20))
            .await;
    }

    /// After an I/O fault has been held: records whether the faulty nodes
    /// stopped (exited or refused), which is what they must do.
    pub async fn record_io_effects(&mut self) {
        let nodes: Vec<u64> = self
            .fillers
            .keys()
            .copied()
            .chain(self.fsync_broken.iter().copied())
            .collect();
        for id in nodes {
            let effect = self.io_fault_effect(id).await;
            self.log.record(
                "io-fault-effect",
                format!("n{id}"),
                effect.is_some(),
                effect.unwrap_or_else(|| format!("node {id} still serves normally")),
            );
        }
    }

    /// Heals every fault: resumes, heals the network, resets clocks, frees
    /// disks, restores fsync, and restarts every node that is not running
    /// (nodes that stopped on an I/O fault are restarted too).
    pub async fn heal_all(&mut self) {
        self.resume_all();
        if self.partitioned {
            self.heal_partition();
        }
        if self.lossy {
            self.heal_loss();
        }
        if self.delayed {
            self.heal_latency();
        }
        self.stop_burst().await;
        self.clock_reset();
        let io_nodes: BTreeSet<u64> = self
            .fillers
            .keys()
            .copied()
            .chain(self.fsync_broken.iter().copied())
            .collect();
        self.disk_free();
        self.fsync_ok();
        self.settle_io_exits();
        for id in io_nodes {
            // A node that survived an I/O fault by refusing is restarted: it
            // must come back from its data directory.
            if self.cluster.is_running(id) {
                let _ = self.cluster.kill(id);
                self.log
                    .record("kill", format!("n{id}"), true, "restart after an I/O fault");
            }
        }
        self.restart_dead();
    }

    /// Exits of each node that no fault caused (crashes, refusals to start):
    /// `(node, count, statuses)`.
    pub fn unexpected_exits(&self) -> Vec<(u64, usize, Vec<String>)> {
        let mut out = Vec::new();
        for id in self.ids() {
            let mut n = self.cluster.node(id);
            n.poll_exit();
            let expected = self.expected_exits.get(&id).copied().unwrap_or(0);
            if n.exits.len() > expected {
                let statuses = n.exits.iter().map(|e| e.status.clone()).collect();
                out.push((id, n.exits.len() - expected, statuses));
            }
        }
        out
    }

    /// Heals what `kind` installed.
    pub async fn heal(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::KillOne
            | FaultKind::KillLeader
            | FaultKind::KillMinority
            | FaultKind::KillAll
            | FaultKind::CrashPoint(_)
            | FaultKind::CrashPointAll(_)
            | FaultKind::CrashSnapshotInstall => self.restart_dead(),
            FaultKind::PauseLeader | FaultKind::PauseFollower => self.resume_all(),
            // Nothing stays installed: each message was answered.
            FaultKind::CraftedPeerMessages => {}
            FaultKind::LargeValueBurst => self.stop_burst().await,
            FaultKind::Partition(_) => self.heal_partition(),
            FaultKind::Loss(_) => self.heal_loss(),
            FaultKind::Latency(_) => self.heal_latency(),
            FaultKind::ClockJump | FaultKind::ClockStrobe => self.clock_reset(),
            FaultKind::DiskFullLeader
            | FaultKind::DiskFullFollower
            | FaultKind::FsyncFailLeader
            | FaultKind::FsyncFailFollower => {
                self.record_io_effects().await;
                self.heal_all().await;
            }
        }
    }

    /// Runs episodes until `until`: each picks the next fault of `kinds`
    /// (cycling through a shuffled order, so every kind happens), holds it
    /// for a random time in `hold`, heals it, and waits a random time in
    /// `gap`. Returns the kinds run, in order.
    pub async fn run(
        &mut self,
        kinds: &[FaultKind],
        until: Instant,
        hold: (Duration, Duration),
        gap: (Duration, Duration),
    ) -> Vec<FaultKind> {
        let mut done = Vec::new();
        let mut order: Vec<FaultKind> = Vec::new();
        while Instant::now() + hold.0 < until {
            if order.is_empty() {
                order = kinds.to_vec();
                order.shuffle(&mut self.rng);
            }
            let kind = order.remove(0);
            self.install(kind).await;
            done.push(kind);
            let h = self.rng.gen_range(hold.0..=hold.1);
            let end = (Instant::now() + h).min(until.max(Instant::now() + hold.0));
            tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
            self.heal(kind).await;
            let g = self.rng.gen_range(gap.0..=gap.1);
            let next = (Instant::now() + g).min(until);
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        }
        done
    }
}

/// What the [`Monitor`] saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observations {
    /// Every (node, term, leader) report, deduplicated consecutively per node.
    pub reports: Vec<(u64, u64, u64, u64)>,
    /// Distinct leaders seen.
    pub leaders: BTreeSet<u64>,
    /// Highest term seen.
    pub max_term: u64,
    /// Term of the first report with a leader.
    pub first_term: u64,
    /// Highest certification failure count per node.
    pub cert_failures: BTreeMap<u64, u64>,
    /// Highest commit count per node.
    pub commits: BTreeMap<u64, u64>,
    /// Status polls that failed (node down, paused, cut off).
    pub failed_polls: u64,
}

impl Observations {
    /// Whether leadership changed (a new term with a leader, or another leader).
    pub fn leader_changed(&self) -> bool {
        self.leaders.len() > 1 || (self.first_term > 0 && self.max_term > self.first_term)
    }

    /// Certification failures seen on the node that saw the most.
    pub fn max_cert_failures(&self) -> u64 {
        self.cert_failures.values().copied().max().unwrap_or(0)
    }
}

/// Polls every node's status in the background.
pub struct Monitor {
    obs: Arc<Mutex<Observations>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts polling every `every`.
    pub fn start(cluster: Arc<NetCluster>, every: Duration, start: Instant) -> Monitor {
        let obs = Arc::new(Mutex::new(Observations::default()));
        let o = obs.clone();
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            loop {
                for id in cluster.running() {
                    let res =
                        tokio::time::timeout(Duration::from_secs(1), cluster.status(id)).await;
                    let mut o = o.lock().unwrap();
                    match res {
                        Ok(Ok(s)) => {
                            if s.leader_id != 0 {
                                o.leaders.insert(s.leader_id);
                                if o.first_term == 0 {
                                    o.first_term = s.term;
                                }
                            }
                            o.max_term = o.max_term.max(s.term);
                            let cf = o.cert_failures.entry(id).or_insert(0);
                            *cf = (*cf).max(s.cert_failures);
                            let c = o.commits.entry(id).or_insert(0);
                            *c = (*c).max(s.commits);
                            if last.get(&id) != Some(&(s.term, s.leader_id)) {
                                last.insert(id, (s.term, s.leader_id));
                                o.reports.push((
                                    start.elapsed().as_millis() as u64,
                                    id,
                                    s.term,
                                    s.leader_id,
                                ));
                            }
                        }
                        _ => o.failed_polls += 1,
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Monitor { obs, task }
    }

    /// What was seen so far.
    pub fn observations(&self) -> Observations {
        self.obs.lock().unwrap().clone()
    }

    /// Stops polling (and waits until the poller let go of the cluster);
    /// returns what was seen.
    pub async fn stop(self) -> Observations {
        let obs = self.obs.clone();
        self.task.abort();
        let _ = self.task.await;
        let seen = obs.lock().unwrap().clone();
        seen
    }
}
