//! Tokens: `USER:REVISION:EXPIRY:MAC`, where the MAC is HMAC-SHA256 with the
//! cluster's secret (from the replicated auth state) over the first three
//! fields. Every node holds the secret, so a token issued by one node is
//! accepted by every other and survives leader changes; the expiry (Unix
//! seconds) bounds its life, and the revision ties it to the user's password.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The fields a valid token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub user: String,
    /// The user's revision when the token was issued.
    pub revision: u64,
    /// Unix seconds after which it is refused.
    pub expires: u64,
}

fn mac(secret: &[u8], body: &str) -> Result<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|e| Error::Internal(format!("token key: {e}")))?;
    mac.update(body.as_bytes());
    Ok(mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signs `claims` with `secret`.
pub fn issue(secret: &[u8], claims: &Claims) -> Result<String> {
    let body = format!("{}:{}:{}", claims.user, claims.revision, claims.expires);
    let tag = mac(secret, &body)?.finalize().into_bytes();
    Ok(format!("{body}:{}", hex(&tag)))
}

fn invalid() -> Error {
    Error::Unauthenticated(
        "the token is not valid (malformed, or not signed by this cluster)".into(),
    )
}

/// The claims of `token` if `secret` signed it and it has not expired at `now`
/// (Unix seconds). Whether its user and revision are still current is the
/// caller's check.
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Claims> {
    let (body, tag) = token.rsplit_once(':').ok_or_else(invalid)?;
    let tag = unhex(tag).ok_or_else(invalid)?;
    mac(secret, body)?
        .verify_slice(&tag)
        .map_err(|_| invalid())?;
    let mut fields = body.split(':');
    let (Some(user), Some(revision), Some(expires), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid());
    };
    let claims = Claims {
        user: user.to_string(),
        revision: revision.parse().map_err(|_| invalid())?,
        expires: expires.parse().map_err(|_| invalid())?,
    };
    if claims.expires <= now {
        return Err(Error::Unauthenticated(format!(
            "the token of user {:?} has expired: authenticate again",
            claims.user
        )));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_secret_until_it_expires() {
        let claims = Claims {
            user: "alice".into(),
            revision: 7,
            expires: 1000,
        };
        let token = issue(b"secret", &claims).unwrap();
        assert!(token.starts_with("alice:7:1000:"), "{token}");
        assert_eq!(verify(b"secret", &token, 999).unwrap(), claims);
        let err = verify(b"secret", &token, 1000).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        // Another cluster's secret, or any edited field, is refused.
        assert!(verify(b"other", &token, 0).is_err());
        let forged = token.replacen("alice:7:1000", "alice:7:9999", 1);
        assert!(verify(b"secret", &forged, 0).is_err());
        let forged = token.replacen("alice", "root", 1);
        assert!(verify(b"secret", &forged, 0).is_err());
        for junk in ["", ":", "a:b", "alice:7:1000:zz", "a:b:c:d:e"] {
            let err = verify(b"secret", junk, 0).unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)), "{junk}: {err}");
        }
    }
}
