//! The client-certificate path: a request whose TLS connection presented a
//! certificate (with client-cert auth on) is the user named by the
//! certificate's CN.
//!
//! The TLS listener puts a [`ClientIdentity`] in each request's extensions;
//! until that listener exists this module defines the type it is to insert,
//! and [`certificate_user`] is the one place that reads it.

/// What the TLS layer learned about the client from its certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate subject's common name, if it has one.
    pub common_name: Option<String>,
}

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
