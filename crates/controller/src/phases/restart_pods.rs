//! Phase 9: delete the pods that read the vSphere configuration and wait until
//! their replacements (pods created after the phase started, not the old ones
//! still terminating) are Ready in every group this cluster has.

use super::update_config::phase_start;
use super::{RollbackOutcome, Steps};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::pods;
use crate::state::Outcome;
use std::time::Duration;
use vcfm_api::LogLevel;

pub struct RestartPods;

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let st = pods::restart_step(ctx, pods::VSPHERE_PODS, phase_start(ctx)).await?;
    if !st.deleted.is_empty() {
        ctx.log(
            LogLevel::Info,
            "pods",
            format!(
                "deleted {} pod(s): {}",
                st.deleted.len(),
                st.deleted.join(", ")
            ),
        );
    }
    if st.present == 0 {
        return Ok(Outcome::Completed {
            message: "no vSphere-related pods found on this cluster; nothing to restart".into(),
        });
    }
    if !st.done() {
        return Ok(Outcome::Running {
            progress: (st.ready * 100 / st.present.max(1)) as i32,
            message: format!(
                "{}/{} pod group(s) restarted and Ready",
                st.ready, st.present
            ),
            waiting_for: st.waiting,
            recheck: Duration::from_secs(2),
        });
    }
    Ok(Outcome::Completed {
        message: format!(
            "{} pod group(s) restarted; their new pods are Ready",
            st.present
        ),
    })
}

impl Steps for RestartPods {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, _ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        Ok(RollbackOutcome::Done(
            "nothing to undo here: the pods are restarted once more after the configuration is restored (rollback of UpdateInfrastructure)".into(),
        ))
    }
}
