//! Users, roles and the auth switch: the `Auth` service's calls on
//! [`Client`]. Once auth is on, every call but [`Client::auth_status`] and
//! [`Client::authenticate`] needs a user holding the role `root` (set
//! [`crate::ClientOptions::credentials`]).

use std::future::Future;

use tonic::transport::Channel;
use tonic::{Request, Status};
use trireme_proto::v1 as proto;
use trireme_proto::v1::auth_client::AuthClient;

use crate::client::{auth, Client};
use crate::error::{OpKind, Result};

impl Client {
    async fn auth_rpc<Q, A, F, Fut>(&self, op: OpKind, message: Q, rpc: F) -> Result<A>
    where
        Q: Clone,
        F: Fn(AuthClient<Channel>, Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<A>, Status>>,
    {
        self.call(op, |channel, timeout| {
            let request = self.with_timeout(message.clone(), timeout);
            let fut = rpc(auth(channel), request);
            async move { Ok(fut.await?.into_inner()) }
        })
        .await
    }

    async fn auth_change<Q, F, Fut>(&self, message: Q, rpc: F) -> Result<u64>
    where
        Q: Clone,
        F: Fn(AuthClient<Channel>, Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<proto::AuthChangeResponse>, Status>>,
    {
        let seqno = self.auth_rpc(OpKind::Write, message, rpc).await?.seqno;
        self.advance_session(seqno);
        Ok(seqno)
    }

    /// Exchanges a user name and password for a token (valid on every node
    /// until it expires); the client does this itself when
    /// [`crate::ClientOptions::credentials`] is set.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<String> {
        let message = proto::AuthenticateRequest {
            name: user.into(),
            password: password.into(),
        };
        Ok(self
            .auth_rpc(OpKind::Read, message, |mut c, r| async move {
                c.authenticate(r).await
            })
            .await?
            .token)
    }

    /// Whether auth is on (always allowed).
    pub async fn auth_status(&self) -> Result<bool> {
        Ok(self
            .auth_rpc(
                OpKind::Read,
                proto::AuthStatusRequest {},
                |mut c, r| async move { c.auth_status(r).await },
            )
            .await?
            .enabled)
    }

    /// Turns auth on: refused unless a user `root` with the role `root`
    /// exists. Returns the commit seqno (0 if it was on already).
    pub async fn auth_enable(&self) -> Result<u64> {
        self.auth_change(proto::AuthEnableRequest {}, |mut c, r| async move {
            c.auth_enable(r).await
        })
        .await
    }

    /// Turns auth off.
    pub async fn auth_disable(&self) -> Result<u64> {
        self.auth_change(proto::AuthDisableRequest {}, |mut c, r| async move {
            c.auth_disable(r).await
        })
        .await
    }

    /// Adds a user.
    pub async fn user_add(&self, name: &str, password: &str) -> Result<u64> {
        let message = proto::UserAddRequest {
            name: name.into(),
            password: password.into(),
        };
        self.auth_change(message, |mut c, r| async move { c.user_add(r).await })
            .await
    }

    /// Deletes a user: its tokens stop working.
    pub async fn user_delete(&self, name: &str) -> Result<u64> {
        let message = proto::UserNameRequest { name: name.into() };
        self.auth_change(message, |mut c, r| async move { c.user_delete(r).await })
            .await
    }

    /// Changes a user's password: its tokens stop working.
    pub async fn user_passwd(&self, name: &str, password: &str) -> Result<u64> {
        let message = proto::UserPasswordRequest {
            name: name.into(),
            password: password.into(),
        };
        self.auth_change(message, |mut c, r| async move {
            c.user_change_password(r).await
        })
        .await
    }

    /// The users' names.
    pub async fn user_list(&self) -> Result<Vec<String>> {
        Ok(self
            .auth_rpc(
                OpKind::Read,
                proto::UserListRequest {},
                |mut c, r| async move { c.user_list(r).await },
            )
            .await?
            .names)
    }

    /// A user's roles.
    pub async fn user_get(&self, name: &str) -> Result<Vec<String>> {
        let message = proto::UserNameRequest { name: name.into() };
        Ok(self
            .auth_rpc(OpKind::Read, message, |mut c, r| async move {
                c.user_get(r).await
            })
            .await?
            .roles)
    }

    /// Gives a user a role.
    pub async fn user_grant(&self, user: &str, role: &str) -> Result<u64> {
        let message = proto::UserRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        self.auth_change(
            message,
            |mut c, r| async move { c.user_grant_role(r).await },
        )
        .await
    }

    /// Takes a role from a user.
    pub async fn user_revoke(&self, user: &str, role: &str) -> Result<u64> {
        let message = proto::UserRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        self.auth_change(
            message,
            |mut c, r| async move { c.user_revoke_role(r).await },
        )
        .await
    }

    /// Adds a role with no permissions.
    pub async fn role_add(&self, name: &str) -> Result<u64> {
        let message = proto::RoleNameRequest { name: name.into() };
        self.auth_change(message, |mut c, r| async move { c.role_add(r).await })
            .await
    }

    /// Deletes a role (users holding it lose it).
    pub async fn role_delete(&self, name: &str) -> Result<u64> {
        let message = proto::RoleNameRequest { name: name.into() };
        self.auth_change(message, |mut c, r| async move { c.role_delete(r).await })
            .await
    }

    /// The roles' names (`root` included).
    pub async fn role_list(&self) -> Result<Vec<String>> {
        Ok(self
            .auth_rpc(
                OpKind::Read,
                proto::RoleListRequest {},
                |mut c, r| async move { c.role_list(r).await },
            )
            .await?
            .names)
    }

    /// A role's permissions.
    pub async fn role_get(&self, name: &str) -> Result<Vec<proto::Permission>> {
        let message = proto::RoleNameRequest { name: name.into() };
        Ok(self
            .auth_rpc(OpKind::Read, message, |mut c, r| async move {
                c.role_get(r).await
            })
            .await?
            .permissions)
    }

    /// Adds a permission to a role (replacing one over the same scope).
    pub async fn role_grant(&self, role: &str, permission: proto::Permission) -> Result<u64> {
        let message = proto::RolePermissionRequest {
            role: role.into(),
            permission: Some(permission),
        };
        self.auth_change(message, |mut c, r| async move {
            c.role_grant_permission(r).await
        })
        .await
    }

    /// Removes the permission over `permission`'s scope from a role.
    pub async fn role_revoke(&self, role: &str, permission: proto::Permission) -> Result<u64> {
        let message = proto::RolePermissionRequest {
            role: role.into(),
            permission: Some(permission),
        };
        self.auth_change(message, |mut c, r| async move {
            c.role_revoke_permission(r).await
        })
        .await
    }
}
