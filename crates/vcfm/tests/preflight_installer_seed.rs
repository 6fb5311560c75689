//! Preflight against clusters seeded as the installer and the operators leave them
//! (openshift-sim), run by the real `vcfm controller` binary: each thing a real consumer of
//! the configuration would trip over after the point of no return is refused up front, with
//! the fix named in the status and in an Event, and nothing changed in the cluster or on
//! either vCenter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use kube::api::{Api, PostParams};
use openshift_sim::{Scenario, SimCluster, Site};
use serde_json::{Value, json};
use std::time::Duration;
use support::{all_objects, vcenter_state};
use testbed::{Binary, failure_domain_spec, wait_for_migration};
use vcfm_api::{MigrationPhase, VmwareCloudFoundationMigration};
use vcfm_vsphere::sim::VcsimOptions;

const NS: &str = "vcfm-system";
const SECRET: &str = "target-creds";

struct Harness {
    sim: SimCluster,
    /// The running `vcfm controller` (killed when dropped, also when a test panics).
    bin: Binary,
}

impl Harness {
    /// A seeded cluster, the target credentials (`creds`: user and password; the target's
    /// administrator when `None`) and a running `vcfm controller`.
    async fn start(scenario: Scenario, creds: Option<(&str, &str)>) -> Harness {
        let sim = SimCluster::start(scenario).await.unwrap();
        testbed::seed_migration_namespace(&sim.client(), NS, SECRET, sim.target(), creds)
            .await
            .unwrap();
        let mut bin = Binary::new(env!("CARGO_BIN_EXE_vcfm"), &sim, NS);
        bin.start_controller();
        Harness { sim, bin }
    }

    /// The migration of this cluster to the target's inventory, with `tweak` applied.
    fn migration(&self, name: &str, tweak: impl FnOnce(&mut Value)) -> Value {
        let mut m = json!({
            "apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "state": "Running",
                "targetVCenterCredentialsSecret": {"name": SECRET},
                "failureDomains": [failure_domain_spec("wld01-az1", "region-b", "az1", self.sim.target())],
                "machineSetConfig": {"replicas": 1}
            }
        });
        tweak(&mut m);
        m
    }

    /// Creates a migration, waits for Preflight to fail, and checks the contract: every
    /// string of `must_mention` in the Failed condition and in a PhaseFailed Event, no
    /// change in the cluster or on either vCenter. Returns the message.
    async fn expect_refused(
        &self,
        name: &str,
        tweak: impl FnOnce(&mut Value),
        must_mention: &[&str],
    ) -> String {
        let client = self.sim.client();
        let before = all_objects(&["Lease", "VmwareCloudFoundationMigration"], &client).await;
        let (src, tgt) = (
            vcenter_state(&self.sim, Site::Source).await,
            vcenter_state(&self.sim, Site::Target).await,
        );
        let api = Api::<VmwareCloudFoundationMigration>::namespaced(client.clone(), NS);
        let m: VmwareCloudFoundationMigration =
            serde_json::from_value(self.migration(name, tweak)).unwrap();
        api.create(&PostParams::default(), &m).await.unwrap();
        let m = wait_for_migration(
            &api,
            name,
            "Preflight to fail",
            Duration::from_secs(90),
            |m| m.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Failed),
            |m| format!("{:?}\n{}", m.map(|m| &m.status), self.bin.controller_logs()),
        )
        .await;
        let st = m.status.as_ref().unwrap();
        let msg = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(msg.starts_with("Preflight failed"), "{name}: {msg}");
        for s in must_mention {
            assert!(
                msg.contains(s),
                "{name}: the message must mention {s:?}: {msg}"
            );
        }
        assert!(st.source_vcenter.is_none() && st.backup_manifests.is_empty());
        testbed::wait_event_naming(
            &client,
            NS,
            Some(name),
            "PhaseFailed",
            must_mention,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            before,
            all_objects(&["Lease", "VmwareCloudFoundationMigration"], &client).await,
            "{name}: Preflight changed the cluster"
        );
        assert_eq!(src, vcenter_state(&self.sim, Site::Source).await);
        assert_eq!(tgt, vcenter_state(&self.sim, Site::Target).await);
        msg
    }

    async fn shutdown(self) {
        let Harness { sim, bin } = self;
        drop(bin);
        sim.shutdown().await;
    }
}

/// Issue 13 item 4: PersistentVolumes of the in-tree vSphere plugin stop attaching once a
/// second vCenter turns CSI migration off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_tree_vsphere_volumes_are_refused() {
    let h = Harness::start(
        Scenario {
            workers: 1,
            in_tree_volumes: 2,
            ..Scenario::default()
        },
        None,
    )
    .await;
    h.expect_refused(
        "in-tree",
        |_| {},
        &[
            "2 PersistentVolume(s)",
            "spec.vsphereVolume",
            "CSI migration off",
        ],
    )
    .await;
    h.shutdown().await;
}

/// One list of PersistentVolumes serves both volume checks: a cluster with CSI volumes of
/// the vSphere driver and in-tree ones is told about both in the same refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_and_in_tree_vsphere_volumes_are_both_reported() {
    let h = Harness::start(
        Scenario {
            workers: 1,
            in_tree_volumes: 1,
            csi_volumes: 3,
            ..Scenario::default()
        },
        None,
    )
    .await;
    h.expect_refused(
        "volumes",
        |_| {},
        &[
            "3 PersistentVolume(s) use the vSphere CSI driver",
            "managementState to Removed",
            "1 PersistentVolume(s) use the in-tree vSphere volume plugin",
        ],
    )
    .await;
    h.shutdown().await;
}

/// Issue 13 item 7: OpenShift 4.13–4.17 serve an Infrastructure whose schema takes one
/// vCenter: refused, naming the release to upgrade to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshift_4_16_crds_are_refused_naming_the_minimum_release() {
    let h = Harness::start(
        Scenario {
            workers: 1,
            crd_set: Some("4.16".into()),
            version: "4.16.8".into(),
            ..Scenario::default()
        },
        None,
    )
    .await;
    h.expect_refused(
        "on-416",
        |_| {},
        &[
            "allows only 1 vCenter",
            "OpenShift 4.16.8",
            "upgrade the cluster to OpenShift 4.18 or later",
        ],
    )
    .await;
    h.shutdown().await;
}

/// Issue 13 item 11: with the cloud-credential operator in Manual mode nothing reaches the
/// component Secrets; the refusal names each of them and the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_credentials_mode_is_refused_naming_the_component_secrets() {
    let h = Harness::start(
        Scenario {
            workers: 1,
            credentials_mode: Some("Manual".into()),
            ..Scenario::default()
        },
        None,
    )
    .await;
    let tgt = h.sim.target().server.clone();
    h.expect_refused(
        "manual-cco",
        |_| {},
        &[
            "Manual mode",
            "openshift-machine-api/vsphere-cloud-credentials",
            "openshift-cloud-controller-manager/vsphere-cloud-credentials",
            "openshift-cluster-csi-drivers/vmware-vsphere-cloud-credentials",
            &format!("{tgt}.username"),
        ],
    )
    .await;
    h.shutdown().await;
}

/// Issue 13 item 6: the machine controller finds the template by name (a duplicate name
/// fails) and refuses hardware below 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_or_old_templates_are_refused() {
    let h = Harness::start(
        Scenario {
            workers: 1,
            target_vcsim: Some(VcsimOptions {
                template_hardware_version: Some("vmx-13".into()),
                duplicate_template_folder: Some("content-library/copies".into()),
                ..VcsimOptions::default()
            }),
            ..Scenario::default()
        },
        None,
    )
    .await;
    h.expect_refused(
        "templates",
        |_| {},
        &[
            "2 VMs or templates in datacenter",
            "named \"rhcos-template\"",
            "multiple templates found",
            "virtual hardware version 13",
            "below 15",
        ],
    )
    .await;
    h.shutdown().await;
}

/// Issue 13 item 9: networks are plain port-group names attached to the compute cluster, the
/// resource pool lies in the compute cluster, and the privileges are the installer's (here
/// the VM power and cluster-edit privileges the machine API needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_machine_controller_needs_from_the_target_is_checked() {
    let limited = vcfm_vsphere::Credentials::new("limited@vsphere.local", "Limited-Passw0rd!");
    let h = Harness::start(
        Scenario {
            workers: 1,
            target_vcsim: Some(VcsimOptions {
                limited_user: Some(limited.clone()),
                limited_missing: vec![
                    "VirtualMachine.Interact.PowerOn".into(),
                    "Host.Inventory.EditCluster".into(),
                ],
                ..VcsimOptions::default()
            }),
            ..Scenario::default()
        },
        Some(("limited@vsphere.local", "Limited-Passw0rd!")),
    )
    .await;
    let t = h.sim.target().clone();
    h.expect_refused(
        "privileges",
        |_| {},
        &[
            "lacks privileges",
            "VirtualMachine.Interact.PowerOn",
            "Host.Inventory.EditCluster",
        ],
    )
    .await;
    let path = format!("/{}/network/{}", t.datacenter, t.network);
    h.expect_refused(
        "network-path",
        |m| m["spec"]["failureDomains"][0]["topology"]["networks"] = json!([path]),
        &[
            "must be a plain port group name",
            &format!("{:?}", t.network),
        ],
    )
    .await;
    // vcsim's standalone host DC0_H0 has its own root pool, outside the cluster.
    let host_pool = format!("/{}/host/{}_H0/Resources", t.datacenter, t.datacenter);
    h.expect_refused(
        "foreign-pool",
        |m| m["spec"]["failureDomains"][0]["topology"]["resourcePool"] = json!(host_pool),
        &["does not belong to compute cluster", &t.compute_cluster],
    )
    .await;
    h.shutdown().await;
}

/// Issue 13 item 11: the cloud provider configuration is read where
/// `Infrastructure.spec.cloudConfig` says (here under key `cloud.conf`): `vcfm plan` shows
/// the target's entry added to it, and Preflight passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_config_is_found_where_the_infrastructure_names_it() {
    let h = Harness::start(
        Scenario {
            workers: 1,
            cloud_config_key: Some("cloud.conf".into()),
            ..Scenario::default()
        },
        None,
    )
    .await;
    let client = h.sim.client();
    let m: VmwareCloudFoundationMigration =
        serde_json::from_value(h.migration("pending", |m| m["spec"]["state"] = json!("Pending")))
            .unwrap();
    Api::<VmwareCloudFoundationMigration>::namespaced(client, NS)
        .create(&PostParams::default(), &m)
        .await
        .unwrap();
    let ca = h.bin.ca_bundle.to_str().unwrap().to_string();
    let out = h.bin.vcfm(&["plan", "pending", "--vcenter-ca-file", &ca]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = h.sim.target().server.clone();
    for s in [
        "Preflight: all checks passed.",
        "ConfigMap openshift-config/cloud-provider-config key cloud.conf (UpdateConfig):",
        &format!("    +   {t}:\n    +     server: {t}"),
    ] {
        assert!(text.contains(s), "plan lacks {s:?}:\n{text}");
    }
    h.shutdown().await;
}
