//! Phases 1–10 one at a time (the phase tests): the failure domain they add, what those
//! phases touch on the cluster and the target, and re-running a phase in-process as a
//! controller resuming after a crash would.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use openshift_sim::Site;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use vcfm_api::openshift::Infrastructure;
use vcfm_api::{PhaseName, PhaseState, PhaseStatus};
use vcfm_controller::context::{PhaseCtx, Shared, StatusUpdates};
use vcfm_controller::state::Outcome;

use crate::{
    Env, TARGET_SECRET, Vcfm, assert_not_failed, failure_domain_spec, phase_done, summary,
    waiting_for_approval,
};

pub const FD: &str = "target-fd";
pub const REGION: &str = "target-region";
pub const ZONE: &str = "target-zone";
pub const CRD: &str = "infrastructures.config.openshift.io";

/// Phases 1–10, the ones under test.
pub const FIRST_TEN: &[PhaseName] = PhaseName::ALL.split_at(10).0;

impl Env {
    /// One target failure domain ([`FD`]) on the target vcsim, one worker, default
    /// folder, no rollback on failure.
    pub fn phase_spec(&self, manual: bool) -> Value {
        json!({
            "state": "Running",
            "approvalMode": if manual { "Manual" } else { "Automatic" },
            "targetVCenterCredentialsSecret": {"name": TARGET_SECRET},
            "failureDomains": [failure_domain_spec(FD, REGION, ZONE, self.sim.target())],
            "machineSetConfig": {"replicas": 1},
            "rollbackOnFailure": false,
        })
    }

    /// Manual mode: approves `phases` one at a time, each only once the
    /// migration shows it waiting and still waits a moment later (proving
    /// Manual really pauses).
    pub async fn approve_manually(&self, name: &str, phases: &[PhaseName]) {
        self.approve_in_turn(name, phases, true).await;
    }

    /// Approves `phases` one at a time, each once the migration shows it waiting.
    pub async fn approve_each(&self, name: &str, phases: &[PhaseName]) {
        self.approve_in_turn(name, phases, false).await;
    }

    async fn approve_in_turn(&self, name: &str, phases: &[PhaseName], still_waits: bool) {
        for p in phases {
            let p = *p;
            self.wait(
                name,
                &format!("{p} waiting for approval"),
                Duration::from_secs(60),
                |m| {
                    assert_not_failed(m);
                    waiting_for_approval(m) == Some(p)
                },
            )
            .await;
            if still_waits {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let m = self.api().get(name).await.unwrap();
                assert_eq!(waiting_for_approval(&m), Some(p), "{}", summary(&m));
            }
            self.approve(name, &[p]).await;
        }
    }

    pub async fn wait_completed(&self, name: &str, phase: PhaseName) -> Vcfm {
        self.wait(
            name,
            &format!("{phase} completed"),
            Duration::from_secs(90),
            |m| {
                assert_not_failed(m);
                phase_done(m, phase)
            },
        )
        .await
    }

    /// Everything phases 5–10 may change, including resourceVersions.
    pub async fn observe(&self) -> Observed {
        let c = self.client.clone();
        let infra = Api::<Infrastructure>::all(c.clone())
            .get("cluster")
            .await
            .unwrap();
        let crd = Api::<CustomResourceDefinition>::all(c.clone())
            .get(CRD)
            .await
            .unwrap();
        let cm = Api::<ConfigMap>::namespaced(c.clone(), "openshift-config")
            .get("cloud-provider-config")
            .await
            .unwrap();
        let creds = Api::<Secret>::namespaced(c.clone(), "kube-system")
            .get("vsphere-creds")
            .await
            .unwrap();
        let cvo = Api::<Deployment>::namespaced(c.clone(), "openshift-cluster-version")
            .get("cluster-version-operator")
            .await
            .unwrap();
        let mut pods = BTreeSet::new();
        // Listed here, not taken from the product: the test observes independently.
        for ns in [
            "openshift-cloud-controller-manager",
            "openshift-cloud-controller-manager-operator",
            "openshift-machine-api",
            "openshift-cluster-csi-drivers",
            "openshift-cluster-storage-operator",
            "openshift-machine-config-operator",
        ] {
            for p in Api::<Pod>::namespaced(c.clone(), ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
            {
                if p.metadata.deletion_timestamp.is_none() {
                    pods.insert(p.metadata.uid.unwrap_or_default());
                }
            }
        }
        Observed {
            versions: BTreeMap::from([
                (
                    "infrastructure",
                    infra.metadata.resource_version.clone().unwrap_or_default(),
                ),
                (
                    "crd",
                    crd.metadata.resource_version.clone().unwrap_or_default(),
                ),
                (
                    "cloud-provider-config",
                    cm.metadata.resource_version.clone().unwrap_or_default(),
                ),
                (
                    "vsphere-creds",
                    creds.metadata.resource_version.clone().unwrap_or_default(),
                ),
                (
                    "cvo",
                    cvo.metadata.resource_version.clone().unwrap_or_default(),
                ),
            ]),
            infra_spec: serde_json::to_value(&infra.spec).unwrap(),
            vcenters: infra.vcenters().iter().map(|v| v.server.clone()).collect(),
            crd_spec: serde_json::to_value(&crd.spec).unwrap(),
            cloud_config: cm
                .data
                .unwrap_or_default()
                .get("config")
                .cloned()
                .unwrap_or_default(),
            creds: creds
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, hex::encode(Sha256::digest(&v.0))))
                .collect(),
            cvo_replicas: cvo.spec.replicas.unwrap_or(1),
            pods,
            target: self.target_state().await,
        }
    }

    /// Categories, tags and the attachments/folder the migration cares about on the target.
    pub async fn target_state(&self) -> TargetState {
        let vc = self
            .sim
            .vsphere_client(Site::Target)
            .expect("vsphere client");
        let t = self.sim.target();
        let mut categories = BTreeMap::new();
        let mut tag_names = BTreeMap::new();
        for id in vc.list_categories().await.unwrap() {
            let c = vc.get_category(&id).await.unwrap();
            categories.insert(c.name.clone(), (id.clone(), c.description.clone()));
            for tid in vc.list_tags_for_category(&id).await.unwrap() {
                let tag = vc.get_tag(&tid).await.unwrap();
                tag_names.insert(tid, format!("{}/{}", c.name, tag.name));
            }
        }
        let names = |ids: Vec<String>| -> BTreeSet<String> {
            ids.iter()
                .map(|i| tag_names.get(i).cloned().unwrap_or_else(|| i.clone()))
                .collect()
        };
        let dc = vc
            .find_datacenter(&format!("/{}", t.datacenter))
            .await
            .unwrap();
        let cluster = vc.find_cluster(&t.compute_cluster).await.unwrap();
        let folder = vc.find_by_inventory_path(&t.folder).await.unwrap();
        let folder_tags = match &folder {
            Some(f) => Some(names(vc.list_attached_tags(f).await.unwrap())),
            None => None,
        };
        TargetState {
            categories,
            tags: tag_names.values().cloned().collect(),
            datacenter_tags: names(vc.list_attached_tags(&dc).await.unwrap()),
            cluster_tags: names(vc.list_attached_tags(&cluster).await.unwrap()),
            folder: folder.map(|f| f.to_string()),
            folder_tags,
        }
    }

    /// Runs one phase's execute again, in-process, as a controller resuming it
    /// after a crash would: the phase shown Running since its recorded start.
    pub async fn rerun(&self, name: &str, phase: PhaseName) -> (Outcome, StatusUpdates) {
        let mut m = self.api().get(name).await.unwrap();
        let st = m.status.as_mut().unwrap();
        let start = st
            .phase_history
            .iter()
            .rev()
            .find(|h| h.phase == phase)
            .and_then(|h| h.start_time.clone());
        st.current_phase_state = Some(running(phase, start, None));
        let ctx = self.phase_ctx(m);
        let imp = vcfm_controller::phases::phase(phase);
        imp.validate(&ctx).await.expect("validate");
        let out = imp.execute(&ctx).await.expect("execute");
        let (_, updates) = ctx.take();
        (out, updates)
    }

    /// Runs one step of a phase in-process on a migration object that need
    /// not exist in the API (its namespace must hold the target Secret).
    pub async fn execute_once(
        &self,
        m: Vcfm,
        phase: PhaseName,
    ) -> (
        Result<Outcome, vcfm_controller::error::PhaseError>,
        StatusUpdates,
    ) {
        let ctx = self.phase_ctx(m);
        let out = vcfm_controller::phases::phase(phase).execute(&ctx).await;
        let (_, updates) = ctx.take();
        (out, updates)
    }

    /// A phase context as the controller builds it, on the admin client.
    fn phase_ctx(&self, m: Vcfm) -> PhaseCtx {
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            config: self.config(),
            sessions: vcfm_vsphere::SessionCache::default(),
            metrics: Arc::new(vcfm_controller::metrics::Metrics::default()),
        });
        PhaseCtx::new(shared, Arc::new(m), Timestamp::now())
    }

    /// The CRD's vcenters rules, per version.
    pub async fn crd_rules(&self) -> Value {
        let crd = Api::<CustomResourceDefinition>::all(self.client.clone())
            .get(CRD)
            .await
            .unwrap();
        crate::crd_vcenter_rules(&crd)
    }
}

/// `phase` as the controller shows it while executing: Running since `start`.
pub fn running(
    phase: PhaseName,
    start: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    heartbeat: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> PhaseState {
    PhaseState {
        name: phase,
        status: PhaseStatus::Running,
        progress: 0,
        message: String::new(),
        waiting_for: vec![],
        requires_approval: false,
        approved: false,
        start_time: start,
        last_heartbeat: heartbeat,
        paused_seconds: 0,
        paused_since: None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub versions: BTreeMap<&'static str, String>,
    pub infra_spec: Value,
    pub vcenters: Vec<String>,
    pub crd_spec: Value,
    pub cloud_config: String,
    /// Key → SHA-256 of the value (no secrets in test output).
    pub creds: BTreeMap<String, String>,
    pub cvo_replicas: i32,
    /// UIDs of the live pods in the vSphere-related namespaces.
    pub pods: BTreeSet<String>,
    pub target: TargetState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// Name → (id, description).
    pub categories: BTreeMap<String, (String, String)>,
    /// `category/tag`.
    pub tags: BTreeSet<String>,
    pub datacenter_tags: BTreeSet<String>,
    pub cluster_tags: BTreeSet<String>,
    pub folder: Option<String>,
    pub folder_tags: Option<BTreeSet<String>>,
}

/// Asserts what phases 5–10 must have left on the cluster and the target.
pub fn assert_taught_target(env: &Env, o: &Observed) {
    let (src, tgt) = (&env.sim.source().server, &env.sim.target().server);
    let id = env.sim.infra_id();
    assert_eq!(
        o.vcenters,
        [src.clone(), tgt.clone()],
        "source first, target appended"
    );
    let fds = o.infra_spec["platformSpec"]["vsphere"]["failureDomains"]
        .as_array()
        .unwrap();
    assert_eq!(fds.len(), 2);
    assert_eq!(fds[1]["name"], FD);
    assert_eq!(fds[1]["server"], tgt.as_str());
    assert_eq!(
        fds[1]["topology"]["folder"],
        format!("/{}/vm/{id}", env.sim.target().datacenter)
    );
    assert_eq!(
        fds[1]["topology"]["template"],
        env.sim.target().template.as_str()
    );
    for s in [src, tgt] {
        assert!(
            o.cloud_config.contains(s.as_str()),
            "{s} in config:\n{}",
            o.cloud_config
        );
        assert!(o.creds.contains_key(&format!("{s}.username")));
        assert!(o.creds.contains_key(&format!("{s}.password")));
    }
    let t = &o.target;
    for c in [
        "openshift-region",
        "openshift-zone",
        &format!("openshift-{id}"),
    ] {
        assert!(t.categories.contains_key(c), "category {c}: {t:?}");
    }
    for tag in [
        format!("openshift-region/{REGION}"),
        format!("openshift-zone/{ZONE}"),
        format!("openshift-{id}/{id}"),
    ] {
        assert!(t.tags.contains(&tag), "tag {tag}: {t:?}");
    }
    assert!(
        t.datacenter_tags
            .contains(&format!("openshift-region/{REGION}")),
        "{t:?}"
    );
    assert!(
        t.cluster_tags.contains(&format!("openshift-zone/{ZONE}")),
        "{t:?}"
    );
    assert!(
        t.folder.is_some(),
        "folder {}: {t:?}",
        env.sim.target().folder
    );
    assert_eq!(
        t.folder_tags.as_ref().unwrap(),
        &BTreeSet::from([format!("openshift-{id}/{id}")])
    );
}

/// Re-runs phases 2–10 after completion and asserts nothing changes.
/// (Preflight is excluded: after UpdateInfrastructure it rightly refuses a
/// cluster that already lists the target.)
pub async fn assert_idempotent(env: &Env, name: &str) {
    let before = env.observe().await;
    let recorded = env
        .api()
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap()
        .created_vsphere_objects;
    for p in &FIRST_TEN[4..] {
        let (out, updates) = env.rerun(name, *p).await;
        assert!(
            matches!(out, Outcome::Completed { .. }),
            "{p} re-run: {out:?}"
        );
        for c in &updates.created {
            assert!(
                recorded
                    .iter()
                    .any(|r| r.server == c.server && r.kind == c.kind && r.id == c.id),
                "{p} re-run recorded a new object {c:?}"
            );
        }
    }
    let after = env.observe().await;
    assert_eq!(before, after, "re-running phases 2-10 changed something");
}
