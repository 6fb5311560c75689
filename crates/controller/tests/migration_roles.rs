//! What a real cluster has beyond one worker MachineSet: an infra MachineSet (node
//! label and taint) running the default router under the ingress operator's
//! PodDisruptionBudget, and MachineConfigPools that roll every node with a reboot
//! whenever the cloud config changes.
//!
//! - every source MachineSet is recreated on the target with its role labels, node
//!   labels, taints and sizing, and the router's budget lets the source infra node
//!   drain only because a target infra node exists;
//! - UpdateConfig (and Cleanup) finish only once the pools have rolled the new cloud
//!   config onto every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use openshift_sim::{Delays, Scenario};
use serde_json::{Value, json};
use std::time::Duration;
use vcfm_api::openshift::{LABEL_ROLE, LABEL_TYPE, MachineSet};
use vcfm_api::{PhaseName, PhaseStatus};

const WORKERS: u32 = 2;
const INFRA_LABEL: &str = "node-role.kubernetes.io/infra";
const ROUTER: &str = "ingresscontroller.operator.openshift.io/deployment-ingresscontroller";

async fn pools(env: &Env) -> Vec<Value> {
    let gvk = GroupVersionKind::gvk(
        "machineconfiguration.openshift.io",
        "v1",
        "MachineConfigPool",
    );
    let ar = ApiResource::from_gvk_with_plural(&gvk, "machineconfigpools");
    Api::<DynamicObject>::all_with(env.client.clone(), &ar)
        .list(&ListParams::default())
        .await
        .expect("MachineConfigPools")
        .items
        .into_iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect()
}

fn cond<'a>(pool: &'a Value, t: &str) -> &'a Value {
    pool["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

/// Pools that are not fully at their rendered config, with why.
fn unsettled(pools: &[Value]) -> Vec<String> {
    pools
        .iter()
        .filter(|p| {
            cond(p, "Updated")["status"] != "True"
                || p["status"]["machineCount"] != p["status"]["updatedMachineCount"]
                || p["spec"]["configuration"]["name"] != p["status"]["configuration"]["name"]
        })
        .map(|p| {
            format!(
                "{}: {}/{} updated, Updated={}",
                p["metadata"]["name"],
                p["status"]["updatedMachineCount"],
                p["status"]["machineCount"],
                cond(p, "Updated")["status"]
            )
        })
        .collect()
}

fn rendered(pools: &[Value]) -> Vec<String> {
    pools
        .iter()
        .map(|p| {
            p["status"]["configuration"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infra_and_worker_sets_move_with_the_router_budget_and_the_pools() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        infra_machineset: true,
        ..Scenario::default()
    })
    .await;
    let infra_id = env.sim.infra_id().to_string();
    let before = pools(&env).await;
    assert_eq!(before.len(), 2, "master and worker pools, as installed");
    assert!(unsettled(&before).is_empty(), "{:?}", unsettled(&before));
    env.spawn_controller();
    let m = env.migrate_to_completion("move", WORKERS).await;

    let target = env.sim.target().server.clone();
    let source = env.sim.source().server.clone();
    let c = env.client.clone();

    // Every role is on the target, with its labels, taints and sizing.
    let sets = Api::<MachineSet>::namespaced(c.clone(), "openshift-machine-api")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut names: Vec<String> = sets
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            format!("{infra_id}-infra-{FD}"),
            format!("{infra_id}-worker-{FD}")
        ],
        "one set per source set and failure domain, the source sets gone"
    );
    for ms in &sets {
        assert_eq!(
            ms.server().as_deref(),
            Some(target.as_str()),
            "{:?}",
            ms.metadata.name
        );
        let v = serde_json::to_value(ms).unwrap();
        let role = ms.role().unwrap().to_string();
        let labels = &v["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels[LABEL_ROLE], role.as_str());
        assert_eq!(labels[LABEL_TYPE], role.as_str());
        let spec = &v["spec"]["template"]["spec"];
        if role == "infra" {
            assert_eq!(ms.spec.replicas, Some(1), "the source infra set's size");
            assert_eq!(spec["metadata"]["labels"][INFRA_LABEL], "");
            assert_eq!(
                spec["taints"],
                json!([{"key": INFRA_LABEL, "effect": "NoSchedule"}])
            );
        } else {
            assert_eq!(role, "worker");
            assert_eq!(ms.spec.replicas, Some(WORKERS as i32));
        }
        assert_eq!(spec["providerSpec"]["value"]["numCPUs"], 4);
        assert_eq!(spec["providerSpec"]["value"]["memoryMiB"], 8192);
    }

    // No machine, node or VM is left on the source.
    let state = env.snapshot().await;
    for (machine, server) in &state.machines {
        assert_eq!(server, &target, "machine {machine} on {server}");
    }
    let left: Vec<&String> = state
        .source
        .vms
        .keys()
        .filter(|n| n.starts_with(&infra_id))
        .collect();
    assert!(left.is_empty(), "source still has VMs {left:?}");
    assert_eq!(
        state.nodes.len(),
        3 + WORKERS as usize + 1,
        "{:?}",
        state.nodes
    );

    // The infra node carries its label and taint, and runs both routers again.
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let infra_nodes: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(INFRA_LABEL))
        })
        .collect();
    assert_eq!(infra_nodes.len(), 1);
    let infra_node = infra_nodes[0];
    let infra_name = infra_node.metadata.name.clone().unwrap();
    assert!(
        infra_name.starts_with(&format!("{infra_id}-infra-{FD}-")),
        "{infra_name}"
    );
    assert!(
        infra_node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t
                .iter()
                .any(|t| t.key == INFRA_LABEL && t.effect == "NoSchedule")),
        "{infra_node:?}"
    );
    let routers: Vec<Pod> = Api::<Pod>::namespaced(c.clone(), "openshift-ingress")
        .list(&ListParams::default().labels(&format!("{ROUTER}=default")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(routers.len(), 2, "{routers:?}");
    for r in &routers {
        assert_eq!(
            r.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(infra_name.as_str()),
            "router {:?} runs on the target infra node",
            r.metadata.name
        );
    }

    // The pools rolled the target-only cloud config onto every node and settled.
    let after = pools(&env).await;
    assert!(unsettled(&after).is_empty(), "{:?}", unsettled(&after));
    assert_ne!(
        rendered(&before),
        rendered(&after),
        "the pools took the new cloud config"
    );
    let msg = |p: PhaseName| {
        m.status
            .as_ref()
            .unwrap()
            .phase_history
            .iter()
            .rev()
            .find(|h| h.phase == p && h.status == PhaseStatus::Completed)
            .map(|h| h.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg(PhaseName::UpdateConfig).contains("MachineConfigPool"),
        "{}",
        msg(PhaseName::UpdateConfig)
    );
    assert!(!serde_json::to_string(&after).unwrap().contains(&source));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_config_completes_only_after_the_pools_rolled_every_node() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        delays: Delays {
            mcp_node_update: Duration::from_millis(1500),
            ..Delays::instant()
        },
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.create_migration("move", env.spec(FD, WORKERS, true))
        .await;
    let upto: Vec<PhaseName> = PhaseName::ALL
        .iter()
        .copied()
        .take_while(|p| *p != PhaseName::RestartPods)
        .collect();
    env.approve("move", &upto).await;
    // While UpdateConfig runs it names the pools it waits for.
    let running = env
        .wait(
            "move",
            "UpdateConfig waiting for the pools",
            Duration::from_secs(120),
            |m| {
                m.status
                    .as_ref()
                    .and_then(|s| s.current_phase_state.as_ref())
                    .is_some_and(|c| {
                        c.name == PhaseName::UpdateConfig
                            && c.waiting_for
                                .iter()
                                .any(|w| w.contains("MachineConfigPool"))
                    })
            },
        )
        .await;
    assert_eq!(
        running
            .status
            .as_ref()
            .unwrap()
            .current_phase_state
            .as_ref()
            .unwrap()
            .status,
        PhaseStatus::Running
    );
    // Once it completed, every node runs the new config.
    let m = env
        .wait(
            "move",
            "approval of RestartPods",
            Duration::from_secs(120),
            |m| waiting_for_approval(m) == Some(PhaseName::RestartPods),
        )
        .await;
    let after = pools(&env).await;
    assert!(
        unsettled(&after).is_empty(),
        "UpdateConfig completed while {:?}\n{}",
        unsettled(&after),
        summary(&m)
    );
    let done = m
        .status
        .as_ref()
        .unwrap()
        .phase_history
        .iter()
        .find(|h| h.phase == PhaseName::UpdateConfig && h.status == PhaseStatus::Completed)
        .and_then(|h| h.completion_time.clone())
        .expect("UpdateConfig completed")
        .0;
    for p in &after {
        let rolled: jiff::Timestamp = cond(p, "Updated")["lastTransitionTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // Both clocks write whole seconds.
        assert!(
            rolled.as_second() <= done.as_second() + 1,
            "pool {} finished at {rolled}, after UpdateConfig completed at {done}",
            p["metadata"]["name"]
        );
    }
    let nodes = Api::<Node>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for n in &nodes {
        let a = n.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get("machineconfiguration.openshift.io/state")
                .map(String::as_str),
            Some("Done")
        );
        assert!(
            n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true),
            "{:?} still cordoned",
            n.metadata.name
        );
    }
    env.shutdown().await;
}
