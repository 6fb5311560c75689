//! A small simulated cluster for the controller's own tests: kube-sim serving
//! the real OpenShift CRDs and ours, two TLS vcsim instances (source and
//! target), the objects phases 1–4 read, and a stand-in for the Deployment
//! controller so the CVO's pods really stop and start. The controller runs as
//! the real `vcfm controller` binary, so "kill it" means SIGKILL.

#![allow(dead_code)]

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube_sim::KubeSim;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use vcfm_api::VmwareCloudFoundationMigration;
use vcfm_vsphere::sim::{Vcsim, VcsimOptions};

pub type Vcfm = VmwareCloudFoundationMigration;
pub const NS: &str = "vcfm-system";
pub const INFRA_ID: &str = "mycluster-x7k2p";
pub const VERSION: &str = "4.18.9";

pub fn shared_dir() -> PathBuf {
    std::env::var_os("VCFM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve the day-2 CRD set and enable the VSphereMultiVCenterDay2 gate.
    pub gate: bool,
    /// How long the CVO's pods take to stop or start.
    pub cvo_delay_ms: u64,
}

pub struct Env {
    pub sim: KubeSim,
    pub client: kube::Client,
    pub source: Vcsim,
    pub target: Vcsim,
    pub dir: tempfile::TempDir,
    pub ca_bundle: PathBuf,
    deployments: JoinHandle<()>,
    controller: Option<Child>,
    log_files: Vec<PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.deployments.abort();
        self.kill_controller();
    }
}

fn yaml_docs(objs: &[Value]) -> String {
    objs.iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

impl Env {
    pub async fn start(opts: Options) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sim = KubeSim::builder()
            .kubeconfig_path(dir.path().join("kubeconfig"))
            .start()
            .await
            .unwrap();
        let crds = shared_dir().join(if opts.gate {
            "openshift-crds/multi-vcenter-day2"
        } else {
            "openshift-crds/default"
        });
        assert!(
            crds.is_dir(),
            "OpenShift CRDs not found at {} (set VCFM_SHARED_DIR)",
            crds.display()
        );
        sim.apply_yaml_dir(&crds).unwrap();
        sim.apply_yaml(&vcfm_api::crd_yaml().unwrap()).unwrap();
        let source = Vcsim::start_async(VcsimOptions::default()).await.unwrap();
        let target = Vcsim::start_async(VcsimOptions {
            limited_user: Some(vcfm_vsphere::Credentials::new(
                "limited@vsphere.local",
                "Limited-Passw0rd!",
            )),
            ..VcsimOptions::default()
        })
        .await
        .unwrap();
        let mut bundle = source.ca_pem().unwrap();
        bundle.extend(target.ca_pem().unwrap());
        let ca_bundle = dir.path().join("vcenter-ca.pem");
        std::fs::write(&ca_bundle, bundle).unwrap();
        sim.apply_yaml(&yaml_docs(&seed(&source, &target, opts.gate)))
            .unwrap();
        let client = sim.client().await.unwrap();
        let deployments = tokio::spawn(deployment_controller(
            client.clone(),
            Duration::from_millis(opts.cvo_delay_ms),
        ));
        Env {
            sim,
            client,
            source,
            target,
            dir,
            ca_bundle,
            deployments,
            controller: None,
            log_files: vec![],
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        self.sim.kubeconfig_path()
    }

    /// Starts `vcfm controller` as a child process (logs to a file per start).
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        let log = self
            .dir
            .path()
            .join(format!("controller-{}.log", self.log_files.len()));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vcfm"))
            .args([
                "controller",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--vcenter-ca-file",
            ])
            .arg(&self.ca_bundle)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("RUST_LOG", "info,vcfm_vsphere=trace,vcfm_controller=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        self.log_files.push(log);
        self.controller = Some(child);
    }

    /// A further `vcfm controller` process with extra arguments and
    /// environment, managed by the caller (for leader-election tests).
    pub fn spawn_controller(&mut self, extra: &[&str], envs: &[(&str, &str)]) -> Child {
        let log = self
            .dir
            .path()
            .join(format!("controller-{}.log", self.log_files.len()));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcfm"));
        cmd.args(["controller", "--log-format", "json", "--vcenter-ca-file"])
            .arg(&self.ca_bundle)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        self.log_files.push(log);
        cmd.spawn().unwrap()
    }

    /// SIGKILL: no graceful shutdown, no final status write.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything every controller process has logged so far.
    pub fn controller_logs(&self) -> String {
        self.log_files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the `vcfm` CLI against this cluster.
    pub fn vcfm(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_vcfm"))
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["-n", NS])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn api(&self) -> Api<Vcfm> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A migration to the target vcsim, with `tweak` applied to its JSON.
    pub fn migration(&self, name: &str, tweak: impl FnOnce(&mut Value)) -> Value {
        let inv = self.target.inventory();
        let dc = inv
            .datacenters
            .first()
            .cloned()
            .unwrap_or_else(|| "/DC0".into());
        let mut m = json!({
            "apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "state": "Running",
                "approvalMode": "Automatic",
                "targetVCenterCredentialsSecret": {"name": "target-creds"},
                "failureDomains": [{
                    "name": "target-fd",
                    "region": "region-b",
                    "zone": "zone-b",
                    "server": self.target.server(),
                    "topology": {
                        "datacenter": dc.trim_start_matches('/'),
                        "computeCluster": inv.clusters.first().cloned().unwrap_or_default(),
                        "datastore": inv.datastores.first().cloned().unwrap_or_default(),
                        "networks": [network_name(inv.networks.first().map(String::as_str).unwrap_or("VM Network"))],
                        // The cluster's own pool: the machine controller takes the pool's
                        // owner as the cluster (vcsim lists a standalone host's pool first).
                        "resourcePool": inv.clusters.first().map(|c| format!("{c}/Resources")),
                        "template": self.target.template_paths().first().cloned().unwrap_or_default(),
                    }
                }],
                "machineSetConfig": {"replicas": 2}
            }
        });
        if m["spec"]["failureDomains"][0]["topology"]["resourcePool"].is_null() {
            m["spec"]["failureDomains"][0]["topology"]
                .as_object_mut()
                .unwrap()
                .remove("resourcePool");
        }
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
        let start = Instant::now();
        loop {
            if let Ok(m) = self.api().get(name).await
                && pred(&m)
            {
                return m;
            }
            if start.elapsed() > timeout {
                let m = self.api().get(name).await.ok();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; status: {}\ncontroller log tail:\n{}",
                    serde_json::to_string_pretty(&m.and_then(|m| m.status)).unwrap(),
                    tail(
                        &self
                            .controller_logs()
                            .lines()
                            .filter(|l| !l.contains("TRACE"))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        25
                    )
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        list.items
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `reason note` of every Event about one migration.
    pub async fn events_for(&self, name: &str) -> Vec<String> {
        let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        list.items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                format!(
                    "{} {}",
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Waits (bounded) for an Event with this reason: Events are published
    /// right after the status write they describe.
    pub async fn wait_event(&self, reason: &str) {
        let start = Instant::now();
        loop {
            let reasons = self.event_reasons().await;
            if reasons.iter().any(|r| r == reason) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {reason} Event; have {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn event_reasons(&self) -> Vec<String> {
        let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        list.items.iter().filter_map(|e| e.reason.clone()).collect()
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn network_name(n: &str) -> String {
    n.rsplit('/').next().unwrap_or(n).to_string()
}

/// The objects of a small OpenShift-on-vSphere cluster that phases 1–4 read.
fn seed(source: &Vcsim, target: &Vcsim, gate: bool) -> Vec<Value> {
    let src = source.server();
    let inv = source.inventory();
    let dc = inv
        .datacenters
        .first()
        .cloned()
        .unwrap_or_else(|| "/DC0".into());
    let dc_name = dc.trim_start_matches('/').to_string();
    let mut objs = vec![];
    for ns in [
        "kube-system",
        "openshift-config",
        "openshift-cluster-version",
        "openshift-machine-api",
        NS,
    ] {
        objs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    objs.push(json!({
        "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"},
        "spec": {"cloudConfig": {"key": "config", "name": "cloud-provider-config"}, "platformSpec": {"type": "VSphere", "vsphere": {
            "apiServerInternalIPs": ["10.0.0.5"], "ingressIPs": ["10.0.0.6"], "machineNetworks": ["10.0.0.0/24"],
            "vcenters": [{"server": src, "port": 443, "datacenters": [dc_name]}],
            "failureDomains": [{"name": "generated-failure-domain", "region": "generated-region", "zone": "generated-zone", "server": src,
                "topology": {"datacenter": dc_name, "computeCluster": inv.clusters.first().cloned().unwrap_or_default(),
                    "datastore": inv.datastores.first().cloned().unwrap_or_default(), "networks": ["VM Network"],
                    "resourcePool": inv.resource_pools.first().cloned(), "folder": format!("{dc}/vm/{INFRA_ID}"), "template": format!("{dc}/vm/{INFRA_ID}-rhcos")}}],
            "nodeNetworking": {"external": {"networkSubnetCidr": ["10.0.0.0/24"]}, "internal": {"networkSubnetCidr": ["10.0.0.0/24"]}}}}},
        "status": {"infrastructureName": INFRA_ID, "platform": "VSphere", "platformStatus": {"type": "VSphere"},
            "apiServerURL": "https://api.mycluster.example.com:6443", "apiServerInternalURI": "https://api-int.mycluster.example.com:6443",
            "controlPlaneTopology": "HighlyAvailable", "infrastructureTopology": "HighlyAvailable", "etcdDiscoveryDomain": "", "cpuPartitioning": "None"}
    }));
    objs.push(json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion", "metadata": {"name": "version"},
        "spec": {"clusterID": "6f0c0d8a-2f4b-4d9a-8a0e-0a5b8d5e7c11", "channel": "stable-4.18"},
        "status": {"desired": {"version": VERSION, "image": "quay.io/openshift-release-dev/ocp-release@sha256:00"},
            "conditions": [
                {"type": "Available", "status": "True", "lastTransitionTime": "2025-03-02T11:00:00Z"},
                {"type": "Progressing", "status": "False", "lastTransitionTime": "2025-03-02T11:00:00Z"},
                {"type": "Failing", "status": "False", "lastTransitionTime": "2025-03-02T11:00:00Z"}],
            "history": [], "observedGeneration": 1, "versionHash": "x", "availableUpdates": null}
    }));
    let (enabled, disabled) = if gate {
        (vec![json!({"name": "VSphereMultiVCenterDay2"})], vec![])
    } else {
        (vec![], vec![json!({"name": "VSphereMultiVCenterDay2"})])
    };
    objs.push(json!({
        "apiVersion": "config.openshift.io/v1", "kind": "FeatureGate", "metadata": {"name": "cluster"},
        "spec": if gate { json!({"featureSet": "CustomNoUpgrade", "customNoUpgrade": {"enabled": ["VSphereMultiVCenterDay2"]}}) } else { json!({}) },
        "status": {"featureGates": [{"version": VERSION, "enabled": enabled, "disabled": disabled}]}
    }));
    for co in [
        "machine-api",
        "machine-config",
        "storage",
        "kube-apiserver",
        "cloud-controller-manager",
    ] {
        objs.push(json!({
            "apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator", "metadata": {"name": co}, "spec": {},
            "status": {"conditions": [
                {"type": "Available", "status": "True", "lastTransitionTime": "2025-03-02T11:00:00Z"},
                {"type": "Progressing", "status": "False", "lastTransitionTime": "2025-03-02T11:00:00Z"},
                {"type": "Degraded", "status": "False", "lastTransitionTime": "2025-03-02T11:00:00Z"}]}
        }));
    }
    for i in 0..3 {
        objs.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("{INFRA_ID}-master-{i}")},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": format!("10.0.0.1{i}")}]}}));
    }
    let creds = json!({
        format!("{src}.username"): source.username(),
        format!("{src}.password"): source.password(),
    });
    objs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vsphere-creds", "namespace": "kube-system"}, "type": "Opaque", "stringData": creds}));
    let tgt = target.server();
    objs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "target-creds", "namespace": NS}, "type": "Opaque",
        "stringData": {format!("{tgt}.username"): target.username(), format!("{tgt}.password"): target.password()}}));
    objs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cloud-provider-config", "namespace": "openshift-config"},
        "data": {"config": format!("global:\n  secretName: vsphere-creds\n  secretNamespace: kube-system\n  insecureFlag: false\nvcenter:\n  {src}:\n    server: {src}\n    port: 443\n    datacenters:\n    - {dc_name}\nlabels:\n  region: openshift-region\n  zone: openshift-zone\n")}}));
    objs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cluster-version-operator", "namespace": "openshift-cluster-version"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "cluster-version-operator"}},
            "template": {"metadata": {"labels": {"k8s-app": "cluster-version-operator"}}, "spec": {"containers": [{"name": "cluster-version-operator", "image": "quay.io/openshift/cvo"}]}}},
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}}));
    objs.push(json!({"apiVersion": "machine.openshift.io/v1", "kind": "ControlPlaneMachineSet", "metadata": {"name": "cluster", "namespace": "openshift-machine-api"},
        "spec": {"replicas": 3, "state": "Inactive", "strategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": {"machine.openshift.io/cluster-api-cluster": INFRA_ID, "machine.openshift.io/cluster-api-machine-role": "master", "machine.openshift.io/cluster-api-machine-type": "master"}},
            "template": {"machineType": "machines_v1beta1_machine_openshift_io", "machines_v1beta1_machine_openshift_io": {
                "failureDomains": {"platform": "VSphere", "vsphere": [{"name": "generated-failure-domain"}]},
                "metadata": {"labels": {"machine.openshift.io/cluster-api-cluster": INFRA_ID, "machine.openshift.io/cluster-api-machine-role": "master", "machine.openshift.io/cluster-api-machine-type": "master"}},
                "spec": {"providerSpec": {"value": {"apiVersion": "machine.openshift.io/v1beta1", "kind": "VSphereMachineProviderSpec", "numCPUs": 4, "memoryMiB": 16384, "diskGiB": 120,
                    "credentialsSecret": {"name": "vsphere-cloud-credentials"}, "userDataSecret": {"name": "master-user-data"}, "workspace": {}, "network": {"devices": [{"networkName": ""}]}, "template": ""}}}}}}}));
    objs.push(json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet", "metadata": {"name": format!("{INFRA_ID}-worker-0"), "namespace": "openshift-machine-api"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"machine.openshift.io/cluster-api-cluster": INFRA_ID, "machine.openshift.io/cluster-api-machineset": format!("{INFRA_ID}-worker-0")}},
            "template": {"metadata": {"labels": {"machine.openshift.io/cluster-api-cluster": INFRA_ID, "machine.openshift.io/cluster-api-machine-role": "worker", "machine.openshift.io/cluster-api-machine-type": "worker", "machine.openshift.io/cluster-api-machineset": format!("{INFRA_ID}-worker-0")}},
                "spec": {"providerSpec": {"value": {"apiVersion": "machine.openshift.io/v1beta1", "kind": "VSphereMachineProviderSpec", "template": format!("{INFRA_ID}-rhcos"),
                    "workspace": {"server": src, "datacenter": dc_name, "datastore": inv.datastores.first().cloned().unwrap_or_default(), "folder": format!("{dc}/vm/{INFRA_ID}")},
                    "network": {"devices": [{"networkName": "VM Network"}]}, "numCPUs": 4, "memoryMiB": 16384, "diskGiB": 120,
                    "credentialsSecret": {"name": "vsphere-cloud-credentials"}, "userDataSecret": {"name": "worker-user-data"}}}}}}}));
    objs
}

/// Stand-in for the Deployment controller: makes status follow spec.replicas
/// after `delay`, so waiting for the CVO to stop or start is real.
async fn deployment_controller(client: kube::Client, delay: Duration) {
    let api: Api<Deployment> = Api::all(client);
    let mut pending: std::collections::HashMap<String, (i32, Instant)> = Default::default();
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for d in list.items {
                let key = format!(
                    "{}/{}",
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default()
                );
                let want = d.spec.replicas.unwrap_or(1);
                let have = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                if want == have {
                    pending.remove(&key);
                    continue;
                }
                let since = pending.entry(key).or_insert((want, Instant::now()));
                if since.0 != want {
                    *since = (want, Instant::now());
                }
                if since.1.elapsed() >= delay {
                    let ns = d.metadata.namespace.clone().unwrap_or_default();
                    let patch = json!({"status": {"replicas": want, "readyReplicas": want, "availableReplicas": want, "updatedReplicas": want}});
                    let _ = Api::<Deployment>::namespaced(api.clone().into_client(), &ns)
                        .patch_status(
                            d.metadata.name.as_deref().unwrap_or(""),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// resourceVersion of every object of every listable kind, but Events and the
/// kinds in `skip` (what a read-only or refused run may legitimately write).
pub async fn all_objects(
    skip: &[&str],
    client: &kube::Client,
) -> std::collections::BTreeMap<String, String> {
    use kube::discovery::{Discovery, verbs};
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST)
                || ar.kind == "Event"
                || skip.contains(&ar.kind.as_str())
            {
                continue;
            }
            let list = Api::<DynamicObject>::all_with(client.clone(), &ar)
                .list(&ListParams::default())
                .await
                .unwrap();
            for o in list.items {
                out.insert(
                    format!(
                        "{} {}/{}",
                        ar.kind,
                        o.metadata.namespace.unwrap_or_default(),
                        o.metadata.name.unwrap_or_default()
                    ),
                    o.metadata.resource_version.unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// Categories, tags, VM folders and VMs (with power state) of one simulated vCenter.
pub async fn vcenter_state(
    sim: &openshift_sim::SimCluster,
    site: openshift_sim::Site,
) -> std::collections::BTreeSet<String> {
    let vc = sim.vsphere_client(site).unwrap();
    let info = sim.vcenter(site);
    let mut out = std::collections::BTreeSet::new();
    for c in vc.list_categories().await.unwrap() {
        out.insert(format!("category {c}"));
    }
    for t in vc.list_tags().await.unwrap() {
        out.insert(format!("tag {t}"));
    }
    let root = vc
        .find_folder(&format!("/{}/vm", info.datacenter))
        .await
        .unwrap();
    for child in vc.folder_children(&root).await.unwrap() {
        out.insert(format!("child {child:?}"));
    }
    for v in vc.list_vms(&root, true).await.unwrap() {
        out.insert(format!("vm {} {} {}", v.vm, v.name, v.power_state));
    }
    let _ = vc.logout().await;
    out
}
