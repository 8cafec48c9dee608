//! `auth`, `user` and `role`: users, roles and the auth switch, like etcd's
//! `etcdctl auth|user|role`. Changes print `OK <seqno>`; lists print one
//! name a line; `--json` prints JSON.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use trireme_client::{proto, Client, Error, Result};

use super::output::json_line;
use super::Reply;

/// `auth enable|disable|status`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Turn auth on (a user `root` holding the role `root` must exist).
    Enable,
    /// Turn auth off (needs the role `root` while on).
    Disable,
    /// Print whether auth is on.
    Status,
}

/// `user ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Add a user: `user add NAME[:PASSWORD]` or `--new-password`.
    Add(UserPasswordArgs),
    /// Delete a user.
    #[command(alias = "del")]
    Delete {
        /// The user.
        name: String,
    },
    /// Change a user's password: `user passwd NAME[:PASSWORD]` or `--new-password`.
    Passwd(UserPasswordArgs),
    /// List the users.
    List,
    /// Print a user's roles.
    Get {
        /// The user.
        name: String,
    },
    /// Give a user a role.
    Grant {
        /// The user.
        user: String,
        /// The role (`root` for everything).
        role: String,
    },
    /// Take a role from a user.
    Revoke {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
}

/// `NAME[:PASSWORD]` and `--new-password`.
#[derive(Debug, Clone, Args)]
pub struct UserPasswordArgs {
    /// The user, optionally with `:PASSWORD`.
    pub name: String,
    /// The password (instead of `NAME:PASSWORD`).
    #[arg(long, env = "TRIREME_NEW_PASSWORD", hide_env_values = true)]
    pub new_password: Option<String>,
}

impl UserPasswordArgs {
    fn split(&self) -> Result<(String, String)> {
        match (self.name.split_once(':'), &self.new_password) {
            (Some((name, password)), None) => Ok((name.into(), password.into())),
            (None, Some(password)) => Ok((self.name.clone(), password.clone())),
            (Some(_), Some(_)) => Err(Error::InvalidInput(
                "give the password once: NAME:PASSWORD or --new-password, not both".into(),
            )),
            (None, None) => Err(Error::InvalidInput(format!(
                "no password for user {:?}: write {}:PASSWORD or pass --new-password",
                self.name, self.name
            ))),
        }
    }
}

/// `read` or `readwrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermArg {
    /// Get, scan, watch, transaction reads.
    Read,
    /// Reads and writes.
    Readwrite,
}

/// A key, `--prefix`, or `KEY --to END`.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// The key (or the prefix, or the range's first key).
    pub key: String,
    /// Every key beginning with KEY.
    #[arg(long, conflicts_with = "to")]
    pub prefix: bool,
    /// The range [KEY, END).
    #[arg(long, value_name = "END")]
    pub to: Option<String>,
}

impl ScopeArgs {
    fn permission(&self, kind: proto::PermissionKind) -> proto::Permission {
        proto::Permission {
            kind: kind as i32,
            key: self.key.clone().into_bytes(),
            range_end: self.to.clone().unwrap_or_default().into_bytes(),
            prefix: self.prefix,
        }
    }
}

/// `role ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum RoleCommand {
    /// Add a role with no permissions.
    Add {
        /// The role.
        name: String,
    },
    /// Delete a role (users holding it lose it).
    #[command(alias = "del")]
    Delete {
        /// The role.
        name: String,
    },
    /// List the roles (`root` is built in).
    List,
    /// Print a role's permissions, one `KIND SCOPE` a line.
    Get {
        /// The role.
        name: String,
    },
    /// Give a role `read` or `readwrite` over a key, a prefix or a range.
    Grant {
        /// The role.
        role: String,
        /// The permission.
        #[arg(value_enum)]
        kind: PermArg,
        /// The keys.
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Take the permission over a key, a prefix or a range from a role.
    Revoke {
        /// The role.
        role: String,
        /// The keys.
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

fn changed(seqno: u64, json: bool) -> Reply {
    if json {
        Reply::ok(json_line(&json!({ "seqno": seqno })))
    } else {
        Reply::ok(format!("OK {seqno}\n"))
    }
}

fn names(names: Vec<String>, json: bool) -> Reply {
    if json {
        Reply::ok(json_line(&json!(names)))
    } else {
        Reply::ok(names.iter().map(|n| format!("{n}\n")).collect::<String>())
    }
}

/// `auth ...`.
pub async fn auth(client: &Client, cmd: &AuthCommand, json: bool) -> Result<Reply> {
    match cmd {
        AuthCommand::Enable => Ok(changed(client.auth_enable().await?, json)),
        AuthCommand::Disable => Ok(changed(client.auth_disable().await?, json)),
        AuthCommand::Status => {
            let on = client.auth_status().await?;
            Ok(if json {
                Reply::ok(json_line(&json!({ "enabled": on })))
            } else {
                Reply::ok(format!(
                    "auth {}\n",
                    if on { "enabled" } else { "disabled" }
                ))
            })
        }
    }
}

/// `user ...`.
pub async fn user(client: &Client, cmd: &UserCommand, json: bool) -> Result<Reply> {
    match cmd {
        UserCommand::Add(args) => {
            let (name, password) = args.split()?;
            Ok(changed(client.user_add(&name, &password).await?, json))
        }
        UserCommand::Delete { name } => Ok(changed(client.user_delete(name).await?, json)),
        UserCommand::Passwd(args) => {
            let (name, password) = args.split()?;
            Ok(changed(client.user_passwd(&name, &password).await?, json))
        }
        UserCommand::List => Ok(names(client.user_list().await?, json)),
        UserCommand::Get { name } => {
            let roles = client.user_get(name).await?;
            Ok(if json {
                Reply::ok(json_line(&json!({ "name": name, "roles": roles })))
            } else {
                Reply::ok(format!("user {name}\nroles {}\n", roles.join(" ")))
            })
        }
        UserCommand::Grant { user, role } => {
            Ok(changed(client.user_grant(user, role).await?, json))
        }
        UserCommand::Revoke { user, role } => {
            Ok(changed(client.user_revoke(user, role).await?, json))
        }
    }
}

fn describe(p: &proto::Permission) -> (String, String) {
    let kind = match proto::PermissionKind::try_from(p.kind) {
        Ok(proto::PermissionKind::Readwrite) => "readwrite",
        _ => "read",
    };
    let key = String::from_utf8_lossy(&p.key);
    let scope = if !p.range_end.is_empty() {
        format!("range {key} {}", String::from_utf8_lossy(&p.range_end))
    } else if p.prefix {
        format!("prefix {key}")
    } else {
        format!("key {key}")
    };
    (kind.into(), scope)
}

/// `role ...`.
pub async fn role(client: &Client, cmd: &RoleCommand, json: bool) -> Result<Reply> {
    match cmd {
        RoleCommand::Add { name } => Ok(changed(client.role_add(name).await?, json)),
        RoleCommand::Delete { name } => Ok(changed(client.role_delete(name).await?, json)),
        RoleCommand::List => Ok(names(client.role_list().await?, json)),
        RoleCommand::Get { name } => {
            let perms = client.role_get(name).await?;
            let lines: Vec<(String, String)> = perms.iter().map(describe).collect();
            Ok(if json {
                let perms: Vec<_> = lines
                    .iter()
                    .map(|(kind, scope)| json!({ "kind": kind, "scope": scope }))
                    .collect();
                Reply::ok(json_line(&json!({ "name": name, "permissions": perms })))
            } else if name == "root" {
                Reply::ok("root: every permission\n")
            } else {
                Reply::ok(
                    lines
                        .iter()
                        .map(|(kind, scope)| format!("{kind} {scope}\n"))
                        .collect::<String>(),
                )
            })
        }
        RoleCommand::Grant { role, kind, scope } => {
            let kind = match kind {
                PermArg::Read => proto::PermissionKind::Read,
                PermArg::Readwrite => proto::PermissionKind::Readwrite,
            };
            Ok(changed(
                client.role_grant(role, scope.permission(kind)).await?,
                json,
            ))
        }
        RoleCommand::Revoke { role, scope } => Ok(changed(
            client
                .role_revoke(role, scope.permission(proto::PermissionKind::Read))
                .await?,
            json,
        )),
    }
}
