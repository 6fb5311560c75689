//! Manual mode (approved phase by phase, as `vcfm approve` does), rollback of
//! a failure injected in every phase before the point of no return (the
//! cluster, objects and vCenters, ends equal to the seeded one), and a
//! failure after the point of no return (stops, explains, never rolls back).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use kube_sim::{FaultAction, FaultRule};
use openshift_sim::{Faults, Scenario, Site};
use std::time::Duration;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

const WORKERS: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_migration_runs_each_phase_only_after_its_approval() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.create_migration("manual", env.spec(FD, WORKERS, true))
        .await;
    for phase in PhaseName::ALL {
        let m = env
            .wait(
                "manual",
                &format!("{phase} to wait for approval"),
                Duration::from_secs(120),
                |m| waiting_for_approval(m) == Some(phase),
            )
            .await;
        // It really waits: nothing of this phase has started.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let m2 = env.api().get("manual").await.unwrap();
        assert_eq!(waiting_for_approval(&m2), Some(phase), "{}", summary(&m2));
        assert!(
            !history(&m).iter().any(|(p, _)| *p == phase),
            "{phase} started before approval:\n{}",
            summary(&m)
        );
        env.approve("manual", &[phase]).await;
    }
    let m = env.wait_terminal("manual", Duration::from_secs(180)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let findings = migrated_findings(&env, &env.snapshot().await, WORKERS as usize);
    assert!(findings.is_empty(), "{findings:#?}");
    env.shutdown().await;
}

/// How a failure is provoked in a phase.
enum Inject {
    /// A 403 on the first matching request once the phase is approved.
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        name: Option<&'static str>,
        namespace: Option<&'static str>,
    },
    /// A deadline the phase cannot meet (`spec.phaseTimeouts`).
    Deadline,
    /// The target vCenter answers SystemError to the SOAP method the phase needs first
    /// (retried as transient) until the phase's one-second deadline passes. The phases
    /// that only talk to vCenter read their Kubernetes inputs from watch caches, so an
    /// API-server fault no longer reaches them.
    TargetVcenterFailing(&'static str),
    /// The migration puts its workers in a failure domain whose machines fail to provision.
    DoomedFailureDomain,
    /// The target credentials Secret does not exist (Preflight fails; it
    /// changes nothing, so there is nothing to roll back).
    MissingTargetSecret,
}

fn forbidden(
    verb: &'static str,
    resource: &'static str,
    name: Option<&'static str>,
    namespace: Option<&'static str>,
) -> Inject {
    Inject::Forbidden {
        verb,
        resource,
        name,
        namespace,
    }
}

/// Uses up the FindByInventoryPath faults the phase's retries left armed, so that they
/// fail neither the next migration nor the end-state checks (which look folders up too).
async fn use_up_target_lookup_faults(env: &Env) {
    let vc = env.sim.vsphere_client(Site::Target).unwrap();
    let root = format!("/{}/vm", env.sim.vcenter(Site::Target).datacenter);
    for _ in 0..8 {
        if vc.find_folder(&root).await.is_ok() {
            return;
        }
    }
    panic!("the target vCenter kept failing FindByInventoryPath");
}

/// Part of the name of the failure domain whose machines fail (see the scenario).
const DOOMED: &str = "doomed";

/// Runs one migration per phase in `cases` on the same cluster, each failing
/// in its phase, and checks that every rollback gives back the seeded cluster.
async fn rollback_cases(cases: Vec<(PhaseName, Inject)>) {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        faults: Faults {
            fail_provision_matching: Some(format!("-worker-{DOOMED}")),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let seeded = env.snapshot().await;
    for (i, (phase, inject)) in cases.into_iter().enumerate() {
        let name = format!("rb-{i}-{}", phase.as_str().to_lowercase());
        let fd = match inject {
            Inject::DoomedFailureDomain => format!("{DOOMED}-fd"),
            _ => FD.to_string(),
        };
        let mut spec = env.spec(&fd, WORKERS, true);
        let before: Vec<PhaseName> = PhaseName::ALL
            .iter()
            .copied()
            .filter(|p| *p < phase)
            .collect();
        spec["approvedPhases"] = serde_json::to_value(&before).unwrap();
        if matches!(inject, Inject::MissingTargetSecret) {
            spec["targetVCenterCredentialsSecret"] = serde_json::json!({"name": "no-such-secret"});
        }
        if matches!(inject, Inject::Deadline | Inject::TargetVcenterFailing(_)) {
            spec["phaseTimeouts"] = serde_json::json!({ phase.as_str(): "1s" });
        }
        env.create_migration(&name, spec).await;
        env.wait(
            &name,
            &format!("{phase} to wait for approval"),
            Duration::from_secs(120),
            |m| waiting_for_approval(m) == Some(phase),
        )
        .await;
        if let Inject::Forbidden {
            verb,
            resource,
            name: obj,
            namespace,
        } = inject
        {
            let mut rule = FaultRule::new(FaultAction::Error { code: 403 })
                .verb(verb)
                .resource(resource)
                .times(1);
            if let Some(n) = obj {
                rule = rule.name(n);
            }
            if let Some(n) = namespace {
                rule = rule.namespace(n);
            }
            env.sim.kube().faults().inject(rule);
        }
        if let Inject::TargetVcenterFailing(method) = inject {
            // More faults than the retries that fit in the deadline (backoff from 0.5 s);
            // what is left is retried away by the rollback.
            env.sim
                .inject_vcenter_system_errors(Site::Target, method, 4)
                .unwrap();
        }
        env.approve(&name, &[phase]).await;
        if matches!(inject, Inject::MissingTargetSecret) {
            let m = env
                .wait(&name, "Preflight to fail", Duration::from_secs(60), |m| {
                    phase_of(m) == Some(MigrationPhase::Failed)
                })
                .await;
            assert_eq!(
                history(&m),
                vec![(PhaseName::Preflight, PhaseStatus::Failed)]
            );
            assert!(m.status.as_ref().unwrap().rollback.is_none());
            assert_same_state(&seeded, &env.snapshot().await, "after a failed Preflight");
            eprintln!("Preflight: failed, nothing changed");
            continue;
        }
        // Failed comes first, then the rollback runs to RollbackCompleted.
        let m = env
            .wait(
                &name,
                "the rollback to complete",
                Duration::from_secs(180),
                |m| {
                    phase_of(m) == Some(MigrationPhase::RollbackCompleted)
                        || m.status.as_ref().is_some_and(|s| {
                            s.phase == Some(MigrationPhase::Failed)
                                && !s
                                    .phase_history
                                    .iter()
                                    .any(|h| h.phase == phase && h.status == PhaseStatus::Failed)
                        })
                },
            )
            .await;
        env.sim.kube().faults().clear();
        if let Inject::TargetVcenterFailing("FindByInventoryPath") = inject {
            use_up_target_lookup_faults(&env).await;
        }
        let st = m.status.as_ref().unwrap();
        assert_eq!(
            phase_of(&m),
            Some(MigrationPhase::RollbackCompleted),
            "{phase}: {}",
            summary(&m)
        );
        assert!(
            history(&m).contains(&(phase, PhaseStatus::Failed)),
            "{phase} did not fail: {}",
            summary(&m)
        );
        assert!(
            !history(&m).contains(&(phase, PhaseStatus::RollbackFailed))
                && !history(&m)
                    .iter()
                    .any(|(_, s)| *s == PhaseStatus::RollbackFailed),
            "{phase}: a rollback step failed: {}",
            summary(&m)
        );
        if matches!(inject, Inject::DoomedFailureDomain) {
            let failed = st
                .phase_history
                .iter()
                .find(|h| h.phase == phase && h.status == PhaseStatus::Failed)
                .map(|h| h.message.clone())
                .unwrap_or_default();
            assert!(
                failed.contains("Insufficient resources"),
                "the Machine's errorMessage is surfaced: {failed}"
            );
            // The rollback's steps that wait (scaling the new MachineSets to
            // 0, deleting them) keep what they did in the phase's log too.
            let logs: Vec<&str> = st
                .phase_history
                .iter()
                .filter(|h| h.phase == phase)
                .flat_map(|h| &h.logs)
                .map(|l| l.message.as_str())
                .collect();
            assert!(
                logs.iter()
                    .any(|l| l.starts_with("scaled MachineSet") && l.ends_with("to 0")),
                "the rollback's scale-down is not in the {phase} log: {logs:?}"
            );
        }
        let rb = st.rollback.as_ref().expect("rollback recorded");
        assert!(rb.completion_time.is_some());
        // Wait for the simulated operators to finish what the rollback set off
        // (machines being deleted, the CVO coming back) before comparing.
        let mut last = None;
        for _ in 0..100 {
            let now = env.snapshot().await;
            if now == seeded {
                last = None;
                break;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(now) = last {
            assert_same_state(
                &seeded,
                &now,
                &format!("after rolling back a failure in {phase}"),
            );
        }
        eprintln!(
            "{phase}: failure rolled back to the seeded cluster ({})",
            durations(&m)
        );
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_the_early_phases_roll_back_to_the_seeded_cluster() {
    rollback_cases(vec![
        (PhaseName::Preflight, Inject::MissingTargetSecret),
        (
            PhaseName::Backup,
            forbidden("create", "secrets", None, Some(NS)),
        ),
        (
            PhaseName::DisableCvo,
            forbidden(
                "patch",
                "deployments/scale",
                Some("cluster-version-operator"),
                Some("openshift-cluster-version"),
            ),
        ),
        (
            PhaseName::UpdateSecrets,
            forbidden(
                "patch",
                "secrets",
                Some("vsphere-creds"),
                Some("kube-system"),
            ),
        ),
        (
            PhaseName::CreateTags,
            Inject::TargetVcenterFailing("FindByInventoryPath"),
        ),
        (
            PhaseName::CreateFolder,
            Inject::TargetVcenterFailing("CreateFolder"),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_the_later_phases_roll_back_to_the_seeded_cluster() {
    rollback_cases(vec![
        (
            PhaseName::UpdateInfrastructure,
            forbidden("update", "infrastructures", Some("cluster"), None),
        ),
        (
            PhaseName::UpdateConfig,
            forbidden(
                "update",
                "configmaps",
                Some("cloud-provider-config"),
                Some("openshift-config"),
            ),
        ),
        (
            PhaseName::RestartPods,
            // A group whose pods are all old is restarted by one DeleteCollection.
            forbidden(
                "deletecollection",
                "pods",
                None,
                Some("openshift-machine-api"),
            ),
        ),
        (PhaseName::MonitorHealth, Inject::Deadline),
        (PhaseName::CreateWorkers, Inject::DoomedFailureDomain),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_past_the_point_of_no_return_stops_with_an_explanation_and_no_rollback() {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        faults: Faults {
            // New control-plane machines fail to provision on the target.
            fail_provision_matching: Some("-master-".into()),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.create_migration("ponr", env.spec(FD, WORKERS, false))
        .await;
    let m = env.wait_terminal("ponr", Duration::from_secs(180)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Failed),
        "{}",
        summary(&m)
    );
    let st = m.status.as_ref().unwrap();
    assert!(
        history(&m).contains(&(PhaseName::RecreateCpms, PhaseStatus::Failed)),
        "{}",
        summary(&m)
    );
    let failed = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert!(
        failed.message.contains("point of no return") && failed.message.contains("failed"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("Insufficient resources"),
        "the Machine's errorMessage is surfaced: {}",
        failed.message
    );
    // No automatic rollback, even though rollbackOnFailure is set...
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = env.api().get("ponr").await.unwrap();
    assert!(
        m.status.as_ref().unwrap().rollback.is_none(),
        "{}",
        summary(&m)
    );
    // ...and a requested one is refused with the reason.
    env.set_state("ponr", "Rollback").await;
    let m = env
        .wait(
            "ponr",
            "the rollback to be refused",
            Duration::from_secs(30),
            |m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "RollbackRefused" && c.status == "True")
                })
            },
        )
        .await;
    assert!(m.status.as_ref().unwrap().rollback.is_none());
    // The old control plane still runs: the cluster is degraded, not broken.
    let state = env.snapshot().await;
    let source_masters = state
        .machines
        .iter()
        .filter(|(n, s)| n.contains("-master-") && **s == env.sim.source().server)
        .count();
    assert!(source_masters >= 2, "{:?}", state.machines);
    env.shutdown().await;
}
