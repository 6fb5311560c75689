//! `kubectl apply` for manifests: server-side apply of every document, CRDs first and
//! waited for until `Established` (the apiserver serves a new CRD's resource only then).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde_json::Value;

use crate::Error;

const FIELD_MANAGER: &str = "vcfm-real-tier";

/// Every document of `yaml` (a `List` counts as its items), CRDs and Namespaces first.
pub fn documents(yaml: &str) -> Result<Vec<Value>, Error> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::Manifest(e.to_string()))?;
    let mut objs = Vec::new();
    for d in docs {
        if d.is_null() {
            continue;
        }
        if d.get("kind").and_then(Value::as_str) == Some("List") {
            objs.extend(d["items"].as_array().cloned().unwrap_or_default());
        } else {
            objs.push(d);
        }
    }
    let rank = |o: &Value| match o.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    };
    objs.sort_by_key(rank);
    Ok(objs)
}

/// The `*.yaml`/`*.yml`/`*.json` files of `dir`, in name order.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Applies every document; returns how many. The CRDs go first, all at once, and are
/// waited for together (see [`wait_established`]); the rest follows in order (Namespaces
/// first). Apply a whole set of CRDs in one call: each call waits up to 2 s.
pub async fn apply_yaml(client: &kube::Client, yaml: &str) -> Result<usize, Error> {
    let objs = documents(yaml)?;
    let n = objs.len();
    let (crds, rest): (Vec<Value>, Vec<Value>) = objs
        .into_iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    let mut applying = tokio::task::JoinSet::new();
    for crd in &crds {
        let (client, crd) = (client.clone(), crd.clone());
        applying.spawn(async move { apply_object(&client, &crd).await });
    }
    while let Some(done) = applying.join_next().await {
        done.map_err(|e| Error::Kube(format!("applying a CRD: {e}")))??;
    }
    let names: Vec<String> = crds
        .iter()
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    wait_established(client, &names).await?;
    for o in rest {
        apply_object(client, &o).await?;
    }
    Ok(n)
}

/// [`apply_yaml`] for every manifest file of `dir`.
pub async fn apply_dir(client: &kube::Client, dir: &Path) -> Result<usize, Error> {
    apply_yaml(client, &read_manifests(dir)?).await
}

/// Every manifest file of `dir` as one multi-document YAML text, in name order.
pub fn read_manifests(dir: &Path) -> Result<String, Error> {
    let mut all = String::new();
    for f in manifest_files(dir)? {
        all.push_str(&std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?);
        all.push_str("\n---\n");
    }
    Ok(all)
}

/// Server-side apply of one object (forced: the harness owns what it applies).
pub async fn apply_object(client: &kube::Client, obj: &Value) -> Result<(), Error> {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind, name) = (s("/apiVersion"), s("/kind"), s("/metadata/name"));
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| Error::Kube(format!("discovery of {api_version} {kind}: {e}")))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default"),
            &ar,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut body = obj.clone();
    let status = body.as_object_mut().and_then(|o| o.remove("status"));
    api.patch(name, &pp, &Patch::Apply(&body))
        .await
        .map_err(|e| Error::Kube(format!("apply {kind} {name}: {e}")))?;
    if let Some(st) = status
        && kind != "CustomResourceDefinition"
    {
        let patch = serde_json::json!({"apiVersion": api_version, "kind": kind, "status": st});
        api.patch_status(name, &pp, &Patch::Apply(&patch))
            .await
            .map_err(|e| Error::Kube(format!("apply status of {kind} {name}: {e}")))?;
    }
    Ok(())
}

/// Waits until every CRD is `Established` and its resource takes creates at once: for 2 s
/// after a CRD's `Established` transition the apiserver holds every create of its resource
/// for 2 s, for HA peers to notice it (kubernetes
/// `staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go`,
/// `serveResource`, `justCreated`). Waiting out that window here, for all CRDs at once,
/// costs at most 2 s per set, where each first create in it cost 2 s (measured in the audit
/// log: the seeded Infrastructure's create took 2.0 s).
async fn wait_established(client: &kube::Client, names: &[String]) -> Result<(), Error> {
    let mut waiting = tokio::task::JoinSet::new();
    for name in names {
        let (client, name) = (client.clone(), name.clone());
        waiting.spawn(async move { wait_one_established(&client, &name).await });
    }
    while let Some(done) = waiting.join_next().await {
        done.map_err(|e| Error::Kube(format!("waiting for a CRD: {e}")))??;
    }
    Ok(())
}

async fn wait_one_established(client: &kube::Client, name: &str) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    loop {
        let crd = api
            .get(name)
            .await
            .map_err(|e| Error::Kube(format!("CRD {name}: {e}")))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Established" && c.status == "True");
        if let Some(c) = established {
            // The transition time has whole seconds, as the apiserver compares it.
            let since = c
                .last_transition_time
                .map(|t| jiff::Timestamp::now().duration_since(t.0))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            if let Some(left) = Duration::from_secs(2).checked_sub(since) {
                tokio::time::sleep(left + Duration::from_millis(20)).await;
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                what: format!("CRD {name} Established"),
                after: timeout,
                last: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
