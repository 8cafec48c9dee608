//! The server library's one error type. Variants say what the caller should do;
//! `api` maps them to gRPC statuses in exactly one place.

/// A failed operation. Certification outcomes are not errors (see
/// [`crate::certify::Verdict`]); an aborted commit becomes [`Error::Aborted`]
/// only at the edge, where the client must be told.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or over a limit; retrying it unchanged will fail again.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Certification aborted the transaction (a conflict or a failed
    /// compare); retry a conflict from a new snapshot.
    #[error("aborted: {0}")]
    Aborted(crate::certify::Abort),
    /// What the request names does not exist (e.g. a lease).
    #[error("not found: {0}")]
    NotFound(String),
    /// The node cannot serve this now (no quorum, no leader, shutting down); try
    /// again or another node.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node is at one of its admission bounds and refused the request
    /// before doing anything: retry after a backoff, or on another node.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request may or may not have taken effect (for example the leader
    /// changed after it was sent); read before retrying a non-idempotent write.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// A read asked for history that is no longer kept.
    #[error("snapshot too old: {0}")]
    SnapshotTooOld(String),
    /// The request has no credentials, or bad or expired ones (auth is on).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The authenticated user lacks a permission the request needs; the
    /// message names the key or method and the permission.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Stored data failed to decode or a checksum failed: the node must not serve it.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The storage engine failed (I/O).
    #[error("storage: {0}")]
    Storage(String),
    /// Something that should be impossible happened inside the node.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<bincode::Error> for Error {
    fn from(e: bincode::Error) -> Self {
        Error::InvalidData(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
