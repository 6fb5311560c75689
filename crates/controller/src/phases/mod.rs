//! The phases, one file each: a row of `PHASES` says what the reconciler
//! needs to know of each, and its steps sit behind one small trait.
//!
//! A phase's `execute` is called on every reconcile until it returns a final
//! outcome, so it must be idempotent and re-entrant: after a crash it finds its
//! own earlier work and continues. It never sleeps: waiting is returning
//! `Outcome::Running` with a recheck interval.

pub(crate) mod backup;
mod cleanup;
mod create_folder;
mod create_tags;
mod create_workers;
mod disable_cvo;
mod monitor_health;
mod preflight;
mod preflight_affinity;
mod preflight_consumers;
mod recreate_cpms;
mod restart_pods;
mod scale_old_machines;
mod unfinished;
mod update_config;
mod update_infrastructure;
mod update_secrets;
mod verify;

use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::state::Outcome;
use RollbackSupport::{Impossible, NothingToUndo, Supported};
use futures::future::BoxFuture;
use std::time::Duration;
use vcfm_api::PhaseName;

pub use cleanup::REMOVED as CLEANUP_REMOVED;
pub use preflight::{PreflightReport, run as run_preflight};

/// Result of one rollback step.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackOutcome {
    /// Undone; the message says what was restored.
    Done(String),
    /// Undone, except what someone else changed after vcfm did: that is
    /// left as it is, and the message names it (a Warning Event is raised).
    Conflict(String),
    /// Still undoing (for example waiting for the CVO to come back).
    InProgress { message: String, recheck: Duration },
}

/// The rollback outcome of undoing vcfm's changes to `object`; conflicts
/// also go to the phase log as a warning.
pub(crate) fn undo_outcome(
    ctx: &PhaseCtx,
    object: &str,
    plan: &crate::undo::Plan,
) -> RollbackOutcome {
    let msg = crate::undo::summary(object, plan);
    if plan.conflicts().is_empty() {
        RollbackOutcome::Done(msg)
    } else {
        ctx.log(vcfm_api::LogLevel::Warning, "rollback", msg.clone());
        RollbackOutcome::Conflict(msg)
    }
}

/// Whether and how a phase can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackSupport {
    /// `rollback` restores what the phase changed.
    Supported,
    /// The phase changes nothing, so there is nothing to undo.
    NothingToUndo,
    /// The phase cannot be undone; the text says why.
    Impossible(&'static str),
}

/// One migration phase's steps, as the reconciler calls them. Most phases
/// write them as async fns ([`Steps`]); the others implement this directly.
pub trait Phase: Send + Sync {
    /// Cheap checks of the inputs the phase needs, run before each execute step.
    fn validate<'a>(&'a self, _ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<(), PhaseError>> {
        Box::pin(async { Ok(()) })
    }

    /// One idempotent step towards the phase's goal.
    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>>;

    /// One idempotent step towards undoing the phase.
    fn rollback<'a>(
        &'a self,
        _ctx: &'a PhaseCtx,
    ) -> BoxFuture<'a, Result<RollbackOutcome, PhaseError>> {
        Box::pin(async { Ok(RollbackOutcome::Done("nothing to undo".to_string())) })
    }
}

/// The steps of [`Phase`] written as async fns: [`Phase`] comes with it,
/// boxing their futures, so a phase file holds only what the phase does.
pub trait Steps: Send + Sync {
    fn validate(&self, _ctx: &PhaseCtx) -> impl Future<Output = Result<(), PhaseError>> + Send {
        async { Ok(()) }
    }

    fn execute(&self, ctx: &PhaseCtx) -> impl Future<Output = Result<Outcome, PhaseError>> + Send;

    fn rollback(
        &self,
        _ctx: &PhaseCtx,
    ) -> impl Future<Output = Result<RollbackOutcome, PhaseError>> + Send {
        async { Ok(RollbackOutcome::Done("nothing to undo".to_string())) }
    }
}

impl<T: Steps> Phase for T {
    fn validate<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<(), PhaseError>> {
        Box::pin(Steps::validate(self, ctx))
    }

    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(Steps::execute(self, ctx))
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a PhaseCtx,
    ) -> BoxFuture<'a, Result<RollbackOutcome, PhaseError>> {
        Box::pin(Steps::rollback(self, ctx))
    }
}

/// A phase: what the reconciler needs to know of it (one row of
/// `PHASES`), and its steps.
pub struct PhaseDef {
    name: PhaseName,
    default_timeout: Duration,
    rollback: RollbackSupport,
    steps: &'static dyn Phase,
}

const fn def(
    name: PhaseName,
    minutes: u64,
    rollback: RollbackSupport,
    steps: &'static dyn Phase,
) -> PhaseDef {
    PhaseDef {
        name,
        default_timeout: Duration::from_secs(minutes * 60),
        rollback,
        steps,
    }
}

/// Every phase in the order of [`PhaseName::ALL`], with its default deadline
/// in minutes and whether it can be undone.
static PHASES: [PhaseDef; 15] = [
    def(
        PhaseName::Preflight,
        15,
        NothingToUndo,
        &preflight::Preflight,
    ),
    // The backup Secret is kept for manual recovery, even after the migration is deleted.
    def(PhaseName::Backup, 10, NothingToUndo, &backup::Backup),
    def(
        PhaseName::DisableCvo,
        10,
        Supported,
        &disable_cvo::DisableCvo,
    ),
    def(
        PhaseName::UpdateSecrets,
        10,
        Supported,
        &update_secrets::UpdateSecrets,
    ),
    def(
        PhaseName::CreateTags,
        10,
        Supported,
        &create_tags::CreateTags,
    ),
    def(
        PhaseName::CreateFolder,
        10,
        Supported,
        &create_folder::CreateFolder,
    ),
    def(
        PhaseName::UpdateInfrastructure,
        10,
        Supported,
        &update_infrastructure::UpdateInfrastructure,
    ),
    def(
        PhaseName::UpdateConfig,
        15,
        Supported,
        &update_config::UpdateConfig,
    ),
    // Its rollback step says why there is nothing to undo in it.
    def(
        PhaseName::RestartPods,
        20,
        NothingToUndo,
        &restart_pods::RestartPods,
    ),
    def(
        PhaseName::MonitorHealth,
        30,
        NothingToUndo,
        &monitor_health::MonitorHealth,
    ),
    def(
        PhaseName::CreateWorkers,
        60,
        Supported,
        &create_workers::CreateWorkers,
    ),
    def(
        PhaseName::RecreateCpms,
        120,
        Impossible(
            "the control plane is being moved to the target vCenter; restoring the source configuration would strand the new masters",
        ),
        &recreate_cpms::RecreateCpms,
    ),
    def(
        PhaseName::ScaleOldMachines,
        60,
        Impossible(
            "past the point of no return: the old machines are gone and the control plane runs on the target",
        ),
        &scale_old_machines::ScaleOldMachines,
    ),
    def(
        PhaseName::Cleanup,
        30,
        Impossible(
            "past the point of no return: the cluster runs on the target and the source vCenter is being forgotten",
        ),
        &cleanup::Cleanup,
    ),
    def(
        PhaseName::Verify,
        30,
        Impossible("the cluster already runs on the target vCenter only"),
        &verify::Verify,
    ),
];

impl PhaseDef {
    pub fn name(&self) -> PhaseName {
        self.name
    }

    /// Deadline for the whole phase, unless `spec.phaseTimeouts` overrides it.
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    pub fn rollback_support(&self) -> RollbackSupport {
        self.rollback
    }

    /// Cheap checks of the inputs the phase needs, run before each execute step.
    pub fn validate<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<(), PhaseError>> {
        self.steps.validate(ctx)
    }

    /// One idempotent step towards the phase's goal.
    pub fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        self.steps.execute(ctx)
    }

    /// One idempotent step towards undoing the phase; a phase that cannot be
    /// undone says why instead.
    pub fn rollback<'a>(
        &'a self,
        ctx: &'a PhaseCtx,
    ) -> BoxFuture<'a, Result<RollbackOutcome, PhaseError>> {
        match self.rollback {
            Impossible(why) => Box::pin(async move {
                Ok(RollbackOutcome::Done(format!(
                    "cannot be undone automatically: {why}"
                )))
            }),
            Supported | NothingToUndo => self.steps.rollback(ctx),
        }
    }
}

/// The phase called `name`.
pub fn phase(name: PhaseName) -> &'static PhaseDef {
    // PHASES follows PhaseName::ALL, which `index` positions in (both checked by tests).
    &PHASES[name.index()]
}

/// The rollback step of a phase whose undo is removing what it recorded
/// creating on the vCenters (tags, categories, folders): one log line per
/// object, and `none_left` when nothing remains.
pub(crate) async fn undo_created_objects(
    ctx: &PhaseCtx,
    phase: PhaseName,
    component: &str,
    none_left: &str,
) -> Result<RollbackOutcome, PhaseError> {
    use crate::openshift::tags;
    let objs: Vec<_> = ledger(ctx, phase).recorded(Some(phase)).cloned().collect();
    let mut servers: Vec<&str> = objs.iter().map(|o| o.server.as_str()).collect();
    servers.sort();
    servers.dedup();
    // The source's region/zone tags (CreateTags) are undone with the source credentials.
    let source = ctx.recorded_source().ok().map(|s| s.server.clone());
    let mut notes = vec![];
    for server in servers {
        let vc = if source.as_deref() == Some(server) {
            ctx.source_vcenter(server).await?
        } else {
            ctx.target_vcenter(server).await?
        };
        notes.extend(tags::undo_created(&vc, &objs).await?);
    }
    for n in &notes {
        ctx.log(vcfm_api::LogLevel::Info, component, n.clone());
    }
    Ok(RollbackOutcome::Done(if notes.is_empty() {
        none_left.into()
    } else {
        notes.join("; ")
    }))
}

/// The ledger of the vSphere objects `ctx`'s migration creates, for `phase`:
/// what its status records, new records going into the step's updates.
pub(crate) fn ledger(ctx: &PhaseCtx, phase: PhaseName) -> crate::openshift::tags::Ledger<'_> {
    crate::openshift::tags::Ledger {
        namespace: ctx.namespace(),
        name: ctx.name(),
        uid: ctx.migration.metadata.uid.as_deref(),
        phase,
        recorded: ctx
            .migration
            .status
            .as_ref()
            .map(|s| s.created_vsphere_objects.as_slice())
            .unwrap_or(&[]),
        add: Box::new(move |o| {
            ctx.record(|u| {
                if !u.created.contains(&o) {
                    u.created.push(o);
                }
            })
        }),
    }
}

/// The migration's backups of `ctx`, new manifests going into the step's updates.
pub(crate) fn backups(ctx: &PhaseCtx) -> crate::openshift::infra::Backups<'_> {
    crate::openshift::infra::Backups {
        store: crate::backup::BackupStore::of(ctx),
        recorded: ctx.backups(),
        now: ctx.now,
        add: Box::new(move |m| ctx.record(|u| u.backups.push(m))),
    }
}

/// What an Infrastructure edit reads, from `ctx`'s watch caches and status.
pub(crate) async fn infra_edit(
    ctx: &PhaseCtx,
) -> Result<crate::openshift::infra::Edit<'_>, PhaseError> {
    let gate = ctx.recorded_cluster()?.multi_vcenter_day2;
    let live = ctx.infrastructure().await?;
    let cvo = if gate {
        None
    } else {
        Some(crate::openshift::cvo::state(&ctx.cvo_deployment().await?))
    };
    Ok(crate::openshift::infra::Edit {
        client: ctx.client(),
        crd: crate::openshift::infra::Crd::of(ctx),
        ours: ctx.caches().map(|c| c.infrastructure_ours.clone()),
        live,
        gate,
        cvo,
        backups: backups(ctx),
    })
}

/// The deadline for a phase: the spec's override, else the phase's default.
pub fn timeout_for(spec: &vcfm_api::MigrationSpec, name: PhaseName) -> Duration {
    spec.phase_timeouts
        .get(name.as_str())
        .and_then(|d| parse_duration(d))
        .unwrap_or_else(|| phase(name).default_timeout())
}

/// Parses `1h30m`, `45m`, `90s`: the shape the CRD enforces (units in
/// h, m, s order, each once). Anything else, including values whose
/// arithmetic would overflow, is `None`, never a panic or a wrapped number.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut last_unit = 0u8;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let (rank, scale) = match ch {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return None,
        };
        if num.is_empty() || rank <= last_unit {
            return None;
        }
        last_unit = rank;
        let n: u64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(scale)?)?;
    }
    (num.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_crd_pattern_allows() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45m"), Some(Duration::from_secs(2700)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("30m1h"), None, "units out of order");
        assert_eq!(parse_duration("1h1h"), None, "a unit twice");
        assert_eq!(
            parse_duration("9999h59m59s"),
            Some(Duration::from_secs(9999 * 3600 + 59 * 60 + 59))
        );
    }

    #[test]
    fn crafted_durations_are_refused_not_overflowed() {
        // The first two overflowed the sum (a panic in debug builds, a
        // wrapped tiny deadline in release) before the addition was checked.
        for s in [
            "5124095576030431h16s",
            "307445734561825860m16s",
            "5124095576030432h",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }

    #[test]
    fn an_unparseable_override_falls_back_to_the_default() {
        let mut spec: vcfm_api::MigrationSpec = serde_json::from_value(serde_json::json!({
            "targetVCenterCredentialsSecret": {"name": "t"},
            "failureDomains": [],
            "machineSetConfig": {"replicas": 1},
            "phaseTimeouts": {"Backup": "5124095576030432h"}
        }))
        .unwrap();
        let default = phase(PhaseName::Backup).default_timeout();
        assert_eq!(timeout_for(&spec, PhaseName::Backup), default);
        spec.phase_timeouts.insert("Backup".into(), "90s".into());
        assert_eq!(
            timeout_for(&spec, PhaseName::Backup),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn every_phase_reports_its_own_name() {
        for p in PhaseName::ALL {
            let imp = phase(p);
            assert_eq!(imp.name(), p);
            assert!(imp.default_timeout() > Duration::ZERO);
        }
    }
}
