//! Phase 8: add `vcenter.<target>` to `openshift-config/cloud-provider-config`
//! (YAML or INI, the rest preserved byte-for-byte where possible), then
//! restart the machine-config-operator pods so the ControllerConfig resyncs.

use super::{Phase, RollbackOutcome, RollbackSupport};
use crate::backup::{BackupStore, manifest, restore_field};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::cloud_config::{self, VcenterEntry};
use crate::openshift::infra::datacenter_name;
use crate::openshift::pods;
use crate::phases::backup::keys;
use crate::state::Outcome;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use std::time::Duration;
use vcfm_api::{LogLevel, PhaseName};

pub struct UpdateConfig;

const PHASE: PhaseName = PhaseName::UpdateConfig;

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

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let entries = target_entries(ctx);
    let changed = cloud_config::edit(ctx.client(), |text| {
        let mut cur: Option<String> = None;
        for e in &entries {
            if let Some(next) = cloud_config::add_vcenter(cur.as_deref().unwrap_or(text), e)? {
                cur = Some(next);
            }
        }
        Ok(cur)
    })
    .await?;
    let (_, text) = cloud_config::read(ctx.client()).await?;
    let format = cloud_config::detect(&text);
    let listed = cloud_config::vcenters(&text).map_err(|e| PhaseError::fatal(e.to_string()))?;
    if changed {
        ctx.log(
            LogLevel::Info,
            "cloud-config",
            format!(
                "added {} to cloud-provider-config ({format:?}); it now lists {}",
                entries
                    .iter()
                    .map(|e| e.server.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                listed.join(", ")
            ),
        );
    }
    let st = pods::restart_step(&ctx.client(), &[pods::MCO_PODS], phase_start(ctx)).await?;
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
    Ok(Outcome::Completed {
        message: format!(
            "cloud-provider-config ({format:?}) lists vCenters {}; machine-config-operator restarted",
            listed.join(", ")
        ),
    })
}

impl Phase for UpdateConfig {
    fn name(&self) -> PhaseName {
        PHASE
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(15 * 60)
    }

    fn rollback_support(&self) -> RollbackSupport {
        RollbackSupport::Supported
    }

    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(execute(ctx))
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a PhaseCtx,
    ) -> BoxFuture<'a, Result<RollbackOutcome, PhaseError>> {
        Box::pin(async move {
            let m = manifest(ctx.backups(), keys::CLOUD_PROVIDER_CONFIG)?;
            let backup = BackupStore::new(ctx.client(), &ctx.migration)
                .load(m)
                .await?;
            let api = Api::<ConfigMap>::namespaced(ctx.client(), cloud_config::NAMESPACE);
            // The ConfigMap the backup was taken of (Infrastructure spec.cloudConfig).
            let name = backup
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(cloud_config::NAME)
                .to_string();
            let changed = restore_field(&api, &name, &backup, "data").await?;
            // The pods are restarted by the UpdateInfrastructure rollback, which runs next.
            Ok(RollbackOutcome::Done(if changed {
                "cloud-provider-config restored from backup".into()
            } else {
                "cloud-provider-config already matched the backup".into()
            }))
        })
    }
}
