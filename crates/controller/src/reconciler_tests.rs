//! The status transitions the reconciler writes, as pure functions.

use super::*;
use crate::state::Outcome;
use vcfm_api::{MigrationSpec, PhaseStatus};

fn spec(extra: serde_json::Value) -> MigrationSpec {
    let mut v = serde_json::json!({
        "state": "Running",
        "approvalMode": "Automatic",
        "targetVCenterCredentialsSecret": {"name": "t"},
        "failureDomains": [],
        "machineSetConfig": {"replicas": 1},
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::from_value(v).unwrap()
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Preflight started at t0 and completed at t1, with `spec`.
fn preflight_done(spec: &MigrationSpec) -> (MigrationStatus, Option<PhaseName>) {
    let mut st = MigrationStatus::default();
    begin(
        &mut st,
        PhaseName::Preflight,
        false,
        Some(1),
        t("2026-01-01T00:00:00Z"),
    );
    let now = t("2026-01-01T00:00:05Z");
    let done = Outcome::Completed {
        message: "ok".into(),
    };
    state::apply_outcome(&mut st, PhaseName::Preflight, &done, spec, Some(1), now);
    let started = begin_next(&mut st, spec, Some(1), now);
    (st, started)
}

#[test]
fn a_completed_phase_starts_the_next_in_the_same_write_when_nothing_holds_it() {
    let (st, started) = preflight_done(&spec(serde_json::json!({})));
    assert_eq!(started, Some(PhaseName::Backup));
    let c = st.current_phase_state.as_ref().unwrap();
    assert_eq!(
        (c.name, c.status),
        (PhaseName::Backup, PhaseStatus::Running)
    );
    assert_eq!(
        c.start_time,
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(
            "2026-01-01T00:00:05Z"
        )))
    );
    // Preflight's result is kept; Backup has its running history entry.
    let h: Vec<_> = st
        .phase_history
        .iter()
        .map(|e| (e.phase, e.status))
        .collect();
    assert_eq!(
        h,
        vec![
            (PhaseName::Preflight, PhaseStatus::Completed),
            (PhaseName::Backup, PhaseStatus::Running)
        ]
    );
    assert!(conditions::is_true(
        &st.conditions,
        ConditionType::Progressing
    ));
    // Applying it again (a replay after a conflict) changes nothing.
    let mut again = st.clone();
    assert_eq!(
        begin_next(
            &mut again,
            &spec(serde_json::json!({})),
            Some(1),
            t("2026-01-01T00:00:09Z")
        ),
        None
    );
    assert_eq!(again, st);
}

#[test]
fn approval_pause_and_failure_hold_the_next_phase() {
    // Manual, Backup not approved: it waits for approval.
    let (st, started) = preflight_done(&spec(serde_json::json!({"approvalMode": "Manual"})));
    assert_eq!(started, None);
    let c = st.current_phase_state.as_ref().unwrap();
    assert_eq!(
        (c.name, c.status),
        (PhaseName::Backup, PhaseStatus::WaitingForApproval)
    );
    // Manual with Backup approved: it starts.
    let (_, started) = preflight_done(&spec(
        serde_json::json!({"approvalMode": "Manual", "approvedPhases": ["Backup"]}),
    ));
    assert_eq!(started, Some(PhaseName::Backup));
    // Paused: nothing starts.
    let (st, started) = preflight_done(&spec(serde_json::json!({"state": "Paused"})));
    assert_eq!(started, None);
    assert_eq!(
        st.current_phase_state.as_ref().map(|c| c.status),
        Some(PhaseStatus::Pending)
    );
    // A failed phase starts nothing.
    let sp = spec(serde_json::json!({}));
    let mut st = MigrationStatus::default();
    begin(
        &mut st,
        PhaseName::Backup,
        false,
        Some(1),
        t("2026-01-01T00:00:00Z"),
    );
    let failed = Outcome::Failed {
        message: "no".into(),
    };
    let now = t("2026-01-01T00:00:05Z");
    state::apply_outcome(&mut st, PhaseName::Backup, &failed, &sp, Some(1), now);
    assert_eq!(begin_next(&mut st, &sp, Some(1), now), None);
}

#[test]
fn a_wait_that_sees_nothing_new_leaves_status_unchanged_so_nothing_is_written() {
    let sp = spec(serde_json::json!({}));
    let mut st = MigrationStatus::default();
    begin(
        &mut st,
        PhaseName::RestartPods,
        false,
        Some(1),
        t("2026-01-01T00:00:00Z"),
    );
    let waiting = Outcome::Running {
        progress: 50,
        message: "waiting for pods".into(),
        waiting_for: vec!["pod a".into()],
        recheck: Duration::from_secs(2),
    };
    state::apply_outcome(
        &mut st,
        PhaseName::RestartPods,
        &waiting,
        &sp,
        Some(1),
        t("2026-01-01T00:00:01Z"),
    );
    let once = st.clone();
    // The same wait a second and ten seconds later: identical status.
    for s in ["2026-01-01T00:00:02Z", "2026-01-01T00:00:11Z"] {
        state::apply_outcome(
            &mut st,
            PhaseName::RestartPods,
            &waiting,
            &sp,
            Some(1),
            t(s),
        );
        assert_eq!(st, once, "{s}");
    }
    // Something new is written at once; a long quiet wait gets a heartbeat.
    let moved = Outcome::Running {
        progress: 60,
        message: "waiting for pods".into(),
        waiting_for: vec![],
        recheck: Duration::from_secs(2),
    };
    state::apply_outcome(
        &mut st,
        PhaseName::RestartPods,
        &moved,
        &sp,
        Some(1),
        t("2026-01-01T00:00:12Z"),
    );
    assert_ne!(st, once);
    let after = st.clone();
    state::apply_outcome(
        &mut st,
        PhaseName::RestartPods,
        &moved,
        &sp,
        Some(1),
        t("2026-01-01T00:01:13Z"),
    );
    assert_ne!(st, after, "a heartbeat after {:?}", state::HEARTBEAT);
}
