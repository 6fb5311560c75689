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

// The transition of each decision, on the pure function the reconciler
// writes once per reconcile.

use crate::phases::RollbackOutcome;
use vcfm_api::{MigrationPhase, RollbackTrigger};

const T0: &str = "2026-01-01T00:00:00Z";

fn migration(extra: serde_json::Value) -> Vcfm {
    let mut m = Vcfm::new("m1", spec(extra));
    m.metadata.namespace = Some("ns".into());
    m.metadata.generation = Some(1);
    m
}

fn deleting(mut m: Vcfm) -> Vcfm {
    m.metadata.deletion_timestamp = Some(Time(t(T0)));
    m
}

/// `phase` running since T0, the phases before it completed.
fn running(phase: PhaseName) -> MigrationStatus {
    let mut st = MigrationStatus::default();
    let sp = spec(serde_json::json!({}));
    for p in PhaseName::ALL.into_iter().take_while(|p| *p != phase) {
        begin(&mut st, p, false, Some(1), t(T0));
        let done = Outcome::Completed {
            message: "ok".into(),
        };
        state::apply_outcome(&mut st, p, &done, &sp, Some(1), t(T0));
    }
    begin(&mut st, phase, false, Some(1), t(T0));
    st
}

/// Backup and DisableCVO done, a rollback started at T0.
fn rolling_back() -> MigrationStatus {
    let mut st = running(PhaseName::UpdateSecrets);
    state::start_rollback(&mut st, RollbackTrigger::Requested, "asked", Some(1), t(T0));
    st
}

fn apply(
    m: &Vcfm,
    st: MigrationStatus,
    d: Decision,
    ran: Ran,
    at: &str,
) -> (MigrationStatus, Transition) {
    transition(m, st, &Plan::Decided(d), &ran, Some(1), t(at))
}

fn executed(result: Result<Outcome, PhaseError>) -> Ran {
    Ran::Execute {
        result,
        recorded: Recorded::default(),
    }
}

fn rolled(result: Result<RollbackOutcome, PhaseError>) -> Ran {
    Ran::Rollback {
        result,
        recorded: Recorded::default(),
    }
}

fn events(t: &Transition) -> Vec<(&'static str, bool)> {
    t.events.iter().map(|e| (e.reason, e.warning)).collect()
}

fn completed() -> Result<Outcome, PhaseError> {
    Ok(Outcome::Completed {
        message: "done".into(),
    })
}

fn cond(st: &MigrationStatus, c: ConditionType) -> Option<(String, String)> {
    conditions::find(&st.conditions, c).map(|c| (c.status.clone(), c.reason.clone()))
}

/// A row: name, migration, status before, decision, what ran, the Events
/// (reason, warning) and the requeue expected.
type Case<'a> = (
    &'a str,
    &'a Vcfm,
    MigrationStatus,
    Decision,
    Ran,
    Vec<(&'a str, bool)>,
    Next,
);

#[test]
fn each_decision_publishes_its_events_and_says_when_to_look_again() {
    let auto = migration(serde_json::json!({}));
    let manual = migration(serde_json::json!({"approvalMode": "Manual"}));
    let auto_deleted = deleting(auto.clone());
    let later = "2026-01-01T00:01:00Z";
    let stalled = |phase| Decision::StalledRollBack {
        phase,
        waited: Duration::from_secs(700),
        limit: Duration::from_secs(600),
    };
    let in_progress = || {
        rolled(Ok(RollbackOutcome::InProgress {
            message: "waiting for the CVO".into(),
            recheck: Duration::from_secs(3),
        }))
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("idle", &auto, MigrationStatus::default(), Decision::Idle { reason: "spec.state is Pending".into() }, Ran::Nothing,
            vec![], Next::AwaitChange),
        ("first approval", &manual, MigrationStatus::default(), Decision::AwaitApproval(PhaseName::Preflight), Ran::Nothing,
            vec![("ApprovalRequired", false)], Next::AwaitChange),
        ("approval", &manual, preflight_done(&manual.spec).0, Decision::AwaitApproval(PhaseName::Backup), Ran::Nothing,
            vec![], Next::AwaitChange),
        ("pause", &auto, running(PhaseName::RestartPods), Decision::Paused { at: Some(PhaseName::RestartPods) }, Ran::Nothing,
            vec![("Paused", false)], Next::AwaitChange),
        ("start", &auto, MigrationStatus::default(), Decision::Execute(PhaseName::Preflight), Ran::Nothing,
            vec![("PhaseStarted", false)], Next::After(Duration::ZERO)),
        ("still running", &auto, running(PhaseName::RestartPods), Decision::Execute(PhaseName::RestartPods),
            executed(Ok(Outcome::Running { progress: 5, message: "w".into(), waiting_for: vec![], recheck: Duration::from_secs(2) })),
            vec![], Next::Recheck(Duration::from_secs(2))),
        ("completed, next started", &auto, running(PhaseName::Backup), Decision::Execute(PhaseName::Backup), executed(completed()),
            vec![("PhaseCompleted", false)], Next::After(NEXT_STEP)),
        ("completed, next waits", &manual, running(PhaseName::Backup), Decision::Execute(PhaseName::Backup), executed(completed()),
            vec![("PhaseCompleted", false), ("ApprovalRequired", false)], Next::After(NEXT_STEP)),
        ("skipped", &auto, running(PhaseName::DisableCvo), Decision::Execute(PhaseName::DisableCvo), executed(Ok(Outcome::Skipped { message: "day 2".into() })),
            vec![("PhaseSkipped", false)], Next::After(NEXT_STEP)),
        ("last phase", &auto, running(PhaseName::Verify), Decision::Execute(PhaseName::Verify), executed(completed()),
            vec![("PhaseCompleted", false), ("MigrationCompleted", false)], Next::After(NEXT_STEP)),
        ("completed while deleted", &auto_deleted, running(PhaseName::Backup), Decision::Execute(PhaseName::Backup), executed(completed()),
            vec![("PhaseCompleted", false)], Next::After(NEXT_STEP)),
        ("fatal", &auto, running(PhaseName::Backup), Decision::Execute(PhaseName::Backup), executed(Err(PhaseError::Fatal("no".into()))),
            vec![("PhaseFailed", true)], Next::After(NEXT_STEP)),
        ("transient", &auto, running(PhaseName::Backup), Decision::Execute(PhaseName::Backup), executed(Err(PhaseError::Transient("busy".into()))),
            vec![], Next::Retry("Backup: busy".into())),
        ("timed out", &auto, running(PhaseName::Backup), Decision::TimedOut { phase: PhaseName::Backup, after: Duration::from_secs(60) }, Ran::Nothing,
            vec![("PhaseFailed", true)], Next::After(NEXT_STEP)),
        ("start rollback", &auto, running(PhaseName::UpdateSecrets), Decision::StartRollback { trigger: RollbackTrigger::Requested, reason: "asked".into() }, Ran::Nothing,
            vec![("RollbackStarted", true)], Next::After(NEXT_STEP)),
        ("rolled back", &auto, rolling_back(), Decision::RollBack(PhaseName::UpdateSecrets), rolled(Ok(RollbackOutcome::Done("keys removed".into()))),
            vec![("PhaseRolledBack", false)], Next::After(NEXT_STEP)),
        ("rollback conflict", &auto, rolling_back(), Decision::RollBack(PhaseName::UpdateSecrets), rolled(Ok(RollbackOutcome::Conflict("kept an edit".into()))),
            vec![("RollbackConflict", true)], Next::After(NEXT_STEP)),
        ("rollback step failed", &auto, rolling_back(), Decision::RollBack(PhaseName::UpdateSecrets), rolled(Err(PhaseError::Fatal("gone".into()))),
            vec![("RollbackStepFailed", true)], Next::After(NEXT_STEP)),
        ("rollback in progress", &auto, rolling_back(), Decision::RollBack(PhaseName::DisableCvo), in_progress(),
            vec![], Next::Recheck(Duration::from_secs(3))),
        ("rollback transient", &auto, rolling_back(), Decision::RollBack(PhaseName::DisableCvo), rolled(Err(PhaseError::Transient("503".into()))),
            vec![], Next::Retry("rolling back DisableCVO: 503".into())),
        ("stalled", &auto, rolling_back(), stalled(PhaseName::DisableCvo), in_progress(),
            vec![("RollbackStalled", true)], Next::Recheck(Duration::from_secs(3))),
        ("stalled on an error", &auto, rolling_back(), stalled(PhaseName::DisableCvo), rolled(Err(PhaseError::Transient("503".into()))),
            vec![("RollbackStalled", true)], Next::Retry("rolling back DisableCVO: 503".into())),
        ("rollback finished", &auto, rolling_back(), Decision::FinishRollback, Ran::Nothing,
            vec![("RollbackCompleted", false)], Next::After(NEXT_STEP)),
        ("rollback refused", &auto, running(PhaseName::RecreateCpms), Decision::RefuseRollback { reason: "past it".into() }, Ran::Nothing,
            vec![("RollbackRefused", true)], Next::AwaitChange),
        ("complete", &auto, running(PhaseName::Verify), Decision::Complete, Ran::Nothing,
            vec![], Next::After(NEXT_STEP)),
        ("retry", &auto, running(PhaseName::Backup), Decision::RetryFailedPhase(PhaseName::Backup), Ran::Nothing,
            vec![("PhaseRetry", false)], Next::After(NEXT_STEP)),
        ("released", &auto_deleted, running(PhaseName::Backup), Decision::ReleaseDeletion { reason: "r".into() }, Ran::Nothing,
            vec![("DeletionReleased", false)], Next::AwaitChange),
        ("held, waiting", &auto_deleted, running(PhaseName::RecreateCpms),
            Decision::HoldDeletion { reason: "held".into(), meanwhile: Box::new(Decision::Paused { at: Some(PhaseName::RecreateCpms) }) }, Ran::Nothing,
            vec![("DeletionBlocked", true), ("Paused", false)], Next::After(HOLD_RECHECK)),
        ("held, running", &auto_deleted, running(PhaseName::RecreateCpms),
            Decision::HoldDeletion { reason: "held".into(), meanwhile: Box::new(Decision::Execute(PhaseName::RecreateCpms)) },
            executed(Ok(Outcome::Running { progress: 5, message: "w".into(), waiting_for: vec![], recheck: Duration::from_secs(4) })),
            vec![("DeletionBlocked", true)], Next::Recheck(Duration::from_secs(4))),
    ];
    for (name, m, st, d, ran, want_events, want_next) in cases {
        let (_, out) = apply(m, st, d, ran, later);
        assert_eq!(events(&out), want_events, "{name}");
        assert_eq!(out.next, want_next, "{name}");
    }
}

#[test]
fn a_phase_transition_is_one_event_naming_the_phase_that_starts_next() {
    let auto = migration(serde_json::json!({}));
    let later = "2026-01-01T00:01:00Z";
    let messages = |t: &Transition| -> Vec<(&'static str, String)> {
        t.events
            .iter()
            .map(|e| (e.reason, e.message.clone()))
            .collect()
    };
    let (_, out) = apply(
        &auto,
        running(PhaseName::DisableCvo),
        Decision::Execute(PhaseName::DisableCvo),
        executed(completed()),
        later,
    );
    assert_eq!(
        messages(&out),
        vec![(
            "PhaseCompleted",
            "phase 3 (DisableCVO): done; phase 4 (UpdateSecrets) started".to_string()
        )]
    );
    let (_, out) = apply(
        &auto,
        running(PhaseName::DisableCvo),
        Decision::Execute(PhaseName::DisableCvo),
        executed(Ok(Outcome::Skipped {
            message: "day 2".into(),
        })),
        later,
    );
    assert_eq!(
        messages(&out),
        vec![(
            "PhaseSkipped",
            "phase 3 (DisableCVO): day 2; phase 4 (UpdateSecrets) started".to_string()
        )]
    );
    // Nothing starts next (the last phase, an approval to wait for): the
    // Event says only what ended.
    let manual = migration(serde_json::json!({"approvalMode": "Manual"}));
    let (_, out) = apply(
        &manual,
        running(PhaseName::Backup),
        Decision::Execute(PhaseName::Backup),
        executed(completed()),
        later,
    );
    assert_eq!(messages(&out)[0].1, "phase 2 (Backup): done");
    // A phase that starts on its own (the first, after an approval) has its own Event.
    let (_, out) = apply(
        &auto,
        MigrationStatus::default(),
        Decision::Execute(PhaseName::Preflight),
        Ran::Nothing,
        later,
    );
    assert_eq!(
        messages(&out),
        vec![("PhaseStarted", "phase 1 (Preflight) started".to_string())]
    );
}

#[test]
fn a_condition_event_is_published_once_however_often_the_decision_repeats() {
    let m = migration(serde_json::json!({"approvalMode": "Manual"}));
    let held = |d| Decision::HoldDeletion {
        reason: "held".into(),
        meanwhile: Box::new(d),
    };
    let cases = [
        (
            running(PhaseName::RestartPods),
            Decision::Paused {
                at: Some(PhaseName::RestartPods),
            },
            "Paused",
        ),
        (
            running(PhaseName::RecreateCpms),
            Decision::RefuseRollback {
                reason: "past it".into(),
            },
            "RollbackRefused",
        ),
        (
            running(PhaseName::RecreateCpms),
            held(Decision::Paused { at: None }),
            "DeletionBlocked",
        ),
    ];
    for (st, d, reason) in cases {
        let m = if reason == "DeletionBlocked" {
            deleting(m.clone())
        } else {
            m.clone()
        };
        let (st, first) = apply(&m, st, d.clone(), Ran::Nothing, "2026-01-01T00:00:10Z");
        assert!(
            events(&first).contains(&(reason, reason != "Paused")),
            "{reason}: {:?}",
            first.events
        );
        let (again, second) = apply(&m, st.clone(), d, Ran::Nothing, "2026-01-01T00:00:20Z");
        assert!(
            !events(&second).iter().any(|(r, _)| *r == reason),
            "{reason} twice"
        );
        assert_eq!(
            again, st,
            "{reason}: a repeated wait changes nothing, so nothing is written"
        );
    }
    // Blocked by another migration: the same.
    let plan = Plan::Blocked {
        by: "ns/other".into(),
    };
    let (st, first) = transition(
        &m,
        MigrationStatus::default(),
        &plan,
        &Ran::Nothing,
        Some(1),
        t(T0),
    );
    assert_eq!(events(&first), vec![("Blocked", true)]);
    assert_eq!(first.next, Next::After(BLOCKED_RECHECK));
    let (st, second) = transition(&m, st, &plan, &Ran::Nothing, Some(1), t(T0));
    assert!(second.events.is_empty());
    // Once it may run, the condition goes.
    let (st, _) = apply(
        &m,
        st,
        Decision::Idle {
            reason: "Pending".into(),
        },
        Ran::Nothing,
        T0,
    );
    assert_eq!(cond(&st, ConditionType::Blocked), None);
    assert_eq!(st.phase, Some(MigrationPhase::Pending));
}

#[test]
fn a_pause_stops_the_phase_clock_and_the_next_execute_resumes_it_without_running_the_phase() {
    let m = migration(serde_json::json!({}));
    let st = running(PhaseName::RestartPods);
    let (st, _) = apply(
        &m,
        st,
        Decision::Paused {
            at: Some(PhaseName::RestartPods),
        },
        Ran::Nothing,
        "2026-01-01T00:00:10Z",
    );
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!(c.paused_since, Some(Time(t("2026-01-01T00:00:10Z"))));
    assert_eq!(
        cond(&st, ConditionType::Paused),
        Some(("True".into(), "PausedBySpec".into()))
    );
    assert!(
        !runs_now(&st, PhaseName::RestartPods),
        "a paused phase is resumed before it runs"
    );
    // Resumed an hour later: the pause is counted out of the deadline.
    let (st, out) = apply(
        &m,
        st,
        Decision::Execute(PhaseName::RestartPods),
        Ran::Nothing,
        "2026-01-01T01:00:10Z",
    );
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!((c.paused_since.clone(), c.paused_seconds), (None, 3600));
    assert_eq!(cond(&st, ConditionType::Paused), None);
    assert_eq!(
        cond(&st, ConditionType::Progressing),
        Some(("True".into(), "PhaseRunning".into()))
    );
    assert_eq!(
        (out.events.len(), out.next),
        (0, Next::After(Duration::ZERO))
    );
    assert!(runs_now(&st, PhaseName::RestartPods));
    assert_eq!(
        state::active_time(&c, t("2026-01-01T01:00:10Z")),
        Duration::from_secs(10)
    );
}

#[test]
fn a_phase_step_records_its_outcome_and_what_it_found() {
    let m = migration(serde_json::json!({}));
    let log = vcfm_api::LogEntry {
        timestamp: Time(t(T0)),
        level: vcfm_api::LogLevel::Info,
        message: "saved".into(),
        component: "backup".into(),
        fields: Default::default(),
    };
    let recorded = Recorded {
        updates: StatusUpdates {
            warnings: Some(vec!["w".into()]),
            ..Default::default()
        },
        logs: vec![log.clone()],
    };
    // A transient error keeps the phase running with the error shown.
    let ran = Ran::Execute {
        result: Err(PhaseError::Transient("busy".into())),
        recorded: recorded.clone(),
    };
    let (st, _) = apply(
        &m,
        running(PhaseName::Backup),
        Decision::Execute(PhaseName::Backup),
        ran,
        "2026-01-01T00:00:30Z",
    );
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!(
        (c.status, c.message.as_str()),
        (
            PhaseStatus::Running,
            "retrying after a transient error: busy"
        )
    );
    assert_eq!(st.warnings, vec!["w".to_string()]);
    assert_eq!(
        st.phase_history.last().map(|h| h.logs.clone()),
        Some(vec![log.clone()])
    );
    // Completed 30s after its start: measured, and the next phase runs.
    let ran = Ran::Execute {
        result: completed(),
        recorded,
    };
    let (st, out) = apply(
        &m,
        running(PhaseName::Backup),
        Decision::Execute(PhaseName::Backup),
        ran,
        "2026-01-01T00:00:30Z",
    );
    assert_eq!(
        out.measure,
        Some(Measure::Finished {
            phase: PhaseName::Backup,
            seconds: 30.0
        })
    );
    let backup = st
        .phase_history
        .iter()
        .find(|h| h.phase == PhaseName::Backup)
        .unwrap();
    assert_eq!(
        (backup.status, backup.logs.clone()),
        (PhaseStatus::Completed, vec![log])
    );
    assert!(runs_now(&st, PhaseName::DisableCvo));
    assert_eq!(out.events.len(), 1);
    assert!(
        out.events[0]
            .message
            .ends_with("; phase 3 (DisableCVO) started"),
        "{}",
        out.events[0].message
    );
    // A fatal error fails the phase.
    let ran = executed(Err(PhaseError::Fatal("no credentials".into())));
    let (st, out) = apply(
        &m,
        running(PhaseName::Backup),
        Decision::Execute(PhaseName::Backup),
        ran,
        "2026-01-01T00:00:30Z",
    );
    assert_eq!(out.measure, Some(Measure::Failed(PhaseName::Backup)));
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    assert_eq!(
        cond(&st, ConditionType::Failed),
        Some(("True".into(), "PhaseFailed".into()))
    );
    // A deadline fails it with its last state quoted.
    let mut st = running(PhaseName::Backup);
    st.current_phase_state.as_mut().unwrap().message = "saving the CPMS".into();
    let d = Decision::TimedOut {
        phase: PhaseName::Backup,
        after: Duration::from_secs(600),
    };
    let (st, out) = apply(&m, st, d, Ran::Nothing, "2026-01-01T00:11:00Z");
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    assert!(
        out.events[0].message.contains("deadline of 600s"),
        "{}",
        out.events[0].message
    );
    assert!(
        out.events[0]
            .message
            .ends_with("last state: saving the CPMS"),
        "{}",
        out.events[0].message
    );
}

#[test]
fn the_last_phase_completes_the_migration() {
    let m = migration(serde_json::json!({}));
    let (st, _) = apply(
        &m,
        running(PhaseName::Verify),
        Decision::Execute(PhaseName::Verify),
        executed(completed()),
        "2026-01-01T00:00:30Z",
    );
    assert_eq!(st.phase, Some(MigrationPhase::Completed));
    assert_eq!(st.completion_time, Some(Time(t("2026-01-01T00:00:30Z"))));
    assert_eq!(
        cond(&st, ConditionType::Completed),
        Some(("True".into(), "AllPhasesCompleted".into()))
    );
    // `Complete` on a status that missed it: the same end, the time kept.
    let (again, _) = apply(
        &m,
        st.clone(),
        Decision::Complete,
        Ran::Nothing,
        "2026-01-01T00:05:00Z",
    );
    assert_eq!(again.completion_time, st.completion_time);
    assert_eq!(again.phase, Some(MigrationPhase::Completed));
}

#[test]
fn a_rollback_walks_its_steps_shows_a_stall_and_ends() {
    let m = migration(serde_json::json!({}));
    let (st, _) = apply(
        &m,
        running(PhaseName::UpdateSecrets),
        Decision::StartRollback {
            trigger: RollbackTrigger::Requested,
            reason: "asked".into(),
        },
        Ran::Nothing,
        T0,
    );
    assert_eq!(st.phase, Some(MigrationPhase::RollingBack));
    // In progress: the step's start is recorded once.
    let waiting = || {
        rolled(Ok(RollbackOutcome::InProgress {
            message: "waiting for the CVO".into(),
            recheck: Duration::from_secs(3),
        }))
    };
    let (st, _) = apply(
        &m,
        st,
        Decision::RollBack(PhaseName::DisableCvo),
        waiting(),
        "2026-01-01T00:00:05Z",
    );
    let step = st
        .rollback
        .as_ref()
        .and_then(|rb| rb.current_step.clone())
        .unwrap();
    assert_eq!(
        (step.phase, step.start_time.clone()),
        (PhaseName::DisableCvo, Time(t("2026-01-01T00:00:05Z")))
    );
    assert_eq!(
        cond(&st, ConditionType::Progressing),
        Some(("True".into(), "RollingBack".into()))
    );
    // Past its deadline: Stalled, naming what it waits for.
    let late = Decision::StalledRollBack {
        phase: PhaseName::DisableCvo,
        waited: Duration::from_secs(700),
        limit: Duration::from_secs(600),
    };
    let (st, out) = apply(&m, st, late, waiting(), "2026-01-01T00:11:45Z");
    let step2 = st
        .rollback
        .as_ref()
        .and_then(|rb| rb.current_step.clone())
        .unwrap();
    assert_eq!(
        step2.start_time, step.start_time,
        "the deadline counts from the first attempt"
    );
    assert_eq!(
        cond(&st, ConditionType::Stalled),
        Some(("True".into(), "RollbackStepDeadlineExceeded".into()))
    );
    assert!(
        out.events[0]
            .message
            .contains("waiting for waiting for the CVO"),
        "{}",
        out.events[0].message
    );
    // Done: Stalled clears, the step is recorded.
    let (st, _) = apply(
        &m,
        st,
        Decision::RollBack(PhaseName::DisableCvo),
        rolled(Ok(RollbackOutcome::Done("CVO back".into()))),
        "2026-01-01T00:12:00Z",
    );
    assert_eq!(
        cond(&st, ConditionType::Stalled),
        Some(("False".into(), "RollbackProgressing".into()))
    );
    let rb = st.rollback.clone().unwrap();
    assert_eq!(
        (rb.rolled_back_phases, rb.current_step),
        (vec![PhaseName::DisableCvo], None)
    );
    // A failed step is recorded, and the rollback finishes with a warning.
    let (st, _) = apply(
        &m,
        st,
        Decision::RollBack(PhaseName::Backup),
        rolled(Err(PhaseError::Fatal("gone".into()))),
        "2026-01-01T00:12:01Z",
    );
    assert_eq!(
        st.phase_history.last().map(|h| h.status),
        Some(PhaseStatus::RollbackFailed)
    );
    let (st, out) = apply(
        &m,
        st,
        Decision::FinishRollback,
        Ran::Nothing,
        "2026-01-01T00:12:02Z",
    );
    assert_eq!(st.phase, Some(MigrationPhase::RollbackCompleted));
    assert_eq!(events(&out), vec![("RollbackCompleted", true)]);
    assert!(
        out.events[0].message.contains("Backup: gone"),
        "{}",
        out.events[0].message
    );
}

#[test]
fn a_deletion_is_held_with_how_to_force_it_and_released_with_how_it_ended() {
    let m = deleting(migration(serde_json::json!({})));
    let held = Decision::HoldDeletion {
        reason: "deletion held until the migration completes".into(),
        meanwhile: Box::new(Decision::Paused {
            at: Some(PhaseName::RecreateCpms),
        }),
    };
    let (st, out) = apply(&m, running(PhaseName::RecreateCpms), held, Ran::Nothing, T0);
    let blocked = conditions::find(&st.conditions, ConditionType::DeletionBlocked).unwrap();
    assert!(
        blocked
            .message
            .contains("kubectl annotate vcfm -n ns m1 migration.openshift.io/force-delete=true"),
        "{}",
        blocked.message
    );
    assert!(
        blocked.message.contains(&crate::backup::secret_name("m1")),
        "{}",
        blocked.message
    );
    assert_eq!(
        cond(&st, ConditionType::Paused).map(|c| c.0),
        Some("True".into()),
        "the migration goes on meanwhile"
    );
    assert_eq!(out.next, Next::After(HOLD_RECHECK));
    // Released: nothing written; a forced release is a warning.
    let release = || Decision::ReleaseDeletion {
        reason: "forced".into(),
    };
    let (after, out) = apply(&m, st.clone(), release(), Ran::Nothing, T0);
    assert_eq!(
        (after, events(&out)),
        (st.clone(), vec![("DeletionReleased", false)])
    );
    let mut forced = m.clone();
    forced.metadata.annotations = Some(
        [(
            deletion::FORCE_DELETE_ANNOTATION.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    let (_, out) = apply(&forced, st, release(), Ran::Nothing, T0);
    assert_eq!(events(&out), vec![("DeletionReleased", true)]);
}

#[test]
fn a_retry_clears_the_failure_and_runs_the_phase_again() {
    let m = migration(serde_json::json!({"retryToken": "2"}));
    let (st, _) = apply(
        &m,
        running(PhaseName::Backup),
        Decision::Execute(PhaseName::Backup),
        executed(Err(PhaseError::Fatal("no".into()))),
        T0,
    );
    let (st, out) = apply(
        &m,
        st,
        Decision::RetryFailedPhase(PhaseName::Backup),
        Ran::Nothing,
        T0,
    );
    assert_eq!(st.observed_retry_token.as_deref(), Some("2"));
    assert_eq!(
        cond(&st, ConditionType::Failed),
        Some(("False".into(), "Retrying".into()))
    );
    assert_eq!(
        out.events[0].message,
        "retry requested (spec.retryToken) after Backup failed: running it again"
    );
    let (st, _) = apply(
        &m,
        st,
        Decision::Execute(PhaseName::Backup),
        Ran::Nothing,
        T0,
    );
    assert!(runs_now(&st, PhaseName::Backup));
}

/// What a rollback step logged and asked to record, kept whatever the step's
/// outcome: in progress, retrying after a transient error, or done (as a
/// forward step's are).
#[test]
fn a_rollback_step_keeps_its_logs_and_updates_however_it_ends() {
    let m = migration(serde_json::json!({}));
    let log = |msg: &str| vcfm_api::LogEntry {
        timestamp: Time(t(T0)),
        level: vcfm_api::LogLevel::Info,
        message: msg.into(),
        component: "machines".into(),
        fields: Default::default(),
    };
    let created = |id: &str| vcfm_api::CreatedVSphereObject {
        phase: PhaseName::DisableCvo,
        server: "vc".into(),
        kind: "Tag".into(),
        id: id.into(),
        name: id.into(),
    };
    let step = |result, msg: &str, id: &str| Ran::Rollback {
        result,
        recorded: Recorded {
            updates: StatusUpdates {
                warnings: Some(vec![format!("w-{id}")]),
                created: vec![created(id)],
                ..Default::default()
            },
            logs: vec![log(msg)],
        },
    };
    let logs_of = |st: &MigrationStatus| -> Vec<String> {
        st.phase_history
            .iter()
            .filter(|h| h.phase == PhaseName::DisableCvo)
            .flat_map(|h| h.logs.iter().map(|l| l.message.clone()))
            .collect()
    };
    let ids = |st: &MigrationStatus| -> Vec<String> {
        st.created_vsphere_objects
            .iter()
            .map(|o| o.id.clone())
            .collect()
    };
    let rows: Vec<(&str, Result<RollbackOutcome, PhaseError>)> = vec![
        (
            "in progress",
            Ok(RollbackOutcome::InProgress {
                message: "waiting".into(),
                recheck: Duration::from_secs(3),
            }),
        ),
        ("transient error", Err(PhaseError::Transient("503".into()))),
        ("done", Ok(RollbackOutcome::Done("back".into()))),
        ("conflict", Ok(RollbackOutcome::Conflict("kept".into()))),
        ("fatal error", Err(PhaseError::Fatal("gone".into()))),
    ];
    for (name, result) in rows {
        let (st, _) = apply(
            &m,
            rolling_back(),
            Decision::RollBack(PhaseName::DisableCvo),
            step(result, &format!("log of {name}"), name),
            "2026-01-01T00:00:05Z",
        );
        assert_eq!(logs_of(&st), vec![format!("log of {name}")], "{name}");
        assert_eq!(ids(&st), vec![name.to_string()], "{name}");
        assert_eq!(st.warnings, vec![format!("w-{name}")], "{name}");
    }
    // Steps in a row each add theirs.
    let mut st = rolling_back();
    for (i, result) in [
        Ok(RollbackOutcome::InProgress {
            message: "waiting".into(),
            recheck: Duration::from_secs(3),
        }),
        Err(PhaseError::Transient("503".into())),
        Ok(RollbackOutcome::Done("back".into())),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("step-{i}");
        (st, _) = apply(
            &m,
            st,
            Decision::RollBack(PhaseName::DisableCvo),
            step(result, &id, &id),
            "2026-01-01T00:00:05Z",
        );
    }
    assert_eq!(logs_of(&st), vec!["step-0", "step-1", "step-2"]);
    assert_eq!(ids(&st), vec!["step-0", "step-1", "step-2"]);
}

/// A wait step's status write, by what is new: detail alone (message,
/// waitingFor) waits until DETAIL_REFRESH after the last write; progress,
/// logs and records are written at once; a backup saved again unchanged is
/// not news.
#[test]
fn a_wait_step_writes_progress_and_records_at_once_and_detail_at_most_every_refresh() {
    let m = migration(serde_json::json!({}));
    let phase = PhaseName::CreateWorkers;
    let backup = |at: &str| vcfm_api::BackupManifest {
        resource_type: "config.openshift.io/v1/Infrastructure".into(),
        name: "cluster".into(),
        namespace: None,
        secret_name: "vcfm-backup-m1".into(),
        key: "infrastructure.changes.json".into(),
        hmac_sha256: "ab".repeat(32),
        backup_time: Time(t(at)),
    };
    // Running since T0 (its last write), waiting at 10% for two machines.
    let waiting = |message: &str, progress: i32, waiting_for: &[&str]| Outcome::Running {
        progress,
        message: message.into(),
        waiting_for: waiting_for.iter().map(|w| w.to_string()).collect(),
        recheck: Duration::from_secs(5),
    };
    let base = {
        let mut st = running(phase);
        st.backup_manifests.push(backup(T0));
        let c = st.current_phase_state.as_mut().unwrap();
        c.progress = 10;
        c.message = "0/2 new machine(s) ready".into();
        c.waiting_for = vec!["machine a: Pending".into(), "machine b: Pending".into()];
        st
    };
    let log = vcfm_api::LogEntry {
        timestamp: Time(t(T0)),
        level: vcfm_api::LogLevel::Info,
        message: "scaled MachineSet w to 2".into(),
        component: "machines".into(),
        fields: Default::default(),
    };
    let with = |logs: Vec<vcfm_api::LogEntry>, backups: Vec<vcfm_api::BackupManifest>| Recorded {
        updates: StatusUpdates {
            backups,
            ..Default::default()
        },
        logs,
    };
    let provisioning = ["machine a: Provisioning", "machine b: Pending"];
    // (row, outcome, recorded, at, written)
    let rows: Vec<(&str, Outcome, Recorded, &str, bool)> = vec![
        (
            "nothing new",
            waiting(
                "0/2 new machine(s) ready",
                10,
                &["machine a: Pending", "machine b: Pending"],
            ),
            with(vec![], vec![]),
            "2026-01-01T00:00:03Z",
            false,
        ),
        (
            "a machine's state, 3 s after the last write",
            waiting("0/2 new machine(s) ready", 10, &provisioning),
            with(vec![], vec![]),
            "2026-01-01T00:00:03Z",
            false,
        ),
        (
            "the message, 9 s after the last write",
            waiting("0/2 new machine(s) ready (replicas 3)", 10, &provisioning),
            with(vec![], vec![]),
            "2026-01-01T00:00:09Z",
            false,
        ),
        (
            "a machine's state, 10 s after the last write",
            waiting("0/2 new machine(s) ready", 10, &provisioning),
            with(vec![], vec![]),
            "2026-01-01T00:00:10Z",
            true,
        ),
        (
            "progress, 1 s after the last write",
            waiting("1/2 new machine(s) ready", 54, &["machine b: Pending"]),
            with(vec![], vec![]),
            "2026-01-01T00:00:01Z",
            true,
        ),
        (
            "a log line, 1 s after the last write",
            waiting("0/2 new machine(s) ready", 10, &provisioning),
            with(vec![log.clone()], vec![]),
            "2026-01-01T00:00:01Z",
            true,
        ),
        (
            "a new backup record, 1 s after the last write",
            waiting("0/2 new machine(s) ready", 10, &provisioning),
            with(
                vec![],
                vec![vcfm_api::BackupManifest {
                    hmac_sha256: "cd".repeat(32),
                    ..backup("2026-01-01T00:00:01Z")
                }],
            ),
            "2026-01-01T00:00:01Z",
            true,
        ),
        (
            "the same backup saved again, 1 s after the last write",
            waiting(
                "0/2 new machine(s) ready",
                10,
                &["machine a: Pending", "machine b: Pending"],
            ),
            with(vec![], vec![backup("2026-01-01T00:00:01Z")]),
            "2026-01-01T00:00:01Z",
            false,
        ),
    ];
    for (row, outcome, recorded, at, written) in rows {
        let shown = match &outcome {
            Outcome::Running {
                progress,
                message,
                waiting_for,
                ..
            } => (*progress, message.clone(), waiting_for.clone()),
            _ => unreachable!(),
        };
        let ran = Ran::Execute {
            result: Ok(outcome),
            recorded,
        };
        let (st, out) = apply(&m, base.clone(), Decision::Execute(phase), ran, at);
        assert_eq!(out.next, Next::Recheck(Duration::from_secs(5)), "{row}");
        assert_eq!(st != base, written, "{row}: written");
        if written {
            let c = st.current_phase_state.as_ref().unwrap();
            assert_eq!(
                (c.progress, c.message.clone(), c.waiting_for.clone()),
                shown,
                "{row}: shown"
            );
            assert_eq!(c.last_heartbeat, Some(Time(t(at))), "{row}");
        }
    }
    // The same backup again keeps its first time.
    let ran = Ran::Execute {
        result: Ok(waiting("0/2 new machine(s) ready", 54, &[])),
        recorded: with(vec![], vec![backup("2026-01-01T00:00:20Z")]),
    };
    let (st, _) = apply(
        &m,
        base.clone(),
        Decision::Execute(phase),
        ran,
        "2026-01-01T00:00:20Z",
    );
    assert_eq!(st.backup_manifests, vec![backup(T0)]);
}
