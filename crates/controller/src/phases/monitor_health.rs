//! Phase 10: wait until the cluster has digested the new configuration:
//! every cluster operator stable by the explicit rule (machine-config
//! excluded while two vCenters are configured, as it reports Degraded then)
//! and every node Ready. The status names what it waits for; an operator
//! that never recovers ends the phase at its deadline, named in the message.

use super::Steps;
use super::update_config::phase_start;
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::health;
use crate::state::Outcome;
use std::time::Duration;

pub struct MonitorHealth;

/// Operators left out of the gate while the Infrastructure lists more than one vCenter.
pub fn excluded_operators(vcenters: usize) -> &'static [&'static str] {
    if vcenters > 1 {
        &["machine-config"]
    } else {
        &[]
    }
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let vcenters = ctx
        .infrastructure()
        .await?
        .map(|i| i.vcenters().len())
        .unwrap_or(0);
    let exclude = excluded_operators(vcenters);
    let operators = health::unstable_operators(&ctx.cluster_operators().await?, exclude);
    let nodes = health::unready_nodes(ctx.nodes_by_name().await?.values());
    let elapsed = ctx.now.duration_since(phase_start(ctx)).unsigned_abs();
    // Operators notice a change only after a while: stability counts once the
    // phase has watched this long (ControllerConfig::health_settle).
    let settle = ctx.shared.config.health_settle;
    if operators.is_empty() && nodes.is_empty() {
        if elapsed < settle {
            return Ok(Outcome::Running {
                progress: 90,
                message: "operators stable and nodes Ready; confirming they stay so".into(),
                waiting_for: vec![],
                recheck: settle
                    .saturating_sub(elapsed)
                    .max(Duration::from_millis(200)),
            });
        }
        return Ok(Outcome::Completed {
            message: format!(
                "all cluster operators stable{}, all nodes Ready",
                if exclude.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} excluded while {vcenters} vCenters are configured)",
                        exclude.join(", ")
                    )
                }
            ),
        });
    }
    let mut waiting = operators.clone();
    waiting.extend(nodes.iter().cloned());
    let names = |l: &[String]| {
        l.iter()
            .map(|s| s.split(':').next().unwrap_or(s).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = vec![];
    if !operators.is_empty() {
        parts.push(format!(
            "{} operator(s) not stable: {}",
            operators.len(),
            operators.join("; ")
        ));
    }
    if !nodes.is_empty() {
        parts.push(format!(
            "{} node(s) not Ready: {}",
            nodes.len(),
            names(&nodes)
        ));
    }
    Ok(Outcome::Running {
        progress: 50,
        message: format!("waiting for {}", parts.join("; ")),
        waiting_for: waiting,
        recheck: Duration::from_secs(5),
    })
}

impl Steps for MonitorHealth {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_config_is_excluded_only_with_two_vcenters() {
        assert!(excluded_operators(1).is_empty());
        assert_eq!(excluded_operators(2), ["machine-config"]);
    }
}
