//! Typed errors of the peer wire, and what a failed peer call proves.
//!
//! A `Forward` or `ReadIndex` reply carries `Result<_, PeerError>`: the
//! caller decides from the variant, never from a message's words, whether the
//! request can have reached a log. A call that failed before a reply is
//! judged by [`never_sent`]: only a connection that was never established
//! (refused, or its connect timed out) proves that no byte of the request left
//! this node; a reset or a timeout mid-call may have delivered it.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::txn::NodeId;

/// Why a peer refused a request (or could not say how it ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// The receiver is not the leader; nothing was appended.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader {
        /// The leader the receiver knows, if any.
        leader: Option<NodeId>,
    },
    /// The receiver is not in the primary component (a leader without a
    /// quorum); nothing was appended.
    #[error("not in the primary component: {0}")]
    NonPrimary(String),
    /// The receiver is over its admission limits; nothing was appended.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request is malformed or over a limit; nothing was appended.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The request was accepted but its outcome is unknown: it may be in the
    /// leader's log (e.g. the leader lost its quorum while replicating it).
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
}

impl PeerError {
    /// Whether the refused request certainly reached no log.
    pub fn never_appended(&self) -> bool {
        !matches!(self, PeerError::Indeterminate(_))
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::NotLeader { .. } | PeerError::NonPrimary(_) | PeerError::Overloaded(_) => {
                Error::Unavailable(e.to_string())
            }
            PeerError::Invalid(m) => Error::InvalidInput(m),
            PeerError::Indeterminate(m) => Error::Indeterminate(m),
        }
    }
}

/// Whether a peer call that failed with `status` certainly never sent its
/// request: the connection was never established (tonic marks every
/// connector failure, refused or timed out, with [`tonic::ConnectError`]).
pub fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::raft::network::{encode, Peers};

    async fn forward_to(addr: &str) -> tonic::Status {
        let peers = Peers::default();
        let mut client = peers.raft_client(addr).expect("client");
        let wss: Vec<crate::txn::WriteSet> = Vec::new();
        let mut request = tonic::Request::new(encode(&wss).expect("encode"));
        request.set_timeout(std::time::Duration::from_secs(5));
        client
            .forward(request)
            .await
            .expect_err("no server answers")
    }

    #[tokio::test]
    async fn a_refused_connection_is_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let status = forward_to(&addr).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(never_sent(&status), "refused, yet maybe sent: {status:?}");
    }

    #[tokio::test]
    async fn a_reset_mid_call_may_have_been_sent() {
        // The server reads the request's first bytes, then closes: the
        // connection existed and bytes left, so the outcome is unknown (the
        // message even says "connection", which fooled the old word test).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"not http/2");
        });
        let status = forward_to(&addr).await;
        server.join().expect("server thread");
        assert!(!never_sent(&status), "reset, yet never sent: {status:?}");
    }

    #[test]
    fn only_indeterminate_may_have_reached_a_log() {
        assert!(PeerError::NotLeader { leader: Some(2) }.never_appended());
        assert!(PeerError::NonPrimary("no quorum".into()).never_appended());
        assert!(PeerError::Overloaded("queue full".into()).never_appended());
        assert!(PeerError::Invalid("range start > end".into()).never_appended());
        assert!(!PeerError::Indeterminate("quorum lost".into()).never_appended());
        let e: Error = PeerError::Indeterminate("quorum lost".into()).into();
        assert!(matches!(e, Error::Indeterminate(_)), "{e:?}");
        let e: Error = PeerError::NonPrimary("no quorum".into()).into();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    }
}
