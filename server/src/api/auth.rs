//! The `Auth` service: authentication, the auth switch, users and roles.
//! Decodes, calls [`crate::auth::Auth`], encodes; which methods need the
//! role `root` is decided before this runs, by [`super::auth_layer`].

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_proto::v1 as pb;
use trireme_proto::v1::auth_server;

use super::status::to_status;
use crate::auth::{password, state, Auth, Change, Kind, Permission, Scope};
use crate::error::{Error, Result};

/// The users-and-roles API.
pub struct AuthService {
    auth: Arc<Auth>,
}

impl AuthService {
    /// Serves `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        AuthService { auth }
    }

    async fn change(&self, change: Change) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let seqno = self.auth.change(change).await.map_err(to_status)?;
        Ok(Response::new(pb::AuthChangeResponse { seqno }))
    }
}

/// The argon2id hash of a new password, off the async threads.
async fn hash(password: String) -> Result<String> {
    state::check_password(&password)?;
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))?
}

fn permission(p: Option<pb::Permission>) -> Result<Permission> {
    let p = p.ok_or_else(|| Error::InvalidInput("the permission is missing".into()))?;
    let kind = match pb::PermissionKind::try_from(p.kind) {
        Ok(pb::PermissionKind::Read) => Kind::Read,
        Ok(pb::PermissionKind::Readwrite) => Kind::ReadWrite,
        Err(_) => {
            return Err(Error::InvalidInput(format!(
                "unknown permission kind {} (read is 0, readwrite 1)",
                p.kind
            )))
        }
    };
    Ok(Permission {
        kind,
        scope: Scope::parse(p.key, p.range_end, p.prefix)?,
    })
}

fn to_pb(p: &Permission) -> pb::Permission {
    let kind = match p.kind {
        Kind::Read => pb::PermissionKind::Read,
        Kind::ReadWrite => pb::PermissionKind::Readwrite,
    } as i32;
    match &p.scope {
        Scope::Key(k) => pb::Permission {
            kind,
            key: k.clone(),
            ..Default::default()
        },
        Scope::Prefix(k) => pb::Permission {
            kind,
            key: k.clone(),
            prefix: true,
            ..Default::default()
        },
        Scope::Range { start, end } => pb::Permission {
            kind,
            key: start.clone(),
            range_end: end.clone(),
            prefix: false,
        },
    }
}

#[tonic::async_trait]
impl auth_server::Auth for AuthService {
    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = req.into_inner();
        let (token, ttl_seconds) = self
            .auth
            .authenticate(&req.name, &req.password)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AuthenticateResponse {
            token,
            ttl_seconds,
        }))
    }

    async fn auth_enable(
        &self,
        _req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.change(Change::Enable).await
    }

    async fn auth_disable(
        &self,
        _req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.change(Change::Disable).await
    }

    async fn auth_status(
        &self,
        _req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let seqno = self.auth.node().applied().seqno();
        let state = self.auth.state().map_err(to_status)?;
        Ok(Response::new(pb::AuthStatusResponse {
            enabled: state.enabled,
            seqno,
        }))
    }

    async fn user_add(
        &self,
        req: Request<pb::UserAddRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let req = req.into_inner();
        state::check_name("user", &req.name).map_err(to_status)?;
        let hash = hash(req.password).await.map_err(to_status)?;
        self.change(Change::UserAdd(req.name, hash)).await
    }

    async fn user_delete(
        &self,
        req: Request<pb::UserNameRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.change(Change::UserDelete(req.into_inner().name)).await
    }

    async fn user_change_password(
        &self,
        req: Request<pb::UserPasswordRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let req = req.into_inner();
        let hash = hash(req.password).await.map_err(to_status)?;
        self.change(Change::UserPassword(req.name, hash)).await
    }

    async fn user_list(
        &self,
        _req: Request<pb::UserListRequest>,
    ) -> Result<Response<pb::UserListResponse>, Status> {
        let state = self.auth.state().map_err(to_status)?;
        Ok(Response::new(pb::UserListResponse {
            names: state.users.keys().cloned().collect(),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::UserNameRequest>,
    ) -> Result<Response<pb::UserGetResponse>, Status> {
        let name = req.into_inner().name;
        let state = self.auth.state().map_err(to_status)?;
        let user = state
            .users
            .get(&name)
            .ok_or_else(|| to_status(Error::InvalidInput(format!("no user named {name:?}"))))?;
        Ok(Response::new(pb::UserGetResponse {
            roles: user.roles.iter().cloned().collect(),
            name,
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::UserRoleRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let req = req.into_inner();
        self.change(Change::UserGrant(req.user, req.role)).await
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::UserRoleRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let req = req.into_inner();
        self.change(Change::UserRevoke(req.user, req.role)).await
    }

    async fn role_add(
        &self,
        req: Request<pb::RoleNameRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.change(Change::RoleAdd(req.into_inner().name)).await
    }

    async fn role_delete(
        &self,
        req: Request<pb::RoleNameRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.change(Change::RoleDelete(req.into_inner().name)).await
    }

    async fn role_list(
        &self,
        _req: Request<pb::RoleListRequest>,
    ) -> Result<Response<pb::RoleListResponse>, Status> {
        let state = self.auth.state().map_err(to_status)?;
        Ok(Response::new(pb::RoleListResponse {
            names: state.role_names(),
        }))
    }

    async fn role_get(
        &self,
        req: Request<pb::RoleNameRequest>,
    ) -> Result<Response<pb::RoleGetResponse>, Status> {
        let name = req.into_inner().name;
        let state = self.auth.state().map_err(to_status)?;
        let permissions = if name == state::ROOT {
            Vec::new()
        } else {
            state
                .roles
                .get(&name)
                .ok_or_else(|| to_status(Error::InvalidInput(format!("no role named {name:?}"))))?
                .iter()
                .map(to_pb)
                .collect()
        };
        Ok(Response::new(pb::RoleGetResponse { name, permissions }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::RolePermissionRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let req = req.into_inner();
        let perm = permission(req.permission).map_err(to_status)?;
        self.change(Change::RoleGrant(req.role, perm)).await
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::RolePermissionRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let req = req.into_inner();
        let perm = permission(req.permission).map_err(to_status)?;
        self.change(Change::RoleRevoke(req.role, perm)).await
    }
}
