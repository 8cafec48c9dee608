//! The fallback network for fault injection when network namespaces cannot be
//! made (not root, no `ip`), and the only way to add latency on these machines
//! (kernel `tc netem` is not available): one TCP proxy per node on 127.0.0.1.
//!
//! Every node advertises its proxy's address to its peers, so all peer traffic
//! to node `j` goes through proxy `j`. The membership gives each node a single
//! address, so a proxy cannot tell its callers apart by the port they dial;
//! instead it asks the kernel who the caller is: the accepted connection's
//! source port is looked up in `/proc/net/tcp` to find the socket's inode, and
//! that inode among the file descriptors of the node processes. That makes
//! every connection belong to one directed link `from -> to`, so partitions
//! (including one-way ones) and latency are set per directed link, as with
//! iptables rules inside namespaces.
//!
//! A blocked link does not drop bytes (a TCP byte stream cannot lose some in
//! the middle): it stalls them, as a real partition stalls a TCP connection
//! whose packets are dropped; new connections over a blocked link are accepted
//! but not forwarded. On heal, stalled streams resume (or are found dead by
//! the peers' keepalives and reconnected). Bytes flowing `a -> b` on any
//! connection between `a` and `b` are governed by the rule of link `a -> b`.
//!
//! Connections from processes that are not nodes (the test's clients) are
//! never blocked or delayed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Node id used for callers that are not node processes (test clients).
pub const EXTERNAL: u64 = 0;

/// What happens to bytes on one directed link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkRule {
    /// Bytes are held until the link is unblocked.
    pub blocked: bool,
    /// Every chunk is delivered this long after it was read.
    pub delay: Duration,
}

/// Counters of one proxy network.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections whose caller was identified as a node.
    pub identified: AtomicU64,
    /// Bytes forwarded.
    pub bytes: AtomicU64,
    /// Chunks that waited on a blocked link.
    pub stalled_chunks: AtomicU64,
    /// Chunks delivered with a delay.
    pub delayed_chunks: AtomicU64,
}

struct Inner {
    rules: Mutex<HashMap<(u64, u64), LinkRule>>,
    /// Bumped on every rule change, so stalled pumps re-check.
    changed: watch::Sender<u64>,
    /// Node id -> pid of its current process.
    pids: Mutex<HashMap<u64, u32>>,
    stats: ProxyStats,
}

impl Inner {
    fn rule(&self, from: u64, to: u64) -> LinkRule {
        if from == EXTERNAL || to == EXTERNAL {
            return LinkRule::default();
        }
        self.rules
            .lock()
            .unwrap()
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    async fn wait_unblocked(&self, from: u64, to: u64) -> bool {
        let mut rx = self.changed.subscribe();
        let mut stalled = false;
        while self.rule(from, to).blocked {
            stalled = true;
            if rx.changed().await.is_err() {
                break;
            }
        }
        stalled
    }
}

/// One proxy per node; see the module documentation.
pub struct ProxyNet {
    inner: Arc<Inner>,
    /// Node id -> (proxy address, upstream address).
    routes: HashMap<u64, (SocketAddr, SocketAddr)>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ProxyNet {
    /// Starts a proxy for every `(node id, upstream address)`, each on a free
    /// 127.0.0.1 port; [`ProxyNet::proxy_addr`] tells which.
    pub async fn start(upstreams: &[(u64, SocketAddr)]) -> Result<ProxyNet> {
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            rules: Mutex::new(HashMap::new()),
            changed,
            pids: Mutex::new(HashMap::new()),
            stats: ProxyStats::default(),
        });
        let mut routes = HashMap::new();
        let mut tasks = Vec::new();
        for (id, upstream) in upstreams {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("bind a proxy port")?;
            let addr = listener.local_addr()?;
            routes.insert(*id, (addr, *upstream));
            tasks.push(tokio::spawn(accept_loop(
                listener,
                *id,
                *upstream,
                inner.clone(),
            )));
        }
        Ok(ProxyNet {
            inner,
            routes,
            tasks: Mutex::new(tasks),
        })
    }

    /// The address peers use to reach node `id` (its proxy).
    pub fn proxy_addr(&self, id: u64) -> SocketAddr {
        self.routes[&id].0
    }

    /// Tells the proxies which pid node `id` runs as (`None`: not running).
    pub fn set_pid(&self, id: u64, pid: Option<u32>) {
        let mut pids = self.inner.pids.lock().unwrap();
        match pid {
            Some(p) => pids.insert(id, p),
            None => pids.remove(&id),
        };
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<(u64, u64), LinkRule>)) {
        f(&mut self.inner.rules.lock().unwrap());
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Holds every byte sent from `from` to `to` until healed.
    pub fn block(&self, links: &[(u64, u64)]) {
        self.update(|rules| {
            for l in links {
                rules.entry(*l).or_default().blocked = true;
            }
        });
    }

    /// Unblocks every link (delays stay).
    pub fn heal(&self) {
        self.update(|rules| {
            for r in rules.values_mut() {
                r.blocked = false;
            }
        });
    }

    /// Delays bytes on these links by `delay` (zero removes the delay).
    pub fn set_delay(&self, links: &[(u64, u64)], delay: Duration) {
        self.update(|rules| {
            for l in links {
                rules.entry(*l).or_default().delay = delay;
            }
        });
    }

    /// Removes every delay.
    pub fn clear_delays(&self) {
        self.update(|rules| {
            for r in rules.values_mut() {
                r.delay = Duration::ZERO;
            }
        });
    }

    /// The rule of one directed link.
    pub fn rule(&self, from: u64, to: u64) -> LinkRule {
        self.inner.rule(from, to)
    }

    /// The proxies' counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.inner.stats
    }

    /// Stops every proxy task (open connections are dropped).
    pub fn shutdown(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, to: u64, upstream: SocketAddr, inner: Arc<Inner>) {
    let proxy_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Connection tasks are detached: they end when either side closes, and
    // their sockets are closed when the runtime shuts down.
    while let Ok((inbound, peer)) = listener.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            inner.stats.connections.fetch_add(1, Ordering::Relaxed);
            let from = identify(peer, proxy_port, &inner);
            if from != EXTERNAL {
                inner.stats.identified.fetch_add(1, Ordering::Relaxed);
            }
            // A connection over a blocked link is not forwarded until healed
            // (as if its SYN were dropped).
            inner.wait_unblocked(from, to).await;
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            let a = tokio::spawn(pump(ir, ow, from, to, inner.clone()));
            let b = tokio::spawn(pump(or, iw, to, from, inner));
            let _ = a.await;
            let _ = b.await;
        });
    }
}

/// Copies bytes `from -> to`, honouring the link's rule for every chunk.
async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    from: u64,
    to: u64,
    inner: Arc<Inner>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader_inner = inner.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if reader_inner.wait_unblocked(from, to).await {
                reader_inner
                    .stats
                    .stalled_chunks
                    .fetch_add(1, Ordering::Relaxed);
            }
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((read_at, chunk)) = rx.recv().await {
        let delay = inner.rule(from, to).delay;
        if !delay.is_zero() {
            inner.stats.delayed_chunks.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(read_at + delay).await;
        }
        if inner.wait_unblocked(from, to).await {
            inner.stats.stalled_chunks.fetch_add(1, Ordering::Relaxed);
        }
        if wr.write_all(&chunk).await.is_err() {
            break;
        }
        inner
            .stats
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    let _ = wr.shutdown().await;
    reader.abort();
}

/// Which node process owns the other end of a connection from `peer` to the
/// proxy port: the caller's socket inode from `/proc/net/tcp`, found among
/// the node processes' file descriptors. [`EXTERNAL`] when it is none of them.
fn identify(peer: SocketAddr, proxy_port: u16, inner: &Inner) -> u64 {
    let Some(inode) = socket_inode(peer, proxy_port) else {
        return EXTERNAL;
    };
    let want = format!("socket:[{inode}]");
    let pids: Vec<(u64, u32)> = inner
        .pids
        .lock()
        .unwrap()
        .iter()
        .map(|(id, pid)| (*id, *pid))
        .collect();
    for (id, pid) in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return id;
            }
        }
    }
    EXTERNAL
}

/// The inode of the socket whose local port is `peer`'s and whose remote
/// port is `proxy_port`, from `/proc/net/tcp` (IPv4 loopback only).
fn socket_inode(peer: SocketAddr, proxy_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    parse_socket_inode(&table, peer.port(), proxy_port)
}

fn parse_socket_inode(table: &str, local_port: u16, remote_port: u16) -> Option<u64> {
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 {
            continue;
        }
        if port_of(cols[1]) == Some(local_port) && port_of(cols[2]) == Some(remote_port) {
            let inode: u64 = cols[9].parse().ok()?;
            if inode != 0 {
                return Some(inode);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_inode_of_the_calling_socket() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 20 4 30 10 -1\n\
           1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(parse_socket_inode(table, 0xC350, 0x1F90), Some(222));
        assert_eq!(parse_socket_inode(table, 0x1F90, 0xC350), Some(111));
        assert_eq!(parse_socket_inode(table, 1, 2), None);
    }
}
