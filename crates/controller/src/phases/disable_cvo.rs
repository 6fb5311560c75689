//! Phase 3: stop the cluster-version operator so it does not revert the
//! Infrastructure CRD while its vcenters rule is lifted. Skipped when the
//! `VSphereMultiVCenterDay2` gate makes that edit unnecessary.

use super::{Phase, RollbackOutcome};
use crate::backup::{BackupStore, manifest};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::cvo;
use crate::phases::backup::keys;
use crate::state::Outcome;
use crate::undo;
use futures::future::BoxFuture;
use serde_json::json;
use std::time::Duration;

pub struct DisableCvo;

/// Replicas to restore: the backed-up count, at least 1.
pub async fn original_replicas(ctx: &PhaseCtx) -> i32 {
    let Ok(m) = manifest(ctx.backups(), keys::CVO) else {
        return 1;
    };
    match BackupStore::of(ctx).load(m).await {
        Ok(v) => v
            .get("replicas")
            .and_then(|r| r.as_i64())
            .and_then(|r| i32::try_from(r).ok())
            .unwrap_or(1)
            .max(1),
        Err(_) => 1,
    }
}

/// Scales the CVO back and reports whether it is available again. vcfm's
/// change is "replicas 0": when someone else has set another count since,
/// that count is kept and reported as a conflict.
pub async fn restore_cvo(ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
    let want = original_replicas(ctx).await;
    let st = cvo::state(&ctx.cvo_deployment().await?);
    let (original, wrote, live) = (json!(want), json!(0), json!(st.desired));
    if undo::verdict(Some(&original), Some(&wrote), Some(&live)) == undo::Verdict::Conflict {
        let msg = format!(
            "cluster-version-operator left at {} replica(s), set by someone else after vcfm scaled it to 0 (it had {want}; conflict: check by hand)",
            st.desired
        );
        ctx.log(vcfm_api::LogLevel::Warning, "rollback", msg.clone());
        return Ok(RollbackOutcome::Conflict(msg));
    }
    if st.desired != want {
        cvo::scale(ctx.client(), want, &ctx.shared.config.manager).await?;
    }
    if st.available >= want.min(1) && st.desired == want {
        return Ok(RollbackOutcome::Done(format!(
            "cluster-version-operator back at {want} replica(s) and available"
        )));
    }
    Ok(RollbackOutcome::InProgress {
        message: format!(
            "waiting for the cluster-version-operator to become available ({}/{want})",
            st.available
        ),
        recheck: Duration::from_secs(5),
    })
}

impl Phase for DisableCvo {
    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(async move {
            if ctx.recorded_cluster()?.multi_vcenter_day2 {
                return Ok(Outcome::Skipped {
                    message: "VSphereMultiVCenterDay2 is enabled: vCenters can be added without editing the Infrastructure CRD, so the cluster-version-operator keeps running".into(),
                });
            }
            let st = cvo::state(&ctx.cvo_deployment().await?);
            if st.desired != 0 {
                cvo::scale(ctx.client(), 0, &ctx.shared.config.manager).await?;
            }
            if st.running > 0 {
                return Ok(Outcome::Running {
                    progress: 50,
                    message: format!(
                        "scaled the cluster-version-operator to 0; {} pod(s) still running",
                        st.running
                    ),
                    waiting_for: vec!["deployment/cluster-version-operator pods to stop".into()],
                    recheck: Duration::from_secs(5),
                });
            }
            Ok(Outcome::Completed {
                message: "cluster-version-operator scaled to 0".into(),
            })
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a PhaseCtx,
    ) -> BoxFuture<'a, Result<RollbackOutcome, PhaseError>> {
        Box::pin(restore_cvo(ctx))
    }
}
