//! What the simulated machine controller does to a Node around its Machine's life, as
//! the real machine API does it.
//!
//! - **Node link** (machine-api-operator `pkg/controller/nodelink/nodelink_controller.go`):
//!   the Machine's `spec.metadata.labels` are copied onto its Node and `spec.taints` added
//!   to the Node's taints (skipping one with the same key and effect), so an infra
//!   MachineSet's `node-role.kubernetes.io/infra` label and taint reach its nodes.
//! - **Drain before deletion** (`pkg/controller/machine/drain_controller.go` with
//!   `k8s.io/kubectl/pkg/drain`): cordon, then evict every pod but mirror and DaemonSet
//!   pods through the Eviction API (`Force`: unmanaged pods too), retrying a refused
//!   eviction: the API server answers 429 when a PodDisruptionBudget allows no further
//!   disruption (`drain.go`, `IsTooManyRequests` → wait `EvictErrorRetryDelay` and try
//!   again), and the controller requeues the Machine until the drain succeeds. The
//!   Machine stays `Deleting` (its VM kept) all that time, so a router whose budget
//!   cannot be met, because no other node may run it, stalls the deletion.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{EvictParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use vcfm_api::openshift::Machine;

use super::Ctx;
use crate::kapi::{self, CallError, call};

/// Copies the Machine's node labels and taints onto its Node.
pub(crate) async fn link_node(
    nodes: &Api<Node>,
    node: &Node,
    m: &Machine,
) -> Result<(), CallError> {
    let spec = serde_json::to_value(&m.spec.spec).unwrap_or(Value::Null);
    let labels = spec
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut taints: Vec<Value> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect()
        })
        .unwrap_or_default();
    let before = taints.len();
    for t in spec
        .get("taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !taints
            .iter()
            .any(|n| n.get("key") == t.get("key") && n.get("effect") == t.get("effect"))
        {
            taints.push(t.clone());
        }
    }
    let missing_label = labels
        .iter()
        .any(|(k, v)| node.labels().get(k).map(|s| json!(s)) != Some(v.clone()));
    if !missing_label && taints.len() == before {
        return Ok(());
    }
    let mut patch = json!({"metadata": {"labels": labels}});
    if taints.len() != before {
        patch["spec"] = json!({"taints": taints});
    }
    kapi::merge(nodes, &node.name_any(), patch)
        .await
        .map(|_| ())
}

/// Whether kubectl's drain leaves the pod alone: mirror pods, and DaemonSet pods
/// (`IgnoreAllDaemonSets`). The simulation's pods have no owner references; its
/// Deployment pods carry `pod-template-hash` like ReplicaSet pods, its DaemonSet pods
/// do not.
fn skipped(p: &Pod) -> bool {
    let mirror = p.annotations().contains_key("kubernetes.io/config.mirror");
    let daemonset = p
        .annotations()
        .contains_key(crate::seed::POD_GROUP_ANNOTATION)
        && !p.labels().contains_key("pod-template-hash");
    mirror || daemonset
}

/// One drain attempt of `node`: cordons it, evicts what must go and reports what keeps
/// it from being drained (a refused eviction or pods still terminating).
pub(crate) async fn drain(ctx: &Ctx, node: &str) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let Some(n) = call(nodes.get_opt(node)).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if !n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        kapi::merge(&nodes, node, json!({"spec": {"unschedulable": true}}))
            .await
            .map_err(|e| format!("cordon node {node}: {e}"))?;
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let all = call(pods.list(&ListParams::default()))
        .await
        .map_err(|e| e.to_string())?;
    let on_node = all.items.iter().filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) && !skipped(p)
    });
    let mut blocked = vec![];
    let mut terminating = 0usize;
    for p in on_node {
        if p.metadata.deletion_timestamp.is_some() {
            terminating += 1;
            continue;
        }
        let ns = p.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        // kube-rs retries a 429 by itself with a backoff growing to minutes; drain.go
        // instead retries refused evictions on its own schedule. One short attempt per
        // round: a refusal that outlasts it counts as refused (an eviction that went
        // through meanwhile shows as a terminating pod next round).
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            api.evict(&p.name_any(), &EvictParams::default()),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => terminating += 1,
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
            Ok(Err(kube::Error::Api(s))) if s.code == 429 => {
                blocked.push(format!("{ns}/{}: {}", p.name_any(), s.message));
            }
            Err(_) => blocked.push(format!(
                "{ns}/{}: Cannot evict pod as it would violate the pod's disruption budget (the API server keeps answering 429)",
                p.name_any()
            )),
            Ok(Err(e)) => return Err(format!("evicting pod {ns}/{}: {e}", p.name_any())),
        }
    }
    if !blocked.is_empty() {
        tracing::info!(%node, pods = ?blocked, "drain: eviction refused, will retry");
        return Err(format!(
            "drain of node {node} blocked: error when evicting pods (will retry): {}",
            blocked.join("; ")
        ));
    }
    // Wait for the evicted pods to go, polling like kubectl's `waitForDelete` (bounded
    // by the drain's 20 s timeout, after which the controller requeues).
    let start = std::time::Instant::now();
    while terminating > 0 {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            return Err(format!(
                "drain of node {node}: waiting for {terminating} pod(s) to terminate"
            ));
        }
        if !ctx.sleep(std::time::Duration::from_millis(100)).await {
            return Err("cancelled".into());
        }
        let all = call(pods.list(&ListParams::default()))
            .await
            .map_err(|e| e.to_string())?;
        terminating = all
            .items
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) && !skipped(p)
            })
            .count();
    }
    Ok(())
}
