//! Permissions: what a role may read or write, over a key, a prefix or a
//! range, and the checks a request's keys and ranges go through.
//!
//! A range read (a scan, a watch over a prefix or range, a transaction's
//! scanned range) is allowed only when the permitted ranges together cover
//! all of it: a scan that straddles the end of a permission is refused, not
//! cut short, so that a client never mistakes a partial answer for the
//! whole.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::txn::{prefix_end, reserved, KeyRange};

/// What a permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Get, scan, watch, and read or compare in a transaction.
    Read,
    /// Everything `Read` allows, and put, delete and transaction writes.
    ReadWrite,
}

impl Kind {
    /// Whether a permission of this kind allows `wanted`.
    pub fn allows(self, wanted: Kind) -> bool {
        self == Kind::ReadWrite || wanted == Kind::Read
    }

    /// The name operators use (`read`, `readwrite`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::ReadWrite => "readwrite",
        }
    }
}

/// The keys a permission covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// One key.
    Key(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Every key that begins with this prefix (empty: every key).
    Prefix(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The keys in `[start, end)`.
    Range {
        /// First key.
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        /// First key after the range.
        #[serde(with = "serde_bytes")]
        end: Vec<u8>,
    },
}

impl Scope {
    /// A scope from its wire form: `range_end` non-empty is a range, else a
    /// prefix when `prefix`, else one key. Refuses empty and reserved keys and
    /// empty ranges.
    pub fn parse(key: Vec<u8>, range_end: Vec<u8>, prefix: bool) -> Result<Scope> {
        if !range_end.is_empty() && prefix {
            return Err(Error::InvalidInput(
                "a permission is over a key, a prefix or a range, not both a prefix and a range"
                    .into(),
            ));
        }
        if reserved::is_reserved(&key) {
            return Err(Error::InvalidInput(
                "a permission cannot name a key beginning with 0xFF 0xFF (reserved)".into(),
            ));
        }
        if !range_end.is_empty() {
            if range_end <= key {
                return Err(Error::InvalidInput(format!(
                    "permission range end {} is not after its start {}",
                    show(&range_end),
                    show(&key)
                )));
            }
            return Ok(Scope::Range {
                start: key,
                end: range_end,
            });
        }
        if prefix {
            return Ok(Scope::Prefix(key));
        }
        if key.is_empty() {
            return Err(Error::InvalidInput(
                "a permission needs a key, a prefix or a range (the key is empty)".into(),
            ));
        }
        Ok(Scope::Key(key))
    }

    /// The half-open range of keys the scope covers.
    pub fn range(&self) -> KeyRange {
        match self {
            Scope::Key(k) => {
                let mut end = k.clone();
                end.push(0);
                KeyRange {
                    start: k.clone(),
                    end: Some(end),
                }
            }
            Scope::Prefix(p) => KeyRange {
                start: p.clone(),
                end: prefix_end(p),
            },
            Scope::Range { start, end } => KeyRange {
                start: start.clone(),
                end: Some(end.clone()),
            },
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Key(k) => write!(f, "key {}", show(k)),
            Scope::Prefix(p) => write!(f, "prefix {}", show(p)),
            Scope::Range { start, end } => write!(f, "range [{}, {})", show(start), show(end)),
        }
    }
}

/// A kind of access over a scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub kind: Kind,
    /// Over which keys.
    pub scope: Scope,
}

/// A key for an error message: quoted text when printable, hex otherwise.
pub fn show(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!(
            "0x{}",
            key.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn show_range(range: &KeyRange) -> String {
    match &range.end {
        Some(end) => format!("[{}, {})", show(&range.start), show(end)),
        None => format!("[{}, end of key space)", show(&range.start)),
    }
}

/// What a user may do: the union of its roles' permissions, or everything
/// (the role `root`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Holds the role `root`.
    pub root: bool,
    /// The permissions of its other roles.
    pub permissions: Vec<Permission>,
}

impl Grants {
    fn denied(&self, user: &str, kind: Kind, what: String) -> Error {
        Error::PermissionDenied(format!(
            "user {user:?} lacks {} permission on {what}",
            kind.as_str()
        ))
    }

    /// Checks `kind` access to one key.
    pub fn check_key(&self, user: &str, kind: Kind, key: &[u8]) -> Result<()> {
        if self.root
            || self
                .permissions
                .iter()
                .any(|p| p.kind.allows(kind) && p.scope.range().contains(key))
        {
            return Ok(());
        }
        Err(self.denied(user, kind, format!("key {}", show(key))))
    }

    /// Checks `kind` access to every key of `range`: the permitted ranges
    /// together must cover it, or the error names the first key left out.
    pub fn check_range(&self, user: &str, kind: Kind, range: &KeyRange) -> Result<()> {
        if self.root {
            return Ok(());
        }
        let mut covering: Vec<KeyRange> = self
            .permissions
            .iter()
            .filter(|p| p.kind.allows(kind))
            .map(|p| p.scope.range())
            .collect();
        covering.sort();
        // Sweep: `at` is the first key not yet known to be covered.
        let mut at = range.start.clone();
        loop {
            if range.end.as_deref().is_some_and(|end| at.as_slice() >= end) {
                return Ok(());
            }
            let next = covering
                .iter()
                .filter(|r| r.contains(&at))
                .map(|r| r.end.clone())
                .max_by(|a, b| match (a, b) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, _) => std::cmp::Ordering::Greater,
                    (_, None) => std::cmp::Ordering::Less,
                    (Some(a), Some(b)) => a.cmp(b),
                });
            match next {
                Some(None) => return Ok(()),
                Some(Some(end)) => at = end,
                None => {
                    return Err(self.denied(
                        user,
                        kind,
                        format!(
                            "range {} (key {} is not covered)",
                            show_range(range),
                            show(&at)
                        ),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(perms: &[(Kind, Scope)]) -> Grants {
        Grants {
            root: false,
            permissions: perms
                .iter()
                .map(|(kind, scope)| Permission {
                    kind: *kind,
                    scope: scope.clone(),
                })
                .collect(),
        }
    }

    fn range(start: &[u8], end: &[u8]) -> KeyRange {
        KeyRange {
            start: start.to_vec(),
            end: Some(end.to_vec()),
        }
    }

    #[test]
    fn a_key_permission_covers_that_key_only() {
        let g = grants(&[(Kind::Read, Scope::Key(b"a".to_vec()))]);
        g.check_key("u", Kind::Read, b"a").unwrap();
        for other in [&b"a\0"[..], b"ab", b"", b"b"] {
            let err = g.check_key("u", Kind::Read, other).unwrap_err();
            assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
        }
        let err = g.check_key("u", Kind::ReadWrite, b"a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "permission denied: user \"u\" lacks readwrite permission on key \"a\""
        );
        // The range of exactly that key is covered; one more key is not.
        g.check_range("u", Kind::Read, &range(b"a", b"a\0"))
            .unwrap();
        assert!(g
            .check_range("u", Kind::Read, &range(b"a", b"a\x01"))
            .is_err());
    }

    #[test]
    fn a_prefix_covers_its_keys_and_readwrite_implies_read() {
        let g = grants(&[(Kind::ReadWrite, Scope::Prefix(b"app/".to_vec()))]);
        g.check_key("u", Kind::ReadWrite, b"app/x").unwrap();
        g.check_key("u", Kind::Read, b"app/").unwrap();
        assert!(g.check_key("u", Kind::Read, b"app").is_err());
        assert!(g.check_key("u", Kind::Read, b"app0").is_err());
        g.check_range("u", Kind::Read, &KeyRange::prefix(b"app/"))
            .unwrap();
        g.check_range("u", Kind::Read, &KeyRange::prefix(b"app/sub/"))
            .unwrap();
        // The whole (clipped) key space is not covered by one prefix.
        assert!(g
            .check_range("u", Kind::Read, &range(b"", reserved::PREFIX))
            .is_err());
        // An empty prefix is every key.
        let all = grants(&[(Kind::Read, Scope::Prefix(Vec::new()))]);
        all.check_range("u", Kind::Read, &range(b"", reserved::PREFIX))
            .unwrap();
        assert!(all.check_key("u", Kind::ReadWrite, b"k").is_err());
    }

    #[test]
    fn a_range_read_straddling_a_permission_boundary_is_refused() {
        let g = grants(&[(
            Kind::Read,
            Scope::Range {
                start: b"b".to_vec(),
                end: b"d".to_vec(),
            },
        )]);
        g.check_range("u", Kind::Read, &range(b"b", b"d")).unwrap();
        g.check_range("u", Kind::Read, &range(b"bb", b"c")).unwrap();
        let err = g
            .check_range("u", Kind::Read, &range(b"c", b"e"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "permission denied: user \"u\" lacks read permission on range [\"c\", \"e\") \
             (key \"d\" is not covered)"
        );
        let err = g
            .check_range("u", Kind::Read, &range(b"a", b"c"))
            .unwrap_err();
        assert!(
            err.to_string().contains("key \"a\" is not covered"),
            "{err}"
        );
        // An unbounded range is never covered by bounded permissions.
        let unbounded = KeyRange {
            start: b"b".to_vec(),
            end: None,
        };
        assert!(g.check_range("u", Kind::Read, &unbounded).is_err());
    }

    #[test]
    fn adjacent_and_overlapping_permissions_cover_together() {
        let g = grants(&[
            (
                Kind::Read,
                Scope::Range {
                    start: b"a".to_vec(),
                    end: b"c".to_vec(),
                },
            ),
            (Kind::ReadWrite, Scope::Prefix(b"c".to_vec())),
            (
                Kind::Read,
                Scope::Range {
                    start: b"b".to_vec(),
                    end: b"e".to_vec(),
                },
            ),
        ]);
        g.check_range("u", Kind::Read, &range(b"a", b"e")).unwrap();
        // Writes: only the prefix "c" is writable.
        g.check_range("u", Kind::ReadWrite, &KeyRange::prefix(b"c"))
            .unwrap();
        assert!(g
            .check_range("u", Kind::ReadWrite, &range(b"b", b"d"))
            .is_err());
        // A gap between two permissions is found.
        let gap = grants(&[
            (Kind::Read, Scope::Key(b"a".to_vec())),
            (Kind::Read, Scope::Key(b"b".to_vec())),
        ]);
        let err = gap
            .check_range("u", Kind::Read, &range(b"a", b"b\0"))
            .unwrap_err();
        assert!(
            err.to_string().contains("key 0x6100 is not covered"),
            "{err}"
        );
    }

    #[test]
    fn root_may_do_everything_and_nothing_grants_nothing() {
        let root = Grants {
            root: true,
            permissions: Vec::new(),
        };
        root.check_key("root", Kind::ReadWrite, b"x").unwrap();
        root.check_range(
            "root",
            Kind::ReadWrite,
            &KeyRange {
                start: Vec::new(),
                end: None,
            },
        )
        .unwrap();
        let none = Grants::default();
        assert!(none.check_key("u", Kind::Read, b"x").is_err());
        assert!(none
            .check_range("u", Kind::Read, &range(b"x", b"y"))
            .is_err());
    }

    #[test]
    fn scopes_parse_from_the_wire_form() {
        assert_eq!(
            Scope::parse(b"k".to_vec(), Vec::new(), false).unwrap(),
            Scope::Key(b"k".to_vec())
        );
        assert_eq!(
            Scope::parse(b"p/".to_vec(), Vec::new(), true).unwrap(),
            Scope::Prefix(b"p/".to_vec())
        );
        assert!(Scope::parse(b"b".to_vec(), b"a".to_vec(), false).is_err());
        assert!(Scope::parse(b"a".to_vec(), b"b".to_vec(), true).is_err());
        assert!(Scope::parse(Vec::new(), Vec::new(), false).is_err());
        let err = Scope::parse(reserved::system_key(b"auth/", b""), Vec::new(), true).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
