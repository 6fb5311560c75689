//! Thin helpers over kube-rs for JSON-shaped objects: the simulation writes objects the way
//! an OpenShift operator's manifests look, not through typed builders.

use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

/// Deadline of every single API call the simulation makes.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Error of one API call, flattened to text (operators log it and retry).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The server answered with a Kubernetes `Status` error.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// No answer in time.
    #[error("API call timed out after {0:?}")]
    Timeout(Duration),
    /// A body could not be (de)serialised.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl CallError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, CallError::Api(kube::Error::Api(s)) if s.code == 404)
    }
}

/// Runs one call with [`CALL_TIMEOUT`].
pub(crate) async fn call<T>(
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(CallError::from),
        Err(_) => Err(CallError::Timeout(CALL_TIMEOUT)),
    }
}

/// API resource of a kind the simulation writes (every plural here is `<kind>s`).
pub(crate) fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_ascii_lowercase()))
}

/// A dynamic API handle for `api_version`/`kind`, namespaced when `ns` is given.
pub(crate) fn dyn_api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = resource(api_version, kind);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn api_of(client: &kube::Client, obj: &Value) -> (Api<DynamicObject>, String) {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let api = dyn_api(
        client,
        s("/apiVersion"),
        s("/kind"),
        obj.pointer("/metadata/namespace").and_then(Value::as_str),
    );
    (api, s("/metadata/name").to_string())
}

/// Creates `obj`, then writes its `status` (if any) through the status subresource, as the
/// owning operator would right after creation. Returns the stored object.
pub(crate) async fn create(client: &kube::Client, obj: &Value) -> Result<Value, CallError> {
    let (api, name) = api_of(client, obj);
    let mut body = obj.clone();
    let status = body.as_object_mut().and_then(|o| o.remove("status"));
    let dynobj: DynamicObject = serde_json::from_value(body)?;
    let created = call(api.create(&PostParams::default(), &dynobj)).await?;
    let has_status_subresource = !matches!(
        obj.get("kind").and_then(Value::as_str),
        Some("Secret" | "ConfigMap" | "Namespace" | "ServiceAccount")
    );
    match status {
        Some(st) if has_status_subresource => {
            let patched = call(api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": st })),
            ))
            .await?;
            Ok(serde_json::to_value(patched)?)
        }
        _ => Ok(serde_json::to_value(created)?),
    }
}

/// JSON merge patch of the main resource.
pub(crate) async fn merge<K>(api: &Api<K>, name: &str, patch: Value) -> Result<K, CallError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    call(api.patch(name, &PatchParams::default(), &Patch::Merge(patch))).await
}

/// JSON merge patch of the status subresource.
pub(crate) async fn merge_status<K>(api: &Api<K>, name: &str, status: Value) -> Result<K, CallError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    call(api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    ))
    .await
}

/// Deletes, treating "already gone" as success.
pub(crate) async fn delete_ignore_missing<K>(api: &Api<K>, name: &str) -> Result<(), CallError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match call(api.delete(name, &DeleteParams::default())).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `finalizer` from an object's finalizers. The merge patch carries the
/// resourceVersion the list was read at, so a concurrent change conflicts instead of being
/// overwritten.
pub(crate) async fn remove_finalizer<K>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    current: &[String],
    finalizer: &str,
) -> Result<(), CallError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !current.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let rest: Vec<&String> = current.iter().filter(|f| *f != finalizer).collect();
    let mut meta = json!({ "finalizers": rest });
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    match merge(api, name, json!({ "metadata": meta })).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// RFC 3339 "now", as Kubernetes writes timestamps.
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// `n` random lowercase hex characters (name suffixes, like the generators of real
/// controllers).
pub(crate) fn suffix(n: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..n.min(32)].to_string()
}
