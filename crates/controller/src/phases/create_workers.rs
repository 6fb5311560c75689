//! Phase 11: every source MachineSet (workers, infra, any other role) recreated
//! in each target failure domain as `spec.machineSetConfig` maps it (see
//! `machineset_plan`): role labels, node labels, taints and sizing copied,
//! placement, template and networks from the failure domain; done when every new
//! Machine is Running with a Ready Node.
//! Rollback scales the sets it created to zero, waits for their Machines (and
//! so their VMs) to go, and deletes them.

use super::{RollbackOutcome, Steps};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::machines::{
    self, CREATED_BY_LABEL, MachineProgress, created_by_value, internal_ips, machine_progress,
    machines_of, new_worker_machineset, targets_server,
};
use crate::openshift::{machineset_plan, mcp};
use crate::state::Outcome;
use kube::api::{Api, PostParams};
use std::time::Duration;
use vcfm_api::LogLevel;
use vcfm_api::openshift::{MACHINE_API_NAMESPACE, MachineSet};

pub struct CreateWorkers;

const RECHECK: Duration = Duration::from_secs(5);

impl Steps for CreateWorkers {
    async fn validate(&self, ctx: &PhaseCtx) -> Result<(), PhaseError> {
        ctx.recorded_cluster()?;
        ctx.recorded_source()?;
        if ctx.migration.worker_failure_domains().is_empty() {
            return Err(PhaseError::fatal(
                "no target failure domain receives workers: check machineSetConfig.failureDomain",
            ));
        }
        Ok(())
    }

    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        rollback(ctx).await
    }
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let client = ctx.client();
    let infra_id = ctx.recorded_cluster()?.infra_id.clone();
    let source = ctx.recorded_source()?.server.clone();
    let api = Api::<MachineSet>::namespaced(client.clone(), MACHINE_API_NAMESPACE);
    let sets = ctx.machine_sets().await?;
    let plan = machineset_plan::plan(&ctx.migration, &sets, &source, &infra_id).map_err(|p| {
        PhaseError::fatal(format!(
            "the source MachineSets cannot be recreated as machineSetConfig says: {}",
            p.join("; ")
        ))
    })?;

    // A node configuration rollout holds the start of the machine rollout,
    // which is this phase creating its MachineSets. Once they all exist the
    // machine API rolls on without vcfm, and a node of theirs joining its
    // pool (not yet counted updated) is no rollout to hold for.
    let to_create = plan.sets.iter().any(|p| {
        !sets
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some(p.name.as_str()))
    });
    if to_create
        && let Some(wait) = mcp::gate(&ctx.machine_config_pools().await?, 5, "CreateWorkers")
    {
        return Ok(wait);
    }
    let mut ours: Vec<MachineSet> = vec![];
    for planned in &plan.sets {
        let (name, fd, replicas) = (&planned.name, planned.fd, planned.replicas);
        if let Some(ms) = sets
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(name.as_str()))
        {
            if !targets_server(ms, &fd.server) {
                return Err(PhaseError::fatal(format!(
                    "MachineSet {name} already exists but creates machines on {}, not on target {}: vcfm did not create it; rename or delete it and retry",
                    ms.server().unwrap_or_else(|| "no server".into()),
                    fd.server
                )));
            }
            ours.push(ms.clone());
            continue;
        }
        let new = new_worker_machineset(planned.source, name, fd, &infra_id, replicas, ctx.name())
            .map_err(PhaseError::Fatal)?;
        let created = match api.create(&PostParams::default(), &new).await {
            Ok(ms) => {
                ctx.log(
                    LogLevel::Info,
                    "machines",
                    format!(
                        "created {} MachineSet {name} ({replicas} replica(s)) on {} in failure domain {}, copied from {}",
                        planned.role, fd.server, fd.name, planned.source_name
                    ),
                );
                ms
            }
            // Created by an earlier attempt whose result was lost: adopt it.
            Err(kube::Error::Api(s)) if s.code == 409 => api
                .get(name)
                .await
                .map_err(|e| PhaseError::from(e).context(&format!("reading MachineSet {name}")))?,
            Err(e) => {
                return Err(PhaseError::from(e).context(&format!("creating MachineSet {name}")));
            }
        };
        ours.push(created);
    }

    let all_machines = ctx.machines().await?;
    let nodes = ctx.nodes_by_name().await?;
    let infra = ctx
        .infrastructure()
        .await?
        .ok_or_else(|| PhaseError::fatal("Infrastructure cluster does not exist"))?;
    let nets = machines::machine_networks(
        &serde_json::to_value(&infra).map_err(|e| PhaseError::fatal(e.to_string()))?,
    );

    let mut waiting = vec![];
    let mut ready_total = 0usize;
    let mut desired_total = 0usize;
    let mut net_warnings = vec![];
    for ms in &ours {
        let name = ms.metadata.name.as_deref().unwrap_or("");
        let desired = usize::try_from(ms.spec.replicas.unwrap_or(0).max(0)).unwrap_or(0);
        desired_total += desired;
        let ms_machines = machines_of(ms, &all_machines);
        let mut ready = 0usize;
        for m in &ms_machines {
            match machine_progress(m, &nodes) {
                MachineProgress::Failed(why) => {
                    return Ok(Outcome::Failed {
                        message: format!(
                            "{why}. Fix the cause on the target vCenter (template, datastore, network, resource pool, quota), then delete the failed Machine so that MachineSet {name} replaces it, or roll back"
                        ),
                    });
                }
                MachineProgress::Ready => ready += 1,
                MachineProgress::Waiting(s) => waiting.push(s),
            }
            if let Some(n) = machines::node_name(m).and_then(|n| nodes.get(n)) {
                let bad = machines::outside_networks(&internal_ips(n), &nets);
                if !bad.is_empty() {
                    net_warnings.push(format!(
                        "node {} (machine {}) has InternalIP {} outside the cluster's machine network(s): the target port group {} probably does not carry the machine network; check spec.failureDomains[].topology.networks before the control plane moves",
                        n.metadata.name.as_deref().unwrap_or(""),
                        m.metadata.name.as_deref().unwrap_or(""),
                        bad.join(", "),
                        ms.provider_spec()
                            .ok()
                            .flatten()
                            .and_then(|p| p.network)
                            .map(|n| n.devices.iter().filter_map(|d| d.network_name.clone()).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        let live = ms_machines
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .count();
        if live < desired {
            waiting.push(format!(
                "MachineSet {name}: {live}/{desired} machine(s) created"
            ));
        }
        ready_total += ready.min(desired);
    }
    report_network_warnings(ctx, net_warnings);

    let names: Vec<&str> = ours
        .iter()
        .filter_map(|m| m.metadata.name.as_deref())
        .collect();
    if waiting.is_empty() && ready_total >= desired_total {
        return Ok(Outcome::Completed {
            message: format!(
                "{ready_total} machine(s) Running with Ready nodes on the target in MachineSet(s) {}",
                names.join(", ")
            ),
        });
    }
    // In steps of 10 from 10 to 90: a write for every tenth of the machines,
    // whatever their number; the count between is detail, written within
    // `transition::DETAIL_REFRESH`.
    let progress = (89 * ready_total)
        .checked_div(desired_total)
        .and_then(|p| i32::try_from(10 + p / 10 * 10).ok())
        .unwrap_or(50);
    Ok(Outcome::Running {
        progress,
        message: format!(
            "{ready_total}/{desired_total} new machine(s) ready in MachineSet(s) {}",
            names.join(", ")
        ),
        waiting_for: waiting.into_iter().take(20).collect(),
        recheck: RECHECK,
    })
}

/// Adds new wrong-network findings to status warnings (once each) and logs them.
fn report_network_warnings(ctx: &PhaseCtx, found: Vec<String>) {
    if found.is_empty() {
        return;
    }
    let mut warnings = ctx
        .migration
        .status
        .as_ref()
        .map(|s| s.warnings.clone())
        .unwrap_or_default();
    let mut added = false;
    for w in found {
        if !warnings.contains(&w) {
            ctx.log(LogLevel::Warning, "network", w.clone());
            warnings.push(w);
            added = true;
        }
    }
    if added {
        ctx.record(|u| u.warnings = Some(warnings));
    }
}

async fn rollback(ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
    let client = ctx.client();
    let mine = created_by_value(ctx.name());
    let sets = ctx.machine_sets().await?;
    let ours: Vec<&MachineSet> = sets
        .iter()
        .filter(|ms| {
            ms.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CREATED_BY_LABEL))
                == Some(&mine)
        })
        .collect();
    if ours.is_empty() {
        return Ok(RollbackOutcome::Done(
            "no MachineSet created by this migration remains".into(),
        ));
    }
    let all_machines = ctx.machines().await?;
    let mut pending = vec![];
    for ms in ours {
        let name = ms.metadata.name.as_deref().unwrap_or("");
        if ms.spec.replicas.unwrap_or(1) != 0 {
            machines::scale_machineset(client.clone(), name, 0).await?;
            ctx.log(
                LogLevel::Info,
                "machines",
                format!("scaled MachineSet {name} to 0"),
            );
            pending.push(format!("MachineSet {name} scaling down"));
            continue;
        }
        let left = machines_of(ms, &all_machines).len();
        if left > 0 {
            pending.push(format!(
                "{left} machine(s) of MachineSet {name} to be deleted"
            ));
            continue;
        }
        if machines::delete_empty_machineset(client.clone(), ms).await? {
            ctx.log(
                LogLevel::Info,
                "machines",
                format!("deleted MachineSet {name}"),
            );
        }
        pending.push(format!("MachineSet {name} to be deleted"));
    }
    Ok(RollbackOutcome::InProgress {
        message: pending.join("; "),
        recheck: RECHECK,
    })
}
