//! `trireme-server certs`: a CA and node and client certificates for a test
//! or a first deployment (like `cockroach cert create-*`).
//!
//! In one directory: `ca.crt` and `ca.key` ([`init`]), `node-<ID>.crt` and
//! `.key` ([`node`]: SAN `node-<ID>.trireme` plus the hosts it is reached
//! at, for both the client and the peer port), `client-<NAME>.crt` and `.key`
//! ([`client`]: CN `NAME`). Keys are ECDSA P-256, written mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::txn::NodeId;

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// Not valid before.
    pub not_before: OffsetDateTime,
    /// Not valid after.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(i64::from(days)),
        }
    }

    /// Ended a day ago (to test that an expired certificate is refused).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        }
    }
}

/// The CA's certificate file in `dir`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

/// The certificate and key files of node `id` in `dir`.
pub fn node_paths(dir: &Path, id: NodeId) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("node-{id}.crt")),
        dir.join(format!("node-{id}.key")),
    )
}

/// The certificate and key files of client `name` in `dir`.
pub fn client_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("client-{name}.crt")),
        dir.join(format!("client-{name}.key")),
    )
}

fn cert_error(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Internal(format!("making {what}: {e}"))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn params(names: Vec<String>, cn: &str, validity: Validity) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(names).map_err(cert_error("certificate parameters"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Trireme");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = validity.not_before;
    p.not_after = validity.not_after;
    p.serial_number = Some(random_serial());
    Ok(p)
}

/// Writes `contents` to `path` through a temporary file; `secret` files
/// are created mode 0600.
fn write(path: &Path, contents: &str, secret: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| Error::Storage(format!("writing {}: {e}", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Makes a CA in `dir` (created if missing): `ca.crt` and `ca.key`. Refuses
/// to replace an existing CA (every certificate it signed would stop working).
pub fn init(dir: &Path, validity: Validity) -> Result<PathBuf> {
    let cert_path = ca_cert_path(dir);
    let key_path = dir.join("ca.key");
    if cert_path.exists() || key_path.exists() {
        return Err(Error::InvalidInput(format!(
            "{} already holds a CA (ca.crt or ca.key): not replaced",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
    // A CA's name is unique: two CAs with one subject are told apart only
    // by signature ("BadSignature" instead of "UnknownIssuer" in errors).
    let tag: u32 = rand::random();
    let mut p = params(Vec::new(), &format!("Trireme CA {tag:08x}"), validity)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(cert_error("the CA key"))?;
    let cert = p.self_signed(&key).map_err(cert_error("the CA"))?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok(cert_path)
}

/// The CA of `dir`, to sign with.
fn load_ca(dir: &Path) -> Result<(Certificate, KeyPair)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read {} (make a CA first: trireme-server certs init {}): {e}",
                path.display(),
                dir.display()
            ))
        })
    };
    let key = KeyPair::from_pem(&read("ca.key")?).map_err(|e| {
        Error::InvalidInput(format!("{}/ca.key: not a usable key: {e}", dir.display()))
    })?;
    let params = CertificateParams::from_ca_cert_pem(&read("ca.crt")?).map_err(|e| {
        Error::InvalidInput(format!(
            "{}/ca.crt: not a usable CA certificate: {e}",
            dir.display()
        ))
    })?;
    // The same subject and key as ca.crt: what a signature needs of its issuer.
    let cert = params.self_signed(&key).map_err(cert_error("the CA"))?;
    Ok((cert, key))
}

fn issue(
    dir: &Path,
    mut p: CertificateParams,
    (cert_path, key_path): (PathBuf, PathBuf),
) -> Result<(PathBuf, PathBuf)> {
    let (ca, ca_key) = load_ca(dir)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().map_err(cert_error("a key"))?;
    let cert = p
        .signed_by(&key, &ca, &ca_key)
        .map_err(cert_error("a certificate"))?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Makes (or replaces) node `id`'s certificate in `dir`, signed by its CA:
/// SAN `node-<ID>.trireme` and `hosts` (names or IP addresses; by default
/// `localhost` and `127.0.0.1`), good for serving and for calling peers.
pub fn node(
    dir: &Path,
    id: NodeId,
    hosts: &[String],
    validity: Validity,
) -> Result<(PathBuf, PathBuf)> {
    if id == 0 {
        return Err(Error::InvalidInput("node id 0 is not valid".into()));
    }
    let mut names = vec![super::node_dns_name(id)];
    if hosts.is_empty() {
        names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    } else {
        names.extend(hosts.iter().cloned());
    }
    let mut p = params(names, &format!("node {id}"), validity)?;
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(dir, p, node_paths(dir, id))
}

/// Makes (or replaces) client `name`'s certificate in `dir`, signed by its
/// CA, with CN `name` (the user it authenticates as).
pub fn client(dir: &Path, name: &str, validity: Validity) -> Result<(PathBuf, PathBuf)> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(Error::InvalidInput(format!(
            "client name {name:?}: use letters, digits and - _ . @ (it becomes a file name)"
        )));
    }
    let mut p = params(Vec::new(), name, validity)?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, p, client_paths(dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_its_id_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), Validity::days(1)).expect("init");
        let again = init(dir.path(), Validity::days(1)).unwrap_err().to_string();
        assert!(again.contains("already holds a CA"), "{again}");
        let (cert, key) = node(dir.path(), 3, &[], Validity::days(1)).expect("node");
        let chain = crate::tls::chain("cert", &cert).expect("pem");
        let parsed = crate::tls::PeerCert::parse(&chain[0]).expect("parse");
        assert_eq!(parsed.node_id, Some(3));
        assert_eq!(parsed.dns_names, vec!["node-3.trireme", "localhost"]);
        assert_eq!(parsed.common_name.as_deref(), Some("node 3"));
        for k in [key, dir.path().join("ca.key")] {
            let mode = std::fs::metadata(&k).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", k.display());
        }
        let (cert, _) = client(dir.path(), "alice", Validity::days(1)).expect("client");
        let chain = crate::tls::chain("cert", &cert).expect("pem");
        let parsed = crate::tls::PeerCert::parse(&chain[0]).expect("parse");
        assert_eq!(parsed.common_name.as_deref(), Some("alice"));
        assert_eq!(parsed.node_id, None);
        assert!(client(dir.path(), "../x", Validity::days(1)).is_err());
    }
}
