//! The `Backup` service: a consistent snapshot of the whole store, streamed.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use trireme_proto::v1 as pb;
use trireme_proto::v1::backup_server::Backup;

use super::status::to_status;
use crate::node::Node;

/// The largest chunk a client may ask for.
const MAX_CHUNK_BYTES: u64 = 16 << 20;

/// The `Backup` gRPC service over a [`Node`].
pub struct BackupService {
    node: Arc<Node>,
}

impl BackupService {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        BackupService { node }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Backup for BackupService {
    type SaveStream = ChunkStream;

    async fn save(
        &self,
        req: Request<pb::SaveBackupRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let asked = req.into_inner().chunk_bytes;
        if asked > MAX_CHUNK_BYTES {
            return Err(Status::invalid_argument(format!(
                "chunk_bytes {asked} is over the limit of {MAX_CHUNK_BYTES}"
            )));
        }
        let chunk_bytes = if asked == 0 { 1 << 20 } else { asked as usize };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<pb::BackupChunk, Status>>(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            let forward = {
                let out_tx = out_tx.clone();
                async move {
                    while let Some(data) = rx.recv().await {
                        if out_tx.send(Ok(pb::BackupChunk { data })).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let (res, ()) = tokio::join!(node.backup(chunk_bytes, tx), forward);
            if let Err(e) = res {
                tracing::warn!(error = %e, "backup failed");
                let _ = out_tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}
