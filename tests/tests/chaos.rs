//! The bounded chaos tier: 3-node clusters of the real binary on a network
//! the test controls ([`NetCluster`]), all four workloads at once, faults on a
//! seeded schedule, then heal and check.
//!
//! Each scenario: start the cluster; run the bank, register, set and
//! list-append workloads; require at least 100 ok ops/s before the first
//! fault; inject its faults until 85% of the traffic window, then heal every
//! fault and let the traffic run quiet; wait for every node to reach the same
//! applied seqno, checksum and verdict chain; require a write and a
//! linearizable read through every node within seconds; run the final reads
//! and every checker; require coverage (the intended fault really happened).
//! Histories, the fault log, the status observations and node logs go to
//! `target/chaos/<run>/<scenario>/`, with `summary.json` and `summary.txt` in
//! `target/chaos/<run>/`.
//!
//! Environment:
//! - `TRIREME_CHAOS_SECS`: traffic seconds per scenario (default 50, so that
//!   the whole file ends within ~10 minutes on 2 cores);
//! - `TRIREME_CHAOS_SEED`: the run's seed (default: from the clock; printed);
//! - `TRIREME_CHAOS_ONLY`: comma-separated scenario names to run;
//! - `TRIREME_CHAOS_NET=proxy`: run on the proxy fallback even where network
//!   namespaces are available (packet loss, which needs them, still uses them);
//! - `TRIREME_SOAK=1`: also run the soak tier (5 nodes, every fault composed,
//!   `TRIREME_SOAK_SECS` each, default 300, over `TRIREME_SOAK_SEEDS` seeds,
//!   default 5).
//!
//! Reproduce one scenario: `TRIREME_CHAOS_SEED=<seed> TRIREME_CHAOS_ONLY=<name>
//! cargo test --release -p trireme-tests --test chaos`.
//!
//! The test prints its final line as `N passed, N failed`; a scenario whose
//! prerequisite is missing prints `skipped: <reason>` and is counted as
//! skipped, never as passed, and the final line then says the run was
//! incomplete (never a bare `0 failed`). Under `CI=true`, where `.ci/run` installs faketime and
//! fiu-utils, a scenario that needs them and finds them missing fails
//! instead: CI can never pass having checked less than it says.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use trireme_client::{Client, ClientOptions, ReadConsistency};
use trireme_tests::checkers::{self, convergence, CheckOptions};
use trireme_tests::history::{self, OpFn};
use trireme_tests::nemesis::{FaultKind, FaultLog, Monitor, Nemesis, Observations, Partition};
use trireme_tests::netns::{
    self, netns_unavailable, ClusterOptions, NetCluster, NetMode, FAKETIME_LIB, FIU_LIBS,
};
use trireme_tests::wait_for;
use trireme_tests::workloads::{self, Histories, Recorders};

/// Written straight to the process's stderr: not captured by the test harness.
fn say(msg: impl AsRef<str>) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{}", msg.as_ref());
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What must be seen for a scenario to count.
#[derive(Debug, Clone)]
enum Coverage {
    /// Leadership changed (a new term with a leader, or another leader).
    LeaderChange,
    /// At least one restart happened.
    Restart,
    /// At least one event of this fault was installed.
    Installed(&'static str),
    /// Every fault kind of the scenario ran at least once.
    EveryKind,
    /// Certification conflicts happened somewhere.
    Conflicts,
    /// Packet-loss rules dropped packets.
    LossDrops,
    /// The proxy delayed chunks.
    Delayed,
    /// Every node was killed in one episode.
    KillAll,
    /// Each of these crash points was reached.
    CrashPoints(&'static [&'static str]),
    /// No event of this fault was recorded (a nemesis that saw a broken promise records one).
    Never(&'static str),
    /// After every cut into two sides, each minority node reported
    /// NON_PRIMARY and refused a write within the bound (and at least one
    /// such cut was checked).
    MinorityRefused,
}

/// A scenario of the tier.
#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    about: &'static str,
    options: ClusterOptions,
    kinds: Vec<FaultKind>,
    /// How long a fault is held (ms).
    hold: (u64, u64),
    /// Quiet time between faults (ms).
    gap: (u64, u64),
    /// What must be there for the scenario to run.
    needs: Vec<Need>,
    coverage: Vec<Coverage>,
    /// Traffic time as a multiple of `TRIREME_CHAOS_SECS`: a scenario with
    /// many slow episodes (crash points restart nodes) needs more.
    length: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Netns,
    Faketime,
    Fiu,
    Tmpfs,
}

/// Whether a scenario lacking `need` fails rather than skips: under `CI=true`
/// for what `.ci/run` installs (faketime, fiu-utils). Namespaces and tmpfs
/// depend on the runner's privileges, so they may still skip.
fn must_have(need: Need, ci: bool) -> bool {
    ci && matches!(need, Need::Faketime | Need::Fiu)
}

/// Whether this run is CI's (`CI=true`, as GitHub and `.ci/run` set it).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The outcome of a scenario whose prerequisite `need` is missing (`why`).
fn missing_outcome(need: Need, why: String, ci: bool) -> Outcome {
    if must_have(need, ci) {
        Outcome::Failed(vec![format!(
            "could not run: {why}; under CI=true .ci/run installs it, so a skip is a failure"
        )])
    } else {
        Outcome::Skipped(why)
    }
}

#[test]
fn a_missing_prerequisite_fails_under_ci_where_it_could_have_run() {
    let why = || "libfaketime not found".to_string();
    assert!(matches!(
        missing_outcome(Need::Faketime, why(), true),
        Outcome::Failed(v) if v[0].contains("libfaketime not found")
    ));
    assert!(matches!(
        missing_outcome(Need::Fiu, why(), true),
        Outcome::Failed(_)
    ));
    assert!(matches!(
        missing_outcome(Need::Faketime, why(), false),
        Outcome::Skipped(_)
    ));
    assert!(matches!(
        missing_outcome(Need::Netns, why(), true),
        Outcome::Skipped(_)
    ));
}

fn missing(need: Need) -> Option<String> {
    match need {
        Need::Netns => netns_unavailable().map(|w| format!("network namespaces: {w}")),
        Need::Faketime => (!Path::new(FAKETIME_LIB).exists())
            .then(|| format!("libfaketime not found at {FAKETIME_LIB} (Debian faketime)")),
        Need::Fiu => {
            if !FIU_LIBS.iter().all(|l| Path::new(l).exists()) {
                Some("libfiu preload libraries not found (Debian fiu-utils)".into())
            } else if std::process::Command::new("fiu-ctrl")
                .arg("-h")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_err()
            {
                Some("fiu-ctrl not found (Debian fiu-utils)".into())
            } else {
                None
            }
        }
        Need::Tmpfs => {
            // SAFETY: geteuid has no preconditions.
            (unsafe { libc::geteuid() } != 0).then(|| "mounting a tmpfs needs root".into())
        }
    }
}

const CRASH_POINTS: &[&str] = &[
    "crash-after-log-fsync",
    "crash-mid-certify",
    "crash-after-certify",
    "crash-after-apply",
    "crash-mid-snapshot-install",
];

/// Small snapshots and log retention, so that a node that was down gets a
/// snapshot (and `crash-mid-snapshot-install` can be reached).
/// Retention stays well above what a node catching up needs while the
/// others write on (a follower that restarts must not loop on installs);
/// the nemesis waits until the log is purged past the stopped node.
const SMALL_SNAPSHOTS: &str = "snapshot_every_entries = 256\nlog_retain_entries = 512\n";

fn scenarios() -> Vec<Scenario> {
    // Namespaces when they can be made, else the proxy (said in the summary).
    let netns = ClusterOptions::default();
    vec![
        Scenario {
            name: "kill",
            about: "SIGKILL one node, the leader, a minority, all nodes; restart on the same data",
            options: netns.clone(),
            kinds: vec![
                FaultKind::KillOne,
                FaultKind::KillLeader,
                FaultKind::KillMinority,
                FaultKind::KillAll,
            ],
            hold: (1500, 4000),
            gap: (2000, 4000),
            needs: vec![],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("kill"),
                Coverage::Restart,
                Coverage::KillAll,
                Coverage::LeaderChange,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "kill-tls",
            about: "mutual TLS on both ports, client certificates required: SIGKILL one node or the leader and restart (every reconnection is a new TLS handshake)",
            options: ClusterOptions {
                tls: true,
                ..netns.clone()
            },
            kinds: vec![FaultKind::KillOne, FaultKind::KillLeader],
            // Longer than a lost leader takes to be replaced. A follower of
            // a known leader campaigns only after openraft's leader lease
            // (election_timeout_max, 1 s) plus a random election timeout
            // (0.5-1 s) without a heartbeat, and a leader restarted before
            // that resumes its leadership in the same term: a hold under
            // about 2 s can pass with no leader change, which this
            // scenario's coverage requires (kill covers the short holds).
            hold: (2500, 4000),
            gap: (2000, 4000),
            needs: vec![],
            // Half the traffic time: the kill scenario already covers the
            // faults; this one covers them over TLS.
            length: 0.5,
            coverage: vec![
                Coverage::Installed("kill"),
                Coverage::Restart,
                Coverage::LeaderChange,
                Coverage::EveryKind,
            ],
        },
        Scenario {
            name: "pause",
            about: "SIGSTOP the leader or a follower past the election timeout, then SIGCONT; crafted Forward/AppendEntries messages to every node; a burst of large-value writes",
            options: netns.clone(),
            kinds: vec![
                FaultKind::PauseLeader,
                FaultKind::PauseFollower,
                FaultKind::CraftedPeerMessages,
                FaultKind::LargeValueBurst,
            ],
            hold: (2000, 5000),
            gap: (2000, 4000),
            needs: vec![],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("pause"),
                Coverage::Installed("crafted-peer-message"),
                Coverage::Never("crafted-peer-message-accepted"),
                Coverage::Installed("large-value-burst"),
                Coverage::LeaderChange,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "partition",
            about: "iptables partitions: one node, leader in minority, leader in majority, one-way, bridge",
            options: netns.clone(),
            kinds: vec![
                FaultKind::Partition(Partition::IsolateOne),
                FaultKind::Partition(Partition::LeaderInMinority),
                FaultKind::Partition(Partition::LeaderInMajority),
                FaultKind::Partition(Partition::OneWay),
                FaultKind::Partition(Partition::Ring),
            ],
            hold: (2000, 4000),
            gap: (1000, 2500),
            needs: vec![],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("partition"),
                Coverage::MinorityRefused,
                Coverage::LeaderChange,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "packet-loss",
            about: "iptables statistic DROP of 30% of a minority's (and sometimes the leader's) peer packets",
            options: ClusterOptions {
                mode: Some(NetMode::Netns),
                ..ClusterOptions::default()
            },
            kinds: vec![FaultKind::Loss(0.3)],
            hold: (4000, 8000),
            gap: (2000, 4000),
            needs: vec![Need::Netns],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("loss"),
                Coverage::LossDrops,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "clock",
            about: "libfaketime wall-clock jumps (seconds to a week, both ways) and strobes per node",
            options: ClusterOptions {
                faketime: true,
                ..netns.clone()
            },
            kinds: vec![FaultKind::ClockJump, FaultKind::ClockStrobe],
            hold: (3000, 6000),
            gap: (1000, 3000),
            needs: vec![Need::Faketime],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("clock"),
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "disk-full",
            about: "the leader's or a follower's tmpfs filled to ENOSPC; the node must stop, not ack",
            options: ClusterOptions {
                tmpfs_mib: Some(256),
                ..netns.clone()
            },
            kinds: vec![FaultKind::DiskFullLeader, FaultKind::DiskFullFollower],
            hold: (3000, 5000),
            gap: (3000, 5000),
            needs: vec![Need::Tmpfs],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("disk-full"),
                Coverage::Installed("io-fault-effect"),
                Coverage::Restart,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "fsync-failure",
            about: "libfiu fails fsync/fdatasync on the leader or a follower; the node must stop, not ack",
            options: ClusterOptions {
                fiu: true,
                ..netns.clone()
            },
            kinds: vec![FaultKind::FsyncFailLeader, FaultKind::FsyncFailFollower],
            hold: (3000, 5000),
            gap: (3000, 5000),
            needs: vec![Need::Fiu],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("fsync-fail"),
                Coverage::Installed("io-fault-effect"),
                Coverage::Restart,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "crash-points",
            about: "abort at named crash points: one node, and all nodes at once",
            options: ClusterOptions {
                config_toml: Some(SMALL_SNAPSHOTS.into()),
                ..netns.clone()
            },
            kinds: CRASH_POINTS
                .iter()
                .filter(|p| **p != "crash-mid-snapshot-install")
                .map(|p| FaultKind::CrashPoint(p))
                .chain([
                    FaultKind::CrashPointAll("crash-after-certify"),
                    FaultKind::CrashSnapshotInstall,
                ])
                .collect(),
            hold: (500, 1500),
            gap: (1500, 3000),
            needs: vec![],
            length: 1.6,
            coverage: vec![
                Coverage::Installed("crash-point"),
                Coverage::CrashPoints(CRASH_POINTS),
                Coverage::Restart,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
        Scenario {
            name: "latency",
            about: "proxy network (the fallback): 50-150 ms on every peer link, with partitions through the proxy",
            options: ClusterOptions {
                mode: Some(NetMode::Proxy),
                ..ClusterOptions::default()
            },
            kinds: vec![
                FaultKind::Latency(50),
                FaultKind::Latency(150),
                FaultKind::Partition(Partition::LeaderInMinority),
                FaultKind::Partition(Partition::OneWay),
            ],
            hold: (3000, 5000),
            gap: (1500, 3000),
            needs: vec![],
            length: 1.0,
            coverage: vec![
                Coverage::Installed("latency"),
                Coverage::Delayed,
                Coverage::Installed("partition"),
                Coverage::LeaderChange,
                Coverage::EveryKind,
                Coverage::Conflicts,
            ],
        },
    ]
}

/// The soak tier's one scenario: 5 nodes, every fault composed.
fn soak_scenario() -> Scenario {
    let mut kinds = Vec::new();
    for s in scenarios() {
        if s.name != "latency" {
            kinds.extend(s.kinds);
        }
    }
    Scenario {
        name: "soak",
        about: "5 nodes, every fault of the bounded tier (but latency) composed",
        options: ClusterOptions {
            nodes: 5,
            mode: Some(NetMode::Netns),
            config_toml: Some(SMALL_SNAPSHOTS.into()),
            faketime: true,
            fiu: true,
            tmpfs_mib: Some(256),
            ..ClusterOptions::default()
        },
        kinds,
        hold: (1500, 6000),
        gap: (1000, 4000),
        needs: vec![Need::Netns, Need::Faketime, Need::Fiu, Need::Tmpfs],
        length: 1.0,
        coverage: vec![
            Coverage::Installed("kill"),
            Coverage::Restart,
            Coverage::LeaderChange,
            Coverage::Conflicts,
        ],
    }
}

/// How a scenario ended.
#[derive(Debug)]
enum Outcome {
    Passed,
    Failed(Vec<String>),
    Skipped(String),
}

/// Everything a scenario found, for the summaries.
#[derive(Debug)]
struct Report {
    name: String,
    seed: u64,
    outcome: Outcome,
    seconds: f64,
    mode: String,
    facts: serde_json::Value,
}

impl Report {
    fn status(&self) -> &'static str {
        match self.outcome {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "FAILED",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

fn scenario_seed(base: u64, name: &str) -> u64 {
    name.bytes().fold(base ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// OK ops per second from the first traffic op until `until_ns`.
fn early_rate(h: &Histories, until_ns: u64) -> (u64, f64) {
    let mut first = u64::MAX;
    let mut ok = 0;
    for (_, hist) in h.iter() {
        for p in hist.pairs() {
            if matches!(p.invoke.f, OpFn::Setup | OpFn::FinalRead) {
                continue;
            }
            first = first.min(p.invoke_ns());
            if p.is_ok() && p.complete_ns() <= until_ns {
                ok += 1;
            }
        }
    }
    if first >= until_ns {
        return (ok, 0.0);
    }
    (ok, ok as f64 / ((until_ns - first) as f64 / 1e9))
}

/// OK ops completed in `[from_ns, to_ns)`.
fn ok_between(h: &Histories, from_ns: u64, to_ns: u64) -> u64 {
    h.iter()
        .iter()
        .flat_map(|(_, hist)| hist.pairs())
        .filter(|p| {
            !matches!(p.invoke.f, OpFn::Setup | OpFn::FinalRead)
                && p.is_ok()
                && p.complete_ns() >= from_ns
                && p.complete_ns() < to_ns
        })
        .count() as u64
}

/// Aborts seen by the clients (certification conflicts).
fn client_conflicts(h: &Histories) -> u64 {
    h.iter()
        .iter()
        .flat_map(|(_, hist)| hist.pairs())
        .filter(|p| {
            p.completion
                .and_then(|c| c.error.as_deref())
                .is_some_and(|e| e.contains("conflict"))
        })
        .count() as u64
}

async fn write_and_read_everywhere(cluster: &NetCluster, seed: u64) -> Result<()> {
    for id in cluster.ids() {
        let client = Client::with_options(
            vec![cluster.endpoint(id)],
            ClientOptions {
                timeout: Duration::from_secs(3),
                tls: cluster.client_tls()?,
                ..ClientOptions::default()
            },
        )?;
        let key = format!("chaos/final/{seed}/n{id}");
        let value = format!("written through n{id}");
        let started = Instant::now();
        // Errors are returned, so that a timeout names the last one.
        wait_for(
            &format!("a write through node {id}"),
            Duration::from_secs(10),
            || async {
                client
                    .put(key.clone(), value.clone())
                    .await
                    .map(Some)
                    .map_err(anyhow::Error::from)
            },
        )
        .await?;
        let got = wait_for(
            &format!("a linearizable read through node {id}"),
            Duration::from_secs(10),
            || async {
                client
                    .get(&key, ReadConsistency::Linearizable)
                    .await
                    .map(Some)
                    .map_err(anyhow::Error::from)
            },
        )
        .await?;
        anyhow::ensure!(
            got.as_ref().map(|v| v.value.as_slice()) == Some(value.as_bytes()),
            "node {id}: a linearizable read after the write returned {got:?}"
        );
        say(format!(
            "  write + linearizable read through n{id}: {:.2} s",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

async fn run_scenario(sc: &Scenario, seed: u64, secs: u64, dir: &Path) -> Report {
    let started = Instant::now();
    let mut report = Report {
        name: sc.name.to_string(),
        seed,
        outcome: Outcome::Passed,
        seconds: 0.0,
        mode: String::new(),
        facts: json!({}),
    };
    for need in &sc.needs {
        if let Some(why) = missing(*need) {
            report.outcome = missing_outcome(*need, why.clone(), in_ci());
            match report.outcome {
                Outcome::Skipped(_) => say(format!("skipped: {} ({why})", sc.name)),
                _ => say(format!("FAILED: {} could not run ({why})", sc.name)),
            }
            return report;
        }
    }
    let mut failures = Vec::new();
    let mut facts = serde_json::Map::new();
    let res = tokio::time::timeout(
        Duration::from_secs(secs + 240),
        scenario_body(
            sc,
            seed,
            secs,
            dir,
            &mut failures,
            &mut facts,
            &mut report.mode,
        ),
    )
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("{e:#}")),
        Err(_) => failures.push(format!(
            "the scenario did not finish within {} s",
            secs + 240
        )),
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.facts = serde_json::Value::Object(facts);
    if !failures.is_empty() {
        report.outcome = Outcome::Failed(failures);
    }
    report
}

async fn scenario_body(
    sc: &Scenario,
    seed: u64,
    secs: u64,
    dir: &Path,
    failures: &mut Vec<String>,
    facts: &mut serde_json::Map<String, serde_json::Value>,
    mode: &mut String,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let cluster = Arc::new(NetCluster::start(sc.options.clone()).await?);
    *mode = cluster.mode.to_string();
    if let Some(net) = &cluster.net {
        facts.insert("network".into(), json!(format!("10.213.{}.0/24", net.tag)));
    }
    if let Some(why) = &cluster.fallback_reason {
        facts.insert("fallback".into(), json!(why));
    }
    let result = scenario_inner(sc, seed, secs, dir, &cluster, failures, facts).await;
    let _ = cluster.save_logs(&dir.join("logs"));
    if result.is_err() || !failures.is_empty() {
        for id in cluster.ids() {
            say(format!(
                "--- node {id}: errors ---\n{}",
                cluster.log_errors(id, 15)
            ));
        }
        // Keep the evidence: every node's data directory, as it was left.
        match cluster.preserve(&dir.join("evidence")) {
            Ok(()) => say(format!(
                "  data directories kept in {}",
                dir.join("evidence").display()
            )),
            Err(e) => say(format!("  could not keep the data directories: {e:#}")),
        }
    }
    // Every other holder is gone by now; shut down explicitly anyway.
    cluster.shutdown();
    result
}

async fn scenario_inner(
    sc: &Scenario,
    seed: u64,
    secs: u64,
    dir: &Path,
    cluster: &Arc<NetCluster>,
    failures: &mut Vec<String>,
    facts: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let all = cluster.ids();
    let leader = cluster
        .wait_leader(&all, Duration::from_secs(30))
        .await
        .context("no leader at start")?;
    say(format!(
        "  {} nodes up ({}), leader n{leader}",
        all.len(),
        cluster.mode
    ));

    let recorders = Recorders::new();
    let start = Instant::now();
    let log = FaultLog::new(
        start,
        vec![
            recorders.bank.clone(),
            recorders.register.clone(),
            recorders.set.clone(),
            recorders.list_append.clone(),
        ],
    );
    let monitor = Monitor::start(cluster.clone(), Duration::from_millis(250), start);
    let concurrency = (cluster.len()).max(3);
    let mut opts = workloads::Options::new(
        cluster.endpoints(),
        Duration::from_secs(secs),
        concurrency,
        seed,
    );
    opts.tls = cluster.client_tls()?;
    let traffic = {
        let opts = opts.clone();
        let recorders = recorders.clone();
        tokio::spawn(async move { workloads::run_traffic(&opts, &recorders).await })
    };

    // Throughput before the first fault.
    let warm =
        Duration::from_secs(5).min(Duration::from_secs(secs / 4).max(Duration::from_secs(2)));
    tokio::time::sleep_until(tokio::time::Instant::from_std(start + warm)).await;
    let (early_ok, rate) = early_rate(&recorders.histories(), recorders.bank.now_ns());
    say(format!(
        "  before the first fault: {early_ok} ok ops, {rate:.0} ok ops/s"
    ));
    facts.insert("ok_ops_per_sec_before_faults".into(), json!(rate.round()));
    if rate < 100.0 {
        failures.push(format!(
            "only {rate:.0} ok ops/s before the first fault (at least 100 required)"
        ));
    }

    // Faults until 85% of the window, then heal everything.
    let fault_end = start + Duration::from_secs_f64(secs as f64 * 0.85);
    let mut nemesis = Nemesis::new(cluster.clone(), log.clone(), seed);
    let ms = Duration::from_millis;
    let done = nemesis
        .run(
            &sc.kinds,
            fault_end,
            (ms(sc.hold.0), ms(sc.hold.1)),
            (ms(sc.gap.0), ms(sc.gap.1)),
        )
        .await;
    nemesis.heal_all().await;
    let healed_ns = recorders.bank.now_ns();
    let healed_at = Instant::now();
    say(format!(
        "  healed after {:.1} s; {} episodes: {}",
        start.elapsed().as_secs_f64(),
        done.len(),
        done.iter()
            .map(FaultKind::name)
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let stats = traffic
        .await
        .map_err(|e| anyhow!("traffic task: {e}"))?
        .context("workload traffic")?;
    let traffic_done = Instant::now();
    let traffic_end_ns = recorders.bank.now_ns();
    let quiet_ok = ok_between(&recorders.histories(), healed_ns, traffic_end_ns);
    for s in &stats {
        say(format!("  {s}"));
    }
    facts.insert("workloads".into(), serde_json::to_value(&stats)?);
    facts.insert("ok_ops_after_heal".into(), json!(quiet_ok));

    // Liveness: a leader, convergence, then a write and a read everywhere.
    let live = async {
        let leader = cluster
            .wait_leader(&all, Duration::from_secs(30))
            .await
            .context("no leader after the heal")?;
        let c = cluster
            .wait_converged(&all, Duration::from_secs(60))
            .await
            .context("no convergence after the heal")?;
        say(format!(
            "  converged {:.1} s after the heal ({:.1} s after the traffic): leader n{leader}, seqno {}, checksum {:#x}, verdicts {:#x}",
            healed_at.elapsed().as_secs_f64(),
            traffic_done.elapsed().as_secs_f64(),
            c.seqno,
            c.checksum,
            c.verdict_chain
        ));
        write_and_read_everywhere(cluster, seed).await?;
        anyhow::Ok(healed_at.elapsed())
    }
    .await;
    match live {
        Ok(d) => {
            facts.insert("recovered_after_heal_s".into(), json!(d.as_secs_f64()));
        }
        Err(e) => failures.push(format!("liveness: {e:#}")),
    }

    // Final reads, convergence and every checker.
    if let Err(e) = workloads::final_reads(&opts, &recorders, Duration::from_secs(30)).await {
        failures.push(format!("final reads: {e:#}"));
    }
    let histories = recorders.histories();
    histories.save(dir)?;
    let mut results = checkers::check_all(&histories, &CheckOptions::default());
    match workloads::node_states_tls(
        &cluster.endpoints(),
        Duration::from_secs(5),
        cluster.client_tls()?,
    )
    .await
    {
        Ok(states) => results.push(("convergence".into(), convergence::check(&states))),
        Err(e) => failures.push(format!("node states: {e:#}")),
    }
    let mut checks = serde_json::Map::new();
    for (name, r) in &results {
        say(format!("  check {name}: {r}"));
        checks.insert(name.clone(), serde_json::to_value(r)?);
        if !r.is_valid() {
            failures.push(format!(
                "checker {name}: {:?}: {}",
                r.valid,
                r.anomalies.join("; ")
            ));
        }
    }
    facts.insert("checks".into(), serde_json::Value::Object(checks));

    // A node that exits by itself, with no fault asking for it, crashed.
    for (id, count, statuses) in nemesis.unexpected_exits() {
        failures.push(format!(
            "node {id} exited by itself {count} time(s) (exits: {statuses:?}); its errors:\n{}",
            cluster.log_errors(id, 8)
        ));
    }

    // Coverage.
    let obs: Observations = monitor.stop().await;
    let conflicts = obs.max_cert_failures().max(client_conflicts(&histories));
    let mut coverage = serde_json::Map::new();
    for c in &sc.coverage {
        let (ok, what) = match c {
            Coverage::LeaderChange => (
                obs.leader_changed(),
                format!(
                    "leaders seen {:?}, terms {}..{}",
                    obs.leaders, obs.first_term, obs.max_term
                ),
            ),
            Coverage::Restart => {
                let n = log.installed("restart");
                (n > 0, format!("{n} restarts"))
            }
            Coverage::Never(f) => {
                let seen: Vec<String> = log
                    .events()
                    .into_iter()
                    .filter(|e| e.fault == *f)
                    .map(|e| format!("{}: {}", e.target, e.detail))
                    .collect();
                (seen.is_empty(), format!("{f}: {}", seen.join("; ")))
            }
            Coverage::Installed(f) => {
                let n = log.installed(f);
                let not: Vec<String> = log
                    .not_installed(f)
                    .iter()
                    .map(|e| format!("{} {}", e.target, e.detail))
                    .collect();
                (
                    n > 0,
                    format!("{f}: {n} installed, {} not: {}", not.len(), not.join("; ")),
                )
            }
            Coverage::EveryKind => {
                let missing: Vec<String> = sc
                    .kinds
                    .iter()
                    .filter(|k| !done.contains(k))
                    .map(FaultKind::name)
                    .collect();
                (
                    missing.is_empty(),
                    format!("kinds not run: {missing:?} (TRIREME_CHAOS_SECS too short?)"),
                )
            }
            Coverage::Conflicts => (
                conflicts > 0,
                format!(
                    "certification failures: max per node {:?}, client-seen conflicts {}",
                    obs.cert_failures,
                    client_conflicts(&histories)
                ),
            ),
            Coverage::LossDrops => (
                nemesis.loss_dropped > 0,
                format!("{} packets dropped", nemesis.loss_dropped),
            ),
            Coverage::Delayed => {
                let d = cluster
                    .proxy
                    .as_ref()
                    .map(|p| {
                        p.stats()
                            .delayed_chunks
                            .load(std::sync::atomic::Ordering::Relaxed)
                    })
                    .unwrap_or(0);
                (d > 0, format!("{d} chunks delayed by the proxy"))
            }
            Coverage::KillAll => {
                let all_killed = done.contains(&FaultKind::KillAll)
                    && log
                        .events()
                        .iter()
                        .filter(|e| e.fault == "kill" && e.detail.starts_with("all") && e.installed)
                        .count()
                        >= cluster.len();
                (
                    all_killed,
                    "every node SIGKILLed in one episode".to_string(),
                )
            }
            Coverage::MinorityRefused => {
                let n = log.installed("minority-refused");
                let late: Vec<String> = log
                    .not_installed("minority-refused")
                    .iter()
                    .map(|e| format!("{}: {}", e.target, e.detail))
                    .collect();
                (
                    n > 0 && late.is_empty(),
                    format!(
                        "{n} minorities refused in time, {} did not: {}",
                        late.len(),
                        late.join("; ")
                    ),
                )
            }
            Coverage::CrashPoints(points) => {
                let events = log.events();
                let missing: Vec<&str> = points
                    .iter()
                    .copied()
                    .filter(|p| {
                        !events.iter().any(|e| {
                            e.fault == "crash-point" && e.installed && e.detail.starts_with(*p)
                        })
                    })
                    .collect();
                (
                    missing.is_empty(),
                    format!("crash points not reached: {missing:?}"),
                )
            }
        };
        say(format!(
            "  coverage {:?}: {} ({what})",
            c,
            if ok { "yes" } else { "NO" }
        ));
        coverage.insert(format!("{c:?}"), json!({ "ok": ok, "detail": what }));
        if !ok {
            failures.push(format!("coverage {c:?} not met: {what}"));
        }
    }
    facts.insert("coverage".into(), serde_json::Value::Object(coverage));
    facts.insert(
        "episodes".into(),
        json!(done.iter().map(FaultKind::name).collect::<Vec<_>>()),
    );
    let events = log.events();
    facts.insert(
        "faults_installed".into(),
        json!(events.iter().filter(|e| e.installed).count()),
    );
    facts.insert(
        "faults_not_installed".into(),
        json!(events
            .iter()
            .filter(|e| !e.installed)
            .map(|e| format!("{} {}: {}", e.fault, e.target, e.detail))
            .collect::<Vec<_>>()),
    );
    std::fs::write(
        dir.join("faults.json"),
        serde_json::to_string_pretty(&events)?,
    )?;
    std::fs::write(
        dir.join("observations.json"),
        serde_json::to_string_pretty(&obs)?,
    )?;
    drop(nemesis);
    Ok(())
}

fn write_summary(
    root: &Path,
    base_seed: u64,
    secs: u64,
    reports: &[Report],
    print: bool,
) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let json = json!({
        "seed": base_seed,
        "secs_per_scenario": secs,
        "scenarios": reports.iter().map(|r| json!({
            "name": r.name,
            "seed": r.seed,
            "status": r.status(),
            "seconds": (r.seconds * 10.0).round() / 10.0,
            "network": r.mode,
            "reasons": match &r.outcome {
                Outcome::Failed(v) => json!(v),
                Outcome::Skipped(w) => json!([w]),
                Outcome::Passed => json!([]),
            },
            "facts": r.facts,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        root.join("summary.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "trireme chaos run: seed {base_seed}, {secs} s of traffic per scenario"
    );
    for r in reports {
        let _ = writeln!(
            text,
            "{:<14} {:<8} {:>6.1} s  network {:<5} seed {}",
            r.name,
            r.status(),
            r.seconds,
            if r.mode.is_empty() { "-" } else { &r.mode },
            r.seed
        );
        match &r.outcome {
            Outcome::Failed(v) => {
                for reason in v {
                    let _ = writeln!(text, "    - {reason}");
                }
            }
            Outcome::Skipped(w) => {
                let _ = writeln!(text, "    skipped: {w}");
            }
            Outcome::Passed => {}
        }
        if let Some(f) = r.facts.get("fallback") {
            let _ = writeln!(text, "    proxy fallback in use: {f}");
        }
        if let Some(not) = r
            .facts
            .get("faults_not_installed")
            .and_then(|v| v.as_array())
        {
            for n in not {
                let _ = writeln!(
                    text,
                    "    not installed: {}",
                    n.as_str().unwrap_or_default()
                );
            }
        }
    }
    std::fs::write(root.join("summary.txt"), &text)?;
    if print {
        say(format!("\n{text}"));
    }
    Ok(())
}

fn run_id(seed: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}-{seed}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_tier() -> Result<()> {
    let _serial = netns::serial();
    let secs = env_u64("TRIREME_CHAOS_SECS", 50).max(10);
    let base_seed = env_u64(
        "TRIREME_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1),
    );
    let only: Option<Vec<String>> = std::env::var("TRIREME_CHAOS_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let root = history::run_dir(&run_id(base_seed));
    say(format!(
        "chaos tier: seed {base_seed} (TRIREME_CHAOS_SEED={base_seed} to repeat), {secs} s per scenario, output {}",
        root.display()
    ));
    if let Some(why) = netns_unavailable() {
        say(format!(
            "network namespaces unavailable ({why}): netns scenarios are skipped; the proxy fallback runs"
        ));
    }
    // TRIREME_CHAOS_NET=proxy runs every scenario that can on the proxy
    // fallback, as if namespaces were unavailable.
    let force_proxy = std::env::var("TRIREME_CHAOS_NET").is_ok_and(|v| v == "proxy");
    let mut plan: Vec<(Scenario, u64)> = scenarios()
        .into_iter()
        .map(|mut s| {
            if force_proxy && s.options.mode.is_none() {
                s.options.mode = Some(NetMode::Proxy);
            }
            let length = (secs as f64 * s.length).round() as u64;
            (s, length)
        })
        .collect();
    if std::env::var("TRIREME_SOAK").is_ok_and(|v| v == "1") {
        let soak_secs = env_u64("TRIREME_SOAK_SECS", 300);
        for i in 0..env_u64("TRIREME_SOAK_SEEDS", 5) {
            let mut s = soak_scenario();
            s.name = Box::leak(format!("soak-{i}").into_boxed_str());
            plan.push((s, soak_secs));
        }
    } else {
        say("soak tier: not run (TRIREME_SOAK=1 runs it)");
    }
    let mut reports = Vec::new();
    for (sc, secs) in plan {
        if only.as_ref().is_some_and(|o| {
            !o.iter()
                .any(|n| n == sc.name || (n == "soak" && sc.name.starts_with("soak")))
        }) {
            continue;
        }
        let seed = scenario_seed(base_seed, sc.name);
        say(format!(
            "== scenario {} (seed {seed}): {}",
            sc.name, sc.about
        ));
        let dir: PathBuf = root.join(sc.name);
        let report = run_scenario(&sc, seed, secs, &dir).await;
        match &report.outcome {
            Outcome::Passed => say(format!("== {}: passed in {:.1} s", sc.name, report.seconds)),
            Outcome::Failed(v) => say(format!(
                "== {}: FAILED in {:.1} s (seed {seed}, artifacts {}):\n   - {}",
                sc.name,
                report.seconds,
                dir.display(),
                v.join("\n   - ")
            )),
            Outcome::Skipped(w) => say(format!("== {}: skipped: {w}", sc.name)),
        }
        reports.push(report);
        let _ = write_summary(&root, base_seed, secs, &reports, false);
    }
    let passed = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Passed))
        .count();
    let failed = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    let skipped = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
        .count();
    write_summary(&root, base_seed, secs, &reports, true)?;
    {
        let mut out = std::io::stdout().lock();
        if skipped > 0 {
            // Never a bare "0 failed" when something did not run.
            let _ = writeln!(
                out,
                "INCOMPLETE RUN: {skipped} of {} scenario(s) skipped, not checked (see above); {passed} passed, {failed} failing",
                reports.len()
            );
        } else {
            let _ = writeln!(out, "{passed} passed, {failed} failed");
        }
        let _ = out.flush();
    }
    assert!(
        failed == 0,
        "{failed} chaos scenario(s) failed (seed {base_seed}); see {}",
        root.join("summary.txt").display()
    );
    Ok(())
}

/// The proxy fallback stays exercised: a partition through the proxy moves
/// the leadership, and the cluster converges after the heal and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_fallback_partitions_and_heals() -> Result<()> {
    let _serial = netns::serial();
    let cluster = NetCluster::start(ClusterOptions {
        mode: Some(NetMode::Proxy),
        ..ClusterOptions::default()
    })
    .await?;
    let all = cluster.ids();
    let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await?;
    for id in &all {
        cluster
            .client(*id)?
            .put(format!("proxy/{id}"), "x")
            .await
            .with_context(|| cluster.logs())?;
    }
    let proxy = cluster.proxy.as_ref().expect("proxy mode");
    anyhow::ensure!(
        proxy
            .stats()
            .identified
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the proxies identified no peer connection"
    );
    // Cut the leader off from both followers through the proxy.
    let others: Vec<u64> = all.iter().copied().filter(|i| *i != leader).collect();
    let mut links = Vec::new();
    for o in &others {
        links.push((leader, *o));
        links.push((*o, leader));
    }
    cluster.block_links(&links)?;
    let new_leader = cluster
        .wait_leader(&others, Duration::from_secs(30))
        .await
        .with_context(|| cluster.logs())?;
    anyhow::ensure!(new_leader != leader, "the leader stayed while cut off");
    let client = cluster.client(others[0])?;
    wait_for(
        "a write on the majority side",
        Duration::from_secs(10),
        || async { Ok(client.put("proxy/majority", "y").await.ok()) },
    )
    .await?;
    cluster.heal_links()?;
    cluster.restart(others[1])?;
    cluster
        .wait_converged(&all, Duration::from_secs(60))
        .await
        .with_context(|| cluster.logs())?;
    let got = cluster
        .client(leader)?
        .get("proxy/majority", ReadConsistency::Linearizable)
        .await?;
    anyhow::ensure!(got.is_some(), "the old leader misses the majority's write");
    Ok(())
}

/// The namespace harness removes every name it made, and a partition rule
/// really cuts a node off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_cluster_isolates_and_cleans_up() -> Result<()> {
    let _serial = netns::serial();
    if let Some(why) = netns_unavailable() {
        say(format!(
            "skipped: netns_cluster_isolates_and_cleans_up ({why})"
        ));
        return Ok(());
    }
    let t = Instant::now();
    let cluster = NetCluster::start(ClusterOptions {
        mode: Some(NetMode::Netns),
        ..ClusterOptions::default()
    })
    .await?;
    say(format!(
        "  netns cluster started in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let all = cluster.ids();
    let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await?;
    say(format!(
        "  leader n{leader} after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let (tag, names) = {
        let net = cluster.net.as_ref().expect("netns");
        let mut names = net.node_ns.clone();
        names.push(net.hub.clone());
        (net.tag, names)
    };
    for n in &names {
        anyhow::ensure!(Path::new("/run/netns").join(n).exists(), "{n} missing");
    }
    let others: Vec<u64> = all.iter().copied().filter(|i| *i != leader).collect();
    let mut links = Vec::new();
    for o in &others {
        links.push((leader, *o));
        links.push((*o, leader));
    }
    cluster.block_links(&links)?;
    let new_leader = cluster
        .wait_leader(&others, Duration::from_secs(30))
        .await
        .with_context(|| cluster.logs())?;
    anyhow::ensure!(new_leader != leader);
    say(format!(
        "  new leader n{new_leader} after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    cluster.heal_links()?;
    cluster
        .wait_converged(&all, Duration::from_secs(60))
        .await
        .with_context(|| cluster.logs())?;
    say(format!(
        "  converged after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let pids: Vec<u32> = all
        .iter()
        .filter_map(|id| cluster.node(*id).pid())
        .collect();
    drop(cluster);
    for n in &names {
        anyhow::ensure!(!Path::new("/run/netns").join(n).exists(), "{n} left behind");
    }
    anyhow::ensure!(
        !Path::new(&format!("/sys/class/net/trireme{tag}h")).exists(),
        "trireme{tag}h left behind"
    );
    for pid in pids {
        anyhow::ensure!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "pid {pid} still runs"
        );
    }
    Ok(())
}

/// A node that crashes in the middle of installing a snapshot (its store
/// cleared, the snapshot not yet written) must come back on restart and
/// catch up: the focused reproduction of what the crash-points scenario
/// drives at random.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_snapshot_install_then_restart_recovers() -> Result<()> {
    let _serial = netns::serial();
    let cluster = NetCluster::start(ClusterOptions {
        config_toml: Some(SMALL_SNAPSHOTS.into()),
        ..ClusterOptions::default()
    })
    .await?;
    let all = cluster.ids();
    let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await?;
    let victim = *all.iter().find(|i| **i != leader).expect("a follower");
    let writer = cluster.client(leader)?;
    for i in 0..200 {
        writer.put(format!("snap/before/{i}"), "x").await?;
    }
    cluster.kill(victim)?;
    // The victim's log can hold an append it had not yet counted when asked,
    // so its own last index may fall short; no follower's log reaches past
    // the leader's, asked after the kill (as the nemesis' snapshot fault).
    let victim_last = cluster.status(leader).await?.last_log_index;
    // Log entries (one write each, written one at a time) until the leader
    // has snapshotted and purged its log past the victim's.
    let mut i = 0u64;
    loop {
        writer.put(format!("snap/while-down/{i}"), "y").await?;
        i += 1;
        if i.is_multiple_of(50) && cluster.status(leader).await?.log_first_index > victim_last + 1 {
            break;
        }
        anyhow::ensure!(
            i < 20_000,
            "the leader never purged past index {victim_last}"
        );
    }
    let newest = format!("snap/while-down/{}", i - 1);
    cluster.restart_with_env(
        victim,
        &[("FAILPOINTS", "crash-mid-snapshot-install=1*return")],
    )?;
    wait_for(
        "the victim to abort at crash-mid-snapshot-install",
        Duration::from_secs(30),
        || async { Ok((!cluster.is_running(victim)).then_some(())) },
    )
    .await?;
    anyhow::ensure!(
        cluster.log_contains(victim, "crash point crash-mid-snapshot-install reached"),
        "the node exited, but not at the crash point: {}",
        cluster.logs()
    );
    cluster.restart(victim)?;
    if let Err(e) = cluster.wait_converged(&all, Duration::from_secs(60)).await {
        let keep = history::run_dir(&format!("repro-snapshot-install-{}", run_id(0)));
        let kept = cluster.preserve(&keep);
        anyhow::bail!(
            "node {victim} never recovered after crashing mid snapshot install: {e:#}\n\
             its log:\n{}\nevidence kept in {} ({kept:?})",
            cluster.log_errors(victim, 20),
            keep.display()
        );
    }
    let got = cluster
        .client(victim)?
        .get(newest.as_str(), ReadConsistency::Local)
        .await?;
    anyhow::ensure!(
        got.is_some(),
        "node {victim} misses a write it was sent by snapshot"
    );
    Ok(())
}

/// A leader that is SIGKILLed and restarted within the election timeout comes
/// back as leader of the same term (openraft restores a committed vote); a
/// linearizable read through any node right after must still see the last
/// acknowledged write. The focused form of the soak's register anomaly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_quick_leader_restart_are_linearizable() -> Result<()> {
    let _serial = netns::serial();
    let cluster = NetCluster::start(ClusterOptions::default()).await?;
    let all = cluster.ids();
    let mut stale = Vec::new();
    for round in 0..60 {
        let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await?;
        let key = format!("quick-restart/{round}");
        let writer = Client::with_options(
            vec![cluster.endpoint(leader)],
            ClientOptions {
                timeout: Duration::from_secs(3),
                ..ClientOptions::default()
            },
        )?;
        writer.put(key.clone(), "old").await?;
        writer.put(key.clone(), "new").await?;
        // Acknowledged: now crash the leader and bring it straight back.
        cluster.restart(leader)?;
        for id in &all {
            let reader = Client::with_options(
                vec![cluster.endpoint(*id)],
                ClientOptions {
                    timeout: Duration::from_secs(3),
                    ..ClientOptions::default()
                },
            )?;
            let got = wait_for(
                &format!("a linearizable read through node {id}"),
                Duration::from_secs(20),
                || async {
                    reader
                        .get(&key, ReadConsistency::Linearizable)
                        .await
                        .map(Some)
                        .map_err(anyhow::Error::from)
                },
            )
            .await?;
            let value = got.map(|v| String::from_utf8_lossy(&v.value).to_string());
            if value.as_deref() != Some("new") {
                // A stale read, or a lost write? Read again once converged.
                cluster
                    .wait_converged(&all, Duration::from_secs(30))
                    .await?;
                let later = reader
                    .get(&key, ReadConsistency::Linearizable)
                    .await?
                    .map(|v| String::from_utf8_lossy(&v.value).to_string());
                stale.push(format!(
                    "round {round}: leader n{leader} restarted; node {id} read {value:?}, \
                     and {later:?} once the cluster converged"
                ));
            }
        }
    }
    anyhow::ensure!(
        stale.is_empty(),
        "stale linearizable reads after a quick leader restart:\n{}",
        stale.join("\n")
    );
    Ok(())
}
