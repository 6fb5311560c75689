//! Phase 12: point the ControlPlaneMachineSet at the target failure domain(s)
//! and make it Active, in place; the CPMS operator then replaces the masters
//! one at a time. The point of no return: once the first new master joins
//! etcd, restoring the source configuration would strand it.
//!
//! The API server may be unavailable for minutes during the rollout: every
//! read here is retried as a transient error, and completion is judged only
//! from counters the operator reported for the current generation plus the
//! masters themselves.

use super::Steps;
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::machines::{MachineProgress, cpms_patch, machine_progress};
use crate::state::Outcome;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;
use vcfm_api::LogLevel;
use vcfm_api::openshift::{CPMS_NAME, ControlPlaneMachineSet, MACHINE_API_NAMESPACE, Machine};

pub struct RecreateCpms;

const RECHECK: Duration = Duration::from_secs(5);

impl Steps for RecreateCpms {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }
}

/// Masters selected by the CPMS selector (the role label when it has none).
fn masters<'a>(cpms: &ControlPlaneMachineSet, all: &'a [Machine]) -> Vec<&'a Machine> {
    let sel = cpms
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            [(
                vcfm_api::openshift::LABEL_ROLE.to_string(),
                "master".to_string(),
            )]
            .into()
        });
    all.iter()
        .filter(|m| {
            let l = m.metadata.labels.as_ref();
            sel.iter().all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v))
        })
        .collect()
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let client = ctx.client();
    if let Some(wait) =
        crate::openshift::mcp::gate(&ctx.machine_config_pools().await?, 5, "RecreateCPMS")
    {
        return Ok(wait);
    }
    let fds = ctx.migration.control_plane_failure_domains();
    let names: Vec<&str> = fds.iter().map(|f| f.name.as_str()).collect();
    let targets = ctx.migration.target_servers();
    if names.is_empty() {
        return Err(PhaseError::fatal(
            "no target failure domain receives the control plane: check controlPlaneMachineSetConfig.failureDomain",
        ));
    }

    // The operator resolves names through the Infrastructure: they must be there first.
    let infra = ctx
        .infrastructure()
        .await?
        .ok_or_else(|| PhaseError::fatal("Infrastructure cluster does not exist"))?;
    let missing: Vec<&str> = fds
        .iter()
        .filter(|fd| {
            !infra
                .failure_domains()
                .iter()
                .any(|i| i.name == fd.name && i.server == fd.server)
        })
        .map(|fd| fd.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(PhaseError::fatal(format!(
            "failure domain(s) {} are not in the Infrastructure's spec.platformSpec.vsphere.failureDomains with their target server: the CPMS operator could not place masters there (UpdateInfrastructure should have added them)",
            missing.join(", ")
        )));
    }

    let api = Api::<ControlPlaneMachineSet>::namespaced(client.clone(), MACHINE_API_NAMESPACE);
    let cached = ctx.control_plane_machine_sets().await?;
    let cpms = match cached
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(CPMS_NAME))
    {
        Some(c) => c,
        // Deleted CPMSs are regenerated (Inactive) by the operator: wait for it.
        None => {
            return Ok(Outcome::Running {
                progress: 1,
                message: "ControlPlaneMachineSet openshift-machine-api/cluster is missing; waiting for the operator to regenerate it".into(),
                waiting_for: vec!["controlplanemachineset/cluster to exist".into()],
                recheck: RECHECK,
            });
        }
    };
    let value = serde_json::to_value(&cpms).map_err(|e| PhaseError::fatal(e.to_string()))?;
    if let Some(mut patch) = cpms_patch(&value, &names) {
        // Conditional on what was read: a concurrent edit makes us look again.
        patch["metadata"] =
            serde_json::json!({ "resourceVersion": cpms.metadata.resource_version });
        api.patch(CPMS_NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| PhaseError::from(e).context("patching the ControlPlaneMachineSet"))?;
        ctx.log(
            LogLevel::Info,
            "cpms",
            format!(
                "ControlPlaneMachineSet set Active with RollingUpdate on failure domain(s) {} (was {} on {})",
                names.join(", "),
                cpms.spec.state.as_deref().unwrap_or("unset"),
                cpms.failure_domain_names().join(", ")
            ),
        );
        return Ok(Outcome::Running {
            progress: 5,
            message: format!(
                "ControlPlaneMachineSet pointed at {}; waiting for the operator to start the rollout",
                names.join(", ")
            ),
            waiting_for: vec!["the CPMS operator to observe the new generation".into()],
            recheck: RECHECK,
        });
    }

    let desired = usize::try_from(cpms.spec.replicas.unwrap_or(3).max(1)).unwrap_or(3);
    let all = ctx.machines().await?;
    let nodes = ctx.nodes_by_name().await?;
    let current = masters(&cpms, &all);
    let mut waiting = vec![];
    let mut on_target_ready = 0usize;
    for m in &current {
        let on_target = m.server().is_some_and(|s| targets.contains(&s.as_str()));
        match machine_progress(m, &nodes) {
            MachineProgress::Failed(why) if on_target => {
                return Ok(Outcome::Failed {
                    message: format!(
                        "{why}. The control-plane rollout is stuck: fix the cause on the target vCenter and delete the failed master Machine so the CPMS operator creates a new one, then the migration can be resumed manually (no automatic rollback past this point)"
                    ),
                });
            }
            MachineProgress::Ready if on_target => on_target_ready += 1,
            MachineProgress::Waiting(s) if on_target => waiting.push(s),
            _ => {
                if m.metadata.deletion_timestamp.is_none() {
                    waiting.push(format!(
                        "master {} on {} to be replaced",
                        m.metadata.name.as_deref().unwrap_or(""),
                        m.server().unwrap_or_default()
                    ));
                } else {
                    waiting.push(format!(
                        "master {} being deleted",
                        m.metadata.name.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }
    let st = cpms.status.clone().unwrap_or_default();
    let observed =
        st.observed_generation.is_some() && st.observed_generation == cpms.metadata.generation;
    if !observed {
        waiting.push(format!(
            "the CPMS operator to observe generation {} (observed {})",
            cpms.metadata.generation.unwrap_or(0),
            st.observed_generation.unwrap_or(0)
        ));
    }
    let done = observed
        && cpms.rollout_complete()
        && on_target_ready == desired
        && current.len() == desired
        && waiting.is_empty();
    if done {
        return Ok(Outcome::Completed {
            message: format!(
                "all {desired} control-plane machines replaced on {} and Ready",
                names.join(", ")
            ),
        });
    }
    let counters = if observed {
        format!(
            "replicas {}, updated {}, ready {}",
            st.replicas.unwrap_or(0),
            st.updated_replicas.unwrap_or(0),
            st.ready_replicas.unwrap_or(0)
        )
    } else {
        "counters not yet observed for this generation".into()
    };
    Ok(Outcome::Running {
        progress: i32::try_from(10 + 89 * on_target_ready.min(desired) / desired).unwrap_or(50),
        message: format!(
            "control-plane rollout: {on_target_ready}/{desired} masters Ready on the target ({counters})"
        ),
        waiting_for: waiting.into_iter().take(20).collect(),
        recheck: RECHECK,
    })
}
