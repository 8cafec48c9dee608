//! The tower layer that authenticates client-port requests: it decides the
//! request's [`Access`] once, refuses it (UNAUTHENTICATED, or
//! PERMISSION_DENIED for a method that needs the role `root`) before any
//! service runs, and leaves the decision in the request's extensions for the
//! per-key checks of `api::kv`.
//!
//! Which methods need what, while auth is on:
//! - open: `Auth.Authenticate`, `Auth.AuthStatus`, `Cluster.Status`,
//!   `Members`, `Checksum`, `GetConfig`, gRPC health and reflection (what
//!   probes and operators read, and nothing from the key space);
//! - any user: `Kv.*` (each key then checked against the user's roles);
//! - root: every other `Auth` method, `Cluster.Join`, `Leave`, `SetConfig`
//!   (membership and configuration) and `Backup.*` (a backup holds every
//!   key), and any method not listed here (closed by default).
//!
//! Peer-port methods are not user-authenticated: the layer is not on that port.

use std::sync::Arc;

use super::to_status;
use crate::auth::{Access, Auth};

/// What a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Nothing.
    Open,
    /// An authenticated user.
    User,
    /// A user holding the role `root`.
    Root,
}

/// The policy of the gRPC method at `path` (`/pkg.Service/Method`). What is
/// not listed needs root: a method added later stays closed until someone
/// decides who may call it.
pub fn policy(path: &str) -> Policy {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Policy::Root;
    };
    match service {
        "trireme.v1.Kv" => Policy::User,
        "trireme.v1.Auth" => match method {
            "Authenticate" | "AuthStatus" => Policy::Open,
            _ => Policy::Root,
        },
        "trireme.v1.Cluster" => match method {
            "Status" | "Members" | "Checksum" | "GetConfig" => Policy::Open,
            // Peer-port methods: `ports` refuses them here, naming the port.
            "Ping" | "Campaign" => Policy::Open,
            _ => Policy::Root,
        },
        // Peer-port only, refused here by `ports` the same way.
        "trireme.v1.Raft" => Policy::Open,
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Policy::Open,
        _ => Policy::Root,
    }
}

/// Authenticates every request of a client-port server.
pub type AuthLayer = crate::guard::GateLayer<AuthGate>;

/// The check [`AuthLayer`] makes: the caller's [`Access`] from its token
/// or certificate, put in the request's extensions, and root for the
/// methods that need it.
#[derive(Clone)]
pub struct AuthGate(Option<Arc<Auth>>);

impl AuthGate {
    /// Checks requests against `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        AuthGate(Some(auth))
    }

    /// Checks nothing (the peer port).
    pub fn none() -> Self {
        AuthGate(None)
    }
}

impl crate::guard::Gate for AuthGate {
    type Held = ();

    fn decide<B>(&self, req: &mut http::Request<B>) -> Result<(), tonic::Status> {
        let Some(auth) = &self.0 else {
            return Ok(());
        };
        let path = req.uri().path();
        let wanted = policy(path);
        if wanted == Policy::Open {
            return Ok(());
        }
        let access = auth
            .access(req.headers(), req.extensions())
            .and_then(|access| {
                if wanted == Policy::Root {
                    access.check_root(path)?;
                }
                Ok(access)
            })
            .map_err(to_status)?;
        req.extensions_mut().insert::<Access>(access);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_has_its_policy() {
        assert_eq!(policy("/trireme.v1.Kv/Get"), Policy::User);
        assert_eq!(policy("/trireme.v1.Kv/Watch"), Policy::User);
        assert_eq!(policy("/trireme.v1.Auth/Authenticate"), Policy::Open);
        assert_eq!(policy("/trireme.v1.Auth/AuthStatus"), Policy::Open);
        assert_eq!(policy("/trireme.v1.Auth/UserAdd"), Policy::Root);
        assert_eq!(policy("/trireme.v1.Auth/AuthDisable"), Policy::Root);
        assert_eq!(policy("/trireme.v1.Cluster/Join"), Policy::Root);
        assert_eq!(policy("/trireme.v1.Cluster/SetConfig"), Policy::Root);
        assert_eq!(policy("/trireme.v1.Cluster/Status"), Policy::Open);
        assert_eq!(policy("/trireme.v1.Backup/Save"), Policy::Root);
        assert_eq!(policy("/grpc.health.v1.Health/Check"), Policy::Open);
        assert_eq!(
            policy("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Policy::Open
        );
        // Not listed: closed.
        assert_eq!(policy("/trireme.v1.Cluster/SomethingNew"), Policy::Root);
        assert_eq!(policy("/trireme.v1.NewService/Call"), Policy::Root);
        assert_eq!(policy("not a path"), Policy::Root);
    }
}
