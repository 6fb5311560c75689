//! The reconcile function: read the migration, ask the state machine what to
//! do, run at most one phase step, write once the status that the pure
//! [`transition`] computes from that, and requeue. It never sleeps waiting
//! for the cluster: waiting is a requeue or a watch event.

use crate::context::{PhaseCtx, Shared};
use crate::deletion;
use crate::error::{Backoff, Error, PhaseError};
use crate::events::Events;
use crate::phases;
use crate::state::{self, Decision};
use crate::status;
use crate::transition::{self, Measure, Next, Plan, Ran, Recorded, Transition};
use futures::FutureExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use std::borrow::Cow;
use std::sync::Arc;
use tracing::Instrument;
use vcfm_api::{MigrationStatus, PhaseName, VmwareCloudFoundationMigration};

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
    ctx.caches.synced().await;
    step(&api, &m, ctx).await
}

/// Writes a status change computed on `base` (see [`status::update`]) and
/// remembers the result, which the next reconcile starts from.
async fn write<'a>(
    api: &Api<Vcfm>,
    ctx: &Context,
    base: &'a Vcfm,
    change: impl FnMut(&MigrationStatus, Option<i64>) -> MigrationStatus,
) -> Result<Cow<'a, Vcfm>, Error> {
    let done = status::update(api, base, change).await?;
    if let Cow::Owned(d) = &done
        && d.metadata.resource_version != base.metadata.resource_version
    {
        ctx.written.record(d.clone());
    }
    Ok(done)
}

/// Reads, decides, acts once: the guards that need no status, then the plan.
async fn step(api: &Api<Vcfm>, m: &Arc<Vcfm>, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let empty = MigrationStatus::default();
    let status = m.status.as_ref().unwrap_or(&empty);
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
        let outcome = transition::outcome_of(m, status);
        crate::backup::mark_outcome(ctx.shared.client.clone(), m, outcome).await?;
        deletion::remove_finalizer(api, m).await?;
        return Ok(Action::requeue(transition::NEXT_STEP));
    }

    // Until the cache has seen the first full list it cannot tell whether an
    // older migration exists: look again shortly.
    if ctx.migrations.wait_until_ready().now_or_never().is_none() {
        return Ok(Action::requeue(transition::NEXT_STEP));
    }
    // A deletion is handled whatever other migrations do.
    let competing = (!deleting)
        .then(|| competing_migration(&ctx.migrations.state(), m))
        .flatten();
    let plan = match competing {
        Some(by) => Plan::Blocked { by },
        None => {
            let timeout_for = |p| phases::timeout_for(&m.spec, p);
            Plan::Decided(if deleting {
                let force = deletion::force_requested(m);
                state::decide_deletion(&m.spec, status, force, now, timeout_for)
            } else {
                state::decide(&m.spec, status, now, timeout_for)
            })
        }
    };
    tracing::debug!(?plan, "decided");
    // Log lines of the phase step, the write and the Events name the phase.
    let span = match plan.acting() {
        Some(Decision::Execute(p)) => tracing::info_span!("phase", phase = ?p),
        Some(Decision::RollBack(p) | Decision::StalledRollBack { phase: p, .. }) => {
            tracing::info_span!("rollback", phase = ?p)
        }
        _ => tracing::Span::none(),
    };
    act(api, m, ctx, &plan, now).instrument(span).await
}

/// A migration this step finishes (`after` is the status the step computed)
/// has nothing left to undo: its outcome goes on the backup Secret and the
/// finalizer comes off before Completed (or RollbackCompleted) is written, so
/// that whoever sees it finished can delete it or uninstall vcfm at once. A
/// crash in between re-runs the last step, which puts the finalizer back and
/// comes here again. Returns the migration without the finalizer when it
/// came off.
async fn let_go_if_finishing(
    api: &Api<Vcfm>,
    ctx: &Context,
    m: &Vcfm,
    after: &MigrationStatus,
) -> Result<Option<Arc<Vcfm>>, Error> {
    if m.metadata.deletion_timestamp.is_some() || !deletion::has_finalizer(m) {
        return Ok(None);
    }
    if !matches!(
        after.phase,
        Some(vcfm_api::MigrationPhase::Completed | vcfm_api::MigrationPhase::RollbackCompleted)
    ) {
        return Ok(None);
    }
    crate::backup::mark_outcome(
        ctx.shared.client.clone(),
        m,
        transition::outcome_of(m, after),
    )
    .await?;
    Ok(deletion::remove_finalizer(api, m)
        .await?
        .map(|released| ctx.written.record(released)))
}

/// Runs the one phase step of `plan`, writes the transition once, publishes
/// its Events and says when to look again.
async fn act(
    api: &Api<Vcfm>,
    m: &Arc<Vcfm>,
    ctx: &Context,
    plan: &Plan,
    now: Timestamp,
) -> Result<Action, Error> {
    let (m, ran) = run(api, m, ctx, plan, now).await?;
    let empty = MigrationStatus::default();
    let computed = transition::transition(
        &m,
        m.status.as_ref().unwrap_or(&empty).clone(),
        plan,
        &ran,
        m.metadata.generation,
        now,
    );
    // The transition is computed once: the write's first attempt is on the
    // same object, unless the finalizer came off (then on what that returned).
    let (m, mut computed) = match let_go_if_finishing(api, ctx, &m, &computed.0).await? {
        Some(released) => (released, None),
        None => (m, Some(computed)),
    };
    let mut t = Transition::default();
    let done = write(api, ctx, &m, |st, g| {
        let (new, out) = computed
            .take()
            .unwrap_or_else(|| transition::transition(&m, st.clone(), plan, &ran, g, now));
        t = out;
        new
    })
    .await?;
    for e in t.events {
        ctx.events
            .publish(&done, e.warning, e.reason, e.action, e.message)
            .await;
    }
    let metrics = &ctx.shared.metrics;
    match t.measure {
        Some(Measure::Finished { phase, seconds }) => {
            metrics
                .phase_duration
                .get_or_create(&label(phase))
                .observe(seconds);
        }
        Some(Measure::Failed(phase)) => {
            metrics.phase_failures.get_or_create(&label(phase)).inc();
        }
        None => {}
    }
    if let Some(Decision::ReleaseDeletion { .. }) = plan.acting() {
        deletion::remove_finalizer(api, &done).await?;
    }
    Ok(match t.next {
        Next::AwaitChange => Action::await_change(),
        Next::After(d) => Action::requeue(d),
        Next::Recheck(d) => Action::requeue(d.min(ctx.shared.config.poll_interval)),
        Next::Retry(msg) => return Err(PhaseError::Transient(msg).into()),
    })
}

fn label(phase: PhaseName) -> crate::metrics::PhaseLabel {
    crate::metrics::PhaseLabel {
        phase: phase.as_str().into(),
    }
}

/// The one step `plan` asks of the cluster, the reconcile's only effect
/// besides its status write, its Events and a released finalizer: a phase
/// step, a rollback step, or the outcome a released migration leaves on its
/// backup Secret. Returns the migration to write on (it changes when vcfm's
/// finalizer goes on) and what ran.
async fn run(
    api: &Api<Vcfm>,
    m: &Arc<Vcfm>,
    ctx: &Context,
    plan: &Plan,
    now: Timestamp,
) -> Result<(Arc<Vcfm>, Ran), Error> {
    let pctx = |m: &Arc<Vcfm>| {
        PhaseCtx::new(ctx.shared.clone(), m.clone(), now).with_caches(ctx.caches.clone())
    };
    match plan.acting() {
        Some(Decision::Execute(phase)) => {
            // From Backup on, the cluster changes: a deletion must roll back first.
            let with_finalizer = if *phase != PhaseName::Preflight {
                deletion::ensure_finalizer(api, m).await?
            } else {
                None
            };
            let m = match with_finalizer {
                Some(w) => ctx.written.record(w),
                None => m.clone(),
            };
            if !m
                .status
                .as_ref()
                .is_some_and(|s| transition::runs_now(s, *phase))
            {
                return Ok((m, Ran::Nothing));
            }
            let imp = phases::phase(*phase);
            let pctx = pctx(&m);
            let result = match imp.validate(&pctx).await {
                Ok(()) => imp.execute(&pctx).await,
                Err(e) => Err(e),
            };
            let (logs, updates) = pctx.take();
            let recorded = Recorded { updates, logs };
            Ok((m, Ran::Execute { result, recorded }))
        }
        Some(Decision::RollBack(phase) | Decision::StalledRollBack { phase, .. }) => {
            let pctx = pctx(m);
            let result = phases::phase(*phase).rollback(&pctx).await;
            let (logs, updates) = pctx.take();
            let recorded = Recorded { updates, logs };
            Ok((m.clone(), Ran::Rollback { result, recorded }))
        }
        Some(Decision::ReleaseDeletion { .. }) => {
            // Recorded before the finalizer goes, so that a later Preflight can
            // tell a finished migration from an abandoned one.
            let empty = MigrationStatus::default();
            let outcome = transition::outcome_of(m, m.status.as_ref().unwrap_or(&empty));
            crate::backup::mark_outcome(ctx.shared.client.clone(), m, outcome).await?;
            Ok((m.clone(), Ran::Nothing))
        }
        _ => Ok((m.clone(), Ran::Nothing)),
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
