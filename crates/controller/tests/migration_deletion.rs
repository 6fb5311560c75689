//! Deleting a migration (issue 14, item 1) and rollback step deadlines
//! (item 3), end to end on a simulated cluster: a deletion before any change
//! goes at once; one after changes rolls back first, keeping the backup until
//! the rollback ends and after; one past the point of no return is held until
//! forced, and the backup outlives it; a Machine stuck deleting makes the
//! rollback `Stalled` until it is released; a controller killed again and
//! again during a deletion's rollback still rolls back and lets go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use openshift_sim::Scenario;
use serde_json::json;
use std::time::{Duration, Instant};
use vcfm_api::openshift::{MACHINE_API_NAMESPACE, Machine};
use vcfm_api::{MigrationPhase, PhaseName, RollbackTrigger};

const WORKERS: u32 = 1;
const FINALIZER: &str = "migration.openshift.io/rollback-on-delete";
const FORCE: &str = "migration.openshift.io/force-delete";
const OUTCOME: &str = "migration.openshift.io/migration-outcome";
/// A finalizer no simulated controller removes: the Machine stays Deleting.
const HOLD: &str = "e2e.vcfm.test/hold";

fn backup_name(m: &str) -> String {
    format!("{m}-backup")
}

async fn backup(env: &Env, m: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .get_opt(&backup_name(m))
        .await
        .unwrap()
}

/// `reason note` of every Event about one migration.
async fn wait_event(env: &Env, name: &str, reason: &str) -> String {
    testbed::wait_event(&env.client, NS, Some(name), reason, Duration::from_secs(20)).await
}

async fn delete(env: &Env, name: &str) {
    env.api()
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete migration");
}

/// Waits until the migration is gone, returning the last state seen and
/// whether the backup Secret existed at every look while it was there.
async fn wait_gone(env: &Env, name: &str, timeout: Duration) -> (Option<Vcfm>, bool) {
    let start = Instant::now();
    let mut last = None;
    let mut backup_always = true;
    loop {
        match env.api().get_opt(name).await.unwrap() {
            None => return (last, backup_always),
            Some(m) => {
                backup_always &= backup(env, name).await.is_some();
                assert!(
                    start.elapsed() < timeout,
                    "{name} still there after {timeout:?}:\n{}",
                    summary(&m)
                );
                last = Some(m);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_migration_before_it_changed_anything_goes_at_once() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let seeded = env.snapshot().await;
    let m = env
        .migrate_through("early", WORKERS, PhaseName::Preflight, json!({}))
        .await;
    assert!(
        m.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()),
        "Preflight changes nothing, so nothing holds the deletion: {:?}",
        m.metadata.finalizers
    );
    let t = Instant::now();
    delete(&env, "early").await;
    wait_gone(&env, "early", Duration::from_secs(5)).await;
    eprintln!("gone after {:?}", t.elapsed());
    assert_same_state(&seeded, &env.snapshot().await, "after deleting early");
    assert!(
        backup(&env, "early").await.is_none(),
        "no backup was written"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_migration_mid_way_rolls_it_back_before_it_goes() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let seeded = env.snapshot().await;
    let m = env
        .migrate_through("midway", WORKERS, PhaseName::CreateWorkers, json!({}))
        .await;
    assert!(
        m.metadata
            .finalizers
            .as_ref()
            .unwrap()
            .iter()
            .any(|f| f == FINALIZER),
        "{:?}",
        m.metadata.finalizers
    );
    let changed = env.snapshot().await;
    assert_eq!(
        changed.cvo_replicas, 0,
        "the migration had changed the cluster"
    );
    assert!(
        changed.machinesets.len() > 1,
        "{:?}",
        changed.machinesets.keys()
    );

    delete(&env, "midway").await;
    let (last, backup_kept) = wait_gone(&env, "midway", Duration::from_secs(180)).await;
    let last = last.expect("the deletion waited for the rollback");
    let rb = last.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(rb.trigger, RollbackTrigger::Deletion, "{}", summary(&last));
    assert!(
        backup_kept,
        "the backup Secret existed until the rollback ended"
    );

    let after = env.snapshot().await;
    assert_eq!(after.cvo_replicas, 1);
    assert_same_state(&seeded, &after, "after deleting midway");
    let b = backup(&env, "midway")
        .await
        .expect("the backup is kept after the rollback");
    assert!(
        b.metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty()),
        "the backup must not be garbage-collected with the migration"
    );
    assert_eq!(
        b.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OUTCOME))
            .map(String::as_str),
        Some("RolledBack")
    );
    // A clean earlier rollback does not stop the next migration's Preflight.
    let m = env
        .migrate_through("next", WORKERS, PhaseName::Preflight, json!({}))
        .await;
    assert_eq!(
        history(&m),
        vec![(PhaseName::Preflight, vcfm_api::PhaseStatus::Completed)]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_past_the_point_of_no_return_is_held_until_forced_and_the_backup_survives() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("late", WORKERS, PhaseName::RecreateCpms, json!({}))
        .await;
    delete(&env, "late").await;
    let m = env
        .wait("late", "DeletionBlocked", Duration::from_secs(30), |m| {
            condition(m, "DeletionBlocked").is_some_and(|(s, _)| s == "True")
        })
        .await;
    let (_, msg) = condition(&m, "DeletionBlocked").unwrap();
    assert!(
        msg.contains("RecreateCPMS")
            && msg.contains(&format!("kubectl annotate vcfm -n {NS} late {FORCE}=true")),
        "{msg}"
    );
    let ev = wait_event(&env, "late", "DeletionBlocked").await;
    assert!(ev.contains(FORCE), "{ev}");
    // Held: still there, nothing rolled back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = env.api().get("late").await.unwrap();
    assert!(
        m.status.as_ref().unwrap().rollback.is_none(),
        "{}",
        summary(&m)
    );

    env.api()
        .patch(
            "late",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {FORCE: "true"}}})),
        )
        .await
        .unwrap();
    wait_gone(&env, "late", Duration::from_secs(30)).await;
    let b = backup(&env, "late")
        .await
        .expect("the backup survives a forced deletion");
    assert!(
        b.metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
    );
    assert_eq!(
        b.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OUTCOME))
            .map(String::as_str),
        Some("ForceDeleted")
    );
    assert!(
        b.data
            .as_ref()
            .is_some_and(|d| d.contains_key("infrastructure.json"))
    );

    // A new migration refuses to start over the half-migrated cluster.
    env.create_migration("again", env.spec(FD, WORKERS, false))
        .await;
    let m = env.wait_terminal("again", Duration::from_secs(60)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Failed),
        "{}",
        summary(&m)
    );
    let (_, failed) = condition(&m, "Failed").unwrap();
    for s in [
        "backup Secret vcfm-e2e/late-backup",
        "ForceDeleted",
        "cluster-version-operator is scaled to 0",
        "vCenters",
    ] {
        assert!(failed.contains(s), "Preflight must name {s:?}: {failed}");
    }
    assert_eq!(
        history(&m),
        vec![(PhaseName::Preflight, vcfm_api::PhaseStatus::Failed)]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_deletion_goes_on_to_completion_and_then_lets_go() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("onward", WORKERS, PhaseName::RecreateCpms, json!({}))
        .await;
    delete(&env, "onward").await;
    env.wait("onward", "DeletionBlocked", Duration::from_secs(30), |m| {
        condition(m, "DeletionBlocked").is_some_and(|(s, _)| s == "True")
    })
    .await;
    // Approvals still work on a held migration: it finishes the move, then goes.
    let rest: Vec<PhaseName> = PhaseName::ALL
        .into_iter()
        .filter(|p| *p > PhaseName::RecreateCpms)
        .collect();
    env.approve("onward", &rest).await;
    let (last, _) = wait_gone(&env, "onward", Duration::from_secs(180)).await;
    let last = last.unwrap();
    assert!(
        last.status.as_ref().unwrap().rollback.is_none(),
        "{}",
        summary(&last)
    );
    let findings = migrated_findings(&env, &env.snapshot().await, WORKERS as usize);
    assert!(findings.is_empty(), "{findings:#?}");
    let b = backup(&env, "onward").await.expect("backup kept");
    assert_eq!(
        b.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OUTCOME))
            .map(String::as_str),
        Some("Completed")
    );
    env.shutdown().await;
}

/// The new worker Machines of the migration's MachineSet.
async fn new_workers(env: &Env) -> Vec<Machine> {
    Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|m| m.metadata.name.as_deref().is_some_and(|n| n.contains(FD)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_stuck_deleting_stalls_the_rollback_until_it_is_released() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let seeded = env.snapshot().await;
    env.migrate_through(
        "stuck",
        WORKERS,
        PhaseName::CreateWorkers,
        json!({"rollbackStepTimeout": "3s"}),
    )
    .await;
    let machines = Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE);
    let victim = new_workers(&env).await.pop().expect("a new worker Machine");
    let vname = victim.metadata.name.clone().unwrap();
    let mut fins = victim.metadata.finalizers.clone().unwrap_or_default();
    fins.push(HOLD.into());
    machines
        .patch(
            &vname,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": fins}})),
        )
        .await
        .unwrap();

    env.set_state("stuck", "Rollback").await;
    let m = env
        .wait("stuck", "Stalled", Duration::from_secs(60), |m| {
            condition(m, "Stalled").is_some_and(|(s, _)| s == "True")
        })
        .await;
    let (_, msg) = condition(&m, "Stalled").unwrap();
    assert!(
        msg.contains("CreateWorkers") && msg.contains("machine") && msg.contains("keeps trying"),
        "{msg}"
    );
    let step = m
        .status
        .as_ref()
        .unwrap()
        .rollback
        .as_ref()
        .unwrap()
        .current_step
        .clone();
    assert_eq!(step.map(|s| s.phase), Some(PhaseName::CreateWorkers));
    let ev = wait_event(&env, "stuck", "RollbackStalled").await;
    assert!(ev.contains("CreateWorkers"), "{ev}");
    // It keeps waiting, and does not give up on the step.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = env.api().get("stuck").await.unwrap();
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollingBack),
        "{}",
        summary(&m)
    );

    // The administrator removes the obstacle.
    let live = machines.get(&vname).await.unwrap();
    let fins: Vec<String> = live
        .metadata
        .finalizers
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != HOLD)
        .collect();
    machines
        .patch(
            &vname,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": fins}})),
        )
        .await
        .unwrap();
    let m = env.wait_terminal("stuck", Duration::from_secs(120)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    assert_eq!(
        condition(&m, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(&m, "RolledBack").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_same_state(&seeded, &env.snapshot().await, "after the stalled rollback");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_deletion_rollback_the_controller_still_rolls_back_and_lets_go() {
    let seed = std::env::var("VCFM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00de_1e7e_u64);
    eprintln!("deletion crash test seed {seed} (VCFM_CRASH_SEED to replay)");
    let mut rng = Rng::new(seed);
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let seeded = env.snapshot().await;
    env.migrate_through("crashdel", WORKERS, PhaseName::CreateWorkers, json!({}))
        .await;
    delete(&env, "crashdel").await;
    let start = Instant::now();
    let mut kills = vec![];
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        let Some(m) = env.api().get_opt("crashdel").await.unwrap() else {
            break;
        };
        assert!(
            backup(&env, "crashdel").await.is_some(),
            "the backup must exist while the rollback runs"
        );
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "{}",
            summary(&m)
        );
        let rb = m.status.as_ref().and_then(|s| s.rollback.as_ref());
        kills.push(format!(
            "{:?}",
            rb.map(|r| r.rolled_back_phases.len()).unwrap_or(0)
        ));
        env.kill_controller().await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 200))).await;
        env.spawn_controller();
    }
    eprintln!("{} kills at rolled-back step counts {kills:?}", kills.len());
    assert!(
        kills.len() >= 3,
        "only {} kills during the rollback",
        kills.len()
    );
    assert_same_state(
        &seeded,
        &env.snapshot().await,
        "after a deletion with kills",
    );
    let b = backup(&env, "crashdel").await.expect("backup kept");
    assert_eq!(
        b.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OUTCOME))
            .map(String::as_str),
        Some("RolledBack")
    );
    env.shutdown().await;
}
