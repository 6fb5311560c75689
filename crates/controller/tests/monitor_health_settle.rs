//! MonitorHealth trusts the cluster only after operators had time to notice the
//! configuration change: on a real cluster they go Progressing seconds after
//! the Infrastructure or the cloud config changes, not at once (issue 13
//! item 11). Here the simulated operators take 8 s to notice; the phase must
//! not complete before they went Progressing and came back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_os;

use common_os::*;
use kube::api::Api;
use openshift_sim::{Delays, Scenario};
use serde_json::json;
use std::time::Duration;
use vcfm_api::openshift::ClusterOperator;
use vcfm_api::{PhaseName, PhaseStatus};

fn completed_at(m: &Vcfm, phase: PhaseName) -> jiff::Timestamp {
    m.status
        .as_ref()
        .unwrap()
        .phase_history
        .iter()
        .rev()
        .find(|h| h.phase == phase && h.status == PhaseStatus::Completed)
        .and_then(|h| h.completion_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("{phase} has no completion time: {}", summary(m)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_health_waits_until_operators_noticed_the_change() {
    let delays = Delays {
        operator_notice: Duration::from_secs(8),
        operator_progressing: Duration::from_secs(1),
        ..Delays::instant()
    };
    let mut env = Env::start_in(
        Scenario {
            workers: 1,
            delays,
            ..Scenario::default()
        },
        "settle",
    )
    .await;
    // A window longer than these operators take to notice and digest a change, as the
    // product's default (60 s) is for real ones.
    env.health_settle = Duration::from_secs(14);
    env.spawn_controller();
    env.create_migration("m", env.phase_spec(false)).await;
    env.wait(
        "m",
        "MonitorHealth running",
        Duration::from_secs(120),
        |m| {
            assert_not_failed(m);
            current(m) == Some((PhaseName::MonitorHealth, PhaseStatus::Running))
        },
    )
    .await;
    // Stop before CreateWorkers: the operators' state must be the configuration change's.
    env.patch_spec("m", json!({"approvalMode": "Manual"})).await;
    let m = env
        .wait(
            "m",
            "MonitorHealth completed",
            Duration::from_secs(90),
            |m| {
                assert_not_failed(m);
                phase_done(m, PhaseName::MonitorHealth)
            },
        )
        .await;
    let changed = completed_at(&m, PhaseName::UpdateConfig);
    let trusted = completed_at(&m, PhaseName::MonitorHealth);
    for name in [
        "storage",
        "cloud-controller-manager",
        "kube-controller-manager",
    ] {
        let co = Api::<ClusterOperator>::all(env.client.clone())
            .get(name)
            .await
            .unwrap();
        let conds = &co.status.as_ref().unwrap().conditions;
        let p = vcfm_api::openshift::find_condition(conds, "Progressing").unwrap();
        assert_eq!(p.status, "False", "{name}: {p:?}");
        let back: jiff::Timestamp = p
            .last_transition_time
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {p:?}"));
        assert!(
            back > changed,
            "{name} went Progressing after the configuration change and came back ({back} > {changed})"
        );
        assert!(
            back <= trusted,
            "MonitorHealth completed at {trusted}, before {name} had noticed the change and settled at {back}"
        );
    }
    env.shutdown().await;
}
