//! Cluster health gates: operators stable by the explicit rule, nodes Ready.

use k8s_openapi::api::core::v1::Node;
use vcfm_api::openshift::ClusterOperator;

/// Operators of `list` that are not stable, with the reasons, skipping `exclude`.
pub fn unstable_operators(list: &[ClusterOperator], exclude: &[&str]) -> Vec<String> {
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
    out
}

/// Nodes of `list` whose Ready condition is not True.
pub fn unready_nodes<'a>(list: impl IntoIterator<Item = &'a Node>) -> Vec<String> {
    let mut out = vec![];
    for n in list {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        if ready != Some("True") {
            out.push(format!(
                "node/{}: Ready={}",
                n.metadata.name.as_deref().unwrap_or_default(),
                ready.unwrap_or("unknown")
            ));
        }
    }
    out.sort();
    out
}
