//! Phase 13: scale the source MachineSets (those whose machines live on the
//! source vCenter recorded by Preflight) to zero, wait for their Machines and
//! Nodes to go, then delete the empty sets. A set is never deleted while it
//! asks for replicas, and an empty recorded server selects nothing.

use super::Steps;
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::fd_refs;
use crate::openshift::machines::{self, machines_of, source_machinesets};
use crate::state::Outcome;
use std::collections::BTreeSet;
use std::time::Duration;
use vcfm_api::LogLevel;

pub struct ScaleOldMachines;

const RECHECK: Duration = Duration::from_secs(5);

impl Steps for ScaleOldMachines {
    async fn validate(&self, ctx: &PhaseCtx) -> Result<(), PhaseError> {
        let source = &ctx.recorded_source()?.server;
        if source.trim().is_empty() {
            return Err(PhaseError::fatal(
                "status.sourceVCenter.server is empty: refusing to select MachineSets without a source server",
            ));
        }
        if ctx.migration.target_servers().contains(&source.as_str()) {
            return Err(PhaseError::fatal(format!(
                "the recorded source vCenter {source} is also a target: refusing to scale down its machines"
            )));
        }
        Ok(())
    }

    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let client = ctx.client();
    if let Some(wait) =
        crate::openshift::mcp::gate(&ctx.machine_config_pools().await?, 5, "ScaleOldMachines")
    {
        return Ok(wait);
    }
    let source = ctx.recorded_source()?.server.clone();
    let sets = ctx.machine_sets().await?;
    let old = source_machinesets(&sets, &source);
    let all_machines = ctx.machines().await?;
    if old.is_empty() {
        return orphans(ctx, &source, &all_machines, &sets).await;
    }
    let nodes = ctx.nodes_by_name().await?;
    let mut waiting = vec![];
    let mut deleted: Vec<String> = vec![];
    for ms in &old {
        let name = ms.metadata.name.as_deref().unwrap_or("");
        if ms.metadata.deletion_timestamp.is_some() {
            waiting.push(format!("MachineSet {name} being deleted"));
            continue;
        }
        if ms.spec.replicas.unwrap_or(1) != 0 {
            machines::scale_machineset(client.clone(), name, 0).await?;
            // CreateWorkers recreated every source set on the target unless the
            // spec excluded it (Preflight refused what it could not map).
            let excluded = ctx
                .migration
                .spec
                .machine_set_config
                .machine_sets
                .iter()
                .any(|m| m.exclude && m.name == name);
            ctx.log(
                LogLevel::Info,
                "machines",
                format!(
                    "scaled source MachineSet {name} (role {}) from {} to 0{}",
                    ms.role().unwrap_or("unknown"),
                    ms.spec.replicas.unwrap_or(1),
                    if excluded {
                        "; excluded by machineSetConfig.machineSets, so not recreated on the target"
                    } else {
                        ""
                    }
                ),
            );
            waiting.push(format!("MachineSet {name} scaling down"));
            continue;
        }
        let ms_machines = machines_of(ms, &all_machines);
        let machine_names: BTreeSet<String> = ms_machines
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        let ms_nodes = machines::nodes_of_machines(&machine_names, &ms_machines, &nodes);
        if !ms_machines.is_empty() || !ms_nodes.is_empty() {
            waiting.push(format!(
                "MachineSet {name}: {} machine(s) and {} node(s) to go",
                ms_machines.len(),
                ms_nodes.len()
            ));
            continue;
        }
        if machines::delete_empty_machineset(client.clone(), ms).await? {
            ctx.log(
                LogLevel::Info,
                "machines",
                format!("deleted empty source MachineSet {name}"),
            );
            deleted.push(name.to_string());
            continue;
        }
        waiting.push(format!("MachineSet {name} to be deleted"));
    }
    // The last sets went in this step: the phase goes on to what is left (the
    // Machines no set owns) at once, rather than writing the same wait again
    // with only the deletion's log line new; that line goes with the next write.
    if waiting.is_empty() {
        let rest: Vec<_> = sets
            .iter()
            .filter(|m| {
                !deleted
                    .iter()
                    .any(|d| m.metadata.name.as_deref() == Some(d))
            })
            .cloned()
            .collect();
        return orphans(ctx, &source, &all_machines, &rest).await;
    }
    Ok(Outcome::Running {
        progress: 50,
        message: format!("removing {} source MachineSet(s) on {source}", old.len()),
        waiting_for: waiting.into_iter().take(20).collect(),
        recheck: RECHECK,
    })
}

/// Source Machines that no MachineSet owns (made by hand, or left by a deleted
/// set). Nothing else would ever remove them, the machine API's admission
/// policies keep the source failure domain from being removed while they
/// exist, and once Cleanup forgets the source vCenter their controller can no
/// longer reach their VMs. They are deleted through the machine API like the
/// MachineSets' machines (drained, VM destroyed); Preflight lists them.
async fn orphans(
    ctx: &PhaseCtx,
    source: &str,
    all: &[vcfm_api::openshift::Machine],
    sets: &[vcfm_api::openshift::MachineSet],
) -> Result<Outcome, PhaseError> {
    let left = fd_refs::orphans_on(all, sets, source);
    if left.is_empty() {
        return Ok(Outcome::Completed {
            message: format!("no MachineSet or Machine on the source vCenter {source} remains"),
        });
    }
    let api = kube::Api::<vcfm_api::openshift::Machine>::namespaced(
        ctx.client(),
        vcfm_api::openshift::MACHINE_API_NAMESPACE,
    );
    let mut waiting = vec![];
    for m in left {
        let name = m.metadata.name.clone().unwrap_or_default();
        if m.metadata.deletion_timestamp.is_none() {
            match api.delete(&name, &Default::default()).await {
                Ok(_) => ctx.log(
                    LogLevel::Info,
                    "machines",
                    format!("deleted source Machine {name}, which no MachineSet owns"),
                ),
                Err(e) if crate::error::is_not_found(&e) => continue,
                Err(e) => return Err(PhaseError::from(e).context("deleting a source Machine")),
            }
        }
        waiting.push(format!("Machine {name} (no MachineSet) to be deleted"));
    }
    Ok(Outcome::Running {
        progress: 90,
        message: format!(
            "deleting {} source Machine(s) no MachineSet owns",
            waiting.len()
        ),
        waiting_for: waiting.into_iter().take(20).collect(),
        recheck: RECHECK,
    })
}
