//! Error -> gRPC status, in one place. The client library relies on this
//! contract (see README "Errors").

use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::{Code, Status};

use crate::error::Error;

/// Maps a node error to the status the client sees.
pub fn to_status(err: Error) -> Status {
    match err {
        Error::InvalidInput(m) => Status::invalid_argument(m),
        Error::Aborted(abort) => {
            let mut status = Status::aborted(format!("aborted: {abort}"));
            let md = status.metadata_mut();
            md.insert("trireme-abort", MetadataValue::from_static(abort.kind()));
            if let Some(key) = abort.key() {
                md.insert_bin(
                    "trireme-conflict-key-bin",
                    BinaryMetadataValue::from_bytes(key),
                );
            }
            if let Some(seqno) = abort.seqno() {
                md.insert("trireme-conflict-seqno", MetadataValue::from(seqno));
            }
            status
        }
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Overloaded(m) => Status::resource_exhausted(format!("overloaded: {m}")),
        Error::Indeterminate(m) => {
            Status::new(Code::DeadlineExceeded, format!("outcome unknown: {m}"))
        }
        Error::SnapshotTooOld(m) => Status::failed_precondition(format!("snapshot too old: {m}")),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::InvalidData(m) => Status::data_loss(m),
        Error::Storage(m) => Status::internal(format!("storage: {m}")),
        Error::Internal(m) => Status::internal(m),
        Error::NotFound(m) => Status::not_found(m),
    }
}
