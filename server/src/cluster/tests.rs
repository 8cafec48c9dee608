//! Golden scripts for the membership decisions: `testscripts/*.txt`, one
//! concern per file, run with the `goldenscript` crate against the pure
//! functions of [`super::decide`], [`super::primary::decide`] and
//! [`super::replication`]. A script builds a cluster snapshot by hand (who is
//! a member, who answered when, where each has applied, the thresholds, the
//! clock) and asks for decisions. Regenerate the expected output with
//! `UPDATE_GOLDENFILES=1 cargo test -p trireme-server --lib cluster`, then
//! read the diff: it is the specification.
//!
//! Commands (times are milliseconds on the script's clock, which starts at 0):
//!
//! - `limits [down_after=MS] [stall_after=MS] [evict_after=MS] [promote_lag=N]
//!   [fc_limit=N] [synced_lag=N]`: the thresholds (defaults: the
//!   configuration's, eviction off).
//! - `cluster me=ID voters="ID,.." [learners="ID,.."] [leader=ID] [leading=BOOL]`:
//!   the membership as this node sees it; `leading` (Raft's state is Leader)
//!   defaults to `leader == me`. Every other member is tracked by the failure
//!   detector from now on, not heard from yet.
//! - `log last=N applied=N`: this node's last log index and applied seqno.
//! - `advance MS`: the clock moves on.
//! - `answer ID applied=N [head=N]`: ID answers a ping now, having applied N,
//!   to a ping sent when this node had applied `head` (default: its applied).
//! - `match ID=N|none ...`: on the leader, each follower's matched log index.
//! - `health`: each other member: up or down (for how long), its lag, stalled.
//! - `members`: the membership as `trireme members` shows it.
//! - `reconcile`: the leader's promotion/eviction decision this round.
//! - `flow`: the flow-control lag and the delay of the next batch.
//! - `state [stopped=WHY] [not_primary=WHY] [donor]`: the node state.
//! - `bounds leader=MS follower=MS`: the primary check's bounds.
//! - `raft [leader=ID|none] [quorum_ack=MS|none]`: what Raft says for the
//!   primary check (`quorum_ack`: ms since a quorum acknowledged this leader).
//! - `heard ID sent=MS quorum=BOOL`, `refused ID WHY`: word of the leader.
//! - `primary`: the primary check's answer now.
//! - `sample`: the replication watch samples the snapshot now.
//! - `replication`: its unreplicated voters and cluster health now.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::decide::{self, Action};
use super::primary::{self, Bounds, Word};
use super::replication::{self, Progress};
use super::snapshot::{ClusterHealth, Contact, Limits, MemberView, Role, Snapshot, Standing};
use crate::txn::NodeId;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The whole state of one script.
struct Runner {
    t0: Instant,
    /// The script's clock, in ms since `t0`.
    now_ms: u64,
    limits: Limits,
    me: NodeId,
    leading: bool,
    leader: Option<NodeId>,
    roles: BTreeMap<NodeId, Role>,
    contacts: BTreeMap<NodeId, Contact>,
    matched: BTreeMap<NodeId, Option<u64>>,
    last_log: u64,
    applied: u64,
    bounds: Bounds,
    raft_leader: Option<NodeId>,
    quorum_ack_ms: Option<u64>,
    word: Word,
    progress: BTreeMap<NodeId, Progress>,
    leading_sampled: bool,
}

impl Runner {
    fn new() -> Self {
        let config = crate::config::Config::default();
        let t0 = Instant::now();
        Runner {
            t0,
            now_ms: 0,
            limits: Limits::from_config(&config),
            me: 1,
            leading: false,
            leader: None,
            roles: BTreeMap::new(),
            contacts: BTreeMap::new(),
            matched: BTreeMap::new(),
            last_log: 0,
            applied: 0,
            bounds: Bounds {
                leader: Duration::from_millis(config.election_timeout_max_ms),
                follower: Duration::from_millis(
                    config.election_timeout_max_ms + config.down_after_ms,
                ),
            },
            raft_leader: None,
            quorum_ack_ms: None,
            word: Word::new(t0),
            progress: BTreeMap::new(),
            leading_sampled: false,
        }
    }

    fn now(&self) -> Instant {
        self.at(self.now_ms)
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            me: self.me,
            now: self.now(),
            leading: self.leading,
            leader: self.leader,
            members: self
                .roles
                .iter()
                .map(|(id, role)| {
                    (
                        *id,
                        MemberView {
                            role: *role,
                            address: format!("10.0.0.{id}:7420"),
                            contact: self.contacts.get(id).copied(),
                        },
                    )
                })
                .collect(),
            matched: self.matched.clone(),
            last_log: self.last_log,
            applied: self.applied,
            limits: self.limits,
        }
    }
}

fn ids(list: &str) -> Result<Vec<NodeId>> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Ok(s.parse()?))
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn show_limits(l: &Limits) -> String {
    format!(
        "limits down_after={} stall_after={} evict_after={} promote_lag={} fc_limit={} synced_lag={}",
        ms(l.down_after),
        ms(l.stall_after),
        if l.evict_after.is_zero() {
            "off".to_string()
        } else {
            ms(l.evict_after)
        },
        l.promote_lag,
        l.fc_limit,
        l.synced_lag
    )
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _context: &goldenscript::Context,
    ) -> Result<String> {
        let mut out = String::new();
        let mut args = command.consume_args();
        match command.name.as_str() {
            "limits" => {
                while let Some((key, value)) = args.next_key() {
                    let n: u64 = value.parse()?;
                    let d = Duration::from_millis(n);
                    match key {
                        "down_after" => self.limits.down_after = d,
                        "stall_after" => self.limits.stall_after = d,
                        "evict_after" => self.limits.evict_after = d,
                        "promote_lag" => self.limits.promote_lag = n,
                        "fc_limit" => self.limits.fc_limit = n,
                        "synced_lag" => self.limits.synced_lag = n,
                        other => return Err(format!("limits: unknown {other}").into()),
                    }
                }
                writeln!(out, "{}", show_limits(&self.limits))?;
            }
            "cluster" => {
                self.me = args.take_key("me").ok_or("cluster: no me=")?.parse()?;
                let voters = ids(args.take_key("voters").ok_or("cluster: no voters=")?)?;
                let learners = ids(args.take_key("learners").unwrap_or(""))?;
                self.leader = args.take_key("leader").map(str::parse).transpose()?;
                self.leading = match args.take_key("leading") {
                    Some(b) => b.parse()?,
                    None => self.leader == Some(self.me),
                };
                self.roles = voters
                    .iter()
                    .map(|v| (*v, Role::Voter))
                    .chain(learners.iter().map(|l| (*l, Role::Learner)))
                    .collect();
                let now = self.now();
                let me = self.me;
                self.contacts = self
                    .roles
                    .keys()
                    .filter(|id| **id != me)
                    .map(|id| (*id, Contact::new(now)))
                    .collect();
            }
            "log" => {
                if let Some(n) = args.take_key("last") {
                    self.last_log = n.parse()?;
                }
                if let Some(n) = args.take_key("applied") {
                    self.applied = n.parse()?;
                }
            }
            "advance" => {
                let n: u64 = args.next_pos().ok_or("advance: no ms")?.parse()?;
                self.now_ms += n;
                writeln!(out, "t={}ms", self.now_ms)?;
            }
            "answer" => {
                let id: NodeId = args.next_pos().ok_or("answer: no id")?.parse()?;
                let applied = args
                    .take_key("applied")
                    .ok_or("answer: no applied=")?
                    .parse()?;
                let head = match args.take_key("head") {
                    Some(h) => h.parse()?,
                    None => self.applied,
                };
                let now = self.now();
                self.contacts
                    .get_mut(&id)
                    .ok_or_else(|| format!("answer: {id} is not tracked"))?
                    .record(applied, head, now);
            }
            "match" => {
                while let Some((id, value)) = args.next_key() {
                    let m = match value {
                        "none" => None,
                        n => Some(n.parse()?),
                    };
                    self.matched.insert(id.parse()?, m);
                }
            }
            "health" => {
                let s = self.snapshot();
                for (id, m) in &s.members {
                    if *id == s.me {
                        continue;
                    }
                    let mut line = format!("{id} {}", m.role.as_str());
                    if decide::is_up(&s, *id) {
                        line.push_str(" up");
                    } else {
                        write!(line, " down for {}", ms(decide::down_for(&s, *id)))?;
                    }
                    match m.contact.filter(|c| c.answered) {
                        Some(c) => write!(line, " lag={}", c.lag)?,
                        None => line.push_str(" never answered"),
                    }
                    let stalled = decide::stalled_for(&s, *id);
                    if decide::is_stalled(&s, *id) {
                        write!(line, " stalled for {}", ms(stalled))?;
                    } else if !stalled.is_zero() {
                        write!(line, " not applying for {}", ms(stalled))?;
                    }
                    writeln!(out, "{line}")?;
                }
            }
            "members" => {
                for m in decide::members(&self.snapshot()) {
                    writeln!(
                        out,
                        "{} {} {} up={} stalled={}",
                        m.id,
                        m.address,
                        m.role.as_str(),
                        m.up,
                        m.stalled
                    )?;
                }
            }
            "reconcile" => {
                let plan = decide::reconcile(&self.snapshot());
                for h in &plan.held {
                    writeln!(
                        out,
                        "hold eviction of {}: {} of {} remaining voters up",
                        h.id, h.up, h.remaining
                    )?;
                }
                match plan.action {
                    None => writeln!(out, "no change")?,
                    Some(Action::Promote(id)) => writeln!(out, "promote {id}")?,
                    Some(Action::Evict { id, down, stalled }) => {
                        writeln!(out, "evict {id} (down={down} stalled={stalled})")?
                    }
                }
            }
            "flow" => match decide::flow_delay(&self.snapshot()) {
                (lag, None) => writeln!(out, "lag {lag}: no delay")?,
                (lag, Some(d)) => writeln!(out, "lag {lag}: delay {}", ms(d))?,
            },
            "state" => {
                let stopped = args.take_key("stopped").map(str::to_string);
                let primary = match args.take_key("not_primary") {
                    Some(why) => Err(why.to_string()),
                    None => Ok(self.leader.unwrap_or(0)),
                };
                let donor = match args.next_pos() {
                    Some("donor") => true,
                    Some(other) => return Err(format!("state: unknown {other}").into()),
                    None => false,
                };
                let standing = Standing {
                    stopped,
                    primary,
                    donor,
                };
                let (state, why) = decide::node_state(&self.snapshot(), &standing);
                if why.is_empty() {
                    writeln!(out, "{}", state.as_str())?;
                } else {
                    writeln!(out, "{}: {why}", state.as_str())?;
                }
            }
            "bounds" => {
                if let Some(n) = args.take_key("leader") {
                    self.bounds.leader = Duration::from_millis(n.parse()?);
                }
                if let Some(n) = args.take_key("follower") {
                    self.bounds.follower = Duration::from_millis(n.parse()?);
                }
            }
            "raft" => {
                if let Some(l) = args.take_key("leader") {
                    self.raft_leader = match l {
                        "none" => None,
                        n => Some(n.parse()?),
                    };
                }
                if let Some(q) = args.take_key("quorum_ack") {
                    self.quorum_ack_ms = match q {
                        "none" => None,
                        n => Some(n.parse()?),
                    };
                }
            }
            "heard" => {
                let id: NodeId = args.next_pos().ok_or("heard: no id")?.parse()?;
                let sent = self.at(args.take_key("sent").ok_or("heard: no sent=")?.parse()?);
                let quorum: bool = args
                    .take_key("quorum")
                    .ok_or("heard: no quorum=")?
                    .parse()?;
                // As `Primary::heard`: only about the current leader, never itself.
                if self.raft_leader == Some(id) && id != self.me {
                    let now = self.now();
                    self.word.hear(id, sent, quorum, now);
                } else {
                    writeln!(out, "ignored: {id} is not this node's leader")?;
                }
            }
            "refused" => {
                let id: NodeId = args.next_pos().ok_or("refused: no id")?.parse()?;
                let why = args.next_pos().ok_or("refused: no reason")?;
                if self.raft_leader == Some(id) {
                    let now = self.now();
                    self.word.refuse(id, why, now);
                } else {
                    writeln!(out, "ignored: {id} is not this node's leader")?;
                }
            }
            "primary" => {
                let now = self.now();
                if let Some(l) = self.raft_leader.filter(|l| *l != self.me) {
                    self.word.follow(l, now);
                }
                match primary::decide(
                    self.me,
                    self.raft_leader,
                    self.quorum_ack_ms,
                    &self.word,
                    self.bounds,
                    now,
                ) {
                    Ok(l) => writeln!(out, "primary (leader {l})")?,
                    Err(why) => writeln!(out, "{why}")?,
                }
            }
            "sample" => {
                let s = self.snapshot();
                let sample = replication::sample(&s);
                self.leading_sampled = sample.is_some();
                replication::observe(&mut self.progress, sample, s.now);
            }
            "replication" => {
                let after = self.limits.down_after;
                let unreplicated = replication::unreplicated(&self.progress, after, self.now());
                let health = if !self.leading_sampled {
                    "none (not the leader)"
                } else if unreplicated.is_empty() {
                    ClusterHealth::Healthy.as_str()
                } else {
                    ClusterHealth::Degraded.as_str()
                };
                writeln!(out, "{health} unreplicated={unreplicated:?}")?;
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        args.reject_next()?;
        Ok(out)
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cluster/testscripts")
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() -> std::io::Result<()> {
                goldenscript::run(&mut Runner::new(), dir().join(concat!(stringify!($name), ".txt")))
            }
        )*

        /// Every script that has a test above.
        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
    };
}

scripts!(evict, flow, health, primary, promote, replication, state);

#[test]
fn every_script_is_run() -> std::io::Result<()> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "txt") {
            let stem = path.file_stem().expect("a file name").to_string_lossy();
            found.push(stem.into_owned());
        }
    }
    found.sort();
    let mut listed: Vec<String> = SCRIPTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "a script in testscripts/ has no test");
    Ok(())
}
