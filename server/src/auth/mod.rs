//! Users, roles and permissions (issue 9 part 3): who a client request comes
//! from, and whether it may do what it asks.
//!
//! What it owns: the replicated auth state ([`state`]: the on/off switch,
//! users with argon2id password hashes ([`password`]), roles with
//! permissions ([`perm`]) and the secret tokens are signed with ([`token`])),
//! the changes operators make to it, and the check of each client request
//! ([`Access`], put in the request's extensions by the client port's auth
//! layer, `api::auth_layer`). The state is one record under the reserved key
//! `0xFF 0xFF "auth/state"` (see `txn::reserved`): a change is a write set
//! with a compare on the version read, committed through [`Node::commit`]
//! like any other, so it is certified and applied in log order on every node,
//! and kept in snapshots and backups. Each node checks requests against the
//! state at its own applied seqno; the decoded state is cached and re-read
//! only when the record's version moves ([`Auth::state`]).
//!
//! What it may import: `node` (to read at the applied seqno and commit),
//! `txn`, `error`. The gRPC edges (`api::auth`, `api::kv`) call it.

pub mod identity;
pub mod password;
pub mod perm;
pub mod state;
pub mod throttle;
pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;

use crate::error::{Error, Result};
use crate::node::{Consistency, Node, ReadOptions};
use crate::txn::{Compare, Condition, KeyRange, Mutation, Seqno, WriteSet};
pub use perm::{Grants, Kind, Permission, Scope};
pub use state::{AuthState, Change};

/// How long a token from `Authenticate` is accepted.
pub const TOKEN_TTL: Duration = Duration::from_secs(600);

/// Attempts of a change that keeps losing to concurrent changes.
const CHANGE_ATTEMPTS: usize = 16;

/// Bytes of the random token secret.
const SECRET_BYTES: usize = 32;

/// What a client request may do, decided once per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Auth is off: everything.
    Open,
    /// An authenticated user and what its roles allow.
    User {
        /// The user's name.
        name: String,
        /// Its permissions.
        grants: Grants,
    },
}

impl Access {
    /// Checks `kind` access to `key`.
    pub fn check_key(&self, kind: Kind, key: &[u8]) -> Result<()> {
        match self {
            Access::Open => Ok(()),
            Access::User { name, grants } => grants.check_key(name, kind, key),
        }
    }

    /// Checks `kind` access to every key in `range`.
    pub fn check_range(&self, kind: Kind, range: &KeyRange) -> Result<()> {
        match self {
            Access::Open => Ok(()),
            Access::User { name, grants } => grants.check_range(name, kind, range),
        }
    }

    /// Checks a transaction: read access to its reads, scanned ranges and
    /// compared keys, write access to its mutations. Nothing is committed
    /// unless all pass.
    pub fn check_write_set(&self, ws: &WriteSet) -> Result<()> {
        for key in &ws.reads {
            self.check_key(Kind::Read, key)?;
        }
        for range in &ws.ranges {
            self.check_range(Kind::Read, range)?;
        }
        for c in &ws.compares {
            self.check_key(Kind::Read, &c.key)?;
        }
        for m in &ws.mutations {
            self.check_key(Kind::ReadWrite, m.key())?;
        }
        Ok(())
    }

    /// Checks that the caller holds the role `root`.
    pub fn check_root(&self, what: &str) -> Result<()> {
        match self {
            Access::Open => Ok(()),
            Access::User { grants, .. } if grants.root => Ok(()),
            Access::User { name, .. } => Err(Error::PermissionDenied(format!(
                "user {name:?} lacks the role \"root\", which {what} needs"
            ))),
        }
    }

    /// The decision the client port's auth layer left in a request's extensions.
    /// Missing (a request that did not pass the layer) is refused, never
    /// taken as open.
    pub fn of(extensions: &http::Extensions) -> Result<Access> {
        extensions.get::<Access>().cloned().ok_or_else(|| {
            Error::Unauthenticated("this request was not checked by the auth layer".into())
        })
    }
}

#[derive(Debug)]
struct Cached {
    /// The applied seqno the record's version was last checked at.
    checked_at: Seqno,
    /// The record's version (0: absent).
    version: Seqno,
    state: Arc<AuthState>,
}

/// The auth service of one node: reads and changes the replicated state and
/// checks credentials.
pub struct Auth {
    node: Arc<Node>,
    cache: Mutex<Option<Cached>>,
    /// The brakes on password checks ([`throttle`]).
    throttle: throttle::Throttle,
}

/// A hash no password matches, checked for a name that is not a user so
/// that the answer takes as long as for one that is.
fn unknown_user_hash() -> Result<String> {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(h) = HASH.get() {
        return Ok(h.clone());
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let h = password::hash(&hex_of(&secret))?;
    Ok(HASH.get_or_init(|| h).clone())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// The auth service of `node`.
    pub fn new(node: Arc<Node>) -> Arc<Auth> {
        Arc::new(Auth {
            node,
            cache: Mutex::new(None),
            throttle: throttle::Throttle::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        })
    }

    /// The node this service belongs to.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The state at `at` and the version of its record.
    ///
    /// Called for every client request while the node applies writes, so the
    /// applied seqno has usually moved since the last call: the record's
    /// version is read from the store each time, but outside the cache's
    /// lock (every request of every core takes it), and the record is decoded
    /// only when its version changed.
    fn read_at(&self, at: Seqno) -> Result<(Seqno, Arc<AuthState>)> {
        let cached = {
            let cache = self.lock_cache()?;
            match cache.as_ref() {
                Some(c) if c.checked_at == at => return Ok((c.version, c.state.clone())),
                Some(c) => Some((c.version, c.state.clone())),
                None => None,
            }
        };
        let found = self.node.mvcc().get(&state::state_key(), at)?;
        let version = found.as_ref().map_or(0, |(v, _)| *v);
        let state = match (cached, found) {
            (Some((v, state)), _) if v == version => state,
            (_, Some((_, bytes))) => Arc::new(AuthState::decode(&bytes)?),
            (_, None) => Arc::new(AuthState::default()),
        };
        // Never move the cache back to an older seqno.
        let mut cache = self.lock_cache()?;
        if cache.as_ref().is_none_or(|c| c.checked_at <= at) {
            *cache = Some(Cached {
                checked_at: at,
                version,
                state: state.clone(),
            });
        }
        Ok((version, state))
    }

    fn lock_cache(&self) -> Result<std::sync::MutexGuard<'_, Option<Cached>>> {
        self.cache
            .lock()
            .map_err(|_| Error::Internal("auth cache lock poisoned".into()))
    }

    /// The state at this node's applied seqno.
    pub fn state(&self) -> Result<Arc<AuthState>> {
        Ok(self.read_at(self.node.applied().seqno())?.1)
    }

    /// Applies `change` to the newest state and commits it, retrying from the
    /// new state when a concurrent change committed first. Returns the
    /// commit seqno, or 0 when nothing needed changing.
    pub async fn change(&self, change: Change) -> Result<Seqno> {
        let key = state::state_key();
        for _ in 0..CHANGE_ATTEMPTS {
            let at = self
                .node
                .read_seqno(ReadOptions {
                    consistency: Consistency::Linearizable,
                    snapshot: None,
                })
                .await?;
            let (version, current) = self.read_at(at)?;
            let mut next = (*current).clone();
            let mut changed = state::apply(&mut next, change.clone())?;
            if next.secret.is_empty() {
                next.secret = vec![0; SECRET_BYTES];
                rand::rngs::OsRng.fill_bytes(&mut next.secret);
                changed = true;
            }
            if !changed {
                return Ok(0);
            }
            let mut ws = WriteSet::blind(
                self.node.id(),
                vec![Mutation::Put {
                    key: key.clone(),
                    value: next.encode()?,
                    lease: 0,
                }],
            );
            ws.compares.push(Compare {
                key: key.clone(),
                condition: Condition::Version(version),
            });
            match self.node.commit(ws, false).await {
                Err(Error::Aborted(abort)) if abort.kind() == "compare_failed" => continue,
                other => return other,
            }
        }
        Err(Error::Unavailable(format!(
            "the auth change lost to concurrent changes {CHANGE_ATTEMPTS} times in a row; try again"
        )))
    }

    /// Checks `name` and `password` and returns a token (valid on every
    /// node until it expires, or the user is deleted or its password
    /// changes) and its lifetime in seconds. A wrong name and a wrong
    /// password get the same answer, after the same work (an unknown name is
    /// checked against a hash of nothing). A name no user can have (empty,
    /// over [`state::MAX_NAME_BYTES`], other characters) is INVALID_ARGUMENT
    /// naming the rule. Repeated failures for one name, and too many checks
    /// at once, are refused ([`throttle`]).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<(String, u64)> {
        // A name no user can have is refused before it is remembered
        // anywhere (the throttle's table holds names).
        state::check_name("user", name)?;
        let _turn = self.throttle.enter(name).await?;
        let state = self.state()?;
        let user = state.users.get(name).cloned();
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            let hash = match hash {
                Some(h) => h,
                None => unknown_user_hash()?,
            };
            Ok::<_, Error>(password::verify(&password, &hash))
        })
        .await
        .map_err(|e| Error::Internal(format!("password check: {e}")))??;
        let user = match user {
            Some(user) if ok => user,
            _ => {
                self.throttle.failed(name, std::time::Instant::now());
                return Err(Error::Unauthenticated("wrong user name or password".into()));
            }
        };
        self.throttle.succeeded(name);
        let claims = token::Claims {
            user: name.to_string(),
            revision: user.revision,
            expires: now_secs() + TOKEN_TTL.as_secs(),
        };
        Ok((token::issue(&state.secret, &claims)?, TOKEN_TTL.as_secs()))
    }

    /// Who a client request comes from and what it may do: [`Access::Open`]
    /// while auth is off; otherwise the user of its token (`authorization`
    /// metadata, `Bearer ` optional) or of its client certificate's CN.
    pub fn access(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Access> {
        let state = self.state()?;
        if !state.enabled {
            return Ok(Access::Open);
        }
        let token = headers
            .get("authorization")
            .map(|v| {
                v.to_str()
                    .map(|s| s.strip_prefix("Bearer ").unwrap_or(s).trim().to_string())
                    .map_err(|_| {
                        Error::Unauthenticated("the authorization metadata is not text".into())
                    })
            })
            .transpose()?;
        let name = match (token, identity::certificate_user(extensions)) {
            (Some(token), _) => {
                let claims = token::verify(&state.secret, &token, now_secs())?;
                match state.users.get(&claims.user) {
                    Some(u) if u.revision == claims.revision => claims.user,
                    _ => {
                        return Err(Error::Unauthenticated(format!(
                            "user {:?} was deleted or its password changed after the token was issued: authenticate again",
                            claims.user
                        )))
                    }
                }
            }
            (None, Some(cn)) => {
                if !state.users.contains_key(cn) {
                    return Err(Error::Unauthenticated(format!(
                        "the client certificate's CN {cn:?} names no user"
                    )));
                }
                cn.to_string()
            }
            (None, None) => {
                return Err(Error::Unauthenticated(
                    "auth is enabled and the request has no credentials: authenticate with a user \
                     name and password and send the token in the `authorization` metadata \
                     (trireme --user NAME), or present a client certificate whose CN names a user"
                        .into(),
                ))
            }
        };
        let grants = state
            .grants(&name)
            .ok_or_else(|| Error::Unauthenticated(format!("user {name:?} no longer exists")))?;
        Ok(Access::User { name, grants })
    }
}
