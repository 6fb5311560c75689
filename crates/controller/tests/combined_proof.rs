//! Issue 13's combined proof: one migration of an installer-shaped cluster with everything
//! a real one brings at once (an infra MachineSet whose router sits under the ingress
//! PodDisruptionBudget, MachineConfigPools that reboot every node on a cloud-config change,
//! a ControlPlaneMachineSet written by a pre-4.16 installer with the source topology in its
//! template, and a source datacenter and cluster without region/zone tags) completes, and
//! afterwards nothing in the cluster names the source vCenter, every VM on the target runs,
//! and the source keeps no VM of the cluster. Runs on both tiers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};
use openshift_sim::{Scenario, Tier};
use std::time::Duration;
use vcfm_api::MigrationPhase;
use vcfm_api::openshift::{ControlPlaneMachineSet, MACHINE_API_NAMESPACE, MachineSet};

const WORKERS: u32 = 2;
const NAME: &str = "move";

/// `kind namespace/name: path` of every object of every listable kind whose content
/// mentions `needle`, except Events (a history of what happened, which names the source
/// by design) and the migration's own record (its status keeps the source it left, and
/// its backup Secret the objects as they were, for the audit and a rollback).
async fn objects_naming(client: &kube::Client, needle: &str) -> Vec<String> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut hits = vec![];
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST)
                || ar.kind == "Event"
                || ar.kind == "VmwareCloudFoundationMigration"
            {
                continue;
            }
            let Ok(list) = Api::<DynamicObject>::all_with(client.clone(), &ar)
                .list(&ListParams::default())
                .await
            else {
                continue;
            };
            for o in list.items {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let name = o.metadata.name.clone().unwrap_or_default();
                if ar.kind == "Secret" && ns == NS && name == format!("{NAME}-backup") {
                    continue;
                }
                let text = serde_json::to_string(&o).unwrap();
                if text.contains(needle) {
                    hits.push(format!("{} {ns}/{name}", ar.kind));
                }
            }
        }
    }
    // Secret payloads are base64 in the listing above: searched decoded too.
    for sec in Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let ns = sec.metadata.namespace.clone().unwrap_or_default();
        let name = sec.metadata.name.clone().unwrap_or_default();
        if ns == NS && name == format!("{NAME}-backup") {
            continue;
        }
        let decoded = sec
            .data
            .iter()
            .flatten()
            .any(|(_, v)| String::from_utf8_lossy(&v.0).contains(needle));
        if decoded {
            hits.push(format!("Secret {ns}/{name} (data)"));
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installer_shaped_cluster_with_every_role_moves_and_leaves_nothing_on_the_source() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        infra_machineset: true,
        pre_416_cpms: true,
        ..Scenario::default()
    })
    .await;
    let source = env.sim.source().server.clone();
    let target = env.sim.target().server.clone();
    let infra_id = env.sim.infra_id().to_string();

    // The seed is what the proof is about: a pre-4.16 CPMS naming the source in its
    // template, and the source named all over the cluster.
    let cpms = Api::<ControlPlaneMachineSet>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
        .get("cluster")
        .await
        .unwrap();
    let template = serde_json::to_value(&cpms.spec).unwrap();
    assert!(
        template.to_string().contains(&source),
        "the seeded CPMS template names the source: {template}"
    );
    assert!(!objects_naming(&env.client, &source).await.is_empty());

    env.spawn_controller();
    env.create_migration(NAME, env.spec(FD, WORKERS, false))
        .await;
    let deadline = match Tier::from_env() {
        Tier::Sim => Duration::from_secs(360),
        Tier::Real => Duration::from_secs(1200),
    };
    let m = env.wait_terminal(NAME, deadline).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );

    // No object in the cluster names the source vCenter.
    let hits = objects_naming(&env.client, &source).await;
    assert!(hits.is_empty(), "objects still naming {source}: {hits:#?}");

    let state = env.snapshot().await;
    // Every VM on the target is powered on.
    assert!(
        state.target.not_powered_on.is_empty(),
        "target VMs not powered on: {:?}",
        state.target.not_powered_on
    );
    // The source keeps no VM of the cluster.
    let left: Vec<&String> = state
        .source
        .vms
        .keys()
        .filter(|n| n.starts_with(&infra_id))
        .collect();
    assert!(left.is_empty(), "cluster VMs left on the source: {left:?}");

    // The usual end state; the infra set is expected next to the worker set.
    let findings: Vec<String> = migrated_findings(&env, &state, WORKERS as usize + 1)
        .into_iter()
        .filter(|f| !f.starts_with("MachineSets: ") && !f.starts_with("target folder holds"))
        .collect();
    assert!(findings.is_empty(), "{findings:#?}\n{}", summary(&m));
    let mut sets: Vec<String> =
        Api::<MachineSet>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|s| s.server().as_deref() == Some(target.as_str()))
            .filter_map(|s| s.metadata.name)
            .collect();
    sets.sort();
    assert_eq!(
        sets,
        [
            format!("{infra_id}-infra-{FD}"),
            format!("{infra_id}-worker-{FD}")
        ]
    );
    let masters = state
        .target
        .folder_vms
        .iter()
        .filter(|n| n.contains("-master-"))
        .count();
    let others = state.target.folder_vms.len() - masters;
    assert_eq!(
        (masters, others),
        (3, WORKERS as usize + 1),
        "{:?}",
        state.target.folder_vms
    );
    env.shutdown().await;
}
