//! The `vcfm` binary's tests: the one harness (`testbed`) with a cluster seeded by
//! openshift-sim on the tier `VCFM_TIER` names, the target credentials Secret in
//! [`NS`], and the real `vcfm controller` executable (so "kill it" means SIGKILL).

#![allow(dead_code, unused_imports)]

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use openshift_sim::{Delays, Scenario, SimCluster, Site, VcenterInfo};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use testbed::{Binary, tail};
use vcfm_api::VmwareCloudFoundationMigration;
use vcfm_vsphere::sim::VcsimOptions;

pub use testbed::{all_objects, vcenter_inventory as vcenter_state};

pub type Vcfm = VmwareCloudFoundationMigration;
pub const NS: &str = "vcfm-system";
/// The target vCenter's user whose role lacks `Folder.Create` (vcsim's default
/// `limited_missing`), and its password.
pub const LIMITED: (&str, &str) = ("limited@vsphere.local", "Limited-Passw0rd!");

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve the day-2 CRD set and enable the VSphereMultiVCenterDay2 gate.
    pub gate: bool,
    /// How long the CVO's pods take to stop or start.
    pub cvo_delay_ms: u64,
}

pub struct Env {
    pub sim: Cluster,
    pub client: kube::Client,
    pub source: Vcenter,
    pub target: Vcenter,
    /// Scratch space for the test's own files.
    pub dir: tempfile::TempDir,
    pub bin: Binary,
}

/// The seeded cluster ([`SimCluster`] through `Deref`), with kube-sim's fault injection as
/// `faults()` (sim tier only).
pub struct Cluster(SimCluster);

impl std::ops::Deref for Cluster {
    type Target = SimCluster;
    fn deref(&self) -> &SimCluster {
        &self.0
    }
}

impl Cluster {
    pub fn faults(&self) -> kube_sim::Faults {
        self.0.kube().faults()
    }
}

/// One simulated vCenter ([`VcenterInfo`] through `Deref`), with accessors and a client.
pub struct Vcenter {
    info: VcenterInfo,
    client: vcfm_vsphere::Client,
    limited: Option<vcfm_vsphere::Credentials>,
}

impl std::ops::Deref for Vcenter {
    type Target = VcenterInfo;
    fn deref(&self) -> &VcenterInfo {
        &self.info
    }
}

impl Vcenter {
    fn new(sim: &SimCluster, site: Site, limited: Option<vcfm_vsphere::Credentials>) -> Self {
        Vcenter {
            info: sim.vcenter(site).clone(),
            client: sim.vsphere_client(site).unwrap(),
            limited,
        }
    }
    pub fn server(&self) -> &str {
        &self.info.server
    }
    pub fn username(&self) -> &str {
        &self.info.username
    }
    pub fn password(&self) -> &str {
        &self.info.password
    }
    /// The administrator's vSphere client.
    pub fn client(&self) -> Result<vcfm_vsphere::Client, std::convert::Infallible> {
        Ok(self.client.clone())
    }
    /// The user whose role lacks privileges ([`LIMITED`]), on the target.
    pub fn limited_credentials(&self) -> Option<vcfm_vsphere::Credentials> {
        self.limited.clone()
    }
}

impl Env {
    pub async fn start(opts: Options) -> Env {
        testbed::init_tracing();
        let sim = SimCluster::start(Scenario {
            multi_vcenter_day2_gate: opts.gate,
            delays: Delays {
                deployment_ready: Duration::from_millis(opts.cvo_delay_ms),
                ..Delays::instant()
            },
            target_vcsim: Some(VcsimOptions {
                limited_user: Some(vcfm_vsphere::Credentials::new(LIMITED.0, LIMITED.1)),
                ..VcsimOptions::default()
            }),
            ..Scenario::default()
        })
        .await
        .unwrap();
        let client = sim.client();
        testbed::seed_migration_namespace(&client, NS, "target-creds", sim.target(), None)
            .await
            .unwrap();
        let bin = Binary::new(env!("CARGO_BIN_EXE_vcfm"), &sim, NS);
        let limited = vcfm_vsphere::Credentials::new(LIMITED.0, LIMITED.1);
        Env {
            source: Vcenter::new(&sim, Site::Source, None),
            target: Vcenter::new(&sim, Site::Target, Some(limited)),
            dir: tempfile::tempdir().unwrap(),
            client,
            bin,
            sim: Cluster(sim),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.bin.kubeconfig
    }

    /// Starts `vcfm controller` as a child process (logs to a file per start).
    pub fn start_controller(&mut self) {
        self.bin.start_controller();
    }

    /// A further `vcfm controller` process with extra arguments and
    /// environment, managed by the caller (for leader-election tests).
    pub fn spawn_controller(&mut self, extra: &[&str], envs: &[(&str, &str)]) -> Child {
        self.bin.spawn_controller(extra, envs)
    }

    /// SIGKILL: no graceful shutdown, no final status write.
    pub fn kill_controller(&mut self) {
        self.bin.kill_controller();
    }

    /// Everything every controller process has logged so far.
    pub fn controller_logs(&self) -> String {
        self.bin.controller_logs()
    }

    /// Runs the `vcfm` CLI against this cluster.
    pub fn vcfm(&self, args: &[&str]) -> std::process::Output {
        self.bin.vcfm(args)
    }

    pub fn api(&self) -> Api<Vcfm> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A migration to the target vcsim, with `tweak` applied to its JSON.
    pub fn migration(&self, name: &str, tweak: impl FnOnce(&mut Value)) -> Value {
        let mut m = json!({
            "apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "state": "Running",
                "approvalMode": "Automatic",
                "targetVCenterCredentialsSecret": {"name": "target-creds"},
                "failureDomains": [testbed::failure_domain_spec("target-fd", "region-b", "zone-b", &self.target)],
                "machineSetConfig": {"replicas": 2}
            }
        });
        tweak(&mut m);
        m
    }

    pub async fn create(&self, m: &Value) -> Result<Vcfm, kube::Error> {
        let obj: Vcfm = serde_json::from_value(m.clone()).unwrap();
        self.api().create(&PostParams::default(), &obj).await
    }

    /// Polls until `pred` holds (or panics at the deadline with the last status).
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Vcfm) -> bool,
    ) -> Vcfm {
        testbed::wait_for_migration(&self.api(), name, what, timeout, pred, |m| {
            format!(
                "status: {}\ncontroller log tail:\n{}",
                serde_json::to_string_pretty(&m.and_then(|m| m.status.as_ref())).unwrap(),
                tail(
                    &self
                        .controller_logs()
                        .lines()
                        .filter(|l| !l.contains("TRACE"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    25
                )
            )
        })
        .await
    }

    pub async fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> std::collections::BTreeMap<String, String> {
        let s: k8s_openapi::api::core::v1::Secret = Api::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .unwrap();
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    }

    pub async fn cvo_replicas(&self) -> i32 {
        let d: Deployment = Api::namespaced(self.client.clone(), "openshift-cluster-version")
            .get("cluster-version-operator")
            .await
            .unwrap();
        d.spec.replicas.unwrap_or(0)
    }

    /// resourceVersion of every object in the namespaces and kinds phases 1–4 may touch.
    pub async fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let kinds: &[(&str, &str, &str, &str)] = &[
            ("", "v1", "Secret", "secrets"),
            ("", "v1", "ConfigMap", "configmaps"),
            ("apps", "v1", "Deployment", "deployments"),
            (
                "config.openshift.io",
                "v1",
                "Infrastructure",
                "infrastructures",
            ),
            (
                "machine.openshift.io",
                "v1beta1",
                "MachineSet",
                "machinesets",
            ),
            (
                "machine.openshift.io",
                "v1",
                "ControlPlaneMachineSet",
                "controlplanemachinesets",
            ),
            (
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
            ),
        ];
        for (g, v, k, p) in kinds {
            let ar = kube::core::ApiResource {
                group: g.to_string(),
                version: v.to_string(),
                api_version: if g.is_empty() {
                    v.to_string()
                } else {
                    format!("{g}/{v}")
                },
                kind: k.to_string(),
                plural: p.to_string(),
            };
            let list = Api::<DynamicObject>::all_with(self.client.clone(), &ar)
                .list(&ListParams::default())
                .await
                .unwrap();
            for o in list.items {
                out.push((
                    format!(
                        "{k} {}/{}",
                        o.metadata.namespace.unwrap_or_default(),
                        o.metadata.name.unwrap_or_default()
                    ),
                    o.metadata.resource_version.unwrap_or_default(),
                ));
            }
        }
        out.sort();
        out
    }

    /// Text of every Event about the migration.
    pub async fn events_text(&self) -> String {
        testbed::event_notes(&self.client, NS, None)
            .await
            .join("\n")
    }

    /// `reason note` of every Event about one migration.
    pub async fn events_for(&self, name: &str) -> Vec<String> {
        testbed::event_notes(&self.client, NS, Some(name)).await
    }

    /// Waits (bounded) for an Event with this reason.
    pub async fn wait_event(&self, reason: &str) {
        testbed::wait_event(&self.client, NS, None, reason, Duration::from_secs(10)).await;
    }

    pub async fn event_reasons(&self) -> Vec<String> {
        testbed::event_notes(&self.client, NS, None)
            .await
            .into_iter()
            .map(|n| n.split_once(' ').map_or(n.clone(), |(r, _)| r.to_string()))
            .collect()
    }
}
