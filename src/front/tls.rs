//! `--tls-cert` and `--tls-key`: the balancer port serves HTTPS (rustls,
//! with the `ring` provider), offering HTTP/2 and HTTP/1.1 by ALPN.
//!
//! The certificate chain and key are read once at start-up; a missing,
//! unreadable or unusable file stops the start with an error naming it.
//! The slot ports stay plain HTTP: they are for a proxy in front of ppm,
//! which terminates TLS itself.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// ALPN protocol ids, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn invalid(option: &'static str, path: &Path, message: impl std::fmt::Display) -> Error {
    Error::InvalidOption {
        option,
        message: format!("{}: {message}", path.display()),
    }
}

/// The TLS acceptor for a certificate chain and private key in PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let cert_pem = std::fs::read(cert).map_err(|e| invalid("tls-cert", cert, e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tls-cert", cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("tls-cert", cert, "no certificate in the file"));
    }
    let key_pem = std::fs::read(key).map_err(|e| invalid("tls-key", key, e))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid("tls-key", key, format!("no usable PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls-cert", cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            invalid(
                "tls-key",
                key,
                format!("does not go with the certificate {}: {e}", cert.display()),
            )
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
