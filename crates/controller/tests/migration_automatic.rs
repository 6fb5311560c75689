//! Whole migrations on the simulated cluster, Automatic mode, with and
//! without the VSphereMultiVCenterDay2 gate: Running → Completed, and the
//! cluster then lives on the target only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;
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
    // Every version of the migration the API server writes, from a watch started before
    // it exists.
    let api = env.api();
    let first_finished = tokio::spawn(async move {
        let cfg = watcher::Config::default().fields("metadata.name=move");
        let mut held = false;
        let mut events = std::pin::pin!(watcher(api, cfg));
        while let Some(e) = events.next().await {
            if let Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) = e {
                held |= !m.finalizers().is_empty();
                if phase_of(&m).is_some_and(|p| p.is_terminal()) {
                    return (held, m);
                }
            }
        }
        panic!("the watch ended");
    });
    let start = Instant::now();
    env.create_migration("move", env.spec(FD, WORKERS, false))
        .await;
    let m = env.wait_terminal("move", Duration::from_secs(240)).await;
    // The finalizer came off before Completed was written: whoever sees it finished may
    // delete it, or uninstall vcfm, at once (a finalizer held by a controller whose RBAC
    // is already gone would hang the deletion).
    let (held, first) = tokio::time::timeout(Duration::from_secs(30), first_finished)
        .await
        .expect("the watch saw the migration finish")
        .unwrap();
    assert!(held, "the migration held its finalizer while it ran");
    assert!(
        first.finalizers().is_empty(),
        "the first finished version still holds {:?}",
        first.finalizers()
    );
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
    // Every Secret and ConfigMap the phases read came from its watch, and
    // the metadata Secret was created without a read before (issue 16).
    if env.sim.real().is_none() {
        for (k, n) in env.sim.kube().stats().snapshot() {
            assert!(
                !(k.user == CONTROLLER_USER
                    && k.verb == "get"
                    && ["secrets", "configmaps"].contains(&k.resource.as_str())),
                "{n} GET(s) of {} beside their watches",
                k.resource
            );
        }
    }
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
