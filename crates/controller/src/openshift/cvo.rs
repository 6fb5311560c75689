//! The cluster-version operator Deployment. It reverts managed manifests (the
//! Infrastructure CRD among them) while it runs, so it is scaled to 0 before
//! such edits and back to 1 last.

use crate::error::PhaseError;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};

pub const NAMESPACE: &str = "openshift-cluster-version";
pub const NAME: &str = "cluster-version-operator";

/// Where the CVO stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CvoState {
    pub desired: i32,
    pub running: i32,
    pub available: i32,
}

/// Where the Deployment `d` (read from the watch cache by the caller) stands:
/// unset replicas mean the API default of 1, no status means nothing runs yet.
pub fn state(d: &Deployment) -> CvoState {
    let st = d.status.clone().unwrap_or_default();
    CvoState {
        desired: d.spec.replicas.unwrap_or(1),
        running: st.replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
    }
}

/// Sets the desired replicas through the scale subresource (idempotent).
pub async fn scale(client: kube::Client, replicas: i32, manager: &str) -> Result<(), PhaseError> {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    Api::<Deployment>::namespaced(client, NAMESPACE)
        .patch_scale(NAME, &PatchParams::apply(manager), &Patch::Merge(&patch))
        .await
        .map_err(|e| PhaseError::from(e).context("scaling the cluster-version-operator"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).expect("Deployment")
    }

    #[test]
    fn the_state_reads_replicas_with_the_api_defaults() {
        let d = deployment(serde_json::json!({"metadata": {"name": NAME},
            "spec": {"replicas": 0, "selector": {}, "template": {}},
            "status": {"replicas": 1, "availableReplicas": 1}}));
        assert_eq!(
            state(&d),
            CvoState {
                desired: 0,
                running: 1,
                available: 1
            },
            "scaled to 0, its pod not gone yet"
        );
        let fresh = deployment(serde_json::json!({"metadata": {"name": NAME},
            "spec": {"selector": {}, "template": {}}}));
        assert_eq!(
            state(&fresh),
            CvoState {
                desired: 1,
                running: 0,
                available: 0
            }
        );
    }
}
