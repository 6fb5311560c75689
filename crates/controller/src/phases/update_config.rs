//! Phase 8: add `vcenter.<target>` to `openshift-config/cloud-provider-config`
//! (YAML or INI, the rest preserved byte-for-byte where possible), then
//! restart the machine-config-operator pods so the ControllerConfig resyncs, and
//! wait until every MachineConfigPool has rolled its nodes to the new config.

use super::{RollbackOutcome, Steps};
use crate::backup::{self, BackupStore, manifest};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::cloud_config::{self, VcenterEntry};
use crate::openshift::infra::datacenter_name;
use crate::openshift::{mcp, pods};
use crate::phases::backup::keys;
use crate::state::Outcome;
use crate::undo;
use std::time::Duration;
use vcfm_api::{LogLevel, PhaseName, PhaseStatus};

pub struct UpdateConfig;

/// One entry per target vCenter with the datacenters of its failure domains.
pub fn target_entries(ctx: &PhaseCtx) -> Vec<VcenterEntry> {
    let mut out: Vec<VcenterEntry> = vec![];
    for fd in &ctx.migration.spec.failure_domains {
        let dc = datacenter_name(fd);
        match out.iter_mut().find(|e| e.server == fd.server) {
            Some(e) => {
                if !e.datacenters.contains(&dc) {
                    e.datacenters.push(dc);
                }
            }
            None => out.push(VcenterEntry::new(fd.server.clone(), vec![dc])),
        }
    }
    out
}

/// When the current phase (or rollback) began: pods created before are old.
pub fn phase_start(ctx: &PhaseCtx) -> jiff::Timestamp {
    ctx.migration
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .and_then(|c| c.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(ctx.now)
}

/// The progress of the steps that wait for the pools, once the restarted
/// machine-config-operator pod was seen Ready.
const POOLS_PROGRESS: i32 = 80;

/// Whether an earlier step of this run of the phase saw the restarted
/// machine-config-operator pod Ready: its progress, [`POOLS_PROGRESS`], is on
/// record. Seen once, it stays seen: the pool rollout that follows drains the
/// masters, and the drain evicts that pod like any other (machine-config-operator
/// `pkg/controller/drain/drain_controller.go`: a `drain.Helper` with `Force` and
/// `IgnoreAllDaemonSets`; its comment notes the controller's own pod goes too),
/// so looking at it again would send the phase back to waiting for it.
fn mco_restarted(ctx: &PhaseCtx) -> bool {
    ctx.migration
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .is_some_and(|c| {
            c.name == PhaseName::UpdateConfig
                && c.status == PhaseStatus::Running
                && c.progress >= POOLS_PROGRESS
        })
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let entries = target_entries(ctx);
    let (loc, cm, before) = ctx.cloud_config().await?;
    let fatal = |e: cloud_config::CloudConfigError| PhaseError::fatal(e.to_string());
    let mut cur: Option<String> = None;
    for e in &entries {
        if let Some(next) =
            cloud_config::add_vcenter(cur.as_deref().unwrap_or(&before), e).map_err(fatal)?
        {
            cur = Some(next);
        }
    }
    // What vcfm is about to write, recorded first (see `crate::undo`). A step
    // with nothing to add whose record status already vouches for (the steps
    // that wait for the pods and the pools) leaves the backup Secret alone.
    // Without the manifest in status (killed after the record and the write,
    // before status), the record is read back so its manifest reaches status.
    let record = match &cur {
        Some(after) => undo::diff(
            undo::cloud_config_units,
            &cloud_config::as_units(&before).map_err(fatal)?,
            &cloud_config::as_units(after).map_err(fatal)?,
        ),
        None => undo::ChangeRecord::default(),
    };
    let recorded = match manifest(ctx.backups(), keys::CLOUD_PROVIDER_CONFIG_CHANGES) {
        // From the Secret's watch (see `crate::named`): only a copy holding
        // what status vouches for counts, so a record grown by a step killed
        // before its status write is read and recorded again.
        Ok(m) if record.changes.is_empty() => ctx
            .secret(ctx.namespace(), &backup::secret_name(ctx.name()))
            .await?
            .is_some_and(|s| backup::holds(&s, m)),
        _ => false,
    };
    if !recorded
        && let Some(m) = BackupStore::of(ctx)
            .save_changes(
                keys::CLOUD_PROVIDER_CONFIG_CHANGES,
                "v1/ConfigMap changes",
                &loc.name,
                Some(cloud_config::NAMESPACE),
                &record,
                ctx.now,
            )
            .await?
    {
        ctx.record(|u| u.backups.push(m));
    }
    let changed = cur.is_some();
    let text = match cur {
        Some(after) => cloud_config::text_of(
            &cloud_config::write(ctx.client(), &loc, cm, after).await?,
            &loc,
        )?,
        None => before,
    };
    let format = cloud_config::detect(&text);
    let listed = cloud_config::vcenters(&text).map_err(|e| PhaseError::fatal(e.to_string()))?;
    if changed {
        ctx.log(
            LogLevel::Info,
            "cloud-config",
            format!(
                "added {} to {} ({format:?}); it now lists {}",
                entries
                    .iter()
                    .map(|e| e.server.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                loc.describe(),
                listed.join(", ")
            ),
        );
    }
    if !mco_restarted(ctx) {
        let st = pods::restart_step(ctx, &[pods::MCO_PODS], phase_start(ctx)).await?;
        for d in &st.deleted {
            ctx.log(LogLevel::Info, "pods", format!("deleted pod {d}"));
        }
        if !st.done() {
            return Ok(Outcome::Running {
                progress: 60,
                message: "cloud-provider-config updated; waiting for the restarted machine-config-operator pod".into(),
                waiting_for: st.waiting,
                recheck: Duration::from_secs(2),
            });
        }
    }
    // The new cloud config reaches every node through the machine-config operator,
    // which rolls each pool node by node with reboots: wait for it (see `mcp`).
    let pools = ctx.machine_config_pools().await?;
    if let Some(wait) = mcp::verdict(
        &pools,
        Some(phase_start(ctx)),
        POOLS_PROGRESS,
        "cloud-provider-config updated and machine-config-operator restarted",
    ) {
        return Ok(wait);
    }
    Ok(Outcome::Completed {
        message: format!(
            "cloud-provider-config ({format:?}) lists vCenters {}; machine-config-operator restarted; {} MachineConfigPool(s) rolled to the new config",
            listed.join(", "),
            pools.len()
        ),
    })
}

/// Removes the vCenter entries vcfm added, unless someone changed them since
/// (then they stay and the step reports a conflict); every other byte of the
/// configuration, edits made by others included, is kept. The pods are
/// restarted by the UpdateInfrastructure rollback, which runs next.
async fn rollback(ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
    let store = BackupStore::of(ctx);
    let backup = store
        .load(manifest(ctx.backups(), keys::CLOUD_PROVIDER_CONFIG)?)
        .await?;
    // The key the backup was taken of (Infrastructure spec.cloudConfig).
    let (loc, cm, text) = ctx.cloud_config().await?;
    let original_text = backup
        .pointer(&format!(
            "/data/{}",
            loc.key.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let fatal = |e: cloud_config::CloudConfigError| PhaseError::fatal(e.to_string());
    let original = cloud_config::as_units(original_text).map_err(fatal)?;
    let recorded = store
        .load_changes(ctx.backups(), keys::CLOUD_PROVIDER_CONFIG_CHANGES)
        .await?;
    let live = cloud_config::as_units(&text).map_err(fatal)?;
    // Backups from before change records: target entries the original lacked.
    let record = recorded.unwrap_or_else(|| {
        undo::ChangeRecord::assumed(
            &live,
            ctx.migration
                .target_servers()
                .into_iter()
                .map(|s| vec![undo::field("vcenter"), undo::field(s)]),
        )
    });
    let mut plan = undo::Plan::new(&original, &record, &live);
    let mut out = text.clone();
    for (path, verdict) in &mut plan.steps {
        let [undo::Step::Field(_), undo::Step::Field(server)] = path.as_slice() else {
            continue;
        };
        match verdict {
            undo::Verdict::Restore(None) => {
                if let Some(next) = cloud_config::remove_vcenter(&out, server).map_err(fatal)? {
                    out = next;
                }
            }
            // vcfm only ever adds entries; an entry it changed cannot be
            // rebuilt from the text, so it is left for the administrator.
            undo::Verdict::Restore(Some(_)) => *verdict = undo::Verdict::Conflict,
            _ => {}
        }
    }
    if out != text {
        cloud_config::write(ctx.client(), &loc, cm, out).await?;
    }
    Ok(super::undo_outcome(ctx, &loc.describe(), &plan))
}

impl Steps for UpdateConfig {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        rollback(ctx).await
    }
}
