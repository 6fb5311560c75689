//! Machine API: MachineSets scale through real VM clones and destroys in the vCenter and
//! folder their provider spec names, with the credentials the cloud-credential operator
//! propagated; failures look like machine-api's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, list_machines, machinesets, vms_in};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Site};
use vcfm_api::openshift::Machine;

const DEADLINE: Duration = Duration::from_secs(30);

fn in_set<'a>(ms: &'a [Machine], set: &str) -> Vec<&'a Machine> {
    ms.iter()
        .filter(|m| {
            m.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("machine.openshift.io/cluster-api-machineset"))
                .map(String::as_str)
                == Some(set)
        })
        .collect()
}

async fn scale(c: &kube::Client, set: &str, replicas: i32) {
    machinesets(c)
        .patch(
            set,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// Waits until `set` has exactly `n` Machines, all Running with a Ready Node, and returns
/// their names.
async fn wait_running(c: &kube::Client, set: &str, n: usize) -> Vec<String> {
    let nodes: Api<Node> = Api::all(c.clone());
    eventually(
        &format!("{n} running machines in {set}"),
        DEADLINE,
        || async {
            let all = list_machines(c).await;
            let ms = in_set(&all, set);
            let running: Vec<_> = ms.iter().filter(|m| m.phase() == "Running").collect();
            if ms.len() != n || running.len() != n {
                return Err(format!(
                    "{} machines, {} running: {:?}",
                    ms.len(),
                    running.len(),
                    ms.iter()
                        .map(|m| (
                            m.metadata.name.clone(),
                            m.phase().to_string(),
                            m.status.as_ref().and_then(|s| s.error_message.clone())
                        ))
                        .collect::<Vec<_>>()
                ));
            }
            let mut names = Vec::new();
            for m in running {
                let node = m
                    .status
                    .as_ref()
                    .and_then(|s| s.node_ref.as_ref())
                    .and_then(|r| r.name.clone())
                    .ok_or("no nodeRef")?;
                let node = nodes.get(&node).await.map_err(|e| e.to_string())?;
                let ready = node
                    .status
                    .clone()
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if !ready {
                    return Err(format!("node {:?} not ready", node.metadata.name));
                }
                assert!(
                    m.spec
                        .spec
                        .provider_id
                        .as_deref()
                        .is_some_and(|p| p.starts_with("vsphere://"))
                );
                names.push(m.metadata.name.clone().unwrap());
            }
            names.sort();
            Ok(names)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machinesets_scale_vms_in_the_right_vcenter_and_folder() {
    let sim = SimCluster::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let src_vc = sim.vsphere_client(Site::Source).unwrap();
    let tgt_vc = sim.vsphere_client(Site::Target).unwrap();
    let worker_set = format!("{}-worker-0", sim.infra_id());

    // Source: scale up 1 → 3, VMs appear in the source folder.
    scale(&c, &worker_set, 3).await;
    let names = wait_running(&c, &worker_set, 3).await;
    let vms = vms_in(&src_vc, &sim.source().folder).await.unwrap();
    for n in &names {
        assert!(
            vms.contains(n),
            "{n} has a VM in {}: {vms:?}",
            sim.source().folder
        );
    }

    // Target: folder (with the ownership tag) and credentials prepared as a migration does.
    tgt_vc.ensure_folder(&sim.target().folder).await.unwrap();
    let cat = tgt_vc
        .ensure_category(&vcfm_vsphere::CategorySpec {
            name: format!("openshift-{}", sim.infra_id()),
            description: String::new(),
            cardinality: vcfm_vsphere::Cardinality::Single,
            associable_types: vec!["urn:vim25:VirtualMachine".into(), "urn:vim25:Folder".into()],
        })
        .await
        .unwrap();
    let tag = tgt_vc
        .ensure_tag(&cat.id, sim.infra_id(), "")
        .await
        .unwrap();
    common::add_target_credentials(&sim).await;
    common::wait_target_credentials_propagated(&sim).await;
    let target_set = format!("{}-worker-target", sim.infra_id());
    let ms = common::target_machineset(&sim, &target_set, 2).await;
    machinesets(&c)
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let target_names = wait_running(&c, &target_set, 2).await;
    let tvms = vms_in(&tgt_vc, &sim.target().folder).await.unwrap();
    assert_eq!(tvms.len(), 2, "{tvms:?}");
    for n in &target_names {
        assert!(tvms.contains(n), "{n} is on the target");
        let vm = tgt_vc
            .find_vm(&format!("{}/{n}", sim.target().folder))
            .await
            .unwrap();
        let tags = tgt_vc.list_attached_tags(&vm).await.unwrap();
        assert!(tags.contains(&tag.id), "{n} carries the ownership tag");
    }
    let svms = vms_in(&src_vc, &sim.source().folder).await.unwrap();
    assert!(
        target_names.iter().all(|n| !svms.contains(n)),
        "nothing cloned on the source"
    );

    // Scale down: VMs, Nodes and Machines go.
    scale(&c, &worker_set, 1).await;
    scale(&c, &target_set, 0).await;
    let left = wait_running(&c, &worker_set, 1).await;
    wait_running(&c, &target_set, 0).await;
    let nodes: Api<Node> = Api::all(c.clone());
    eventually(
        "VMs and Nodes of removed machines gone",
        DEADLINE,
        || async {
            let svms = vms_in(&src_vc, &sim.source().folder).await?;
            let tvms = vms_in(&tgt_vc, &sim.target().folder).await?;
            let gone: Vec<&String> = names
                .iter()
                .filter(|n| !left.contains(n))
                .chain(target_names.iter())
                .collect();
            for n in &gone {
                if svms.contains(n) || tvms.contains(n) {
                    return Err(format!("VM {n} still exists"));
                }
                if nodes.get_opt(n).await.map_err(|e| e.to_string())?.is_some() {
                    return Err(format!("Node {n} still exists"));
                }
            }
            if !svms.contains(&left[0]) {
                return Err("the remaining worker lost its VM".into());
            }
            Ok(())
        },
    )
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_fails_without_propagated_credentials() {
    let sim = SimCluster::start(Scenario {
        workers: 0,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    sim.vsphere_client(Site::Target)
        .unwrap()
        .ensure_folder(&sim.target().folder)
        .await
        .unwrap();
    // The target credentials were never added to kube-system/vsphere-creds.
    let set = format!("{}-worker-target", sim.infra_id());
    let ms = common::target_machineset(&sim, &set, 1).await;
    machinesets(&c)
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let key = format!("{}.username", sim.target().server);
    let msg = eventually("the machine to fail", DEADLINE, || async {
        let all = list_machines(&c).await;
        let m = in_set(&all, &set)
            .into_iter()
            .next()
            .ok_or("no machine yet")?
            .clone();
        match m.phase() {
            "Failed" => Ok(m.status.unwrap()),
            p => Err(format!("phase {p:?}")),
        }
    })
    .await;
    assert_eq!(msg.error_reason.as_deref(), Some("InvalidConfiguration"));
    let text = msg.error_message.unwrap();
    assert!(
        text.contains(&format!(
            "openshift-machine-api/vsphere-cloud-credentials does not have \"{key}\" field set"
        )),
        "{text}"
    );
    let tvms = vms_in(
        &sim.vsphere_client(Site::Target).unwrap(),
        &sim.target().folder,
    )
    .await
    .unwrap();
    assert!(tvms.is_empty(), "no VM cloned: {tvms:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_credential_operator_never_propagates_and_missing_folder_fails() {
    let mut scenario = Scenario {
        workers: 0,
        ..Scenario::default()
    };
    scenario.faults.credentials_not_propagated = true;
    let sim = SimCluster::start(scenario).await.expect("start");
    let c = sim.client();
    common::add_target_credentials(&sim).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copy: Api<Secret> = Api::namespaced(c.clone(), "openshift-machine-api");
    let copy = copy.get("vsphere-cloud-credentials").await.unwrap();
    let key = format!("{}.username", sim.target().server);
    assert!(
        !copy.data.unwrap().contains_key(&key),
        "the broken operator did not copy"
    );

    // The target folder does not exist either: with credentials fixed by hand, the clone
    // is refused with machine-api's text.
    let copy_api: Api<Secret> = Api::namespaced(c.clone(), "openshift-machine-api");
    let t = sim.target();
    copy_api
        .patch("vsphere-cloud-credentials", &PatchParams::default(), &Patch::Merge(serde_json::json!({"stringData": {
            format!("{}.username", t.server): t.username, format!("{}.password", t.server): t.password}})))
        .await
        .unwrap();
    let set = format!("{}-worker-target", sim.infra_id());
    let ms = common::target_machineset(&sim, &set, 1).await;
    machinesets(&c)
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let status = eventually("the machine to fail", DEADLINE, || async {
        let all = list_machines(&c).await;
        let m = in_set(&all, &set)
            .into_iter()
            .next()
            .ok_or("no machine yet")?
            .clone();
        match m.phase() {
            "Failed" => Ok(m.status.unwrap()),
            p => Err(format!("phase {p:?}")),
        }
    })
    .await;
    let text = status.error_message.unwrap();
    assert!(
        text.ends_with(
            "reconciler failed to Create machine: folder not found, specify valid value"
        ),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pool_datastore_and_folder_fall_back_to_machine_api_defaults() {
    let sim = SimCluster::start(Scenario {
        workers: 0,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    common::add_target_credentials(&sim).await;
    common::wait_target_credentials_propagated(&sim).await;
    let set = format!("{}-worker-defaults", sim.infra_id());
    let mut ms = common::target_machineset(&sim, &set, 1).await;
    let tmpl = ms.spec.template.as_mut().unwrap().spec.as_mut().unwrap();
    let value = tmpl.provider_spec.as_mut().unwrap().value.as_mut().unwrap();
    for k in ["resourcePool", "datastore", "folder"] {
        value["workspace"].as_object_mut().unwrap().remove(k);
    }
    machinesets(&c)
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let names = wait_running(&c, &set, 1).await;
    let tgt = sim.vsphere_client(Site::Target).unwrap();
    let root = format!("/{}/vm", sim.target().datacenter);
    assert!(
        vms_in(&tgt, &root).await.unwrap().contains(&names[0]),
        "cloned into the datacenter's VM folder"
    );
    sim.shutdown().await;
}
