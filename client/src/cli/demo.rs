//! `demo`: a local 3-node cluster in a temporary directory and the shell
//! against it; on exit (or Ctrl-C) every node is stopped by its pid and the
//! directory removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use trireme_client::{Client, ClientOptions, Error, Result};

use super::{shell, EXIT_OTHER};

/// Nodes in the demo cluster.
const NODES: u64 = 3;
/// How long the cluster may take to elect a leader and sync every node.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

/// The running cluster: its processes and the directory holding their data
/// and logs. Stopping it (explicitly or on drop) stops every process and
/// removes the directory.
#[derive(Debug)]
struct DemoCluster {
    children: Vec<Child>,
    dir: Option<tempfile::TempDir>,
}

impl DemoCluster {
    /// Stops every node (SIGTERM, then SIGKILL after [`STOP_WITHIN`]) and
    /// removes the directory; safe to call twice.
    fn stop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on the pid of a child this process
                    // spawned and has not reaped (try_wait saw it running).
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        let deadline = Instant::now() + STOP_WITHIN;
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.children.clear();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            if let Err(e) = dir.close() {
                eprintln!("warning: cannot remove {path}: {e}");
            }
        }
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `trireme-server` next to this executable, else the first on `PATH`.
fn server_binary() -> Result<PathBuf> {
    let name = "trireme-server";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "cannot find {name}: it is neither next to this trireme binary nor on PATH"
            ))
        })
}

/// A free port on 127.0.0.1 (bound and released; another process could take
/// it in between, which the readiness wait would then report).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Other(format!("cannot find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Other(format!("cannot find a free port: {e}")))
}

/// Starts the nodes into `cluster`; returns their client addresses.
fn spawn_nodes(server: &Path, cluster: &mut DemoCluster) -> Result<Vec<String>> {
    let dir = cluster
        .dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .ok_or_else(|| Error::Other("the demo directory is gone".into()))?;
    let addrs = (0..NODES)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<Vec<_>>>()?;
    let peer_addrs = (0..NODES)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<Vec<_>>>()?;
    // The members are named by their peer addresses.
    let spec = peer_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    for (i, (addr, peer_addr)) in addrs.iter().zip(&peer_addrs).enumerate() {
        let id = i + 1;
        let log_path = dir.join(format!("node{id}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::Other(format!("cannot create {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::Other(format!("cannot open {}: {e}", log_path.display())))?;
        let mut command = Command::new(server);
        command
            .args(["--node-id", &id.to_string(), "--listen", addr])
            .args(["--peer-listen", peer_addr])
            .arg("--data-dir")
            .arg(dir.join(format!("node{id}")))
            .args(["--initial-cluster", &spec])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Own process group: a terminal's Ctrl-C reaches the demo, which
        // stops the nodes itself and then removes their directory.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .map_err(|e| Error::Other(format!("cannot start {}: {e}", server.display())))?;
        eprintln!(
            "node {id}: pid {} at {addr} (peers: {peer_addr}), log {}",
            child.id(),
            log_path.display()
        );
        cluster.children.push(child);
    }
    Ok(addrs)
}

/// Waits until every node is SYNCED with a leader, or a node exits, or
/// [`READY_WITHIN`] passes.
async fn wait_ready(cluster: &Mutex<DemoCluster>, addrs: &[String]) -> Result<()> {
    let options = ClientOptions {
        timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let clients = addrs
        .iter()
        .map(|a| Client::with_options(vec![a.clone()], options.clone()))
        .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let mut ready = true;
        for client in &clients {
            match client.status().await {
                Ok(s) if s.state == "SYNCED" && s.leader_id != 0 => {}
                _ => ready = false,
            }
        }
        if ready {
            return Ok(());
        }
        {
            let mut cluster = cluster
                .lock()
                .map_err(|_| Error::Other("demo lock".into()))?;
            for (i, child) in cluster.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Unavailable(format!(
                        "node {} exited ({status}) before the cluster was ready",
                        i + 1
                    )));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(format!(
                "the demo cluster was not ready within {}s",
                READY_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the demo: cluster up, shell, cluster down; returns the exit code.
pub fn run(runtime: &Runtime, json: bool) -> u8 {
    let cluster = Arc::new(Mutex::new(DemoCluster {
        children: Vec::new(),
        dir: None,
    }));
    // Ctrl-C outside the line editor (which takes it as "abandon the
    // line"): stop everything, then exit like an interrupted program.
    let on_interrupt = cluster.clone();
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the demo cluster");
            if let Ok(mut c) = on_interrupt.lock() {
                c.stop();
            }
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
    let code = match start(runtime, &cluster) {
        Ok(client) => {
            eprintln!("cluster ready; type `help` for commands, `exit` to stop and remove it");
            shell::run(runtime, &client, json)
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Ok(c) = cluster.lock() {
                if let Some(dir) = &c.dir {
                    for id in 1..=NODES {
                        let log = dir.path().join(format!("node{id}.log"));
                        if let Ok(text) = std::fs::read_to_string(&log) {
                            let tail: Vec<&str> = text.lines().rev().take(5).collect();
                            eprintln!("--- node {id} log (last lines) ---");
                            for line in tail.iter().rev() {
                                eprintln!("{line}");
                            }
                        }
                    }
                }
            }
            EXIT_OTHER
        }
    };
    match cluster.lock() {
        Ok(mut c) => c.stop(),
        Err(poisoned) => poisoned.into_inner().stop(),
    }
    eprintln!("demo cluster stopped and removed");
    code
}

/// Creates the directory, starts the nodes, waits until they are ready.
fn start(runtime: &Runtime, cluster: &Arc<Mutex<DemoCluster>>) -> Result<Client> {
    let server = server_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("trireme-demo-")
        .tempdir()
        .map_err(|e| Error::Other(format!("cannot create a temporary directory: {e}")))?;
    eprintln!("demo cluster in {}", dir.path().display());
    let addrs = {
        let mut c = cluster
            .lock()
            .map_err(|_| Error::Other("demo lock".into()))?;
        c.dir = Some(dir);
        spawn_nodes(&server, &mut c)?
    };
    runtime.block_on(wait_ready(cluster, &addrs))?;
    Client::new(addrs)
}
