//! Machine API: the MachineSet controller (replicas → Machines) and the vSphere Machine
//! controller (Machine → cloned VM → Node, and back on deletion), with the real
//! machine-api-operator's phases and error texts.
//!
//! Scale-down picks, in order: Machines annotated `machine.openshift.io/delete-machine`,
//! Machines that are not Running, then the newest (`spec.deletePolicy: Oldest` picks the
//! oldest instead). The real default policy (`Random`) applies the same two priorities first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use vcfm_api::openshift::{LABEL_ROLE, Machine, MachineSet, VSphereMachineProviderSpec};
use vcfm_vsphere::{CloneSpec, MoRef};

use super::{Ctx, run_loop, trigger};
use crate::kapi::{self, call};
use crate::seed::{MACHINE_FINALIZER, MAPI_NS};

/// Annotations that mark a Machine to be removed first on scale-down.
const DELETE_ANNOTATIONS: &[&str] = &[
    "machine.openshift.io/delete-machine",
    "machine.openshift.io/cluster-api-delete-machine",
];

type Inflight = Arc<Mutex<HashMap<String, JoinHandle<()>>>>;

/// Runs the Machine controller until cancelled.
pub(crate) async fn run_machine_controller(ctx: Ctx) {
    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let inflight: Inflight = Arc::default();
    let triggers = vec![trigger(machines.clone())];
    run_loop("machine-controller", &ctx, triggers, || {
        // Sim tier only (the real tier runs the real component): polls, as it reads
        // vCenter state no watch reports and keeps timers of its own.
        super::due_in(ctx.delays.resync);
        reconcile_machines(ctx.clone(), machines.clone(), inflight.clone())
    })
    .await;
    let handles: Vec<_> = inflight
        .lock()
        .map(|mut m| m.drain().map(|(_, h)| h).collect())
        .unwrap_or_default();
    for h in handles {
        h.abort();
    }
}

fn has_finalizer(m: &Machine) -> bool {
    m.finalizers().iter().any(|f| f == MACHINE_FINALIZER)
}

async fn reconcile_machines(ctx: Ctx, api: Api<Machine>, inflight: Inflight) -> Result<(), String> {
    let list = call(api.list(&ListParams::default()))
        .await
        .map_err(|e| e.to_string())?;
    for m in list {
        let uid = m.uid().unwrap_or_default();
        {
            let mut map = inflight.lock().map_err(|e| e.to_string())?;
            map.retain(|_, h| !h.is_finished());
            if map.contains_key(&uid) {
                continue;
            }
        }
        let name = m.name_any();
        let task: Option<JoinHandle<()>> = if m.metadata.deletion_timestamp.is_some() {
            has_finalizer(&m).then(|| tokio::spawn(delete_machine(ctx.clone(), api.clone(), name)))
        } else if !has_finalizer(&m) {
            let mut fins = m.finalizers().to_vec();
            fins.push(MACHINE_FINALIZER.into());
            let patch =
                json!({"metadata": {"finalizers": fins, "resourceVersion": m.resource_version()}});
            kapi::merge(&api, &name, patch)
                .await
                .map_err(|e| e.to_string())?;
            None
        } else {
            let running = m.status.as_ref().is_some_and(|s| s.node_ref.is_some());
            match m.phase() {
                "" | "Provisioning" | "Provisioned" if !running => Some(tokio::spawn(
                    provision_machine(ctx.clone(), api.clone(), name),
                )),
                _ => None,
            }
        };
        if let Some(t) = task {
            inflight.lock().map_err(|e| e.to_string())?.insert(uid, t);
        }
    }
    Ok(())
}

/// Outcome of one provisioning or deletion attempt that did not finish.
enum Stop {
    /// The Machine is gone or being deleted: stop quietly.
    Gone,
    /// Invalid configuration: the Machine goes Failed (`errorReason`, `errorMessage`).
    Terminal(&'static str, String),
    /// Transient: record the message in `providerStatus` and try again later.
    Retry(String),
}

impl From<kapi::CallError> for Stop {
    fn from(e: kapi::CallError) -> Self {
        if e.is_not_found() {
            Stop::Gone
        } else {
            Stop::Retry(e.to_string())
        }
    }
}

async fn provision_machine(ctx: Ctx, api: Api<Machine>, name: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match provision_once(&ctx, &api, &name).await {
            Ok(()) | Err(Stop::Gone) => return,
            Err(Stop::Terminal(reason, message)) => {
                tracing::info!(machine = %name, %message, "machine failed");
                let st = json!({"phase": "Failed", "errorReason": reason, "errorMessage": message,
                    "lastUpdated": kapi::now()});
                // Best effort: a later reconcile retries provisioning if this write was lost.
                let _ = kapi::merge_status(&api, &name, st).await;
                return;
            }
            Err(Stop::Retry(message)) => {
                tracing::debug!(machine = %name, %message, "provisioning will be retried");
                let st = json!({"lastUpdated": kapi::now(), "providerStatus": {"conditions": [{
                    "type": "MachineCreation", "status": "False", "reason": "MachineCreationFailed",
                    "message": message, "lastTransitionTime": kapi::now()}]}});
                let _ = kapi::merge_status(&api, &name, st).await;
            }
        }
        if !ctx.sleep(backoff).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

/// Reads `<server>.username` / `.password` from the Machine's credentials secret, with
/// machine-api's errors.
async fn credentials(
    ctx: &Ctx,
    name: &str,
    ps: &VSphereMachineProviderSpec,
    server: &str,
) -> Result<(String, String), Stop> {
    let secret_name = ps
        .credentials_secret
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let secret = match call(secrets.get(&secret_name)).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Err(Stop::Retry(format!(
                "{name}: failed to create scope for machine: error getting credentials secret {MAPI_NS}/{secret_name}: secrets \"{secret_name}\" not found"
            )));
        }
        Err(e) => return Err(Stop::Retry(e.to_string())),
    };
    let data = secret.data.unwrap_or_default();
    let field = |suffix: &str| {
        let key = format!("{server}.{suffix}");
        data.get(&key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| {
                Stop::Terminal(
                    "InvalidConfiguration",
                    format!(
                        "{name}: failed to create scope for machine: {MAPI_NS}/{secret_name} does not have \"{key}\" field set"
                    ),
                )
            })
    };
    Ok((field("username")?, field("password")?))
}

/// `/<dc>/vm/<rel>` for relative names, the path itself when absolute.
fn vm_path(dc: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{dc}/vm/{p}")
    }
}

/// The parts of a provider spec the vSphere actuator needs.
struct Placement {
    server: String,
    dc: String,
    folder: String,
}

fn placement(name: &str, ps: &VSphereMachineProviderSpec) -> Result<Placement, Stop> {
    let ws = ps.workspace.clone().ok_or_else(|| {
        Stop::Terminal(
            "InvalidConfiguration",
            format!("{name}: failed to create scope for machine: no workspace"),
        )
    })?;
    let dc = ws.datacenter.clone().unwrap_or_default();
    Ok(Placement {
        server: ws.server.clone().unwrap_or_default(),
        folder: vm_path(&dc, ws.folder.as_deref().unwrap_or(""))
            .trim_end_matches('/')
            .to_string(),
        dc,
    })
}

fn provider_spec(name: &str, m: &Machine) -> Result<VSphereMachineProviderSpec, Stop> {
    let invalid = |why: String| {
        Stop::Terminal(
            "InvalidConfiguration",
            format!(
                "{name}: failed to create scope for machine: failed to get machine config: {why}"
            ),
        )
    };
    match m.spec.spec.provider_spec.as_ref().map(|p| p.vsphere()) {
        Some(Ok(Some(ps))) => Ok(ps),
        Some(Err(e)) => Err(invalid(e.to_string())),
        _ => Err(invalid("no providerSpec.value".into())),
    }
}

fn not_found_or(e: vcfm_vsphere::Error, what: &str, name: &str) -> Stop {
    if e.is_not_found() {
        Stop::Terminal(
            "InvalidConfiguration",
            format!(
                "{name}: reconciler failed to Create machine: {what} not found, specify valid value"
            ),
        )
    } else {
        Stop::Retry(format!("{name}: reconciler failed to Create machine: {e}"))
    }
}

async fn provision_once(ctx: &Ctx, api: &Api<Machine>, name: &str) -> Result<(), Stop> {
    let m = call(api.get(name)).await?;
    if m.metadata.deletion_timestamp.is_some() {
        return Err(Stop::Gone);
    }
    if m.phase().is_empty() {
        kapi::merge_status(
            api,
            name,
            json!({"phase": "Provisioning", "lastUpdated": kapi::now()}),
        )
        .await?;
    }
    let role = m
        .labels()
        .get(LABEL_ROLE)
        .cloned()
        .unwrap_or_else(|| "worker".into());
    let ps = provider_spec(name, &m)?;
    let place = placement(name, &ps)?;
    let mut ip = m
        .status
        .as_ref()
        .and_then(|s| s.addresses.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone());
    let provider_id = match m.spec.spec.provider_id.clone() {
        Some(id) => id,
        None => {
            if !ctx.sleep(ctx.delays.provision).await {
                return Err(Stop::Gone);
            }
            if place.server == *ctx.target_server
                && let Some(extra) = ctx.faults.slow_provision_target
                && !ctx.sleep(extra).await
            {
                return Err(Stop::Gone);
            }
            let uuid = clone_vm(ctx, name, &ps, &place).await?;
            let addr = ctx.allocate_ip(&place.server);
            ip = Some(addr.clone());
            let id = format!("vsphere://{uuid}");
            kapi::merge(
                api,
                name,
                json!({"spec": {"providerID": id},
                    "metadata": {"annotations": {"machine.openshift.io/instance-state": "poweredOn"}}}),
            )
            .await?;
            kapi::merge_status(
                api,
                name,
                json!({"phase": "Provisioned", "lastUpdated": kapi::now(),
                    "addresses": [{"type": "InternalIP", "address": addr}, {"type": "InternalDNS", "address": name}],
                    "providerStatus": {"instanceId": uuid, "instanceState": "poweredOn", "conditions": [{
                        "type": "MachineCreation", "status": "True", "reason": "MachineCreationSucceeded",
                        "message": "Machine successfully created", "lastTransitionTime": kapi::now()}]}}),
            )
            .await?;
            id
        }
    };
    let ip = ip.unwrap_or_else(|| ctx.allocate_ip(&place.server));
    // The VM boots, ignition runs, the kubelet registers and its CSRs get approved.
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = match call(nodes.get_opt(name)).await? {
        Some(n) => n,
        None => {
            let created = kapi::create(
                &ctx.client,
                &crate::seed::node(name, &role, &provider_id, &ip, false),
            )
            .await?;
            serde_json::from_value(created).map_err(|e| Stop::Retry(e.to_string()))?
        }
    };
    super::drain::link_node(&nodes, &node, &m).await?;
    if !ctx.sleep(ctx.delays.node_ready).await {
        return Err(Stop::Gone);
    }
    kapi::merge_status(&nodes, name, crate::seed::node_status(name, &ip, true)).await?;
    if call(api.get(name))
        .await?
        .metadata
        .deletion_timestamp
        .is_some()
    {
        return Err(Stop::Gone);
    }
    kapi::merge_status(
        api,
        name,
        json!({"phase": "Running", "lastUpdated": kapi::now(), "errorMessage": null, "errorReason": null,
            "nodeRef": {"kind": "Node", "name": name, "uid": node.uid()}}),
    )
    .await?;
    tracing::info!(machine = %name, server = %place.server, "machine running");
    Ok(())
}

/// Clones the Machine's VM (or finds the one an earlier attempt made); returns its UUID.
async fn clone_vm(
    ctx: &Ctx,
    name: &str,
    ps: &VSphereMachineProviderSpec,
    place: &Placement,
) -> Result<String, Stop> {
    let (user, password) = credentials(ctx, name, ps, &place.server).await?;
    let vc = ctx
        .vc
        .client(&place.server, &user, &password)
        .map_err(|e| {
            Stop::Retry(format!(
                "{name}: failed to create scope for machine: failed to create vSphere session: {e}"
            ))
        })?;
    vc.login().await.map_err(|e| {
        Stop::Retry(format!(
            "{name}: failed to create scope for machine: failed to create vSphere session: {e}"
        ))
    })?;
    let ws = ps.workspace.clone().unwrap_or_default();
    let dc = &place.dc;
    let vm_at = format!("{}/{name}", place.folder);
    if let Some(vm) = vc
        .find_by_inventory_path(&vm_at)
        .await
        .map_err(|e| Stop::Retry(e.to_string()))?
        && vm.kind == "VirtualMachine"
    {
        let pool = resolve_pool(&vc, name, dc, &ws).await?;
        join_vm_group(ctx, &vc, name, ps, &pool, &vm).await?;
        power_on(&vc, name, &vm).await?;
        return vm_uuid(&vc, &vm).await;
    }
    let template = find_template(&vc, name, dc, ps.template.as_deref().unwrap_or("")).await?;
    let folder = vc
        .find_folder(&place.folder)
        .await
        .map_err(|e| not_found_or(e, "folder", name))?;
    // Empty pool / datastore: machine-api's defaults (the datacenter's first cluster's root
    // pool; the template's datastore).
    let pool = resolve_pool(&vc, name, dc, &ws).await?;
    // Networks and VM groups are looked up in the cluster that owns the pool.
    let cluster = vc
        .resource_pool_owner(&pool)
        .await
        .map_err(|e| Stop::Retry(e.to_string()))?;
    let ds = ws.datastore.clone().unwrap_or_default();
    let datastore = if ds.is_empty() {
        None
    } else {
        let ds_path = if ds.starts_with('/') {
            ds
        } else {
            format!("/{dc}/datastore/{ds}")
        };
        Some(
            vc.find_datastore(&ds_path)
                .await
                .map_err(|e| not_found_or(e, "datastore", name))?,
        )
    };
    for dev in ps
        .network
        .as_ref()
        .map(|n| n.devices.as_slice())
        .unwrap_or(&[])
    {
        // machine-api-operator `reconciler.go` `getNetworkDevices`: by plain name among the
        // networks of the cluster owning the resource pool.
        let net = dev.network_name.clone().unwrap_or_default();
        let attached = match &cluster {
            Some(c) => vc
                .cluster_networks(c)
                .await
                .map_err(|e| Stop::Retry(e.to_string()))?,
            None => vec![],
        };
        if !attached.iter().any(|(_, n)| *n == net) {
            return Err(Stop::Terminal(
                "InvalidConfiguration",
                format!(
                    "{name}: reconciler failed to Create machine: unable to get network for {net:?}"
                ),
            ));
        }
    }
    if let Some(pat) = &ctx.faults.fail_provision_matching
        && name.contains(pat.as_str())
    {
        return Err(Stop::Terminal(
            "CreateError",
            format!(
                "{name}: reconciler failed to Create machine: task {} has failed: Insufficient resources to satisfy configured failover level for vSphere HA.",
                crate::kapi::suffix(6)
            ),
        ));
    }
    let mut spec = CloneSpec::new(folder, Some(pool.clone()));
    spec.datastore = datastore;
    // Cloned powered off; the controller adds the VM to its group, then powers it on
    // (machine-api-operator `reconciler.go`: `PowerOn: false` in the clone spec, then
    // `modifyVMGroup` and `powerOn` once the clone task finished).
    spec.power_on = false;
    spec.timeout = Duration::from_secs(60);
    let vm = match vc.clone_vm(&template, name, &spec).await {
        Ok(vm) => vm,
        Err(vcfm_vsphere::Error::DuplicateName { .. }) => vc
            .find_vm(&vm_at)
            .await
            .map_err(|e| Stop::Retry(e.to_string()))?,
        Err(e) => {
            return Err(Stop::Retry(format!(
                "{name}: reconciler failed to Create machine: {e}"
            )));
        }
    };
    join_vm_group(ctx, &vc, name, ps, &pool, &vm).await?;
    power_on(&vc, name, &vm).await?;
    // Like machine-api: tag new VMs with the cluster's ownership tag when it exists.
    let category = format!("openshift-{}", ctx.infra_id);
    if let Ok(Some(cat)) = vc.find_category(&category).await
        && let Ok(Some(tag)) = vc.find_tag(&cat.id, &ctx.infra_id).await
        && let Err(e) = vc.attach_tag(&tag.id, &vm).await
    {
        tracing::warn!(machine = %name, error = %e, "attaching the ownership tag failed");
    }
    vm_uuid(&vc, &vm).await
}

/// The template as the machine controller finds it (machine-api-operator
/// `pkg/controller/vsphere/session/session.go` `FindVM` → `Finder.VirtualMachine` in the
/// workspace datacenter: a path is looked up as such, a plain name anywhere in the
/// datacenter's VM folder tree, and more than one match fails), then refused below virtual
/// hardware 15 (`reconciler.go` `clone`, `minimumHWVersion`).
async fn find_template(
    vc: &vcfm_vsphere::Client,
    name: &str,
    dc: &str,
    template: &str,
) -> Result<MoRef, Stop> {
    let found = if template.contains('/') {
        vc.find_vm(&vm_path(dc, template))
            .await
            .map_err(|e| not_found_or(e, "template", name))?
    } else {
        let root = vc
            .find_folder(&format!("/{dc}/vm"))
            .await
            .map_err(|e| not_found_or(e, "folder", name))?;
        let matches: Vec<MoRef> = vc
            .list_vms(&root, true)
            .await
            .map_err(|e| Stop::Retry(e.to_string()))?
            .into_iter()
            .filter(|v| v.name == template)
            .map(|v| v.vm)
            .collect();
        match matches.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Stop::Terminal(
                    "InvalidConfiguration",
                    format!(
                        "{name}: reconciler failed to Create machine: template not found, specify valid value"
                    ),
                ));
            }
            _ => {
                return Err(Stop::Terminal(
                    "InvalidConfiguration",
                    format!(
                        "{name}: reconciler failed to Create machine: multiple templates found, specify one in config"
                    ),
                ));
            }
        }
    };
    match vc.hardware_version(&found).await {
        Ok(Some(v)) if v < 15 => Err(Stop::Terminal(
            "InvalidConfiguration",
            format!(
                "{name}: reconciler failed to Create machine: Hardware lower than 15 is not supported, clone stopped. Detected machine template version is {v}."
            ),
        )),
        Ok(_) => Ok(found),
        Err(e) => Err(Stop::Retry(e.to_string())),
    }
}

/// The Machine's resource pool (machine-api's default when empty).
async fn resolve_pool(
    vc: &vcfm_vsphere::Client,
    name: &str,
    dc: &str,
    ws: &vcfm_api::openshift::Workspace,
) -> Result<MoRef, Stop> {
    let pool_path = ws.resource_pool.clone().unwrap_or_default();
    if pool_path.is_empty() {
        default_pool(vc, dc).await
    } else {
        vc.find_resource_pool(&pool_path).await
    }
    .map_err(|e| not_found_or(e, "resource pool", name))
}

/// `modifyVMGroup` (machine-api-operator `pkg/controller/vsphere/reconciler.go`): after
/// the clone, before powering on, the VM is added to `workspace.vmGroup` in the
/// configuration of the cluster owning the pool: the group's members are read and written
/// back with the VM appended (an `edit` of the group; a VM already in it changes nothing).
/// A group that cluster does not have makes the edit fail on every attempt, and the
/// machine never powers on.
async fn join_vm_group(
    ctx: &Ctx,
    vc: &vcfm_vsphere::Client,
    name: &str,
    ps: &VSphereMachineProviderSpec,
    pool: &MoRef,
    vm: &MoRef,
) -> Result<(), Stop> {
    let Some(group) = ps
        .workspace
        .as_ref()
        .and_then(|w| w.extra.get("vmGroup"))
        .and_then(|g| g.as_str())
        .filter(|g| !g.is_empty())
    else {
        return Ok(());
    };
    let failed = |e: String| {
        Stop::Retry(format!(
            "{name}: reconciler failed to Create machine: could not update VM Group membership: {e}"
        ))
    };
    let Some(cluster) = vc
        .resource_pool_owner(pool)
        .await
        .map_err(|e| Stop::Retry(e.to_string()))?
        .filter(|c| c.kind == "ClusterComputeResource")
    else {
        return Err(failed(format!(
            "the owner of resource pool {pool} is not a cluster"
        )));
    };
    let _turn = ctx.vm_group_edits.lock().await;
    let drs = vc
        .drs_groups(&cluster)
        .await
        .map_err(|e| Stop::Retry(e.to_string()))?;
    let mut members = drs
        .vm_group(group)
        .map(<[MoRef]>::to_vec)
        .unwrap_or_default();
    if members.contains(vm) {
        return Ok(());
    }
    members.push(vm.clone());
    vc.set_vm_group_members(&cluster, group, &members)
        .await
        .map_err(|e| {
            failed(format!(
                "error reconfiguring cluster for vm-host group {group}: {e}"
            ))
        })
}

/// Powers the clone on (machine-api-operator `reconciler.go` `powerOn`), idempotently.
async fn power_on(vc: &vcfm_vsphere::Client, name: &str, vm: &MoRef) -> Result<(), Stop> {
    vc.power_on_vm(vm).await.map_err(|e| {
        Stop::Retry(format!(
            "{name}: reconciler failed to Create machine: PowerOn task finished with error: {e}"
        ))
    })
}

/// The root resource pool of the datacenter's first compute cluster.
async fn default_pool(vc: &vcfm_vsphere::Client, dc: &str) -> vcfm_vsphere::Result<MoRef> {
    let host_folder = vc.find_folder(&format!("/{dc}/host")).await?;
    let children = vc.folder_children(&host_folder).await?;
    let clusters: Vec<MoRef> = children
        .into_iter()
        .filter(|c| c.kind == "ClusterComputeResource")
        .collect();
    let props = vc
        .retrieve_properties("ClusterComputeResource", &clusters, &["resourcePool"])
        .await?;
    props
        .first()
        .and_then(|o| o.moref("resourcePool"))
        .ok_or_else(|| vcfm_vsphere::Error::NotFound {
            server: vc.server().to_string(),
            kind: "resource pool".into(),
            path: format!("/{dc}/host/*/Resources"),
        })
}

async fn vm_uuid(vc: &vcfm_vsphere::Client, vm: &MoRef) -> Result<String, Stop> {
    let props = vc
        .retrieve_properties("VirtualMachine", std::slice::from_ref(vm), &["config.uuid"])
        .await
        .map_err(|e| Stop::Retry(e.to_string()))?;
    props
        .first()
        .and_then(|o| o.str("config.uuid"))
        .map(str::to_string)
        .ok_or_else(|| Stop::Retry(format!("VM {vm} has no config.uuid")))
}

async fn delete_machine(ctx: Ctx, api: Api<Machine>, name: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match delete_once(&ctx, &api, &name).await {
            Ok(()) | Err(Stop::Gone) => return,
            Err(Stop::Terminal(_, message) | Stop::Retry(message)) => {
                tracing::debug!(machine = %name, %message, "deletion will be retried");
            }
        }
        if !ctx.sleep(backoff).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

async fn delete_once(ctx: &Ctx, api: &Api<Machine>, name: &str) -> Result<(), Stop> {
    let m = call(api.get(name)).await?;
    if !has_finalizer(&m) {
        return Err(Stop::Gone);
    }
    if m.phase() != "Deleting" {
        kapi::merge_status(
            api,
            name,
            json!({"phase": "Deleting", "lastUpdated": kapi::now()}),
        )
        .await?;
        if !ctx.sleep(ctx.delays.machine_delete).await {
            return Err(Stop::Gone);
        }
    }
    if let Some(node) = m
        .status
        .as_ref()
        .and_then(|s| s.node_ref.as_ref())
        .and_then(|r| r.name.clone())
    {
        super::drain::drain(ctx, &node)
            .await
            .map_err(|e| Stop::Retry(format!("{name}: {e}")))?;
    }
    if let Ok(ps) = provider_spec(name, &m)
        && let Ok(place) = placement(name, &ps)
        && !place.server.is_empty()
    {
        let created_vm = m.spec.spec.provider_id.is_some();
        match credentials(ctx, name, &ps, &place.server).await {
            Ok((user, password)) => {
                let vc = ctx.vc.client(&place.server, &user, &password);
                match vc {
                    Ok(vc) => {
                        let vm_at = format!("{}/{name}", place.folder);
                        match vc.find_by_inventory_path(&vm_at).await {
                            Ok(Some(vm)) if vm.kind == "VirtualMachine" => {
                                match vc.destroy_vm(&vm).await {
                                    Ok(()) => {}
                                    Err(vcfm_vsphere::Error::ManagedObjectNotFound { .. }) => {}
                                    Err(e) => {
                                        return Err(Stop::Retry(format!(
                                            "{name}: reconciler failed to Delete machine: {e}"
                                        )));
                                    }
                                }
                            }
                            Ok(_) => {}
                            Err(e) if created_vm => {
                                return Err(Stop::Retry(format!(
                                    "{name}: reconciler failed to Delete machine: {e}"
                                )));
                            }
                            Err(_) => {}
                        }
                    }
                    Err(e) if created_vm => return Err(Stop::Retry(e)),
                    Err(_) => {}
                }
            }
            // A Machine that never got a VM has nothing to clean up on the vCenter.
            Err(e) if created_vm => return Err(e),
            Err(_) => {}
        }
    }
    let node_name = m
        .status
        .as_ref()
        .and_then(|s| s.node_ref.as_ref())
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| name.to_string());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    kapi::delete_ignore_missing(&nodes, &node_name).await?;
    let m = call(api.get(name)).await?;
    kapi::remove_finalizer(
        api,
        name,
        m.resource_version().as_deref(),
        m.finalizers(),
        MACHINE_FINALIZER,
    )
    .await?;
    tracing::info!(machine = %name, "machine deleted");
    Ok(())
}

/// Runs the MachineSet controller until cancelled.
pub(crate) async fn run_machineset_controller(ctx: Ctx) {
    let sets: Api<MachineSet> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), MAPI_NS);
    let triggers = vec![trigger(sets.clone()), trigger(machines.clone())];
    run_loop("machineset-controller", &ctx, triggers, || {
        // Sim tier only (the real tier runs the real component): polls as before; its
        // pace is the sim tier's, not the real tier's.
        super::due_in(ctx.delays.resync);
        reconcile_sets(sets.clone(), machines.clone())
    })
    .await;
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn is_ready(m: &Machine) -> bool {
    m.phase() == "Running" && m.status.as_ref().is_some_and(|s| s.node_ref.is_some())
}

async fn reconcile_sets(sets: Api<MachineSet>, machines: Api<Machine>) -> Result<(), String> {
    let sets_list = call(sets.list(&ListParams::default()))
        .await
        .map_err(|e| e.to_string())?;
    let all = call(machines.list(&ListParams::default()))
        .await
        .map_err(|e| e.to_string())?;
    for ms in sets_list {
        if ms.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = ms.name_any();
        // The real MachineSet defaulting webhook decodes the vSphere provider spec and
        // encodes it again (machine-api-operator pkg/webhooks/machine_webhook.go,
        // `defaultVSphere`), so its embedded ObjectMeta comes back as `metadata: {}`; the
        // differential test showed every real MachineSet carrying it. Played here once
        // per MachineSet, after admission rather than during it.
        let value = ms
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.provider_spec.as_ref())
            .and_then(|p| p.value.as_ref());
        if value.is_some_and(|v| v.is_object() && v.get("metadata").is_none()) {
            let patch = serde_json::json!({"spec": {"template": {"spec": {"providerSpec": {"value": {"metadata": {}}}}}}});
            kapi::merge(&sets, &name, patch)
                .await
                .map_err(|e| e.to_string())?;
        }
        let selector = ms
            .spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default();
        let mut active: Vec<&Machine> = all
            .items
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none() && matches(&selector, m.labels()))
            .collect();
        let want = usize::try_from(ms.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        if active.len() < want {
            for _ in active.len()..want {
                let obj = new_machine(&ms);
                kapi::create(&machines.clone().into_client(), &obj)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        } else if active.len() > want {
            let oldest =
                ms.spec.extra.get("deletePolicy").and_then(Value::as_str) == Some("Oldest");
            active.sort_by_key(|m| {
                let marked = DELETE_ANNOTATIONS
                    .iter()
                    .any(|a| m.annotations().contains_key(*a));
                let ts = m.metadata.creation_timestamp.clone().map(|t| t.0);
                (
                    !marked,
                    is_ready(m),
                    if oldest {
                        None
                    } else {
                        ts.map(std::cmp::Reverse)
                    },
                    m.name_any(),
                )
            });
            let excess = active.len() - want;
            for m in active.drain(..excess) {
                kapi::delete_ignore_missing(&machines, &m.name_any())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let ready = active.iter().filter(|m| is_ready(m)).count();
        let selector_str = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let status = json!({"replicas": active.len(), "fullyLabeledReplicas": active.len(),
            "readyReplicas": ready, "availableReplicas": ready,
            "observedGeneration": ms.metadata.generation, "labelSelector": selector_str});
        let current = serde_json::to_value(&ms.status).unwrap_or(Value::Null);
        let changed = [
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
            "labelSelector",
        ]
        .iter()
        .any(|k| current.get(*k) != status.get(*k));
        if changed {
            kapi::merge_status(&sets, &name, status)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn new_machine(ms: &MachineSet) -> Value {
    let name = format!("{}-{}", ms.name_any(), kapi::suffix(5));
    let template = ms.spec.template.clone().unwrap_or_default();
    let labels = template.metadata.map(|m| m.labels).unwrap_or_default();
    let spec = serde_json::to_value(template.spec.unwrap_or_default()).unwrap_or(json!({}));
    json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "namespace": MAPI_NS, "labels": labels,
            "ownerReferences": [{"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
                "name": ms.name_any(), "uid": ms.uid(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec})
}
