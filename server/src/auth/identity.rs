//! The client-certificate path: a request whose TLS connection presented a
//! certificate the cluster CA verified is the user named by the
//! certificate's CN (with `--client-cert-auth` every client must present
//! one; with only `--tls-ca` a client may).
//!
//! The TLS listener (`crate::tls`) puts a [`ClientIdentity`] in each such
//! request's extensions; [`certificate_user`] is the one place that reads it.

pub use crate::tls::ClientIdentity;

/// The user a request's client certificate names, if any.
pub fn certificate_user(extensions: &http::Extensions) -> Option<&str> {
    extensions
        .get::<ClientIdentity>()?
        .common_name
        .as_deref()
        .filter(|cn| !cn.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_the_user() {
        let mut ext = http::Extensions::new();
        assert_eq!(certificate_user(&ext), None);
        ext.insert(ClientIdentity { common_name: None });
        assert_eq!(certificate_user(&ext), None);
        ext.insert(ClientIdentity {
            common_name: Some(String::new()),
        });
        assert_eq!(certificate_user(&ext), None);
        ext.insert(ClientIdentity {
            common_name: Some("alice".into()),
        });
        assert_eq!(certificate_user(&ext), Some("alice"));
    }
}
