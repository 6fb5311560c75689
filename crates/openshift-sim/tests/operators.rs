//! Pods, cluster operators and the CVO behave like OpenShift's around configuration changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster};
use vcfm_api::openshift::{ClusterOperator, Infrastructure, find_condition};

const DEADLINE: Duration = Duration::from_secs(20);

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pods_linger_then_come_back_under_new_names() {
    // Windows wide enough to observe each state on a loaded machine.
    let mut delays = openshift_sim::Delays::instant();
    delays.pod_ready = Duration::from_secs(1);
    delays.pod_terminate = Duration::from_secs(1);
    let sim = SimCluster::start(Scenario {
        workers: 0,
        delays,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let pods: Api<Pod> = Api::namespaced(sim.client(), "openshift-cloud-controller-manager");
    let lp = ListParams::default().labels("k8s-app=vsphere-cloud-controller-manager");
    let before: Vec<String> = pods
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(before.len(), 2);
    pods.delete_collection(&DeleteParams::default(), &lp)
        .await
        .unwrap();
    // Right after deletion: old pods are Terminating, replacements exist but are not Ready.
    let (terminating, fresh) = eventually("replacements created", DEADLINE, || async {
        let items = pods.list(&lp).await.map_err(|e| e.to_string())?.items;
        let terminating: Vec<&Pod> = items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .collect();
        let fresh: Vec<&Pod> = items
            .iter()
            .filter(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
            .collect();
        if fresh.len() == 2 {
            Ok((terminating.len(), fresh.iter().filter(|p| ready(p)).count()))
        } else {
            Err(format!("{} new pods", fresh.len()))
        }
    })
    .await;
    assert_eq!(terminating, 2, "old pods linger while terminating");
    assert_eq!(fresh, 0, "new pods start not Ready");
    eventually("new pods Ready and old ones gone", DEADLINE, || async {
        let items = pods.list(&lp).await.map_err(|e| e.to_string())?.items;
        let names: Vec<String> = items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        if items.len() == 2 && items.iter().all(ready) && names.iter().all(|n| !before.contains(n))
        {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    // Static mirror pods come back under the same name: deleting them restarts nothing.
    let kcm: Api<Pod> = Api::namespaced(sim.client(), "openshift-kube-controller-manager");
    let name = format!("kube-controller-manager-{}-master-0", sim.infra_id());
    let uid = kcm.get(&name).await.unwrap().metadata.uid;
    kcm.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("mirror pod back", DEADLINE, || async {
        match kcm.get_opt(&name).await.map_err(|e| e.to_string())? {
            Some(p) if p.metadata.uid != uid && ready(&p) => Ok(()),
            _ => Err("not yet".into()),
        }
    })
    .await;
    sim.shutdown().await;
}

async fn condition(cos: &Api<ClusterOperator>, name: &str, type_: &str) -> String {
    let co = cos.get(name).await.unwrap();
    find_condition(&co.status.unwrap().conditions, type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_progress_after_config_changes_and_machine_config_degrades_with_two_vcenters() {
    let mut delays = openshift_sim::Delays::instant();
    delays.operator_progressing = Duration::from_secs(2);
    let sim = SimCluster::start(Scenario {
        workers: 0,
        multi_vcenter_day2_gate: true,
        delays,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let cos: Api<ClusterOperator> = Api::all(c.clone());
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "openshift-config");
    let mut cm = cms.get("cloud-provider-config").await.unwrap();
    let cfg = cm.data.as_mut().unwrap().get_mut("config").unwrap();
    cfg.push_str("# edited\n");
    cms.replace("cloud-provider-config", &PostParams::default(), &cm)
        .await
        .unwrap();
    eventually("kube-controller-manager Progressing", DEADLINE, || async {
        if condition(&cos, "kube-controller-manager", "Progressing").await == "True" {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    assert_eq!(
        condition(&cos, "etcd", "Progressing").await,
        "False",
        "unrelated operators stay put"
    );
    eventually("kube-controller-manager settles", DEADLINE, || async {
        if condition(&cos, "kube-controller-manager", "Progressing").await == "False" {
            Ok(())
        } else {
            Err("still progressing".into())
        }
    })
    .await;

    // Two vCenters: machine-config goes Degraded until one is removed again.
    let infra_api: Api<Infrastructure> = Api::all(c.clone());
    let original = infra_api.get("cluster").await.unwrap();
    let mut v = serde_json::to_value(&original).unwrap();
    let t = sim.target();
    v["spec"]["platformSpec"]["vsphere"]["vcenters"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"server": t.server, "port": 443, "datacenters": [t.datacenter]}));
    let two = infra_api
        .replace(
            "cluster",
            &PostParams::default(),
            &serde_json::from_value(v).unwrap(),
        )
        .await
        .unwrap();
    eventually("machine-config Degraded", DEADLINE, || async {
        if condition(&cos, "machine-config", "Degraded").await == "True" {
            Ok(())
        } else {
            Err("not degraded".into())
        }
    })
    .await;
    let mut back = serde_json::to_value(&two).unwrap();
    back["spec"] = serde_json::to_value(&original.spec).unwrap();
    infra_api
        .replace(
            "cluster",
            &PostParams::default(),
            &serde_json::from_value(back).unwrap(),
        )
        .await
        .unwrap();
    eventually("all operators stable again", DEADLINE, || async {
        let list = cos
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let unstable: Vec<String> = list
            .iter()
            .filter(|co| !co.instability().is_empty())
            .map(|co| co.metadata.name.clone().unwrap())
            .collect();
        if unstable.is_empty() {
            Ok(())
        } else {
            Err(format!("{unstable:?}"))
        }
    })
    .await;
    sim.shutdown().await;
}

fn lift_rule(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
    let mut v = serde_json::to_value(crd).unwrap();
    for ver in v["spec"]["versions"].as_array_mut().unwrap() {
        let vc = ver.pointer_mut("/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters").unwrap();
        vc.as_object_mut()
            .unwrap()
            .remove("x-kubernetes-validations");
    }
    serde_json::from_value(v).unwrap()
}

fn has_rule(crd: &CustomResourceDefinition) -> bool {
    serde_json::to_string(crd)
        .unwrap()
        .contains("vcenters cannot be added or removed once set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvo_restores_the_lifted_crd_rule_only_while_running() {
    let sim = SimCluster::start(Scenario {
        workers: 0,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let name = "infrastructures.config.openshift.io";
    let infra_api: Api<Infrastructure> = Api::all(c.clone());
    let add_vcenter = || async {
        let mut v = serde_json::to_value(infra_api.get("cluster").await.unwrap()).unwrap();
        let t = sim.target();
        v["spec"]["platformSpec"]["vsphere"]["vcenters"]
            .as_array_mut()
            .unwrap()
            .push(
                serde_json::json!({"server": t.server, "port": 443, "datacenters": [t.datacenter]}),
            );
        infra_api
            .replace(
                "cluster",
                &PostParams::default(),
                &serde_json::from_value(v).unwrap(),
            )
            .await
    };
    let err = add_vcenter()
        .await
        .expect_err("the Default CRD forbids a second vCenter");
    assert!(
        err.to_string()
            .contains("vcenters cannot be added or removed once set"),
        "{err}"
    );

    // Lifted while the CVO runs: restored.
    let crd = crds.get(name).await.unwrap();
    crds.replace(name, &PostParams::default(), &lift_rule(&crd))
        .await
        .unwrap();
    eventually("the CVO restores the rule", DEADLINE, || async {
        if has_rule(&crds.get(name).await.map_err(|e| e.to_string())?) {
            Ok(())
        } else {
            Err("still lifted".into())
        }
    })
    .await;

    // Scaled to 0 and available 0: the lifted rule stays lifted and the edit goes through.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "openshift-cluster-version");
    let cvo = "cluster-version-operator";
    deps.patch(
        cvo,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    eventually("CVO scaled down", DEADLINE, || async {
        let d = deps.get(cvo).await.map_err(|e| e.to_string())?;
        let st = d.status.unwrap_or_default();
        if st.replicas == Some(0)
            && st.available_replicas.unwrap_or(0) == 0
            && st.observed_generation == d.metadata.generation
        {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    let crd = crds.get(name).await.unwrap();
    crds.replace(name, &PostParams::default(), &lift_rule(&crd))
        .await
        .unwrap();
    add_vcenter()
        .await
        .expect("a second vCenter is accepted once the rule is lifted");
    tokio::time::sleep(sim.scenario().delays.cvo_restore * 3).await;
    assert!(
        !has_rule(&crds.get(name).await.unwrap()),
        "no CVO, no restoration"
    );

    deps.patch(
        cvo,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("CVO back and rule restored", DEADLINE, || async {
        let d = deps.get(cvo).await.map_err(|e| e.to_string())?;
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        if available == 1 && has_rule(&crds.get(name).await.map_err(|e| e.to_string())?) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    sim.shutdown().await;
}
