//! TLS to the brokers and to PostgreSQL: the server's certificate is checked against the CA
//! certificates of `--ca-file`, or the system's trust roots without it, and its name against
//! the host connected to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why the trust roots cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    /// The CA file, or "system trust store".
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The certificates in the PEM file at `path` (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |message: String| TlsError {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| failed(format!("failed to read certificates: {error}")))?;
    if certs.is_empty() {
        return Err(failed("no certificate in file".into()));
    }
    Ok(certs)
}

/// The client configuration that trusts the CA certificates in `ca_file`, or the system's.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|error| TlsError {
                    path: path.to_path_buf(),
                    message: error.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "failed to load a system trust root");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsError {
                    path: PathBuf::from("system trust store"),
                    message: "no usable CA certificate found; give --ca-file".into(),
                });
            }
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The CA file's certificates as PEM text, checked, for clients that take them so (AMQP).
pub fn ca_chain(ca_file: &Path) -> Result<String, TlsError> {
    read_certs(ca_file)?;
    std::fs::read_to_string(ca_file).map_err(|error| TlsError {
        path: ca_file.to_path_buf(),
        message: format!("failed to read certificates: {error}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = client_config(Some(&path)).unwrap_err();
        assert_eq!(error.path, path);
        assert!(
            error.to_string().contains("no certificate in file"),
            "{error}"
        );
        let missing = dir.path().join("missing.pem");
        let error = client_config(Some(&missing)).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        assert!(ca_chain(&path).is_err());
    }
}
