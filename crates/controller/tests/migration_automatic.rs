//! Whole migrations on the simulated cluster, Automatic mode, with and
//! without the VSphereMultiVCenterDay2 gate: Running → Completed, and the
//! cluster then lives on the target only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use openshift_sim::{Scenario, Tier};
use std::time::{Duration, Instant};
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

const WORKERS: u32 = 3;

async fn automatic(gate: bool) {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        multi_vcenter_day2_gate: gate,
        // A zonal source whose workers join a VM group of the source cluster (the group is
        // not on the target). Sim tier only: the real machine API validates vmGroup against
        // the VSphereHostVMGroupZonal gate, which the seeded release leaves off.
        worker_vm_group: (Tier::from_env() == Tier::Sim).then(|| "source-zone-a-vms".into()),
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let start = Instant::now();
    env.create_migration("move", env.spec(FD, WORKERS, false))
        .await;
    let m = env.wait_terminal("move", Duration::from_secs(240)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let st = m.status.as_ref().unwrap();
    assert!(st.completion_time.is_some(), "completionTime is set");
    // Every phase ran exactly once, in order; DisableCVO is skipped with the gate.
    let h = history(&m);
    let expected: Vec<(PhaseName, PhaseStatus)> = PhaseName::ALL
        .iter()
        .map(|p| {
            let s = if *p == PhaseName::DisableCvo && gate {
                PhaseStatus::Skipped
            } else {
                PhaseStatus::Completed
            };
            (*p, s)
        })
        .collect();
    let finals: Vec<(PhaseName, PhaseStatus)> = h
        .iter()
        .filter(|(_, s)| *s != PhaseStatus::Running)
        .copied()
        .collect();
    assert_eq!(finals, expected, "{}", summary(&m));

    let state = env.snapshot().await;
    let findings = migrated_findings(&env, &state, WORKERS as usize);
    assert!(findings.is_empty(), "{findings:#?}\n{}", summary(&m));

    // The installer metadata for `openshift-install destroy` names the target only.
    let secret = Api::<Secret>::namespaced(env.client.clone(), NS)
        .get("move-installer-metadata")
        .await
        .expect("installer metadata Secret");
    let doc: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()["metadata.json"].0).unwrap();
    assert_eq!(doc["infraID"], env.sim.infra_id());
    assert_eq!(doc["vsphere"]["vCenter"], env.sim.target().server.as_str());
    assert!(
        !doc.to_string().contains(env.sim.source().server.as_str()),
        "{doc}"
    );
    eprintln!(
        "gate={gate}: migration completed in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        durations(&m)
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_migration_without_the_day2_gate_completes_on_the_target() {
    automatic(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_migration_with_the_day2_gate_completes_on_the_target() {
    automatic(true).await;
}
