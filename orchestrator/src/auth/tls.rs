//! TLS settings from PEM files: mutual TLS between peers on the Raft port (every peer
//! presents a certificate signed by the cluster's CA and accepts only such peers), and
//! optional server TLS on port 3000. Files are read and checked at start, so a missing
//! or malformed file stops the peer with one line naming it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ApiTlsConfig, RaftTlsConfig};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {message}")]
    File { what: &'static str, path: String, message: String },
    #[error("TLS settings: {0}")]
    Config(String),
}

/// Makes rustls use *ring* (the only provider built in), once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::File { what, path: path.display().to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::File {
        what: "private key",
        path: path.display().to_string(),
        message: format!("holds no PEM private key: {e}"),
    })
}

/// Both sides of the peers' mutual TLS.
#[derive(Clone)]
pub struct RaftTls {
    /// Requires a client certificate signed by the CA: a connection without one is
    /// dropped during the handshake, before any RPC.
    pub server: ServerTlsConfig,
    /// Presents this peer's certificate; trusts only servers the CA signed.
    pub client: ClientTlsConfig,
}

/// Loads and checks `[tls.raft]`.
pub fn raft_tls(cfg: &RaftTlsConfig) -> Result<RaftTls, TlsError> {
    let ca = read("CA certificate", &cfg.ca_file)?;
    let cert = read("certificate", &cfg.cert_file)?;
    let key = read("private key", &cfg.key_file)?;
    certificates("CA certificate", &cfg.ca_file, &ca)?;
    certificates("certificate", &cfg.cert_file, &cert)?;
    private_key(&cfg.key_file, &key)?;
    let identity = Identity::from_pem(&cert, &key);
    let ca = Certificate::from_pem(&ca);
    Ok(RaftTls {
        server: ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone()),
        client: ClientTlsConfig::new().ca_certificate(ca).identity(identity),
    })
}

/// The rustls server config of port 3000 (`[tls.api]`), offering HTTP/2 (gRPC) and
/// HTTP/1.1.
pub fn api_server_config(cfg: &ApiTlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert = read("certificate", &cfg.cert_file)?;
    let key = read("private key", &cfg.key_file)?;
    let chain = certificates("certificate", &cfg.cert_file, &cert)?;
    let key = private_key(&cfg.key_file, &key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate {} and its key: {e}", cfg.cert_file.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
