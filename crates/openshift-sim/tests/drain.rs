//! The machine API's drain honours PodDisruptionBudgets: removing the only infra node
//! stalls (its Machine stays Deleting, the VM stays) while the router's budget allows no
//! disruption, and finishes once another infra node runs the router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, list_machines, machinesets};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Tier};
use vcfm_api::openshift::{LABEL_MACHINESET, MachineSet};

const ROUTER: &str = "ingresscontroller.operator.openshift.io/deployment-ingresscontroller=default";

async fn routers(c: &kube::Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(c.clone(), "openshift-ingress")
        .list(&ListParams::default().labels(ROUTER))
        .await
        .unwrap()
        .items
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_budget_holds_the_infra_drain_until_another_infra_node_runs_it() {
    let sim = SimCluster::start(Scenario {
        infra_machineset: true,
        tier: Tier::Sim,
        real_operators: false,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let infra_set = format!("{}-infra-0", sim.infra_id());
    let old = list_machines(&c)
        .await
        .into_iter()
        .find(|m| {
            m.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&infra_set))
        })
        .expect("an infra machine");
    let old_name = old.metadata.name.clone().unwrap();
    let before = routers(&c).await;
    assert_eq!(before.len(), 2);
    assert!(
        before.iter().all(|p| node_of(p) == old_name),
        "both routers on the infra node"
    );

    machinesets(&c)
        .patch(
            &infra_set,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    // One router may go (maxUnavailable 50% of 2); its replacement has nowhere to run,
    // so the second eviction is refused and the Machine stays Deleting.
    eventually("one router evicted", Duration::from_secs(20), || async {
        let r = routers(&c).await;
        let evicted = r
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count();
        (evicted >= 1 || r.len() == 1)
            .then_some(())
            .ok_or(format!("{} routers", r.len()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = common::machines(&c)
        .get(&old_name)
        .await
        .expect("machine still there");
    assert!(m.metadata.deletion_timestamp.is_some());
    let left: Vec<Pod> = routers(&c)
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(left.len(), 1, "the budget keeps one router: {left:?}");
    assert_eq!(node_of(&left[0]), old_name);

    // Another infra node: the replacement router runs there, then the drain completes.
    let src: MachineSet = machinesets(&c).get(&infra_set).await.unwrap();
    let mut v = serde_json::to_value(&src).unwrap();
    let name = format!("{}-infra-1", sim.infra_id());
    v["metadata"] = serde_json::json!({"name": name, "namespace": "openshift-machine-api"});
    v.as_object_mut().unwrap().remove("status");
    v["spec"]["replicas"] = serde_json::json!(1);
    v["spec"]["selector"]["matchLabels"][LABEL_MACHINESET] = serde_json::json!(name);
    v["spec"]["template"]["metadata"]["labels"][LABEL_MACHINESET] = serde_json::json!(name);
    machinesets(&c)
        .create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap();
    eventually(
        "the old infra machine drained and deleted",
        Duration::from_secs(60),
        || async {
            match common::machines(&c)
                .get_opt(&old_name)
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        },
    )
    .await;
    let after: Vec<Pod> = routers(&c)
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|p| node_of(p).starts_with(&name)),
        "routers run on the new infra node: {:?}",
        after.iter().map(node_of).collect::<Vec<_>>()
    );
    sim.shutdown().await;
}
