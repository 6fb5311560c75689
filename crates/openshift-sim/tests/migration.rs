//! A whole migration done by hand through the API, on each CRD feature set: the simulated
//! cluster supports every step the controller takes, and ends healthy on the target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, list_machines, machinesets, vms_in};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Site};
use vcfm_api::openshift::{ClusterOperator, ControlPlaneMachineSet, Infrastructure};

const DEADLINE: Duration = Duration::from_secs(60);
const CRD: &str = "infrastructures.config.openshift.io";

async fn scale_cvo(c: &kube::Client, replicas: i32) {
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "openshift-cluster-version");
    deps.patch(
        "cluster-version-operator",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
    )
    .await
    .unwrap();
    eventually("CVO scaled", DEADLINE, || async {
        let d = deps
            .get("cluster-version-operator")
            .await
            .map_err(|e| e.to_string())?;
        let st = d.status.unwrap_or_default();
        if st.observed_generation == d.metadata.generation
            && st.available_replicas.unwrap_or(0) == replicas
        {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
}

async fn set_vcenter_rule(c: &kube::Client, lifted: bool) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd = crds.get(CRD).await.unwrap();
    let mut v = serde_json::to_value(&crd).unwrap();
    if lifted {
        for ver in v["spec"]["versions"].as_array_mut().unwrap() {
            ver.pointer_mut("/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters")
                .unwrap().as_object_mut().unwrap().remove("x-kubernetes-validations");
        }
    }
    crds.replace(
        CRD,
        &PostParams::default(),
        &serde_json::from_value(v).unwrap(),
    )
    .await
    .unwrap();
}

async fn edit_infra(c: &kube::Client, f: impl FnOnce(&mut serde_json::Value)) {
    let api: Api<Infrastructure> = Api::all(c.clone());
    let mut v = serde_json::to_value(api.get("cluster").await.unwrap()).unwrap();
    f(&mut v["spec"]["platformSpec"]["vsphere"]);
    api.replace(
        "cluster",
        &PostParams::default(),
        &serde_json::from_value(v).unwrap(),
    )
    .await
    .unwrap();
}

async fn migrate(day2: bool) {
    let sim = SimCluster::start(Scenario {
        workers: 2,
        multi_vcenter_day2_gate: day2,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let (src, tgt) = (sim.source().clone(), sim.target().clone());
    let id = sim.infra_id().to_string();

    let cv: vcfm_api::openshift::ClusterVersion = Api::all(c.clone()).get("version").await.unwrap();
    let fg: vcfm_api::openshift::FeatureGate = Api::all(c.clone()).get("cluster").await.unwrap();
    assert_eq!(
        fg.is_enabled(cv.desired_version().unwrap(), "VSphereMultiVCenterDay2"),
        Some(day2)
    );

    // Target: credentials, ownership tag and folder.
    common::add_target_credentials(&sim).await;
    let tvc = sim.vsphere_client(Site::Target).unwrap();
    let folder = tvc.ensure_folder(&tgt.folder).await.unwrap();
    let cat = tvc
        .ensure_category(&vcfm_vsphere::CategorySpec {
            name: format!("openshift-{id}"),
            description: String::new(),
            cardinality: vcfm_vsphere::Cardinality::Single,
            associable_types: vec!["urn:vim25:VirtualMachine".into(), "urn:vim25:Folder".into()],
        })
        .await
        .unwrap();
    let tag = tvc.ensure_tag(&cat.id, &id, "").await.unwrap();
    tvc.attach_tag(&tag.id, &folder).await.unwrap();
    common::wait_target_credentials_propagated(&sim).await;

    // Infrastructure: legacy path lifts the rule with the CVO down.
    if !day2 {
        scale_cvo(&c, 0).await;
        set_vcenter_rule(&c, true).await;
    }
    edit_infra(&c, |vs| {
        vs["vcenters"].as_array_mut().unwrap().push(
            serde_json::json!({"server": tgt.server, "port": 443, "datacenters": [tgt.datacenter]}),
        );
        vs["failureDomains"]
            .as_array_mut()
            .unwrap()
            .push(openshift_sim::failure_domain_json(
                "target", "region-b", "zone-b", &tgt,
            ));
    })
    .await;

    // Workers on the target, then the control plane.
    let target_set = format!("{id}-worker-target");
    machinesets(&c)
        .create(
            &PostParams::default(),
            &common::target_machineset(&sim, &target_set, 2).await,
        )
        .await
        .unwrap();
    let cpms: Api<ControlPlaneMachineSet> = Api::namespaced(c.clone(), "openshift-machine-api");
    let patch = serde_json::json!({"spec": {"state": "Active", "template": {"machines_v1beta1_machine_openshift_io": {
        "failureDomains": {"platform": "VSphere", "vsphere": [{"name": "target"}]}}}}});
    cpms.patch("cluster", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("control plane on the target", DEADLINE, || async {
        let cp = cpms.get("cluster").await.map_err(|e| e.to_string())?;
        if cp.rollout_complete() {
            Ok(())
        } else {
            Err(format!("{:?}", cp.status))
        }
    })
    .await;

    // Old workers go, then the source vCenter.
    let source_set = format!("{id}-worker-0");
    machinesets(&c)
        .patch(
            &source_set,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually(
        "every machine on the target and running",
        DEADLINE,
        || async {
            let all = list_machines(&c).await;
            let ok = all.len() == 5
                && all.iter().all(|m| {
                    m.phase() == "Running" && m.server().as_deref() == Some(tgt.server.as_str())
                });
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    all.iter()
                        .map(|m| (m.metadata.name.clone(), m.phase().to_string(), m.server()))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
    machinesets(&c)
        .delete(&source_set, &DeleteParams::default())
        .await
        .unwrap();
    edit_infra(&c, |vs| {
        vs["vcenters"]
            .as_array_mut()
            .unwrap()
            .retain(|v| v["server"] != src.server.as_str());
        vs["failureDomains"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["server"] != src.server.as_str());
    })
    .await;
    let creds: Api<Secret> = Api::namespaced(c.clone(), "kube-system");
    let remove = serde_json::json!({"data": {format!("{}.username", src.server): null, format!("{}.password", src.server): null}});
    creds
        .patch(
            "vsphere-creds",
            &PatchParams::default(),
            &Patch::Merge(remove),
        )
        .await
        .unwrap();
    if !day2 {
        scale_cvo(&c, 1).await;
        eventually("rule restored by the CVO", DEADLINE, || async {
            let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
            let s =
                serde_json::to_string(&crds.get(CRD).await.map_err(|e| e.to_string())?).unwrap();
            if s.contains("vcenters cannot be added or removed once set") {
                Ok(())
            } else {
                Err("lifted".into())
            }
        })
        .await;
    }

    // Verify: healthy, only the target.
    let cos: Api<ClusterOperator> = Api::all(c.clone());
    eventually(
        "operators stable, machine-config included",
        DEADLINE,
        || async {
            let bad: Vec<_> = cos
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .filter(|co| !co.instability().is_empty())
                .map(|co| co.metadata.name)
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!("{bad:?}"))
            }
        },
    )
    .await;
    let infra: Infrastructure = Api::all(c.clone()).get("cluster").await.unwrap();
    assert_eq!(
        infra
            .vcenters()
            .iter()
            .map(|v| v.server.clone())
            .collect::<Vec<_>>(),
        vec![tgt.server.clone()]
    );
    let nodes: Api<Node> = Api::all(c.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    assert_eq!(vms_in(&tvc, &tgt.folder).await.unwrap().len(), 5);
    let svc = sim.vsphere_client(Site::Source).unwrap();
    eventually("source VMs gone", DEADLINE, || async {
        let left = vms_in(&svc, &src.folder).await?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    // Node-bound pods followed the nodes: CSI node pods and kube-controller-manager mirrors.
    let node_names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    let on_nodes = |ns: &'static str, labels: &'static str| {
        let c = c.clone();
        async move {
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c, ns);
            let items = pods
                .list(&ListParams::default().labels(labels))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let live: Vec<String> = items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
                .collect();
            Ok::<Vec<String>, String>(live)
        }
    };
    eventually("node-bound pods on the new nodes", DEADLINE, || async {
        let mut csi = on_nodes(
            "openshift-cluster-csi-drivers",
            "app=vmware-vsphere-csi-driver-node",
        )
        .await?;
        csi.sort();
        let mut want = node_names.clone();
        want.sort();
        let kcm = on_nodes(
            "openshift-kube-controller-manager",
            "app=kube-controller-manager",
        )
        .await?;
        if csi == want && kcm.len() == 3 && kcm.iter().all(|n| node_names.contains(n)) {
            Ok(())
        } else {
            Err(format!("csi {csi:?} kcm {kcm:?}"))
        }
    })
    .await;
    let copy: Api<Secret> = Api::namespaced(c.clone(), "openshift-machine-api");
    eventually(
        "source credentials withdrawn from components",
        DEADLINE,
        || async {
            let s = copy
                .get("vsphere-cloud-credentials")
                .await
                .map_err(|e| e.to_string())?;
            let keys: Vec<String> = s.data.unwrap_or_default().into_keys().collect();
            if keys.iter().all(|k| k.starts_with(&tgt.server)) {
                Ok(())
            } else {
                Err(format!("{keys:?}"))
            }
        },
    )
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_migration_on_the_default_feature_set() {
    migrate(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_migration_with_the_multi_vcenter_day2_gate() {
    migrate(true).await;
}
