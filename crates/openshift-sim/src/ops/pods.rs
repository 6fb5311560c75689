//! Workload pods: a deleted pod lingers Terminating for `pod_terminate` (a finalizer this
//! operator removes, standing in for graceful shutdown) while its ReplicaSet/DaemonSet
//! immediately creates a replacement under a new name, which becomes Ready after
//! `pod_ready`. Static mirror pods (kube-controller-manager) come back at once under the
//! same name, Ready: deleting them restarts nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{Ctx, run_loop, trigger};
use crate::kapi::{self, call};
use crate::seed::{POD_FINALIZER, POD_GROUP_ANNOTATION, PodGroup};

#[derive(Default)]
struct State {
    /// Pods not yet Ready and when they were first seen.
    starting: HashMap<String, Instant>,
    /// Terminating pods and when their deletion was first seen.
    terminating: HashMap<String, Instant>,
}

/// Runs the pod "kubelet + ReplicaSet controller" until cancelled.
pub(crate) async fn run(ctx: Ctx, groups: Vec<PodGroup>, node: String) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let state: Arc<Mutex<State>> = Arc::default();
    let groups = Arc::new(groups);
    let triggers = vec![trigger(pods.clone())];
    run_loop("pods", &ctx, triggers, || {
        reconcile(
            ctx.clone(),
            pods.clone(),
            groups.clone(),
            node.clone(),
            state.clone(),
        )
    })
    .await;
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn reconcile(
    ctx: Ctx,
    pods: Api<Pod>,
    groups: Arc<Vec<PodGroup>>,
    node: String,
    state: Arc<Mutex<State>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let list = call(pods.list(&ListParams::default())).await.map_err(e)?;
    let key = |p: &Pod| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
    let mut to_ready = Vec::new();
    let mut to_release = Vec::new();
    {
        let mut st = state.lock().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let alive: std::collections::HashSet<String> = list.items.iter().map(key).collect();
        st.starting.retain(|k, _| alive.contains(k));
        st.terminating.retain(|k, _| alive.contains(k));
        for p in &list.items {
            if !p.annotations().contains_key(POD_GROUP_ANNOTATION) {
                continue;
            }
            if p.metadata.deletion_timestamp.is_some() {
                let since = *st.terminating.entry(key(p)).or_insert(now);
                if since.elapsed() >= ctx.delays.pod_terminate {
                    to_release.push(p.clone());
                }
            } else if !is_ready(p) {
                let since = *st.starting.entry(key(p)).or_insert(now);
                if since.elapsed() >= ctx.delays.pod_ready {
                    to_ready.push(p.clone());
                }
            }
        }
    }
    for p in to_release {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
        kapi::remove_finalizer(
            &api,
            &p.name_any(),
            p.resource_version().as_deref(),
            p.finalizers(),
            POD_FINALIZER,
        )
        .await
        .map_err(e)?;
    }
    for p in to_ready {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
        let container = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        kapi::merge_status(
            &api,
            &p.name_any(),
            crate::seed::pod_status(&container, &ip, true),
        )
        .await
        .map_err(e)?;
    }
    for g in groups.iter().filter(|g| !g.static_nodes.is_empty()) {
        for n in &g.static_nodes {
            let name = format!("{}-{n}", g.base);
            let present = list.items.iter().any(|p| {
                p.namespace().as_deref() == Some(g.namespace.as_str()) && p.name_any() == name
            });
            if !present {
                let obj = crate::seed::pod(g, &name, n, "10.0.0.5", true);
                kapi::create(&ctx.client, &obj).await.map_err(e)?;
            }
        }
    }
    for g in groups.iter().filter(|g| g.static_nodes.is_empty()) {
        let id = g.id();
        let live = list
            .items
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.annotations().get(POD_GROUP_ANNOTATION) == Some(&id)
            })
            .count();
        for _ in live..g.replicas {
            let name = g.new_pod_name();
            let ip = format!(
                "10.128.{}.{}",
                (uuid::Uuid::new_v4().as_u128() % 250) as u8,
                (uuid::Uuid::new_v4().as_u128() % 250 + 2) as u8
            );
            let obj = crate::seed::pod(g, &name, &node, &ip, false);
            kapi::create(&ctx.client, &obj).await.map_err(e)?;
        }
    }
    Ok(())
}
