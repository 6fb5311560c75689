//! Cluster health gates: operators stable by the explicit rule, nodes Ready.

use crate::error::PhaseError;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use vcfm_api::openshift::ClusterOperator;

/// Operators that are not stable, with the reasons, skipping `exclude`.
pub async fn unstable_operators(
    client: kube::Client,
    exclude: &[&str],
) -> Result<Vec<String>, PhaseError> {
    let list = Api::<ClusterOperator>::all(client)
        .list(&ListParams::default())
        .await?;
    let mut out = vec![];
    for co in list.items {
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
pub async fn unready_nodes(client: kube::Client) -> Result<Vec<String>, PhaseError> {
    let list = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await?;
    let mut out = vec![];
    for n in list.items {
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
