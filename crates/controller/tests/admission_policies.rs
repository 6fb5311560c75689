//! The machine API's ValidatingAdmissionPolicies (machine-api-operator
//! `pkg/webhooks/vap.go`, applied with the `VSphereMultiVCenterDay2` gate)
//! deny an Infrastructure update that drops a failure domain a Machine, a
//! MachineSet or the ControlPlaneMachineSet still references. openshift-sim
//! installs them with the gate; kube-sim (and kube-apiserver on the real tier)
//! evaluates them. Cleanup and the rollback must be ordered so they pass, and
//! a source Machine that no MachineSet owns must not block the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use kube::api::{Api, ListParams, PostParams};
use openshift_sim::Scenario;
use serde_json::json;
use std::time::Duration;
use vcfm_api::openshift::{Infrastructure, MACHINE_API_NAMESPACE, Machine};
use vcfm_api::{MigrationPhase, PhaseName};

const ORPHAN: &str = "hand-made-worker";

fn gate_on(workers: u32) -> Scenario {
    Scenario {
        workers,
        multi_vcenter_day2_gate: true,
        ..Scenario::default()
    }
}

/// A worker Machine on the source that no MachineSet owns or selects.
async fn add_orphan(env: &Env) {
    add_unowned(env, &env.sim.source().server.clone(), ORPHAN).await;
}

/// A worker Machine on `src` named `name` that no MachineSet owns or selects.
async fn add_unowned(env: &Env, src: &str, name: &str) {
    let api = Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE);
    let model = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|m| {
            m.server().as_deref() == Some(src)
                && m.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("machine.openshift.io/cluster-api-machine-role"))
                    .is_some_and(|r| r == "worker")
        })
        .expect("a source worker Machine");
    let mut v = serde_json::to_value(&model).unwrap();
    let mut labels = model.metadata.labels.clone().unwrap_or_default();
    labels.remove("machine.openshift.io/cluster-api-machineset");
    v["metadata"] = json!({"name": name, "namespace": MACHINE_API_NAMESPACE, "labels": labels});
    v["spec"].as_object_mut().unwrap().remove("providerID");
    v.as_object_mut().unwrap().remove("status");
    let m: Machine = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &m).await.unwrap();
    // Wait until the simulated machine controller runs it.
    for _ in 0..300 {
        let m = api.get(name).await.unwrap();
        if m.phase() == "Running" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the orphan Machine never ran");
}

/// The policies are in force: dropping the source failure domain while the
/// CPMS names it is denied with the operator's message.
async fn assert_policies_enforced(env: &Env) {
    let vaps = Api::<ValidatingAdmissionPolicy>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(vaps.items.len(), 3);
    let api = Api::<Infrastructure>::all(env.client.clone());
    let mut infra = api.get("cluster").await.unwrap();
    let vs = infra
        .spec
        .platform_spec
        .as_mut()
        .unwrap()
        .vsphere
        .as_mut()
        .unwrap();
    vs.failure_domains.as_mut().unwrap().clear();
    let err = api
        .replace("cluster", &PostParams::default(), &infra)
        .await
        .expect_err("the policies deny removing a failure domain in use");
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.code, 422, "{s:?}");
    assert!(
        s.message
            .contains("ValidatingAdmissionPolicy 'vsphere-failure-domain-in-use-by-cpms'"),
        "{}",
        s.message
    );
    assert!(
        s.message.contains("generated-failure-domain"),
        "{}",
        s.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_policies_a_migration_ends_and_an_orphan_source_machine_is_removed() {
    let mut env = Env::start(gate_on(1)).await;
    assert_policies_enforced(&env).await;
    add_orphan(&env).await;
    env.spawn_controller();
    let m = env.migrate_to_completion("move", 1).await;
    let api = Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE);
    assert!(api.get_opt(ORPHAN).await.unwrap().is_none());
    let st = m.status.as_ref().unwrap();
    assert!(
        st.warnings.iter().any(|w| w.contains(ORPHAN)),
        "Preflight names the orphan: {:?}",
        st.warnings
    );
    let infra = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap();
    assert!(
        infra
            .failure_domains()
            .iter()
            .all(|f| f.server == env.sim.target().server)
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_policies_a_rollback_after_create_workers_restores_the_source() {
    let mut env = Env::start(gate_on(1)).await;
    let before = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap()
        .spec;
    env.spawn_controller();
    env.create_migration("m", env.spec(FD, 1, true)).await;
    for p in &PhaseName::ALL[..11] {
        env.wait(
            "m",
            &format!("{p} waiting"),
            Duration::from_secs(120),
            |m| waiting_for_approval(m) == Some(*p),
        )
        .await;
        env.approve("m", &[*p]).await;
    }
    env.wait("m", "RecreateCPMS waiting", Duration::from_secs(180), |m| {
        waiting_for_approval(m) == Some(PhaseName::RecreateCpms)
    })
    .await;
    // The target workers run, labelled with the target's region and zone.
    let machines = Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    let tgt = env.sim.target().server.clone();
    let labelled = |m: &Machine| {
        m.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("machine.openshift.io/zone"))
            .is_some_and(|z| z == "target-zone")
    };
    for _ in 0..100 {
        let ms = Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE)
            .list(&ListParams::default())
            .await
            .unwrap();
        if ms
            .items
            .iter()
            .filter(|m| m.server().as_deref() == Some(tgt.as_str()))
            .all(labelled)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        machines
            .items
            .iter()
            .any(|m| m.server().as_deref() == Some(tgt.as_str())),
        "target workers exist"
    );
    let m = env.roll_back("m", Duration::from_secs(240)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    let after = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap()
        .spec;
    assert_eq!(after, before);
    env.shutdown().await;
}

/// A Machine on the target that the migration did not create (made by hand
/// meanwhile): the rollback must not restore a source-only Infrastructure
/// while it exists (the Machine policy denies it), it waits and names it, and
/// ends once the administrator removed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_policies_a_rollback_waits_for_a_machine_on_the_target_it_did_not_make() {
    let mut env = Env::start(gate_on(1)).await;
    let before = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap()
        .spec;
    env.spawn_controller();
    env.create_migration("m", env.spec(FD, 1, true)).await;
    for p in &PhaseName::ALL[..11] {
        env.wait(
            "m",
            &format!("{p} waiting"),
            Duration::from_secs(120),
            |m| waiting_for_approval(m) == Some(*p),
        )
        .await;
        env.approve("m", &[*p]).await;
    }
    env.wait("m", "RecreateCPMS waiting", Duration::from_secs(180), |m| {
        waiting_for_approval(m) == Some(PhaseName::RecreateCpms)
    })
    .await;
    let tgt = env.sim.target().server.clone();
    add_unowned(&env, &tgt, "hand-made-target").await;
    let api = Api::<Machine>::namespaced(env.client.clone(), MACHINE_API_NAMESPACE);
    for _ in 0..100 {
        let m = api.get("hand-made-target").await.unwrap();
        let zone = m
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("machine.openshift.io/zone").cloned());
        if zone.as_deref() == Some("target-zone") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.set_state("m", "Rollback").await;
    let m = env
        .wait(
            "m",
            "the rollback to wait for the hand-made Machine",
            Duration::from_secs(180),
            |m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Progressing"
                            && c.message.contains("rolling back UpdateInfrastructure")
                            && c.message.contains("Machine hand-made-target")
                    })
                })
            },
        )
        .await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollingBack),
        "{}",
        summary(&m)
    );
    api.delete("hand-made-target", &Default::default())
        .await
        .unwrap();
    let m = env.wait_rollback_end("m", Duration::from_secs(180)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    let after = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap()
        .spec;
    assert_eq!(after, before);
    env.shutdown().await;
}
