//! [`Client::watch`]: a stream of changes that survives the loss of a node.
//!
//! Every message the server sends carries a seqno up to which every change
//! of the watched keys has been delivered (each seqno's changes arrive in one
//! message). The client remembers it; when the stream breaks (the node died,
//! the connection dropped, the node is shutting down) it opens the watch on
//! the next endpoint from that seqno + 1, so no change is lost or repeated.
//! A watch gives up when no endpoint takes it for the request timeout, and
//! on errors no other node would answer differently (bad input, or
//! [`Error::Compacted`]: the changes asked for are gone).

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::{kv, Client};
use crate::error::{classify, OpKind};
use crate::{proto, Error, Result};

/// The delay between attempts when no endpoint takes a watch.
const RESUME_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(50),
    cap: Duration::from_millis(1000),
};

/// What a watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// Exactly this key.
    Key(Vec<u8>),
    /// Every key starting with this (empty: every key).
    Prefix(Vec<u8>),
    /// Keys in `[start, end)`; `None`: unbounded.
    Range(Vec<u8>, Option<Vec<u8>>),
}

/// How a watch starts and what it sends.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Deliver changes with seqno >= this; `None`: from now.
    pub start_seqno: Option<u64>,
    /// Send each key's previous value with its change.
    pub prev_value: bool,
    /// Progress notification after this long without changes (`None`: the
    /// server's default, 5 s).
    pub progress_interval: Option<Duration>,
}

/// One change of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None`: deleted.
    pub value: Option<Vec<u8>>,
    /// The seqno that wrote it (the key's new version).
    pub version: u64,
    /// With [`WatchOptions::prev_value`]: the previous version and value,
    /// `None` if the key did not exist.
    pub prev: Option<(u64, Vec<u8>)>,
}

/// One message of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes in seqno order (then key order); every change up to `seqno`
    /// has now been delivered.
    Events {
        /// The changes.
        events: Vec<WatchEvent>,
        /// Delivered up to here.
        seqno: u64,
    },
    /// Nothing changed: every change up to `seqno` has been delivered. The
    /// first message of a watch is one, saying where it starts.
    Progress {
        /// Delivered up to here.
        seqno: u64,
    },
}

impl WatchMessage {
    /// Every change at or below this seqno has been delivered.
    pub fn seqno(&self) -> u64 {
        match self {
            WatchMessage::Events { seqno, .. } | WatchMessage::Progress { seqno } => *seqno,
        }
    }
}

impl Client {
    /// Watches `target`: a stream of its changes in seqno order, resumed on
    /// another endpoint when one fails (see the module docs). It ends after
    /// an error item, or never (drop it to stop).
    pub fn watch(
        &self,
        target: WatchTarget,
        options: WatchOptions,
    ) -> impl Stream<Item = Result<WatchMessage>> + Send + 'static {
        let (tx, rx) = mpsc::channel(16);
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(e) = follow(&client, &target, &options, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
    }
}

/// Sending failed: the caller dropped the stream.
struct Dropped;

async fn follow(
    client: &Client,
    target: &WatchTarget,
    options: &WatchOptions,
    tx: &mpsc::Sender<Result<WatchMessage>>,
) -> Result<()> {
    let (kind, key, end) = match target.clone() {
        WatchTarget::Key(k) => (proto::WatchKind::WatchKey, k, Vec::new()),
        WatchTarget::Prefix(p) => (proto::WatchKind::WatchPrefix, p, Vec::new()),
        WatchTarget::Range(s, e) => (proto::WatchKind::WatchRange, s, e.unwrap_or_default()),
    };
    // The next seqno to deliver (None: from now, until the first message).
    let mut next: Option<u64> = options.start_seqno.map(|s| s.max(1));
    let mut index = client.current_index();
    let mut failures = 0u32;
    let timeout = client.options().timeout;
    let mut failing_since: Option<Instant> = None;
    loop {
        let (endpoint, channel) = client.endpoint_at(index);
        let request = proto::WatchRequest {
            kind: kind as i32,
            key: key.clone(),
            end: end.clone(),
            start_seqno: next.unwrap_or(0),
            prev_value: options.prev_value,
            progress_interval_ms: options
                .progress_interval
                .map_or(0, |d| d.as_millis().clamp(100, u32::MAX as u128) as u32),
        };
        client.ensure_token().await?;
        let mut request = tonic::Request::new(request);
        client.authorize(&mut request);
        let opened = tokio::time::timeout(timeout, kv(channel).watch(request)).await;
        let status = match opened {
            Err(_) => tonic::Status::unavailable(format!("no answer within {timeout:?}")),
            Ok(Err(status)) => status,
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.next().await {
                        None => break tonic::Status::unavailable("the watch stream ended"),
                        Some(Err(status)) => break status,
                        Some(Ok(msg)) => {
                            failing_since = None;
                            failures = 0;
                            let resume_from = next.unwrap_or(0);
                            if deliver(msg, resume_from, &mut next, tx).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        };
        let failure = classify(&status, OpKind::Read, &endpoint);
        if !failure.retryable {
            return Err(failure.error);
        }
        let last_error = match failure.error {
            Error::Unavailable(m) => m,
            other => other.to_string(),
        };
        tracing::debug!(%endpoint, error = %last_error, "watch moving to the next endpoint");
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= timeout {
            return Err(Error::Unavailable(format!(
                "no endpoint took the watch within {timeout:?} (last: {last_error})"
            )));
        }
        index = (index + 1) % client.endpoint_count();
        if failures as usize >= client.endpoint_count() {
            tokio::time::sleep(client.backoff_delay(&RESUME_BACKOFF, failures)).await;
        }
        failures += 1;
        if tx.is_closed() {
            return Ok(());
        }
    }
}

/// Converts and forwards one message; changes already delivered (below
/// `resume_from`) are dropped, should a server resend them.
async fn deliver(
    msg: proto::WatchResponse,
    resume_from: u64,
    next: &mut Option<u64>,
    tx: &mpsc::Sender<Result<WatchMessage>>,
) -> Result<(), Dropped> {
    let events: Vec<WatchEvent> = msg
        .events
        .into_iter()
        .filter(|e| e.version >= resume_from)
        .map(|e| WatchEvent {
            key: e.key,
            value: e.put.then_some(e.value),
            version: e.version,
            prev: e.has_prev.then_some((e.prev_version, e.prev_value)),
        })
        .collect();
    if next.is_some_and(|n| msg.seqno + 1 < n) && events.is_empty() {
        // A node behind the one before: nothing new yet.
        return Ok(());
    }
    *next = Some(next.map_or(msg.seqno + 1, |n| n.max(msg.seqno + 1)));
    let out = if events.is_empty() {
        WatchMessage::Progress { seqno: msg.seqno }
    } else {
        WatchMessage::Events {
            events,
            seqno: msg.seqno,
        }
    };
    tx.send(Ok(out)).await.map_err(|_| Dropped)
}
