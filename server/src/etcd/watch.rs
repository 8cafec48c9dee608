//! `etcdserverpb.Watch`: one bidirectional stream carries many watches,
//! each a [`Node::watch`] of its own, told apart by watch id.
//!
//! A create answers `created` with the revision `R` the watch starts after
//! (from now: the applied seqno; with `start_revision`: that minus one),
//! then events in revision order, a revision's events in one response.
//! Filters (NOPUT, NODELETE) drop events here; a response left empty is not
//! sent. `progress_notify` forwards the node watch's idle progress marks; a
//! progress request answers with watch id -1 and a revision every watch of
//! the stream has delivered through, as etcd does. A start below the node's
//! history horizon cancels the watch with etcd's `compact_revision` set to
//! the first revision it could start from. Responses are never fragmented.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use trireme_proto::etcd::etcdserverpb as epb;
use trireme_proto::etcd::mvccpb;

use super::convert::{self, Keys};
use super::header;
use crate::node::Node;
use crate::txn::prefix_end;
use crate::watch::{Change, Selector, WatchError, WatchSpec};

/// How often an idle watch learns how far it has got (forwarded to clients
/// that asked for `progress_notify`).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The etcd Watch service.
pub struct WatchService {
    node: Arc<Node>,
}

impl WatchService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        WatchService { node }
    }
}

type Out = mpsc::Sender<Result<epb::WatchResponse, Status>>;

/// The stream of a `Watch` call.
pub type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<epb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl epb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<epb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(session(self.node.clone(), inbound, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// One running watch of a stream.
struct Watcher {
    task: tokio::task::JoinHandle<()>,
    /// Every change at or below this revision has been sent.
    cursor: Arc<AtomicU64>,
}

/// Serves one Watch stream until the client closes it or goes away (or the
/// node drains: then UNAVAILABLE, and the client resumes elsewhere).
async fn session(node: Arc<Node>, mut inbound: Streaming<epb::WatchRequest>, tx: Out) {
    let mut watchers: HashMap<i64, Watcher> = HashMap::new();
    let mut next_id: i64 = 0;
    let draining = drained(node.drain_state().subscribe());
    tokio::pin!(draining);
    loop {
        let req = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => req,
                Ok(None) | Err(_) => break,
            },
            _ = tx.closed() => break,
            drained = &mut draining => {
                if drained {
                    let _ = tx
                        .send(Err(Status::unavailable(crate::node::drain::SHUTTING_DOWN)))
                        .await;
                }
                break;
            }
        };
        watchers.retain(|_, w| !w.task.is_finished());
        use epb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(create)) => {
                let id = if create.watch_id != 0 {
                    create.watch_id
                } else {
                    while watchers.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                if id == next_id {
                    next_id += 1;
                }
                if watchers.contains_key(&id) {
                    let _ = tx
                        .send(Ok(refused(&node, id, "etcdserver: duplicate watch ID")))
                        .await;
                    continue;
                }
                match start(&node, id, create, tx.clone()).await {
                    Ok(w) => {
                        watchers.insert(id, w);
                    }
                    Err(reason) => {
                        if tx.send(Ok(refused(&node, id, &reason))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Some(U::CancelRequest(cancel)) => {
                if let Some(w) = watchers.remove(&cancel.watch_id) {
                    w.task.abort();
                    let resp = epb::WatchResponse {
                        header: Some(header(&node, w.cursor.load(Ordering::Acquire))),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            }
            Some(U::ProgressRequest(_)) => {
                let rev = watchers
                    .values()
                    .map(|w| w.cursor.load(Ordering::Acquire))
                    .min()
                    .unwrap_or_else(|| node.applied().seqno());
                let resp = epb::WatchResponse {
                    header: Some(header(&node, rev)),
                    watch_id: -1,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            None => {}
        }
    }
    for w in watchers.into_values() {
        w.task.abort();
    }
}

/// Resolves once the node drains (true), or once it is dropped (false).
async fn drained(mut draining: tokio::sync::watch::Receiver<bool>) -> bool {
    draining.wait_for(|d| *d).await.is_ok()
}

/// A create that was refused: created and canceled at once, with the reason.
fn refused(node: &Node, id: i64, reason: &str) -> epb::WatchResponse {
    epb::WatchResponse {
        header: Some(header(node, node.applied().seqno())),
        watch_id: id,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

/// Starts watch `id`: answers `created`, then forwards its events.
async fn start(
    node: &Arc<Node>,
    id: i64,
    create: epb::WatchCreateRequest,
    tx: Out,
) -> Result<Watcher, String> {
    let keys = Keys::from(&create.key, &create.range_end).map_err(|e| match e {
        crate::Error::InvalidInput(m) => m,
        other => other.to_string(),
    })?;
    let selector = match keys {
        Keys::One(k) => Selector::Key(k),
        Keys::Range(r) if r.end.is_some() && r.end == prefix_end(&r.start) => {
            Selector::Prefix(r.start)
        }
        Keys::Range(r) => Selector::Range(r),
    };
    let start_rev =
        convert::revision(create.start_revision, "start_revision").map_err(|e| e.to_string())?;
    // From now: right after the applied seqno, so that nothing between the
    // created answer and the watch's registration is missed.
    let after = match start_rev {
        0 => node.applied().seqno(),
        rev => rev - 1,
    };
    let spec = WatchSpec {
        selector,
        start: Some(after + 1),
        prev: create.prev_kv,
        progress: PROGRESS_EVERY,
    };
    use epb::watch_create_request::FilterType;
    let no_put = create.filters.contains(&(FilterType::Noput as i32));
    let no_delete = create.filters.contains(&(FilterType::Nodelete as i32));
    let progress = create.progress_notify;
    let created = epb::WatchResponse {
        header: Some(header(node, after)),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    tx.send(Ok(created))
        .await
        .map_err(|_| "the client went away".to_string())?;
    let cursor = Arc::new(AtomicU64::new(after));
    let mut rx = node.watch(spec);
    let node = node.clone();
    let mark = cursor.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let resp = match item {
                Ok(msg) => {
                    let idle = msg.changes.is_empty();
                    let events: Vec<mvccpb::Event> = msg
                        .changes
                        .iter()
                        .filter(|c| {
                            !(c.value.is_some() && no_put || c.value.is_none() && no_delete)
                        })
                        .map(event)
                        .collect();
                    mark.store(msg.seqno, Ordering::Release);
                    if events.is_empty() && !(idle && progress) {
                        continue;
                    }
                    epb::WatchResponse {
                        header: Some(header(&node, msg.seqno)),
                        watch_id: id,
                        events,
                        ..Default::default()
                    }
                }
                Err(WatchError::Compacted { horizon }) => epb::WatchResponse {
                    header: Some(header(&node, node.applied().seqno())),
                    watch_id: id,
                    canceled: true,
                    compact_revision: (horizon + 1) as i64,
                    cancel_reason: convert::COMPACTED.into(),
                    ..Default::default()
                },
                Err(WatchError::Other(e)) => epb::WatchResponse {
                    header: Some(header(&node, node.applied().seqno())),
                    watch_id: id,
                    canceled: true,
                    cancel_reason: e.to_string(),
                    ..Default::default()
                },
            };
            let last = resp.canceled;
            if tx.send(Ok(resp)).await.is_err() || last {
                return;
            }
        }
    });
    Ok(Watcher { task, cursor })
}

/// One change as an etcd event (a delete carries the key and its revision).
fn event(c: &Change) -> mvccpb::Event {
    use mvccpb::event::EventType;
    let prev_kv = c.prev.as_ref().map(|(seqno, value)| {
        convert::kv(
            // The previous version's own metadata is not in the change:
            // its create revision, version and lease read as 0.
            &crate::storage::Versioned {
                key: c.key.clone(),
                version: *seqno,
                value: value.clone(),
                create_seqno: 0,
                modifications: 0,
                lease: 0,
            },
            false,
        )
    });
    match &c.value {
        Some(value) => mvccpb::Event {
            r#type: EventType::Put as i32,
            kv: Some(convert::kv(
                &crate::storage::Versioned {
                    key: c.key.clone(),
                    version: c.seqno,
                    value: value.clone(),
                    create_seqno: c.create_seqno,
                    modifications: c.modifications,
                    lease: c.lease,
                },
                false,
            )),
            prev_kv,
        },
        None => mvccpb::Event {
            r#type: EventType::Delete as i32,
            kv: Some(mvccpb::KeyValue {
                key: c.key.clone(),
                mod_revision: c.seqno as i64,
                ..Default::default()
            }),
            prev_kv,
        },
    }
}
