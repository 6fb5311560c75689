//! The phases, one file each, behind one small trait.
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
mod recreate_cpms;
mod restart_pods;
mod scale_old_machines;
mod update_config;
mod update_infrastructure;
mod update_secrets;
mod verify;

use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::state::Outcome;
use futures::future::BoxFuture;
use std::time::Duration;
use vcfm_api::PhaseName;

pub use preflight::PreflightReport;

/// Result of one rollback step.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackOutcome {
    /// Undone; the message says what was restored.
    Done(String),
    /// Still undoing (for example waiting for the CVO to come back).
    InProgress { message: String, recheck: Duration },
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

/// One migration phase.
pub trait Phase: Send + Sync {
    fn name(&self) -> PhaseName;

    /// Deadline for the whole phase, unless `spec.phaseTimeouts` overrides it.
    fn default_timeout(&self) -> Duration;

    fn rollback_support(&self) -> RollbackSupport;

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
        let support = self.rollback_support();
        Box::pin(async move {
            Ok(RollbackOutcome::Done(match support {
                RollbackSupport::Impossible(why) => {
                    format!("cannot be undone automatically: {why}")
                }
                _ => "nothing to undo".to_string(),
            }))
        })
    }
}

/// The implementation of a phase.
pub fn phase(name: PhaseName) -> &'static dyn Phase {
    match name {
        PhaseName::Preflight => &preflight::Preflight,
        PhaseName::Backup => &backup::Backup,
        PhaseName::DisableCvo => &disable_cvo::DisableCvo,
        PhaseName::UpdateSecrets => &update_secrets::UpdateSecrets,
        PhaseName::CreateTags => &create_tags::CreateTags,
        PhaseName::CreateFolder => &create_folder::CreateFolder,
        PhaseName::UpdateInfrastructure => &update_infrastructure::UpdateInfrastructure,
        PhaseName::UpdateConfig => &update_config::UpdateConfig,
        PhaseName::RestartPods => &restart_pods::RestartPods,
        PhaseName::MonitorHealth => &monitor_health::MonitorHealth,
        PhaseName::CreateWorkers => &create_workers::CreateWorkers,
        PhaseName::RecreateCpms => &recreate_cpms::RecreateCpms,
        PhaseName::ScaleOldMachines => &scale_old_machines::ScaleOldMachines,
        PhaseName::Cleanup => &cleanup::Cleanup,
        PhaseName::Verify => &verify::Verify,
    }
}

/// The deadline for a phase: the spec's override, else the phase's default.
pub fn timeout_for(spec: &vcfm_api::MigrationSpec, name: PhaseName) -> Duration {
    spec.phase_timeouts
        .get(name.as_str())
        .and_then(|d| parse_duration(d))
        .unwrap_or_else(|| phase(name).default_timeout())
}

/// Parses `1h30m`, `45m`, `90s` (the pattern the CRD enforces).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += match ch {
            'h' => n.checked_mul(3600)?,
            'm' => n.checked_mul(60)?,
            's' => n,
            _ => return None,
        };
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
