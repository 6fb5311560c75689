//! The migration state machine: pure functions from (spec, status, now) to a
//! decision, and from a phase outcome to the next status. No I/O here, so every
//! rule (approval, pause, failure, rollback-once, point of no return, deadlines,
//! explicit retry) is unit-tested exhaustively.
//!
//! Decisions are made from typed status fields only: never from condition
//! messages, never from list order.

use crate::conditions::{self, ConditionType};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;
use vcfm_api::{
    ApprovalMode, LogEntry, MAX_LOGS_PER_PHASE, MAX_MESSAGE_LEN, MigrationPhase, MigrationSpec,
    MigrationState, MigrationStatus, PhaseHistoryEntry, PhaseName, PhaseState, PhaseStatus,
    RollbackStatus, RollbackStep, RollbackTrigger,
};

/// What the reconciler must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until the spec changes (Pending, terminal states).
    Idle { reason: String },
    /// Manual mode: the phase waits for `spec.approvedPhases` to list it.
    AwaitApproval(PhaseName),
    /// `state: Paused`: stay at the safe point.
    Paused { at: Option<PhaseName> },
    /// Start or continue this phase.
    Execute(PhaseName),
    /// The running phase exceeded its deadline (active time, pauses excluded): fail it.
    TimedOut { phase: PhaseName, after: Duration },
    /// Begin the one rollback this migration may run.
    StartRollback {
        trigger: RollbackTrigger,
        reason: String,
    },
    /// Undo this phase (rollback walks completed phases in reverse).
    RollBack(PhaseName),
    /// Undoing this phase has run past its deadline: keep trying, and show
    /// `Stalled` with what it waits for.
    StalledRollBack {
        phase: PhaseName,
        waited: Duration,
        limit: Duration,
    },
    /// The migration is being deleted and may go: remove the finalizer.
    ReleaseDeletion { reason: String },
    /// The migration is being deleted past the point of no return: keep the
    /// finalizer until it completes or the administrator forces the
    /// deletion. Forward is the only safe way from here, so `meanwhile` (what
    /// [`decide`] says) still happens: a deletion never freezes a migration
    /// half-way through moving the control plane.
    HoldDeletion {
        reason: String,
        meanwhile: Box<Decision>,
    },
    /// Every phase has been undone.
    FinishRollback,
    /// A rollback was requested but cannot be honoured.
    RefuseRollback { reason: String },
    /// The last phase completed.
    Complete,
    /// A failed phase is run again because `spec.retryToken` changed since it
    /// failed (the administrator fixed the cause and ran `vcfm retry`).
    RetryFailedPhase(PhaseName),
}

/// How a phase ended one execution step.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the next phase may start.
    Completed { message: String },
    /// Nothing to do on this cluster (recorded as Skipped).
    Skipped { message: String },
    /// Still working; check again after `recheck` (or on a watch event).
    Running {
        progress: i32,
        message: String,
        waiting_for: Vec<String>,
        recheck: Duration,
    },
    /// Cannot succeed without the administrator; persisted before anything else.
    Failed { message: String },
}

/// Position reached by the migration, derived from status.
fn current(status: &MigrationStatus) -> Option<&PhaseState> {
    status.current_phase_state.as_ref()
}

/// Phases that have started (and so may have changed something), in order, deduplicated.
pub fn started_phases(status: &MigrationStatus) -> Vec<PhaseName> {
    let mut out: Vec<PhaseName> = Vec::new();
    for e in &status.phase_history {
        let touched = matches!(
            e.status,
            PhaseStatus::Running | PhaseStatus::Completed | PhaseStatus::Failed
        );
        if touched && !out.contains(&e.phase) {
            out.push(e.phase);
        }
    }
    out.sort();
    out
}

/// The phase that failed, when the migration is Failed.
pub fn failed_phase(status: &MigrationStatus) -> Option<PhaseName> {
    status
        .phase_history
        .iter()
        .rev()
        .find(|e| e.status == PhaseStatus::Failed)
        .map(|e| e.phase)
}

/// Why a rollback cannot run, if it cannot.
fn rollback_blocker(status: &MigrationStatus) -> Option<String> {
    let started = started_phases(status);
    let past = started.iter().find(|p| p.is_past_point_of_no_return())?;
    Some(format!(
        "rollback refused: phase {past} has started moving the control plane to the target vCenter; \
         restoring the source configuration now would strand the new control-plane machines. \
         Fix the cause and let the migration finish, or recover manually from the backups in the migration's backup Secret"
    ))
}

/// Whether the administrator asked to retry the failure: `spec.retryToken`
/// differs from the one recorded when the phase failed. Any other spec edit
/// (an approval, a new timeout) is not a request to run the phase again.
pub fn retry_requested(spec: &MigrationSpec, status: &MigrationStatus) -> bool {
    spec.retry_token.is_some() && spec.retry_token != status.observed_retry_token
}

fn secs(d: jiff::SignedDuration) -> u64 {
    u64::try_from(d.as_secs()).unwrap_or(0)
}

/// How long `phase` has been running at `now`, not counting pauses (earlier
/// ones in `pausedSeconds`, a current one since `pausedSince`). Deadlines are
/// measured against this, so a phase paused overnight resumes with the time
/// it had left. A clock that went backwards counts as no time.
pub fn active_time(phase: &PhaseState, now: Timestamp) -> Duration {
    let Some(start) = phase.start_time.as_ref() else {
        return Duration::ZERO;
    };
    let wall = secs(now.duration_since(start.0));
    let open = phase
        .paused_since
        .as_ref()
        .map_or(0, |p| secs(now.duration_since(p.0)));
    let paused = u64::try_from(phase.paused_seconds)
        .unwrap_or(0)
        .saturating_add(open);
    Duration::from_secs(wall.saturating_sub(paused))
}

/// Starts the pause clock of the running phase. Idempotent: a pause already
/// recorded keeps its start. Returns whether status changed.
pub fn begin_pause(status: &mut MigrationStatus, now: Timestamp) -> bool {
    match status.current_phase_state.as_mut() {
        Some(c) if c.status == PhaseStatus::Running && c.paused_since.is_none() => {
            c.paused_since = Some(Time(now));
            true
        }
        _ => false,
    }
}

/// Stops the pause clock, adding the pause to `pausedSeconds` in the same
/// change that clears `pausedSince`: written in one status update, a crash
/// or a conflict retry can neither lose nor count a pause twice.
pub fn end_pause(status: &mut MigrationStatus, now: Timestamp) -> bool {
    let Some(c) = status.current_phase_state.as_mut() else {
        return false;
    };
    let Some(since) = c.paused_since.take() else {
        return false;
    };
    let paused = i64::try_from(secs(now.duration_since(since.0))).unwrap_or(i64::MAX);
    c.paused_seconds = c.paused_seconds.max(0).saturating_add(paused);
    true
}

/// The deadline of the step undoing `phase`: `spec.rollbackStepTimeout`,
/// else the phase's own deadline (undoing takes about as long as doing).
pub fn rollback_step_limit(
    spec: &MigrationSpec,
    phase: PhaseName,
    timeout_for: &impl Fn(PhaseName) -> Duration,
) -> Duration {
    spec.rollback_step_timeout
        .as_deref()
        .and_then(crate::phases::parse_duration)
        .unwrap_or_else(|| timeout_for(phase))
}

/// The next step of a running rollback: the latest started phase not yet
/// undone, flagged as stalled once its step has run past its deadline
/// (measured from `rollback.currentStep.startTime`, recorded when it began).
fn next_rollback_step(
    spec: &MigrationSpec,
    status: &MigrationStatus,
    rb: &RollbackStatus,
    now: Timestamp,
    timeout_for: &impl Fn(PhaseName) -> Duration,
) -> Decision {
    let Some(phase) = started_phases(status)
        .into_iter()
        .rev()
        .find(|p| !rb.rolled_back_phases.contains(p))
    else {
        return Decision::FinishRollback;
    };
    if let Some(step) = &rb.current_step
        && step.phase == phase
    {
        let waited = Duration::from_secs(secs(now.duration_since(step.start_time.0)));
        let limit = rollback_step_limit(spec, phase, timeout_for);
        if waited > limit {
            return Decision::StalledRollBack {
                phase,
                waited,
                limit,
            };
        }
    }
    Decision::RollBack(phase)
}

/// What to do with a migration that is being deleted (it carries
/// `deletionTimestamp` and vcfm's finalizer). `force` is the administrator's
/// force-delete annotation.
///
/// - nothing changed yet (only Preflight, which changes nothing, started),
///   completed, or rolled back: let it go;
/// - changes made before the point of no return: roll back (the one
///   rollback; one already running is simply awaited), then let go;
/// - past the point of no return: hold while the migration goes on to
///   completion, unless forced; forced: let go with no rollback (the backup
///   Secret is not owned by the migration and stays).
pub fn decide_deletion(
    spec: &MigrationSpec,
    status: &MigrationStatus,
    force: bool,
    now: Timestamp,
    timeout_for: impl Fn(PhaseName) -> Duration,
) -> Decision {
    if force {
        return Decision::ReleaseDeletion {
            reason: "deletion forced by the force-delete annotation: nothing was rolled back; the backup Secret is kept for manual recovery".into(),
        };
    }
    if let Some(rb) = &status.rollback {
        if rb.completion_time.is_some() {
            return Decision::ReleaseDeletion {
                reason: "the rollback has finished".into(),
            };
        }
        return next_rollback_step(spec, status, rb, now, &timeout_for);
    }
    if status.phase == Some(MigrationPhase::Completed) {
        return Decision::ReleaseDeletion {
            reason: "the migration completed; there is nothing to undo".into(),
        };
    }
    if started_phases(status)
        .iter()
        .all(|p| *p == PhaseName::Preflight)
    {
        return Decision::ReleaseDeletion {
            reason: "no phase that changes the cluster has started".into(),
        };
    }
    if let Some(reason) = rollback_blocker(status) {
        return Decision::HoldDeletion {
            reason: format!(
                "deletion held until the migration completes (it goes on; a failed phase waits for `vcfm retry`): {reason}"
            ),
            meanwhile: Box::new(decide(spec, status, now, timeout_for)),
        };
    }
    Decision::StartRollback {
        trigger: RollbackTrigger::Deletion,
        reason:
            "the migration was deleted after it changed the cluster: rolling back before it goes"
                .into(),
    }
}

/// Records that the rollback step undoing `phase` has begun, so that its
/// deadline counts from now. Idempotent: a step already recorded keeps its
/// start. Returns whether status changed.
pub fn begin_rollback_step(status: &mut MigrationStatus, phase: PhaseName, now: Timestamp) -> bool {
    match status.rollback.as_mut() {
        Some(rb)
            if rb.completion_time.is_none()
                && rb.current_step.as_ref().is_none_or(|s| s.phase != phase) =>
        {
            rb.current_step = Some(RollbackStep {
                phase,
                start_time: Time(now),
            });
            true
        }
        _ => false,
    }
}

/// What the administrator can do about a rollback step that does not end.
fn stall_hint(phase: PhaseName) -> &'static str {
    match phase {
        PhaseName::CreateWorkers | PhaseName::RecreateCpms | PhaseName::ScaleOldMachines => {
            "check the Machines named above (`oc get machines -n openshift-machine-api`): a finalizer nobody removes, a drain blocked by a PodDisruptionBudget or an unreachable vCenter keeps a Machine deleting; fix that"
        }
        PhaseName::DisableCvo => {
            "check why the cluster-version-operator pod does not become available (`oc get pods -n openshift-cluster-version`)"
        }
        PhaseName::RestartPods | PhaseName::UpdateConfig => {
            "check the pods named above (`oc get pods -A`) and why they do not become ready"
        }
        _ => "check the objects named above and what keeps them from changing",
    }
}

/// Shows that the rollback step undoing `phase` is past its deadline.
/// Returns whether the condition turned True (callers emit an Event then).
pub fn set_stalled(
    status: &mut MigrationStatus,
    phase: PhaseName,
    waited: Duration,
    limit: Duration,
    waiting_for: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let msg = truncate(format!(
        "rolling back {phase} has taken {}s, past its deadline of {}s (spec.rollbackStepTimeout): waiting for {waiting_for}. vcfm keeps trying and continues by itself once the obstacle is gone: {}",
        waited.as_secs(),
        limit.as_secs(),
        stall_hint(phase)
    ));
    conditions::set(
        &mut status.conditions,
        ConditionType::Stalled,
        true,
        "RollbackStepDeadlineExceeded",
        &msg,
        generation,
        now,
    )
}

/// Clears `Stalled` once the step it was about has ended. Returns whether it was True.
pub fn clear_stalled(
    status: &mut MigrationStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    if !conditions::is_true(&status.conditions, ConditionType::Stalled) {
        return false;
    }
    conditions::set(
        &mut status.conditions,
        ConditionType::Stalled,
        false,
        "RollbackProgressing",
        "the stalled rollback step ended; the rollback continues",
        generation,
        now,
    );
    true
}

/// Decides what to do, given the administrator's request and what has happened.
pub fn decide(
    spec: &MigrationSpec,
    status: &MigrationStatus,
    now: Timestamp,
    timeout_for: impl Fn(PhaseName) -> Duration,
) -> Decision {
    // A rollback in progress runs to its end, whatever the spec says now.
    if let Some(rb) = &status.rollback {
        if rb.completion_time.is_some() {
            return Decision::Idle {
                reason: "rollback completed".into(),
            };
        }
        return next_rollback_step(spec, status, rb, now, &timeout_for);
    }

    match status.phase {
        Some(MigrationPhase::Completed) => {
            return Decision::Idle {
                reason: "migration completed".into(),
            };
        }
        Some(MigrationPhase::RollbackCompleted) => {
            return Decision::Idle {
                reason: "rollback completed".into(),
            };
        }
        Some(MigrationPhase::Failed) => {
            let failed = failed_phase(status);
            if spec.state == MigrationState::Rollback {
                return match rollback_blocker(status) {
                    Some(reason) => Decision::RefuseRollback { reason },
                    None => Decision::StartRollback {
                        trigger: RollbackTrigger::Requested,
                        reason: "requested with spec.state: Rollback".into(),
                    },
                };
            }
            // Only a new spec.retryToken (`vcfm retry`) means "fixed, try again".
            let retry_requested =
                spec.state == MigrationState::Running && retry_requested(spec, status);
            // Preflight changes nothing: its failure is retried, never rolled back.
            if failed == Some(PhaseName::Preflight) {
                if retry_requested {
                    return Decision::RetryFailedPhase(PhaseName::Preflight);
                }
                return Decision::Idle {
                    reason: "preflight failed; fix the problems listed, then `vcfm retry` to check again".into(),
                };
            }
            if spec.rollback_on_failure && rollback_blocker(status).is_none() {
                return Decision::StartRollback {
                    trigger: RollbackTrigger::PhaseFailure,
                    reason: format!(
                        "phase {} failed and rollbackOnFailure is set",
                        failed.map(|p| p.as_str()).unwrap_or("?")
                    ),
                };
            }
            if retry_requested && let Some(p) = failed {
                return Decision::RetryFailedPhase(p);
            }
            return Decision::Idle {
                reason: match rollback_blocker(status) {
                    Some(reason) => format!("{reason}; fix the cause, then `vcfm retry` to run the failed phase again"),
                    None => "migration failed and rollbackOnFailure is off: fix the cause and `vcfm retry`, or `vcfm rollback`".into(),
                },
            };
        }
        _ => {}
    }

    match spec.state {
        MigrationState::Pending => Decision::Idle {
            reason: "spec.state is Pending".into(),
        },
        MigrationState::Rollback => {
            if started_phases(status).is_empty() {
                return Decision::StartRollback {
                    trigger: RollbackTrigger::Requested,
                    reason: "requested before any phase ran".into(),
                };
            }
            match rollback_blocker(status) {
                Some(reason) => Decision::RefuseRollback { reason },
                None => Decision::StartRollback {
                    trigger: RollbackTrigger::Requested,
                    reason: "requested with spec.state: Rollback".into(),
                },
            }
        }
        MigrationState::Paused => Decision::Paused {
            at: current(status).map(|c| c.name),
        },
        MigrationState::Running => {
            let (phase, running) = match current(status) {
                None => (PhaseName::Preflight, None),
                Some(c) => match c.status {
                    PhaseStatus::Completed | PhaseStatus::Skipped => match c.name.next() {
                        Some(n) => (n, None),
                        None => return Decision::Complete,
                    },
                    PhaseStatus::Running => (c.name, Some(c)),
                    _ => (c.name, None),
                },
            };
            if let Some(c) = running {
                let limit = timeout_for(phase);
                if active_time(c, now) > limit {
                    return Decision::TimedOut {
                        phase,
                        after: limit,
                    };
                }
                return Decision::Execute(phase);
            }
            if spec.approval_mode == ApprovalMode::Manual && !spec.approved_phases.contains(&phase)
            {
                return Decision::AwaitApproval(phase);
            }
            Decision::Execute(phase)
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn history_entry_mut(
    status: &mut MigrationStatus,
    phase: PhaseName,
) -> Option<&mut PhaseHistoryEntry> {
    status
        .phase_history
        .iter_mut()
        .rev()
        .find(|e| e.phase == phase && matches!(e.status, PhaseStatus::Running))
}

/// Appends log lines to the running history entry of `phase`, keeping the newest.
pub fn append_logs(status: &mut MigrationStatus, phase: PhaseName, logs: Vec<LogEntry>) {
    let running = status
        .phase_history
        .iter()
        .rposition(|e| e.phase == phase && e.status == PhaseStatus::Running);
    let any = status.phase_history.iter().rposition(|e| e.phase == phase);
    let Some(entry) = running
        .or(any)
        .and_then(|i| status.phase_history.get_mut(i))
    else {
        return;
    };
    entry.logs.extend(logs);
    if entry.logs.len() > MAX_LOGS_PER_PHASE {
        let drop = entry.logs.len() - MAX_LOGS_PER_PHASE;
        entry.logs.drain(..drop);
    }
}

/// Shows `phase` as the next one, waiting for approval or about to start.
pub fn set_waiting(
    status: &mut MigrationStatus,
    phase: PhaseName,
    needs_approval: bool,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.phase = Some(phase.into());
    if needs_approval {
        let msg = format!(
            "phase {phase} waits for approval: add it to spec.approvedPhases (`vcfm approve <name> {phase}`)"
        );
        conditions::set(
            &mut status.conditions,
            ConditionType::WaitingForApproval,
            true,
            "ApprovalRequired",
            &msg,
            generation,
            now,
        );
        conditions::set(
            &mut status.conditions,
            ConditionType::Progressing,
            false,
            "WaitingForApproval",
            &msg,
            generation,
            now,
        );
    }
    status.current_phase_state = Some(PhaseState {
        name: phase,
        status: if needs_approval {
            PhaseStatus::WaitingForApproval
        } else {
            PhaseStatus::Pending
        },
        progress: 0,
        message: if needs_approval {
            format!(
                "waiting for approval: run `vcfm approve <name> {phase}` or add {phase} to spec.approvedPhases"
            )
        } else {
            String::new()
        },
        waiting_for: if needs_approval {
            vec![format!("approval of {phase}")]
        } else {
            vec![]
        },
        requires_approval: needs_approval,
        approved: false,
        start_time: None,
        last_heartbeat: Some(Time(now)),
        paused_seconds: 0,
        paused_since: None,
    });
}

/// Marks `phase` as started. Idempotent: a phase already Running keeps its start time.
pub fn begin_phase(status: &mut MigrationStatus, phase: PhaseName, manual: bool, now: Timestamp) {
    if let Some(c) = &status.current_phase_state
        && c.name == phase
        && c.status == PhaseStatus::Running
    {
        return;
    }
    if status.start_time.is_none() {
        status.start_time = Some(Time(now));
    }
    status.phase = Some(phase.into());
    status.current_phase_state = Some(PhaseState {
        name: phase,
        status: PhaseStatus::Running,
        progress: 0,
        message: format!("{phase} started"),
        waiting_for: vec![],
        requires_approval: manual,
        approved: manual,
        start_time: Some(Time(now)),
        last_heartbeat: Some(Time(now)),
        paused_seconds: 0,
        paused_since: None,
    });
    status.phase_history.push(PhaseHistoryEntry {
        phase,
        status: PhaseStatus::Running,
        start_time: Some(Time(now)),
        completion_time: None,
        message: String::new(),
        logs: vec![],
    });
}

/// How often a phase that waits and sees nothing new still records a
/// heartbeat in status.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// Applies a phase outcome. Returns the phase to show next, if any.
pub fn apply_outcome(
    status: &mut MigrationStatus,
    phase: PhaseName,
    outcome: &Outcome,
    spec: &MigrationSpec,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (final_status, message) = match outcome {
        Outcome::Running {
            progress,
            message,
            waiting_for,
            ..
        } => {
            if let Some(c) = status.current_phase_state.as_mut() {
                // Progress never falls within a run of a phase: what a step
                // sees can slip back (a pod not Ready again, a node rebooting)
                // while the message tells the present; an administrator
                // watching the bar should not see the work undone.
                let floor = if c.name == phase && c.status == PhaseStatus::Running {
                    c.progress
                } else {
                    0
                };
                let progress = (*progress).clamp(0, 99).max(floor);
                let message = truncate(message.clone());
                // A wait that saw nothing new writes nothing (status writes
                // must not grow with how often a phase looks), except a
                // heartbeat now and then to show the controller is alive.
                let stale = c
                    .last_heartbeat
                    .as_ref()
                    .is_none_or(|t| now.duration_since(t.0).unsigned_abs() >= HEARTBEAT);
                if stale
                    || c.progress != progress
                    || c.message != message
                    || &c.waiting_for != waiting_for
                {
                    c.last_heartbeat = Some(Time(now));
                }
                c.progress = progress;
                c.message = message;
                c.waiting_for = waiting_for.clone();
            }
            return;
        }
        Outcome::Completed { message } => (PhaseStatus::Completed, message),
        Outcome::Skipped { message } => (PhaseStatus::Skipped, message),
        Outcome::Failed { message } => (PhaseStatus::Failed, message),
    };
    let message = truncate(message.clone());
    if let Some(e) = history_entry_mut(status, phase) {
        e.status = final_status;
        e.completion_time = Some(Time(now));
        e.message = message.clone();
    }
    if let Some(c) = status.current_phase_state.as_mut() {
        c.status = final_status;
        c.message = message.clone();
        c.waiting_for.clear();
        c.last_heartbeat = Some(Time(now));
        if final_status != PhaseStatus::Failed {
            c.progress = 100;
        }
    }
    match final_status {
        PhaseStatus::Failed => {
            status.phase = Some(MigrationPhase::Failed);
            // A token set before this failure is not a request to retry it.
            status.observed_retry_token = spec.retry_token.clone();
            let next_step = if phase == PhaseName::Preflight {
                "Nothing was changed. Fix the problems, then `vcfm retry` to run Preflight again."
                    .to_string()
            } else if phase.is_past_point_of_no_return() {
                "This phase is past the point of no return: no automatic rollback. Fix the cause, then `vcfm retry` to run the phase again; see `vcfm status`.".to_string()
            } else if spec.rollback_on_failure {
                "Rolling back the completed phases (rollbackOnFailure).".to_string()
            } else {
                "rollbackOnFailure is off: fix the cause and `vcfm retry` to run the phase again, or set spec.state to Rollback (`vcfm rollback`) to undo the completed phases."
                    .to_string()
            };
            conditions::set(
                &mut status.conditions,
                ConditionType::Failed,
                true,
                "PhaseFailed",
                &truncate(format!("{phase} failed: {message}. {next_step}")),
                generation,
                now,
            );
            conditions::set(
                &mut status.conditions,
                ConditionType::Progressing,
                false,
                "PhaseFailed",
                &format!("{phase} failed"),
                generation,
                now,
            );
        }
        _ => match phase.next() {
            Some(next) => {
                let manual = spec.approval_mode == ApprovalMode::Manual;
                set_waiting(
                    status,
                    next,
                    manual && !spec.approved_phases.contains(&next),
                    generation,
                    now,
                );
            }
            None => {
                status.phase = Some(MigrationPhase::Completed);
                status.completion_time = Some(Time(now));
                conditions::set(
                    &mut status.conditions,
                    ConditionType::Completed,
                    true,
                    "AllPhasesCompleted",
                    "the cluster now runs on the target vCenter",
                    generation,
                    now,
                );
                conditions::set(
                    &mut status.conditions,
                    ConditionType::Progressing,
                    false,
                    "Completed",
                    "migration completed",
                    generation,
                    now,
                );
            }
        },
    }
}

/// Records the start of the one rollback.
pub fn start_rollback(
    status: &mut MigrationStatus,
    trigger: RollbackTrigger,
    reason: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    if status.rollback.is_some() {
        return;
    }
    status.rollback = Some(RollbackStatus {
        trigger,
        reason: truncate(reason.to_string()),
        start_time: Time(now),
        rolled_back_phases: vec![],
        completion_time: None,
        current_step: None,
    });
    status.phase = Some(MigrationPhase::RollingBack);
    conditions::set(
        &mut status.conditions,
        ConditionType::Progressing,
        true,
        "RollingBack",
        reason,
        generation,
        now,
    );
}

/// Records one rollback step. A failed step is recorded and not retried: the
/// rollback goes on so that it always ends with the CVO back up.
pub fn record_rollback_step(
    status: &mut MigrationStatus,
    phase: PhaseName,
    result: Result<String, String>,
    now: Timestamp,
) {
    let Some(rb) = status.rollback.as_mut() else {
        return;
    };
    if rb.rolled_back_phases.contains(&phase) {
        return;
    }
    rb.rolled_back_phases.push(phase);
    rb.current_step = None;
    let (st, msg) = match result {
        Ok(m) => (PhaseStatus::RolledBack, m),
        Err(m) => (PhaseStatus::RollbackFailed, m),
    };
    status.phase_history.push(PhaseHistoryEntry {
        phase,
        status: st,
        start_time: Some(Time(now)),
        completion_time: Some(Time(now)),
        message: truncate(msg),
        logs: vec![],
    });
}

/// Records the end of the rollback.
pub fn finish_rollback(status: &mut MigrationStatus, generation: Option<i64>, now: Timestamp) {
    let failed: Vec<String> = status
        .phase_history
        .iter()
        .filter(|e| e.status == PhaseStatus::RollbackFailed)
        .map(|e| format!("{}: {}", e.phase, e.message))
        .collect();
    if let Some(rb) = status.rollback.as_mut() {
        rb.completion_time = Some(Time(now));
        rb.current_step = None;
    }
    clear_stalled(status, generation, now);
    status.phase = Some(MigrationPhase::RollbackCompleted);
    status.completion_time = Some(Time(now));
    status.current_phase_state = None;
    conditions::set(
        &mut status.conditions,
        ConditionType::Progressing,
        false,
        "RollbackCompleted",
        "rollback finished",
        generation,
        now,
    );
    if failed.is_empty() {
        conditions::set(
            &mut status.conditions,
            ConditionType::RolledBack,
            true,
            "RollbackSucceeded",
            "every completed phase was rolled back",
            generation,
            now,
        );
    } else {
        conditions::set(
            &mut status.conditions,
            ConditionType::RolledBack,
            false,
            "RollbackStepsFailed",
            &truncate(format!(
                "rollback finished with failed steps, which need manual repair: {}",
                failed.join("; ")
            )),
            generation,
            now,
        );
    }
}

/// Clears a failure so that the failed phase runs again from its start, and
/// records the retry token so that the request is honoured once.
/// Phases are idempotent, so a re-run finds and keeps its earlier work.
pub fn reset_for_retry(
    status: &mut MigrationStatus,
    phase: PhaseName,
    spec: &MigrationSpec,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_waiting(status, phase, false, generation, now);
    status.observed_retry_token = spec.retry_token.clone();
    if let Some(c) = status.current_phase_state.as_mut() {
        c.message = format!("retrying {phase} (spec.retryToken changed)");
    }
    conditions::set(
        &mut status.conditions,
        ConditionType::Failed,
        false,
        "Retrying",
        &format!("retry requested after {phase} failed; running it again"),
        generation,
        now,
    );
}

#[cfg(test)]
mod tests;
