//! `vcfm gather` (run by the must-gather image's `/usr/bin/gather`) after a whole
//! migration on the simulated cluster: every file support
//! needs is there with content, and no file holds a secret: not the vCenter passwords
//! (the fixtures' and the credentials Secrets' values), not the Kubernetes tokens, not
//! the backup Secret's values or HMAC key, not the vCenter session ids the controller
//! held (read from vcsim's SessionManager while the migration ran).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Site};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vcfm_api::{MigrationPhase, VmwareCloudFoundationMigration};

const NS: &str = "vcfm-system";
const POD: &str = "vcfm-controller-7d4b9c-x2x7q";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The keys of every session vcsim holds now (`SessionManager.sessionList`).
async fn session_keys(c: &vcfm_vsphere::Client) -> Vec<String> {
    let Ok(sc) = c.service_content().await else {
        return vec![];
    };
    let sm = sc.session_manager.clone();
    let Ok(r) = c
        .retrieve_properties("SessionManager", &[sm], &["sessionList"])
        .await
    else {
        return vec![];
    };
    r.iter()
        .filter_map(|o| o.props.get("sessionList"))
        .flat_map(|n| {
            // One element per session, or the sessions under it, depending on nesting.
            let mut keys: Vec<String> = n.child_text("key").map(String::from).into_iter().collect();
            for s in &n.children {
                if let Some(k) = s.child_text("key") {
                    keys.push(k.to_string());
                }
            }
            keys
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_after_a_migration_has_everything_support_needs_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimCluster::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await
    .unwrap();
    let admin = sim.kubeconfig_path().to_path_buf();
    let out = Command::new("kubectl")
        .args(["apply", "-k"])
        .arg(deploy_dir())
        .arg("--kubeconfig")
        .arg(&admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = sim.client();
    let (src, tgt) = (sim.source().clone(), sim.target().clone());
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "target-creds", "namespace": NS},
        "stringData": {format!("{}.username", tgt.server): tgt.username,
                       format!("{}.password", tgt.server): tgt.password}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let m: VmwareCloudFoundationMigration = serde_json::from_value(json!({
        "apiVersion": "migration.openshift.io/v1alpha1",
        "kind": "VmwareCloudFoundationMigration",
        "metadata": {"name": "move", "namespace": NS},
        "spec": {
            "state": "Running", "approvalMode": "Automatic", "rollbackOnFailure": true,
            "targetVCenterCredentialsSecret": {"name": "target-creds"},
            "failureDomains": [{"name": "wld01", "region": "region-b", "zone": "az1", "server": tgt.server,
                "topology": {"datacenter": tgt.datacenter, "computeCluster": tgt.compute_cluster,
                    "datastore": tgt.datastore, "networks": [tgt.network],
                    "resourcePool": tgt.resource_pool, "template": tgt.template}}],
            "machineSetConfig": {"replicas": 1}
        }
    }))
    .unwrap();
    let api = Api::<VmwareCloudFoundationMigration>::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &m).await.unwrap();

    // The controller, logging every vSphere call (bodies included, redacted), its output
    // served as the log of its pod the way the kubelet serves a container's log file.
    let mut ca = std::fs::read(&src.ca_pem_path).unwrap();
    ca.extend(std::fs::read(&tgt.ca_pem_path).unwrap());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let log = dir.path().join("controller.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut controller = Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .args([
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--vcenter-ca-file")
        .arg(&ca_file)
        .arg("--kubeconfig")
        .arg(&admin)
        .env("VCFM_HEALTH_SETTLE", "3")
        .env("RUST_LOG", "info,vcfm_vsphere=trace,vcfm_controller=debug")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS,
            "labels": {"app.kubernetes.io/name": "vcfm-controller"}},
        "spec": {"serviceAccountName": "vcfm-controller",
            "containers": [{"name": "controller", "image": "quay.io/vcfm/vcfm:0.1.0"}]}}))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    sim.kube()
        .set_pod_log_file(NS, POD, "controller", false, &log);

    // vCenter session ids, from vcsim's side, while the controller holds them.
    let sessions: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let watchers: Vec<_> = [Site::Source, Site::Target]
        .into_iter()
        .map(|site| {
            let c = sim.vsphere_client(site).unwrap();
            let sessions = sessions.clone();
            tokio::spawn(async move {
                loop {
                    let keys = session_keys(&c).await;
                    sessions.lock().unwrap().extend(keys);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        })
        .collect();

    let start = Instant::now();
    loop {
        let m = api.get("move").await.unwrap();
        let phase = m.status.as_ref().and_then(|s| s.phase);
        if phase == Some(MigrationPhase::Completed) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240)
                && phase != Some(MigrationPhase::RollbackCompleted),
            "migration did not complete: {:?}\n{}",
            m.status,
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in &watchers {
        w.abort();
    }
    let sessions: Vec<String> = sessions.lock().unwrap().iter().cloned().collect();
    assert!(!sessions.is_empty(), "no vCenter session was seen");

    // Through the must-gather image's entry point, as `oc adm must-gather` runs it.
    let out_dir = dir.path().join("gathered");
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/must-gather/gather"))
        .env("VCFM", env!("CARGO_BIN_EXE_vcfm"))
        .env("BASE_COLLECTION_PATH", &out_dir)
        .env("KUBECONFIG", &admin)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = controller.kill();
    let _ = controller.wait();

    // What support needs, each with content.
    let read = |rel: &str| {
        std::fs::read_to_string(out_dir.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}\ngather said:\n{stdout}"))
    };
    let migration = read("migrations/vcfm-system/move.yaml");
    assert!(migration.contains("phase: Completed"), "{migration}");
    assert!(
        migration.contains("hmacSha256"),
        "the backup manifest: {migration}"
    );
    let events = read("events/vcfm-system.yaml");
    assert!(events.contains("PhaseCompleted"), "{events}");
    let creds = read("secrets/credentials.yaml");
    assert!(creds.contains("vsphere-creds"), "{creds}");
    assert!(
        creds.contains(&format!("{}.password", tgt.server)),
        "{creds}"
    );
    let backups = read("secrets/backups.yaml");
    assert!(
        backups.contains("move-backup") && backups.contains("digest-key"),
        "{backups}"
    );
    assert!(read("cluster/infrastructure.yaml").contains(&tgt.server));
    assert!(
        read("cluster/configmaps/openshift-config/cloud-provider-config.yaml")
            .contains(&tgt.server)
    );
    assert!(read("cluster/featuregate.yaml").contains("kind: FeatureGate"));
    assert!(read("cluster/clusterversion.yaml").contains("kind: ClusterVersion"));
    assert!(read("cluster/clusteroperators.yaml").contains("kind: ClusterOperator"));
    assert!(
        read("machine-api/controlplanemachinesets.yaml").contains("kind: ControlPlaneMachineSet")
    );
    assert!(read("machine-api/machinesets.yaml").contains("wld01"));
    assert!(read("machine-api/machines.yaml").contains("kind: Machine"));
    let nodes = read("cluster/nodes.txt");
    assert!(
        nodes.lines().count() > 3 && nodes.contains("\tTrue\t"),
        "{nodes}"
    );
    assert!(read("controller/deployment.yaml").contains("--metrics-bind-address"));
    let logs = read(&format!("controller/logs/{POD}/controller.log"));
    assert!(
        logs.contains("vSphere call"),
        "the controller's log lacks its vSphere calls"
    );
    // Every line logged while reconciling names the migration and the phase (spans).
    assert!(
        logs.lines().any(|l| l.contains("vSphere call")
            && l.contains(&format!("\"migration\":\"{NS}/move\""))
            && l.contains("\"phase\":\"CreateTags\"")),
        "no vSphere call logged with its migration and phase"
    );
    let calls = read("controller/vsphere-calls.log");
    assert!(calls.contains("RetrievePropertiesEx"), "{calls}");
    assert!(
        !stdout.contains("could not be gathered") || !stdout.contains("logs of"),
        "{stdout}"
    );

    // No secret anywhere.
    let mut needles: Vec<(String, String)> = vec![
        ("source vCenter password".into(), src.password.clone()),
        ("target vCenter password".into(), tgt.password.clone()),
        (
            "kube-sim admin token".into(),
            sim.kube().admin_token().to_string(),
        ),
    ];
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for (what, v) in needles.clone() {
        needles.push((format!("{what} (base64)"), b64(&v)));
    }
    for ns in [NS, "kube-system"] {
        for s in Api::<Secret>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
        {
            let name = s.metadata.name.clone().unwrap_or_default();
            for (k, v) in s.data.unwrap_or_default() {
                let text = String::from_utf8_lossy(&v.0).to_string();
                // Usernames and server names are not secrets; values of 8+ characters
                // from password, key and backup entries are.
                let secretish =
                    k.ends_with("password") || k == "digest-key" || name.ends_with("-backup");
                if secretish && text.len() >= 8 {
                    needles.push((format!("Secret {ns}/{name} key {k}"), text.clone()));
                    needles.push((format!("Secret {ns}/{name} key {k} (base64)"), b64(&text)));
                }
            }
        }
    }
    for s in &sessions {
        needles.push(("a vCenter session id".into(), s.clone()));
    }
    let files = files_under(&out_dir);
    assert!(files.len() >= 18, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (what, needle) in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{} contains {what}: {}",
                f.display(),
                text.lines()
                    .find(|l| l.contains(needle.as_str()))
                    .unwrap_or_default()
                    .chars()
                    .take(600)
                    .collect::<String>()
            );
        }
    }
    sim.shutdown().await;
}
