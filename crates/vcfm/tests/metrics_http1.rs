//! The secure metrics endpoint speaks HTTP/1.1 only, as the metrics server of a
//! kubebuilder-scaffolded controller does by default (its `--enable-http2` flag is
//! off: the HTTP/2 Stream Cancellation and Rapid Reset CVEs): a client offering
//! `h2` first is answered over HTTP/1.1. The product links no HTTP/2 at all.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod metrics_tls;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbed::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_secure_metrics_endpoint_negotiates_http1_even_when_h2_is_offered() {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = metrics_tls::issue_serving_cert(&dir.path().join("tls"));
    // The metrics server is up before the controller reaches the API, which here
    // is nowhere (its watches retry in the background).
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {cluster: c, user: u, namespace: vcfm-system}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let port = free_port();
    let _controller = Killed(
        Command::new(env!("CARGO_BIN_EXE_vcfm"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--metrics-bind-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-cert-path")
            .arg(dir.path().join("tls"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vcfm controller"),
    );

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let deadline = Instant::now() + Duration::from_secs(60);
    let tcp = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(t) => break t,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("metrics endpoint on {port}: {e}"),
        }
    };
    let name = rustls::pki_types::ServerName::try_from(metrics_tls::SERVER_NAME).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(30), connector.connect(name, tcp))
        .await
        .expect("TLS handshake in 30 s")
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN picked another protocol than HTTP/1.1"
    );
    // And it is served: an anonymous scrape is refused over HTTP/1.1.
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        metrics_tls::SERVER_NAME
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}
