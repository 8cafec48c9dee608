//! The client's error type, and the one place where a `tonic::Status` becomes
//! an [`Error`] (following the server's error contract).

use std::error::Error as StdError;
use std::time::Duration;

use tonic::{Code, Status};

/// A client result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, named by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request was rejected as malformed or over a limit: fix it, do not retry.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Certification aborted the write: nothing was applied. Conflicts can be
    /// retried as a new transaction; a failed compare is an answer.
    #[error("aborted ({kind}): {message}")]
    Aborted {
        /// `write_conflict`, `read_conflict`, `range_conflict`, `compare_failed`,
        /// `snapshot_too_old`, `invalid_snapshot` or `invalid_write_set`.
        kind: String,
        /// The key of the conflicting write, when there was one.
        key: Option<Vec<u8>>,
        /// The seqno of the conflicting write, when there was one.
        seqno: Option<u64>,
        /// The server's explanation.
        message: String,
    },
    /// No endpoint took the request; nothing was applied. Retry later.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have committed: read to find out.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The snapshot asked for is older than the node keeps: start again.
    #[error("snapshot too old: {0}")]
    SnapshotTooOld(String),
    /// A watch asked for changes the node no longer keeps: changes at or
    /// below `horizon` may be gone. Watch from `horizon + 1` or later.
    #[error("{message}")]
    Compacted {
        /// The node's history horizon.
        horizon: u64,
        /// The server's explanation.
        message: String,
    },
    /// Auth is on and the request had no credentials, or bad or expired
    /// ones (a wrong password, a deleted user): fix the credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The user lacks a permission the request needs (the message names the
    /// key or method and the permission).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Anything else (a server bug, a protocol error, misuse of the API).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether certification aborted the write because another write set
    /// conflicted with it (on a written key, a read key or a scanned range).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Aborted { kind, .. }
            if matches!(kind.as_str(), "write_conflict" | "read_conflict" | "range_conflict"))
    }

    /// Whether certification aborted the write because a compare failed.
    pub fn is_compare_failed(&self) -> bool {
        matches!(self, Error::Aborted { kind, .. } if kind == "compare_failed")
    }

    /// Whether running the whole transaction again, from a new snapshot, may
    /// succeed: any abort but a failed compare or an invalid write set, or a
    /// snapshot too old.
    pub fn is_transaction_retryable(&self) -> bool {
        match self {
            Error::Aborted { kind, .. } => {
                !self.is_compare_failed() && kind.as_str() != "invalid_write_set"
            }
            Error::SnapshotTooOld(_) => true,
            _ => false,
        }
    }

    /// A short stable name for the error's kind, for metrics and JSON output
    /// (`aborted:<kind>` for aborts).
    pub fn kind_name(&self) -> String {
        match self {
            Error::InvalidInput(_) => "invalid_input".into(),
            Error::Aborted { kind, .. } => format!("aborted:{kind}"),
            Error::Unavailable(_) => "unavailable".into(),
            Error::Indeterminate(_) => "indeterminate".into(),
            Error::SnapshotTooOld(_) => "snapshot_too_old".into(),
            Error::Compacted { .. } => "compacted".into(),
            Error::Unauthenticated(_) => "unauthenticated".into(),
            Error::PermissionDenied(_) => "permission_denied".into(),
            Error::Other(_) => "other".into(),
        }
    }
}

/// Whether a failed request may have changed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Reads, `Begin`, `Status`, `Checksum`: safe to send again anywhere.
    Read,
    /// Put, Delete, Commit: only safe to resend if the node did not take it.
    Write,
}

/// A failed attempt: the error, and whether another endpoint may be tried.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The error, phrased for the caller.
    pub error: Error,
    /// Whether the request certainly did not take effect and may go elsewhere.
    pub retryable: bool,
}

/// Maps a status from `endpoint` to an error, following the server contract.
///
/// What moves a write to the next endpoint is proof that this one never
/// ordered it, and the proof is typed, never read from a message's words:
///
/// - a connection that was never made ([`tonic::ConnectError`]: refused,
///   connect timed out): the request never left;
/// - an HTTP/2 stream the server refused unprocessed: a graceful GOAWAY
///   whose last stream id is below ours, or RST_STREAM with REFUSED_STREAM
///   (RFC 9113 §8.7: "not processed");
/// - UNAVAILABLE sent by the server: the contract says nothing was applied
///   (no quorum, "not ordered", "node is shutting down"), and
///   RESOURCE_EXHAUSTED: refused at admission.
///
/// A status that tonic produced locally (it has an error source: the
/// connection failed or broke) is told apart from one the server sent (no
/// source); any other local failure after the request was sent leaves a
/// write's outcome unknown, and so do DEADLINE_EXCEEDED and CANCELLED.
pub(crate) fn classify(status: &Status, op: OpKind, endpoint: &str) -> Failure {
    let local = status.source().is_some();
    let message = describe(status);
    let fail = |error, retryable| Failure { error, retryable };
    if local {
        return if is_connect_failure(status) {
            fail(
                Error::Unavailable(format!(
                    "{endpoint}: cannot connect: {}",
                    root_cause(status)
                )),
                true,
            )
        } else if is_refused_unprocessed(status) {
            fail(
                Error::Unavailable(format!(
                    "{endpoint}: the server refused the request unprocessed (it is going away): {message}"
                )),
                true,
            )
        } else {
            match op {
                OpKind::Read => fail(
                    Error::Unavailable(format!("{endpoint}: connection failed: {message}")),
                    true,
                ),
                OpKind::Write => fail(
                    Error::Indeterminate(format!(
                        "the connection to {endpoint} failed after the write was sent, \
                         so it may or may not have committed: {message}"
                    )),
                    false,
                ),
            }
        };
    }
    match status.code() {
        Code::InvalidArgument => fail(Error::InvalidInput(message), false),
        Code::Unauthenticated => fail(Error::Unauthenticated(message), false),
        Code::PermissionDenied => fail(Error::PermissionDenied(message), false),
        Code::Aborted => fail(aborted(status, message), false),
        Code::Unavailable => fail(Error::Unavailable(format!("{endpoint}: {message}")), true),
        // Refused at admission, before the node did anything: safe to resend anywhere.
        Code::ResourceExhausted => fail(Error::Unavailable(format!("{endpoint}: {message}")), true),
        Code::FailedPrecondition => fail(
            Error::SnapshotTooOld(strip(&message, "snapshot too old: ")),
            false,
        ),
        // A watch from below the node's history horizon.
        Code::OutOfRange => fail(compacted(message), false),
        // The server answers CANCELLED when our grpc-timeout expired on its side.
        Code::DeadlineExceeded | Code::Cancelled => match op {
            // A lagging node may time out where another answers: reads move on.
            OpKind::Read => fail(
                Error::Unavailable(format!("{endpoint}: read timed out: {message}")),
                true,
            ),
            OpKind::Write => fail(
                Error::Indeterminate(format!(
                    "{endpoint}: {}",
                    strip(&message, "outcome unknown: ")
                )),
                false,
            ),
        },
        code => fail(
            Error::Other(format!("{endpoint}: {}: {message}", code.description())),
            false,
        ),
    }
}

/// The error for an attempt that got no answer before the client's deadline.
pub(crate) fn timed_out(op: OpKind, endpoint: &str, timeout: Duration) -> Error {
    match op {
        OpKind::Read => Error::Unavailable(format!(
            "{endpoint}: no answer within {timeout:?} (the request timeout)"
        )),
        OpKind::Write => Error::Indeterminate(format!(
            "{endpoint}: no answer within {timeout:?} (the request timeout); \
             the write may or may not have committed"
        )),
    }
}

/// `OUT_OF_RANGE` "compacted at seqno N: ...": [`Error::Compacted`].
fn compacted(message: String) -> Error {
    let horizon = message
        .strip_prefix("compacted at seqno ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    match horizon {
        Some(horizon) => Error::Compacted { horizon, message },
        None => Error::Other(format!("out of range: {message}")),
    }
}

fn aborted(status: &Status, message: String) -> Error {
    let md = status.metadata();
    let kind = md
        .get("trireme-abort")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let key = md
        .get_bin("trireme-conflict-key-bin")
        .and_then(|v| v.to_bytes().ok())
        .map(|b| b.to_vec());
    let seqno = md
        .get("trireme-conflict-seqno")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok());
    Error::Aborted {
        kind,
        key,
        seqno,
        message: strip(&message, "aborted: "),
    }
}

fn strip(message: &str, prefix: &str) -> String {
    message.strip_prefix(prefix).unwrap_or(message).to_string()
}

/// The status message, followed by any cause in its source chain that the
/// message does not already say ("tcp connect error: Connection refused").
fn describe(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut cause = status.source();
    while let Some(err) = cause {
        let s = err.to_string();
        if !s.is_empty() && !text.contains(&s) {
            if text.is_empty() {
                text = s;
            } else {
                text = format!("{text}: {s}");
            }
        }
        cause = err.source();
    }
    if text.is_empty() {
        text = status.code().description().to_string();
    }
    text
}

/// The innermost error of the status's source chain ("Connection refused").
fn root_cause(status: &Status) -> String {
    let mut last = status.message().to_string();
    let mut cause = status.source();
    while let Some(err) = cause {
        last = err.to_string();
        cause = err.source();
    }
    last
}

/// Whether the server refused the HTTP/2 stream before processing it: a
/// graceful GOAWAY (NO_ERROR) from the server ends only the streams it never
/// took (those above its last stream id, and any opened after it), and
/// REFUSED_STREAM means "not processed" by definition.
fn is_refused_unprocessed(status: &Status) -> bool {
    let mut cause = status.source();
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            let graceful_go_away =
                h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            let refused =
                h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return graceful_go_away || refused;
        }
        cause = err.source();
    }
    false
}

fn is_connect_failure(status: &Status) -> bool {
    let mut cause = status.source();
    while let Some(err) = cause {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{BinaryMetadataValue, MetadataValue};

    fn server_aborted(kind: &'static str, key: Option<&[u8]>, seqno: Option<u64>) -> Status {
        let mut status = Status::aborted("aborted: write conflict on key \"k\"");
        let md = status.metadata_mut();
        md.insert("trireme-abort", MetadataValue::from_static(kind));
        if let Some(key) = key {
            md.insert_bin(
                "trireme-conflict-key-bin",
                BinaryMetadataValue::from_bytes(key),
            );
        }
        if let Some(seqno) = seqno {
            md.insert("trireme-conflict-seqno", MetadataValue::from(seqno));
        }
        status
    }

    #[test]
    fn aborted_carries_kind_key_and_seqno() {
        let f = classify(
            &server_aborted("write_conflict", Some(b"k\x00\xff"), Some(42)),
            OpKind::Write,
            "n1",
        );
        assert!(!f.retryable);
        assert_eq!(
            f.error,
            Error::Aborted {
                kind: "write_conflict".into(),
                key: Some(b"k\x00\xff".to_vec()),
                seqno: Some(42),
                message: "write conflict on key \"k\"".into(),
            }
        );
        assert!(f.error.is_conflict() && f.error.is_transaction_retryable());
        assert!(!f.error.is_compare_failed());
    }

    #[test]
    fn compare_failed_is_not_a_conflict() {
        let f = classify(
            &server_aborted("compare_failed", None, None),
            OpKind::Write,
            "n1",
        );
        assert!(f.error.is_compare_failed());
        assert!(!f.error.is_conflict() && !f.error.is_transaction_retryable());
        assert!(matches!(
            f.error,
            Error::Aborted {
                key: None,
                seqno: None,
                ..
            }
        ));
    }

    #[test]
    fn snapshot_too_old_abort_is_retryable_but_not_a_conflict() {
        let f = classify(
            &server_aborted("snapshot_too_old", None, None),
            OpKind::Write,
            "n1",
        );
        assert!(!f.error.is_conflict());
        assert!(f.error.is_transaction_retryable());
    }

    #[test]
    fn server_codes_map_to_the_contract() {
        let cases = [
            (
                Status::invalid_argument("key is 5000 bytes, over the limit"),
                OpKind::Write,
                false,
                "invalid input: key is 5000 bytes, over the limit",
            ),
            (
                Status::unavailable("not in the primary component"),
                OpKind::Write,
                true,
                "cluster unavailable: n1: not in the primary component",
            ),
            (
                Status::resource_exhausted("overloaded: 1024 client requests in flight"),
                OpKind::Write,
                true,
                "cluster unavailable: n1: overloaded: 1024 client requests in flight",
            ),
            (
                Status::deadline_exceeded("outcome unknown: no verdict"),
                OpKind::Write,
                false,
                "outcome unknown: n1: no verdict",
            ),
            (
                Status::failed_precondition("snapshot too old: snapshot 3 < horizon 9"),
                OpKind::Read,
                false,
                "snapshot too old: snapshot 3 < horizon 9",
            ),
            (
                Status::internal("storage: disk"),
                OpKind::Read,
                false,
                "n1: Internal error: storage: disk",
            ),
        ];
        for (status, op, retryable, text) in cases {
            let f = classify(&status, op, "n1");
            assert_eq!(f.retryable, retryable, "{status:?}");
            assert_eq!(f.error.to_string(), text);
        }
    }

    #[test]
    fn local_transport_failures_depend_on_the_operation() {
        // A status with a source was made by tonic, not sent by the server.
        let broken = || {
            Status::from_error(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            )))
        };
        let read = classify(&broken(), OpKind::Read, "n1");
        assert!(read.retryable);
        assert!(matches!(read.error, Error::Unavailable(_)));
        let write = classify(&broken(), OpKind::Write, "n1");
        assert!(!write.retryable);
        assert!(matches!(write.error, Error::Indeterminate(_)));

        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))));
        let write = classify(&refused, OpKind::Write, "n1");
        assert!(write.retryable, "a failed connect never sent the write");
        assert!(matches!(write.error, Error::Unavailable(ref m) if m.contains("refused")));
    }

    #[test]
    fn kind_names_are_stable() {
        assert_eq!(Error::Unavailable(String::new()).kind_name(), "unavailable");
        let e = classify(
            &server_aborted("range_conflict", None, Some(7)),
            OpKind::Write,
            "n1",
        )
        .error;
        assert_eq!(e.kind_name(), "aborted:range_conflict");
    }
}
