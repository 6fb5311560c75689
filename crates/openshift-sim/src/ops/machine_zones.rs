//! The vSphere machine controller's region/zone labels on Machines.
//!
//! openshift/machine-api-operator `pkg/controller/vsphere/reconciler.go`
//! (`reconcileRegionAndZoneLabels`, `getRegionAndZone`): on every reconcile of
//! an existing VM it walks the VM's host ancestry for tags of the categories
//! named by the cloud config's `labels` (`openshift-region`/`openshift-zone`)
//! and sets `machine.openshift.io/region` and `machine.openshift.io/zone` to
//! the tag names, or to "" when none is found. The machine API's admission
//! policies (see `mapi_vaps`) read these labels. Only on the sim tier; on the
//! real tier the real controller does it.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use vcfm_api::openshift::Machine;

use super::{Ctx, run_loop, trigger};
use crate::kapi::{self, call};
use crate::seed::MAPI_NS;

const REGION_LABEL: &str = "machine.openshift.io/region";
const ZONE_LABEL: &str = "machine.openshift.io/zone";

/// Runs until cancelled.
pub(crate) async fn run(ctx: Ctx) {
    let api: Api<Machine> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let triggers = vec![trigger(api.clone())];
    run_loop("machine-zone-labels", &ctx, triggers, || {
        // Sim tier only (the real tier runs the real component): polls, as it reads
        // vCenter state no watch reports and keeps timers of its own.
        super::due_in(ctx.delays.resync);
        reconcile(ctx.clone(), api.clone())
    })
    .await;
}

/// The compute cluster of a resource pool path (`/DC/host/C/Resources/...`).
fn cluster_of(pool: &str) -> Option<String> {
    let (head, _) = pool.split_once("/Resources")?;
    Some(head.to_string())
}

/// Tag names of `category` found on the cluster, then the datacenter.
async fn lookup(
    vc: &vcfm_vsphere::Client,
    dc: &str,
    cluster: &str,
) -> Result<(String, String), vcfm_vsphere::Error> {
    let dc_ref = vc
        .find_datacenter(&format!("/{}", dc.trim_matches('/')))
        .await?;
    let cl_ref = vc.find_cluster(cluster).await?;
    let mut out = (String::new(), String::new());
    for (cat, slot) in [("openshift-region", 0), ("openshift-zone", 1)] {
        let Some(c) = vc.find_category(cat).await? else {
            continue;
        };
        for obj in [&cl_ref, &dc_ref] {
            if let Some(t) = vc.attached_tags_of_category(obj, &c.id).await?.first() {
                if slot == 0 {
                    out.0 = t.name.clone();
                } else {
                    out.1 = t.name.clone();
                }
                break;
            }
        }
    }
    Ok(out)
}

async fn reconcile(ctx: Ctx, api: Api<Machine>) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let list = call(api.list(&ListParams::default())).await.map_err(e)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), "kube-system");
    let creds = call(secrets.get_opt("vsphere-creds"))
        .await
        .map_err(e)?
        .and_then(|s| s.data)
        .unwrap_or_default();
    let mut cache: HashMap<(String, String, String), (String, String)> = HashMap::new();
    for m in list {
        if m.metadata.deletion_timestamp.is_some() || m.spec.spec.provider_id.is_none() {
            continue;
        }
        let Some(Ok(Some(ps))) = m.spec.spec.provider_spec.as_ref().map(|p| p.vsphere()) else {
            continue;
        };
        let Some(ws) = ps.workspace else { continue };
        let (Some(server), Some(dc), Some(pool)) = (ws.server, ws.datacenter, ws.resource_pool)
        else {
            continue;
        };
        let Some(cluster) = cluster_of(&pool) else {
            continue;
        };
        let key = (server.clone(), dc.clone(), cluster.clone());
        let found = match cache.get(&key) {
            Some(f) => f.clone(),
            None => {
                let field = |s: &str| {
                    creds
                        .get(&format!("{server}.{s}"))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                };
                let (Some(user), Some(password)) = (field("username"), field("password")) else {
                    continue;
                };
                let Ok(vc) = ctx.vc.client(&server, &user, &password) else {
                    continue;
                };
                // Not fatal upstream either: the labels stay as they were.
                let Ok(f) = lookup(&vc, &dc, &cluster).await else {
                    continue;
                };
                cache.insert(key, f.clone());
                f
            }
        };
        let labels = m.labels();
        if labels.get(REGION_LABEL) == Some(&found.0) && labels.get(ZONE_LABEL) == Some(&found.1) {
            continue;
        }
        let patch = json!({"metadata": {"labels": {REGION_LABEL: found.0, ZONE_LABEL: found.1}}});
        match kapi::merge(&api, &m.name_any(), patch).await {
            Ok(_) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    Ok(())
}
