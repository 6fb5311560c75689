//! End-to-end harness: an openshift-sim cluster (kube-sim + two vcsims +
//! simulated operators), the controller run in-process against it over HTTP,
//! and snapshots of everything a migration may change, to compare end states.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Site};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vcfm_api::openshift::{
    ControlPlaneMachineSet, Infrastructure, MACHINE_API_NAMESPACE, Machine, MachineSet,
};
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus, VmwareCloudFoundationMigration};
use vcfm_controller::{ControllerConfig, LeaderElection, RunOptions};

pub type Vcfm = VmwareCloudFoundationMigration;

pub const NS: &str = "vcfm-e2e";
pub const TARGET_SECRET: &str = "target-vcenter-creds";
pub const FD: &str = "target-fd-1";
/// The identity the controller talks to kube-sim with (its requests are counted apart).
pub const CONTROLLER_USER: &str = "system:serviceaccount:vcfm:vcfm-controller";

/// Logs once per process when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A simulated cluster plus an in-process controller.
pub struct Env {
    pub sim: SimCluster,
    pub client: kube::Client,
    /// The controller's own client (user [`CONTROLLER_USER`]).
    pub controller_client: kube::Client,
    ca: Vec<u8>,
    controller: Option<(JoinHandle<()>, CancellationToken)>,
    pub leader_election: Option<LeaderElection>,
    pub listen: Option<std::net::SocketAddr>,
    /// MonitorHealth's settle window ([`ControllerConfig::health_settle`]).
    pub health_settle: Duration,
}

impl Env {
    pub async fn start(scenario: Scenario) -> Env {
        init_tracing();
        let sim = SimCluster::start(scenario)
            .await
            .expect("simulated cluster");
        let client = sim.client();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NS.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;
        let t = sim.target().clone();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(TARGET_SECRET.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([
                (format!("{}.username", t.server), t.username.clone()),
                (format!("{}.password", t.server), t.password.clone()),
            ])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("target secret");
        let controller_client = sim
            .client_for_user(CONTROLLER_USER, &["system:masters"])
            .await
            .expect("controller client");
        let mut ca = std::fs::read(&sim.source().ca_pem_path).expect("source CA");
        ca.extend(std::fs::read(&sim.target().ca_pem_path).expect("target CA"));
        Env {
            sim,
            client,
            controller_client,
            ca,
            controller: None,
            leader_election: None,
            listen: None,
            health_settle: Duration::from_secs(3),
        }
    }

    pub fn config(&self) -> ControllerConfig {
        ControllerConfig {
            vcenter_ca_pem: Some(self.ca.clone()),
            vcenter_insecure: false,
            vcenter_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(300),
            manager: "vcfm-controller".into(),
            // The simulated operators notice a change at once (Delays::operator_notice).
            health_settle: self.health_settle,
        }
    }

    /// Starts the controller (a no-op when it runs).
    pub fn spawn_controller(&mut self) {
        if self.controller.is_some() {
            return;
        }
        let token = CancellationToken::new();
        let opts = RunOptions {
            config: self.config(),
            leader_election: self.leader_election.clone(),
            listen: self.listen,
        };
        let client = self.controller_client.clone();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = vcfm_controller::run(client, opts, t).await {
                tracing::warn!(error = %e, "controller stopped with an error");
            }
        });
        self.controller = Some((handle, token));
    }

    /// Kills the controller at once (the task is aborted mid-flight, like a SIGKILL).
    pub async fn kill_controller(&mut self) {
        if let Some((h, _)) = self.controller.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Stops the controller gracefully.
    pub async fn stop_controller(&mut self) {
        if let Some((h, t)) = self.controller.take() {
            t.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    pub async fn shutdown(mut self) {
        self.kill_controller().await;
        self.sim.shutdown().await;
    }

    pub fn api(&self) -> Api<Vcfm> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// The migration spec for this cluster: one target failure domain (named
    /// `fd`) with the target's inventory, folder left to the default.
    pub fn spec(&self, fd: &str, workers: u32, manual: bool) -> Value {
        let t = self.sim.target();
        json!({
            "state": "Running",
            "approvalMode": if manual { "Manual" } else { "Automatic" },
            "targetVCenterCredentialsSecret": {"name": TARGET_SECRET},
            "failureDomains": [{
                "name": fd, "region": "target-region", "zone": "target-zone", "server": t.server,
                "topology": {"datacenter": t.datacenter, "computeCluster": t.compute_cluster,
                    "datastore": t.datastore, "networks": [t.network],
                    "resourcePool": t.resource_pool, "template": t.template}
            }],
            "machineSetConfig": {"replicas": workers},
            "rollbackOnFailure": true,
        })
    }

    pub async fn create_migration(&self, name: &str, spec: Value) -> Vcfm {
        let obj: Vcfm = serde_json::from_value(json!({
            "apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .expect("valid migration");
        self.api()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create migration")
    }

    /// Creates a Manual migration of `workers` per failure domain with every
    /// phase up to `upto` approved (`tweak` merged into the spec) and waits
    /// until the next phase waits for its approval.
    pub async fn migrate_through(
        &self,
        name: &str,
        workers: u32,
        upto: PhaseName,
        tweak: Value,
    ) -> Vcfm {
        let mut spec = self.spec(FD, workers, true);
        let approved: Vec<PhaseName> = PhaseName::ALL.into_iter().filter(|p| *p <= upto).collect();
        spec["approvedPhases"] = serde_json::to_value(&approved).unwrap();
        if let (Some(s), Some(t)) = (spec.as_object_mut(), tweak.as_object()) {
            s.extend(t.clone());
        }
        self.create_migration(name, spec).await;
        let next = upto.next().expect("a phase after upto");
        self.wait(
            name,
            &format!("{next} to wait for approval"),
            Duration::from_secs(180),
            |m| waiting_for_approval(m) == Some(next),
        )
        .await
    }

    /// What `vcfm approve NAME PHASE` does: append to spec.approvedPhases.
    pub async fn approve(&self, name: &str, phases: &[PhaseName]) {
        for _ in 0..10 {
            let m = self.api().get(name).await.expect("migration");
            let mut list = m.spec.approved_phases.clone();
            for p in phases {
                if !list.contains(p) {
                    list.push(*p);
                }
            }
            let patch = json!({"metadata": {"resourceVersion": m.metadata.resource_version},
                "spec": {"approvedPhases": list}});
            match self
                .api()
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => panic!("approving {phases:?}: {e}"),
            }
        }
        panic!("approving {phases:?} kept conflicting");
    }

    pub async fn set_state(&self, name: &str, state: &str) {
        self.api()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"state": state}})),
            )
            .await
            .expect("set state");
    }

    /// Polls the migration until `pred` holds; panics with a status summary on timeout.
    pub async fn wait(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Vcfm) -> bool,
    ) -> Vcfm {
        let start = Instant::now();
        loop {
            match self.api().get(name).await {
                Ok(m) => {
                    if pred(&m) {
                        return m;
                    }
                    if start.elapsed() > timeout {
                        panic!(
                            "timed out after {timeout:?} waiting for {what}:\n{}\n{}",
                            summary(&m),
                            self.sim.operator_logs(10).unwrap_or_default()
                        );
                    }
                }
                Err(e) if start.elapsed() > timeout => {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}: migration unreadable: {e}"
                    );
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_terminal(&self, name: &str, timeout: Duration) -> Vcfm {
        self.wait(name, "a terminal phase", timeout, |m| {
            m.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_terminal())
        })
        .await
    }

    /// Everything a migration may change, in comparable form.
    pub async fn snapshot(&self) -> ClusterState {
        let c = self.client.clone();
        let infra = Api::<Infrastructure>::all(c.clone())
            .get("cluster")
            .await
            .expect("infrastructure");
        let crd = Api::<CustomResourceDefinition>::all(c.clone())
            .get("infrastructures.config.openshift.io")
            .await
            .expect("infrastructure CRD");
        let crd_v = serde_json::to_value(&crd).unwrap();
        let rules: Vec<Value> = crd_v
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .map(|v| {
                        v.pointer("/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters/x-kubernetes-validations")
                            .cloned()
                            .unwrap_or(Value::Null)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let creds = Api::<Secret>::namespaced(c.clone(), "kube-system")
            .get("vsphere-creds")
            .await
            .expect("vsphere-creds");
        let creds: BTreeMap<String, String> = creds
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, hex::encode(Sha256::digest(&v.0))))
            .collect();
        let cloud_config = Api::<ConfigMap>::namespaced(c.clone(), "openshift-config")
            .get("cloud-provider-config")
            .await
            .expect("cloud-provider-config")
            .data
            .unwrap_or_default()
            .get("config")
            .cloned()
            .unwrap_or_default();
        let cpms = Api::<ControlPlaneMachineSet>::namespaced(c.clone(), MACHINE_API_NAMESPACE)
            .get("cluster")
            .await
            .ok()
            .map(|c| serde_json::to_value(&c.spec).unwrap())
            .unwrap_or(Value::Null);
        let machinesets: BTreeMap<String, Value> =
            Api::<MachineSet>::namespaced(c.clone(), MACHINE_API_NAMESPACE)
                .list(&ListParams::default())
                .await
                .expect("machinesets")
                .items
                .into_iter()
                .map(|ms| {
                    (
                        ms.metadata.name.clone().unwrap_or_default(),
                        serde_json::to_value(&ms.spec).unwrap(),
                    )
                })
                .collect();
        let machines: BTreeMap<String, String> =
            Api::<Machine>::namespaced(c.clone(), MACHINE_API_NAMESPACE)
                .list(&ListParams::default())
                .await
                .expect("machines")
                .items
                .into_iter()
                .map(|m| {
                    (
                        m.metadata.name.clone().unwrap_or_default(),
                        m.server().unwrap_or_default(),
                    )
                })
                .collect();
        let nodes: BTreeSet<String> = Api::<Node>::all(c.clone())
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        let cvo = Api::<Deployment>::namespaced(c.clone(), "openshift-cluster-version")
            .get("cluster-version-operator")
            .await
            .expect("cvo");
        ClusterState {
            infrastructure_spec: serde_json::to_value(&infra.spec).unwrap(),
            crd_vcenter_rules: Value::Array(rules),
            creds,
            cloud_config,
            cpms_spec: cpms,
            machinesets,
            machines,
            nodes,
            cvo_replicas: cvo.spec.replicas.unwrap_or(1),
            source: self.vcenter_state(Site::Source).await,
            target: self.vcenter_state(Site::Target).await,
        }
    }

    /// The cluster's VMs (by folder), folders and tags on one vCenter.
    pub async fn vcenter_state(&self, site: Site) -> VcenterState {
        let vc = self.sim.vsphere_client(site).expect("vsphere client");
        let info = self.sim.vcenter(site);
        let root = vc
            .find_folder(&format!("/{}/vm", info.datacenter))
            .await
            .expect("vm root folder");
        let mut vms = BTreeMap::new();
        let mut not_powered_on = BTreeSet::new();
        for v in vc.list_vms(&root, true).await.expect("list vms") {
            if v.template {
                continue;
            }
            if v.power_state != "poweredOn" {
                not_powered_on.insert(format!("{} ({})", v.name, v.power_state));
            }
            *vms.entry(v.name).or_insert(0usize) += 1;
        }
        let mut folders = BTreeMap::new();
        let children = vc.folder_children(&root).await.expect("vm folder children");
        let sub: Vec<vcfm_vsphere::MoRef> = children
            .into_iter()
            .filter(|c| c.kind == "Folder")
            .collect();
        if !sub.is_empty() {
            for o in vc
                .retrieve_properties("Folder", &sub, &["name"])
                .await
                .expect("folder names")
            {
                if let Some(n) = o.str("name") {
                    *folders.entry(n.to_string()).or_insert(0usize) += 1;
                }
            }
        }
        let folder = vc.find_folder(&info.folder).await.ok();
        let mut folder_vms = BTreeSet::new();
        if let Some(f) = &folder {
            for v in vc.list_vms(f, false).await.expect("list folder vms") {
                if !v.template {
                    folder_vms.insert(v.name);
                }
            }
        }
        let mut categories = BTreeMap::new();
        for id in vc.list_categories().await.expect("categories") {
            let c = vc.get_category(&id).await.expect("category");
            *categories.entry(c.name).or_insert(0usize) += 1;
        }
        let mut tags = BTreeMap::new();
        for id in vc.list_tags().await.expect("tags") {
            let t = vc.get_tag(&id).await.expect("tag");
            *tags.entry(t.name).or_insert(0usize) += 1;
        }
        let ownership_tagged = match (&folder, self.ownership_tag(&vc).await) {
            (Some(f), Some(tag)) => {
                let mut tagged = BTreeSet::new();
                for v in vc.list_vms(f, false).await.expect("list folder vms") {
                    if !v.template
                        && vc
                            .list_attached_tags(&v.vm)
                            .await
                            .expect("attached tags")
                            .contains(&tag)
                    {
                        tagged.insert(v.name);
                    }
                }
                tagged
            }
            _ => BTreeSet::new(),
        };
        VcenterState {
            vms,
            not_powered_on,
            folders,
            folder_exists: folder.is_some(),
            folder_vms,
            ownership_tagged,
            categories,
            tags,
        }
    }

    async fn ownership_tag(&self, vc: &vcfm_vsphere::Client) -> Option<String> {
        let cat = vc
            .find_category(&format!("openshift-{}", self.sim.infra_id()))
            .await
            .ok()??;
        let tag = vc.find_tag(&cat.id, self.sim.infra_id()).await.ok()??;
        Some(tag.id)
    }
}

/// One vCenter, as far as the cluster is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcenterState {
    /// VM name → how many VMs carry it (duplicates show as > 1).
    pub vms: BTreeMap<String, usize>,
    /// VMs (not templates) whose power state is not `poweredOn`.
    pub not_powered_on: BTreeSet<String>,
    /// Folder name → count, directly under the datacenter's VM folder.
    pub folders: BTreeMap<String, usize>,
    pub folder_exists: bool,
    pub folder_vms: BTreeSet<String>,
    /// VMs in the cluster folder carrying the ownership tag.
    pub ownership_tagged: BTreeSet<String>,
    /// Category name → count.
    pub categories: BTreeMap<String, usize>,
    /// Tag name → count.
    pub tags: BTreeMap<String, usize>,
}

/// Everything a migration may change.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterState {
    pub infrastructure_spec: Value,
    pub crd_vcenter_rules: Value,
    /// Key → SHA-256 of the value (no secrets in test output).
    pub creds: BTreeMap<String, String>,
    pub cloud_config: String,
    pub cpms_spec: Value,
    pub machinesets: BTreeMap<String, Value>,
    /// Machine → server.
    pub machines: BTreeMap<String, String>,
    pub nodes: BTreeSet<String>,
    pub cvo_replicas: i32,
    pub source: VcenterState,
    pub target: VcenterState,
}

/// Asserts two states are equal, naming the first field that differs.
pub fn assert_same_state(before: &ClusterState, after: &ClusterState, context: &str) {
    macro_rules! same {
        ($f:ident) => {
            assert_eq!(
                before.$f,
                after.$f,
                "{context}: {} differs from the seeded cluster",
                stringify!($f)
            );
        };
    }
    same!(infrastructure_spec);
    same!(crd_vcenter_rules);
    same!(creds);
    same!(cloud_config);
    same!(cpms_spec);
    same!(machinesets);
    same!(machines);
    same!(nodes);
    same!(cvo_replicas);
    same!(source);
    same!(target);
}

/// Checks the end state of a completed migration; returns the findings (empty = fine).
pub fn migrated_findings(env: &Env, st: &ClusterState, workers: usize) -> Vec<String> {
    let mut bad = vec![];
    let target = &env.sim.target().server;
    let source = &env.sim.source().server;
    let infra_id = env.sim.infra_id();
    let s = serde_json::to_string(&st.infrastructure_spec).unwrap();
    if s.contains(source.as_str()) {
        bad.push(format!("Infrastructure still mentions the source {source}"));
    }
    if !s.contains(target.as_str()) {
        bad.push("Infrastructure does not mention the target".into());
    }
    if st.cloud_config.contains(source.as_str()) || !st.cloud_config.contains(target.as_str()) {
        bad.push(format!(
            "cloud config not target-only:\n{}",
            st.cloud_config
        ));
    }
    if st
        .creds
        .keys()
        .any(|k| k.starts_with(&format!("{source}.")))
        || !st.creds.contains_key(&format!("{target}.username"))
    {
        bad.push(format!(
            "vsphere-creds keys not target-only: {:?}",
            st.creds.keys()
        ));
    }
    if st.cvo_replicas != 1 {
        bad.push(format!("CVO at {} replicas", st.cvo_replicas));
    }
    for (m, server) in &st.machines {
        if server != target {
            bad.push(format!("machine {m} on {server}"));
        }
    }
    let cluster_vms_on_source: Vec<&String> = st
        .source
        .vms
        .keys()
        .filter(|n| n.starts_with(infra_id))
        .collect();
    if !cluster_vms_on_source.is_empty() {
        bad.push(format!("source still has VMs {cluster_vms_on_source:?}"));
    }
    for (vm, n) in &st.target.vms {
        if *n > 1 {
            bad.push(format!("duplicate VM {vm} ×{n} on the target"));
        }
    }
    // Every VM the cluster runs on is on: a Machine says Running only once its VM was
    // powered on (machine-api-operator `pkg/controller/vsphere/reconciler.go` `powerOn`).
    let off: Vec<&String> = st
        .target
        .not_powered_on
        .iter()
        .filter(|n| n.starts_with(infra_id))
        .collect();
    if !off.is_empty() {
        bad.push(format!("target VMs not powered on: {off:?}"));
    }
    // The source's VM groups do not exist on the target (issue 13 item 8).
    for (name, spec) in &st.machinesets {
        if spec.to_string().contains("vmGroup") {
            bad.push(format!(
                "MachineSet {name} names a VM group of the source: {spec}"
            ));
        }
    }
    let masters = st
        .target
        .folder_vms
        .iter()
        .filter(|n| n.contains("-master-"))
        .count();
    let new_workers = st
        .target
        .folder_vms
        .iter()
        .filter(|n| n.contains("-worker-"))
        .count();
    if masters != 3 || new_workers != workers {
        bad.push(format!(
            "target folder holds {masters} masters and {new_workers} workers, expected 3 and {workers}: {:?}",
            st.target.folder_vms
        ));
    }
    if st.target.folder_vms.len()
        != st
            .target
            .vms
            .keys()
            .filter(|n| n.starts_with(infra_id))
            .count()
    {
        bad.push(format!(
            "cluster VMs outside the target folder: {:?} vs {:?}",
            st.target.vms, st.target.folder_vms
        ));
    }
    if st.target.ownership_tagged != st.target.folder_vms {
        bad.push(format!(
            "VMs without the ownership tag: {:?}",
            st.target
                .folder_vms
                .difference(&st.target.ownership_tagged)
                .collect::<Vec<_>>()
        ));
    }
    for (what, map) in [
        ("category", &st.target.categories),
        ("tag", &st.target.tags),
    ] {
        for (n, c) in map {
            if *c > 1 {
                bad.push(format!("duplicate {what} {n} ×{c} on the target"));
            }
        }
    }
    if st.machinesets.len() != 1
        || !st
            .machinesets
            .contains_key(&format!("{infra_id}-worker-{FD}"))
    {
        bad.push(format!(
            "MachineSets: {:?}",
            st.machinesets.keys().collect::<Vec<_>>()
        ));
    }
    if st.nodes.len() != 3 + workers {
        bad.push(format!("{} nodes: {:?}", st.nodes.len(), st.nodes));
    }
    bad
}

/// A readable account of where a migration stands.
pub fn summary(m: &Vcfm) -> String {
    let Some(s) = m.status.as_ref() else {
        return "no status".into();
    };
    let mut out = format!("phase {:?}", s.phase);
    if let Some(c) = &s.current_phase_state {
        out += &format!(
            "\ncurrent {} {:?} {}% {:?} waiting for {:?}",
            c.name, c.status, c.progress, c.message, c.waiting_for
        );
    }
    for c in &s.conditions {
        out += &format!(
            "\ncondition {}={} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    for h in &s.phase_history {
        out += &format!("\n  {} {:?} {}", h.phase, h.status, h.message);
        for l in h.logs.iter().rev().take(5).rev() {
            out += &format!("\n      [{:?}] {}", l.level, l.message);
        }
    }
    out
}

/// `phase=seconds` for each finished history entry.
pub fn durations(m: &Vcfm) -> String {
    m.status
        .as_ref()
        .map(|s| {
            s.phase_history
                .iter()
                .filter_map(|h| {
                    let (a, b) = (h.start_time.as_ref()?, h.completion_time.as_ref()?);
                    Some(format!(
                        "{}={:.1}s",
                        h.phase,
                        b.0.duration_since(a.0).as_secs_f64()
                    ))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub fn phase_of(m: &Vcfm) -> Option<MigrationPhase> {
    m.status.as_ref().and_then(|s| s.phase)
}

/// The phase waiting for approval, if any.
pub fn waiting_for_approval(m: &Vcfm) -> Option<PhaseName> {
    let c = m.status.as_ref()?.current_phase_state.as_ref()?;
    (c.status == PhaseStatus::WaitingForApproval).then_some(c.name)
}

/// Final status of each phase in history order.
pub fn history(m: &Vcfm) -> Vec<(PhaseName, PhaseStatus)> {
    m.status
        .as_ref()
        .map(|s| {
            s.phase_history
                .iter()
                .map(|h| (h.phase, h.status))
                .collect()
        })
        .unwrap_or_default()
}

/// A small deterministic generator (xorshift64*), so a failing seed replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}
