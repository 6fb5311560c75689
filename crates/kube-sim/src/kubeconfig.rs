//! Kubeconfig rendering: the file kubectl and kube-rs read unchanged.

use base64::Engine;
use serde_json::json;

/// Render a kubeconfig for `server` with a bearer `token`.
pub(crate) fn render(server: &str, ca_pem: Option<&str>, token: &str, user: &str) -> String {
    let mut cluster = json!({ "server": server });
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": user, "namespace": "default"}}],
        "current-context": "kube-sim",
        "preferences": {},
    });
    // JSON is valid YAML, and every kubeconfig loader accepts it.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
