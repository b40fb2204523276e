//! TLS on the client listener: a certificate chain and its private key, read from PEM files,
//! become the acceptor every worker uses. Only the client side is encrypted; backend
//! connections stay plain inside the cluster's network.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the listener's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why TLS could not be set up; names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and key do not make a server configuration (a key that does not match
    /// the certificate, say).
    #[error("the certificate and key cannot be used together: {0}")]
    Config(String),
}

/// Builds the acceptor from `files`.
///
/// # Errors
/// [`TlsError`] naming the file or the mismatch.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| file_error(&files.cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(&files.cert_file, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| file_error(&files.key_file, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
