//! Everything a migration may change, in comparable form: the end state a test asserts.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use openshift_sim::Site;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use vcfm_api::openshift::{
    ControlPlaneMachineSet, Infrastructure, MACHINE_API_NAMESPACE, Machine, MachineSet,
};

use crate::Env;

impl Env {
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
        let rules = crd_vcenter_rules(&crd);
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
            crd_vcenter_rules: rules,
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

/// The Infrastructure CRD's `x-kubernetes-validations` on `vcenters`, per version: what
/// the gate-off path lifts and must restore (read as the simulated CVO reads them).
pub fn crd_vcenter_rules(crd: &CustomResourceDefinition) -> Value {
    Value::Array(openshift_sim::vcenter_rules(
        &serde_json::to_value(crd).unwrap(),
    ))
}
