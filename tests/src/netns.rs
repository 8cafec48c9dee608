//! [`NetCluster`]: `trireme-server` processes on a network the test controls,
//! for fault injection.
//!
//! **Namespace mode** (root with `ip`): every node runs in its own network
//! namespace `trireme-<tag>-n<i>` with one veth into a bridge that lives in a
//! hub namespace `trireme-<tag>-hub`, on the private subnet `10.213.<tag>.0/24`
//! (node `i` is `.i`). The test process reaches every node through one more
//! veth (`trireme<tag>h`, `.254`) from the root namespace into the hub. The
//! bridge is kept out of the root namespace on purpose: Docker sets the root
//! `FORWARD` policy to `DROP` and bridged frames go through it
//! (`bridge-nf-call-iptables`); this harness never touches the root
//! namespace's iptables rules. No namespace has a default route, so nothing
//! leaves the subnet. Partitions and packet loss are iptables rules in the
//! nodes' own namespaces (chains `TRIREME-PART` and `TRIREME-LOSS`).
//!
//! **Proxy mode** (the fallback, and the only way to add latency here): nodes
//! on 127.0.0.1 ports, peer traffic through one TCP proxy per node
//! ([`proxy`]), which applies partitions and latency per directed link.
//!
//! Every name this harness creates is recorded and removed on drop, even when
//! the test fails; names left by an earlier run that crashed (its owner pid is
//! gone) are removed when the next cluster starts. Every process is started
//! by this harness, killed by its own pid, and also gets `PR_SET_PDEATHSIG` so
//! that it dies with the test process if the test is killed. Waits have
//! deadlines; nothing sleeps a fixed time.

#[path = "proxy.rs"]
pub mod proxy;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use trireme_client::{Checksum, Client, ClientOptions, NodeStatus};

use crate::harness::Harness;
use crate::{bin, free_ports, wait_for};
use proxy::ProxyNet;

/// The libfaketime library (Debian `faketime`); the thread-safe build.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// libfiu's preload libraries (Debian `fiu-utils`).
pub const FIU_LIBS: [&str; 2] = [
    "/usr/lib/fiu/fiu_run_preload.so",
    "/usr/lib/fiu/fiu_posix_preload.so",
];
/// The port every node listens on inside its namespace.
pub const NETNS_PORT: u16 = 7420;
/// The peer port every node listens on in namespace mode.
pub const NETNS_PEER_PORT: u16 = 7421;
/// Where ownership of namespace tags is recorded (pid of the owning test process).
const OWNER_DIR: &str = "/tmp/trireme-netns";

/// How the nodes are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// One network namespace per node, iptables for faults.
    Netns,
    /// 127.0.0.1 with a TCP proxy per node.
    Proxy,
}

impl std::fmt::Display for NetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetMode::Netns => "netns",
            NetMode::Proxy => "proxy",
        })
    }
}

/// What a [`NetCluster`] starts.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes (ids 1..=n).
    pub nodes: usize,
    /// `None`: namespaces when possible, else the proxy.
    pub mode: Option<NetMode>,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// A TOML configuration written for every node and passed with `--config`.
    pub config_toml: Option<String>,
    /// Put every node's data directory on its own tmpfs of this many MiB.
    pub tmpfs_mib: Option<u64>,
    /// Preload libfaketime, driven by a per-node timestamp file.
    pub faketime: bool,
    /// With `faketime`: also fake the monotonic clock (for drift).
    pub faketime_monotonic: bool,
    /// Preload libfiu, controllable with `fiu-ctrl`.
    pub fiu: bool,
    /// Mutual TLS on both ports, client certificates required
    /// ([`crate::TlsFiles`]); the cluster's clients present one.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            mode: None,
            extra_args: Vec::new(),
            config_toml: None,
            tmpfs_mib: None,
            faketime: false,
            faketime_monotonic: false,
            fiu: false,
            tls: false,
        }
    }
}

/// Runs a command to completion; an error (with its stderr) if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs `program args` inside network namespace `ns`.
pub fn ns_run(ns: &str, program: &str, args: &[&str]) -> Result<Output> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Why namespace mode is unavailable here, if it is.
pub fn netns_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need CAP_NET_ADMIN".into());
    }
    for tool in ["ip", "iptables"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Some(format!(
                "`{tool}` is not installed (Debian iproute2/iptables)"
            ));
        }
    }
    None
}

/// Held while a test runs clusters: see [`serial`].
#[derive(Debug)]
pub struct SerialGuard {
    _file: std::fs::File,
}

/// Serializes tests that start clusters, in this process and in any other
/// (an exclusive `flock` on a file under `/tmp/trireme-netns`): they would
/// fight over two cores and skew every timing. Released on drop, or when the
/// process dies.
pub fn serial() -> SerialGuard {
    use std::os::fd::AsRawFd;
    let _ = std::fs::create_dir_all(OWNER_DIR);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(OWNER_DIR).join("serial.lock"))
        .expect("open the serial lock file");
    // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    SerialGuard { _file: file }
}

// ---------------------------------------------------------------------------
// Spawning: from one long-lived thread, so PR_SET_PDEATHSIG (which fires when
// the spawning *thread* exits) only fires when the test process dies.

type SpawnReq = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static TX: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnReq>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnReq>();
        std::thread::Builder::new()
            .name("trireme-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: prctl and getppid are async-signal-safe.
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    tx.lock()
        .unwrap()
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

fn signal(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: kill(2) on a pid this harness started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    if rc != 0 {
        bail!(
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// ---------------------------------------------------------------------------
// Namespaces.

/// The namespaces, veths and bridge of one cluster; removed on drop.
#[derive(Debug)]
pub struct NetnsNet {
    /// The third byte of the subnet, unique among live clusters.
    pub tag: u8,
    /// The hub namespace holding the bridge.
    pub hub: String,
    /// Node namespaces, by node position.
    pub node_ns: Vec<String>,
    /// The veth in the root namespace (`.254`).
    pub host_if: String,
    owner_file: PathBuf,
    created: Vec<String>,
    cleaned: std::sync::atomic::AtomicBool,
}

impl NetnsNet {
    /// The address of node `id`.
    pub fn ip(&self, id: u64) -> String {
        format!("10.213.{}.{}", self.tag, id)
    }

    /// The root namespace's address on the subnet.
    pub fn host_ip(&self) -> String {
        format!("10.213.{}.254", self.tag)
    }

    fn create(n: usize) -> Result<NetnsNet> {
        cleanup_stale();
        std::fs::create_dir_all(OWNER_DIR)?;
        let mut rng_state = std::process::id() as u64 ^ now_nanos();
        for _ in 0..64 {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let tag = (1 + (rng_state >> 33) % 250) as u8;
            let owner_file = Path::new(OWNER_DIR).join(format!("{tag}.owner"));
            // The owner file is the lock on the tag: made exclusively, first.
            let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&owner_file)
            else {
                continue;
            };
            writeln!(f, "{}", std::process::id())?;
            drop(f);
            let route = run(
                "ip",
                &["-4", "route", "show", &format!("10.213.{tag}.0/24")],
            )?;
            if !route.stdout.is_empty() || ns_exists(&format!("trireme-{tag}-hub")) {
                // Someone else's network, or a leftover we could not remove.
                let _ = std::fs::remove_file(&owner_file);
                continue;
            }
            let mut net = NetnsNet {
                tag,
                hub: format!("trireme-{tag}-hub"),
                node_ns: (1..=n).map(|i| format!("trireme-{tag}-n{i}")).collect(),
                host_if: format!("trireme{tag}h"),
                owner_file,
                created: Vec::new(),
                cleaned: std::sync::atomic::AtomicBool::new(false),
            };
            // On error, Drop removes what was made.
            net.build()?;
            return Ok(net);
        }
        bail!("no free trireme network tag (64 tries)")
    }

    fn build(&mut self) -> Result<()> {
        let tag = self.tag;
        run("ip", &["netns", "add", &self.hub])?;
        self.created.push(self.hub.clone());
        ns_run(&self.hub, "ip", &["link", "add", "br0", "type", "bridge"])?;
        ns_run(&self.hub, "ip", &["link", "set", "br0", "up"])?;
        ns_run(&self.hub, "ip", &["link", "set", "lo", "up"])?;
        // The root namespace's leg: trireme<tag>h (.254) <-> trireme<tag>hb in the hub.
        let host = self.host_if.clone();
        let host_peer = format!("{host}b");
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &host_peer,
            ],
        )?;
        run("ip", &["link", "set", &host_peer, "netns", &self.hub])?;
        ns_run(
            &self.hub,
            "ip",
            &["link", "set", &host_peer, "master", "br0", "up"],
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", self.host_ip()),
                "dev",
                &host,
            ],
        )?;
        run("ip", &["link", "set", &host, "up"])?;
        for (i, ns) in self.node_ns.clone().iter().enumerate() {
            let id = i as u64 + 1;
            run("ip", &["netns", "add", ns])?;
            self.created.push(ns.clone());
            let inner = format!("trireme{tag}n{id}");
            let outer = format!("{inner}b");
            run(
                "ip",
                &[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ],
            )?;
            run("ip", &["link", "set", &inner, "netns", ns])?;
            run("ip", &["link", "set", &outer, "netns", &self.hub])?;
            ns_run(
                &self.hub,
                "ip",
                &["link", "set", &outer, "master", "br0", "up"],
            )?;
            ns_run(ns, "ip", &["link", "set", "lo", "up"])?;
            ns_run(
                ns,
                "ip",
                &["addr", "add", &format!("{}/24", self.ip(id)), "dev", &inner],
            )?;
            ns_run(ns, "ip", &["link", "set", &inner, "up"])?;
            // Our own chains, so healing flushes only what a nemesis added.
            for chain in ["TRIREME-PART", "TRIREME-LOSS"] {
                ns_run(ns, "iptables", &["-w", "-N", chain])?;
                ns_run(ns, "iptables", &["-w", "-A", "INPUT", "-j", chain])?;
            }
        }
        Ok(())
    }
}

impl NetnsNet {
    /// Deletes the namespaces and links (idempotent).
    pub fn cleanup(&self) {
        if self.cleaned.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // Node namespaces first, the hub last; deleting a namespace destroys its veths.
        for ns in self.created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.owner_file);
    }
}

impl Drop for NetnsNet {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Removes `trireme-*` namespaces (and `trireme*` links in the root
/// namespace) left by an earlier run whose owner process is gone, killing the
/// processes still inside them by pid.
pub fn cleanup_stale() {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return;
    };
    let mut stale_tags = std::collections::BTreeSet::new();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("trireme-"))
        .map(str::to_string)
        .collect();
    for name in &names {
        let Some(tag) = name
            .strip_prefix("trireme-")
            .and_then(|r| r.split('-').next())
            .and_then(|t| t.parse::<u8>().ok())
        else {
            continue;
        };
        if !owner_alive(tag) {
            stale_tags.insert(tag);
        }
    }
    // Owner files whose owner is gone, even without namespaces.
    if let Ok(dir) = std::fs::read_dir(OWNER_DIR) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(tag) = name
                .strip_suffix(".owner")
                .and_then(|t| t.parse::<u8>().ok())
            {
                if !owner_alive(tag) {
                    stale_tags.insert(tag);
                }
            }
        }
    }
    for tag in stale_tags {
        let prefix = format!("trireme-{tag}-");
        for name in names.iter().filter(|n| n.starts_with(&prefix)) {
            if let Ok(pids) = run("ip", &["netns", "pids", name]) {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<u32>() {
                        let _ = signal(pid, libc::SIGKILL);
                    }
                }
            }
            let _ = run("ip", &["netns", "del", name]);
        }
        let _ = run("ip", &["link", "del", &format!("trireme{tag}h")]);
        for i in 1..=16 {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("trireme{tag}n{i}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(Path::new(OWNER_DIR).join(format!("{tag}.owner")));
        eprintln!("netns: removed the stale network trireme-{tag} of an earlier run");
    }
}

fn owner_alive(tag: u8) -> bool {
    let file = Path::new(OWNER_DIR).join(format!("{tag}.owner"));
    match std::fs::read_to_string(&file) {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| pid == std::process::id() || pid_alive(pid)),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Nodes.

/// How one process of a node ended, when it ended by itself.
#[derive(Debug, Clone)]
pub struct ExitRecord {
    /// When it was noticed.
    pub at: Instant,
    /// The exit status as text.
    pub status: String,
}

/// One server process of a [`NetCluster`].
pub struct NetNode {
    /// Node id.
    pub id: u64,
    /// Its namespace, in namespace mode.
    pub ns: Option<String>,
    /// The client address it binds.
    pub listen: String,
    /// The peer address it binds.
    pub peer_listen: String,
    /// The address peers reach it at (its proxy in proxy mode).
    pub advertise: String,
    /// The address clients use.
    pub endpoint: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The tmpfs mount point holding the data directory, if any.
    pub fs_dir: Option<PathBuf>,
    /// Its log file (stderr of every start, appended).
    pub log: PathBuf,
    /// libfaketime's timestamp file for it, if preloaded.
    pub faketime_file: Option<PathBuf>,
    /// libfiu's control fifo prefix, if preloaded.
    pub fiu_prefix: Option<PathBuf>,
    /// How many times it was started.
    pub starts: u32,
    /// Exits that this harness did not cause (crashes, aborts, refusals).
    pub exits: Vec<ExitRecord>,
    /// Whether it is stopped with SIGSTOP.
    pub paused: bool,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NetNode {
    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process is running (reaping it, and recording the exit, if it ended).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit();
        self.child.is_some()
    }

    /// Reaps the process if it exited by itself; returns the exit status.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        self.paused = false;
        self.exits.push(ExitRecord {
            at: Instant::now(),
            status: status.to_string(),
        });
        Some(status)
    }

    fn spawn(&mut self, extra_env: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut env: Vec<String> = vec![format!(
            "RUST_LOG={}",
            std::env::var("TRIREME_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into())
        )];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        env.extend(extra_env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut header = format!(
            "=== trireme-test: start #{} of node {}",
            self.starts + 1,
            self.id
        );
        if !extra_env.is_empty() {
            let _ = write!(header, " with {extra_env:?}");
        }
        let mut log2 = log.try_clone()?;
        writeln!(log2, "{header}")?;
        // `env` sets the variables (preloads included) only for the server,
        // and execs it: the pid we hold is the server's.
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "env"]);
                c
            }
            None => Command::new("env"),
        };
        cmd.args(&env)
            .arg(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_child(cmd).context("spawn trireme-server")?;
        let pid = child.id();
        self.child = Some(child);
        self.starts += 1;
        self.paused = false;
        // Wait (bounded) until the exec chain reached the server binary.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.file_name() == self.binary.file_name())
            {
                return Ok(());
            }
            if self.poll_exit().is_some() {
                bail!("node {} exited at start: {}", self.id, tail(&self.log, 10));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("node {} did not exec trireme-server within 5 s", self.id)
    }

    /// SIGKILLs the process by its pid and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait()?;
        }
        self.paused = false;
        Ok(())
    }
}

/// The last `n` lines of a file, without backtrace frames.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !is_backtrace_line(l)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn is_backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("at /")
        || t == "Stack backtrace:"
        || (line.starts_with("  ")
            && t.split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// N server processes on a network the test controls (see the module docs).
pub struct NetCluster {
    /// How the nodes are networked.
    pub mode: NetMode,
    /// Why namespace mode was not used, when it was not asked for explicitly.
    pub fallback_reason: Option<String>,
    /// The namespaces (namespace mode).
    pub net: Option<NetnsNet>,
    /// The proxies (proxy mode).
    pub proxy: Option<ProxyNet>,
    /// The options it was started with.
    pub options: ClusterOptions,
    nodes: Vec<Mutex<NetNode>>,
    /// Cached short-deadline clients of single nodes, by id.
    status_clients: Mutex<BTreeMap<u64, Client>>,
    mounts: Mutex<Vec<PathBuf>>,
    /// Holds every data directory and log; removed on drop.
    pub dir: tempfile::TempDir,
    /// With [`ClusterOptions::tls`]: the certificates.
    pub tls: Option<crate::TlsFiles>,
}

impl NetCluster {
    /// Starts a cluster (does not wait for a leader).
    pub async fn start(options: ClusterOptions) -> Result<NetCluster> {
        let binary = bin("trireme-server");
        let (mut mode, mut fallback_reason) = match options.mode {
            Some(m) => (m, None),
            None => match netns_unavailable() {
                None => (NetMode::Netns, None),
                Some(why) => (NetMode::Proxy, Some(why)),
            },
        };
        if options.mode == Some(NetMode::Netns) {
            if let Some(why) = netns_unavailable() {
                bail!("namespace mode asked for but unavailable: {why}");
            }
        }
        // Made first: in automatic mode a failure falls back to the proxy.
        let mut net = None;
        if mode == NetMode::Netns {
            match tokio::task::block_in_place(|| NetnsNet::create(options.nodes)) {
                Ok(n) => net = Some(n),
                Err(e) if options.mode.is_none() => {
                    mode = NetMode::Proxy;
                    fallback_reason = Some(format!("creating network namespaces failed: {e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("trireme-chaos-")
            .tempdir()?;
        let n = options.nodes;
        let mut cluster = NetCluster {
            mode,
            fallback_reason,
            net: None,
            proxy: None,
            options: options.clone(),
            nodes: Vec::new(),
            status_clients: Mutex::new(BTreeMap::new()),
            mounts: Mutex::new(Vec::new()),
            dir,
            tls: None,
        };
        // (client listen, peer listen, peer advertise, client endpoint) per node.
        let mut addrs = Vec::new();
        match mode {
            NetMode::Netns => {
                let net = net.take().expect("namespaces made above");
                for id in 1..=n as u64 {
                    let a = format!("{}:{NETNS_PORT}", net.ip(id));
                    let p = format!("{}:{NETNS_PEER_PORT}", net.ip(id));
                    addrs.push((a.clone(), p.clone(), p, a));
                }
                cluster.net = Some(net);
            }
            NetMode::Proxy => {
                // Only the peer port goes through the proxy: the links it
                // cuts are between nodes; clients reach each node directly.
                let mut upstreams = Vec::new();
                let mut clients = Vec::new();
                let ports = free_ports(2 * n)?;
                for (id, pair) in (1..=n as u64).zip(ports.chunks(2)) {
                    upstreams.push((id, SocketAddr::from(([127, 0, 0, 1], pair[0]))));
                    clients.push(format!("127.0.0.1:{}", pair[1]));
                }
                let proxy = ProxyNet::start(&upstreams).await?;
                for ((id, up), client) in upstreams.iter().zip(clients) {
                    addrs.push((
                        client.clone(),
                        up.to_string(),
                        proxy.proxy_addr(*id).to_string(),
                        client,
                    ));
                }
                cluster.proxy = Some(proxy);
            }
        }
        if options.tls {
            // Each node's certificate names every address it is reached at.
            let mut hosts: Vec<String> = addrs
                .iter()
                .flat_map(|(l, p, a, e)| [l, p, a, e])
                .filter_map(|addr| addr.parse::<SocketAddr>().ok())
                .map(|a| a.ip().to_string())
                .collect();
            hosts.sort();
            hosts.dedup();
            let ids: Vec<u64> = (1..=n as u64).collect();
            cluster.tls = Some(crate::TlsFiles::make(
                &cluster.dir.path().join("certs"),
                &ids,
                &hosts,
            )?);
        }
        let spec = addrs
            .iter()
            .enumerate()
            .map(|(i, (_, _, adv, _))| format!("{}={adv}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        for (i, (listen, peer_listen, advertise, endpoint)) in addrs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let root = cluster.dir.path();
            let fs_dir = match options.tmpfs_mib {
                Some(mib) => {
                    let mnt = root.join(format!("node{id}-fs"));
                    std::fs::create_dir_all(&mnt)?;
                    let mnt_s = mnt.display().to_string();
                    tokio::task::block_in_place(|| {
                        run(
                            "mount",
                            &[
                                "-t",
                                "tmpfs",
                                "-o",
                                &format!("size={mib}m"),
                                "trireme-test",
                                &mnt_s,
                            ],
                        )
                    })?;
                    cluster.mounts.lock().unwrap().push(mnt.clone());
                    Some(mnt)
                }
                None => None,
            };
            let data_dir = match &fs_dir {
                Some(m) => m.join("data"),
                None => root.join(format!("node{id}")),
            };
            let mut args = vec![
                "--node-id".to_string(),
                id.to_string(),
                "--listen".into(),
                listen.clone(),
                "--peer-listen".into(),
                peer_listen.clone(),
                "--peer-advertise".into(),
                advertise.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--initial-cluster".into(),
                spec.clone(),
            ];
            if let Some(toml) = &options.config_toml {
                let path = root.join(format!("node{id}.toml"));
                std::fs::write(&path, toml)?;
                args.push("--config".into());
                args.push(path.display().to_string());
            }
            if let Some(tls) = &cluster.tls {
                args.extend(tls.node_flags(id));
            }
            args.extend(options.extra_args.iter().cloned());
            let mut env = Vec::new();
            let mut preload = Vec::new();
            let mut faketime_file = None;
            if options.faketime {
                let f = root.join(format!("node{id}.faketime"));
                std::fs::write(&f, "+0\n")?;
                preload.push(FAKETIME_LIB.to_string());
                env.push((
                    "FAKETIME_TIMESTAMP_FILE".to_string(),
                    f.display().to_string(),
                ));
                env.push(("FAKETIME_CACHE_DURATION".into(), "1".into()));
                if !options.faketime_monotonic {
                    env.push(("DONT_FAKE_MONOTONIC".into(), "1".into()));
                }
                faketime_file = Some(f);
            }
            let mut fiu_prefix = None;
            if options.fiu {
                let p = root.join(format!("fiu-n{id}"));
                preload.extend(FIU_LIBS.iter().map(|s| s.to_string()));
                env.push(("FIU_CTRL_FIFO".into(), p.display().to_string()));
                env.push(("FIU_ENABLE".into(), String::new()));
                fiu_prefix = Some(p);
            }
            if !preload.is_empty() {
                env.push(("LD_PRELOAD".into(), preload.join(" ")));
            }
            cluster.nodes.push(Mutex::new(NetNode {
                id,
                ns: cluster.net.as_ref().map(|n| n.node_ns[i].clone()),
                listen,
                peer_listen,
                advertise,
                endpoint,
                data_dir,
                fs_dir,
                log: root.join(format!("node{id}.log")),
                faketime_file,
                fiu_prefix,
                starts: 0,
                exits: Vec::new(),
                paused: false,
                binary: binary.clone(),
                args,
                env,
                child: None,
            }));
        }
        for id in 1..=n as u64 {
            cluster.start_node(id, &[])?;
        }
        Ok(cluster)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    /// Node `id` (locked).
    pub fn node(&self, id: u64) -> MutexGuard<'_, NetNode> {
        self.nodes[(id - 1) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every node's client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.ids()
            .into_iter()
            .map(|id| self.node(id).endpoint.clone())
            .collect()
    }

    /// Node `id`'s client address.
    pub fn endpoint(&self, id: u64) -> String {
        self.node(id).endpoint.clone()
    }

    /// Node `id`'s peer port as bound (reached directly, not through a proxy).
    pub fn peer_endpoint(&self, id: u64) -> String {
        self.node(id).peer_listen.clone()
    }

    /// The clients' TLS settings (with [`ClusterOptions::tls`]).
    pub fn client_tls(&self) -> Result<Option<trireme_client::ClientTls>> {
        self.tls
            .as_ref()
            .map(crate::TlsFiles::client_tls)
            .transpose()
    }

    /// A client that talks to node `id` first and fails over to the others.
    pub fn client(&self, id: u64) -> Result<Client> {
        self.client_with(id, ClientOptions::default())
    }

    /// A client with these options, starting at node `id` (with the
    /// cluster's TLS settings when it has TLS on).
    pub fn client_with(&self, id: u64, mut options: ClientOptions) -> Result<Client> {
        options.start_index = (id - 1) as usize;
        if options.tls.is_none() {
            options.tls = self.client_tls()?;
        }
        Ok(Client::with_options(self.endpoints(), options)?)
    }

    /// A client of node `id` only, with short deadlines (for status
    /// polling); cached, so that polling does not open a connection each time.
    pub fn client_only(&self, id: u64) -> Result<Client> {
        let mut cache = self.status_clients.lock().unwrap();
        if let Some(c) = cache.get(&id) {
            return Ok(c.clone());
        }
        let c = Client::with_options(
            vec![self.endpoint(id)],
            ClientOptions {
                timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(1),
                keepalive_interval: Duration::from_secs(1),
                keepalive_timeout: Duration::from_secs(1),
                tls: self.client_tls()?,
                ..ClientOptions::default()
            },
        )?;
        cache.insert(id, c.clone());
        Ok(c)
    }

    fn start_node(&self, id: u64, extra_env: &[(&str, &str)]) -> Result<()> {
        let mut node = self.node(id);
        node.spawn(extra_env)?;
        if let Some(p) = &self.proxy {
            p.set_pid(id, node.pid());
        }
        Ok(())
    }

    /// SIGKILLs node `id` by its pid.
    pub fn kill(&self, id: u64) -> Result<()> {
        self.node(id).kill()?;
        if let Some(p) = &self.proxy {
            p.set_pid(id, None);
        }
        Ok(())
    }

    /// Restarts node `id` (SIGKILL first if it runs) on the same data directory.
    pub fn restart(&self, id: u64) -> Result<()> {
        self.restart_with_env(id, &[])
    }

    /// Restarts node `id` with extra environment for this start only
    /// (e.g. `FAILPOINTS`).
    pub fn restart_with_env(&self, id: u64, env: &[(&str, &str)]) -> Result<()> {
        self.kill(id)?;
        self.start_node(id, env)
    }

    /// Starts node `id` if it is not running; whether it was started.
    pub fn ensure_running(&self, id: u64) -> Result<bool> {
        if self.node(id).is_running() {
            return Ok(false);
        }
        self.start_node(id, &[])?;
        Ok(true)
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&self, id: u64) -> Result<()> {
        let mut node = self.node(id);
        let pid = node
            .pid()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        signal(pid, libc::SIGSTOP)?;
        node.paused = true;
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume(&self, id: u64) -> Result<()> {
        let mut node = self.node(id);
        let pid = node
            .pid()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        signal(pid, libc::SIGCONT)?;
        node.paused = false;
        Ok(())
    }

    /// Whether node `id`'s process runs.
    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).is_running()
    }

    /// Ids of the nodes whose processes run (and are not paused).
    pub fn running(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|id| {
                let mut n = self.node(*id);
                n.is_running() && !n.paused
            })
            .collect()
    }

    /// The status of node `id` (short deadline).
    pub async fn status(&self, id: u64) -> Result<NodeStatus> {
        Ok(self.client_only(id)?.status().await?)
    }

    /// The checksum of node `id` (short deadline).
    pub async fn checksum(&self, id: u64) -> Result<Checksum> {
        Ok(self.client_only(id)?.checksum().await?)
    }

    /// The leader as the reachable nodes see it: the leader named by the node
    /// with the highest term that names one.
    pub async fn current_leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.running() {
            if let Ok(s) = self.status(id).await {
                if s.leader_id != 0 && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, s.leader_id));
                }
            }
        }
        best.map(|(_, l)| l)
    }

    /// Waits until every node among `ids` agrees on one leader among `ids`
    /// ([`Harness::wait_leader`]).
    pub async fn wait_leader(&self, ids: &[u64], deadline: Duration) -> Result<u64> {
        Harness::wait_leader(self, ids, deadline).await
    }

    /// Waits until nodes `ids` report the same applied seqno, checksum and
    /// verdict chain; returns that checksum ([`Harness::wait_converged`]).
    pub async fn wait_converged(&self, ids: &[u64], deadline: Duration) -> Result<Checksum> {
        Harness::wait_converged(self, ids, deadline).await
    }

    /// Blocks every byte from `from` to `to` for each pair (partition).
    pub fn block_links(&self, links: &[(u64, u64)]) -> Result<()> {
        match self.mode {
            NetMode::Netns => {
                let net = self.net.as_ref().expect("netns");
                for (from, to) in links {
                    let ns = &net.node_ns[(*to - 1) as usize];
                    ns_run(
                        ns,
                        "iptables",
                        &[
                            "-w",
                            "-A",
                            "TRIREME-PART",
                            "-s",
                            &net.ip(*from),
                            "-j",
                            "DROP",
                        ],
                    )?;
                }
            }
            NetMode::Proxy => self.proxy.as_ref().expect("proxy").block(links),
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal_links(&self) -> Result<()> {
        match self.mode {
            NetMode::Netns => {
                let net = self.net.as_ref().expect("netns");
                for ns in &net.node_ns {
                    ns_run(ns, "iptables", &["-w", "-F", "TRIREME-PART"])?;
                }
            }
            NetMode::Proxy => self.proxy.as_ref().expect("proxy").heal(),
        }
        Ok(())
    }

    /// The partition rules now in force, as text (for the fault log).
    pub fn link_rules(&self) -> String {
        match self.mode {
            NetMode::Netns => {
                let net = self.net.as_ref().expect("netns");
                let mut out = String::new();
                for (i, ns) in net.node_ns.iter().enumerate() {
                    if let Ok(o) = ns_run(ns, "iptables", &["-w", "-S", "TRIREME-PART"]) {
                        let rules: Vec<String> = String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter(|l| l.starts_with("-A"))
                            .map(str::to_string)
                            .collect();
                        if !rules.is_empty() {
                            let _ = write!(out, "n{}: {}; ", i + 1, rules.join(", "));
                        }
                    }
                }
                out
            }
            NetMode::Proxy => String::from("(proxy rules)"),
        }
    }

    /// Drops incoming peer packets of node `id` with probability `p`
    /// (namespace mode only; clients from the root namespace are spared).
    pub fn set_loss(&self, id: u64, p: f64) -> Result<()> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| anyhow!("packet loss needs namespace mode"))?;
        let ns = &net.node_ns[(id - 1) as usize];
        ns_run(
            ns,
            "iptables",
            &[
                "-w",
                "-A",
                "TRIREME-LOSS",
                "!",
                "-s",
                &net.host_ip(),
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &format!("{p:.3}"),
                "-j",
                "DROP",
            ],
        )?;
        Ok(())
    }

    /// Removes every packet-loss rule.
    pub fn heal_loss(&self) -> Result<()> {
        if let Some(net) = &self.net {
            for ns in &net.node_ns {
                ns_run(ns, "iptables", &["-w", "-F", "TRIREME-LOSS"])?;
            }
        }
        Ok(())
    }

    /// Packets dropped so far by the loss rules of node `id`.
    pub fn loss_drops(&self, id: u64) -> u64 {
        let Some(net) = &self.net else { return 0 };
        let ns = &net.node_ns[(id - 1) as usize];
        let Ok(o) = ns_run(
            ns,
            "iptables",
            &["-w", "-L", "TRIREME-LOSS", "-v", "-x", "-n"],
        ) else {
            return 0;
        };
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Tries `tc netem` latency on node `id`'s link (namespace mode); the
    /// error says why not (this kernel has no netem).
    pub fn try_netem(&self, id: u64, delay_ms: u64) -> Result<()> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| anyhow!("netem needs namespace mode"))?;
        let ns = &net.node_ns[(id - 1) as usize];
        let dev = format!("trireme{}n{id}", net.tag);
        ns_run(
            ns,
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                &dev,
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
            ],
        )?;
        Ok(())
    }

    /// Removes netem from node `id`'s link, if any.
    pub fn clear_netem(&self, id: u64) {
        if let Some(net) = &self.net {
            let ns = &net.node_ns[(id - 1) as usize];
            let dev = format!("trireme{}n{id}", net.tag);
            let _ = ns_run(ns, "tc", &["qdisc", "del", "dev", &dev, "root"]);
        }
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.ids() {
            let n = self.node(id);
            let _ = writeln!(
                out,
                "--- node {} ({}) ---\n{}",
                n.id,
                n.log.display(),
                tail(&n.log, 30)
            );
        }
        out
    }

    /// Copies every node's full log into `dir`.
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for id in self.ids() {
            let n = self.node(id);
            if n.log.exists() {
                std::fs::copy(&n.log, dir.join(format!("node{id}.log")))?;
            }
        }
        Ok(())
    }

    /// The error lines of node `id`'s log (peer-unreachable noise left out),
    /// at most the last `n`.
    pub fn log_errors(&self, id: u64, n: usize) -> String {
        let log = self.node(id).log.clone();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                (l.contains("ERROR")
                    || l.contains("Error:")
                    || l.contains("Caused by")
                    || l.starts_with("    ")
                    || l.contains("panicked")
                    || l.contains("crash point")
                    || l.starts_with("=== trireme-test"))
                    && !l.contains("Unreachable node")
                    && !is_backtrace_line(l)
            })
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kills every node and copies every data directory and log into
    /// `dest`, to keep a failure's evidence (the tempdir is removed on drop).
    pub fn preserve(&self, dest: &Path) -> Result<()> {
        for id in self.ids() {
            let _ = self.kill(id);
        }
        std::fs::create_dir_all(dest)?;
        for id in self.ids() {
            let (data, log) = {
                let n = self.node(id);
                (n.data_dir.clone(), n.log.clone())
            };
            if data.exists() {
                let to = dest.join(format!("node{id}-data"));
                run(
                    "cp",
                    &["-a", &data.display().to_string(), &to.display().to_string()],
                )?;
            }
            if log.exists() {
                std::fs::copy(&log, dest.join(format!("node{id}.log")))?;
            }
        }
        Ok(())
    }

    /// Whether node `id`'s log contains `needle`.
    pub fn log_contains(&self, id: u64, needle: &str) -> bool {
        let log = self.node(id).log.clone();
        std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
    }
}

impl NetCluster {
    /// Kills every node by pid, unmounts the tmpfs mounts and removes the
    /// namespaces (idempotent; also done on drop).
    pub fn shutdown(&self) {
        for m in &self.nodes {
            let mut n = m.lock().unwrap_or_else(|p| p.into_inner());
            let _ = n.kill();
        }
        if let Some(p) = &self.proxy {
            p.shutdown();
        }
        for m in self.mounts.lock().unwrap().drain(..) {
            let s = m.display().to_string();
            if run("umount", &[&s]).is_err() {
                let _ = run("umount", &["-l", &s]);
            }
        }
        if let Some(net) = &self.net {
            net.cleanup();
        }
    }
}

/// Every fault: SIGTERM/SIGKILL/SIGSTOP by pid, links cut by iptables in
/// the namespaces or by the proxies.
impl Harness for NetCluster {
    fn kind(&self) -> &'static str {
        match self.mode {
            NetMode::Netns => "namespace",
            NetMode::Proxy => "proxy",
        }
    }

    fn ids(&self) -> Vec<u64> {
        NetCluster::ids(self)
    }

    async fn leader_seen_by(&self, id: u64) -> Result<Option<u64>> {
        let s = self.status(id).await?;
        Ok((s.leader_id != 0).then_some(s.leader_id))
    }

    async fn checksum_of(&self, id: u64) -> Result<Checksum> {
        self.checksum(id).await
    }

    async fn start(&mut self, id: u64) -> Result<()> {
        self.ensure_running(id).map(|_| ())
    }

    async fn stop(&mut self, id: u64) -> Result<()> {
        let Some(pid) = self.node(id).pid() else {
            return Ok(());
        };
        signal(pid, libc::SIGTERM)?;
        let stopped = wait_for(
            "the node to exit after SIGTERM",
            Duration::from_secs(20),
            || async { Ok((!self.is_running(id)).then_some(())) },
        )
        .await;
        // Whatever happened, the node ends stopped and unpaused.
        NetCluster::kill(self, id)?;
        stopped
    }

    async fn kill(&mut self, id: u64) -> Result<()> {
        NetCluster::kill(self, id)
    }

    fn pause(&mut self, id: u64) -> Result<()> {
        NetCluster::pause(self, id)
    }

    fn resume(&mut self, id: u64) -> Result<()> {
        NetCluster::resume(self, id)
    }

    fn partition(&mut self, links: &[(u64, u64)]) -> Result<()> {
        self.block_links(links)
    }

    fn heal(&mut self) -> Result<()> {
        self.heal_links()
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TRIREME_TEST_KEEP").is_some() {
            eprintln!("{}", self.logs());
        }
        self.shutdown();
    }
}
