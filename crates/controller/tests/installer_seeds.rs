//! Whole migrations of clusters seeded as `openshift-install` leaves them (issue 12,
//! installer-shaped seeds; `openshift-sim/src/installer.rs` cites the installer's files):
//! a 4.20 cluster, whose ControlPlaneMachineSet the installer wrote Active on
//! `generated-failure-domain` with its template's workspace, network and template cleared,
//! moves whole to the target; a 4.16 cluster, whose Infrastructure schema takes one vCenter,
//! is refused by Preflight and left exactly as installed. Runs on both tiers (on the real
//! one the real CPMS operator and machine controller do the rollout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use kube::api::{Api, ListParams};
use openshift_sim::{InstallerRelease, Scenario, Tier};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use vcfm_api::openshift::{
    CLUSTER, ControlPlaneMachineSet, Infrastructure, MACHINE_API_NAMESPACE, Machine,
};
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

const WORKERS: u32 = 2;

fn cpms_provider(cpms: &Value) -> &Value {
    &cpms["spec"]["template"]["machines_v1beta1_machine_openshift_io"]["spec"]["providerSpec"]["value"]
}

fn cpms_failure_domains(cpms: &Value) -> Vec<String> {
    cpms["spec"]["template"]["machines_v1beta1_machine_openshift_io"]["failureDomains"]["vsphere"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str().map(String::from))
        .collect()
}

async fn cpms(env: &Env) -> Value {
    let c = Api::<ControlPlaneMachineSet>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
        .get("cluster")
        .await
        .unwrap();
    serde_json::to_value(&c).unwrap()
}

/// Master Machine name → the server its provider spec names.
async fn masters(env: &Env) -> Vec<(String, String)> {
    Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
        .list(&ListParams::default().labels("machine.openshift.io/cluster-api-machine-role=master"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| {
            (
                m.metadata.name.clone().unwrap_or_default(),
                m.server().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_as_the_4_20_installer_leaves_it_moves_whole_to_the_target() {
    migrate_420(false).await;
}

/// The same with the `VSphereMultiVCenterDay2` gate (CustomNoUpgrade, its CRD set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_as_the_4_20_installer_leaves_it_moves_whole_with_the_day2_gate() {
    migrate_420(true).await;
}

async fn migrate_420(day2_gate: bool) {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        multi_vcenter_day2_gate: day2_gate,
        ..Scenario::installed_by(InstallerRelease::V4_20)
    })
    .await;
    let source = env.sim.source().server.clone();
    let target = env.sim.target().server.clone();

    // The seed is the installer's: an Active CPMS on the install-time failure domain whose
    // template names no vCenter at all, masters naming the source in full.
    let seeded = cpms(&env).await;
    assert_eq!(seeded["spec"]["state"], "Active", "{seeded}");
    assert_eq!(
        cpms_failure_domains(&seeded),
        ["generated-failure-domain"],
        "{seeded}"
    );
    let p = cpms_provider(&seeded);
    assert_eq!(
        (&p["workspace"], &p["template"], &p["network"]["devices"]),
        (&json!({}), &json!(""), &Value::Null),
        "{p}"
    );
    // The operator finds the installer's masters up to date with that template plus the
    // failure domain: nothing is replaced before the migration starts.
    let status = &seeded["status"];
    assert_eq!(
        (
            &status["observedGeneration"],
            &status["replicas"],
            &status["updatedReplicas"]
        ),
        (&seeded["metadata"]["generation"], &json!(3), &json!(3)),
        "{seeded}"
    );
    let before = masters(&env).await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().all(|(_, s)| *s == source), "{before:?}");
    let seeded_state = env.snapshot().await;
    assert!(
        seeded_state.cloud_config.starts_with("global:\n"),
        "the 4.20 installer writes YAML: {}",
        seeded_state.cloud_config
    );

    env.spawn_controller();
    env.create_migration("move", env.spec(FD, WORKERS, false))
        .await;
    let deadline = match Tier::from_env() {
        Tier::Sim => Duration::from_secs(360),
        Tier::Real => Duration::from_secs(1200),
    };
    let m = env.wait_terminal("move", deadline).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );

    // Masters and workers on the target, nothing of the cluster left on the source,
    // Infrastructure, cloud config and credentials naming the target only.
    let state = env.snapshot().await;
    let findings = migrated_findings(&env, &state, WORKERS as usize);
    assert!(findings.is_empty(), "{findings:#?}\n{}", summary(&m));

    // The CPMS is Active on the target failure domain only, its template still as the
    // installer shaped it (no vCenter named), and its rollout finished at its generation.
    let after = cpms(&env).await;
    assert_eq!(after["spec"]["state"], "Active", "{after}");
    assert_eq!(cpms_failure_domains(&after), [FD], "{after}");
    let p = cpms_provider(&after);
    assert!(
        !p.to_string().contains(&source) && p["workspace"] == json!({}),
        "{p}"
    );
    let status = &after["status"];
    assert_eq!(
        status["observedGeneration"], after["metadata"]["generation"],
        "{after}"
    );
    assert_eq!(
        (
            &status["replicas"],
            &status["updatedReplicas"],
            &status["readyReplicas"]
        ),
        (&json!(3), &json!(3), &json!(3)),
        "{after}"
    );

    // Every installer-made master was replaced by one on the target.
    let now = masters(&env).await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.iter().all(|(_, s)| *s == target), "{now:?}");
    let old: BTreeSet<&String> = before.iter().map(|(n, _)| n).collect();
    assert!(now.iter().all(|(n, _)| !old.contains(n)), "{now:?}");

    // The Infrastructure knows the target's failure domain and vCenter only.
    let infra = Api::<Infrastructure>::all(env.client.clone())
        .get(CLUSTER)
        .await
        .unwrap();
    let names: Vec<&str> = infra
        .failure_domains()
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, [FD]);
    let vcenters = &state.infrastructure_spec["platformSpec"]["vsphere"]["vcenters"];
    assert_eq!(
        vcenters
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["server"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [target.as_str()],
        "{vcenters}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_as_the_4_16_installer_leaves_it_is_refused_and_left_as_installed() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::installed_by(InstallerRelease::V4_16)
    })
    .await;
    let seeded_cpms = cpms(&env).await;
    assert_eq!(seeded_cpms["spec"]["state"], "Active");
    assert_eq!(
        cpms_failure_domains(&seeded_cpms),
        ["generated-failure-domain"]
    );
    let seeded = env.snapshot().await;
    assert!(
        seeded.cloud_config.starts_with("[Global]\n"),
        "the 4.16 installer writes INI: {}",
        seeded.cloud_config
    );

    env.spawn_controller();
    env.create_migration("move", env.spec(FD, 1, false)).await;
    let m = env.wait_terminal("move", Duration::from_secs(180)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Failed),
        "{}",
        summary(&m)
    );
    assert_eq!(
        history(&m),
        vec![(PhaseName::Preflight, PhaseStatus::Failed)],
        "{}",
        summary(&m)
    );
    let text = summary(&m);
    for needle in [
        "OpenShift 4.16.8",
        "upgrade the cluster to OpenShift 4.18 or later",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert_same_state(
        &seeded,
        &env.snapshot().await,
        "after the refused Preflight",
    );
    env.shutdown().await;
}

/// Rolled back at the last reversible point (every phase up to CreateWorkers done), the
/// 4.20-installed cluster is again exactly as the installer left it: its YAML cloud config
/// byte for byte, its Infrastructure, credentials, Active CPMS, MachineSet and Machines, and
/// nothing of the migration on either vCenter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_as_the_4_20_installer_leaves_it_rolls_back_to_exactly_that() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::installed_by(InstallerRelease::V4_20)
    })
    .await;
    let seeded = env.snapshot().await;
    env.spawn_controller();
    env.migrate_through("undo", 1, PhaseName::CreateWorkers, json!({}))
        .await;
    let midway = env.snapshot().await;
    assert!(
        midway.cloud_config.contains(&env.sim.target().server),
        "UpdateConfig taught the target: {}",
        midway.cloud_config
    );
    env.set_state("undo", "Rollback").await;
    let deadline = match Tier::from_env() {
        Tier::Sim => Duration::from_secs(240),
        Tier::Real => Duration::from_secs(900),
    };
    let m = env
        .wait("undo", "the rollback to end", deadline, |m| {
            m.status
                .as_ref()
                .and_then(|s| s.rollback.as_ref())
                .is_some_and(|r| r.completion_time.is_some())
        })
        .await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    assert_same_state(&seeded, &env.snapshot().await, "after the rollback");
    env.shutdown().await;
}
