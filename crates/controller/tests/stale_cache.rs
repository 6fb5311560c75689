//! The controller reads migrations from its watch cache and writes status
//! with the resourceVersion it read: an edit that lands between its read and
//! its write is a 409, a fresh read and a retry, never lost and never acted
//! past. Sim tier (kube-sim delays the controller's status write while the
//! test edits the migration).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use kube_sim::{FaultAction, FaultRule};
use openshift_sim::Scenario;
use serde_json::json;
use std::time::{Duration, Instant};
use vcfm_api::{PhaseName, PhaseStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_made_while_the_controller_writes_status_is_kept_and_obeyed() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::Preflight, json!({}))
        .await;
    // The controller's next status write (Backup starting) is held for 2 s.
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Delay { millis: 2000 })
            .verb("update")
            .resource("vmwarecloudfoundationmigrations/status")
            .times(1),
    );
    env.approve("m", &[PhaseName::Backup]).await;
    let start = Instant::now();
    while !faults.active().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the controller never wrote status"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its write is in flight, computed on the version before this edit.
    env.set_state("m", "Paused").await;
    let m = env
        .wait(
            "m",
            "the migration to pause",
            Duration::from_secs(60),
            |m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Paused" && c.status == "True")
                })
            },
        )
        .await;
    assert_eq!(
        m.spec.state,
        vcfm_api::MigrationState::Paused,
        "{}",
        summary(&m)
    );
    let cur = m
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .map(|c| c.name);
    assert_eq!(cur, Some(PhaseName::Backup), "{}", summary(&m));
    // Nothing past Backup started while paused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = env.api().get("m").await.unwrap();
    assert!(
        history(&m).iter().all(|(p, _)| *p <= PhaseName::Backup),
        "{}",
        summary(&m)
    );
    // Resumed, it finishes with every phase run once.
    env.approve("m", &PhaseName::ALL).await;
    env.set_state("m", "Running").await;
    let m = env.wait_terminal("m", Duration::from_secs(240)).await;
    assert_eq!(
        phase_of(&m),
        Some(vcfm_api::MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let finals: Vec<PhaseName> = history(&m)
        .into_iter()
        .filter(|(_, s)| *s != PhaseStatus::Running)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(finals, PhaseName::ALL.to_vec(), "{}", summary(&m));
    env.shutdown().await;
}
