//! Phase 7: append the target vCenter(s) and failure domains to Infrastructure
//! `cluster` (deduplicated, source first, nothing else touched).
//!
//! With `VSphereMultiVCenterDay2` the update is plain. Without it the CRD rule
//! is lifted around the update (the CVO is at 0) and restored from the backup
//! on a fresh read; a crash in between is repaired by the next step, which
//! finds the Infrastructure already updated and restores the rule.

use super::{RollbackOutcome, Steps};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::{fd_refs, infra, pods};
use crate::state::Outcome;
use std::time::Duration;
use vcfm_api::LogLevel;

pub struct UpdateInfrastructure;

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let facts = ctx.recorded_cluster()?.clone();
    let source = ctx.recorded_source()?.server.clone();
    let (vcenters, domains) =
        infra::target_entries(&ctx.migration.spec.failure_domains, &facts.infra_id);
    let res = infra::apply_recorded_edit(super::infra_edit(ctx).await?, |i| {
        // The recorded source must still be there, first: never guess it.
        if !infra::has_vcenter(i, &source) {
            return Ok(false);
        }
        infra::add_vcenters(i, &vcenters, &domains)
    })
    .await?;
    // Just written: the watch may not have it yet, but the cache read gives
    // what the write returned until it does (without caches, from the API).
    let live = ctx
        .infrastructure()
        .await?
        .ok_or_else(|| PhaseError::fatal("Infrastructure cluster disappeared"))?;
    if !infra::has_vcenter(&live, &source) {
        return Ok(Outcome::Failed {
            message: format!(
                "Infrastructure no longer lists the source vCenter {source} recorded by Preflight: refusing to edit it"
            ),
        });
    }
    let missing: Vec<&str> = ctx
        .migration
        .target_servers()
        .into_iter()
        .filter(|s| !infra::has_vcenter(&live, s))
        .collect();
    if !missing.is_empty() {
        return Err(PhaseError::transient(format!(
            "Infrastructure does not list {} yet",
            missing.join(", ")
        )));
    }
    if res.changed {
        ctx.log(
            LogLevel::Info,
            "infrastructure",
            format!(
                "added vCenter(s) {} and failure domain(s) {}",
                ctx.migration.target_servers().join(", "),
                domains
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if res.rule_restored {
        ctx.log(
            LogLevel::Info,
            "infrastructure",
            if res.changed {
                "restored the Infrastructure CRD vcenters rule after the update"
            } else {
                "restored the Infrastructure CRD vcenters rule left lifted by an interrupted run"
            },
        );
    }
    let servers: Vec<String> = live.vcenters().iter().map(|v| v.server.clone()).collect();
    Ok(Outcome::Completed {
        message: format!(
            "Infrastructure lists vCenters {} ({})",
            servers.join(", "),
            if facts.multi_vcenter_day2 {
                "VSphereMultiVCenterDay2 enabled: plain update"
            } else {
                "CRD vcenters rule lifted for the update and restored"
            }
        ),
    })
}

/// Undoes vcfm's changes to the Infrastructure (and puts the CRD rule back),
/// then restarts the vSphere pods once so they drop the target configuration.
/// Later rollback steps (UpdateConfig) have already run when this one does.
async fn rollback(ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
    // The machine API's admission policies deny dropping a failure domain a
    // Machine, MachineSet or the CPMS still uses: wait for them to go first.
    let kept = infra::backed_up_spec(&super::backups(ctx))
        .await?
        .platform_spec
        .and_then(|p| p.vsphere)
        .and_then(|v| v.failure_domains)
        .unwrap_or_default();
    let blockers = fd_refs::blockers(
        &kept,
        &ctx.machines().await?,
        &ctx.machine_sets().await?,
        &ctx.control_plane_machine_sets().await?,
    );
    if !blockers.is_empty() {
        return Ok(RollbackOutcome::InProgress {
            message: format!(
                "waiting until nothing refers to the target failure domains before restoring the Infrastructure: {}",
                blockers.join("; ")
            ),
            recheck: Duration::from_secs(5),
        });
    }
    let edit = super::infra_edit(ctx).await?;
    let (res, plan) = match infra::undo_changes(edit, &ctx.migration.spec.failure_domains).await {
        Ok(r) => r,
        Err(e) if fd_refs::is_policy_denial(&e) => {
            return Ok(RollbackOutcome::InProgress {
                message: format!("restoring the Infrastructure was denied; retrying: {e}"),
                recheck: Duration::from_secs(5),
            });
        }
        Err(e) => return Err(e),
    };
    let since = ctx
        .migration
        .status
        .as_ref()
        .and_then(|s| s.rollback.as_ref())
        .map(|r| r.start_time.0)
        .unwrap_or(ctx.now);
    let st = pods::restart_step(ctx, pods::VSPHERE_PODS, since).await?;
    let tail = format!(
        "{}; {} vSphere pod(s) restarted",
        if res.rule_restored {
            "; CRD vcenters rule restored"
        } else {
            ""
        },
        st.deleted.len()
    );
    Ok(
        match super::undo_outcome(ctx, "Infrastructure cluster", &plan) {
            RollbackOutcome::Done(m) => RollbackOutcome::Done(m + &tail),
            RollbackOutcome::Conflict(m) => RollbackOutcome::Conflict(m + &tail),
            other => other,
        },
    )
}

impl Steps for UpdateInfrastructure {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        rollback(ctx).await
    }
}
