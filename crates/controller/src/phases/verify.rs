//! Phase 15: the end state, checked: every operator stable (machine-config
//! included again), only target vCenters in the Infrastructure, every Machine
//! on a target, every Node Ready; then the cluster-version operator back at
//! its original replicas and available. Until then the phase waits (its
//! deadline applies); a Verify failure would leave the CVO down, so nothing
//! here fails outright.

use super::disable_cvo::restore_cvo;
use super::{Phase, RollbackOutcome};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::health;
use crate::state::Outcome;
use futures::future::BoxFuture;
use std::time::Duration;

pub struct Verify;

const RECHECK: Duration = Duration::from_secs(5);

impl Phase for Verify {
    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(execute(ctx))
    }
}

/// What still stands between the cluster and "migrated", empty when nothing.
pub async fn remaining(ctx: &PhaseCtx) -> Result<Vec<String>, PhaseError> {
    let targets = ctx.migration.target_servers();
    let mut waiting = health::unstable_operators(&ctx.cluster_operators().await?, &[]);
    let infra = ctx
        .infrastructure()
        .await?
        .ok_or_else(|| PhaseError::fatal("Infrastructure cluster does not exist"))?;
    for v in infra.vcenters() {
        if !targets.contains(&v.server.as_str()) {
            waiting.push(format!(
                "Infrastructure still lists vCenter {} (not a target)",
                v.server
            ));
        }
    }
    for fd in infra.failure_domains() {
        if !targets.contains(&fd.server.as_str()) {
            waiting.push(format!(
                "Infrastructure failure domain {} is on {} (not a target)",
                fd.name, fd.server
            ));
        }
    }
    for m in ctx.machines().await? {
        let server = m.server().unwrap_or_default();
        if !targets.contains(&server.as_str()) {
            waiting.push(format!(
                "machine {} is on {} (not a target)",
                m.metadata.name.as_deref().unwrap_or(""),
                if server.is_empty() {
                    "no server"
                } else {
                    &server
                }
            ));
        }
    }
    waiting.extend(health::unready_nodes(ctx.nodes_by_name().await?.values()));
    Ok(waiting)
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let waiting = remaining(ctx).await?;
    if !waiting.is_empty() {
        return Ok(Outcome::Running {
            progress: 30,
            message: format!("{} check(s) not yet satisfied", waiting.len()),
            waiting_for: waiting.into_iter().take(20).collect(),
            recheck: RECHECK,
        });
    }
    match restore_cvo(ctx).await? {
        RollbackOutcome::Done(msg) | RollbackOutcome::Conflict(msg) => Ok(Outcome::Completed {
            message: format!(
                "operators stable, only target vCenters configured, every machine on the target and every node Ready; {msg}"
            ),
        }),
        RollbackOutcome::InProgress { message, .. } => Ok(Outcome::Running {
            progress: 80,
            message,
            waiting_for: vec!["deployment/cluster-version-operator available".into()],
            recheck: RECHECK,
        }),
    }
}
