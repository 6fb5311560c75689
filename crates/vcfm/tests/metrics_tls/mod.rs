//! Scraping the secure metrics endpoint as Prometheus does: TLS verified against a
//! CA for the Service's DNS name, a bearer token, HTTP/1.1. Also issues the serving
//! certificate the way OpenShift's service CA would (a CA, and a leaf for the name).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The DNS name the ServiceMonitor verifies (`serverName`).
pub const SERVER_NAME: &str = "vcfm-controller-metrics.vcfm-system.svc";

/// A CA (PEM) after writing `tls.crt`/`tls.key` for [`SERVER_NAME`] into `dir`.
pub fn issue_serving_cert(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test service CA");
    let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![SERVER_NAME.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    // Written as kubelet updates a Secret volume: whole files, key first.
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    ca.pem()
}

/// One HTTPS GET on 127.0.0.1:`port`, verifying the server as `server_name` against
/// `ca_pem`. Returns the status code and body, or the TLS/connection error.
pub async fn get(
    port: u16,
    path: &str,
    token: Option<&str>,
    ca_pem: &str,
    server_name: &str,
) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let work = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {server_name}\r\n{auth}Connection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        // A peer that closes without close_notify still delivered the response.
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).to_string();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .unwrap_or_else(|_| Err("no answer in 30 s".into()))
}

/// Retries [`get`] until the server answers at all (it may still be starting).
pub async fn get_when_up(
    port: u16,
    path: &str,
    token: Option<&str>,
    ca_pem: &str,
    server_name: &str,
) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match get(port, path, token, ca_pem, server_name).await {
            Ok(r) => return r,
            Err(e) if e.starts_with("connect") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("metrics endpoint on {port}: {e}"),
        }
    }
}
