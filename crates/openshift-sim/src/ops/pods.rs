//! Workload pods, played as kubelet + ReplicaSet/DaemonSet controllers + pod GC:
//! a deleted pod lingers Terminating for `pod_terminate` (a finalizer this operator
//! removes, standing in for graceful shutdown) while a replacement is created at once under
//! a new name and becomes Ready after `pod_ready`; DaemonSet pods follow the Nodes; static
//! mirror pods (kube-controller-manager) come back at once under the same name, Ready, so
//! deleting them restarts nothing; pods bound to a Node that is gone are deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{Ctx, run_loop, trigger, waited};
use crate::kapi::{self, call};
use crate::seed::{POD_FINALIZER, POD_GROUP_ANNOTATION, PodGroup, PodKind};

#[derive(Default)]
struct State {
    /// Pods not yet Ready and when they were first seen.
    starting: HashMap<String, Instant>,
    /// Terminating pods and when their deletion was first seen.
    terminating: HashMap<String, Instant>,
}

/// Runs the pod machinery until cancelled.
pub(crate) async fn run(ctx: Ctx, groups: Vec<PodGroup>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let state: Arc<Mutex<State>> = Arc::default();
    let groups = Arc::new(groups);
    let triggers = vec![trigger(pods.clone()), trigger(nodes.clone())];
    run_loop("pods", &ctx, triggers, || {
        reconcile(
            ctx.clone(),
            pods.clone(),
            nodes.clone(),
            groups.clone(),
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

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn pod_ip() -> String {
    let n = uuid::Uuid::new_v4().as_u128();
    format!("10.128.{}.{}", n % 250, (n >> 8) % 250 + 2)
}

async fn reconcile(
    ctx: Ctx,
    pods: Api<Pod>,
    nodes_api: Api<Node>,
    groups: Arc<Vec<PodGroup>>,
    state: Arc<Mutex<State>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let list = call(pods.list(&ListParams::default())).await.map_err(e)?;
    let node_list = call(nodes_api.list(&ListParams::default()))
        .await
        .map_err(e)?;
    let nodes: BTreeSet<String> = node_list
        .items
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect();
    let masters: BTreeSet<String> = node_list
        .items
        .iter()
        .filter(|n| n.labels().contains_key("node-role.kubernetes.io/master"))
        .map(ResourceExt::name_any)
        .filter(|n| nodes.contains(n))
        .collect();
    let key = |p: &Pod| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
    let ours: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.annotations().contains_key(POD_GROUP_ANNOTATION))
        .collect();
    let mut to_ready = Vec::new();
    let mut to_release = Vec::new();
    let mut orphans = Vec::new();
    {
        let mut st = state.lock().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let alive: HashSet<String> = list.items.iter().map(key).collect();
        st.starting.retain(|k, _| alive.contains(k));
        st.terminating.retain(|k, _| alive.contains(k));
        for p in &ours {
            if p.metadata.deletion_timestamp.is_some() {
                let since = *st.terminating.entry(key(p)).or_insert(now);
                if waited(since, ctx.delays.pod_terminate) {
                    to_release.push(*p);
                }
            } else if !nodes.contains(node_of(p)) {
                orphans.push(*p);
            } else if !is_ready(p) {
                let since = *st.starting.entry(key(p)).or_insert(now);
                if waited(since, ctx.delays.pod_ready) {
                    to_ready.push(*p);
                }
            }
        }
    }
    let ns_api = |p: &Pod| -> Api<Pod> {
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default())
    };
    for p in to_release {
        kapi::remove_finalizer(
            &ns_api(p),
            &p.name_any(),
            p.resource_version().as_deref(),
            p.finalizers(),
            POD_FINALIZER,
        )
        .await
        .map_err(e)?;
        // A bound pod's graceful deletion ends only when its kubelet deletes it again with
        // grace period 0 once the containers stopped (kubernetes pkg/kubelet/status/
        // status_manager.go, syncPod → `DeleteOptions{GracePeriodSeconds: 0}`); a real
        // apiserver keeps it Terminating until then, and a drain waits for it.
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match call(ns_api(p).delete(&p.name_any(), &dp)).await {
            Ok(_) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    for p in orphans {
        kapi::delete_ignore_missing(&ns_api(p), &p.name_any())
            .await
            .map_err(e)?;
    }
    for p in to_ready {
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
            &ns_api(p),
            &p.name_any(),
            crate::seed::pod_status(&container, &ip, true),
        )
        .await
        .map_err(e)?;
    }
    // Replacements go where the scheduler would put them: never on a cordoned node
    // (`spec.unschedulable`, set by a drain).
    let schedulable: BTreeSet<String> = node_list
        .items
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .map(ResourceExt::name_any)
        .filter(|n| nodes.contains(n))
        .collect();
    // Nodes with a NoSchedule taint (infra nodes) take only pods that tolerate it.
    let tainted: BTreeSet<String> = node_list
        .items
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.effect == "NoSchedule"))
        })
        .map(ResourceExt::name_any)
        .collect();
    let default_node = masters
        .iter()
        .find(|n| schedulable.contains(*n))
        .or(schedulable.iter().find(|n| !tainted.contains(*n)))
        .cloned()
        .unwrap_or_default();
    let with_role = |role: &str| -> Vec<String> {
        let label = format!("node-role.kubernetes.io/{role}");
        node_list
            .items
            .iter()
            .filter(|n| n.labels().contains_key(&label))
            .map(ResourceExt::name_any)
            .filter(|n| schedulable.contains(n))
            .collect()
    };
    for g in groups.iter() {
        let id = g.id();
        let members: Vec<&&Pod> = ours
            .iter()
            .filter(|p| p.annotations().get(POD_GROUP_ANNOTATION) == Some(&id))
            .collect();
        let live_on = |n: &str| {
            members
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_none() && node_of(p) == n)
        };
        let wanted: Vec<(String, bool)> = match g.kind {
            PodKind::Deployment(n) => {
                let live = members
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none() && nodes.contains(node_of(p))
                    })
                    .count();
                match &g.node_role {
                    // Pinned pods (nodeSelector + toleration) spread over their role's
                    // nodes; with none schedulable they stay Pending (not created here).
                    Some(role) => {
                        let candidates = with_role(role);
                        let mut load: Vec<(usize, String)> = candidates
                            .into_iter()
                            .map(|c| {
                                let on = members
                                    .iter()
                                    .filter(|p| {
                                        p.metadata.deletion_timestamp.is_none() && node_of(p) == c
                                    })
                                    .count();
                                (on, c)
                            })
                            .collect();
                        let mut out = vec![];
                        for _ in live..n {
                            load.sort();
                            if let Some(first) = load.first_mut() {
                                first.0 += 1;
                                out.push((first.1.clone(), false));
                            }
                        }
                        out
                    }
                    None => (live..n).map(|_| (default_node.clone(), false)).collect(),
                }
            }
            // DaemonSet pods tolerate `unschedulable` (the DaemonSet controller adds the
            // toleration), so they stay on cordoned nodes.
            PodKind::DaemonSet => nodes
                .iter()
                .filter(|n| !live_on(n))
                .map(|n| (n.clone(), false))
                .collect(),
            // A mirror pod exists whenever its static pod runs: recreated Ready, same name.
            PodKind::Mirror => masters
                .iter()
                .filter(|n| !members.iter().any(|p| p.name_any() == g.new_pod_name(n)))
                .map(|n| (n.clone(), true))
                .collect(),
        };
        for (node, ready) in wanted {
            if node.is_empty() {
                continue;
            }
            let obj = crate::seed::pod(g, &g.new_pod_name(&node), &node, &pod_ip(), ready);
            kapi::create(&ctx.client, &obj).await.map_err(e)?;
        }
    }
    Ok(())
}
