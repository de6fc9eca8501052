//! TLS on the API's listeners, from `[tls]`: the same certificate for gRPC (tonic's rustls) and
//! HTTP (rustls), and when a client CA is given, mutual TLS on both. The files are
//! read at start, so a missing or unreadable one fails the start with its name.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ApiTls;

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("tls.{what} {}", path.display()))
}

/// The gRPC server's TLS.
pub fn grpc(tls: &ApiTls) -> anyhow::Result<ServerTlsConfig> {
    let identity = Identity::from_pem(
        read(&tls.cert_file, "cert_file")?,
        read(&tls.key_file, "key_file")?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client_ca_file")?));
    }
    Ok(config)
}

/// The HTTP gateway's TLS, speaking HTTP/2 and HTTP/1.1.
pub fn http(tls: &ApiTls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = certificates(&tls.cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key_file, "key_file")?)
        .with_context(|| format!("tls.key_file {}: no private key", tls.key_file.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "client_ca_file")? {
                roots
                    .add(cert)
                    .context("tls.client_ca_file: not a CA certificate")?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .context("tls.client_ca_file")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("tls: the certificate and the key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(
    path: &std::path::Path,
    what: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(&read(path, what)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.{what} {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.{what} {}: no certificate",
        path.display()
    );
    Ok(certs)
}
