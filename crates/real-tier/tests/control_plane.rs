//! The real control plane starts, serves the real OpenShift CRDs with their CEL rules,
//! enforces RBAC, issues service-account tokens, and garbage-collects owned objects:
//! the semantics the product depends on, from the real components.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use real_tier::{ControlPlane, ControlPlaneOptions, apply_dir, apply_yaml};
use serde_json::json;

fn shared() -> PathBuf {
    std::env::var_os("VCFM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(args)
        .output()
        .expect("kubectl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_control_plane_serves_openshift_semantics() {
    let cp = ControlPlane::start(ControlPlaneOptions::default())
        .await
        .expect("control plane");
    let client = cp.client().await.expect("admin client");

    // kubectl and kube-rs both see the real server and its version.
    let v = client.apiserver_version().await.expect("version");
    assert_eq!(v.major, "1");
    assert!(v.git_version.starts_with("v1.3"), "{v:?}");
    let out = kubectl(&cp, &["get", "namespaces", "-o", "name"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));

    // The Default feature set's Infrastructure CRD refuses a second vCenter with
    // OpenShift's own CEL message.
    let n = apply_dir(&client, &shared().join("openshift-crds/default"))
        .await
        .expect("OpenShift CRDs");
    assert!(n >= 10, "{n} documents");
    let infra = |servers: &[&str]| {
        let vcenters: Vec<_> = servers
            .iter()
            .map(|s| json!({"server": s, "port": 443, "datacenters": ["dc"]}))
            .collect();
        format!(
            "{}",
            json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
                "metadata": {"name": "cluster"},
                "spec": {"platformSpec": {"type": "VSphere", "vsphere": {"vcenters": vcenters}}}})
        )
    };
    apply_yaml(&client, &infra(&["vc1.example.com"]))
        .await
        .expect("one vCenter");
    let err = apply_yaml(&client, &infra(&["vc1.example.com", "vc2.example.com"]))
        .await
        .expect_err("a second vCenter is refused");
    assert!(
        err.to_string()
            .contains("vcenters cannot be added or removed once set"),
        "{err}"
    );

    // RBAC: a user with no binding is forbidden; a service account token authenticates.
    let nobody = cp.client_for("nobody", None).await.unwrap();
    let e = Api::<Secret>::namespaced(nobody, "kube-system")
        .list(&Default::default())
        .await
        .expect_err("forbidden");
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 403), "{e}");
    let token = cp
        .service_account_token("default", "probe")
        .await
        .expect("TokenRequest");
    let sa = ControlPlane::client_from_kubeconfig(&cp.kubeconfig_for_token(&token))
        .await
        .unwrap();
    let e = Api::<ConfigMap>::namespaced(sa, "kube-system")
        .list(&Default::default())
        .await
        .expect_err("the service account has no rights yet");
    let kube::Error::Api(s) = e else {
        panic!("{e}")
    };
    assert!(
        s.message.contains("system:serviceaccount:default:probe"),
        "{}",
        s.message
    );

    // The controller-manager's garbage collector deletes what an owner no longer holds.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let owned: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owned",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid}]}}))
    .unwrap();
    cms.create(&PostParams::default(), &owned).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cms.get_opt("owned").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "garbage collector did not delete the owned ConfigMap\n{}",
            cp.logs(20)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The audit log records who did what, with the RBAC decision.
    let events = cp.audit_events();
    assert!(
        events.iter().any(|e| e["user"]["username"] == "nobody"
            && e["annotations"]["authorization.k8s.io/decision"] == "forbid"),
        "audit log has the forbidden request"
    );
    cp.shutdown().await;
}
