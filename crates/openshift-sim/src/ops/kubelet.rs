//! The kubelets of machines the *real* machine controller provisions (real tier only):
//! what a booted RHCOS VM does once its Machine has an instance. The real controller sets
//! `spec.providerID` to `vsphere://<BIOS UUID>` after the clone
//! (machine-api-operator `pkg/controller/vsphere/reconciler.go`, `reconcileProviderID`);
//! the VM's kubelet then registers a Node with that providerID (the vSphere cloud
//! provider derives it from the same UUID), NotReady until the network is up, then Ready
//! after [`crate::Delays::node_ready`]. The real nodelink controller links the two
//! (`pkg/controller/nodelink/nodelink_controller.go` matches by providerID, then by IP),
//! and the machine controller moves the Machine to Running once `status.nodeRef` is set
//! (`pkg/controller/machine/controller.go`). Deleting a Machine is the machine controller's
//! job end to end (drain, destroy, delete the Node), so nothing here deletes Nodes.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;
use vcfm_api::openshift::Machine;

use super::{Ctx, run_loop, trigger};
use crate::kapi::{self, call};
use crate::seed::{self, MAPI_NS};

pub(crate) async fn run(ctx: Ctx) {
    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let triggers = vec![trigger(machines.clone()), trigger(nodes.clone())];
    run_loop("kubelet", &ctx, triggers, || {
        reconcile(ctx.clone(), machines.clone(), nodes.clone())
    })
    .await;
}

async fn reconcile(ctx: Ctx, machines: Api<Machine>, nodes: Api<Node>) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let node_list = call(nodes.list(&ListParams::default())).await.map_err(e)?;
    let known: BTreeSet<String> = node_list
        .iter()
        .filter_map(|n| n.spec.as_ref().and_then(|s| s.provider_id.clone()))
        .collect();
    // Nodes registered NotReady turn Ready once the boot delay has passed.
    let now = jiff::Timestamp::now();
    for n in &node_list {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let age = n
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| jiff::Timestamp::from_second(t.0.as_second()).ok())
            .map(|t| now.duration_since(t).unsigned_abs())
            .unwrap_or_default();
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        let booting = !ready
            && n.metadata.deletion_timestamp.is_none()
            && n.annotations().contains_key(REGISTERED_BY)
            && !super::mcp::updating(n);
        if booting && age < ctx.delays.node_ready {
            // The creation time is in whole seconds, so this is at or after the real end.
            super::due_in(ctx.delays.node_ready - age);
        }
        if booting
            && age >= ctx.delays.node_ready
            && let Some(ip) = ip
        {
            kapi::merge_status(
                &nodes,
                &n.name_any(),
                seed::node_status(&n.name_any(), &ip, true),
            )
            .await
            .map_err(e)?;
        }
    }
    let list = call(machines.list(&ListParams::default()))
        .await
        .map_err(e)?;
    for m in list {
        if m.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(provider_id) = m.spec.spec.provider_id.clone().filter(|p| !p.is_empty()) else {
            continue;
        };
        if known.contains(&provider_id) {
            continue;
        }
        let name = m.name_any();
        let role = m
            .labels()
            .get(vcfm_api::openshift::LABEL_ROLE)
            .cloned()
            .unwrap_or_else(|| "worker".into());
        let server = m
            .spec
            .spec
            .provider_spec
            .as_ref()
            .and_then(|p| p.value.as_ref())
            .and_then(|v| v.pointer("/workspace/server"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let ip = ctx.allocate_ip(&server);
        let mut node = seed::node(&name, &role, &provider_id, &ip, false);
        node["metadata"]["annotations"][REGISTERED_BY] = json!("true");
        kapi::create(&ctx.client, &node).await.map_err(e)?;
        tracing::info!(node = %name, %provider_id, "kubelet registered its node");
    }
    Ok(())
}

/// Marks Nodes this simulation registered (seeded Nodes are Ready from the start).
const REGISTERED_BY: &str = "openshift-sim/kubelet";
