//! The controller's /metrics against the real kube-apiserver (the real tier), which
//! implements TokenReview and SubjectAccessReview for real: the shipped RBAC
//! (`deploy/`, rendered by kustomize) is applied, the controller runs as its service
//! account with the Deployment's metrics flags, and Prometheus, an unbound service
//! account and an anonymous caller scrape it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod metrics_tls;

use real_tier::{ControlPlane, ControlPlaneOptions, apply_yaml};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use testbed::free_port;

/// `kubectl kustomize deploy/`.
fn rendered() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple::<Value>(&String::from_utf8(out.stdout).unwrap())
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn deployment_args(docs: &[Value]) -> Vec<String> {
    let d = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_tls_a_valid_token_and_the_reader_role_on_the_real_apiserver() {
    let cp = ControlPlane::start(ControlPlaneOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await
    .expect("real control plane (VCFM_REAL_BIN)");
    let admin = cp.client().await.unwrap();
    let docs = rendered();
    // Namespaces first (the manifests' own, and every one a Role lives in).
    let mut namespaces: Vec<String> = docs
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str().map(String::from))
        .collect();
    namespaces.extend(["openshift-monitoring".to_string(), "default".to_string()]);
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        let doc = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        apply_yaml(&admin, &doc.to_string()).await.unwrap();
    }
    for d in docs.iter().filter(|d| {
        !matches!(
            d["kind"].as_str(),
            Some("Deployment" | "VmwareCloudFoundationMigration")
        )
    }) {
        apply_yaml(&admin, &d.to_string()).await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("metrics-tls");
    let ca = metrics_tls::issue_serving_cert(&cert_dir);
    let token = cp
        .service_account_token("vcfm-system", "vcfm-controller")
        .await
        .unwrap();
    let kubeconfig = dir.path().join("controller.kubeconfig");
    std::fs::write(&kubeconfig, cp.kubeconfig_for_token(&token)).unwrap();

    // The Deployment's arguments, ports and certificate directory moved to the test's.
    let (probe_port, metrics_port) = (free_port(), free_port());
    let args: Vec<String> = deployment_args(&docs)
        .into_iter()
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{probe_port}")
            } else if a.starts_with("--metrics-bind-address=") {
                format!("--metrics-bind-address=127.0.0.1:{metrics_port}")
            } else if a.starts_with("--metrics-cert-path=") {
                format!("--metrics-cert-path={}", cert_dir.display())
            } else {
                a
            }
        })
        .filter(|a| a != "--leader-elect")
        .collect();
    assert!(
        args.iter()
            .any(|a| a.starts_with("--metrics-bind-address=")),
        "the Deployment serves no secure metrics: {args:?}"
    );
    let log = dir.path().join("controller.log");
    let out = std::fs::File::create(&log).unwrap();
    let _controller = Killed(
        Command::new(env!("CARGO_BIN_EXE_vcfm"))
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("POD_NAMESPACE", "vcfm-system")
            .env("RUST_LOG", "info,vcfm_controller::secure_metrics=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let scrape = |token: Option<String>| {
        let ca = ca.clone();
        async move {
            metrics_tls::get_when_up(
                metrics_port,
                "/metrics",
                token.as_deref(),
                &ca,
                metrics_tls::SERVER_NAME,
            )
            .await
        }
    };

    // No credentials: 401.
    let (code, body) = scrape(None).await;
    assert_eq!(code, 401, "{body}\n{}", logs());
    assert_eq!(body.trim(), "Unauthorized");
    // A token the API server never issued: 401, not a server error.
    let (code, body) = scrape(Some("not-a-real-token".into())).await;
    assert_eq!(code, 401, "{body}\n{}", logs());

    // A real service account with no binding: authenticated, then denied (403).
    let nobody = cp.service_account_token("default", "nobody").await.unwrap();
    let (code, body) = scrape(Some(nobody)).await;
    assert_eq!(code, 403, "{body}\n{}", logs());
    assert_eq!(
        body.trim(),
        "Authorization denied for user system:serviceaccount:default:nobody"
    );

    // OpenShift's Prometheus, bound to vcfm-metrics-reader by deploy/rbac.yaml: metrics.
    let prometheus = cp
        .service_account_token("openshift-monitoring", "prometheus-k8s")
        .await
        .unwrap();
    let (code, body) = scrape(Some(prometheus.clone())).await;
    assert_eq!(code, 200, "{body}\n{}", logs());
    // The OpenMetrics exposition (families appear once they have samples; no
    // migration ran here, see deploy.rs for a scrape after one).
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    // Other paths are not served there, and /metrics is gone from the plain probe port.
    let (code, _) = scrape_path(metrics_port, "/debug/pprof", &prometheus, &ca).await;
    assert_eq!(code, 404);
    let plain = http_get(probe_port, "/metrics").await;
    assert!(plain.starts_with("HTTP/1.1 404"), "{plain}");
    let health = http_get(probe_port, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // The service CA rotates the certificate: the next scrape is served the new one
    // without a restart, and the old CA no longer verifies it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new_ca = metrics_tls::issue_serving_cert(&cert_dir);
    let (code, _) = scrape_path(metrics_port, "/metrics", &prometheus, &new_ca).await;
    assert_eq!(code, 200, "{}", logs());
    let old = metrics_tls::get(
        metrics_port,
        "/metrics",
        Some(&prometheus),
        &ca,
        metrics_tls::SERVER_NAME,
    )
    .await;
    assert!(
        old.is_err_and(|e| e.starts_with("TLS")),
        "the old certificate is still served"
    );

    // The controller's token never appears in its log.
    assert!(!logs().contains(&token));
    drop(cp);
}

async fn scrape_path(port: u16, path: &str, token: &str, ca: &str) -> (u16, String) {
    metrics_tls::get_when_up(port, path, Some(token), ca, metrics_tls::SERVER_NAME).await
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "probe port {port} never opened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
