//! Faults in phases 5–10: a vCenter restart mid-phase, a controller killed
//! between lifting and restoring the Infrastructure CRD rule, and an operator
//! that stays Degraded until MonitorHealth's deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_os;

use common_os::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube_sim::{FaultAction, FaultRule};
use openshift_sim::{ConfigFormat, Faults, Scenario, Site};
use serde_json::json;
use std::time::Duration;
use vcfm_api::{
    ClusterFacts, MigrationPhase, MigrationStatus, PhaseHistoryEntry, PhaseName, PhaseStatus,
    SourceVCenter,
};
use vcfm_controller::state::Outcome;
use vcfm_vsphere::{Cardinality, CategorySpec};

/// Gate off, INI, Manual: the target vCenter restarts (losing every session
/// and object) as CreateTags starts; then the controller dies while the CRD
/// rule is lifted and the Infrastructure write keeps failing. Both survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcsim_restart_and_a_kill_between_lift_and_restore_are_survived() {
    let mut env = Env::start_in(
        Scenario {
            workers: 1,
            config_format: ConfigFormat::Ini,
            ..Scenario::default()
        },
        "p510-faults",
    )
    .await;
    let before = env.observe().await;
    env.spawn_controller();
    env.create_migration("m", env.phase_spec(true)).await;
    for p in &FIRST_TEN[..4] {
        env.wait("m", &format!("{p} waiting"), Duration::from_secs(60), |m| {
            assert_not_failed(m);
            waiting_for_approval(m) == Some(*p)
        })
        .await;
        env.approve("m", &[*p]).await;
    }
    env.wait("m", "CreateTags waiting", Duration::from_secs(60), |m| {
        assert_not_failed(m);
        waiting_for_approval(m) == Some(PhaseName::CreateTags)
    })
    .await;
    // The restart starts with a kill, issued together with the approval: the
    // phase meets a dead vCenter and then a fresh one without its sessions.
    let (_, restarted) = tokio::join!(
        env.approve("m", &[PhaseName::CreateTags]),
        env.sim.restart_vcsim(Site::Target)
    );
    restarted.unwrap();
    let m = env.wait_completed("m", PhaseName::CreateTags).await;
    // The restart really hit the phase: some of its vSphere calls failed.
    let tags_phase = m
        .status
        .as_ref()
        .unwrap()
        .phase_history
        .iter()
        .find(|h| h.phase == PhaseName::CreateTags)
        .unwrap();
    assert!(
        tags_phase
            .logs
            .iter()
            .any(|l| l.component == "vsphere" && l.fields.get("failed").is_some_and(|f| f != "0")),
        "{}",
        summary(&m)
    );
    env.approve("m", &[PhaseName::CreateFolder]).await;
    env.wait_completed("m", PhaseName::CreateFolder).await;

    // Every Infrastructure write fails: phase 7 lifts the rule and then retries.
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Error { code: 503 })
            .verb("update")
            .resource("infrastructures")
            .name("cluster"),
    );
    env.approve("m", &[PhaseName::UpdateInfrastructure]).await;
    let lifted_rules = {
        let start = std::time::Instant::now();
        loop {
            let r = env.crd_rules().await;
            if r != json!(before_rules(&before)) {
                break r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the rule was never lifted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    env.kill_controller().await;
    // Nothing puts the rule back while the controller is dead (the CVO is at 0).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.crd_rules().await, lifted_rules);
    assert!(
        !lifted_rules
            .to_string()
            .contains("vcenters cannot be added or removed once set"),
        "{lifted_rules}"
    );
    let m = env.api().get("m").await.unwrap();
    assert_eq!(
        current(&m),
        Some((PhaseName::UpdateInfrastructure, PhaseStatus::Running)),
        "{}",
        summary(&m)
    );
    faults.clear();

    env.spawn_controller();
    let m = env
        .wait_completed("m", PhaseName::UpdateInfrastructure)
        .await;
    for p in [
        PhaseName::UpdateConfig,
        PhaseName::RestartPods,
        PhaseName::MonitorHealth,
    ] {
        env.wait("m", &format!("{p} waiting"), Duration::from_secs(60), |m| {
            assert_not_failed(m);
            waiting_for_approval(m) == Some(p)
        })
        .await;
        env.approve("m", &[p]).await;
    }
    let done = env.wait_completed("m", PhaseName::MonitorHealth).await;
    eprintln!("{}", summary(&done));
    let after = env.observe().await;
    assert_eq!(
        after.crd_spec, before.crd_spec,
        "the rule was restored exactly"
    );
    assert_taught_target(&env, &after);
    let h = m
        .status
        .as_ref()
        .unwrap()
        .phase_history
        .iter()
        .find(|h| h.phase == PhaseName::UpdateInfrastructure)
        .unwrap();
    assert!(
        h.message.contains("lifted for the update and restored"),
        "{}",
        h.message
    );
    env.shutdown().await;
}

fn before_rules(o: &Observed) -> serde_json::Value {
    serde_json::Value::Array(
        o.crd_spec["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v.pointer("/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters/x-kubernetes-validations")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect(),
    )
}

/// An operator that stays Degraded: MonitorHealth names it while waiting and
/// fails at its deadline with it in the message. (Preflight would refuse such
/// a cluster, so the migration is placed at phase 10 directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_operator_ends_monitor_health_at_its_deadline() {
    let mut env = Env::start_in(
        Scenario {
            workers: 1,
            multi_vcenter_day2_gate: true,
            faults: Faults {
                degraded_operator: Some("storage".into()),
                ..Faults::default()
            },
            ..Scenario::default()
        },
        "p510-degraded",
    )
    .await;
    let mut spec = env.phase_spec(false);
    spec["phaseTimeouts"] = json!({"MonitorHealth": "6s"});
    let m = env.create_migration("m", spec).await;
    let now = jiff::Timestamp::now();
    let done = |p: PhaseName| PhaseHistoryEntry {
        phase: p,
        status: PhaseStatus::Completed,
        start_time: Some(Time(now)),
        completion_time: Some(Time(now)),
        message: String::new(),
        logs: vec![],
    };
    let mut history: Vec<PhaseHistoryEntry> = FIRST_TEN[..9].iter().map(|p| done(*p)).collect();
    history.push(PhaseHistoryEntry {
        completion_time: None,
        status: PhaseStatus::Running,
        ..done(PhaseName::MonitorHealth)
    });
    let status = MigrationStatus {
        phase: Some(MigrationPhase::from(PhaseName::MonitorHealth)),
        phase_history: history,
        current_phase_state: Some(running(
            PhaseName::MonitorHealth,
            Some(Time(now)),
            Some(Time(now)),
        )),
        source_vcenter: Some(SourceVCenter {
            server: env.sim.source().server.clone(),
            datacenter: env.sim.source().datacenter.clone(),
            failure_domains: vec![],
        }),
        cluster: Some(ClusterFacts {
            infra_id: env.sim.infra_id().into(),
            version: "4.16.8".into(),
            multi_vcenter_day2: true,
        }),
        start_time: Some(Time(now)),
        observed_generation: m.metadata.generation,
        ..MigrationStatus::default()
    };
    env.api()
        .patch_status(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    env.spawn_controller();
    let waiting = env
        .wait(
            "m",
            "MonitorHealth naming storage",
            Duration::from_secs(30),
            |m| {
                m.status
                    .as_ref()
                    .and_then(|s| s.current_phase_state.as_ref())
                    .is_some_and(|c| {
                        c.waiting_for
                            .iter()
                            .any(|w| w.starts_with("clusteroperator/storage"))
                    })
            },
        )
        .await;
    let c = waiting.status.unwrap().current_phase_state.unwrap();
    assert!(
        c.message.contains("clusteroperator/storage"),
        "{}",
        c.message
    );
    assert!(c.message.contains("Degraded=True"), "{}", c.message);
    let failed = env
        .wait("m", "MonitorHealth failed", Duration::from_secs(30), |m| {
            phase_status(m, PhaseName::MonitorHealth) == Some(PhaseStatus::Failed)
        })
        .await;
    let h = failed
        .status
        .as_ref()
        .unwrap()
        .phase_history
        .iter()
        .rev()
        .find(|h| h.phase == PhaseName::MonitorHealth)
        .unwrap()
        .clone();
    assert!(h.message.contains("deadline"), "{}", h.message);
    assert!(
        h.message.contains("clusteroperator/storage"),
        "{}",
        h.message
    );
    let waited = h
        .completion_time
        .unwrap()
        .0
        .duration_since(now)
        .as_secs_f64();
    assert!((5.0..20.0).contains(&waited), "failed after {waited}s");
    assert_eq!(
        failed.status.as_ref().unwrap().phase,
        Some(MigrationPhase::Failed),
        "{}",
        summary(&failed)
    );
    env.shutdown().await;
}

/// CreateTags refuses a target already tagged with another region, and an
/// incompatible pre-existing topology category, without creating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_tags_reports_conflicts_and_incompatible_categories() {
    let env = Env::start_in(
        Scenario {
            workers: 1,
            multi_vcenter_day2_gate: true,
            ..Scenario::default()
        },
        "p510-conflict",
    )
    .await;
    let vc = env.sim.vsphere_client(Site::Target).unwrap();
    let t = env.sim.target().clone();
    let region = vc
        .ensure_category(&CategorySpec {
            name: "openshift-region".into(),
            description: "Added by openshift-install do not remove".into(),
            cardinality: Cardinality::Single,
            associable_types: vec![
                "urn:vim25:Datacenter".into(),
                "urn:vim25:ClusterComputeResource".into(),
            ],
        })
        .await
        .unwrap();
    let theirs = vc
        .ensure_tag(&region.id, "someone-elses-region", "")
        .await
        .unwrap();
    let dc = vc
        .find_datacenter(&format!("/{}", t.datacenter))
        .await
        .unwrap();
    vc.attach_tag(&theirs.id, &dc).await.unwrap();
    vc.create_category(&CategorySpec {
        name: "openshift-zone".into(),
        description: "made by hand".into(),
        cardinality: Cardinality::Multiple,
        associable_types: vec![],
    })
    .await
    .unwrap();

    let m: Vcfm = serde_json::from_value(json!({
        "apiVersion": "migration.openshift.io/v1alpha1",
        "kind": "VmwareCloudFoundationMigration",
        "metadata": {"name": "m", "namespace": env.ns, "uid": "0b9e4a52-conflict"},
        "spec": env.phase_spec(false),
        "status": {
            "sourceVCenter": {"server": env.sim.source().server, "datacenter": env.sim.source().datacenter},
            "cluster": {"infraId": env.sim.infra_id(), "version": "4.16.8", "multiVCenterDay2": true},
        },
    }))
    .unwrap();

    let before = env.target_state().await;
    let (out, updates) = env.execute_once(m.clone(), PhaseName::CreateTags).await;
    match out {
        Ok(Outcome::Failed { message }) => {
            // Both problems at once, so that one round of fixes suffices.
            assert!(message.contains("someone-elses-region"), "{message}");
            assert!(message.contains(REGION), "{message}");
            assert!(message.contains(&format!("/{}", t.datacenter)), "{message}");
            assert!(
                message.contains("\"openshift-zone\" exists but is incompatible"),
                "{message}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(updates.created.is_empty(), "{:?}", updates.created);
    assert_eq!(env.target_state().await, before, "nothing created");

    // Without the conflict, the incompatible zone category is named.
    vc.detach_tag(&theirs.id, &dc).await.unwrap();
    let before = env.target_state().await;
    let (out, _) = env.execute_once(m, PhaseName::CreateTags).await;
    match out {
        Ok(Outcome::Failed { message }) => {
            assert!(!message.contains("someone-elses-region"), "{message}");
            assert!(message.contains("openshift-zone"), "{message}");
            assert!(message.contains("incompatible"), "{message}");
            assert!(message.contains("SINGLE"), "{message}");
        }
        other => panic!("expected an incompatible category, got {other:?}"),
    }
    assert_eq!(env.target_state().await, before, "nothing created");
    env.shutdown().await;
}
