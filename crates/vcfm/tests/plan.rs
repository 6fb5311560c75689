//! `vcfm plan NAME` on a simulated OpenShift cluster: it prints the preflight
//! verdict and every change the migration would make, and changes nothing
//! (no write request reaches the API server, every object keeps its
//! resourceVersion, both vCenters keep their inventory, tags and folders).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use kube::api::{Api, PostParams};
use openshift_sim::{Scenario, SimCluster, Site, Tier};
use serde_json::json;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use vcfm_api::VmwareCloudFoundationMigration;

mod support;

use support::{all_objects, vcenter_state};

const NS: &str = "vcfm-system";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_changes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimCluster::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await
    .unwrap();
    let client = sim.client();
    let (src, t) = (sim.source().clone(), sim.target().clone());
    let infra_id = sim.infra_id().to_string();
    testbed::seed_migration_namespace(&client, NS, "target-creds", &t, None)
        .await
        .unwrap();
    let m: VmwareCloudFoundationMigration = serde_json::from_value(json!({
        "apiVersion": "migration.openshift.io/v1alpha1",
        "kind": "VmwareCloudFoundationMigration",
        "metadata": {"name": "move", "namespace": NS},
        "spec": {
            "state": "Pending",
            "targetVCenterCredentialsSecret": {"name": "target-creds"},
            "failureDomains": [{"name": "wld01-az1", "region": "region-b", "zone": "az1", "server": t.server,
                "topology": {"datacenter": t.datacenter, "computeCluster": t.compute_cluster,
                    "datastore": t.datastore, "networks": [t.network],
                    "resourcePool": t.resource_pool, "template": t.template}}],
            "machineSetConfig": {"replicas": 2}
        }
    }))
    .unwrap();
    Api::<VmwareCloudFoundationMigration>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &m)
        .await
        .unwrap();

    // The simulated operators are level-triggered: a quiet cluster stays put.
    // What the real tier's own components write on their own, whatever vcfm does: the
    // apiserver renews its identity Lease (kube-apiserver `--identity-lease-renew-interval-seconds`)
    // and the real CPMS operator brings its ClusterOperator's conditions and versions in line
    // with the CPMS whenever they differ (cluster-control-plane-machine-set-operator
    // `pkg/controllers/controlplanemachineset/cluster_operator.go`, `patchClusterOperatorStatus`).
    // kube-sim and the simulated operators write neither while the cluster is quiet.
    let real = sim.tier() == Tier::Real;
    let skip: &[&str] = if real { &["Lease"] } else { &[] };
    let all_objects = |skip, client| async move {
        let mut objs = all_objects(skip, client).await;
        if real {
            objs.remove("ClusterOperator /control-plane-machine-set");
        }
        objs
    };
    let before = all_objects(skip, &client).await;
    let (src_before, tgt_before) = (
        vcenter_state(&sim, Site::Source).await,
        vcenter_state(&sim, Site::Target).await,
    );

    // The plan runs as its own user, so its requests can be told apart.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        sim.kubeconfig_for_user("plan-user", &["system:masters", "system:authenticated"])
            .await
            .unwrap(),
    )
    .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, testbed::vcenter_ca_bundle(&sim).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .args(["plan", "move", "-n", NS, "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--vcenter-ca-file")
        .arg(&ca_file)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "vcfm plan failed:\n{text}\n{err}");
    eprintln!("{text}");

    // What it says.
    let has = |s: &str| assert!(text.contains(s), "plan lacks {s:?}:\n{text}");
    has("Preflight: all checks passed.");
    has("Confirm before starting");
    // Infrastructure: the target vCenter and failure domain appended, the source kept.
    has(&format!("    +   server: \"{}\"", t.server));
    has("    + - name: wld01-az1");
    has(&format!("        server: \"{}\"", src.server));
    has("cluster-version operator is scaled to 0");
    // cloud-provider-config: a vcenter entry for the target, the rest unchanged.
    has(&format!(
        "    +   {}:\n    +     server: {}",
        t.server, t.server
    ));
    has(&format!("        {}:\n", src.server));
    has("      labels:");
    // Credentials: key names, never values.
    has(&format!("  + {}.username", t.server));
    has(&format!("  + {}.password", t.server));
    assert!(!text.contains(&t.password) && !text.contains(&src.password));
    // Tags and the folder on the target.
    has("+ category openshift-region   + tag region-b   attached to datacenter");
    has("+ category openshift-zone   + tag az1   attached to compute cluster");
    has(&format!(
        "+ category openshift-{infra_id}   + tag {infra_id}"
    ));
    has(&format!("+ VM folder /{}/vm/{infra_id}", t.datacenter));
    // Machines.
    has(&format!(
        "  + {infra_id}-worker-wld01-az1: 2 replica(s), copied from {infra_id}-worker-0"
    ));
    has(&format!("template {}", t.template));
    has("    - state: Inactive\n");
    has("    + state: Active\n");
    has("    -   - name: generated-failure-domain\n");
    has("    +   - name: wld01-az1\n");
    has(&format!(
        "  - MachineSet {infra_id}-worker-0 (1 replica(s)) scaled to 0, then deleted"
    ));

    testbed::assert_same_objects(
        &before,
        &all_objects(skip, &client).await,
        "objects changed",
    );

    // A migration preflight rejects: the problems are listed, exit status 2.
    let mut broken = m.clone();
    broken.metadata.name = Some("broken".into());
    broken.spec.target_vcenter_credentials_secret.name = "missing".into();
    Api::<VmwareCloudFoundationMigration>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    let before = all_objects(skip, &client).await;
    let out = Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .args(["plan", "broken", "-n", NS, "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--vcenter-ca-file")
        .arg(&ca_file)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("Preflight: 1 problem(s) to fix first:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("target credentials Secret {NS}/missing not found")),
        "{text}"
    );

    let after = all_objects(skip, &client).await;
    testbed::assert_same_objects(&before, &after, "objects changed");
    // What it did: reads only (kube-sim counts requests per user; on the real tier the
    // unchanged objects above are the proof).
    if sim.tier() == Tier::Sim {
        let user_verbs: BTreeSet<String> = sim
            .kube()
            .stats()
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.user == "plan-user")
            .map(|(k, _)| k.verb)
            .collect();
        assert!(!user_verbs.is_empty());
        assert!(
            user_verbs.iter().all(|v| v == "get" || v == "list"),
            "vcfm plan made requests other than reads: {user_verbs:?}"
        );
    }

    assert_eq!(src_before, vcenter_state(&sim, Site::Source).await);
    assert_eq!(tgt_before, vcenter_state(&sim, Site::Target).await);
    sim.shutdown().await;
}
