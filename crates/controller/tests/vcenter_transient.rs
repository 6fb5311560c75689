//! Transient vCenter trouble is retried, never rolled back: the target
//! vCenter restarts (losing its sessions and everything on it) as CreateTags
//! starts, and a burst of `SystemError` faults meets CreateFolder; the
//! migration completes, with no failed phase and no rollback. Sim tier (the
//! faults are injected into vcsim).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::{Scenario, Site};
use serde_json::json;
use std::time::Duration;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

const BURST: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vcenter_restart_and_system_error_bursts_are_retried_without_rollback() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::UpdateSecrets, json!({}))
        .await;
    // The restart begins with a kill, issued with the approval: the phase
    // meets a dead vCenter, then a fresh one that knows none of its sessions.
    let (_, restarted) = tokio::join!(
        env.approve("m", &[PhaseName::CreateTags]),
        env.sim.restart_vcsim(Site::Target)
    );
    restarted.unwrap();
    env.wait(
        "m",
        "CreateTags to complete",
        Duration::from_secs(120),
        |m| history(m).contains(&(PhaseName::CreateTags, PhaseStatus::Completed)),
    )
    .await;
    // Then vCenter answers the folder creation with SystemError, several times.
    env.sim
        .inject_vcenter_system_errors(Site::Target, "CreateFolder", BURST)
        .unwrap();
    env.approve("m", &PhaseName::ALL).await;
    let m = env.wait_terminal("m", Duration::from_secs(300)).await;
    let st = m.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(MigrationPhase::Completed), "{}", summary(&m));
    assert!(st.rollback.is_none(), "{}", summary(&m));
    assert!(
        !history(&m).iter().any(|(_, s)| *s == PhaseStatus::Failed),
        "{}",
        summary(&m)
    );
    // Both really hit the phases: their vSphere calls failed and were retried.
    let failed_calls = |phase: PhaseName| -> u64 {
        st.phase_history
            .iter()
            .filter(|h| h.phase == phase)
            .flat_map(|h| &h.logs)
            .filter(|l| l.component == "vsphere")
            .filter_map(|l| l.fields.get("failed")?.parse::<u64>().ok())
            .sum()
    };
    assert!(failed_calls(PhaseName::CreateTags) > 0, "{}", summary(&m));
    assert!(
        failed_calls(PhaseName::CreateFolder) >= u64::from(BURST),
        "{}",
        summary(&m)
    );
    let log = env.sim.vcsim_log(Site::Target);
    assert!(
        log.contains("injected SystemError into CreateFolder (0 left)"),
        "the whole burst was served:\n{log}"
    );
    let findings = migrated_findings(&env, &env.snapshot().await, 1);
    assert!(findings.is_empty(), "{findings:#?}");
    env.shutdown().await;
}
