//! Which migrations a change to a watched object wakes.
//!
//! Pods, Nodes, Machines churn all the time in a cluster, and a migration's
//! own steps make them move; waking every unfinished migration on each change
//! would run their reconciles for nothing. A change wakes a migration only
//! when it is running a phase that waits on that kind, or, for the kinds the
//! undo steps wait on, when it is rolling back or being deleted. Every other
//! state is woken by its own requeue or by an edit of the migration; a wait
//! this misses costs latency up to the phase's recheck, never a step.

use vcfm_api::{MigrationState, PhaseName, PhaseStatus, VmwareCloudFoundationMigration};

/// The kinds whose events are filtered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Pods,
    Nodes,
    ClusterOperators,
    MachineConfigPools,
    Machines,
    MachineSets,
    ControlPlaneMachineSets,
    /// The cluster-version-operator Deployment.
    ClusterVersionOperator,
}

impl Watched {
    /// Whether a rollback or deletion step may wait on this kind: restoring the
    /// CVO waits for its Deployment, undoing CreateWorkers for its Machines and
    /// MachineSets to go, restoring the Infrastructure for no Machine,
    /// MachineSet or CPMS to use a target failure domain.
    fn undo_waits_on(self) -> bool {
        use Watched::*;
        matches!(
            self,
            Machines | MachineSets | ControlPlaneMachineSets | ClusterVersionOperator
        )
    }
}

/// The kinds a phase waits on while it runs (the objects its `execute`
/// reads until they settle).
pub fn waits_on(phase: PhaseName) -> &'static [Watched] {
    use PhaseName::*;
    use Watched::*;
    match phase {
        DisableCvo => &[ClusterVersionOperator],
        UpdateConfig => &[Pods, MachineConfigPools],
        RestartPods => &[Pods],
        MonitorHealth => &[Nodes, ClusterOperators],
        CreateWorkers | ScaleOldMachines => &[Nodes, MachineConfigPools, Machines, MachineSets],
        RecreateCpms => &[Nodes, MachineConfigPools, Machines, ControlPlaneMachineSets],
        // Source references (Machines, MachineSets, the CPMS), the pod restarts, the pools.
        Cleanup => &[
            Pods,
            MachineConfigPools,
            Machines,
            MachineSets,
            ControlPlaneMachineSets,
        ],
        // Machines on the target, and the CVO restored.
        Verify => &[Nodes, ClusterOperators, Machines, ClusterVersionOperator],
        _ => &[],
    }
}

/// Whether a change to a `kind` object should wake `m`: it is asked to run,
/// and its current phase is running and waits on that kind; or it is
/// unfinished, rolling back or being deleted, and undo steps wait on `kind`.
pub fn wakes(m: &VmwareCloudFoundationMigration, kind: Watched) -> bool {
    let status = m.status.as_ref();
    let finished = status
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_terminal());
    let undoing = m.metadata.deletion_timestamp.is_some()
        || status
            .and_then(|s| s.rollback.as_ref())
            .is_some_and(|r| r.completion_time.is_none());
    if kind.undo_waits_on() && undoing && !finished {
        return true;
    }
    m.spec.state == MigrationState::Running
        && status
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

    fn with(
        m: VmwareCloudFoundationMigration,
        patch: serde_json::Value,
    ) -> VmwareCloudFoundationMigration {
        let mut v = serde_json::to_value(m).unwrap();
        json_patch::merge(&mut v, &patch);
        serde_json::from_value(v).unwrap()
    }

    /// Each waiting phase is woken by every kind its step reads until it
    /// settles (see the phases): a kind missing here leaves the phase waiting
    /// until its recheck after the change it waits for.
    #[test]
    fn each_waiting_phase_is_woken_by_the_kinds_it_reads() {
        use PhaseName::*;
        use Watched::*;
        let cases: &[(PhaseName, &[Watched])] = &[
            // Waits for the CVO pods to stop.
            (DisableCvo, &[ClusterVersionOperator]),
            // New MachineSets' Machines to run and their Nodes to join.
            (
                CreateWorkers,
                &[MachineSets, Machines, Nodes, MachineConfigPools],
            ),
            // The CPMS to replace every master Machine.
            (
                RecreateCpms,
                &[ControlPlaneMachineSets, Machines, Nodes, MachineConfigPools],
            ),
            // The old MachineSets' Machines to go.
            (
                ScaleOldMachines,
                &[MachineSets, Machines, Nodes, MachineConfigPools],
            ),
            // No source references left, the pods restarted, the pools rolled.
            (
                Cleanup,
                &[
                    Machines,
                    MachineSets,
                    ControlPlaneMachineSets,
                    Pods,
                    MachineConfigPools,
                ],
            ),
            // Machines on the target, Nodes Ready, operators stable, the CVO back.
            (
                Verify,
                &[Machines, Nodes, ClusterOperators, ClusterVersionOperator],
            ),
        ];
        for (phase, kinds) in cases {
            let m = migration("Running", *phase, "Running");
            for k in *kinds {
                assert!(wakes(&m, *k), "{phase:?} is not woken by {k:?}");
            }
        }
    }

    #[test]
    fn machine_changes_wake_only_the_phases_that_wait_on_machines() {
        // The phases before CreateWorkers create and delete no machine.
        for p in PhaseName::ALL
            .into_iter()
            .take_while(|p| *p != PhaseName::CreateWorkers)
        {
            let m = migration("Running", p, "Running");
            for k in [
                Watched::Machines,
                Watched::MachineSets,
                Watched::ControlPlaneMachineSets,
            ] {
                assert!(!wakes(&m, k), "{p:?} woken by {k:?}");
            }
        }
        // Nor a migration that is paused, waiting for approval or finished.
        let m = migration("Paused", PhaseName::RecreateCpms, "Running");
        assert!(!wakes(&m, Watched::Machines));
        let m = migration("Running", PhaseName::RecreateCpms, "WaitingForApproval");
        assert!(!wakes(&m, Watched::Machines));
        let done = with(
            migration("Running", PhaseName::Verify, "Completed"),
            serde_json::json!({"status": {"phase": "Completed"}}),
        );
        assert!(!wakes(&done, Watched::ClusterVersionOperator));
    }

    /// Undo steps wait on Machines, MachineSets, the CPMS (restoring the
    /// Infrastructure) and the CVO Deployment (restoring the CVO), whatever
    /// phase the status shows: a rollback or a deletion in progress is woken by
    /// them until it ends.
    #[test]
    fn rollbacks_and_deletions_are_woken_by_what_undo_steps_wait_on() {
        let undo_kinds = [
            Watched::Machines,
            Watched::MachineSets,
            Watched::ControlPlaneMachineSets,
            Watched::ClusterVersionOperator,
        ];
        let rolling_back = with(
            migration("Rollback", PhaseName::UpdateInfrastructure, "Failed"),
            serde_json::json!({"status": {"phase": "RollingBack", "rollback": {
                "trigger": "Requested", "startTime": "2026-01-01T00:00:00Z"}}}),
        );
        let deleting = with(
            migration("Running", PhaseName::DisableCvo, "Completed"),
            serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": ["x"]}}),
        );
        for m in [&rolling_back, &deleting] {
            for k in undo_kinds {
                assert!(wakes(m, k), "{k:?} does not wake an undo in progress");
            }
            // Kinds no undo step waits on keep to the running phase's waits.
            assert!(!wakes(m, Watched::Pods));
        }
        let rolled_back = with(
            rolling_back.clone(),
            serde_json::json!({"status": {"phase": "RollbackCompleted", "rollback": {
                "completionTime": "2026-01-01T00:01:00Z"}}}),
        );
        for k in undo_kinds {
            assert!(!wakes(&rolled_back, k));
        }
    }
}
