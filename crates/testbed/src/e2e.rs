//! Whole-migration scenarios (the controller's e2e tests and the bench): the target
//! failure domain they migrate to and the end state of a completed migration.

use serde_json::Value;
use std::time::Duration;
use vcfm_api::{MigrationPhase, PhaseName};

use crate::{ClusterState, Env, Vcfm, phase_of, summary};

/// The one target failure domain of the whole-migration scenarios.
pub const FD: &str = "target-fd-1";

impl Env {
    /// Creates a Manual migration of `workers` per failure domain ([`FD`]) with every
    /// phase up to `upto` approved (`tweak` merged into the spec) and waits until the
    /// next phase waits for its approval.
    pub async fn migrate_through(
        &self,
        name: &str,
        workers: u32,
        upto: PhaseName,
        tweak: Value,
    ) -> Vcfm {
        self.migrate_through_in(name, FD, workers, upto, tweak)
            .await
    }

    /// Creates an Automatic migration of `workers` on [`FD`] and waits, at most 300 s,
    /// for it to end; it must end Completed.
    pub async fn migrate_to_completion(&self, name: &str, workers: u32) -> Vcfm {
        self.create_migration(name, self.spec(FD, workers, false))
            .await;
        let m = self.wait_terminal(name, Duration::from_secs(300)).await;
        assert_eq!(
            phase_of(&m),
            Some(MigrationPhase::Completed),
            "{}",
            summary(&m)
        );
        m
    }
}

/// Checks the end state of a completed migration; returns the findings (empty = fine).
pub fn migrated_findings(env: &Env, st: &ClusterState, workers: usize) -> Vec<String> {
    let mut bad = vec![];
    let target = &env.sim.target().server;
    let source = &env.sim.source().server;
    let infra_id = env.sim.infra_id();
    let s = serde_json::to_string(&st.infrastructure_spec).unwrap();
    if s.contains(source.as_str()) {
        bad.push(format!("Infrastructure still mentions the source {source}"));
    }
    if !s.contains(target.as_str()) {
        bad.push("Infrastructure does not mention the target".into());
    }
    if st.cloud_config.contains(source.as_str()) || !st.cloud_config.contains(target.as_str()) {
        bad.push(format!(
            "cloud config not target-only:\n{}",
            st.cloud_config
        ));
    }
    if st
        .creds
        .keys()
        .any(|k| k.starts_with(&format!("{source}.")))
        || !st.creds.contains_key(&format!("{target}.username"))
    {
        bad.push(format!(
            "vsphere-creds keys not target-only: {:?}",
            st.creds.keys()
        ));
    }
    if st.cvo_replicas != 1 {
        bad.push(format!("CVO at {} replicas", st.cvo_replicas));
    }
    for (m, server) in &st.machines {
        if server != target {
            bad.push(format!("machine {m} on {server}"));
        }
    }
    let cluster_vms_on_source: Vec<&String> = st
        .source
        .vms
        .keys()
        .filter(|n| n.starts_with(infra_id))
        .collect();
    if !cluster_vms_on_source.is_empty() {
        bad.push(format!("source still has VMs {cluster_vms_on_source:?}"));
    }
    for (vm, n) in &st.target.vms {
        if *n > 1 {
            bad.push(format!("duplicate VM {vm} ×{n} on the target"));
        }
    }
    // Every VM the cluster runs on is on: a Machine says Running only once its VM was
    // powered on (machine-api-operator `pkg/controller/vsphere/reconciler.go` `powerOn`).
    let off: Vec<&String> = st
        .target
        .not_powered_on
        .iter()
        .filter(|n| n.starts_with(infra_id))
        .collect();
    if !off.is_empty() {
        bad.push(format!("target VMs not powered on: {off:?}"));
    }
    // The source's VM groups do not exist on the target (issue 13 item 8).
    for (name, spec) in &st.machinesets {
        if spec.to_string().contains("vmGroup") {
            bad.push(format!(
                "MachineSet {name} names a VM group of the source: {spec}"
            ));
        }
    }
    let masters = st
        .target
        .folder_vms
        .iter()
        .filter(|n| n.contains("-master-"))
        .count();
    let new_workers = st
        .target
        .folder_vms
        .iter()
        .filter(|n| n.contains("-worker-"))
        .count();
    if masters != 3 || new_workers != workers {
        bad.push(format!(
            "target folder holds {masters} masters and {new_workers} workers, expected 3 and {workers}: {:?}",
            st.target.folder_vms
        ));
    }
    if st.target.folder_vms.len()
        != st
            .target
            .vms
            .keys()
            .filter(|n| n.starts_with(infra_id))
            .count()
    {
        bad.push(format!(
            "cluster VMs outside the target folder: {:?} vs {:?}",
            st.target.vms, st.target.folder_vms
        ));
    }
    if st.target.ownership_tagged != st.target.folder_vms {
        bad.push(format!(
            "VMs without the ownership tag: {:?}",
            st.target
                .folder_vms
                .difference(&st.target.ownership_tagged)
                .collect::<Vec<_>>()
        ));
    }
    for (what, map) in [
        ("category", &st.target.categories),
        ("tag", &st.target.tags),
    ] {
        for (n, c) in map {
            if *c > 1 {
                bad.push(format!("duplicate {what} {n} ×{c} on the target"));
            }
        }
    }
    if st.machinesets.len() != 1
        || !st
            .machinesets
            .contains_key(&format!("{infra_id}-worker-{FD}"))
    {
        bad.push(format!(
            "MachineSets: {:?}",
            st.machinesets.keys().collect::<Vec<_>>()
        ));
    }
    if st.nodes.len() != 3 + workers {
        bad.push(format!("{} nodes: {:?}", st.nodes.len(), st.nodes));
    }
    bad
}
