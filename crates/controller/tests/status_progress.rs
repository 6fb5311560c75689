//! What an administrator watching a whole migration sees, version by version:
//! progress that never falls within a phase, RestartPods counting one fixed
//! set of pod groups, UpdateConfig not going back to the machine-config-operator
//! pod once it saw it restarted (the pool rollout's drain evicts it), also
//! across a controller restart, and one Event per phase transition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, EvictParams, ListParams};
use kube::runtime::watcher;
use openshift_sim::{Delays, Scenario};
use std::time::Duration;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

const WORKERS: u32 = 2;
const MCO_NS: &str = "openshift-machine-config-operator";

/// One version of the migration's current phase as the API server wrote it.
#[derive(Debug, Clone)]
struct Seen {
    phase: PhaseName,
    status: PhaseStatus,
    progress: i32,
    message: String,
}

/// Evicts the running machine-config-operator pod, as the machine-config
/// controller's drain of its master does during a pool rollout
/// (machine-config-operator `pkg/controller/drain/drain_controller.go`).
async fn evict_mco_pod(client: kube::Client) {
    let api = Api::<Pod>::namespaced(client, MCO_NS);
    let pods = api.list(&ListParams::default()).await.unwrap();
    for p in pods.items {
        let name = p.name_any();
        if name.starts_with("machine-config-operator-") && p.metadata.deletion_timestamp.is_none() {
            api.evict(&name, &EvictParams::default()).await.unwrap();
        }
    }
}

fn pool_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: "machineconfiguration.openshift.io".into(),
        version: "v1".into(),
        api_version: "machineconfiguration.openshift.io/v1".into(),
        kind: "MachineConfigPool".into(),
        plural: "machineconfigpools".into(),
    }
}

/// Pauses or unpauses the worker MachineConfigPool (`spec.paused`).
async fn set_paused(pools: &Api<kube::api::DynamicObject>, paused: bool) {
    let patch = serde_json::json!({"spec": {"paused": paused}});
    pools
        .patch(
            "worker",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

/// Dates the pools' conditions an hour back, as on any cluster that has run a
/// while: a pool whose `Updated` changed within the last minute counts as
/// rolled already (`mcp::rolled_since` allows that much clock skew), which on
/// a cluster seeded seconds ago would let UpdateConfig pass the pools before
/// they have even rendered the change.
async fn settled_long_ago(pools: &Api<kube::api::DynamicObject>) {
    let long_ago = "2026-01-01T00:00:00Z";
    for name in ["master", "worker"] {
        let p = pools.get_status(name).await.unwrap();
        let mut conditions = p.data["status"]["conditions"].clone();
        for c in conditions.as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = long_ago.into();
        }
        let patch = serde_json::json!({"status": {"conditions": conditions}});
        pools
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
}

/// "k/N pod group(s) ..." → N.
fn total_of(message: &str) -> Option<u32> {
    let (_, rest) = message.split_once('/')?;
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_migration_shows_steady_progress_and_one_event_per_transition() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        delays: Delays {
            // Deleted pods go at once, before their replacements appear (as in the
            // bench): a group then has no pods for a moment.
            pod_terminate: Duration::ZERO,
            // The evicted operator pod's replacement stays unready while the
            // controller looks at the rolling pools.
            pod_ready: Duration::from_secs(3),
            mcp_node_update: Duration::from_millis(500),
            ..Delays::instant()
        },
        ..Scenario::default()
    })
    .await;
    // The worker pool is paused until the operator pod is evicted, so that
    // UpdateConfig surely waits for the pools meanwhile.
    let pools = Api::<kube::api::DynamicObject>::all_with(env.client.clone(), &pool_resource());
    set_paused(&pools, true).await;
    settled_long_ago(&pools).await;
    env.spawn_controller();
    let api = env.api();
    let admin = env.client.clone();
    // The first RestartPods count shown: the test restarts the controller then.
    let (restart_tx, restart_rx) = tokio::sync::oneshot::channel::<()>();
    let mut restart_tx = Some(restart_tx);
    let watched = tokio::spawn(async move {
        let cfg = watcher::Config::default().fields("metadata.name=watched");
        let mut events = std::pin::pin!(watcher(api, cfg));
        let mut seen: Vec<Seen> = vec![];
        let mut evicted = false;
        while let Some(e) = events.next().await {
            let Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) = e else {
                continue;
            };
            let Some(c) = m
                .status
                .as_ref()
                .and_then(|s| s.current_phase_state.clone())
            else {
                continue;
            };
            if c.name == PhaseName::UpdateConfig
                && c.message.contains("waiting for the MachineConfigPools")
                && !evicted
            {
                evicted = true;
                evict_mco_pod(admin.clone()).await;
                // The rollout goes on while the replacement is not Ready yet.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let pools =
                    Api::<kube::api::DynamicObject>::all_with(admin.clone(), &pool_resource());
                set_paused(&pools, false).await;
            }
            if c.name == PhaseName::RestartPods
                && c.message.contains("pod group(s) restarted and Ready")
                && let Some(tx) = restart_tx.take()
            {
                let _ = tx.send(());
            }
            seen.push(Seen {
                phase: c.name,
                status: c.status,
                progress: c.progress,
                message: c.message,
            });
            if phase_of(&m).is_some_and(|p| p.is_terminal()) {
                return (seen, evicted);
            }
        }
        panic!("the watch ended");
    });
    env.create_migration("watched", env.spec(FD, WORKERS, false))
        .await;
    // A controller restarted mid-RestartPods counts the same groups (its log).
    tokio::time::timeout(Duration::from_secs(120), restart_rx)
        .await
        .expect("RestartPods showed its count")
        .unwrap();
    env.kill_controller().await;
    env.spawn_controller();
    let m = env.wait_terminal("watched", Duration::from_secs(240)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let (seen, evicted) = tokio::time::timeout(Duration::from_secs(30), watched)
        .await
        .expect("the watch saw the migration finish")
        .unwrap();
    assert!(
        evicted,
        "UpdateConfig waited for the pools at some point: {seen:#?}"
    );
    let trace = || {
        seen.iter()
            .map(|s| format!("{} {}% {}", s.phase, s.progress, s.message))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Within a phase, progress never falls.
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.phase == b.phase && b.status == PhaseStatus::Running {
            assert!(
                b.progress >= a.progress,
                "{} went from {}% to {}%:\n{}",
                a.phase,
                a.progress,
                b.progress,
                trace()
            );
        }
    }
    // RestartPods states one total of pod groups throughout.
    let totals: std::collections::BTreeSet<u32> = seen
        .iter()
        .filter(|s| s.phase == PhaseName::RestartPods && s.status == PhaseStatus::Running)
        .filter(|s| s.message.contains("pod group(s) restarted and Ready"))
        .filter_map(|s| total_of(&s.message))
        .collect();
    assert!(
        totals.len() <= 1,
        "RestartPods changed its total: {totals:?}\n{}",
        trace()
    );
    // UpdateConfig, once it saw the operator pod restarted, never waits for it again.
    let update_config: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.phase == PhaseName::UpdateConfig)
        .collect();
    if let Some(first) = update_config
        .iter()
        .position(|s| s.message.contains("waiting for the MachineConfigPools"))
    {
        assert!(
            !update_config[first..].iter().any(|s| s
                .message
                .contains("waiting for the restarted machine-config-operator pod")),
            "UpdateConfig went back to the operator pod:\n{}",
            trace()
        );
    }
    // CreateWorkers holds nothing once it created its MachineSets.
    let create_workers: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.phase == PhaseName::CreateWorkers)
        .collect();
    if let Some(first) = create_workers
        .iter()
        .position(|s| s.message.contains("new machine(s) ready"))
    {
        assert!(
            !create_workers[first..]
                .iter()
                .any(|s| s.message.contains("holds its machine rollout")),
            "CreateWorkers claimed to hold a rollout it had started:\n{}",
            trace()
        );
    }

    // ScaleOldMachines writes no wait twice: deleting the last empty set
    // goes on to what is left in the same step.
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.phase == PhaseName::ScaleOldMachines && b.phase == a.phase {
            assert!(
                (a.status, a.progress, &a.message) != (b.status, b.progress, &b.message),
                "ScaleOldMachines wrote the same wait twice:\n{}",
                trace()
            );
        }
    }

    // One Event per transition: only the first phase has a start Event of its own;
    // every other start is named in the Event of the phase before it.
    testbed::wait_event(
        &env.client,
        NS,
        Some("watched"),
        "MigrationCompleted",
        Duration::from_secs(10),
    )
    .await;
    let events = testbed::event_notes(&env.client, NS, Some("watched")).await;
    let started: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("PhaseStarted"))
        .collect();
    assert_eq!(
        started,
        vec!["PhaseStarted phase 1 (Preflight) started"],
        "{events:#?}"
    );
    for p in PhaseName::ALL {
        let ended: Vec<&String> = events
            .iter()
            .filter(|e| {
                (e.starts_with("PhaseCompleted") || e.starts_with("PhaseSkipped"))
                    && e.contains(&format!("phase {} ({p}):", p.number()))
            })
            .collect();
        assert_eq!(ended.len(), 1, "{p}: {events:#?}");
        if let Some(next) = p.next() {
            let starts = format!("; phase {} ({next}) started", next.number());
            assert!(ended[0].ends_with(&starts), "{p}: {}", ended[0]);
        }
    }
    assert_eq!(events.len(), PhaseName::ALL.len() + 2, "{events:#?}");
    env.shutdown().await;
}
