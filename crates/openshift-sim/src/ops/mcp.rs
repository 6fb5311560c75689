//! The machine-config operator's part in a cloud-config change: MachineConfigPools
//! (`machineconfiguration.openshift.io/v1`, `master` and `worker`, as the installer
//! leaves them) that roll their nodes, one at a time, with a reboot.
//!
//! The chain the real components form, played here in one loop:
//! - `openshift-config/cloud-provider-config` is copied to
//!   `openshift-config-managed/kube-cloud-config` (key `cloud.conf`) by the cloud
//!   controller manager operator's cloud-config sync controller
//!   (cluster-cloud-controller-manager-operator `pkg/controllers/cloud_config_sync_controller.go`);
//! - the MCO reads that into the ControllerConfig (machine-config-operator
//!   `pkg/operator/sync.go`, `syncCloudConfig`), the template and render controllers
//!   produce a new `rendered-<pool>-<hash>` MachineConfig and point each pool's
//!   `spec.configuration` at it;
//! - the node controller moves one node at a time (maxUnavailable 1) by setting its
//!   `machineconfiguration.openshift.io/desiredConfig` annotation; the daemon on the
//!   node cordons and drains it, writes `/etc/kubernetes/cloud.conf`, reboots
//!   (`pkg/daemon/update.go`: a file change outside the rebootless list means
//!   `postConfigChangeActionReboot`), then marks `currentConfig`, `state: Done` and
//!   uncordons;
//! - the pool status counts machines, updated, ready, unavailable and degraded ones
//!   and sets `Updated`/`Updating`/`Degraded` together
//!   (`pkg/controller/node/status.go`, `calculateStatus`): `Updated=True` only when
//!   every machine is updated, ready and available, and `status.configuration` then
//!   names the new rendered config.
//!
//! Deviations: the drain of a rebooting node is a cordon only (its pods stay bound, as
//! across a real reboot they would be evicted and come back); the reboot is the Node
//! turning NotReady for half of [`crate::Delays::mcp_node_update`] with a new boot ID.
//! New nodes join their pool with its current rendered config once Ready, as a node
//! booted from the pool's ignition does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Ctx, carry_transition_times, run_loop, same_conditions, trigger};
use crate::kapi::{self, call};

const API_VERSION: &str = "machineconfiguration.openshift.io/v1";
const KIND: &str = "MachineConfigPool";
/// Node annotations the machine-config daemon and node controller use.
const CURRENT: &str = "machineconfiguration.openshift.io/currentConfig";
const DESIRED: &str = "machineconfiguration.openshift.io/desiredConfig";
const STATE: &str = "machineconfiguration.openshift.io/state";
const REASON: &str = "machineconfiguration.openshift.io/reason";

/// The pools the installer creates: name and the node role label they select.
const POOLS: &[(&str, &str)] = &[
    ("master", "node-role.kubernetes.io/master"),
    ("worker", "node-role.kubernetes.io/worker"),
];

fn pools_api(client: &kube::Client) -> Api<DynamicObject> {
    kapi::dyn_api(client, API_VERSION, KIND, None)
}

/// `rendered-<pool>-<32 hex>`: a stable hash of everything that goes into the
/// pool's configuration here (the cloud config).
fn rendered(pool: &str, cloud_conf: &str) -> String {
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in pool.bytes().chain([0]).chain(cloud_conf.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!("rendered-{pool}-{:016x}{:016x}", fnv(0), fnv(0x9e37_79b9))
}

fn ann<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(k))
        .map(String::as_str)
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn cordoned(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn internal_ip(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .unwrap_or_default()
}

/// Whether the machine-config daemon is applying a configuration to this node (it may
/// be rebooting: a kubelet must not report it Ready meanwhile).
pub(crate) fn updating(n: &Node) -> bool {
    ann(n, STATE) == Some("Working")
}

fn in_pool(n: &Node, selector: &BTreeMap<String, String>) -> bool {
    n.metadata.deletion_timestamp.is_none()
        && !selector.is_empty()
        && selector.iter().all(|(k, v)| n.labels().get(k) == Some(v))
}

async fn cloud_conf(client: &kube::Client) -> Result<String, kapi::CallError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "openshift-config");
    Ok(call(cms.get_opt("cloud-provider-config"))
        .await?
        .and_then(|c| c.data)
        .and_then(|d| d.get("config").cloned())
        .unwrap_or_default())
}

/// The pools as the installer leaves them on a fresh cluster: every node at the
/// pool's rendered config, `Updated=True`.
pub(crate) async fn seed(client: &kube::Client) -> Result<(), kapi::CallError> {
    let conf = cloud_conf(client).await?;
    sync_kube_cloud_config(client, &conf).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = call(nodes.list(&ListParams::default())).await?;
    for (pool, role) in POOLS {
        let target = rendered(pool, &conf);
        let selector = BTreeMap::from([(role.to_string(), String::new())]);
        let members: Vec<&Node> = list
            .items
            .iter()
            .filter(|n| in_pool(n, &selector))
            .collect();
        for n in &members {
            kapi::merge(
                &nodes,
                &n.name_any(),
                json!({"metadata": {"annotations": {CURRENT: target, DESIRED: target, STATE: "Done", REASON: ""}}}),
            )
            .await?;
        }
        let count = members.len();
        let obj = json!({"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": pool, "labels": {
                format!("machineconfiguration.openshift.io/mco-built-in"): "",
                format!("pools.operator.machineconfiguration.openshift.io/{pool}"): ""}},
            "spec": {
                "configuration": {"name": target},
                "machineConfigSelector": {"matchLabels": {"machineconfiguration.openshift.io/role": pool}},
                "nodeSelector": {"matchLabels": {*role: ""}},
                "paused": false},
            "status": status_json(pool, &target, Some(&target), 1, count, count, count, 0, false, &Value::Null)});
        kapi::create(client, &obj).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn status_json(
    pool: &str,
    target: &str,
    completed: Option<&str>,
    generation: i64,
    machines: usize,
    updated: usize,
    ready: usize,
    unavailable: usize,
    paused: bool,
    old_conditions: &Value,
) -> Value {
    let all = updated == machines && ready == machines && unavailable == 0;
    let c = |t: &str, s: bool, m: String| {
        json!({"type": t, "status": if s { "True" } else { "False" }, "reason": "", "message": m,
            "lastTransitionTime": kapi::now()})
    };
    let line = format!("MachineConfig {target}");
    let (updated_c, updating_c) = if all {
        (
            c(
                "Updated",
                true,
                format!("All nodes are updated with {line}"),
            ),
            c("Updating", false, String::new()),
        )
    } else if paused {
        (
            c("Updated", false, String::new()),
            c(
                "Updating",
                false,
                format!("Pool is paused; will not update to {line}"),
            ),
        )
    } else {
        (
            c("Updated", false, String::new()),
            c(
                "Updating",
                true,
                format!("All nodes are updating to {line}"),
            ),
        )
    };
    let conditions = json!([
        c("RenderDegraded", false, String::new()),
        c("NodeDegraded", false, String::new()),
        c("Degraded", false, String::new()),
        updated_c,
        updating_c,
    ]);
    let mut st = json!({
        "observedGeneration": generation,
        "machineCount": machines, "updatedMachineCount": updated, "readyMachineCount": ready,
        "unavailableMachineCount": unavailable, "degradedMachineCount": 0,
        "conditions": carry_transition_times(old_conditions, conditions),
    });
    if let Some(name) = completed {
        st["configuration"] = json!({"name": name, "source": [
            {"apiVersion": API_VERSION, "kind": "MachineConfig", "name": format!("00-{pool}")},
            {"apiVersion": API_VERSION, "kind": "MachineConfig", "name": format!("01-{pool}-kubelet")}]});
    }
    st
}

/// `openshift-config-managed/kube-cloud-config` follows the user's cloud config.
async fn sync_kube_cloud_config(client: &kube::Client, conf: &str) -> Result<(), kapi::CallError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "openshift-config-managed");
    match call(cms.get_opt("kube-cloud-config")).await? {
        Some(cm)
            if cm
                .data
                .as_ref()
                .and_then(|d| d.get("cloud.conf"))
                .map(String::as_str)
                == Some(conf) =>
        {
            Ok(())
        }
        Some(_) => kapi::merge(
            &cms,
            "kube-cloud-config",
            json!({"data": {"cloud.conf": conf}}),
        )
        .await
        .map(|_| ()),
        None => kapi::create(
            client,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-cloud-config", "namespace": "openshift-config-managed"},
                "data": {"cloud.conf": conf}}),
        )
        .await
        .map(|_| ()),
    }
}

/// [`trigger`] for kinds known only by group, version and kind.
pub(crate) fn dyn_trigger(api: Api<DynamicObject>) -> futures::stream::BoxStream<'static, ()> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|_| ())
        .boxed()
}

/// Runs the machine-config operator, controllers and daemons until cancelled.
pub(crate) async fn run(ctx: Ctx) {
    let pools = pools_api(&ctx.client);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "openshift-config");
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    // The synced copy too: the cloud-config sync controller watches its own ConfigMap as
    // well as the source (cluster-cloud-controller-manager-operator
    // `pkg/controllers/cloud_config_sync_controller.go`, `SetupWithManager`), so a changed
    // copy is put back at once.
    let managed: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "openshift-config-managed");
    let triggers = vec![
        dyn_trigger(pools.clone()),
        trigger(nodes.clone()),
        trigger(cms),
        trigger(managed),
    ];
    run_loop("machine-config", &ctx, triggers, || {
        reconcile(ctx.clone(), pools.clone(), nodes.clone(), started.clone())
    })
    .await;
}

async fn reconcile(
    ctx: Ctx,
    pools: Api<DynamicObject>,
    nodes: Api<Node>,
    started: Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<(), String> {
    let e = |e: kapi::CallError| e.to_string();
    let conf = cloud_conf(&ctx.client).await.map_err(e)?;
    sync_kube_cloud_config(&ctx.client, &conf)
        .await
        .map_err(e)?;
    let node_list = call(nodes.list(&ListParams::default())).await.map_err(e)?;
    for pool in call(pools.list(&ListParams::default())).await.map_err(e)? {
        let p = serde_json::to_value(&pool).map_err(|x| x.to_string())?;
        let name = pool.name_any();
        let paused = p.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let selector: BTreeMap<String, String> = serde_json::from_value(
            p.pointer("/spec/nodeSelector/matchLabels")
                .cloned()
                .unwrap_or(json!({})),
        )
        .unwrap_or_default();
        // Render controller: the pool's target follows the configuration (a paused
        // pool still gets its new rendered config; it only does not roll).
        let target = rendered(&name, &conf);
        let mut generation = pool.metadata.generation.unwrap_or(1);
        if p.pointer("/spec/configuration/name")
            .and_then(Value::as_str)
            != Some(target.as_str())
        {
            let updated = kapi::merge(
                &pools,
                &name,
                json!({"spec": {"configuration": {"name": target}}}),
            )
            .await
            .map_err(e)?;
            generation = updated.metadata.generation.unwrap_or(generation);
            tracing::info!(pool = %name, %target, "machine-config: new rendered config");
        }
        let members: Vec<&Node> = node_list
            .items
            .iter()
            .filter(|n| in_pool(n, &selector))
            .collect();
        let mut working = false;
        for n in &members {
            let node = n.name_any();
            match (ann(n, CURRENT), ann(n, STATE)) {
                // A new node, booted from the pool's ignition: it runs the current config.
                (None, _) if node_ready(n) => {
                    kapi::merge(
                        &nodes,
                        &node,
                        json!({"metadata": {"annotations": {
                        CURRENT: target, DESIRED: target, STATE: "Done", REASON: ""}}}),
                    )
                    .await
                    .map_err(e)?;
                }
                (_, Some("Working")) => {
                    working = true;
                    daemon_step(&ctx, &nodes, n, &started).await.map_err(e)?;
                }
                _ => {}
            }
        }
        // Node controller: one node at a time.
        if !working
            && !paused
            && let Some(next) = members
                .iter()
                .filter(|n| {
                    ann(n, CURRENT).is_some_and(|c| c != target) && ann(n, STATE) == Some("Done")
                })
                .min_by_key(|n| n.name_any())
        {
            let node = next.name_any();
            kapi::merge(
                &nodes,
                &node,
                json!({
                "metadata": {"annotations": {DESIRED: target, STATE: "Working"}},
                "spec": {"unschedulable": true}}),
            )
            .await
            .map_err(e)?;
            started
                .lock()
                .map_err(|x| x.to_string())?
                .insert(node.clone(), Instant::now());
            tracing::info!(pool = %name, %node, "machine-config: updating node (cordon, drain, reboot)");
        }
        // Status, from the nodes as they are now.
        let fresh = call(nodes.list(&ListParams::default())).await.map_err(e)?;
        let members: Vec<&Node> = fresh
            .items
            .iter()
            .filter(|n| in_pool(n, &selector))
            .collect();
        let updated = members
            .iter()
            .filter(|n| ann(n, CURRENT) == Some(target.as_str()) && ann(n, STATE) == Some("Done"))
            .count();
        let ready = members
            .iter()
            .filter(|n| {
                ann(n, CURRENT) == Some(target.as_str())
                    && ann(n, STATE) == Some("Done")
                    && node_ready(n)
                    && !cordoned(n)
            })
            .count();
        let unavailable = members
            .iter()
            .filter(|n| updating(n) || !node_ready(n) || cordoned(n))
            .count();
        let machines = members.len();
        let all = updated == machines && ready == machines && unavailable == 0;
        let old = p.get("status").cloned().unwrap_or(json!({}));
        let completed = if all {
            Some(target.clone())
        } else {
            old.pointer("/configuration/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let status = status_json(
            &name,
            &target,
            completed.as_deref(),
            generation,
            machines,
            updated,
            ready,
            unavailable,
            paused,
            old.get("conditions").unwrap_or(&Value::Null),
        );
        let same = [
            "observedGeneration",
            "machineCount",
            "updatedMachineCount",
            "readyMachineCount",
            "unavailableMachineCount",
            "degradedMachineCount",
        ]
        .iter()
        .all(|k| old.get(*k) == status.get(*k))
            && old.pointer("/configuration/name") == status.pointer("/configuration/name")
            && same_conditions(
                old.get("conditions").unwrap_or(&Value::Null),
                &status["conditions"],
            );
        if !same {
            kapi::merge_status(&pools, &name, status).await.map_err(e)?;
        }
    }
    Ok(())
}

/// The machine-config daemon on an updating node: cordoned and drained for the first
/// half of the update, rebooting (NotReady) for the second, then at the new config,
/// Ready and uncordoned.
async fn daemon_step(
    ctx: &Ctx,
    nodes: &Api<Node>,
    n: &Node,
    started: &Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<(), kapi::CallError> {
    let name = n.name_any();
    let since = {
        let mut map = started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(name.clone()).or_insert_with(Instant::now)
    };
    let total = ctx.delays.mcp_node_update;
    if !super::waited(since, total / 2) {
        if !cordoned(n) {
            kapi::merge(nodes, &name, json!({"spec": {"unschedulable": true}})).await?;
        }
        return Ok(());
    }
    if !super::waited(since, total) {
        if node_ready(n) {
            // Reboot: the kubelet stops posting Ready; it comes back with a new boot ID.
            kapi::merge_status(
                nodes,
                &name,
                crate::seed::node_status(&name, &internal_ip(n), false),
            )
            .await?;
        }
        return Ok(());
    }
    let desired = ann(n, DESIRED).unwrap_or_default().to_string();
    kapi::merge_status(
        nodes,
        &name,
        crate::seed::node_status(&name, &internal_ip(n), true),
    )
    .await?;
    kapi::merge(
        nodes,
        &name,
        json!({
        "metadata": {"annotations": {CURRENT: desired, STATE: "Done", REASON: ""}},
        "spec": {"unschedulable": null}}),
    )
    .await?;
    started
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&name);
    tracing::info!(node = %name, config = %desired, "machine-config: node updated and uncordoned");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_names_follow_the_config_and_the_pool() {
        let a = rendered("worker", "x");
        assert!(
            a.starts_with("rendered-worker-") && a.len() == "rendered-worker-".len() + 32,
            "{a}"
        );
        assert_eq!(a, rendered("worker", "x"));
        assert_ne!(a, rendered("worker", "y"));
        assert_ne!(
            rendered("master", "x").trim_start_matches("rendered-master-"),
            a.trim_start_matches("rendered-worker-")
        );
    }

    #[test]
    fn the_pool_is_updated_only_when_every_machine_is() {
        let s = status_json("worker", "r2", None, 2, 3, 2, 2, 1, false, &Value::Null);
        let cond = |s: &Value, t: &str| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(cond(&s, "Updated"), "False");
        assert_eq!(cond(&s, "Updating"), "True");
        assert!(s.get("configuration").is_none());
        let s = status_json(
            "worker",
            "r2",
            Some("r2"),
            2,
            3,
            3,
            3,
            0,
            false,
            &Value::Null,
        );
        assert_eq!(cond(&s, "Updated"), "True");
        assert_eq!(s["configuration"]["name"], "r2");
        let s = status_json(
            "worker",
            "r2",
            Some("r1"),
            2,
            3,
            0,
            0,
            0,
            true,
            &Value::Null,
        );
        assert_eq!(cond(&s, "Updating"), "False", "a paused pool does not roll");
    }
}
