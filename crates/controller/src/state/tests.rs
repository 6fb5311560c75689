use super::*;
use vcfm_api::{FailureDomain, MachineSetConfig, SecretReference, Topology};

fn spec() -> MigrationSpec {
    MigrationSpec {
        state: MigrationState::Running,
        approval_mode: ApprovalMode::Automatic,
        approved_phases: vec![],
        target_vcenter_credentials_secret: SecretReference {
            name: "t".into(),
            namespace: None,
        },
        failure_domains: vec![FailureDomain {
            name: "fd".into(),
            region: "r".into(),
            zone: "z".into(),
            server: "vc".into(),
            topology: Topology {
                datacenter: "dc".into(),
                compute_cluster: "/dc/host/c".into(),
                datastore: "/dc/datastore/d".into(),
                networks: vec!["n".into()],
                resource_pool: None,
                folder: None,
                template: "/dc/vm/t".into(),
            },
            region_affinity: None,
            zone_affinity: None,
        }],
        machine_set_config: MachineSetConfig {
            replicas: 3,
            failure_domain: None,
            machine_sets: vec![],
        },
        control_plane_machine_set_config: None,
        rollback_on_failure: true,
        phase_timeouts: Default::default(),
        retry_token: None,
        rollback_step_timeout: None,
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

fn decide_at(spec: &MigrationSpec, st: &MigrationStatus, now: Timestamp) -> Decision {
    decide(spec, st, now, |_| HOUR)
}

/// Drives the pure state machine the way the reconciler does, with every
/// phase completing except `fail_at`, and returns the status and the decisions.
fn drive(spec: &MigrationSpec, fail_at: Option<PhaseName>) -> (MigrationStatus, Vec<Decision>) {
    let mut st = MigrationStatus::default();
    let mut seen = vec![];
    for i in 0..200 {
        let now = t(i);
        let d = decide_at(spec, &st, now);
        seen.push(d.clone());
        match d {
            Decision::Execute(p) => {
                begin_phase(&mut st, p, false, now);
                let outcome = if Some(p) == fail_at {
                    Outcome::Failed {
                        message: "boom".into(),
                    }
                } else {
                    Outcome::Completed {
                        message: "ok".into(),
                    }
                };
                apply_outcome(&mut st, p, &outcome, spec, Some(1), now);
            }
            Decision::StartRollback { trigger, reason } => {
                start_rollback(&mut st, trigger, &reason, Some(1), now)
            }
            Decision::RollBack(p) => record_rollback_step(&mut st, p, Ok("undone".into()), now),
            Decision::FinishRollback => finish_rollback(&mut st, Some(1), now),
            Decision::Complete => break,
            _ => break,
        }
    }
    (st, seen)
}

#[test]
fn pending_does_nothing_and_running_starts_with_preflight() {
    let mut s = spec();
    s.state = MigrationState::Pending;
    assert!(matches!(
        decide_at(&s, &MigrationStatus::default(), t(0)),
        Decision::Idle { .. }
    ));
    s.state = MigrationState::Running;
    assert_eq!(
        decide_at(&s, &MigrationStatus::default(), t(0)),
        Decision::Execute(PhaseName::Preflight)
    );
}

#[test]
fn automatic_run_completes_every_phase_once_in_order() {
    let (st, decisions) = drive(&spec(), None);
    assert_eq!(st.phase, Some(MigrationPhase::Completed));
    assert!(st.completion_time.is_some());
    let done: Vec<PhaseName> = st.phase_history.iter().map(|e| e.phase).collect();
    assert_eq!(done, PhaseName::ALL.to_vec());
    assert!(
        st.phase_history
            .iter()
            .all(|e| e.status == PhaseStatus::Completed)
    );
    let executed: Vec<_> = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Execute(_)))
        .collect();
    assert_eq!(executed.len(), 15);
    assert!(matches!(
        decide_at(&spec(), &st, t(500)),
        Decision::Idle { .. }
    ));
}

#[test]
fn manual_mode_waits_for_each_phase_and_approval_releases_it() {
    let mut s = spec();
    s.approval_mode = ApprovalMode::Manual;
    let mut st = MigrationStatus::default();
    assert_eq!(
        decide_at(&s, &st, t(0)),
        Decision::AwaitApproval(PhaseName::Preflight)
    );
    s.approved_phases.push(PhaseName::Preflight);
    assert_eq!(
        decide_at(&s, &st, t(1)),
        Decision::Execute(PhaseName::Preflight)
    );
    begin_phase(&mut st, PhaseName::Preflight, true, t(1));
    apply_outcome(
        &mut st,
        PhaseName::Preflight,
        &Outcome::Completed {
            message: String::new(),
        },
        &s,
        Some(1),
        t(2),
    );
    let cur = st.current_phase_state.clone().unwrap();
    assert_eq!(
        (cur.name, cur.status, cur.requires_approval, cur.approved),
        (
            PhaseName::Backup,
            PhaseStatus::WaitingForApproval,
            true,
            false
        )
    );
    assert_eq!(
        decide_at(&s, &st, t(3)),
        Decision::AwaitApproval(PhaseName::Backup)
    );
    s.approved_phases.push(PhaseName::Backup);
    assert_eq!(
        decide_at(&s, &st, t(4)),
        Decision::Execute(PhaseName::Backup)
    );
}

#[test]
fn a_started_phase_continues_even_if_its_approval_is_withdrawn() {
    let mut s = spec();
    s.approval_mode = ApprovalMode::Manual;
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Preflight, true, t(0));
    assert_eq!(
        decide_at(&s, &st, t(1)),
        Decision::Execute(PhaseName::Preflight)
    );
}

#[test]
fn pause_stops_at_the_current_phase_and_resume_continues_it() {
    let mut s = spec();
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Backup, false, t(0));
    s.state = MigrationState::Paused;
    assert_eq!(
        decide_at(&s, &st, t(1)),
        Decision::Paused {
            at: Some(PhaseName::Backup)
        }
    );
    s.state = MigrationState::Running;
    assert_eq!(
        decide_at(&s, &st, t(2)),
        Decision::Execute(PhaseName::Backup)
    );
}

#[test]
fn a_phase_past_its_deadline_times_out() {
    let s = spec();
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Backup, false, t(0));
    assert_eq!(
        decide(&s, &st, t(59), |_| Duration::from_secs(60)),
        Decision::Execute(PhaseName::Backup)
    );
    assert_eq!(
        decide(&s, &st, t(61), |_| Duration::from_secs(60)),
        Decision::TimedOut {
            phase: PhaseName::Backup,
            after: Duration::from_secs(60)
        }
    );
}

#[test]
fn failure_is_persisted_then_rolled_back_once_in_reverse() {
    let (st, decisions) = drive(&spec(), Some(PhaseName::UpdateSecrets));
    assert_eq!(st.phase, Some(MigrationPhase::RollbackCompleted));
    let rb = st.rollback.clone().unwrap();
    assert_eq!(rb.trigger, RollbackTrigger::PhaseFailure);
    assert_eq!(
        rb.rolled_back_phases,
        [
            PhaseName::UpdateSecrets,
            PhaseName::DisableCvo,
            PhaseName::Backup,
            PhaseName::Preflight
        ]
    );
    // The failure is in history before any rollback entry.
    let failed_idx = st
        .phase_history
        .iter()
        .position(|e| e.status == PhaseStatus::Failed)
        .unwrap();
    let first_rb = st
        .phase_history
        .iter()
        .position(|e| e.status == PhaseStatus::RolledBack)
        .unwrap();
    assert!(failed_idx < first_rb);
    assert_eq!(
        decisions
            .iter()
            .filter(|d| matches!(d, Decision::StartRollback { .. }))
            .count(),
        1
    );
    assert!(conditions::is_true(
        &st.conditions,
        ConditionType::RolledBack
    ));
    // Terminal: neither rollbackOnFailure nor a later Rollback request runs it again.
    let mut s = spec();
    assert!(matches!(decide_at(&s, &st, t(900)), Decision::Idle { .. }));
    s.state = MigrationState::Rollback;
    assert!(matches!(decide_at(&s, &st, t(901)), Decision::Idle { .. }));
}

#[test]
fn without_rollback_on_failure_a_failure_just_stops() {
    let mut s = spec();
    s.rollback_on_failure = false;
    let (st, _) = drive(&s, Some(PhaseName::DisableCvo));
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    assert!(st.rollback.is_none());
    let failed = conditions::find(&st.conditions, ConditionType::Failed).unwrap();
    assert!(
        failed.message.contains("DisableCVO failed: boom"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("set spec.state to Rollback"),
        "{}",
        failed.message
    );
    // The administrator can still ask for the rollback, once.
    s.state = MigrationState::Rollback;
    assert!(matches!(
        decide_at(&s, &st, t(300)),
        Decision::StartRollback {
            trigger: RollbackTrigger::Requested,
            ..
        }
    ));
}

#[test]
fn past_the_point_of_no_return_rollback_is_refused() {
    let (st, _) = drive(&spec(), Some(PhaseName::ScaleOldMachines));
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    assert!(
        st.rollback.is_none(),
        "automatic rollback must not run past the point of no return"
    );
    let failed = conditions::find(&st.conditions, ConditionType::Failed).unwrap();
    assert!(
        failed.message.contains("point of no return"),
        "{}",
        failed.message
    );
    let mut s = spec();
    s.state = MigrationState::Rollback;
    match decide_at(&s, &st, t(999)) {
        Decision::RefuseRollback { reason } => assert!(
            reason.contains("RecreateCPMS") && reason.contains("strand"),
            "{reason}"
        ),
        d => panic!("expected a refusal, got {d:?}"),
    }
}

#[test]
fn requested_rollback_before_the_point_of_no_return_runs_once() {
    let mut s = spec();
    let mut st = MigrationStatus::default();
    for (i, p) in [
        PhaseName::Preflight,
        PhaseName::Backup,
        PhaseName::DisableCvo,
        PhaseName::UpdateSecrets,
    ]
    .into_iter()
    .enumerate()
    {
        begin_phase(&mut st, p, false, t(i as i64));
        apply_outcome(
            &mut st,
            p,
            &Outcome::Completed {
                message: String::new(),
            },
            &s,
            Some(1),
            t(i as i64),
        );
    }
    s.state = MigrationState::Rollback;
    let Decision::StartRollback { trigger, reason } = decide_at(&s, &st, t(10)) else {
        panic!()
    };
    assert_eq!(trigger, RollbackTrigger::Requested);
    start_rollback(&mut st, trigger, &reason, Some(2), t(10));
    start_rollback(&mut st, trigger, "again", Some(2), t(11));
    assert_eq!(
        st.rollback.as_ref().unwrap().reason,
        reason,
        "a second start must not reset the first"
    );
    assert_eq!(
        decide_at(&s, &st, t(12)),
        Decision::RollBack(PhaseName::UpdateSecrets)
    );
    record_rollback_step(
        &mut st,
        PhaseName::UpdateSecrets,
        Ok("restored".into()),
        t(12),
    );
    record_rollback_step(
        &mut st,
        PhaseName::UpdateSecrets,
        Ok("restored".into()),
        t(12),
    );
    assert_eq!(
        st.phase_history
            .iter()
            .filter(|e| e.status == PhaseStatus::RolledBack)
            .count(),
        1
    );
    assert_eq!(
        decide_at(&s, &st, t(13)),
        Decision::RollBack(PhaseName::DisableCvo)
    );
}

#[test]
fn a_failed_rollback_step_is_reported_and_the_rest_still_runs() {
    let mut s = spec();
    let mut st = MigrationStatus::default();
    for p in [
        PhaseName::Preflight,
        PhaseName::Backup,
        PhaseName::DisableCvo,
    ] {
        begin_phase(&mut st, p, false, t(0));
        apply_outcome(
            &mut st,
            p,
            &Outcome::Completed {
                message: String::new(),
            },
            &s,
            Some(1),
            t(0),
        );
    }
    s.state = MigrationState::Rollback;
    start_rollback(&mut st, RollbackTrigger::Requested, "r", Some(1), t(1));
    record_rollback_step(
        &mut st,
        PhaseName::DisableCvo,
        Err("CVO Deployment is gone".into()),
        t(2),
    );
    assert_eq!(
        decide_at(&s, &st, t(3)),
        Decision::RollBack(PhaseName::Backup)
    );
    record_rollback_step(&mut st, PhaseName::Backup, Ok(String::new()), t(3));
    record_rollback_step(&mut st, PhaseName::Preflight, Ok(String::new()), t(3));
    assert_eq!(decide_at(&s, &st, t(4)), Decision::FinishRollback);
    finish_rollback(&mut st, Some(1), t(4));
    let c = conditions::find(&st.conditions, ConditionType::RolledBack).unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("DisableCVO: CVO Deployment is gone"),
        "{}",
        c.message
    );
}

/// `vcfm retry`: a new token in the spec.
fn with_token(s: &MigrationSpec, token: &str) -> MigrationSpec {
    let mut s = s.clone();
    s.retry_token = Some(token.into());
    s
}

#[test]
fn preflight_failure_is_retried_only_on_a_new_retry_token() {
    let s = spec();
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Preflight, false, t(0));
    apply_outcome(
        &mut st,
        PhaseName::Preflight,
        &Outcome::Failed {
            message: "secret missing".into(),
        },
        &s,
        Some(1),
        t(1),
    );
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    assert!(
        matches!(decide(&s, &st, t(2), |_| HOUR), Decision::Idle { .. }),
        "rollbackOnFailure never rolls back a Preflight"
    );
    let retry = with_token(&s, "2026-12-02T10:00:00Z");
    assert_eq!(
        decide(&retry, &st, t(3), |_| HOUR),
        Decision::RetryFailedPhase(PhaseName::Preflight)
    );
    reset_for_retry(&mut st, PhaseName::Preflight, &retry, Some(2), t(3));
    assert_eq!(
        decide(&retry, &st, t(4), |_| HOUR),
        Decision::Execute(PhaseName::Preflight)
    );
}

#[test]
fn approving_a_later_phase_on_a_failed_migration_does_not_rerun_the_failed_one() {
    // Manual mode, rollbackOnFailure off: Cleanup failed past the point of no return.
    let mut s = spec();
    s.approval_mode = ApprovalMode::Manual;
    s.rollback_on_failure = false;
    s.approved_phases = PhaseName::ALL
        .into_iter()
        .filter(|p| *p <= PhaseName::Cleanup)
        .collect();
    let (st, _) = drive(&s, Some(PhaseName::Cleanup));
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    // The administrator approves Verify ahead of time (a spec edit, a new
    // generation) and adds a phase timeout: neither is a request to retry.
    s.approved_phases.push(PhaseName::Verify);
    s.phase_timeouts.insert("Cleanup".into(), "2h".into());
    for now in [t(300), t(400)] {
        let d = decide(&s, &st, now, |_| HOUR);
        assert!(matches!(d, Decision::Idle { .. }), "{d:?}");
    }
    // Neither is a pause and resume (what `vcfm resume` used to do).
    s.state = MigrationState::Paused;
    assert!(matches!(
        decide(&s, &st, t(401), |_| HOUR),
        Decision::Idle { .. }
    ));
    s.state = MigrationState::Running;
    assert!(matches!(
        decide(&s, &st, t(402), |_| HOUR),
        Decision::Idle { .. }
    ));
}

#[test]
fn a_retry_token_set_before_the_failure_does_not_retry_it() {
    let mut s = spec();
    s.rollback_on_failure = false;
    s.retry_token = Some("earlier".into());
    let (st, _) = drive(&s, Some(PhaseName::UpdateConfig));
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    assert_eq!(st.observed_retry_token.as_deref(), Some("earlier"));
    assert!(matches!(
        decide(&s, &st, t(300), |_| HOUR),
        Decision::Idle { .. }
    ));
}

#[test]
fn past_the_point_of_no_return_a_fixed_failure_is_retried_once_on_vcfm_retry() {
    let (mut st, _) = drive(&spec(), Some(PhaseName::Cleanup));
    assert_eq!(st.phase, Some(MigrationPhase::Failed));
    let s = spec();
    // Unchanged spec: it stays stopped, it does not loop.
    assert!(matches!(
        decide(&s, &st, t(300), |_| HOUR),
        Decision::Idle { .. }
    ));
    // `vcfm retry` sets a new token: the failed phase runs again, once.
    let s = with_token(&s, "one");
    assert_eq!(
        decide(&s, &st, t(301), |_| HOUR),
        Decision::RetryFailedPhase(PhaseName::Cleanup)
    );
    reset_for_retry(&mut st, PhaseName::Cleanup, &s, Some(3), t(301));
    assert!(!conditions::is_true(&st.conditions, ConditionType::Failed));
    assert_eq!(
        decide(&s, &st, t(302), |_| HOUR),
        Decision::Execute(PhaseName::Cleanup)
    );
    begin_phase(&mut st, PhaseName::Cleanup, false, t(302));
    // It fails again: the same token does not retry a second time.
    apply_outcome(
        &mut st,
        PhaseName::Cleanup,
        &Outcome::Failed {
            message: "still broken".into(),
        },
        &s,
        Some(3),
        t(303),
    );
    assert!(matches!(
        decide(&s, &st, t(304), |_| HOUR),
        Decision::Idle { .. }
    ));
    let s = with_token(&s, "two");
    assert_eq!(
        decide(&s, &st, t(305), |_| HOUR),
        Decision::RetryFailedPhase(PhaseName::Cleanup)
    );
    reset_for_retry(&mut st, PhaseName::Cleanup, &s, Some(4), t(305));
    begin_phase(&mut st, PhaseName::Cleanup, false, t(306));
    apply_outcome(
        &mut st,
        PhaseName::Cleanup,
        &Outcome::Completed {
            message: String::new(),
        },
        &s,
        Some(4),
        t(307),
    );
    assert_eq!(
        decide(&s, &st, t(308), |_| HOUR),
        Decision::Execute(PhaseName::Verify)
    );
    assert!(st.rollback.is_none());
}

#[test]
fn without_rollback_on_failure_retry_reruns_instead_of_rolling_back() {
    let mut s = spec();
    s.rollback_on_failure = false;
    let (st, _) = drive(&s, Some(PhaseName::UpdateConfig));
    assert!(matches!(
        decide(&s, &st, t(300), |_| HOUR),
        Decision::Idle { .. }
    ));
    assert_eq!(
        decide(&with_token(&s, "x"), &st, t(300), |_| HOUR),
        Decision::RetryFailedPhase(PhaseName::UpdateConfig)
    );
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_pause_longer_than_the_deadline_does_not_time_the_phase_out() {
    let mut s = spec();
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::CreateWorkers, false, t(0));
    // 30 s of work, then a pause overnight.
    s.state = MigrationState::Paused;
    assert!(matches!(
        decide(&s, &st, t(30), |_| MINUTE),
        Decision::Paused { .. }
    ));
    assert!(begin_pause(&mut st, t(30)));
    let night = 12 * 3600;
    assert!(matches!(
        decide(&s, &st, t(night), |_| MINUTE),
        Decision::Paused { .. }
    ));
    // Resumed the next morning: the deadline has 30 s left, not -12 h.
    s.state = MigrationState::Running;
    assert_eq!(
        decide(&s, &st, t(night), |_| MINUTE),
        Decision::Execute(PhaseName::CreateWorkers),
        "the open pause does not count even before the controller closes it"
    );
    assert!(end_pause(&mut st, t(night)));
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!(c.paused_seconds, night - 30);
    assert_eq!(c.paused_since, None);
    assert_eq!(active_time(&c, t(night + 20)), Duration::from_secs(50));
    assert_eq!(
        decide(&s, &st, t(night + 29), |_| MINUTE),
        Decision::Execute(PhaseName::CreateWorkers)
    );
    // Active time still counts: 30 s before the pause and 31 s after it.
    assert_eq!(
        decide(&s, &st, t(night + 31), |_| MINUTE),
        Decision::TimedOut {
            phase: PhaseName::CreateWorkers,
            after: MINUTE
        }
    );
}

#[test]
fn pause_accounting_survives_restarts_and_repeated_writes() {
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::CreateWorkers, false, t(0));
    // The Paused reconcile runs again (a restart, a requeue): the first start wins.
    assert!(begin_pause(&mut st, t(10)));
    assert!(!begin_pause(&mut st, t(500)));
    // The status round-trips through the API server between reconciles.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(
        json["currentPhaseState"]["pausedSince"],
        "2023-11-14T22:13:30Z"
    );
    let mut st: MigrationStatus = serde_json::from_value(json).unwrap();
    // Closing the pause is applied once; a replay (conflict retry, or a
    // restart after the write) finds nothing open and adds nothing.
    assert!(end_pause(&mut st, t(110)));
    assert!(!end_pause(&mut st, t(900)));
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!(c.paused_seconds, 100);
    assert_eq!(active_time(&c, t(120)), Duration::from_secs(20));
    // A second pause adds to the first.
    assert!(begin_pause(&mut st, t(120)));
    assert!(end_pause(&mut st, t(220)));
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!(c.paused_seconds, 200);
    assert_eq!(active_time(&c, t(230)), Duration::from_secs(30));
    // The next phase starts with a fresh clock.
    apply_outcome(
        &mut st,
        PhaseName::CreateWorkers,
        &Outcome::Completed {
            message: String::new(),
        },
        &spec(),
        Some(1),
        t(231),
    );
    begin_phase(&mut st, PhaseName::RecreateCpms, false, t(232));
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!((c.paused_seconds, c.paused_since), (0, None));
}

#[test]
fn only_a_running_phase_has_a_pause_clock() {
    let mut st = MigrationStatus::default();
    assert!(!begin_pause(&mut st, t(0)));
    set_waiting(&mut st, PhaseName::Backup, true, Some(1), t(0));
    assert!(!begin_pause(&mut st, t(1)));
    assert_eq!(st.current_phase_state.unwrap().paused_since, None);
}

#[test]
fn a_clock_that_went_backwards_counts_as_no_active_time() {
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Backup, false, t(100));
    let c = st.current_phase_state.clone().unwrap();
    assert_eq!(active_time(&c, t(50)), Duration::ZERO);
    let mut c = c;
    c.paused_seconds = i64::MAX;
    assert_eq!(active_time(&c, t(200)), Duration::ZERO);
}

#[test]
fn phase_logs_are_bounded_keeping_the_newest() {
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Preflight, false, t(0));
    let logs: Vec<LogEntry> = (0..80)
        .map(|i| LogEntry {
            timestamp: Time(t(i)),
            level: vcfm_api::LogLevel::Info,
            message: format!("line {i}"),
            component: String::new(),
            fields: Default::default(),
        })
        .collect();
    append_logs(&mut st, PhaseName::Preflight, logs);
    let entry = &st.phase_history[0];
    assert_eq!(entry.logs.len(), MAX_LOGS_PER_PHASE);
    assert_eq!(entry.logs.last().unwrap().message, "line 79");
    assert_eq!(entry.logs[0].message, "line 30");
}

#[test]
fn begin_phase_is_idempotent() {
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::Preflight, false, t(0));
    begin_phase(&mut st, PhaseName::Preflight, false, t(5));
    assert_eq!(st.phase_history.len(), 1);
    assert_eq!(st.current_phase_state.unwrap().start_time, Some(Time(t(0))));
}

#[test]
fn every_failure_before_the_point_of_no_return_rolls_back_exactly_the_started_phases() {
    for fail_at in PhaseName::ALL
        .into_iter()
        .filter(|p| !p.is_past_point_of_no_return() && *p != PhaseName::Preflight)
    {
        let (st, _) = drive(&spec(), Some(fail_at));
        assert_eq!(
            st.phase,
            Some(MigrationPhase::RollbackCompleted),
            "failing at {fail_at}"
        );
        let mut expected: Vec<PhaseName> = PhaseName::ALL
            .into_iter()
            .filter(|p| *p <= fail_at)
            .collect();
        expected.reverse();
        assert_eq!(
            st.rollback.unwrap().rolled_back_phases,
            expected,
            "failing at {fail_at}"
        );
    }
}

// --- Deleting a migration, and rollback step deadlines (issue 14, items 1 and 3) ---

/// Completes every phase up to and including `upto`, then starts `running`.
fn completed_through(
    s: &MigrationSpec,
    upto: PhaseName,
    running: Option<PhaseName>,
) -> MigrationStatus {
    let mut st = MigrationStatus::default();
    for (i, p) in PhaseName::ALL
        .into_iter()
        .filter(|p| *p <= upto)
        .enumerate()
    {
        begin_phase(&mut st, p, false, t(i as i64));
        let done = Outcome::Completed {
            message: String::new(),
        };
        apply_outcome(&mut st, p, &done, s, Some(1), t(i as i64));
    }
    if let Some(p) = running {
        begin_phase(&mut st, p, false, t(50));
    }
    st
}

fn delete_at(s: &MigrationSpec, st: &MigrationStatus, force: bool, now: Timestamp) -> Decision {
    decide_deletion(s, st, force, now, |_| HOUR)
}

#[test]
fn deleting_before_any_change_lets_the_migration_go_at_once() {
    let s = spec();
    // Never started, Preflight running, Preflight failed: nothing was changed.
    let untouched = MigrationStatus::default();
    let mut preflight = MigrationStatus::default();
    begin_phase(&mut preflight, PhaseName::Preflight, false, t(0));
    let mut failed = preflight.clone();
    let boom = Outcome::Failed {
        message: "no credentials".into(),
    };
    apply_outcome(&mut failed, PhaseName::Preflight, &boom, &s, Some(1), t(1));
    for st in [untouched, preflight, failed] {
        match delete_at(&s, &st, false, t(2)) {
            Decision::ReleaseDeletion { reason } => {
                assert!(reason.contains("no phase that changes"), "{reason}")
            }
            d => panic!("expected a release, got {d:?}"),
        }
    }
}

#[test]
fn deleting_after_changes_rolls_back_once_then_lets_go() {
    let mut s = spec();
    // Whatever the spec asks (even a pause), a deletion rolls back.
    s.state = MigrationState::Paused;
    s.rollback_on_failure = false;
    let mut st = completed_through(&s, PhaseName::CreateTags, Some(PhaseName::CreateFolder));
    let Decision::StartRollback { trigger, reason } = delete_at(&s, &st, false, t(60)) else {
        panic!("a deletion after changes must roll back first")
    };
    assert_eq!(trigger, RollbackTrigger::Deletion);
    start_rollback(&mut st, trigger, &reason, Some(2), t(60));
    let mut undone = vec![];
    for i in 61..100 {
        match delete_at(&s, &st, false, t(i)) {
            Decision::RollBack(p) => {
                assert!(begin_rollback_step(&mut st, p, t(i)));
                record_rollback_step(&mut st, p, Ok("undone".into()), t(i));
                undone.push(p);
            }
            Decision::FinishRollback => finish_rollback(&mut st, Some(2), t(i)),
            Decision::ReleaseDeletion { reason } => {
                assert!(reason.contains("rollback has finished"), "{reason}");
                break;
            }
            d => panic!("unexpected {d:?} while deleting"),
        }
    }
    let mut expected: Vec<PhaseName> = PhaseName::ALL
        .into_iter()
        .filter(|p| *p <= PhaseName::CreateFolder)
        .collect();
    expected.reverse();
    assert_eq!(
        undone, expected,
        "every started phase undone once, in reverse"
    );
    assert_eq!(st.phase, Some(MigrationPhase::RollbackCompleted));
    assert!(conditions::is_true(
        &st.conditions,
        ConditionType::RolledBack
    ));
    // The one rollback is not run a second time.
    assert!(matches!(
        delete_at(&s, &st, false, t(200)),
        Decision::ReleaseDeletion { .. }
    ));
}

#[test]
fn deleting_during_a_rollback_waits_for_it_and_never_starts_another() {
    let s = spec();
    let mut st = completed_through(&s, PhaseName::UpdateSecrets, None);
    start_rollback(
        &mut st,
        RollbackTrigger::PhaseFailure,
        "failed",
        Some(1),
        t(60),
    );
    record_rollback_step(&mut st, PhaseName::UpdateSecrets, Ok(String::new()), t(61));
    assert_eq!(
        delete_at(&s, &st, false, t(62)),
        Decision::RollBack(PhaseName::DisableCvo)
    );
    for p in [
        PhaseName::DisableCvo,
        PhaseName::Backup,
        PhaseName::Preflight,
    ] {
        record_rollback_step(&mut st, p, Ok(String::new()), t(63));
    }
    assert_eq!(delete_at(&s, &st, false, t(64)), Decision::FinishRollback);
    finish_rollback(&mut st, Some(1), t(64));
    assert!(matches!(
        delete_at(&s, &st, false, t(65)),
        Decision::ReleaseDeletion { .. }
    ));
    assert_eq!(
        st.rollback.as_ref().unwrap().trigger,
        RollbackTrigger::PhaseFailure,
        "the running rollback was awaited, not replaced"
    );
}

#[test]
fn a_rollback_that_ended_with_failed_steps_still_lets_the_deletion_go() {
    let s = spec();
    let mut st = completed_through(&s, PhaseName::DisableCvo, None);
    start_rollback(
        &mut st,
        RollbackTrigger::Deletion,
        "deleted",
        Some(1),
        t(60),
    );
    record_rollback_step(&mut st, PhaseName::DisableCvo, Err("gone".into()), t(61));
    record_rollback_step(&mut st, PhaseName::Backup, Ok(String::new()), t(61));
    record_rollback_step(&mut st, PhaseName::Preflight, Ok(String::new()), t(61));
    finish_rollback(&mut st, Some(1), t(62));
    assert!(!conditions::is_true(
        &st.conditions,
        ConditionType::RolledBack
    ));
    assert!(matches!(
        delete_at(&s, &st, false, t(63)),
        Decision::ReleaseDeletion { .. }
    ));
}

#[test]
fn deleting_past_the_point_of_no_return_is_held_until_forced() {
    let s = spec();
    let running = completed_through(&s, PhaseName::CreateWorkers, Some(PhaseName::RecreateCpms));
    let (failed, _) = drive(&s, Some(PhaseName::ScaleOldMachines));
    // Held, and meanwhile the migration goes on: a running phase continues,
    // a failed one waits for `vcfm retry` (never a rollback).
    let meanwhile = [
        Decision::Execute(PhaseName::RecreateCpms),
        decide_at(&s, &failed, t(300)),
    ];
    assert!(
        matches!(meanwhile[1], Decision::Idle { .. }),
        "{:?}",
        meanwhile[1]
    );
    for (st, next) in [running, failed].into_iter().zip(meanwhile) {
        match delete_at(&s, &st, false, t(300)) {
            Decision::HoldDeletion { reason, meanwhile } => {
                assert!(reason.contains("RecreateCPMS"), "{reason}");
                assert_eq!(*meanwhile, next);
            }
            d => panic!("expected the deletion to be held, got {d:?}"),
        }
        match delete_at(&s, &st, true, t(301)) {
            Decision::ReleaseDeletion { reason } => {
                assert!(
                    reason.contains("forced") && reason.contains("backup"),
                    "{reason}"
                )
            }
            d => panic!("a forced deletion must go without rollback, got {d:?}"),
        }
    }
}

#[test]
fn a_completed_migration_is_deleted_without_rollback_or_hold() {
    let s = spec();
    let (st, _) = drive(&s, None);
    assert_eq!(st.phase, Some(MigrationPhase::Completed));
    match delete_at(&s, &st, false, t(500)) {
        Decision::ReleaseDeletion { reason } => assert!(reason.contains("completed"), "{reason}"),
        d => panic!("expected a release, got {d:?}"),
    }
}

#[test]
fn forcing_lets_go_even_during_a_rollback() {
    let s = spec();
    let mut st = completed_through(&s, PhaseName::CreateWorkers, None);
    start_rollback(
        &mut st,
        RollbackTrigger::Deletion,
        "deleted",
        Some(1),
        t(60),
    );
    assert!(matches!(
        delete_at(&s, &st, true, t(61)),
        Decision::ReleaseDeletion { .. }
    ));
}

#[test]
fn a_rollback_step_past_its_deadline_is_stalled_and_keeps_trying() {
    let mut s = spec();
    s.rollback_step_timeout = Some("2m".into());
    let mut st = completed_through(&s, PhaseName::CreateWorkers, None);
    start_rollback(&mut st, RollbackTrigger::Requested, "asked", Some(1), t(60));
    assert!(begin_rollback_step(
        &mut st,
        PhaseName::CreateWorkers,
        t(100)
    ));
    // A second begin (a requeue, a restarted controller) keeps the first start.
    assert!(!begin_rollback_step(
        &mut st,
        PhaseName::CreateWorkers,
        t(150)
    ));
    assert_eq!(
        decide_at(&s, &st, t(220)),
        Decision::RollBack(PhaseName::CreateWorkers),
        "exactly at the deadline it is not late yet"
    );
    let late = decide_at(&s, &st, t(221));
    assert_eq!(
        late,
        Decision::StalledRollBack {
            phase: PhaseName::CreateWorkers,
            waited: Duration::from_secs(121),
            limit: Duration::from_secs(120),
        }
    );
    // The same rule applies to a deletion's rollback.
    assert_eq!(delete_at(&s, &st, false, t(221)), late);

    let waiting = "1 machine(s) of MachineSet x-worker-fd to be deleted";
    assert!(set_stalled(
        &mut st,
        PhaseName::CreateWorkers,
        Duration::from_secs(121),
        Duration::from_secs(120),
        waiting,
        Some(1),
        t(221)
    ));
    assert!(
        !set_stalled(
            &mut st,
            PhaseName::CreateWorkers,
            Duration::from_secs(130),
            Duration::from_secs(120),
            waiting,
            Some(1),
            t(230)
        ),
        "still stalled: no new transition (and no new Event)"
    );
    let c = conditions::find(&st.conditions, ConditionType::Stalled).unwrap();
    assert_eq!(c.status, "True");
    assert!(
        c.message.contains(waiting)
            && c.message.contains("keeps trying")
            && c.message.contains("oc get machines"),
        "{}",
        c.message
    );

    // The obstacle goes: the step ends, Stalled clears, the next step has its own clock.
    record_rollback_step(
        &mut st,
        PhaseName::CreateWorkers,
        Ok("deleted".into()),
        t(400),
    );
    assert!(clear_stalled(&mut st, Some(1), t(400)));
    assert!(!conditions::is_true(&st.conditions, ConditionType::Stalled));
    assert_eq!(st.rollback.as_ref().unwrap().current_step, None);
    assert_eq!(
        decide_at(&s, &st, t(401)),
        Decision::RollBack(PhaseName::MonitorHealth)
    );
    assert!(begin_rollback_step(
        &mut st,
        PhaseName::MonitorHealth,
        t(401)
    ));
    assert_eq!(
        decide_at(&s, &st, t(401 + 120)),
        Decision::RollBack(PhaseName::MonitorHealth),
        "the deadline counts from the step's own start, not the rollback's"
    );
}

#[test]
fn a_rollback_step_deadline_defaults_to_the_phase_deadline() {
    let mut s = spec();
    let per_phase = |p: PhaseName| {
        if p == PhaseName::CreateWorkers {
            Duration::from_secs(600)
        } else {
            HOUR
        }
    };
    assert_eq!(
        rollback_step_limit(&s, PhaseName::CreateWorkers, &per_phase),
        Duration::from_secs(600)
    );
    s.rollback_step_timeout = Some("90s".into());
    assert_eq!(
        rollback_step_limit(&s, PhaseName::CreateWorkers, &per_phase),
        Duration::from_secs(90)
    );
    s.rollback_step_timeout = Some("5124095576030432h".into());
    assert_eq!(
        rollback_step_limit(&s, PhaseName::Backup, &per_phase),
        HOUR,
        "an unparseable value falls back to the phase's deadline"
    );
}

#[test]
fn finishing_the_rollback_clears_a_stall() {
    let s = spec();
    let mut st = completed_through(&s, PhaseName::Backup, None);
    start_rollback(&mut st, RollbackTrigger::Requested, "asked", Some(1), t(60));
    set_stalled(&mut st, PhaseName::Backup, HOUR, HOUR, "x", Some(1), t(61));
    finish_rollback(&mut st, Some(1), t(62));
    let c = conditions::find(&st.conditions, ConditionType::Stalled).unwrap();
    assert_eq!(c.status, "False");
}

#[test]
fn a_held_deletion_goes_on_to_completion_and_then_lets_go() {
    let s = spec();
    let (mut st, _) = drive(&s, Some(PhaseName::ScaleOldMachines));
    let retry = with_token(&s, "fixed");
    let Decision::HoldDeletion { meanwhile, .. } = delete_at(&retry, &st, false, t(300)) else {
        panic!("held")
    };
    assert_eq!(
        *meanwhile,
        Decision::RetryFailedPhase(PhaseName::ScaleOldMachines),
        "`vcfm retry` still works on a held migration"
    );
    reset_for_retry(
        &mut st,
        PhaseName::ScaleOldMachines,
        &retry,
        Some(2),
        t(301),
    );
    for i in 302..400 {
        match delete_at(&retry, &st, false, t(i)) {
            Decision::HoldDeletion { meanwhile, .. } => match *meanwhile {
                Decision::Execute(p) => {
                    begin_phase(&mut st, p, false, t(i));
                    let done = Outcome::Completed {
                        message: String::new(),
                    };
                    apply_outcome(&mut st, p, &done, &retry, Some(2), t(i));
                }
                d => panic!("unexpected {d:?} while held"),
            },
            Decision::ReleaseDeletion { reason } => {
                assert!(reason.contains("completed"), "{reason}");
                assert_eq!(st.phase, Some(MigrationPhase::Completed));
                assert!(st.rollback.is_none());
                return;
            }
            d => panic!("unexpected {d:?}"),
        }
    }
    panic!("the held migration never completed");
}

#[test]
fn progress_never_falls_within_a_run_of_a_phase() {
    let sp = spec();
    let mut st = MigrationStatus::default();
    begin_phase(&mut st, PhaseName::MonitorHealth, false, t(0));
    let wait = |progress: i32, message: &str| Outcome::Running {
        progress,
        message: message.into(),
        waiting_for: vec![],
        recheck: Duration::from_secs(5),
    };
    let shown = |st: &MigrationStatus| {
        let c = st.current_phase_state.as_ref().unwrap();
        (c.progress, c.message.clone())
    };
    let p = PhaseName::MonitorHealth;
    apply_outcome(&mut st, p, &wait(90, "stable"), &sp, Some(1), t(1));
    // What the step sees slipped back: the message says so, the progress holds.
    apply_outcome(
        &mut st,
        p,
        &wait(50, "1 operator not stable"),
        &sp,
        Some(1),
        t(2),
    );
    assert_eq!(shown(&st), (90, "1 operator not stable".to_string()));
    // A new run of a phase (the next one, or a retry) starts from its own progress.
    begin_phase(&mut st, PhaseName::CreateWorkers, false, t(3));
    apply_outcome(
        &mut st,
        PhaseName::CreateWorkers,
        &wait(10, "0/2"),
        &sp,
        Some(1),
        t(4),
    );
    assert_eq!(shown(&st), (10, "0/2".to_string()));
}
