//! What one reconcile writes, as one pure function: from the status as read,
//! what was decided and what the one phase step did, to the new status, the
//! Events to publish and when to look again. The reconciler reads, decides,
//! runs at most one phase step, and then writes this result once. A write that
//! meets a conflict applies the same transition to the fresh status.

use crate::conditions::{self, ConditionType};
use crate::context::StatusUpdates;
use crate::error::PhaseError;
use crate::phases::{self, RollbackOutcome};
use crate::state::{self, Decision, Outcome};
use crate::{backup, deletion};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::time::Duration;
use vcfm_api::{
    ApprovalMode, LogEntry, MigrationPhase, MigrationSpec, MigrationStatus, PhaseName, PhaseStatus,
    RollbackTrigger, VmwareCloudFoundationMigration,
};

type Vcfm = VmwareCloudFoundationMigration;

/// How soon to look again after a step that moved the migration forward.
pub const NEXT_STEP: Duration = Duration::from_millis(200);

/// How often a held deletion looks for the force-delete annotation.
pub const HOLD_RECHECK: Duration = Duration::from_secs(10);

/// How often a migration that another one blocks looks again.
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(15);

/// What a reconcile decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Another migration holds the cluster (named `namespace/name`).
    Blocked { by: String },
    /// What the state machine said.
    Decided(Decision),
}

impl Plan {
    /// The decision acted on: a held deletion goes on with what the
    /// migration would do meanwhile.
    pub fn acting(&self) -> Option<&Decision> {
        match self {
            Plan::Blocked { .. } => None,
            Plan::Decided(d) => Some(acting(d)),
        }
    }
}

fn acting(d: &Decision) -> &Decision {
    match d {
        Decision::HoldDeletion { meanwhile, .. } => acting(meanwhile),
        d => d,
    }
}

/// What the one phase step of a reconcile did.
#[derive(Debug, Default)]
pub enum Ran {
    /// No phase code ran.
    #[default]
    Nothing,
    /// One step (validate, then execute) of the phase decided on.
    Execute {
        result: Result<Outcome, PhaseError>,
        recorded: Recorded,
    },
    /// One step undoing the phase decided on.
    Rollback {
        result: Result<RollbackOutcome, PhaseError>,
        recorded: Recorded,
    },
}

/// What a phase step asked to keep besides its outcome.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub updates: StatusUpdates,
    pub logs: Vec<LogEntry>,
}

/// An Event to publish on the migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

/// When to reconcile again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// When the migration changes.
    AwaitChange,
    /// After this long.
    After(Duration),
    /// After this long, or the poll interval if that is sooner.
    Recheck(Duration),
    /// Fail the reconcile with this transient error: it is retried with the
    /// migration's backoff, and the phase deadline bounds the retries.
    Retry(String),
}

/// A phase metric to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// The phase finished (completed or skipped) this long after it started.
    Finished { phase: PhaseName, seconds: f64 },
    /// The phase failed.
    Failed(PhaseName),
}

/// Everything a reconcile does after its status write.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub events: Vec<Note>,
    pub next: Next,
    pub measure: Option<Measure>,
}

impl Default for Transition {
    fn default() -> Self {
        Self {
            events: vec![],
            next: Next::AwaitChange,
            measure: None,
        }
    }
}

/// Whether the Execute decision for `phase` runs the phase now: it is on
/// record as Running and not paused. Otherwise this reconcile records its
/// start (or its resumption) and the phase runs in the next one, so that
/// "started" is persisted before the phase touches anything.
pub fn runs_now(status: &MigrationStatus, phase: PhaseName) -> bool {
    status.current_phase_state.as_ref().is_some_and(|c| {
        c.name == phase && c.status == PhaseStatus::Running && c.paused_since.is_none()
    })
}

/// The status `m` has after `plan` and what `ran`, starting from `status`,
/// with what to publish and when to look again. `m` provides the spec, the
/// name and the deletion state; `generation` goes on the conditions set.
pub fn transition(
    m: &Vcfm,
    status: MigrationStatus,
    plan: &Plan,
    ran: &Ran,
    generation: Option<i64>,
    now: Timestamp,
) -> (MigrationStatus, Transition) {
    let mut t = Step {
        m,
        st: status,
        g: generation,
        now,
        events: vec![],
        measure: None,
    };
    let next = match plan {
        Plan::Blocked { by } => t.blocked(by),
        Plan::Decided(d) => t.decided(d, ran),
    };
    let out = Transition {
        events: t.events,
        next,
        measure: t.measure,
    };
    (t.st, out)
}

/// One transition being computed.
struct Step<'a> {
    m: &'a Vcfm,
    st: MigrationStatus,
    g: Option<i64>,
    now: Timestamp,
    events: Vec<Note>,
    measure: Option<Measure>,
}

impl Step<'_> {
    fn publish(&mut self, warning: bool, reason: &'static str, action: &'static str, msg: String) {
        self.events.push(Note {
            warning,
            reason,
            action,
            message: msg,
        });
    }

    fn spec(&self) -> &MigrationSpec {
        &self.m.spec
    }

    fn set(&mut self, t: ConditionType, on: bool, reason: &str, msg: &str) -> bool {
        conditions::set(
            &mut self.st.conditions,
            t,
            on,
            reason,
            msg,
            self.g,
            self.now,
        )
    }

    fn blocked(&mut self, by: &str) -> Next {
        let msg = format!(
            "another migration, {by}, is active in this cluster; only one may run at a time: wait for it to finish or delete it"
        );
        if self.set(ConditionType::Blocked, true, "AnotherMigrationActive", &msg) {
            self.publish(true, "Blocked", "Wait", msg);
        }
        Next::After(BLOCKED_RECHECK)
    }

    fn decided(&mut self, d: &Decision, ran: &Ran) -> Next {
        match d {
            Decision::Idle { reason } => self.idle(reason),
            Decision::AwaitApproval(phase) => self.await_approval(*phase),
            Decision::Paused { at } => self.paused(*at),
            Decision::Execute(phase) => self.execute(*phase, ran),
            Decision::TimedOut { phase, after } => self.timed_out(*phase, *after),
            Decision::RetryFailedPhase(phase) => self.retry(*phase),
            Decision::Complete => self.complete(),
            Decision::StartRollback { trigger, reason } => self.start_rollback(*trigger, reason),
            Decision::RollBack(phase) => self.rollback(*phase, None, ran),
            Decision::StalledRollBack {
                phase,
                waited,
                limit,
            } => self.rollback(*phase, Some((*waited, *limit)), ran),
            Decision::FinishRollback => self.finish_rollback(),
            Decision::RefuseRollback { reason } => self.refuse_rollback(reason),
            Decision::HoldDeletion { reason, meanwhile } => {
                self.hold_deletion(reason, meanwhile, ran)
            }
            Decision::ReleaseDeletion { reason } => self.release_deletion(reason),
        }
    }

    fn idle(&mut self, reason: &str) -> Next {
        conditions::remove(&mut self.st.conditions, ConditionType::Blocked);
        if self.st.phase.is_none() {
            self.st.phase = Some(MigrationPhase::Pending);
            self.set(ConditionType::Progressing, false, "Pending", reason);
        }
        Next::AwaitChange
    }

    fn await_approval(&mut self, phase: PhaseName) -> Next {
        let name = self.m.name_any();
        conditions::remove(&mut self.st.conditions, ConditionType::Blocked);
        conditions::remove(&mut self.st.conditions, ConditionType::Paused);
        let showing = self
            .st
            .current_phase_state
            .as_ref()
            .is_some_and(|c| c.name == phase && c.requires_approval && !c.approved);
        if !showing {
            state::set_waiting(&mut self.st, phase, true, self.g, self.now);
        }
        let msg = format!("phase {phase} waits for approval: `vcfm approve {name} {phase}`");
        let changed = self.set(
            ConditionType::WaitingForApproval,
            true,
            "ApprovalRequired",
            &msg,
        );
        self.set(
            ConditionType::Progressing,
            false,
            "WaitingForApproval",
            &msg,
        );
        // `set_waiting` already raised the condition when the wait is new, so `changed`
        // alone would miss the first wait of a Manual migration.
        if changed || !showing {
            self.publish_approval_required(phase);
        }
        Next::AwaitChange
    }

    fn publish_approval_required(&mut self, phase: PhaseName) {
        let name = self.m.name_any();
        let msg = format!(
            "phase {phase} waits for approval (Manual mode): run `vcfm approve {name} {phase}`"
        );
        self.publish(false, "ApprovalRequired", "Wait", msg);
    }

    fn paused(&mut self, at: Option<PhaseName>) -> Next {
        let msg = match at {
            Some(p) => {
                format!(
                    "paused at phase {p}; set spec.state to Running (`vcfm resume`) to continue"
                )
            }
            None => "paused before the first phase".to_string(),
        };
        // The phase's deadline stops counting from here.
        state::begin_pause(&mut self.st, self.now);
        let changed = self.set(ConditionType::Paused, true, "PausedBySpec", &msg);
        self.set(ConditionType::Progressing, false, "Paused", &msg);
        if changed {
            let at = at.map(|p| format!(" at {p}")).unwrap_or_default();
            self.publish(false, "Paused", "Pause", format!("migration paused{at}"));
        }
        Next::AwaitChange
    }

    fn execute(&mut self, phase: PhaseName, ran: &Ran) -> Next {
        let Ran::Execute { result, recorded } = ran else {
            return self.prepare(phase);
        };
        match result {
            Ok(outcome) => self.finish(phase, outcome, recorded),
            Err(PhaseError::Fatal(msg)) => {
                let failed = Outcome::Failed {
                    message: msg.clone(),
                };
                self.finish(phase, &failed, recorded)
            }
            Err(PhaseError::Transient(msg)) => {
                apply_updates(&mut self.st, &recorded.updates);
                state::append_logs(&mut self.st, phase, recorded.logs.clone());
                if let Some(c) = self.st.current_phase_state.as_mut() {
                    c.message = format!("retrying after a transient error: {msg}");
                    c.last_heartbeat = Some(Time(self.now));
                }
                Next::Retry(format!("{phase}: {msg}"))
            }
        }
    }

    /// Records that `phase` starts, or resumes after a pause, before it runs
    /// (in the next reconcile).
    fn prepare(&mut self, phase: PhaseName) -> Next {
        let current = self.st.current_phase_state.as_ref();
        let running = current.is_some_and(|c| c.name == phase && c.status == PhaseStatus::Running);
        if !running {
            let manual = self.spec().approval_mode == ApprovalMode::Manual;
            begin(&mut self.st, phase, manual, self.g, self.now);
            self.publish_started(phase);
        } else if state::end_pause(&mut self.st, self.now) {
            // Its deadline resumes with the active time it had left.
            conditions::remove(&mut self.st.conditions, ConditionType::Paused);
            let msg = format!("running {phase} (resumed)");
            self.set(ConditionType::Progressing, true, "PhaseRunning", &msg);
        }
        Next::After(Duration::ZERO)
    }

    fn timed_out(&mut self, phase: PhaseName, after: Duration) -> Next {
        let last = self
            .st
            .current_phase_state
            .as_ref()
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let outcome = Outcome::Failed {
            message: format!(
                "did not finish within its deadline of {}s of active time, pauses excluded (spec.phaseTimeouts.{phase} to change it); last state: {last}",
                after.as_secs()
            ),
        };
        self.finish(phase, &outcome, &Recorded::default())
    }

    fn retry(&mut self, phase: PhaseName) -> Next {
        state::reset_for_retry(&mut self.st, phase, &self.m.spec, self.g, self.now);
        let msg =
            format!("retry requested (spec.retryToken) after {phase} failed: running it again");
        self.publish(false, "PhaseRetry", phase.as_str(), msg);
        Next::After(NEXT_STEP)
    }

    fn complete(&mut self) -> Next {
        self.st.phase = Some(MigrationPhase::Completed);
        self.st.completion_time.get_or_insert(Time(self.now));
        self.set(
            ConditionType::Completed,
            true,
            "AllPhasesCompleted",
            "the cluster now runs on the target vCenter",
        );
        Next::After(NEXT_STEP)
    }

    /// The Event of a phase that starts on its own (the first one, after an
    /// approval or a retry); a phase started by its predecessor's end is
    /// named in that phase's `PhaseCompleted`/`PhaseSkipped` Event instead.
    fn publish_started(&mut self, phase: PhaseName) {
        let msg = format!("phase {} ({phase}) started", phase.number());
        self.publish(false, "PhaseStarted", phase.as_str(), msg);
    }

    /// Records a phase's outcome, and starts the next phase when nothing holds it.
    fn finish(&mut self, phase: PhaseName, outcome: &Outcome, recorded: &Recorded) -> Next {
        let now = self.now;
        let started = self
            .st
            .current_phase_state
            .as_ref()
            .and_then(|c| c.start_time.as_ref())
            .map(|t| now.duration_since(t.0).as_secs_f64())
            .unwrap_or(0.0);
        let spec = &self.m.spec;
        let before = matches!(outcome, Outcome::Running { .. }).then(|| self.st.clone());
        apply_updates(&mut self.st, &recorded.updates);
        state::append_logs(&mut self.st, phase, recorded.logs.clone());
        state::apply_outcome(&mut self.st, phase, outcome, spec, self.g, now);
        if let Some(before) = before {
            defer_detail(&mut self.st, before, now);
        }
        let deleting = self.m.metadata.deletion_timestamp.is_some();
        let begun = if deleting {
            None
        } else {
            begin_next(&mut self.st, spec, self.g, now)
        };
        match outcome {
            Outcome::Running { recheck, .. } => Next::Recheck(*recheck),
            Outcome::Completed { message } | Outcome::Skipped { message } => {
                self.measure = Some(Measure::Finished {
                    phase,
                    seconds: started.max(0.0),
                });
                let reason = if matches!(outcome, Outcome::Skipped { .. }) {
                    "PhaseSkipped"
                } else {
                    "PhaseCompleted"
                };
                // One Event per transition: the phase that starts in the same
                // status write is named here rather than in an Event of its own.
                let mut msg = format!("phase {} ({phase}): {message}", phase.number());
                if let Some(next) = begun {
                    msg.push_str(&format!("; phase {} ({next}) started", next.number()));
                }
                self.publish(false, reason, phase.as_str(), msg);
                let waiting = self
                    .st
                    .current_phase_state
                    .as_ref()
                    .filter(|c| c.status == PhaseStatus::WaitingForApproval)
                    .map(|c| c.name);
                if let Some(n) = waiting {
                    self.publish_approval_required(n);
                }
                if self.st.phase == Some(MigrationPhase::Completed) {
                    // Next: the finalizer goes.
                    let msg = "all phases completed".to_string();
                    self.publish(false, "MigrationCompleted", "Complete", msg);
                }
                Next::After(NEXT_STEP)
            }
            Outcome::Failed { message } => {
                self.measure = Some(Measure::Failed(phase));
                let msg = format!("phase {} ({phase}) failed: {message}", phase.number());
                self.publish(true, "PhaseFailed", phase.as_str(), msg);
                Next::After(NEXT_STEP)
            }
        }
    }

    fn start_rollback(&mut self, trigger: RollbackTrigger, reason: &str) -> Next {
        state::start_rollback(&mut self.st, trigger, reason, self.g, self.now);
        let msg = format!("rolling back: {reason}");
        self.publish(true, "RollbackStarted", "Rollback", msg);
        Next::After(NEXT_STEP)
    }

    fn finish_rollback(&mut self) -> Next {
        state::finish_rollback(&mut self.st, self.g, self.now);
        let rb = conditions::find(&self.st.conditions, ConditionType::RolledBack);
        let ok = rb.is_some_and(|c| c.status == "True");
        let msg = rb.map(|c| c.message.clone()).unwrap_or_default();
        self.publish(!ok, "RollbackCompleted", "Rollback", msg);
        // Next: let go of the finalizer (and of a deleted migration).
        Next::After(NEXT_STEP)
    }

    fn refuse_rollback(&mut self, reason: &str) -> Next {
        let t = ConditionType::RollbackRefused;
        if self.set(t, true, "PointOfNoReturn", reason) {
            self.publish(true, "RollbackRefused", "Rollback", reason.to_string());
        }
        Next::AwaitChange
    }

    /// Records one step undoing `phase`. Every path records the step's start
    /// (`begin_rollback_step` keeps an earlier one), so the step's deadline
    /// counts from its first attempt; `stalled` is set when it is past it.
    fn rollback(
        &mut self,
        phase: PhaseName,
        stalled: Option<(Duration, Duration)>,
        ran: &Ran,
    ) -> Next {
        state::begin_rollback_step(&mut self.st, phase, self.now);
        let Ran::Rollback { result, recorded } = ran else {
            return Next::After(NEXT_STEP);
        };
        let conflict = matches!(result, Ok(RollbackOutcome::Conflict(_)));
        let step = match result {
            Ok(RollbackOutcome::Done(msg) | RollbackOutcome::Conflict(msg)) => Ok(msg.clone()),
            Ok(RollbackOutcome::InProgress { message, recheck }) => {
                self.show_stalled(phase, stalled, message);
                apply_updates(&mut self.st, &recorded.updates);
                state::append_logs(&mut self.st, phase, recorded.logs.clone());
                let msg = format!("rolling back {phase}: {message}");
                self.set(ConditionType::Progressing, true, "RollingBack", &msg);
                return Next::Recheck(*recheck);
            }
            Err(PhaseError::Transient(msg)) => {
                // What the step did before the error stays on record, as a forward step's does.
                apply_updates(&mut self.st, &recorded.updates);
                state::append_logs(&mut self.st, phase, recorded.logs.clone());
                self.show_stalled(phase, stalled, &format!("an error to clear: {msg}"));
                return Next::Retry(format!("rolling back {phase}: {msg}"));
            }
            Err(PhaseError::Fatal(msg)) => Err(msg.clone()),
        };
        let ok = step.is_ok();
        let note = match &step {
            Ok(m) => format!("rolled back {phase}: {m}"),
            Err(m) => {
                format!("rollback of {phase} failed: {m}; continuing with the remaining steps")
            }
        };
        apply_updates(&mut self.st, &recorded.updates);
        state::record_rollback_step(&mut self.st, phase, step, self.now);
        state::clear_stalled(&mut self.st, self.g, self.now);
        state::append_logs(&mut self.st, phase, recorded.logs.clone());
        let reason = if conflict {
            "RollbackConflict"
        } else if ok {
            "PhaseRolledBack"
        } else {
            "RollbackStepFailed"
        };
        self.publish(!ok || conflict, reason, "Rollback", note);
        Next::After(NEXT_STEP)
    }

    /// Shows `Stalled` when the rollback step is late (an Event when it turns True).
    fn show_stalled(
        &mut self,
        phase: PhaseName,
        stalled: Option<(Duration, Duration)>,
        waiting_for: &str,
    ) {
        let Some((waited, limit)) = stalled else {
            return;
        };
        let (g, now) = (self.g, self.now);
        if state::set_stalled(&mut self.st, phase, waited, limit, waiting_for, g, now) {
            let msg = conditions::find(&self.st.conditions, ConditionType::Stalled)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            self.publish(true, "RollbackStalled", "Rollback", msg);
        }
    }

    /// Shows why a deletion is held and how to force it (an Event once),
    /// and goes on with what the migration does meanwhile.
    fn hold_deletion(&mut self, reason: &str, meanwhile: &Decision, ran: &Ran) -> Next {
        let msg = format!(
            "{reason}. To delete it now, leaving the cluster as it is (the backup Secret {} stays for manual recovery): `{}`",
            backup::secret_name(&self.m.name_any()),
            deletion::force_command(self.m)
        );
        if self.set(
            ConditionType::DeletionBlocked,
            true,
            "PointOfNoReturn",
            &msg,
        ) {
            self.publish(true, "DeletionBlocked", "Delete", msg);
        }
        let next = self.decided(meanwhile, ran);
        // Where the migration would wait for a spec change, it looks again
        // for the force annotation instead (annotations do not change the
        // generation the watch filters on).
        let waits_for_change = matches!(
            meanwhile,
            Decision::Idle { .. }
                | Decision::AwaitApproval(_)
                | Decision::Paused { .. }
                | Decision::RefuseRollback { .. }
        );
        if waits_for_change {
            Next::After(HOLD_RECHECK)
        } else {
            next
        }
    }

    /// Says how the migration ended; the reconciler lets go of the finalizer
    /// after publishing.
    fn release_deletion(&mut self, reason: &str) -> Next {
        let forced = outcome_of(self.m, &self.st) == backup::OUTCOME_FORCE_DELETED;
        let msg = format!("migration released for deletion: {reason}");
        self.publish(forced, "DeletionReleased", "Delete", msg);
        Next::AwaitChange
    }
}

/// Keeps what a phase step asked to record.
fn apply_updates(st: &mut MigrationStatus, u: &StatusUpdates) {
    if let Some(s) = &u.source_vcenter {
        st.source_vcenter = Some(s.clone());
    }
    if let Some(c) = &u.cluster {
        st.cluster = Some(c.clone());
    }
    if let Some(w) = &u.warnings {
        st.warnings = w.clone();
    }
    for b in &u.backups {
        // The same content saved again (a step repeated) keeps its entry and
        // time: a newer backupTime alone is not worth a status write.
        let same = |x: &vcfm_api::BackupManifest| {
            x.key == b.key && x.hmac_sha256 == b.hmac_sha256 && x.secret_name == b.secret_name
        };
        if st.backup_manifests.iter().any(same) {
            continue;
        }
        st.backup_manifests.retain(|x| x.key != b.key);
        st.backup_manifests.push(b.clone());
    }
    for c in &u.created {
        if !st
            .created_vsphere_objects
            .iter()
            .any(|x| x.server == c.server && x.kind == c.kind && x.id == c.id)
        {
            st.created_vsphere_objects.push(c.clone());
        }
    }
}

/// How long a waiting phase's detail (its message and what it waits for, at
/// the same progress) may go unwritten: a wait that sees machines or pods move
/// through their states would otherwise write status on every step.
pub const DETAIL_REFRESH: Duration = Duration::from_secs(10);

/// Puts back the status as it was before a wait step whose only news is
/// detail (message, waitingFor and the heartbeat that marks them), when the
/// last write is younger than [`DETAIL_REFRESH`]: no write then, and the next
/// step after that shows the detail of its time. Progress, logs, records
/// (backups, created objects) and every other field are written at once.
fn defer_detail(st: &mut MigrationStatus, before: MigrationStatus, now: Timestamp) {
    let (Some(b), Some(a)) = (&before.current_phase_state, &st.current_phase_state) else {
        return;
    };
    let recent = b
        .last_heartbeat
        .as_ref()
        .is_some_and(|t| now.duration_since(t.0).unsigned_abs() < DETAIL_REFRESH);
    if !recent || a.name != b.name || a.status != b.status || a.progress != b.progress {
        return;
    }
    // Whether the step changed nothing but the detail: put the previous
    // detail back in place (not on a copy: this runs on every step of a
    // waiting phase) and keep it if the rest is as before.
    let previous = (
        b.message.clone(),
        b.waiting_for.clone(),
        b.last_heartbeat.clone(),
    );
    let Some(c) = st.current_phase_state.as_mut() else {
        return;
    };
    let (message, waiting_for, heartbeat) = previous;
    let new = (
        std::mem::replace(&mut c.message, message),
        std::mem::replace(&mut c.waiting_for, waiting_for),
        std::mem::replace(&mut c.last_heartbeat, heartbeat),
    );
    if *st != before
        && let Some(c) = st.current_phase_state.as_mut()
    {
        (c.message, c.waiting_for, c.last_heartbeat) = new;
    }
}

/// Marks `phase` started (Running, its clock ticking) and Progressing.
fn begin(st: &mut MigrationStatus, phase: PhaseName, manual: bool, g: Option<i64>, now: Timestamp) {
    state::begin_phase(st, phase, manual, now);
    conditions::remove(&mut st.conditions, ConditionType::WaitingForApproval);
    conditions::remove(&mut st.conditions, ConditionType::Paused);
    conditions::remove(&mut st.conditions, ConditionType::Blocked);
    conditions::set(
        &mut st.conditions,
        ConditionType::Progressing,
        true,
        "PhaseRunning",
        &format!("running {phase}"),
        g,
        now,
    );
}

/// After a phase's outcome, starts the next phase in the same status write
/// when the state machine would run it now (nothing holds it: approval,
/// pause, failure, the end). "Started" is then on record before the next
/// reconcile touches anything, as a separate write would have put it, and a
/// phase costs one status write instead of two. Returns the phase started.
pub fn begin_next(
    st: &mut MigrationStatus,
    spec: &MigrationSpec,
    g: Option<i64>,
    now: Timestamp,
) -> Option<PhaseName> {
    let Decision::Execute(next) = state::decide(spec, st, now, |p| phases::timeout_for(spec, p))
    else {
        return None;
    };
    let running = st
        .current_phase_state
        .as_ref()
        .is_some_and(|c| c.name == next && c.status == PhaseStatus::Running);
    if running {
        return None;
    }
    begin(st, next, spec.approval_mode == ApprovalMode::Manual, g, now);
    Some(next)
}

/// How a migration ended, as recorded on its backup Secret.
pub fn outcome_of(m: &Vcfm, status: &MigrationStatus) -> &'static str {
    if status.phase == Some(MigrationPhase::Completed) {
        backup::OUTCOME_COMPLETED
    } else if status
        .rollback
        .as_ref()
        .is_some_and(|rb| rb.completion_time.is_some())
        && conditions::is_true(&status.conditions, ConditionType::RolledBack)
    {
        backup::OUTCOME_ROLLED_BACK
    } else if deletion::force_requested(m) {
        backup::OUTCOME_FORCE_DELETED
    } else {
        backup::OUTCOME_ROLLBACK_INCOMPLETE
    }
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
