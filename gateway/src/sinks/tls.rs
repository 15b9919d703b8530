//! TLS client settings for uplinks (`mqtts://`, `tls://`, `amqps://`, Kafka with `tls`): trust
//! roots from `ca_file` (or the system's), and an optional client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::SinkError;
use crate::config::UplinkConfig;

/// Builds the rustls client configuration the uplink connects with.
pub(crate) fn client_config(uplink: &UplinkConfig) -> Result<Arc<rustls::ClientConfig>, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    match &uplink.ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|error| SinkError::Tls {
                    path: path.clone(),
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
                return Err(SinkError::Tls {
                    path: PathBuf::from("system trust store"),
                    message: "no usable CA certificate found; set uplink.ca_file".into(),
                });
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&uplink.client_cert_file, &uplink.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs(cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| SinkError::Tls {
                path: key_path.clone(),
                message: format!("no usable private key: {error}"),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|error| SinkError::Tls {
                    path: cert_path.clone(),
                    message: error.to_string(),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The PEM text of a CA file, for clients that take it as text (lapin, librdkafka): checked
/// here that it holds at least one certificate that parses, so a wrong path or a wrong file
/// fails at start with the file named.
pub(crate) fn read_ca_pem(path: &Path) -> Result<String, SinkError> {
    read_certs(path)?;
    std::fs::read_to_string(path).map_err(|error| SinkError::Tls {
        path: path.to_path_buf(),
        message: format!("failed to read certificates: {error}"),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SinkError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| SinkError::Tls {
            path: path.to_path_buf(),
            message: format!("failed to read certificates: {error}"),
        })?;
    if certs.is_empty() {
        return Err(SinkError::Tls {
            path: path.to_path_buf(),
            message: "no certificate in file".into(),
        });
    }
    Ok(certs)
}
