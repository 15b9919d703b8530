//! TLS on the device endpoint (`devices.tls`): the gateway's certificate and key, and, with
//! `client_ca_file`, the CA that devices' client certificates must chain to.
//!
//! The files are read at start and again on [`DeviceTls::reload`] (SIGHUP, `POST /reload`): a
//! handshake uses the configuration current when it starts, so connections already open keep
//! theirs, and a reload that fails keeps the previous one. A device's login by certificate is
//! the certificate's subject common name, or, without one, its first DNS name
//! ([`certificate_name`]). When the endpoint also has password logins (`devices.users`), a
//! certificate is optional: a device without one logs in with its password.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::DeviceTls as DeviceTlsConfig;

/// Why the device endpoint's TLS files cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("devices.tls: {}: {message}", path.display())]
pub struct DeviceTlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The device endpoint's TLS configuration, replaceable while connections use it.
#[derive(Debug)]
pub struct DeviceTls {
    files: DeviceTlsConfig,
    /// Devices may also connect without a certificate (and log in with a password).
    certificate_optional: bool,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl DeviceTls {
    /// Reads the files of `files`; with `certificate_optional`, a device need not present a
    /// client certificate (it logs in with a password).
    pub fn load(
        files: &DeviceTlsConfig,
        certificate_optional: bool,
    ) -> Result<Self, DeviceTlsError> {
        Ok(Self {
            current: RwLock::new(server_config(files, certificate_optional)?),
            files: files.clone(),
            certificate_optional,
        })
    }

    /// Reads the files again; the new certificate is used from the next handshake on. On an
    /// error the running configuration stays.
    pub fn reload(&self) -> Result<(), DeviceTlsError> {
        let config = server_config(&self.files, self.certificate_optional)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    /// What the next handshake uses.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio_rustls::TlsAcceptor::from(Arc::clone(&config))
    }

    /// Whether devices log in by client certificate.
    pub fn client_certificates(&self) -> bool {
        self.files.client_ca_file.is_some()
    }
}

fn failed(path: &Path, message: impl Into<String>) -> DeviceTlsError {
    DeviceTlsError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, DeviceTlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| failed(path, format!("failed to read certificates: {error}")))?;
    if certs.is_empty() {
        return Err(failed(path, "no certificate in file"));
    }
    Ok(certs)
}

fn server_config(
    files: &DeviceTlsConfig,
    certificate_optional: bool,
) -> Result<Arc<rustls::ServerConfig>, DeviceTlsError> {
    let chain = read_certs(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|error| failed(&files.key_file, format!("no usable private key: {error}")))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &files.client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|error| failed(path, error.to_string()))?;
            }
            // A certificate of this CA is the device's login.
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if certificate_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            }
            .build()
            .map_err(|error| failed(path, error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|error| failed(&files.cert_file, format!("does not match the key: {error}")))?;
    Ok(Arc::new(config))
}

/// The login a verified client certificate stands for: its subject's common name, or, when it
/// has none, its first DNS subject alternative name. `None` when it has neither (or cannot be
/// parsed).
pub(super) fn certificate_name(certificate: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_owned);
    common_name.filter(|name| !name.is_empty()).or_else(|| {
        let alternative = parsed.subject_alternative_name().ok().flatten()?;
        alternative
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_mismatched_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem\n").unwrap();
        let files = DeviceTlsConfig {
            cert_file: junk.clone(),
            key_file: dir.path().join("missing.key"),
            client_ca_file: None,
        };
        let error = DeviceTls::load(&files, false).unwrap_err();
        assert_eq!(error.path, junk);
        assert!(
            error.to_string().contains("no certificate in file"),
            "{error}"
        );
        assert!(certificate_name(b"not a certificate").is_none());
    }
}
