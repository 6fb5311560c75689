//! The OLM bundle in bundle/ is what `vcfm bundle` generates from deploy/ (so it cannot
//! drift from the kustomize install), and it carries what OLM and OperatorHub need:
//! the owned CRD with descriptors, every RBAC rule the controller is given in deploy/,
//! the install modes, the Deployment with the released image, the metrics objects and
//! OpenShift's feature annotations. `make bundle-validate` (part of `make test`) runs
//! operator-framework's validators over the same directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, base, out);
        } else {
            out.insert(p.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn the_checked_in_bundle_is_generated_from_deploy() {
    let generated = vcfm::bundle::generate(&root().join("deploy")).unwrap();
    let dir = root().join("bundle");
    let mut on_disk = BTreeSet::new();
    files_under(&dir, &dir, &mut on_disk);
    let want: BTreeSet<String> = generated.keys().cloned().collect();
    assert_eq!(
        on_disk, want,
        "bundle/ has other files than `make bundle` writes"
    );
    for (rel, text) in &generated {
        let disk = std::fs::read_to_string(dir.join(rel)).unwrap();
        assert!(
            &disk == text,
            "bundle/{rel} is stale: run `make bundle` and commit the result"
        );
    }
}

#[test]
fn the_csv_owns_the_crd_and_grants_exactly_what_deploy_grants() {
    let files = vcfm::bundle::generate(&root().join("deploy")).unwrap();
    let csv = yaml(&files["manifests/vcfm.clusterserviceversion.yaml"]);
    let crd = yaml(&files["manifests/migration.openshift.io_vmwarecloudfoundationmigrations.yaml"]);
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    let generated_crd: Value = serde_saphyr::from_str(&vcfm_api::crd_yaml().unwrap()).unwrap();
    assert_eq!(
        crd["spec"], generated_crd["spec"],
        "the bundle's CRD is not the generated one"
    );

    // The owned CRD, described for the console.
    let owned = &csv["spec"]["customresourcedefinitions"]["owned"][0];
    assert_eq!(owned["name"], crd["metadata"]["name"]);
    assert_eq!(owned["kind"], "VmwareCloudFoundationMigration");
    assert_eq!(owned["version"], "v1alpha1");
    assert!(owned["displayName"].is_string() && owned["description"].is_string());
    let paths: BTreeSet<&str> = owned["specDescriptors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for p in &paths {
        let top = p.split('.').next().unwrap();
        assert!(
            props.get(top).is_some(),
            "specDescriptor {p} is not a spec field"
        );
    }
    for p in [
        "state",
        "approvalMode",
        "targetVCenterCredentialsSecret",
        "failureDomains",
        "rollbackOnFailure",
    ] {
        assert!(paths.contains(p), "no specDescriptor for {p}");
    }
    let examples: Value = serde_json::from_str(
        csv["metadata"]["annotations"]["alm-examples"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(examples[0]["kind"], "VmwareCloudFoundationMigration");

    // Install modes: the operator's own namespace only.
    let modes: Vec<(String, bool)> = csv["spec"]["installModes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_string(),
                m["supported"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        vec![
            ("OwnNamespace".into(), true),
            ("SingleNamespace".into(), false),
            ("MultiNamespace".into(), false),
            ("AllNamespaces".into(), false)
        ]
    );

    // The Deployment, with the kustomization's image and the secure metrics flags.
    let dep = &csv["spec"]["install"]["spec"]["deployments"][0];
    assert_eq!(dep["name"], "vcfm-controller");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "quay.io/vcfm/vcfm:0.1.0");
    assert_eq!(csv["metadata"]["annotations"]["containerImage"], c["image"]);
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("--metrics-bind-address="))
    );

    // Every rule deploy/rbac.yaml gives the controller is in the CSV: its namespace's
    // Roles as permissions, everything else as clusterPermissions.
    let rbac: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(root().join("deploy/rbac.yaml")).unwrap(),
    )
    .unwrap();
    let perms = &csv["spec"]["install"]["spec"];
    let cluster: Vec<Value> = perms["clusterPermissions"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    let local: Vec<Value> = perms["permissions"][0]["rules"].as_array().unwrap().clone();
    assert_eq!(
        perms["clusterPermissions"][0]["serviceAccountName"],
        "vcfm-controller"
    );
    for role in rbac
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        if name == "vcfm-metrics-reader" {
            continue;
        }
        let in_own_ns = role["metadata"]["namespace"] == "vcfm-system";
        for rule in role["rules"].as_array().unwrap() {
            let pool = if in_own_ns { &local } else { &cluster };
            assert!(
                pool.contains(rule),
                "{} {name}: rule {rule} missing from the CSV",
                role["kind"]
            );
        }
    }
    assert!(cluster.contains(&json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]})));
    assert!(cluster.contains(&json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]})));

    // Metrics: the Service (with the service CA annotation), the reader role and its
    // binding for Prometheus, and the ServiceMonitor ship in the bundle.
    let svc = yaml(&files["manifests/vcfm-controller-metrics_v1_service.yaml"]);
    assert_eq!(
        svc["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"],
        "vcfm-controller-metrics-tls"
    );
    assert!(
        svc["metadata"]["namespace"].is_null(),
        "OLM places bundle objects itself"
    );
    let reader =
        yaml(&files["manifests/vcfm-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml"]);
    assert_eq!(reader["rules"][0]["nonResourceURLs"], json!(["/metrics"]));
    assert!(files.contains_key(
        "manifests/vcfm-metrics-reader_rbac.authorization.k8s.io_v1_clusterrolebinding.yaml"
    ));
    let sm = yaml(&files["manifests/vcfm-controller_monitoring.coreos.com_v1_servicemonitor.yaml"]);
    assert_eq!(sm["spec"]["endpoints"][0]["scheme"], "https");

    // OpenShift's annotations, every declared feature a string "true"/"false".
    let ann = csv["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(
        ann["operatorframework.io/suggested-namespace"],
        "vcfm-system"
    );
    assert_eq!(
        ann["operators.openshift.io/must-gather-image"],
        "quay.io/vcfm/vcfm-must-gather:0.1.0"
    );
    assert!(ann.contains_key("operators.openshift.io/infrastructure-features"));
    for f in [
        "disconnected",
        "fips-compliant",
        "proxy-aware",
        "tls-profiles",
        "token-auth-aws",
        "token-auth-azure",
        "token-auth-gcp",
        "cnf",
        "cni",
        "csi",
    ] {
        let v = &ann[&format!("features.operators.openshift.io/{f}")];
        assert!(v == "true" || v == "false", "{f}: {v}");
    }
    let meta = yaml(&files["metadata/annotations.yaml"]);
    let a = &meta["annotations"];
    assert_eq!(
        a["operators.operatorframework.io.bundle.mediatype.v1"],
        "registry+v1"
    );
    assert_eq!(
        a["operators.operatorframework.io.bundle.package.v1"],
        "vcfm"
    );
    assert_eq!(
        a["operators.operatorframework.io.bundle.manifests.v1"],
        "manifests/"
    );
    assert_eq!(
        a["operators.operatorframework.io.bundle.channel.default.v1"],
        a["operators.operatorframework.io.bundle.channels.v1"]
    );
}
