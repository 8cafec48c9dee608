//! The client port and the peer port, and which gRPC methods each serves.
//!
//! Like etcd's client and peer URLs (and Galera's 3306 and 4567), a node
//! listens twice: the client port (`listen`) serves `Kv`, the `Cluster`
//! admin methods, `Backup`, gRPC health and reflection; the peer port (`peer_listen`)
//! serves `Raft` (AppendEntries, Vote, InstallSnapshot, Forward, ReadIndex),
//! `Cluster.Ping` and `Cluster.Campaign` (a draining leader's hand-over),
//! and the membership and configuration changes a member
//! forwards to the leader (`Join` also comes from a node joining with
//! `--join`, which names a peer address). A method called on the wrong port
//! is refused by [`PortGuardLayer`] with UNIMPLEMENTED and a message naming
//! the port that serves it, before it reaches any service.

/// Which listener a server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Clients and operators: `Kv`, `Cluster` admin, health, reflection.
    Client,
    /// Other members: `Raft`, `Cluster.Ping` and forwarded admin changes.
    Peer,
    /// Everything on one listener: only for a simulated network (tests).
    Both,
}

/// `Cluster` methods a member sends to another member's peer port.
const PEER_CLUSTER_METHODS: [&str; 5] = ["Ping", "Campaign", "Join", "Leave", "SetConfig"];

/// `Cluster` methods only members call: refused on the client port.
const PEER_ONLY_CLUSTER_METHODS: [&str; 2] = ["Ping", "Campaign"];

const RAFT: &str = "/trireme.v1.Raft/";
const CLUSTER: &str = "/trireme.v1.Cluster/";

impl Port {
    /// Whether this port serves the gRPC method at `path` (`/pkg.Service/Method`).
    pub fn serves(self, path: &str) -> bool {
        let peer_only = path.starts_with(RAFT)
            || path
                .strip_prefix(CLUSTER)
                .is_some_and(|m| PEER_ONLY_CLUSTER_METHODS.contains(&m));
        let on_peer = path.starts_with(RAFT)
            || path
                .strip_prefix(CLUSTER)
                .is_some_and(|m| PEER_CLUSTER_METHODS.contains(&m));
        match self {
            Port::Both => true,
            Port::Client => !peer_only,
            Port::Peer => on_peer,
        }
    }

    /// The configuration key of this port's listener.
    pub fn key(self) -> &'static str {
        match self {
            Port::Client => "listen",
            Port::Peer => "peer_listen",
            Port::Both => "listen",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Port::Client => "client port",
            Port::Peer => "peer port",
            Port::Both => "port",
        }
    }

    /// The error for `path` called on this port.
    pub fn refusal(self, path: &str) -> tonic::Status {
        let other = match self {
            Port::Client => Port::Peer,
            _ => Port::Client,
        };
        tonic::Status::unimplemented(format!(
            "{path} is not served on the {} ({}): it is served on the {} ({})",
            self.name(),
            self.key(),
            other.name(),
            other.key()
        ))
    }
}

/// A tower layer refusing the gRPC methods its [`Port`] does not serve.
pub type PortGuardLayer = crate::guard::GateLayer<Port>;

impl crate::guard::Gate for Port {
    type Held = ();

    fn decide<B>(&self, req: &mut http::Request<B>) -> Result<(), tonic::Status> {
        let path = req.uri().path();
        if self.serves(path) {
            Ok(())
        } else {
            Err(self.refusal(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_has_its_port() {
        let kv = "/trireme.v1.Kv/Commit";
        let append = "/trireme.v1.Raft/AppendEntries";
        let ping = "/trireme.v1.Cluster/Ping";
        let status = "/trireme.v1.Cluster/Status";
        let join = "/trireme.v1.Cluster/Join";
        let health = "/grpc.health.v1.Health/Check";
        let campaign = "/trireme.v1.Cluster/Campaign";
        assert!(Port::Peer.serves(campaign) && !Port::Client.serves(campaign));
        assert!(Port::Client.serves(kv) && Port::Client.serves(status));
        assert!(Port::Client.serves(join) && Port::Client.serves(health));
        assert!(!Port::Client.serves(append) && !Port::Client.serves(ping));
        assert!(Port::Peer.serves(append) && Port::Peer.serves(ping) && Port::Peer.serves(join));
        assert!(!Port::Peer.serves(kv) && !Port::Peer.serves(status));
        assert!(!Port::Peer.serves(health));
        for p in [kv, append, ping, status, join, health] {
            assert!(Port::Both.serves(p), "{p}");
        }
        let msg = Port::Client.refusal(append).message().to_string();
        assert!(
            msg.contains(append) && msg.contains("peer port (peer_listen)"),
            "{msg}"
        );
        let refused = Port::Peer.refusal(kv);
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert!(
            refused.message().contains("client port (listen)"),
            "{}",
            refused.message()
        );
    }
}
