//! The cluster's certificate authority and its peers' certificates, for mutual TLS on
//! the Raft port (and, optionally, TLS on port 3000).
//!
//! One CA per cluster signs one certificate per node. A node certificate names the
//! node's addresses (IPs and DNS names) in its subject alternative names and serves
//! both sides of a connection (server and client authentication). The CA's subject is
//! derived from the cluster name alone, so more node certificates can be signed later
//! from the CA's key ([`CertAuthority::from_key_pem`]), for a node that joins.
//!
//! Files ([`write_files`]): `ca.crt`, `ca.key`, `node-<id>.crt`, `node-<id>.key`;
//! keys are written mode 0600 and nothing is overwritten.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate for {what}: {message}")]
    Generate { what: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("node `{0}`: expected ID=ADDRESS[,ADDRESS...] (e.g. 1=10.0.1.11,db1.internal)")]
    NodeSpec(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A node to certify: its Raft id and the addresses peers reach it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: u64,
    pub names: Vec<String>,
}

impl std::str::FromStr for NodeSpec {
    type Err = CertError;

    /// `ID=ADDRESS[,ADDRESS...]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CertError::NodeSpec(s.chars().take(80).collect());
        let (id, names) = s.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(bad)?;
        let names: Vec<String> =
            names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            return Err(bad());
        }
        Ok(NodeSpec { id, names })
    }
}

fn generate_error(what: &str, e: impl std::fmt::Display) -> CertError {
    CertError::Generate { what: what.to_string(), message: e.to_string() }
}

/// How long a CA certificate is valid.
const CA_DAYS: i64 = 3650;

fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "orchestrator");
    dn.push(DnType::CommonName, format!("orchestrator CA {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = rcgen::date_time_ymd(2000, 1, 1);
    params.not_before = time_now().unwrap_or(now) - time::Duration::days(1);
    params.not_after = params.not_before + time::Duration::days(CA_DAYS);
    params
}

fn time_now() -> Option<time::OffsetDateTime> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).ok()
}

/// The cluster's CA: signs node certificates.
pub struct CertAuthority {
    cluster: String,
    key: KeyPair,
    cert_pem: Option<String>,
}

impl CertAuthority {
    /// A new CA for `cluster`.
    pub fn generate(cluster: &str) -> Result<CertAuthority, CertError> {
        let key = KeyPair::generate().map_err(|e| generate_error("the CA", e))?;
        let cert = ca_params(cluster).self_signed(&key).map_err(|e| generate_error("the CA", e))?;
        Ok(CertAuthority { cluster: cluster.to_string(), key, cert_pem: Some(cert.pem()) })
    }

    /// The CA of `cluster` from its key, to sign more node certificates.
    pub fn from_key_pem(cluster: &str, key_pem: &str) -> Result<CertAuthority, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| generate_error("the CA key", e))?;
        Ok(CertAuthority { cluster: cluster.to_string(), key, cert_pem: None })
    }

    /// The CA's certificate and key (the certificate only for a freshly made CA).
    pub fn pem(&self) -> Option<Pem> {
        self.cert_pem.as_ref().map(|cert| Pem { cert: cert.clone(), key: self.key.serialize_pem() })
    }

    /// A certificate for `node`, valid `days` days, for server and client use.
    pub fn node(&self, node: &NodeSpec, days: i64) -> Result<Pem, CertError> {
        let what = format!("node {}", node.id);
        let mut params = CertificateParams::new(node.names.clone()).map_err(|e| generate_error(&what, e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "orchestrator");
        dn.push(DnType::CommonName, format!("orchestrator peer {} of {}", node.id, self.cluster));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        // Valid from a day back (a peer whose clock is behind still accepts it) to
        // `days` days from now: counted from the backdated start, a 1-day certificate
        // expired the moment it was made.
        let now = time_now().unwrap_or(params.not_before);
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days.max(1));
        let key = KeyPair::generate().map_err(|e| generate_error(&what, e))?;
        let issuer = Issuer::new(ca_params(&self.cluster), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(|e| generate_error(&what, e))?;
        Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
    }
}

/// Writes `text` to a new file (never over an existing one), mode 0600 when `secret`.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_error =
        |e: std::io::Error| CertError::Write { path: path.to_path_buf(), message: e.to_string() };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(write_error)?;
    f.write_all(text.as_bytes()).map_err(write_error)
}

/// The files of one node in `dir`.
pub fn node_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    (dir.join(format!("node-{id}.crt")), dir.join(format!("node-{id}.key")))
}

/// Makes what `nodes` need in `dir`: with `ca_key` (an existing CA's key PEM) only the
/// node certificates, else a new CA too (`ca.crt`, `ca.key`). Returns the files written.
pub fn write_files(
    dir: &Path,
    cluster: &str,
    nodes: &[NodeSpec],
    days: i64,
    ca_key: Option<&str>,
) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CertError::Write { path: dir.to_path_buf(), message: e.to_string() })?;
    let ca = match ca_key {
        Some(pem) => CertAuthority::from_key_pem(cluster, pem)?,
        None => CertAuthority::generate(cluster)?,
    };
    let mut written = Vec::new();
    if let Some(pem) = ca.pem() {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        write_new(&cert, &pem.cert, false)?;
        write_new(&key, &pem.key, true)?;
        written.extend([cert, key]);
    }
    for node in nodes {
        let pem = ca.node(node, days)?;
        let (cert, key) = node_files(dir, node.id);
        write_new(&cert, &pem.cert, false)?;
        write_new(&key, &pem.key, true)?;
        written.extend([cert, key]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn verify(ca_pem: &str, node_pem: &str, name: &str) -> Result<(), rustls::Error> {
        verify_at(ca_pem, node_pem, name, UnixTime::now())
    }

    fn verify_at(ca_pem: &str, node_pem: &str, name: &str, at: UnixTime) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let cert = CertificateDer::from_pem_slice(node_pem.as_bytes()).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &ServerName::try_from(name.to_string()).unwrap(), &[], at)
            .map(|_| ())
    }

    #[test]
    fn node_certificates_chain_to_their_ca_only() {
        let ca = CertAuthority::generate("main").unwrap();
        let node: NodeSpec = "2=127.0.1.2,db2.internal".parse().unwrap();
        let pem = ca.node(&node, 30).unwrap();
        let ca_pem = ca.pem().unwrap().cert;
        verify(&ca_pem, &pem.cert, "127.0.1.2").unwrap();
        verify(&ca_pem, &pem.cert, "db2.internal").unwrap();
        assert!(verify(&ca_pem, &pem.cert, "127.0.1.3").is_err(), "another address");
        let other = CertAuthority::generate("main").unwrap().pem().unwrap().cert;
        assert!(verify(&other, &pem.cert, "127.0.1.2").is_err(), "another CA of the same name");
        // Signed later from the CA's key alone: still chains to the same CA.
        let again = CertAuthority::from_key_pem("main", &ca.pem().unwrap().key).unwrap();
        let later = again.node(&"4=127.0.1.4".parse().unwrap(), 30).unwrap();
        verify(&ca_pem, &later.cert, "127.0.1.4").unwrap();
    }

    #[test]
    fn a_node_certificate_is_valid_for_the_days_asked_from_now() {
        let ca = CertAuthority::generate("main").unwrap();
        let pem = ca.node(&"2=127.0.1.2".parse().unwrap(), 1).unwrap();
        let ca_pem = ca.pem().unwrap().cert;
        let at = |from_now_s: i64| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.saturating_add_signed(from_now_s)))
        };
        verify_at(&ca_pem, &pem.cert, "127.0.1.2", at(-3600)).expect("a clock an hour behind");
        verify_at(&ca_pem, &pem.cert, "127.0.1.2", at(23 * 3600)).expect("valid for the day asked");
        assert!(verify_at(&ca_pem, &pem.cert, "127.0.1.2", at(25 * 3600)).is_err(), "expired after it");
    }

    #[test]
    fn files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<NodeSpec> = vec!["1=127.0.1.1".parse().unwrap(), "2=127.0.1.2".parse().unwrap()];
        let written = write_files(dir.path(), "main", &nodes, 30, None).unwrap();
        assert_eq!(written.len(), 6);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&node_files(dir.path(), 2).1), 0o600);
        let e = write_files(dir.path(), "main", &nodes, 30, None).unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
    }

    #[test]
    fn node_specs_parse() {
        assert_eq!(
            "3=10.0.0.3".parse::<NodeSpec>().unwrap(),
            NodeSpec { id: 3, names: vec!["10.0.0.3".into()] }
        );
        for bad in ["3", "0=a", "x=a", "3="] {
            assert!(bad.parse::<NodeSpec>().is_err(), "{bad}");
        }
    }
}
