//! TLS between instances (rustls, ring provider only): the client trust
//! store, the server configuration, and certificate generation for the demo
//! and the tests.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Trust for outbound peer connections: the public web roots plus an extra
/// CA, if configured (the demo and tests use their own CA).
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("federation.ca_file: cannot read {}", path.display()))?
        {
            roots
                .add(cert.with_context(|| format!("federation.ca_file: {} is not PEM", path.display()))?)
                .context("federation.ca_file: not a usable CA certificate")?;
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The HTTP client for peers: our trust store, no redirects (a peer cannot
/// send us elsewhere), no proxies.
pub fn http_client(extra_ca: Option<&Path>) -> Result<reqwest::Client> {
    client_builder(extra_ca)?.build().context("building the HTTP client")
}

/// The client for peers: as [`http_client`], and names resolve only to
/// addresses peers may be reached at (`federation.allowed_peer_networks`).
pub fn peer_client(extra_ca: Option<&Path>, allowed: &[crate::config::IpNet]) -> Result<reqwest::Client> {
    client_builder(extra_ca)?
        .dns_resolver(Arc::new(super::netguard::GuardedResolver {
            allowed: Arc::new(allowed.to_vec()),
        }))
        .build()
        .context("building the peer HTTP client")
}

/// A client trusting the web's roots and `extra_ca`, following no redirects.
pub fn client_builder(extra_ca: Option<&Path>) -> Result<reqwest::ClientBuilder> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(extra_ca)?)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("mosaic/", env!("CARGO_PKG_VERSION"))))
}

pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>> {
    install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("tls.cert_file: cannot read {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.cert_file: {} is not PEM", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("tls.key_file: cannot read a private key from {}", key_file.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// When the (first) certificate in `cert_file` stops being valid: its notAfter.
pub fn certificate_expiry(cert_file: &Path) -> Result<time::OffsetDateTime> {
    let der = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("cannot read {}", cert_file.display()))?
        .next()
        .with_context(|| format!("{} holds no certificate", cert_file.display()))?
        .with_context(|| format!("{} is not PEM", cert_file.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", cert_file.display()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Files of a generated local CA and one server certificate for loopback.
pub struct LocalPki {
    pub ca_cert: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Creates (once) a CA and a certificate for localhost, 127.0.0.1 and ::1
/// under `dir`; reuses them when present.
pub fn local_pki(dir: &Path) -> Result<LocalPki> {
    let pki = LocalPki {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    if pki.ca_cert.exists() && pki.cert.exists() && pki.key.exists() {
        return Ok(pki);
    }
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Mosaic local CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut leaf_params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])?;
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
    std::fs::write(&pki.ca_cert, ca.pem())?;
    std::fs::write(&pki.cert, leaf.pem())?;
    write_private(&pki.key, leaf_key.serialize_pem().as_bytes())?;
    Ok(pki)
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    Ok(())
}
