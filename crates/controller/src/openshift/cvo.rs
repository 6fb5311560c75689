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

pub async fn state(ctx: &crate::context::PhaseCtx) -> Result<CvoState, PhaseError> {
    let d = ctx.cvo_deployment().await?;
    let desired = d.spec.replicas.unwrap_or(1);
    let st = d.status.unwrap_or_default();
    Ok(CvoState {
        desired,
        running: st.replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
    })
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
