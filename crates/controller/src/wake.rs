//! Which migrations a change to a watched Pod, Node, ClusterOperator or
//! MachineConfigPool wakes.
//!
//! Pods churn all the time in a cluster; waking every unfinished migration on
//! each change would run their reconciles (and API reads) for nothing. A
//! change wakes a migration only when it is running a phase that waits on
//! that kind; every other phase is woken by its own requeue or by the kinds
//! it waits on.

use vcfm_api::{MigrationState, PhaseName, PhaseStatus, VmwareCloudFoundationMigration};

/// The kinds whose events are filtered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Pods,
    Nodes,
    ClusterOperators,
    MachineConfigPools,
}

/// The kinds a phase waits on while it runs (the objects its `execute`
/// polls until they settle).
pub fn waits_on(phase: PhaseName) -> &'static [Watched] {
    use PhaseName::*;
    use Watched::*;
    match phase {
        UpdateConfig | Cleanup => &[Pods, MachineConfigPools],
        RestartPods => &[Pods],
        MonitorHealth | Verify => &[Nodes, ClusterOperators],
        CreateWorkers | RecreateCpms | ScaleOldMachines => &[Nodes, MachineConfigPools],
        _ => &[],
    }
}

/// Whether a change to a `kind` object should wake `m`: it is asked to run,
/// and its current phase is running and waits on that kind.
pub fn wakes(m: &VmwareCloudFoundationMigration, kind: Watched) -> bool {
    m.spec.state == MigrationState::Running
        && m.status
            .as_ref()
            .and_then(|s| s.current_phase_state.as_ref())
            .is_some_and(|c| c.status == PhaseStatus::Running && waits_on(c.name).contains(&kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(state: &str, phase: PhaseName, status: &str) -> VmwareCloudFoundationMigration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"state": state, "targetVCenterCredentialsSecret": {"name": "t"},
                "failureDomains": [], "machineSetConfig": {"replicas": 1}},
            "status": {"currentPhaseState": {"name": phase, "status": status}}
        }))
        .unwrap()
    }

    #[test]
    fn only_running_phases_waiting_on_the_kind_are_woken() {
        let m = migration("Running", PhaseName::RestartPods, "Running");
        assert!(wakes(&m, Watched::Pods));
        assert!(!wakes(&m, Watched::Nodes));
        assert!(!wakes(&m, Watched::ClusterOperators));
        let m = migration("Running", PhaseName::MonitorHealth, "Running");
        assert!(!wakes(&m, Watched::Pods));
        assert!(wakes(&m, Watched::Nodes) && wakes(&m, Watched::ClusterOperators));
        let m = migration("Running", PhaseName::CreateWorkers, "Running");
        assert!(wakes(&m, Watched::Nodes) && !wakes(&m, Watched::Pods));
        // Paused, waiting for approval, or in a phase that waits on nothing.
        assert!(!wakes(
            &migration("Paused", PhaseName::RestartPods, "Running"),
            Watched::Pods
        ));
        assert!(!wakes(
            &migration("Running", PhaseName::RestartPods, "WaitingForApproval"),
            Watched::Pods
        ));
        assert!(!wakes(
            &migration("Running", PhaseName::CreateTags, "Running"),
            Watched::Pods
        ));
        for p in PhaseName::ALL {
            let m = migration("Running", p, "Completed");
            assert!(!wakes(&m, Watched::Pods) && !wakes(&m, Watched::Nodes));
        }
    }
}
