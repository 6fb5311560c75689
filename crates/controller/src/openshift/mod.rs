//! Helpers for the OpenShift objects the phases read and write.

pub mod cloud_config;
pub mod creds;
pub mod cvo;
pub mod fd_refs;
pub mod health;
pub mod infra;
pub mod machines;
pub mod machineset_plan;
pub mod mcp;
pub mod pods;
pub mod source_topology;
pub mod tags;

use crate::error::{PhaseError, is_not_found};
use kube::api::{Api, ListParams};
use kube::core::ApiResource;
use serde::de::DeserializeOwned;

/// Lists a kind whose CRD may be absent on this cluster: an absent CRD means
/// there are none, not an error.
pub async fn list_optional<K>(api: Api<K>) -> Result<Vec<K>, PhaseError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(e) if is_not_found(&e) => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

/// Lists a kind known only by group/version/kind/plural (no typed struct needed).
pub async fn list_dynamic(
    client: kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Result<Vec<kube::api::DynamicObject>, PhaseError> {
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    };
    list_optional(Api::<kube::api::DynamicObject>::all_with(client, &ar)).await
}
