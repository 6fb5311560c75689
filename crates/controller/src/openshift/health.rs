//! Cluster health gates: operators stable by the explicit rule, nodes Ready.

use crate::context::PhaseCtx;
use crate::error::PhaseError;

/// Operators that are not stable, with the reasons, skipping `exclude`.
pub async fn unstable_operators(
    ctx: &PhaseCtx,
    exclude: &[&str],
) -> Result<Vec<String>, PhaseError> {
    let list = ctx.cluster_operators().await?;
    let mut out = vec![];
    for co in list {
        let name = co.metadata.name.clone().unwrap_or_default();
        if exclude.contains(&name.as_str()) {
            continue;
        }
        let why = co.instability();
        if !why.is_empty() {
            out.push(format!("clusteroperator/{name}: {}", why.join(", ")));
        }
    }
    out.sort();
    Ok(out)
}

/// Nodes whose Ready condition is not True.
pub async fn unready_nodes(ctx: &PhaseCtx) -> Result<Vec<String>, PhaseError> {
    let list = ctx.nodes_by_name().await?;
    let mut out = vec![];
    for n in list.into_values() {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        if ready != Some("True") {
            out.push(format!(
                "node/{}: Ready={}",
                n.metadata.name.unwrap_or_default(),
                ready.unwrap_or("unknown")
            ));
        }
    }
    out.sort();
    Ok(out)
}
