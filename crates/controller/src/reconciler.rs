//! The reconcile function: read the migration, ask the state machine what to
//! do, do one step of it, persist the result, and requeue. It never sleeps
//! waiting for the cluster: waiting is a requeue or a watch event.

use crate::conditions::{self, ConditionType};
use crate::context::{PhaseCtx, Shared, StatusUpdates};
use crate::deletion;
use crate::error::{Backoff, Error, PhaseError};
use crate::events::Events;
use crate::phases::{self, RollbackOutcome};
use crate::state::{self, Decision, Outcome};
use crate::status;
use futures::FutureExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use vcfm_api::{ApprovalMode, MigrationStatus, PhaseName, VmwareCloudFoundationMigration};

/// Everything a reconcile needs.
pub struct Context {
    pub shared: Arc<Shared>,
    pub events: Events,
    /// Retry delays of migrations whose reconciles fail, reset on success.
    pub backoff: Backoff,
    /// The watch cache of every migration (the controller's reflector):
    /// reconciles read their migration from it, and the
    /// one-migration-at-a-time check reads the others, instead of the API.
    pub migrations: Store<Vcfm>,
    /// The watch caches the phases read (see [`crate::cache`]).
    pub caches: crate::cache::Caches,
    /// Our writes the migrations' cache has not caught up with yet.
    pub written: crate::written::Written,
}

fn key(obj: &Vcfm) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

type Vcfm = VmwareCloudFoundationMigration;

/// How soon to look again after a step that moved the migration forward.
const NEXT_STEP: Duration = Duration::from_millis(200);

/// How often a held deletion looks for the force-delete annotation.
const HOLD_RECHECK: Duration = Duration::from_secs(10);

pub async fn reconcile(obj: Arc<Vcfm>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Every line logged while reconciling (phases, vSphere calls) carries the
    // migration it is for; `phase` spans below add the phase.
    let span = tracing::info_span!("reconcile", migration = %key(&obj));
    let result = read_and_step(obj.clone(), &ctx).instrument(span).await;
    // Counted here only (not again in error_policy), with what went wrong.
    match &result {
        Ok(_) => {
            ctx.shared.metrics.reconciled(None);
            ctx.backoff.succeeded(&key(&obj));
        }
        Err(e) => ctx.shared.metrics.reconciled(Some(e.class())),
    }
    result
}

async fn read_and_step(obj: Arc<Vcfm>, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Vcfm> = Api::namespaced(ctx.shared.client.clone(), &ns);
    // No GET: the watch cache's object, or the one our last write returned
    // while the cache lags it. Every write carries the resourceVersion of the
    // object it was computed on, so a newer version we have not seen yet is
    // a conflict and a fresh read, never a lost update.
    let m = ctx.written.latest(obj);
    step(&api, &m, ctx).await
}

/// Writes a status change computed on `base` (see [`status::update`]) and
/// remembers the result, which the next reconcile starts from.
async fn write(
    api: &Api<Vcfm>,
    ctx: &Context,
    base: &Vcfm,
    change: impl FnMut(&mut MigrationStatus, Option<i64>),
) -> Result<Vcfm, Error> {
    let done = status::update(api, base, change).await?;
    if done.metadata.resource_version != base.metadata.resource_version {
        ctx.written.record(done.clone());
    }
    Ok(done)
}

async fn step(api: &Api<Vcfm>, m: &Vcfm, ctx: &Context) -> Result<Action, Error> {
    let name = m.name_any();
    let now = Timestamp::now();
    let status = m.status.clone().unwrap_or_default();
    let deleting = m.metadata.deletion_timestamp.is_some();
    if deleting && !deletion::has_finalizer(m) {
        // Not ours to hold (it never changed the cluster, or was released).
        return Ok(Action::await_change());
    }

    // A finished migration has nothing left to undo: it no longer needs the
    // finalizer (so deleting it, or uninstalling vcfm, never waits for the
    // controller).
    if !deleting
        && deletion::has_finalizer(m)
        && matches!(
            status.phase,
            Some(vcfm_api::MigrationPhase::Completed | vcfm_api::MigrationPhase::RollbackCompleted)
        )
    {
        crate::backup::mark_outcome(ctx.shared.client.clone(), m, outcome_of(m, &status)).await?;
        deletion::remove_finalizer(api, m).await?;
        return Ok(Action::requeue(NEXT_STEP));
    }

    // Until the cache has seen the first full list it cannot tell whether an
    // older migration exists: look again shortly.
    if ctx.migrations.wait_until_ready().now_or_never().is_none() {
        return Ok(Action::requeue(NEXT_STEP));
    }
    // A deletion is handled whatever other migrations do.
    if !deleting && let Some(other) = competing_migration(&ctx.migrations.state(), m) {
        let msg = format!(
            "another migration, {other}, is active in this cluster; only one may run at a time: wait for it to finish or delete it"
        );
        let mut changed = false;
        write(api, ctx, m, |st, g| {
            changed = conditions::set(
                &mut st.conditions,
                ConditionType::Blocked,
                true,
                "AnotherMigrationActive",
                &msg,
                g,
                now,
            );
        })
        .await?;
        if changed {
            ctx.events.publish(m, true, "Blocked", "Wait", msg).await;
        }
        return Ok(Action::requeue(Duration::from_secs(15)));
    }

    let timeout_for = |p| phases::timeout_for(&m.spec, p);
    let decision = if deleting {
        state::decide_deletion(
            &m.spec,
            &status,
            deletion::force_requested(m),
            now,
            timeout_for,
        )
    } else {
        state::decide(&m.spec, &status, now, timeout_for)
    };
    tracing::debug!(migration = %name, ?decision, "decided");
    // A held deletion shows why and how to force it, and the migration goes
    // on; where it would wait for a spec change, it looks again for the
    // force annotation instead (annotations do not change the generation the
    // watch filters on).
    let (decision, held, m) = match decision {
        Decision::HoldDeletion { reason, meanwhile } => {
            let m = hold_deletion(api, m, ctx, &reason, now).await?;
            (*meanwhile, true, m)
        }
        d => (d, false, m.clone()),
    };
    let m = &m;
    let waits_for_change = matches!(
        decision,
        Decision::Idle { .. }
            | Decision::AwaitApproval(_)
            | Decision::Paused { .. }
            | Decision::RefuseRollback { .. }
    );
    let result = step_decision(api, m, ctx, decision, &status, now).await;
    if held && waits_for_change {
        return result.map(|_| Action::requeue(HOLD_RECHECK));
    }
    result
}

/// Carries out one decision.
async fn step_decision(
    api: &Api<Vcfm>,
    m: &Vcfm,
    ctx: &Context,
    decision: Decision,
    status: &MigrationStatus,
    now: Timestamp,
) -> Result<Action, Error> {
    let name = m.name_any();
    match decision {
        Decision::Idle { reason } => {
            write(api, ctx, m, |st, g| {
                conditions::remove(&mut st.conditions, ConditionType::Blocked);
                if st.phase.is_none() {
                    st.phase = Some(vcfm_api::MigrationPhase::Pending);
                    conditions::set(
                        &mut st.conditions,
                        ConditionType::Progressing,
                        false,
                        "Pending",
                        &reason,
                        g,
                        now,
                    );
                }
            })
            .await?;
            Ok(Action::await_change())
        }
        Decision::AwaitApproval(phase) => {
            let mut changed = false;
            write(api, ctx, m, |st, g| {
                conditions::remove(&mut st.conditions, ConditionType::Blocked);
                conditions::remove(&mut st.conditions, ConditionType::Paused);
                let showing = st
                    .current_phase_state
                    .as_ref()
                    .is_some_and(|c| c.name == phase && c.requires_approval && !c.approved);
                if !showing {
                    state::set_waiting(st, phase, true, g, now);
                }
                let msg =
                    format!("phase {phase} waits for approval: `vcfm approve {name} {phase}`");
                changed = conditions::set(
                    &mut st.conditions,
                    ConditionType::WaitingForApproval,
                    true,
                    "ApprovalRequired",
                    &msg,
                    g,
                    now,
                );
                conditions::set(
                    &mut st.conditions,
                    ConditionType::Progressing,
                    false,
                    "WaitingForApproval",
                    &msg,
                    g,
                    now,
                );
            })
            .await?;
            if changed {
                ctx.events.publish(m, false, "ApprovalRequired", "Wait", format!("phase {phase} waits for approval (Manual mode): run `vcfm approve {name} {phase}`")).await;
            }
            Ok(Action::await_change())
        }
        Decision::Paused { at } => {
            let mut changed = false;
            write(api, ctx, m, |st, g| {
                let msg = match at {
                    Some(p) => format!(
                        "paused at phase {p}; set spec.state to Running (`vcfm resume`) to continue"
                    ),
                    None => "paused before the first phase".to_string(),
                };
                // The phase's deadline stops counting from here.
                state::begin_pause(st, now);
                changed = conditions::set(
                    &mut st.conditions,
                    ConditionType::Paused,
                    true,
                    "PausedBySpec",
                    &msg,
                    g,
                    now,
                );
                conditions::set(
                    &mut st.conditions,
                    ConditionType::Progressing,
                    false,
                    "Paused",
                    &msg,
                    g,
                    now,
                );
            })
            .await?;
            if changed {
                ctx.events
                    .publish(
                        m,
                        false,
                        "Paused",
                        "Pause",
                        format!(
                            "migration paused{}",
                            at.map(|p| format!(" at {p}")).unwrap_or_default()
                        ),
                    )
                    .await;
            }
            Ok(Action::await_change())
        }
        Decision::Execute(phase) => {
            execute(api, m, ctx, phase, now)
                .instrument(tracing::info_span!("phase", phase = ?phase))
                .await
        }
        Decision::TimedOut { phase, after } => {
            let last = status
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
            finish_step(api, m, ctx, phase, outcome, Default::default(), vec![], now).await
        }
        Decision::StartRollback { trigger, reason } => {
            write(api, ctx, m, |st, g| {
                state::start_rollback(st, trigger, &reason, g, now)
            })
            .await?;
            ctx.events
                .publish(
                    m,
                    true,
                    "RollbackStarted",
                    "Rollback",
                    format!("rolling back: {reason}"),
                )
                .await;
            Ok(Action::requeue(NEXT_STEP))
        }
        Decision::RollBack(phase) => {
            rollback(api, m, ctx, phase, None, now)
                .instrument(tracing::info_span!("rollback", phase = ?phase))
                .await
        }
        Decision::StalledRollBack {
            phase,
            waited,
            limit,
        } => {
            rollback(api, m, ctx, phase, Some((waited, limit)), now)
                .instrument(tracing::info_span!("rollback", phase = ?phase))
                .await
        }
        Decision::ReleaseDeletion { reason } => release(m, ctx, api, &reason, status).await,
        // Unwrapped by `step`; `decide` never nests one.
        Decision::HoldDeletion { .. } => Ok(Action::requeue(HOLD_RECHECK)),
        Decision::FinishRollback => {
            let done = write(api, ctx, m, |st, g| state::finish_rollback(st, g, now)).await?;
            let rb = done
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, ConditionType::RolledBack).cloned());
            let ok = rb.as_ref().is_some_and(|c| c.status == "True");
            ctx.events
                .publish(
                    m,
                    !ok,
                    "RollbackCompleted",
                    "Rollback",
                    rb.map(|c| c.message).unwrap_or_default(),
                )
                .await;
            // Next: let go of the finalizer (and of a deleted migration).
            Ok(Action::requeue(NEXT_STEP))
        }
        Decision::RefuseRollback { reason } => {
            let mut changed = false;
            write(api, ctx, m, |st, g| {
                changed = conditions::set(
                    &mut st.conditions,
                    ConditionType::RollbackRefused,
                    true,
                    "PointOfNoReturn",
                    &reason,
                    g,
                    now,
                );
            })
            .await?;
            if changed {
                ctx.events
                    .publish(m, true, "RollbackRefused", "Rollback", reason)
                    .await;
            }
            Ok(Action::await_change())
        }
        Decision::Complete => {
            write(api, ctx, m, |st, g| {
                st.phase = Some(vcfm_api::MigrationPhase::Completed);
                st.completion_time
                    .get_or_insert(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                conditions::set(
                    &mut st.conditions,
                    ConditionType::Completed,
                    true,
                    "AllPhasesCompleted",
                    "the cluster now runs on the target vCenter",
                    g,
                    now,
                );
            })
            .await?;
            Ok(Action::requeue(NEXT_STEP))
        }
        Decision::RetryFailedPhase(phase) => {
            write(api, ctx, m, |st, g| {
                state::reset_for_retry(st, phase, &m.spec, g, now)
            })
            .await?;
            let note =
                format!("retry requested (spec.retryToken) after {phase} failed: running it again");
            ctx.events
                .publish(m, false, "PhaseRetry", phase.as_str(), note)
                .await;
            Ok(Action::requeue(NEXT_STEP))
        }
    }
}

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

async fn execute(
    api: &Api<Vcfm>,
    m: &Vcfm,
    ctx: &Context,
    phase: PhaseName,
    now: Timestamp,
) -> Result<Action, Error> {
    let imp = phases::phase(phase);
    // From Backup on, the cluster changes: a deletion must roll back first.
    let with_finalizer = if phase != PhaseName::Preflight {
        deletion::ensure_finalizer(api, m).await?
    } else {
        None
    };
    let with_finalizer = with_finalizer.map(|w| ctx.written.record(w));
    let m: &Vcfm = with_finalizer.as_deref().unwrap_or(m);

    // Persist "started" before touching anything, so a crash mid-phase leaves
    // a record that rollback will see.
    let running = m
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .is_some_and(|c| c.name == phase && c.status == vcfm_api::PhaseStatus::Running);
    let paused_clock = m
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .is_some_and(|c| c.paused_since.is_some());
    let m = if running && paused_clock {
        // Resumed: close the pause before the phase runs again, so its
        // deadline resumes with the active time it had left.
        write(api, ctx, m, |st, g| {
            if state::end_pause(st, now) {
                conditions::remove(&mut st.conditions, ConditionType::Paused);
                conditions::set(
                    &mut st.conditions,
                    ConditionType::Progressing,
                    true,
                    "PhaseRunning",
                    &format!("running {phase} (resumed)"),
                    g,
                    now,
                );
            }
        })
        .await?;
        // One status write per reconcile: the phase runs in the next one.
        return Ok(Action::requeue(Duration::ZERO));
    } else if running {
        Arc::new(m.clone())
    } else {
        let manual = m.spec.approval_mode == ApprovalMode::Manual;
        let fresh = write(api, ctx, m, |st, g| begin(st, phase, manual, g, now)).await?;
        publish_started(ctx, &fresh, phase).await;
        // One status write per reconcile: "started" is on record before the
        // phase touches anything, and the phase runs in the next reconcile.
        return Ok(Action::requeue(Duration::ZERO));
    };

    let pctx = PhaseCtx::new(ctx.shared.clone(), m.clone(), now).with_caches(ctx.caches.clone());
    let result = match imp.validate(&pctx).await {
        Ok(()) => imp.execute(&pctx).await,
        Err(e) => Err(e),
    };
    let (logs, updates) = pctx.take();
    match result {
        Ok(outcome) => finish_step(api, &m, ctx, phase, outcome, updates, logs, now).await,
        Err(PhaseError::Fatal(msg)) => {
            finish_step(
                api,
                &m,
                ctx,
                phase,
                Outcome::Failed { message: msg },
                updates,
                logs,
                now,
            )
            .await
        }
        Err(PhaseError::Transient(msg)) => {
            write(api, ctx, &m, |st, _| {
                apply_updates(st, &updates);
                state::append_logs(st, phase, logs.clone());
                if let Some(c) = st.current_phase_state.as_mut() {
                    c.message = format!("retrying after a transient error: {msg}");
                    c.last_heartbeat =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                }
            })
            .await?;
            // A failed reconcile: error_policy retries it with this
            // migration's backoff; the phase deadline bounds the retries
            // and its TimedOut message quotes this last error.
            Err(PhaseError::Transient(format!("{phase}: {msg}")).into())
        }
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
    spec: &vcfm_api::MigrationSpec,
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
        .is_some_and(|c| c.name == next && c.status == vcfm_api::PhaseStatus::Running);
    if running {
        return None;
    }
    begin(st, next, spec.approval_mode == ApprovalMode::Manual, g, now);
    Some(next)
}

async fn publish_started(ctx: &Context, m: &Vcfm, phase: PhaseName) {
    ctx.events
        .publish(
            m,
            false,
            "PhaseStarted",
            phase.as_str(),
            format!("phase {} ({phase}) started", phase.number()),
        )
        .await;
}

#[allow(clippy::too_many_arguments)]
async fn finish_step(
    api: &Api<Vcfm>,
    m: &Vcfm,
    ctx: &Context,
    phase: PhaseName,
    outcome: Outcome,
    updates: StatusUpdates,
    logs: Vec<vcfm_api::LogEntry>,
    now: Timestamp,
) -> Result<Action, Error> {
    let name = m.name_any();
    let spec = m.spec.clone();
    let deleting = m.metadata.deletion_timestamp.is_some();
    let mut begun = None;
    let done = write(api, ctx, m, |st, g| {
        apply_updates(st, &updates);
        state::append_logs(st, phase, logs.clone());
        state::apply_outcome(st, phase, &outcome, &spec, g, now);
        begun = if deleting {
            None
        } else {
            begin_next(st, &spec, g, now)
        };
    })
    .await?;
    let started = m
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .and_then(|c| c.start_time.as_ref())
        .map(|t| now.duration_since(t.0).as_secs_f64())
        .unwrap_or(0.0);
    let label = crate::metrics::PhaseLabel {
        phase: phase.as_str().into(),
    };
    match &outcome {
        Outcome::Running { recheck, .. } => Ok(Action::requeue(
            (*recheck).min(ctx.shared.config.poll_interval),
        )),
        Outcome::Completed { message } | Outcome::Skipped { message } => {
            ctx.shared
                .metrics
                .phase_duration
                .get_or_create(&label)
                .observe(started.max(0.0));
            let reason = if matches!(outcome, Outcome::Skipped { .. }) {
                "PhaseSkipped"
            } else {
                "PhaseCompleted"
            };
            ctx.events
                .publish(
                    &done,
                    false,
                    reason,
                    phase.as_str(),
                    format!("phase {} ({phase}): {message}", phase.number()),
                )
                .await;
            if let Some(next) = begun {
                publish_started(ctx, &done, next).await;
            }
            let waiting = done
                .status
                .as_ref()
                .and_then(|s| s.current_phase_state.as_ref())
                .filter(|c| c.status == vcfm_api::PhaseStatus::WaitingForApproval)
                .map(|c| c.name);
            if let Some(n) = waiting {
                let note = format!(
                    "phase {n} waits for approval (Manual mode): run `vcfm approve {name} {n}`"
                );
                ctx.events
                    .publish(&done, false, "ApprovalRequired", "Wait", note)
                    .await;
            }
            if done.status.as_ref().and_then(|s| s.phase)
                == Some(vcfm_api::MigrationPhase::Completed)
            {
                ctx.events
                    .publish(
                        &done,
                        false,
                        "MigrationCompleted",
                        "Complete",
                        "all phases completed".into(),
                    )
                    .await;
                // Next: the finalizer goes.
                return Ok(Action::requeue(NEXT_STEP));
            }
            Ok(Action::requeue(NEXT_STEP))
        }
        Outcome::Failed { message } => {
            ctx.shared
                .metrics
                .phase_failures
                .get_or_create(&label)
                .inc();
            ctx.events
                .publish(
                    &done,
                    true,
                    "PhaseFailed",
                    phase.as_str(),
                    format!("phase {} ({phase}) failed: {message}", phase.number()),
                )
                .await;
            Ok(Action::requeue(NEXT_STEP))
        }
    }
}

/// Records the start of a rollback step that failed transiently, and shows
/// `Stalled` when it is late (once per stall: an Event when it turns True).
async fn show_stalled(
    api: &Api<Vcfm>,
    m: &Vcfm,
    ctx: &Context,
    phase: PhaseName,
    stalled: Option<(Duration, Duration)>,
    waiting_for: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let mut changed = false;
    let mut msg = String::new();
    write(api, ctx, m, |st, g| {
        state::begin_rollback_step(st, phase, now);
        let Some((waited, limit)) = stalled else {
            return;
        };
        changed = state::set_stalled(st, phase, waited, limit, waiting_for, g, now);
        msg = conditions::find(&st.conditions, ConditionType::Stalled)
            .map(|c| c.message.clone())
            .unwrap_or_default();
    })
    .await?;
    if changed {
        ctx.events
            .publish(m, true, "RollbackStalled", "Rollback", msg)
            .await;
    }
    Ok(())
}

async fn rollback(
    api: &Api<Vcfm>,
    m: &Vcfm,
    ctx: &Context,
    phase: PhaseName,
    stalled: Option<(Duration, Duration)>,
    now: Timestamp,
) -> Result<Action, Error> {
    // The step's deadline counts from its first attempt: every write below
    // records that start (`begin_rollback_step` keeps an earlier one), so
    // each rollback reconcile writes status once.
    let pctx =
        PhaseCtx::new(ctx.shared.clone(), Arc::new(m.clone()), now).with_caches(ctx.caches.clone());
    let result = phases::phase(phase).rollback(&pctx).await;
    let (logs, updates) = pctx.take();
    let conflict = matches!(result, Ok(RollbackOutcome::Conflict(_)));
    let step = match result {
        Ok(RollbackOutcome::Done(msg) | RollbackOutcome::Conflict(msg)) => Ok(msg),
        Ok(RollbackOutcome::InProgress { message, recheck }) => {
            let mut stalled_changed = false;
            let mut stalled_msg = String::new();
            write(api, ctx, m, |st, g| {
                state::begin_rollback_step(st, phase, now);
                if let Some((waited, limit)) = stalled {
                    stalled_changed =
                        state::set_stalled(st, phase, waited, limit, &message, g, now);
                    stalled_msg = conditions::find(&st.conditions, ConditionType::Stalled)
                        .map(|c| c.message.clone())
                        .unwrap_or_default();
                }
                apply_updates(st, &updates);
                let msg = format!("rolling back {phase}: {message}");
                conditions::set(
                    &mut st.conditions,
                    ConditionType::Progressing,
                    true,
                    "RollingBack",
                    &msg,
                    g,
                    now,
                );
            })
            .await?;
            if stalled_changed {
                ctx.events
                    .publish(m, true, "RollbackStalled", "Rollback", stalled_msg)
                    .await;
            }
            return Ok(Action::requeue(
                recheck.min(ctx.shared.config.poll_interval),
            ));
        }
        Err(PhaseError::Transient(msg)) => {
            show_stalled(
                api,
                m,
                ctx,
                phase,
                stalled,
                &format!("an error to clear: {msg}"),
                now,
            )
            .await?;
            return Err(PhaseError::Transient(format!("rolling back {phase}: {msg}")).into());
        }
        Err(PhaseError::Fatal(msg)) => Err(msg),
    };
    let ok = step.is_ok();
    let note = match &step {
        Ok(m) => format!("rolled back {phase}: {m}"),
        Err(m) => format!("rollback of {phase} failed: {m}; continuing with the remaining steps"),
    };
    write(api, ctx, m, |st, g| {
        state::begin_rollback_step(st, phase, now);
        apply_updates(st, &updates);
        state::record_rollback_step(st, phase, step.clone(), now);
        state::clear_stalled(st, g, now);
        state::append_logs(st, phase, logs.clone());
    })
    .await?;
    ctx.events
        .publish(
            m,
            !ok || conflict,
            if conflict {
                "RollbackConflict"
            } else if ok {
                "PhaseRolledBack"
            } else {
                "RollbackStepFailed"
            },
            "Rollback",
            note,
        )
        .await;
    Ok(Action::requeue(NEXT_STEP))
}

/// Shows why a deletion is held and how to force it (an Event once).
async fn hold_deletion(
    api: &Api<Vcfm>,
    m: &Vcfm,
    ctx: &Context,
    reason: &str,
    now: Timestamp,
) -> Result<Vcfm, Error> {
    let name = m.name_any();
    let msg = format!(
        "{reason}. To delete it now, leaving the cluster as it is (the backup Secret {} stays for manual recovery): `{}`",
        crate::backup::secret_name(&name),
        deletion::force_command(m)
    );
    let mut changed = false;
    let done = write(api, ctx, m, |st, g| {
        changed = conditions::set(
            &mut st.conditions,
            ConditionType::DeletionBlocked,
            true,
            "PointOfNoReturn",
            &msg,
            g,
            now,
        );
    })
    .await?;
    if changed {
        ctx.events
            .publish(m, true, "DeletionBlocked", "Delete", msg)
            .await;
    }
    Ok(done)
}

/// Lets a deleted migration go: records on the backup Secret how it ended
/// (so a later Preflight can tell a finished migration from an abandoned
/// one), then removes the finalizer.
async fn release(
    m: &Vcfm,
    ctx: &Context,
    api: &Api<Vcfm>,
    reason: &str,
    status: &MigrationStatus,
) -> Result<Action, Error> {
    use crate::backup;
    let outcome = outcome_of(m, status);
    backup::mark_outcome(ctx.shared.client.clone(), m, outcome).await?;
    ctx.events
        .publish(
            m,
            outcome == backup::OUTCOME_FORCE_DELETED,
            "DeletionReleased",
            "Delete",
            format!("migration released for deletion: {reason}"),
        )
        .await;
    deletion::remove_finalizer(api, m).await?;
    Ok(Action::await_change())
}

/// How a migration ended, as recorded on its backup Secret.
fn outcome_of(m: &Vcfm, status: &MigrationStatus) -> &'static str {
    use crate::backup;
    if status.phase == Some(vcfm_api::MigrationPhase::Completed) {
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

/// Another migration among `all` that holds the cluster, if any: one that has
/// started and not finished, or an older one asked to run.
pub fn competing_migration(all: &[Arc<Vcfm>], me: &Vcfm) -> Option<String> {
    let my_uid = me.metadata.uid.clone();
    let active = |m: &Vcfm| {
        m.status
            .as_ref()
            .is_some_and(|s| s.start_time.is_some() && !s.phase.is_some_and(|p| p.is_terminal()))
    };
    let i_started = active(me);
    for other in all {
        if other.metadata.uid == my_uid {
            continue;
        }
        let older = other.metadata.creation_timestamp < me.metadata.creation_timestamp
            || (other.metadata.creation_timestamp == me.metadata.creation_timestamp
                && other.metadata.uid < my_uid);
        let waiting_to_run = other.spec.state == vcfm_api::MigrationState::Running
            && other
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_none_or(|p| !p.is_terminal());
        if active(other) || (!i_started && older && waiting_to_run) {
            return Some(format!(
                "{}/{}",
                other.namespace().unwrap_or_default(),
                other.name_any()
            ));
        }
    }
    None
}

/// Error policy: log and back off per migration (exponential, jittered).
/// Counting happens in [`reconcile`]. Nothing is lost: state lives in status.
pub fn error_policy(obj: Arc<Vcfm>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key(&obj);
    let wait = ctx.backoff.failed(&key);
    tracing::warn!(
        migration = %key,
        error = %err,
        class = err.class(),
        attempt = ctx.backoff.attempts(&key),
        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        "reconcile failed; will retry"
    );
    Action::requeue(wait)
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
