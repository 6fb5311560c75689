//! The fifteen migration phases and the coarse lifecycle phases around them.
//!
//! Phase identity is an enum, never a string compared at runtime, so that the
//! state machine cannot route on a typo or on a condition message.

#[cfg(feature = "schema")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One step of a migration, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum PhaseName {
    Preflight,
    Backup,
    #[serde(rename = "DisableCVO")]
    DisableCvo,
    UpdateSecrets,
    CreateTags,
    CreateFolder,
    UpdateInfrastructure,
    UpdateConfig,
    RestartPods,
    MonitorHealth,
    CreateWorkers,
    #[serde(rename = "RecreateCPMS")]
    RecreateCpms,
    ScaleOldMachines,
    Cleanup,
    Verify,
}

impl PhaseName {
    /// Every phase in execution order.
    pub const ALL: [PhaseName; 15] = [
        PhaseName::Preflight,
        PhaseName::Backup,
        PhaseName::DisableCvo,
        PhaseName::UpdateSecrets,
        PhaseName::CreateTags,
        PhaseName::CreateFolder,
        PhaseName::UpdateInfrastructure,
        PhaseName::UpdateConfig,
        PhaseName::RestartPods,
        PhaseName::MonitorHealth,
        PhaseName::CreateWorkers,
        PhaseName::RecreateCpms,
        PhaseName::ScaleOldMachines,
        PhaseName::Cleanup,
        PhaseName::Verify,
    ];

    /// The first phase whose start makes an automatic restore of the source
    /// configuration harmful: once masters are being replaced on the target,
    /// putting the old configuration back would strand them.
    pub const POINT_OF_NO_RETURN: PhaseName = PhaseName::RecreateCpms;

    /// The wire name, as written in the CR and accepted by the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            PhaseName::Preflight => "Preflight",
            PhaseName::Backup => "Backup",
            PhaseName::DisableCvo => "DisableCVO",
            PhaseName::UpdateSecrets => "UpdateSecrets",
            PhaseName::CreateTags => "CreateTags",
            PhaseName::CreateFolder => "CreateFolder",
            PhaseName::UpdateInfrastructure => "UpdateInfrastructure",
            PhaseName::UpdateConfig => "UpdateConfig",
            PhaseName::RestartPods => "RestartPods",
            PhaseName::MonitorHealth => "MonitorHealth",
            PhaseName::CreateWorkers => "CreateWorkers",
            PhaseName::RecreateCpms => "RecreateCPMS",
            PhaseName::ScaleOldMachines => "ScaleOldMachines",
            PhaseName::Cleanup => "Cleanup",
            PhaseName::Verify => "Verify",
        }
    }

    /// 1-based position, as the seed numbers the phases.
    pub fn number(self) -> usize {
        self.index() + 1
    }

    /// 0-based position in [`PhaseName::ALL`].
    pub fn index(self) -> usize {
        // ALL is a total, duplicate-free list of the variants (checked by a unit test).
        PhaseName::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The phase after this one, or `None` after the last.
    pub fn next(self) -> Option<PhaseName> {
        PhaseName::ALL.get(self.index() + 1).copied()
    }

    /// The phase before this one, or `None` for the first.
    pub fn previous(self) -> Option<PhaseName> {
        self.index().checked_sub(1).map(|i| PhaseName::ALL[i])
    }

    /// Whether reaching this phase means the source configuration may no longer be restored automatically.
    pub fn is_past_point_of_no_return(self) -> bool {
        self >= PhaseName::POINT_OF_NO_RETURN
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase name that is not one of the fifteen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase {given:?}; expected one of: {}", PhaseName::ALL.map(PhaseName::as_str).join(", "))]
pub struct UnknownPhase {
    pub given: String,
}

impl FromStr for PhaseName {
    type Err = UnknownPhase;

    /// Accepts the wire name case-insensitively, so `vcfm approve x createworkers` works.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PhaseName::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPhase {
                given: s.to_string(),
            })
    }
}

/// `status.phase`: where the migration as a whole stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum MigrationPhase {
    Pending,
    Preflight,
    Backup,
    #[serde(rename = "DisableCVO")]
    DisableCvo,
    UpdateSecrets,
    CreateTags,
    CreateFolder,
    UpdateInfrastructure,
    UpdateConfig,
    RestartPods,
    MonitorHealth,
    CreateWorkers,
    #[serde(rename = "RecreateCPMS")]
    RecreateCpms,
    ScaleOldMachines,
    Cleanup,
    Verify,
    Completed,
    Failed,
    RollingBack,
    RollbackCompleted,
}

impl MigrationPhase {
    /// The step this lifecycle phase stands for, when it is one of the fifteen.
    pub fn as_step(self) -> Option<PhaseName> {
        use MigrationPhase as M;
        use PhaseName as P;
        Some(match self {
            M::Preflight => P::Preflight,
            M::Backup => P::Backup,
            M::DisableCvo => P::DisableCvo,
            M::UpdateSecrets => P::UpdateSecrets,
            M::CreateTags => P::CreateTags,
            M::CreateFolder => P::CreateFolder,
            M::UpdateInfrastructure => P::UpdateInfrastructure,
            M::UpdateConfig => P::UpdateConfig,
            M::RestartPods => P::RestartPods,
            M::MonitorHealth => P::MonitorHealth,
            M::CreateWorkers => P::CreateWorkers,
            M::RecreateCpms => P::RecreateCpms,
            M::ScaleOldMachines => P::ScaleOldMachines,
            M::Cleanup => P::Cleanup,
            M::Verify => P::Verify,
            M::Pending | M::Completed | M::Failed | M::RollingBack | M::RollbackCompleted => {
                return None;
            }
        })
    }

    /// Whether nothing more will happen without a new request from the administrator.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationPhase::Completed | MigrationPhase::Failed | MigrationPhase::RollbackCompleted
        )
    }
}

impl From<PhaseName> for MigrationPhase {
    fn from(p: PhaseName) -> Self {
        use MigrationPhase as M;
        use PhaseName as P;
        match p {
            P::Preflight => M::Preflight,
            P::Backup => M::Backup,
            P::DisableCvo => M::DisableCvo,
            P::UpdateSecrets => M::UpdateSecrets,
            P::CreateTags => M::CreateTags,
            P::CreateFolder => M::CreateFolder,
            P::UpdateInfrastructure => M::UpdateInfrastructure,
            P::UpdateConfig => M::UpdateConfig,
            P::RestartPods => M::RestartPods,
            P::MonitorHealth => M::MonitorHealth,
            P::CreateWorkers => M::CreateWorkers,
            P::RecreateCpms => M::RecreateCpms,
            P::ScaleOldMachines => M::ScaleOldMachines,
            P::Cleanup => M::Cleanup,
            P::Verify => M::Verify,
        }
    }
}

impl fmt::Display for MigrationPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_step() {
            Some(p) => f.write_str(p.as_str()),
            None => f.write_str(match self {
                MigrationPhase::Pending => "Pending",
                MigrationPhase::Completed => "Completed",
                MigrationPhase::Failed => "Failed",
                MigrationPhase::RollingBack => "RollingBack",
                _ => "RollbackCompleted",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_wire_names_match_serde() {
        for (i, p) in PhaseName::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
            let wire = serde_json::to_value(p).unwrap();
            assert_eq!(wire, serde_json::Value::String(p.as_str().to_string()));
            assert_eq!(p.as_str().parse::<PhaseName>().unwrap(), *p);
            let lifecycle = MigrationPhase::from(*p);
            assert_eq!(lifecycle.as_step(), Some(*p));
            assert_eq!(serde_json::to_value(lifecycle).unwrap(), wire);
            assert_eq!(lifecycle.to_string(), p.as_str());
        }
        assert_eq!(PhaseName::Preflight.previous(), None);
        assert_eq!(PhaseName::Verify.next(), None);
        assert_eq!(PhaseName::Backup.next(), Some(PhaseName::DisableCvo));
        assert_eq!(PhaseName::DisableCvo.number(), 3);
    }

    #[test]
    fn point_of_no_return_is_the_control_plane_move() {
        assert!(!PhaseName::CreateWorkers.is_past_point_of_no_return());
        assert!(PhaseName::RecreateCpms.is_past_point_of_no_return());
        assert!(PhaseName::Verify.is_past_point_of_no_return());
    }

    #[test]
    fn parsing_is_case_insensitive_and_names_the_choices() {
        assert_eq!(
            "disablecvo".parse::<PhaseName>().unwrap(),
            PhaseName::DisableCvo
        );
        let err = "Deploy".parse::<PhaseName>().unwrap_err().to_string();
        assert!(
            err.contains("\"Deploy\"") && err.contains("RecreateCPMS"),
            "{err}"
        );
    }
}
