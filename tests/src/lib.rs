//! A harness for tests of the real binaries: starts `trireme-server`
//! processes on free 127.0.0.1 ports with their own data directories, kills
//! and restarts them by pid, runs the `trireme` CLI, and waits on conditions
//! with deadlines (never fixed sleeps).
//!
//! Every process a [`Cluster`] starts is killed by its own pid when the cluster
//! is dropped, even when the test fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use trireme_client::{Checksum, Client, NodeStatus};

use crate::harness::Harness;

pub mod checkers;
pub mod harness;
pub mod history;
pub mod hostile;
pub mod inproc;
pub mod large_values;
pub mod nemesis;
pub mod netns;
pub mod refusal;
pub mod workloads;

/// The directory holding the workspace's binaries for this build profile.
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf()
}

/// Path of a workspace binary (`trireme-server` or `trireme`), built on first
/// use: `cargo test` does not build other packages' binaries.
///
/// Both are built by one `cargo build --workspace --bins --tests`: the same
/// packages and targets as `cargo test --workspace`, so the same features
/// (the server with `failpoints`, which this crate asks for) and the same
/// compiled dependencies. A narrower build (`-p trireme-server`) unifies
/// features differently, recompiles tonic, rustls and the server, and the next
/// `cargo test` recompiles them back.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    assert!(
        matches!(name, "trireme-server" | "trireme"),
        "unknown binary {name}"
    );
    let dir = bin_dir();
    BUILT.get_or_init(|| {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "--workspace", "--bins", "--tests"]);
        // cargo runs this test with the tests package's own variables set
        // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR, ...). ring's build
        // script reruns when one of them changes, and the cargo that built
        // the tests had none: inherited, they would rebuild ring and
        // everything above it here, and back again at the next cargo test.
        for (key, _) in std::env::vars_os() {
            let Some(k) = key.to_str() else { continue };
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
                || matches!(
                    k,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_MANIFEST_LINKS"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cmd.env_remove(&key);
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(status.success(), "building the workspace binaries failed");
    });
    dir.join(name)
}

/// A free TCP port on 127.0.0.1 ([`free_ports`]).
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free ports on 127.0.0.1 for servers a test starts.
///
/// They come from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), never from it: a port from that range,
/// released for a node to bind a moment later, can meanwhile become the
/// source port of any outgoing connection on the machine (another test's
/// client, another cluster's peers), and the node then fails to bind, or a
/// restarted node finds its port taken. One counter per test process walks
/// the range, so two tests of one binary never get the same port; each
/// candidate is bound to check that nothing else holds it, and all are held
/// until every one is picked.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    static NEXT: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    let (low, high) = harness_port_range();
    let span = high - low;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    // Start where another test process (the docker tier, a second run) is
    // unlikely to be.
    let cursor = next.get_or_insert_with(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ nanos) % span
    });
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let port = (low + *cursor) as u16;
        *cursor = (*cursor + 1) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    ensure!(
        held.len() == n,
        "no {n} free ports between {low} and {high} on 127.0.0.1"
    );
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// `[low, high)`: the ports below the ephemeral range, from 10000 up (or the
/// 8,192 below it when it starts lower than 18,192).
fn harness_port_range() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.clamp(2048, 65535);
    let low = if high >= 18192 {
        10000
    } else {
        high.saturating_sub(8192).max(1024)
    };
    (low, high)
}

/// Polls `f` until it returns `Ok(Some(v))` or `deadline` passes.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One server process of a [`Cluster`].
pub struct NodeProc {
    /// Node id.
    pub id: u64,
    /// Its client `HOST:PORT`.
    pub addr: String,
    /// Its peer `HOST:PORT` (what `--initial-cluster` and `--join` name).
    pub peer_addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl NodeProc {
    /// The pid of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin("trireme-server"))
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TRIREME_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn trireme-server")?;
        self.child = Some(child);
        Ok(())
    }

    /// Sets `--flag value` pairs for its next start, replacing a flag already given.
    pub fn set_flags(&mut self, pairs: &[(&str, &str)]) {
        for (flag, value) in pairs {
            match self.args.iter().position(|a| a == flag) {
                Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value.to_string(),
                _ => self.args.extend([flag.to_string(), value.to_string()]),
            }
        }
    }

    /// SIGKILLs the process by its pid and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM by pid and waits (bounded) for a clean exit.
    pub fn terminate(&mut self, deadline: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("node {} is not running", self.id))?;
        let pid = child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(pid, 15) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > deadline {
                child.kill().ok();
                child.wait()?;
                bail!(
                    "node {} did not exit within {deadline:?} of SIGTERM",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. SIGSTOP 19, SIGCONT 18) to the process by pid.
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("node {} is not running", self.id))?;
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc_kill(pid as i32, sig) };
        if rc != 0 {
            bail!("kill({pid}, {sig}) failed");
        }
        Ok(())
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The certificates of a cluster with TLS on (made with `trireme-server
/// certs`'s library): a CA, one certificate per node (SAN
/// `node-<ID>.trireme`, `localhost`, `127.0.0.1` and any extra hosts) and a
/// client certificate every harness client presents.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The common name of the harness's client certificate.
    pub client: String,
}

impl TlsFiles {
    /// Makes a CA in `dir`, certificates for `nodes` (reached at `hosts`
    /// besides localhost and 127.0.0.1) and a client certificate `root`.
    pub fn make(dir: &Path, nodes: &[u64], hosts: &[String]) -> Result<TlsFiles> {
        use trireme_server::tls::certs::{self, Validity};
        certs::init(dir, Validity::days(2))?;
        let mut all_hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        all_hosts.extend(hosts.iter().cloned());
        for id in nodes {
            certs::node(dir, *id, &all_hosts, Validity::days(2))?;
        }
        certs::client(dir, "root", Validity::days(2))?;
        Ok(TlsFiles {
            dir: dir.to_path_buf(),
            client: "root".into(),
        })
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        trireme_server::tls::certs::ca_cert_path(&self.dir)
    }

    /// Node `id`'s certificate and key.
    pub fn node(&self, id: u64) -> (PathBuf, PathBuf) {
        trireme_server::tls::certs::node_paths(&self.dir, id)
    }

    /// The harness client's certificate and key.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        trireme_server::tls::certs::client_paths(&self.dir, &self.client)
    }

    /// The flags that turn mutual TLS on for both ports of node `id`, with
    /// client certificates required.
    pub fn node_flags(&self, id: u64) -> Vec<String> {
        let (cert, key) = self.node(id);
        let ca = self.ca();
        let mut flags = Vec::new();
        for (flag, path) in [
            ("--tls-cert", &cert),
            ("--tls-key", &key),
            ("--tls-ca", &ca),
            ("--peer-tls-cert", &cert),
            ("--peer-tls-key", &key),
            ("--peer-tls-ca", &ca),
        ] {
            flags.push(flag.to_string());
            flags.push(path.display().to_string());
        }
        flags.push("--client-cert-auth".into());
        flags
    }

    /// The harness client's TLS settings.
    pub fn client_tls(&self) -> Result<trireme_client::ClientTls> {
        let (cert, key) = self.client_cert();
        Ok(trireme_client::ClientTls::from_files(
            &self.ca(),
            Some(&cert),
            Some(&key),
        )?)
    }

    /// The `trireme` CLI flags presenting the harness client's certificate.
    pub fn cli_flags(&self) -> Vec<String> {
        let (cert, key) = self.client_cert();
        vec![
            "--cacert".into(),
            self.ca().display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]
    }
}

/// N server processes forming one cluster.
pub struct Cluster {
    /// The nodes, by position (node id = position + 1).
    pub nodes: Vec<NodeProc>,
    /// Holds every data directory and log; removed on drop.
    pub dir: tempfile::TempDir,
    /// With TLS on ([`Cluster::start_tls`]): the certificates.
    pub tls: Option<TlsFiles>,
}

/// A new directory for a cluster's data and logs, removed when the cluster
/// is dropped unless `TRIREME_KEEP_TEST_DIRS` is set (to read a failed
/// run's full logs).
fn test_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("trireme-test-")
        .disable_cleanup(std::env::var_os("TRIREME_KEEP_TEST_DIRS").is_some())
        .tempdir()?)
}

impl Cluster {
    /// Starts `n` nodes of a new cluster with `extra` flags for every node.
    pub fn start(n: usize, extra: &[&str]) -> Result<Cluster> {
        let dir = test_dir()?;
        Self::launch(dir, n, extra, None)
    }

    /// [`Cluster::start`] with mutual TLS on both ports of every node and
    /// client certificates required; the harness's clients and CLI present
    /// [`TlsFiles::client_cert`].
    pub fn start_tls(n: usize, extra: &[&str]) -> Result<Cluster> {
        let dir = test_dir()?;
        let ids: Vec<u64> = (1..=n as u64).collect();
        let tls = TlsFiles::make(&dir.path().join("certs"), &ids, &[])?;
        Self::launch(dir, n, extra, Some(tls))
    }

    fn launch(
        dir: tempfile::TempDir,
        n: usize,
        extra: &[&str],
        tls: Option<TlsFiles>,
    ) -> Result<Cluster> {
        // (client, peer) addresses: the members are named by their peer addresses.
        let mut members = BTreeMap::new();
        let ports = free_ports(2 * n)?;
        for (id, pair) in (1..=n as u64).zip(ports.chunks(2)) {
            let client = format!("127.0.0.1:{}", pair[0]);
            let peer = format!("127.0.0.1:{}", pair[1]);
            members.insert(id, (client, peer));
        }
        let spec = members
            .iter()
            .map(|(id, (_, peer))| format!("{id}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (id, (addr, peer_addr)) in &members {
            let data_dir = dir.path().join(format!("node{id}"));
            let mut args = vec![
                "--node-id".to_string(),
                id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--peer-listen".into(),
                peer_addr.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--initial-cluster".into(),
                spec.clone(),
            ];
            if let Some(tls) = &tls {
                args.extend(tls.node_flags(*id));
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut node = NodeProc {
                id: *id,
                addr: addr.clone(),
                peer_addr: peer_addr.clone(),
                data_dir,
                log: dir.path().join(format!("node{id}.log")),
                child: None,
                args,
            };
            node.spawn()?;
            nodes.push(node);
        }
        Ok(Cluster { nodes, dir, tls })
    }

    /// Starts node 1 of a new cluster seeded from the backup `file`
    /// (`trireme-server --restore FILE`), alone: the others join it with
    /// [`Cluster::join_node`]. Later restarts run without `--restore`.
    pub fn start_restored(file: &Path, extra: &[&str]) -> Result<Cluster> {
        let dir = test_dir()?;
        let ports = free_ports(2)?;
        let addr = format!("127.0.0.1:{}", ports[0]);
        let peer_addr = format!("127.0.0.1:{}", ports[1]);
        let data_dir = dir.path().join("node1");
        let mut args = vec![
            "--node-id".to_string(),
            "1".into(),
            "--listen".into(),
            addr.clone(),
            "--peer-listen".into(),
            peer_addr.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProc {
            id: 1,
            addr,
            peer_addr,
            data_dir,
            log: dir.path().join("node1.log"),
            child: None,
            args: args.clone(),
        };
        node.args
            .extend(["--restore".to_string(), file.display().to_string()]);
        node.spawn()?;
        node.args = args;
        Ok(Cluster {
            nodes: vec![node],
            dir,
            tls: None,
        })
    }

    /// Starts a new node `id` (the next one: ids are positions) that joins
    /// the cluster through node `via`, with `extra` flags.
    pub fn join_node(&mut self, via: u64, extra: &[&str]) -> Result<u64> {
        let id = self.nodes.len() as u64 + 1;
        let ports = free_ports(2)?;
        let addr = format!("127.0.0.1:{}", ports[0]);
        let peer_addr = format!("127.0.0.1:{}", ports[1]);
        let data_dir = self.dir.path().join(format!("node{id}"));
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--peer-listen".into(),
            peer_addr.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--join".into(),
            self.nodes[(via - 1) as usize].peer_addr.clone(),
        ];
        if let Some(tls) = &self.tls {
            trireme_server::tls::certs::node(
                &tls.dir,
                id,
                &["localhost".into(), "127.0.0.1".into()],
                trireme_server::tls::certs::Validity::days(2),
            )?;
            args.extend(tls.node_flags(id));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProc {
            id,
            addr,
            peer_addr,
            data_dir,
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
            args,
        };
        node.spawn()?;
        self.nodes.push(node);
        Ok(id)
    }

    /// Node `id`.
    pub fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Every node's client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Client options: the defaults, with the harness's TLS settings when TLS is on.
    pub fn client_options(&self) -> Result<trireme_client::ClientOptions> {
        Ok(trireme_client::ClientOptions {
            tls: self.tls.as_ref().map(TlsFiles::client_tls).transpose()?,
            ..trireme_client::ClientOptions::default()
        })
    }

    /// A client that talks to node `id` first (and fails over to the others).
    pub fn client(&self, id: u64) -> Result<Client> {
        let options = trireme_client::ClientOptions {
            start_index: (id - 1) as usize,
            ..self.client_options()?
        };
        Ok(Client::with_options(self.endpoints(), options)?)
    }

    /// A client that talks to node `id` only.
    pub fn client_only(&self, id: u64) -> Result<Client> {
        Ok(Client::with_options(
            vec![self.nodes[(id - 1) as usize].addr.clone()],
            self.client_options()?,
        )?)
    }

    /// Kills node `id` with SIGKILL.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.node(id).kill()
    }

    /// Restarts node `id` with its original command line and data directory.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let node = self.node(id);
        node.kill()?;
        node.spawn()
    }

    /// The status of node `id`.
    pub async fn status(&self, id: u64) -> Result<NodeStatus> {
        Ok(self.client_only(id)?.status().await?)
    }

    /// Waits until every running node among `ids` agrees on one leader, which is among `ids`
    /// ([`Harness::wait_leader`]).
    ///
    /// On timeout the error carries the tail of every node's log (a node
    /// that could not start says why there).
    pub async fn wait_leader(&self, ids: &[u64], deadline: Duration) -> Result<u64> {
        Harness::wait_leader(self, ids, deadline)
            .await
            .with_context(|| format!("the nodes' logs:\n{}", self.logs()))
    }

    /// Waits until nodes `ids` have the same applied seqno, checksum and
    /// verdict chain; returns the checksum ([`Harness::wait_converged`]).
    pub async fn wait_converged(&self, ids: &[u64], deadline: Duration) -> Result<u64> {
        Ok(Harness::wait_converged(self, ids, deadline).await?.checksum)
    }

    /// Runs the `trireme` CLI against every endpoint (node `first` first).
    pub fn cli(&self, first: u64, args: &[&str]) -> Result<Output> {
        let mut eps = self.endpoints();
        eps.rotate_left((first - 1) as usize);
        let tls_flags = self
            .tls
            .as_ref()
            .map(TlsFiles::cli_flags)
            .unwrap_or_default();
        let out = Command::new(bin("trireme"))
            .arg("--endpoints")
            .arg(eps.join(","))
            .args(tls_flags)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run trireme CLI")?;
        Ok(out)
    }

    /// [`Cluster::cli`] with extra environment variables (e.g. `TRIREME_USER`).
    pub fn cli_env(&self, first: u64, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let mut eps = self.endpoints();
        eps.rotate_left((first - 1) as usize);
        let out = Command::new(bin("trireme"))
            .arg("--endpoints")
            .arg(eps.join(","))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .context("run trireme CLI")?;
        Ok(out)
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- node {} ({}) ---\n{}\n",
                n.id,
                n.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

/// SIGTERM and SIGKILL by pid, SIGSTOP/SIGCONT; no link cuts on plain loopback.
impl Harness for Cluster {
    fn kind(&self) -> &'static str {
        "loopback"
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    async fn leader_seen_by(&self, id: u64) -> Result<Option<u64>> {
        let s = self.status(id).await?;
        Ok((s.leader_id != 0).then_some(s.leader_id))
    }

    async fn checksum_of(&self, id: u64) -> Result<Checksum> {
        Ok(self.client_only(id)?.checksum().await?)
    }

    async fn start(&mut self, id: u64) -> Result<()> {
        let node = self.node(id);
        if node.is_running() {
            return Ok(());
        }
        node.spawn()
    }

    async fn stop(&mut self, id: u64) -> Result<()> {
        let node = self.node(id);
        if node.is_running() {
            node.terminate(Duration::from_secs(20))?;
        }
        Ok(())
    }

    async fn kill(&mut self, id: u64) -> Result<()> {
        self.node(id).kill()
    }

    fn pause(&mut self, id: u64) -> Result<()> {
        self.node(id).signal(19)
    }

    fn resume(&mut self, id: u64) -> Result<()> {
        self.node(id).signal(18)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
        }
        if std::thread::panicking() || std::env::var_os("TRIREME_TEST_KEEP").is_some() {
            eprintln!("{}", self.logs());
        }
    }
}
