//! The replicated auth state (the switch, users, roles, the token secret) and
//! the changes operators make to it, as pure functions: the service reads the
//! state at a seqno, applies one change here, and commits the result with a
//! compare on the version it read (see [`super::Auth::change`]).
//!
//! The state is one record, the reserved key [`state_key`], so that a change
//! is one compare-and-put: two concurrent changes cannot both commit from the
//! same version, and the loser is retried from the winner's state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::perm::{Grants, Permission};
use crate::error::{Error, Result};
use crate::txn::reserved;

/// The built-in role that may do everything.
pub const ROOT: &str = "root";

/// Longest user or role name.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest password.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Most permissions one role holds.
pub const MAX_PERMISSIONS: usize = 1024;

/// The reserved key holding the encoded [`AuthState`].
pub fn state_key() -> Vec<u8> {
    reserved::system_key(b"auth/", b"state")
}

/// One user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The argon2id hash of its password in PHC form (never the password).
    pub password_hash: String,
    /// Its roles.
    pub roles: BTreeSet<String>,
    /// Changes when the user is added or its password changes: tokens name
    /// the revision they were issued at and are refused after a change.
    pub revision: u64,
}

/// Everything auth decides by, replicated as one record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Whether requests are checked.
    pub enabled: bool,
    /// The key tokens are signed with (random, made with the first change).
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
    /// The next user revision to hand out (never reused, so a user deleted
    /// and added again does not accept its old tokens).
    pub next_revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name (the built-in `root` is not stored).
    pub roles: BTreeMap<String, BTreeSet<Permission>>,
}

impl AuthState {
    /// Decodes the stored record.
    pub fn decode(bytes: &[u8]) -> Result<AuthState> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidData(format!("the stored auth state does not decode: {e}")))
    }

    /// Encodes the record to store.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::Internal(format!("encoding the auth state: {e}")))
    }

    /// What `user` may do, or `None` if there is no such user.
    pub fn grants(&self, user: &str) -> Option<Grants> {
        let u = self.users.get(user)?;
        let mut grants = Grants::default();
        for role in &u.roles {
            if role == ROOT {
                grants.root = true;
            } else if let Some(perms) = self.roles.get(role) {
                grants.permissions.extend(perms.iter().cloned());
            }
        }
        Some(grants)
    }

    /// Role names, `root` included.
    pub fn role_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.roles.keys().cloned().collect();
        names.push(ROOT.into());
        names.sort();
        names
    }
}

/// Refuses a user or role name that is empty, too long, or has characters
/// other than letters, digits and `_ . @ -` (tokens and the CLI's
/// `NAME:PASSWORD` use `:`).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidInput(format!(
            "{what} name must be 1 to {MAX_NAME_BYTES} bytes long (got {})",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.@-".contains(*c)))
    {
        return Err(Error::InvalidInput(format!(
            "{what} name {name:?} has the character {c:?}: only letters, digits and _ . @ - are allowed"
        )));
    }
    Ok(())
}

/// Refuses an empty or too long password.
pub fn check_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidInput(format!(
            "a password must be 1 to {MAX_PASSWORD_BYTES} bytes long (got {})",
            password.len()
        )));
    }
    Ok(())
}

/// One change an operator asks for.
#[derive(Clone, Debug)]
pub enum Change {
    /// Turn checks on (refused unless `root` exists with the role `root`).
    Enable,
    /// Turn checks off.
    Disable,
    /// Add a user with this password hash.
    UserAdd(String, String),
    /// Delete a user.
    UserDelete(String),
    /// Replace a user's password hash.
    UserPassword(String, String),
    /// Give a user a role.
    UserGrant(String, String),
    /// Take a role from a user.
    UserRevoke(String, String),
    /// Add a role with no permissions.
    RoleAdd(String),
    /// Delete a role (and take it from every user).
    RoleDelete(String),
    /// Add a permission to a role (replacing one over the same scope).
    RoleGrant(String, Permission),
    /// Remove the permission over this scope from a role.
    RoleRevoke(String, Permission),
}

fn no_user(name: &str) -> Error {
    Error::InvalidInput(format!("no user named {name:?}"))
}

fn no_role(name: &str) -> Error {
    Error::InvalidInput(format!("no role named {name:?}"))
}

/// Applies `change` to `state`. Returns `false` when nothing needed
/// changing (enabling when enabled, granting a role already held).
pub fn apply(state: &mut AuthState, change: Change) -> Result<bool> {
    match change {
        Change::Enable => {
            let root_ok = state
                .users
                .get(ROOT)
                .is_some_and(|u| u.roles.contains(ROOT));
            if !root_ok {
                return Err(Error::InvalidInput(
                    "auth cannot be enabled: a user named \"root\" holding the role \"root\" must exist first \
                     (trireme user add root; trireme user grant root root)"
                        .into(),
                ));
            }
            Ok(!std::mem::replace(&mut state.enabled, true))
        }
        Change::Disable => Ok(std::mem::replace(&mut state.enabled, false)),
        Change::UserAdd(name, hash) => {
            check_name("user", &name)?;
            if state.users.contains_key(&name) {
                return Err(Error::InvalidInput(format!(
                    "a user named {name:?} already exists"
                )));
            }
            state.next_revision += 1;
            state.users.insert(
                name,
                User {
                    password_hash: hash,
                    roles: BTreeSet::new(),
                    revision: state.next_revision,
                },
            );
            Ok(true)
        }
        Change::UserDelete(name) => {
            if state.enabled && name == ROOT {
                return Err(Error::InvalidInput(
                    "the user \"root\" cannot be deleted while auth is enabled".into(),
                ));
            }
            state.users.remove(&name).ok_or_else(|| no_user(&name))?;
            Ok(true)
        }
        Change::UserPassword(name, hash) => {
            state.next_revision += 1;
            let revision = state.next_revision;
            let user = state.users.get_mut(&name).ok_or_else(|| no_user(&name))?;
            user.password_hash = hash;
            user.revision = revision;
            Ok(true)
        }
        Change::UserGrant(name, role) => {
            if role != ROOT && !state.roles.contains_key(&role) {
                return Err(no_role(&role));
            }
            let user = state.users.get_mut(&name).ok_or_else(|| no_user(&name))?;
            Ok(user.roles.insert(role))
        }
        Change::UserRevoke(name, role) => {
            if state.enabled && name == ROOT && role == ROOT {
                return Err(Error::InvalidInput(
                    "the role \"root\" cannot be taken from the user \"root\" while auth is enabled"
                        .into(),
                ));
            }
            let user = state.users.get_mut(&name).ok_or_else(|| no_user(&name))?;
            if !user.roles.remove(&role) {
                return Err(Error::InvalidInput(format!(
                    "user {name:?} does not hold the role {role:?}"
                )));
            }
            Ok(true)
        }
        Change::RoleAdd(name) => {
            check_name("role", &name)?;
            if name == ROOT || state.roles.contains_key(&name) {
                return Err(Error::InvalidInput(format!(
                    "a role named {name:?} already exists"
                )));
            }
            state.roles.insert(name, BTreeSet::new());
            Ok(true)
        }
        Change::RoleDelete(name) => {
            if name == ROOT {
                return Err(Error::InvalidInput(
                    "the role \"root\" is built in and cannot be deleted".into(),
                ));
            }
            state.roles.remove(&name).ok_or_else(|| no_role(&name))?;
            for user in state.users.values_mut() {
                user.roles.remove(&name);
            }
            Ok(true)
        }
        Change::RoleGrant(name, perm) => {
            if name == ROOT {
                return Err(Error::InvalidInput(
                    "the role \"root\" already has every permission".into(),
                ));
            }
            let perms = state.roles.get_mut(&name).ok_or_else(|| no_role(&name))?;
            let before = perms.len();
            perms.retain(|p| p.scope != perm.scope);
            if perms.len() >= MAX_PERMISSIONS {
                return Err(Error::InvalidInput(format!(
                    "role {name:?} already has {before} permissions, the limit ({MAX_PERMISSIONS})"
                )));
            }
            Ok(perms.insert(perm) || before != perms.len())
        }
        Change::RoleRevoke(name, perm) => {
            let perms = state.roles.get_mut(&name).ok_or_else(|| no_role(&name))?;
            let before = perms.len();
            perms.retain(|p| p.scope != perm.scope);
            if perms.len() == before {
                return Err(Error::InvalidInput(format!(
                    "role {name:?} has no permission over {}",
                    perm.scope
                )));
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::perm::{Kind, Scope};

    fn add(state: &mut AuthState, name: &str) {
        apply(state, Change::UserAdd(name.into(), "hash".into())).unwrap();
    }

    #[test]
    fn enabling_needs_a_root_user_with_the_root_role() {
        let mut s = AuthState::default();
        let err = apply(&mut s, Change::Enable).unwrap_err();
        assert!(err.to_string().contains("\"root\""), "{err}");
        add(&mut s, ROOT);
        assert!(apply(&mut s, Change::Enable).is_err());
        assert!(!s.enabled);
        apply(&mut s, Change::UserGrant(ROOT.into(), ROOT.into())).unwrap();
        assert!(apply(&mut s, Change::Enable).unwrap());
        assert!(s.enabled);
        assert!(!apply(&mut s, Change::Enable).unwrap());
        // Locking everyone out is refused while enabled.
        assert!(apply(&mut s, Change::UserDelete(ROOT.into())).is_err());
        assert!(apply(&mut s, Change::UserRevoke(ROOT.into(), ROOT.into())).is_err());
        assert!(apply(&mut s, Change::RoleDelete(ROOT.into())).is_err());
    }

    #[test]
    fn grants_are_the_union_of_roles_and_follow_role_changes() {
        let mut s = AuthState::default();
        add(&mut s, "alice");
        apply(&mut s, Change::RoleAdd("reader".into())).unwrap();
        let perm = Permission {
            kind: Kind::Read,
            scope: Scope::Prefix(b"a/".to_vec()),
        };
        apply(&mut s, Change::RoleGrant("reader".into(), perm.clone())).unwrap();
        apply(&mut s, Change::UserGrant("alice".into(), "reader".into())).unwrap();
        assert_eq!(s.grants("alice").unwrap().permissions, vec![perm.clone()]);
        // Granting over the same scope replaces the kind.
        let rw = Permission {
            kind: Kind::ReadWrite,
            ..perm.clone()
        };
        apply(&mut s, Change::RoleGrant("reader".into(), rw.clone())).unwrap();
        assert_eq!(s.grants("alice").unwrap().permissions, vec![rw]);
        apply(&mut s, Change::RoleRevoke("reader".into(), perm)).unwrap();
        assert!(s.grants("alice").unwrap().permissions.is_empty());
        apply(&mut s, Change::RoleDelete("reader".into())).unwrap();
        assert!(s.users["alice"].roles.is_empty());
        assert!(s.grants("bob").is_none());
        assert!(apply(&mut s, Change::UserGrant("alice".into(), "nope".into())).is_err());
    }

    #[test]
    fn revisions_change_with_the_password_and_are_never_reused() {
        let mut s = AuthState::default();
        add(&mut s, "u");
        let r1 = s.users["u"].revision;
        apply(&mut s, Change::UserPassword("u".into(), "h2".into())).unwrap();
        let r2 = s.users["u"].revision;
        assert!(r2 > r1);
        apply(&mut s, Change::UserDelete("u".into())).unwrap();
        add(&mut s, "u");
        assert!(s.users["u"].revision > r2);
        let back = AuthState::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(AuthState::decode(b"{").is_err());
    }

    #[test]
    fn names_are_checked() {
        check_name("user", "alice.b@x-1_2").unwrap();
        for bad in ["", "a:b", "a b", "é", &"x".repeat(MAX_NAME_BYTES + 1)] {
            assert!(check_name("user", bad).is_err(), "{bad}");
        }
        assert!(check_password("").is_err());
        check_password("p").unwrap();
    }
}
