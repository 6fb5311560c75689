//! Machine API helpers for the machine move (phases 11-13): naming, the
//! provider-spec rewrite for a target failure domain, the worker MachineSet
//! copy, source selection, machine/node readiness and the CPMS patch.
//!
//! Everything here that decides is a pure function, unit-tested below; the
//! async helpers only read and write.

use crate::error::PhaseError;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use vcfm_api::FailureDomain;
use vcfm_api::openshift::{
    LABEL_MACHINESET, LABEL_ROLE, LABEL_TYPE, MACHINE_API_NAMESPACE, Machine, MachineSet,
    NetworkDevice, NetworkSpec, VSphereMachineProviderSpec, Workspace,
};

/// Label vcfm puts on the MachineSets it creates, valued with the migration's name.
pub const CREATED_BY_LABEL: &str = "migration.openshift.io/created-by";

/// Longest MachineSet name that still leaves room for the Machine API's
/// `-xxxxx` suffix within a 63-character host name.
const MAX_MACHINESET_NAME: usize = 57;

/// Lower-cases and replaces everything outside `[a-z0-9-]` with `-`, collapsing
/// runs and trimming dashes at both ends (an RFC 1123 label body).
pub fn sanitize_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        let c = ch.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Short stable hash of a string (FNV-1a), to keep truncated names unique.
fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")[..6].to_string()
}

/// `<infraID>-worker-<fd name sanitised>`, shortened (with a hash of the full
/// failure-domain name) when it would not leave room for machine suffixes.
pub fn worker_machineset_name(infra_id: &str, fd_name: &str) -> String {
    let fd = sanitize_label(fd_name);
    let fd = if fd.is_empty() {
        short_hash(fd_name)
    } else {
        fd
    };
    let prefix = format!("{}-worker-", sanitize_label(infra_id));
    let full = format!("{prefix}{fd}");
    if full.len() <= MAX_MACHINESET_NAME {
        return full;
    }
    let hash = short_hash(fd_name);
    let room = MAX_MACHINESET_NAME.saturating_sub(prefix.len() + hash.len() + 1);
    let cut: String = fd.chars().take(room).collect();
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{cut}-{hash}")
    }
}

/// The VM folder of a failure domain: `topology.folder`, else `/<dc>/vm/<infraID>`.
pub fn folder_for(fd: &FailureDomain, infra_id: &str) -> String {
    match &fd.topology.folder {
        Some(f) if !f.trim().is_empty() => f.clone(),
        _ => format!(
            "/{}/vm/{infra_id}",
            fd.topology.datacenter.trim_matches('/')
        ),
    }
}

/// The source provider spec rewritten for a target failure domain: placement,
/// template and networks come from the failure domain (never from the source,
/// whose paths mean nothing on another vCenter); sizing, secrets and every
/// field vcfm does not model are kept. Source tag IDs are dropped: they name
/// tags of the source vCenter. So is `workspace.vmGroup`: the group is a DRS
/// group of the source cluster, and the machine controller adds every clone to
/// it (machine-api-operator `pkg/controller/vsphere/reconciler.go`
/// `modifyVMGroup`), which fails on a target cluster that has no such group;
/// the CPMS generator likewise takes `vmGroup` only from a failure domain's
/// `zoneAffinity`. The target's own VM group, the failure domain's
/// `zoneAffinity.hostGroup.vmGroup`, takes its place, as the installer writes
/// it for a host-group zone (installer `pkg/asset/machines/vsphere/machines.go`).
pub fn provider_spec_for(
    source: &VSphereMachineProviderSpec,
    fd: &FailureDomain,
    infra_id: &str,
) -> VSphereMachineProviderSpec {
    let t = &fd.topology;
    let mut ps = source.clone();
    let mut old_ws = ps.workspace.take().unwrap_or_default();
    old_ws.extra.remove("vmGroup");
    if let Some(group) = fd.vm_group() {
        old_ws
            .extra
            .insert("vmGroup".into(), serde_json::Value::String(group.into()));
    }
    ps.workspace = Some(Workspace {
        server: Some(fd.server.clone()),
        datacenter: Some(t.datacenter.trim_matches('/').to_string()),
        datastore: Some(t.datastore.clone()),
        folder: Some(folder_for(fd, infra_id)),
        resource_pool: Some(
            t.resource_pool
                .clone()
                .unwrap_or_else(|| format!("{}/Resources", t.compute_cluster)),
        ),
        extra: old_ws.extra,
    });
    ps.template = Some(t.template.clone());
    let old_net = ps.network.take().unwrap_or_default();
    let devices = t
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| NetworkDevice {
            network_name: Some(n.clone()),
            // Per-device settings (IPAM pools, nameservers) follow their slot.
            extra: old_net
                .devices
                .get(i)
                .map(|d| d.extra.clone())
                .unwrap_or_default(),
        })
        .collect();
    ps.network = Some(NetworkSpec {
        devices,
        extra: old_net.extra,
    });
    ps.tag_ids = None;
    ps
}

/// Whether a MachineSet creates workers (role and type `worker`, or role only
/// when the type label is absent).
pub fn is_worker_set(ms: &MachineSet) -> bool {
    let Some(labels) = ms.template_labels() else {
        return false;
    };
    labels.get(LABEL_ROLE).map(String::as_str) == Some("worker")
        && labels
            .get(LABEL_TYPE)
            .is_none_or(|t| t.as_str() == "worker")
}

/// MachineSets whose machines live on `source_server`. An empty server
/// matches nothing (never "everything whose server is unset").
pub fn source_machinesets<'a>(sets: &'a [MachineSet], source_server: &str) -> Vec<&'a MachineSet> {
    if source_server.trim().is_empty() {
        return vec![];
    }
    let mut out: Vec<&MachineSet> = sets
        .iter()
        .filter(|ms| ms.server().as_deref() == Some(source_server))
        .collect();
    out.sort_by_key(|ms| ms.metadata.name.clone());
    out
}

/// The source worker MachineSet to copy: the first by name among the source
/// sets that create workers (an infra set is never copied).
pub fn pick_worker_template<'a>(
    sets: &'a [MachineSet],
    source_server: &str,
) -> Option<&'a MachineSet> {
    source_machinesets(sets, source_server)
        .into_iter()
        .find(|ms| is_worker_set(ms))
}

/// A new worker MachineSet for `fd`, copied from `source`: labels, annotations,
/// template (taints, metadata, lifecycle hooks) and every unknown field kept;
/// the selector and machine labels re-pointed at the new name; server-owned
/// metadata and status dropped.
pub fn new_worker_machineset(
    source: &MachineSet,
    name: &str,
    fd: &FailureDomain,
    infra_id: &str,
    replicas: i32,
    migration: &str,
) -> Result<MachineSet, String> {
    let ps = source
        .provider_spec()
        .map_err(|e| {
            format!(
                "MachineSet {} has a provider spec vcfm cannot read: {e}",
                source.metadata.name.as_deref().unwrap_or("")
            )
        })?
        .ok_or_else(|| {
            format!(
                "MachineSet {} has no provider spec to copy",
                source.metadata.name.as_deref().unwrap_or("")
            )
        })?;
    let ps = provider_spec_for(&ps, fd, infra_id);
    let mut ms = source.clone();
    let md = &mut ms.metadata;
    let mut labels = md.labels.take().unwrap_or_default();
    labels.insert(CREATED_BY_LABEL.into(), created_by_value(migration));
    *md = kube::api::ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(MACHINE_API_NAMESPACE.to_string()),
        labels: Some(labels),
        annotations: md.annotations.take(),
        ..Default::default()
    };
    ms.status = None;
    ms.spec.replicas = Some(replicas);
    let selector = ms.spec.selector.get_or_insert_with(Default::default);
    selector
        .match_labels
        .insert(LABEL_MACHINESET.into(), name.to_string());
    let template = ms.spec.template.get_or_insert_with(Default::default);
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert(LABEL_MACHINESET.into(), name.to_string());
    let spec = template.spec.get_or_insert_with(Default::default);
    spec.provider_spec
        .get_or_insert_with(Default::default)
        .set_vsphere(&ps)
        .map_err(|e| format!("serialising the provider spec: {e}"))?;
    spec.provider_id = None;
    Ok(ms)
}

/// The value of [`CREATED_BY_LABEL`] for a migration (a valid label value).
pub fn created_by_value(migration: &str) -> String {
    let s: String = sanitize_label(migration).chars().take(63).collect();
    s.trim_end_matches('-').to_string()
}

/// Whether a MachineSet points its machines at `server`.
pub fn targets_server(ms: &MachineSet, server: &str) -> bool {
    ms.server().as_deref() == Some(server)
}

/// Machines selected by a MachineSet's `matchLabels` (an empty selector selects none).
pub fn machines_of<'a>(ms: &MachineSet, machines: &'a [Machine]) -> Vec<&'a Machine> {
    let sel = ms
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .unwrap_or_default();
    if sel.is_empty() {
        return vec![];
    }
    machines
        .iter()
        .filter(|m| {
            let l = m.metadata.labels.as_ref();
            sel.iter().all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v))
        })
        .collect()
}

/// The name of the Node a Machine references, if any.
pub fn node_name(m: &Machine) -> Option<&str> {
    m.status.as_ref()?.node_ref.as_ref()?.name.as_deref()
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The InternalIP addresses of a Node.
pub fn internal_ips(n: &Node) -> Vec<String> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Where a Machine stands on its way to being a Ready node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineProgress {
    /// Running, with a Node that is Ready.
    Ready,
    /// Still on its way; the text says where.
    Waiting(String),
    /// Provisioning failed for good (Machine phase Failed); the text is its errorMessage.
    Failed(String),
}

/// Classifies a Machine, given the Nodes by name.
pub fn machine_progress(m: &Machine, nodes: &BTreeMap<String, Node>) -> MachineProgress {
    let name = m.metadata.name.as_deref().unwrap_or("");
    let st = m.status.as_ref();
    if m.phase() == "Failed" {
        let why = st
            .and_then(|s| s.error_message.clone().or(s.error_reason.clone()))
            .unwrap_or_else(|| "no errorMessage reported".into());
        return MachineProgress::Failed(format!("machine {name} failed: {why}"));
    }
    if m.metadata.deletion_timestamp.is_some() {
        return MachineProgress::Waiting(format!("machine {name} is being deleted"));
    }
    let Some(node) = node_name(m) else {
        let phase = if m.phase().is_empty() {
            "Pending"
        } else {
            m.phase()
        };
        let detail = creation_message(m)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return MachineProgress::Waiting(format!("machine {name}: {phase}{detail}"));
    };
    match nodes.get(node) {
        Some(n) if node_ready(n) && m.phase() == "Running" => MachineProgress::Ready,
        Some(n) if node_ready(n) => {
            MachineProgress::Waiting(format!("machine {name}: {}", m.phase()))
        }
        Some(_) => MachineProgress::Waiting(format!("node {node} of machine {name} is not Ready")),
        None => MachineProgress::Waiting(format!("node {node} of machine {name} not registered")),
    }
}

/// The latest failed `MachineCreation` condition message in providerStatus:
/// a transient provisioning error the Machine API keeps retrying.
fn creation_message(m: &Machine) -> Option<String> {
    let conds = m
        .status
        .as_ref()?
        .extra
        .get("providerStatus")?
        .get("conditions")?
        .as_array()?;
    conds
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some("MachineCreation")
                && c.get("status").and_then(Value::as_str) == Some("False")
        })
        .and_then(|c| c.get("message").and_then(Value::as_str))
        .map(str::to_string)
}

/// An IPv4/IPv6 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s.trim().split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(*i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(*i) & mask
            }
            _ => false,
        }
    }
}

/// The cluster's machine networks from an Infrastructure (as JSON):
/// `spec.platformSpec.vsphere.machineNetworks`, else the CIDRs of
/// `nodeNetworking.{internal,external}.networkSubnetCidr`, else
/// `status.platformStatus.vsphere.machineNetworks`.
pub fn machine_networks(infra: &Value) -> Vec<Cidr> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let vs = infra.pointer("/spec/platformSpec/vsphere");
    let mut out = strings(vs.and_then(|v| v.get("machineNetworks")));
    if out.is_empty() {
        for side in ["internal", "external"] {
            out.extend(strings(vs.and_then(|v| {
                v.pointer(&format!("/nodeNetworking/{side}/networkSubnetCidr"))
            })));
        }
    }
    if out.is_empty() {
        out = strings(infra.pointer("/status/platformStatus/vsphere/machineNetworks"));
    }
    out.iter().filter_map(|s| Cidr::parse(s)).collect()
}

/// Addresses outside every network (none when no network is known).
pub fn outside_networks(ips: &[String], nets: &[Cidr]) -> Vec<String> {
    if nets.is_empty() {
        return vec![];
    }
    ips.iter()
        .filter(|ip| {
            ip.parse::<IpAddr>()
                .is_ok_and(|a| !nets.iter().any(|n| n.contains(&a)))
        })
        .cloned()
        .collect()
}

/// The merge patch that points the CPMS at `names` and makes it Active with a
/// RollingUpdate strategy, or `None` when its spec already says so.
pub fn cpms_patch(cpms: &Value, names: &[&str]) -> Option<Value> {
    let spec = cpms.get("spec")?;
    let current: Vec<&str> = spec
        .pointer("/template/machines_v1beta1_machine_openshift_io/failureDomains/vsphere")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let platform = spec
        .pointer("/template/machines_v1beta1_machine_openshift_io/failureDomains/platform")
        .and_then(Value::as_str);
    let active = spec.get("state").and_then(Value::as_str) == Some("Active");
    let rolling = spec.pointer("/strategy/type").and_then(Value::as_str) == Some("RollingUpdate");
    // Tag IDs name tags of the source vCenter: new masters on the target would
    // fail to find them (the ownership tag is attached by the Machine API itself).
    let source_tags = spec
        .pointer("/template/machines_v1beta1_machine_openshift_io/spec/providerSpec/value/tagIDs")
        .is_some_and(|t| !t.is_null());
    let reset = topology_reset(
        spec.pointer("/template/machines_v1beta1_machine_openshift_io/spec/providerSpec/value"),
    );
    if current == names
        && platform == Some("VSphere")
        && active
        && rolling
        && !source_tags
        && reset.is_none()
    {
        return None;
    }
    let fds: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    let mut patch = json!({
        "spec": {
            "state": "Active",
            "strategy": { "type": "RollingUpdate" },
            "template": {
                "machines_v1beta1_machine_openshift_io": {
                    "failureDomains": { "platform": "VSphere", "vsphere": fds }
                }
            }
        }
    });
    let mut value = json!({});
    if source_tags {
        value["tagIDs"] = Value::Null;
    }
    if let Some(Value::Object(reset)) = reset {
        for (k, v) in reset {
            value[k] = v;
        }
    }
    if value.as_object().is_some_and(|o| !o.is_empty()) {
        patch["spec"]["template"]["machines_v1beta1_machine_openshift_io"]["spec"] =
            json!({ "providerSpec": { "value": value } });
    }
    Some(patch)
}

/// The merge patch that clears a CPMS template's topology fields, as the CPMS operator's
/// own generator writes them once failure domains are set
/// (cluster-control-plane-machine-set-operator `pkg/machineproviders/providers/openshift/
/// machine/v1beta1/providerconfig/vsphere.go`, `ResetTopologyRelatedFields`: empty
/// workspace, empty template, network devices only for their `addressesFromPools`). The
/// operator's webhook refuses a CPMS with failure domains whose template still carries
/// them (pre-4.16 CPMSs do), and they would keep naming the source vCenter. `None` when
/// already clear.
fn topology_reset(provider: Option<&Value>) -> Option<Value> {
    let p = provider?;
    let mut patch = serde_json::Map::new();
    if let Some(ws) = p.get("workspace").and_then(Value::as_object)
        && !ws.is_empty()
    {
        let cleared: serde_json::Map<String, Value> =
            ws.keys().map(|k| (k.clone(), Value::Null)).collect();
        patch.insert("workspace".into(), Value::Object(cleared));
    }
    if p.get("template")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
    {
        patch.insert("template".into(), json!(""));
    }
    let devices = p.pointer("/network/devices").and_then(Value::as_array);
    let pools: Vec<Value> = devices
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("addressesFromPools"))
        .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        .map(|a| json!({ "addressesFromPools": a }))
        .collect();
    let clean = devices.is_none_or(|d| d.iter().all(|dev| dev.get("networkName").is_none()));
    if !clean {
        let devices = if pools.is_empty() {
            Value::Null
        } else {
            Value::Array(pools)
        };
        patch.insert("network".into(), json!({ "devices": devices }));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// Lists the MachineSets of the Machine API namespace.
pub async fn list_machinesets(client: kube::Client) -> Result<Vec<MachineSet>, PhaseError> {
    Ok(Api::<MachineSet>::namespaced(client, MACHINE_API_NAMESPACE)
        .list(&ListParams::default())
        .await
        .map_err(|e| PhaseError::from(e).context("listing MachineSets"))?
        .items)
}

/// Lists the Machines of the Machine API namespace.
pub async fn list_machines(client: kube::Client) -> Result<Vec<Machine>, PhaseError> {
    Ok(Api::<Machine>::namespaced(client, MACHINE_API_NAMESPACE)
        .list(&ListParams::default())
        .await
        .map_err(|e| PhaseError::from(e).context("listing Machines"))?
        .items)
}

/// Every Node, by name.
pub async fn nodes_by_name(client: kube::Client) -> Result<BTreeMap<String, Node>, PhaseError> {
    Ok(Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| PhaseError::from(e).context("listing Nodes"))?
        .items
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n)))
        .collect())
}

/// Sets a MachineSet's replicas (merge patch on the spec; idempotent).
pub async fn scale_machineset(
    client: kube::Client,
    name: &str,
    replicas: i32,
) -> Result<(), PhaseError> {
    let patch = json!({ "spec": { "replicas": replicas } });
    Api::<MachineSet>::namespaced(client, MACHINE_API_NAMESPACE)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| PhaseError::from(e).context(&format!("scaling MachineSet {name}")))?;
    Ok(())
}

/// A MachineSet may be deleted only once it asks for zero replicas (an unset
/// count means 1, as the API server defaults it).
pub fn deletable(ms: &MachineSet) -> Result<(), String> {
    match ms.spec.replicas.unwrap_or(1) {
        0 => Ok(()),
        n => Err(format!(
            "refusing to delete MachineSet {}: it still asks for {n} replica(s)",
            ms.metadata.name.as_deref().unwrap_or_default()
        )),
    }
}

/// Deletes a MachineSet only if it still is the object read (same
/// resourceVersion) with zero replicas: a concurrent scale-up wins.
/// Returns whether a delete was issued (a vanished set counts as done).
pub async fn delete_empty_machineset(
    client: kube::Client,
    ms: &MachineSet,
) -> Result<bool, PhaseError> {
    let name = ms.metadata.name.as_deref().unwrap_or_default();
    deletable(ms).map_err(PhaseError::Fatal)?;
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: ms.metadata.resource_version.clone(),
            uid: ms.metadata.uid.clone(),
        }),
        ..Default::default()
    };
    match Api::<MachineSet>::namespaced(client, MACHINE_API_NAMESPACE)
        .delete(name, &dp)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if crate::error::is_not_found(&e) => Ok(false),
        // A stale read: look again next time.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(PhaseError::from(e).context(&format!("deleting MachineSet {name}"))),
    }
}

/// Node names that belong to a set of Machines: their nodeRefs plus Nodes
/// annotated `machine.openshift.io/machine: openshift-machine-api/<machine>`.
pub fn nodes_of_machines(
    machine_names: &BTreeSet<String>,
    machines: &[&Machine],
    nodes: &BTreeMap<String, Node>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = machines
        .iter()
        .filter_map(|m| node_name(m).map(str::to_string))
        .filter(|n| nodes.contains_key(n))
        .collect();
    for (name, n) in nodes {
        let owner = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("machine.openshift.io/machine"))
            .and_then(|v| v.strip_prefix(&format!("{MACHINE_API_NAMESPACE}/")));
        if owner.is_some_and(|o| machine_names.contains(o)) {
            out.insert(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcfm_api::Topology;

    fn fd(name: &str, folder: Option<&str>) -> FailureDomain {
        FailureDomain {
            name: name.into(),
            region: "r1".into(),
            zone: "z1".into(),
            server: "vc-target.example.com".into(),
            topology: Topology {
                datacenter: "DC1".into(),
                compute_cluster: "/DC1/host/C1".into(),
                datastore: "/DC1/datastore/DS1".into(),
                networks: vec!["net-a".into(), "net-b".into()],
                resource_pool: None,
                folder: folder.map(str::to_string),
                template: "/DC1/vm/rhcos-target".into(),
            },
            region_affinity: None,
            zone_affinity: None,
        }
    }

    fn source_ms(role: &str, server: &str) -> MachineSet {
        serde_json::from_value(json!({
            "apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
            "metadata": {"name": format!("ocp-abcde-{role}-0"), "namespace": MACHINE_API_NAMESPACE,
                "uid": "u1", "resourceVersion": "42", "generation": 3,
                "labels": {"machine.openshift.io/cluster-api-cluster": "ocp-abcde"},
                "annotations": {"machine.openshift.io/vCPU": "4"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "y"}]},
            "spec": {"replicas": 2, "deletePolicy": "Oldest",
                "selector": {"matchLabels": {
                    "machine.openshift.io/cluster-api-cluster": "ocp-abcde",
                    "machine.openshift.io/cluster-api-machineset": format!("ocp-abcde-{role}-0")}},
                "template": {"metadata": {"labels": {
                    "machine.openshift.io/cluster-api-cluster": "ocp-abcde",
                    "machine.openshift.io/cluster-api-machine-role": role,
                    "machine.openshift.io/cluster-api-machine-type": role,
                    "machine.openshift.io/cluster-api-machineset": format!("ocp-abcde-{role}-0")}},
                  "spec": {"lifecycleHooks": {}, "metadata": {}, "taints": [],
                    "providerSpec": {"value": {
                        "apiVersion": "machine.openshift.io/v1beta1", "kind": "VSphereMachineProviderSpec",
                        "numCPUs": 4, "memoryMiB": 16384, "diskGiB": 120, "snapshot": "",
                        "credentialsSecret": {"name": "vsphere-cloud-credentials"},
                        "userDataSecret": {"name": "worker-user-data"},
                        "tagIDs": ["urn:vmomi:InventoryServiceTag:src:GLOBAL"],
                        "template": "/DC0/vm/ocp-abcde-rhcos",
                        "network": {"devices": [{"networkName": "VM Network", "nameservers": ["10.0.0.1"]}]},
                        "workspace": {"server": server, "datacenter": "DC0",
                            "datastore": "/DC0/datastore/LocalDS_0", "folder": "/DC0/vm/ocp-abcde",
                            "resourcePool": "/DC0/host/DC0_C0/Resources", "vmGroup": "g1"}}}}}},
            "status": {"replicas": 2, "readyReplicas": 2}
        }))
        .expect("valid MachineSet")
    }

    #[test]
    fn names_are_rfc1123_and_fit_machine_suffixes() {
        assert_eq!(
            worker_machineset_name("ocp-abcde", "us-east-1a"),
            "ocp-abcde-worker-us-east-1a"
        );
        assert_eq!(
            worker_machineset_name("ocp-abcde", "Zone_A.Rack 7"),
            "ocp-abcde-worker-zone-a-rack-7"
        );
        assert_eq!(
            worker_machineset_name("ocp-abcde", "--X--"),
            "ocp-abcde-worker-x"
        );
        let long = "a-very-long-failure-domain-name-that-goes-on-and-on-and-on";
        let n = worker_machineset_name("ocp-abcde", long);
        assert!(n.len() <= MAX_MACHINESET_NAME, "{n}");
        assert!(n.starts_with("ocp-abcde-worker-a-very"), "{n}");
        assert_ne!(
            n,
            worker_machineset_name("ocp-abcde", &format!("{long}-2")),
            "truncated names stay distinct"
        );
        let only_symbols = worker_machineset_name("ocp-abcde", "___");
        assert!(
            only_symbols
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(!only_symbols.ends_with('-'));
    }

    #[test]
    fn a_host_group_zone_puts_new_machines_in_its_vm_group() {
        let src = source_ms("worker", "vc-source")
            .provider_spec()
            .expect("parses")
            .expect("present");
        let mut target = fd("fd-1", None);
        target.region_affinity = Some(vcfm_api::RegionAffinity {
            type_: vcfm_api::RegionAffinityType::ComputeCluster,
        });
        target.zone_affinity = Some(vcfm_api::ZoneAffinity {
            type_: vcfm_api::ZoneAffinityType::HostGroup,
            host_group: Some(vcfm_api::HostGroupAffinity {
                vm_group: "zone-a-vms".into(),
                host_group: "zone-a-hosts".into(),
                vm_host_rule: "zone-a-rule".into(),
            }),
        });
        let ps = provider_spec_for(&src, &target, "ocp-abcde");
        let ws = ps.workspace.expect("workspace");
        assert_eq!(ws.extra.get("vmGroup"), Some(&json!("zone-a-vms")));
        // A cluster zone has no VM group: the source's is still dropped.
        target.zone_affinity = Some(vcfm_api::ZoneAffinity {
            type_: vcfm_api::ZoneAffinityType::ComputeCluster,
            host_group: None,
        });
        let ps = provider_spec_for(&src, &target, "ocp-abcde");
        assert_eq!(ps.workspace.expect("workspace").extra.get("vmGroup"), None);
    }

    #[test]
    fn provider_spec_comes_from_the_failure_domain_and_keeps_the_rest() {
        let src = source_ms("worker", "vc-source")
            .provider_spec()
            .expect("parses")
            .expect("present");
        let ps = provider_spec_for(&src, &fd("fd-1", None), "ocp-abcde");
        let ws = ps.workspace.clone().expect("workspace");
        assert_eq!(ws.server.as_deref(), Some("vc-target.example.com"));
        assert_eq!(ws.datacenter.as_deref(), Some("DC1"));
        assert_eq!(ws.datastore.as_deref(), Some("/DC1/datastore/DS1"));
        assert_eq!(ws.folder.as_deref(), Some("/DC1/vm/ocp-abcde"));
        assert_eq!(ws.resource_pool.as_deref(), Some("/DC1/host/C1/Resources"));
        assert_eq!(
            ws.extra.get("vmGroup"),
            None,
            "the source's VM group does not exist on the target"
        );
        assert_eq!(ps.template.as_deref(), Some("/DC1/vm/rhcos-target"));
        let devs = &ps.network.as_ref().expect("network").devices;
        assert_eq!(devs.len(), 2);
        assert_eq!(devs[0].network_name.as_deref(), Some("net-a"));
        assert_eq!(devs[0].extra.get("nameservers"), Some(&json!(["10.0.0.1"])));
        assert_eq!(devs[1].network_name.as_deref(), Some("net-b"));
        assert_eq!(
            ps.tag_ids, None,
            "source tag IDs mean nothing on the target"
        );
        assert_eq!(ps.num_cpus, Some(4));
        assert_eq!(ps.extra.get("snapshot"), Some(&json!("")));
        assert_eq!(
            ps.extra.get("kind"),
            Some(&json!("VSphereMachineProviderSpec"))
        );
        let with_folder = provider_spec_for(&src, &fd("fd-1", Some("/DC1/vm/a/b")), "x");
        assert_eq!(
            with_folder.workspace.and_then(|w| w.folder).as_deref(),
            Some("/DC1/vm/a/b")
        );
    }

    #[test]
    fn new_machineset_is_a_clean_copy_pointing_at_itself() {
        let src = source_ms("worker", "vc-source");
        let ms = new_worker_machineset(
            &src,
            "ocp-abcde-worker-fd-1",
            &fd("fd-1", None),
            "ocp-abcde",
            3,
            "mig",
        )
        .expect("builds");
        let v = serde_json::to_value(&ms).expect("serialises");
        assert_eq!(v["metadata"]["name"], "ocp-abcde-worker-fd-1");
        assert!(v["metadata"].get("uid").is_none());
        assert!(v["metadata"].get("resourceVersion").is_none());
        assert!(v["metadata"].get("ownerReferences").is_none());
        assert!(v.get("status").is_none());
        assert_eq!(v["metadata"]["labels"][CREATED_BY_LABEL], "mig");
        assert_eq!(
            v["metadata"]["annotations"]["machine.openshift.io/vCPU"],
            "4"
        );
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(v["spec"]["deletePolicy"], "Oldest");
        assert_eq!(
            v["spec"]["selector"]["matchLabels"][LABEL_MACHINESET],
            "ocp-abcde-worker-fd-1"
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"][LABEL_MACHINESET],
            "ocp-abcde-worker-fd-1"
        );
        assert_eq!(v["spec"]["template"]["spec"]["taints"], json!([]));
        assert_eq!(
            v["spec"]["template"]["spec"]["providerSpec"]["value"]["workspace"]["server"],
            "vc-target.example.com"
        );
        assert_eq!(
            v["spec"]["template"]["spec"]["providerSpec"]["value"]["template"],
            "/DC1/vm/rhcos-target"
        );
        assert!(targets_server(&ms, "vc-target.example.com"));
    }

    #[test]
    fn source_selection_uses_the_server_and_never_matches_empty() {
        let sets = vec![
            source_ms("worker", "vc-source"),
            source_ms("infra", "vc-source"),
            source_ms("worker", "vc-target"),
        ];
        assert!(source_machinesets(&sets, "").is_empty());
        assert!(source_machinesets(&sets, "  ").is_empty());
        let src = source_machinesets(&sets, "vc-source");
        assert_eq!(src.len(), 2);
        let picked = pick_worker_template(&sets, "vc-source").expect("a worker set");
        assert_eq!(picked.role(), Some("worker"));
        assert!(targets_server(picked, "vc-source"));
        let only_infra = vec![source_ms("infra", "vc-source")];
        assert!(pick_worker_template(&only_infra, "vc-source").is_none());
        let mut unset = source_ms("worker", "");
        unset.spec.template = None;
        assert!(source_machinesets(&[unset], "").is_empty());
    }

    #[test]
    fn only_empty_machinesets_may_be_deleted() {
        let mut ms = source_ms("worker", "vc-source");
        assert!(deletable(&ms).is_err_and(|e| e.contains("2 replica")));
        ms.spec.replicas = None;
        assert!(deletable(&ms).is_err(), "unset means 1");
        ms.spec.replicas = Some(0);
        assert!(deletable(&ms).is_ok());
    }

    #[test]
    fn cpms_patch_clears_a_pre_4_16_template_topology_like_the_generator() {
        // A CPMS from before 4.16 names the source vCenter in its template.
        let cpms = json!({"spec": {"state": "Inactive", "strategy": {"type": "RollingUpdate"},
            "template": {"machines_v1beta1_machine_openshift_io": {"failureDomains": {
                "platform": "VSphere", "vsphere": [{"name": "generated-failure-domain"}]},
                "spec": {"providerSpec": {"value": {"numCPUs": 4, "template": "/dc/vm/rhcos",
                    "workspace": {"server": "vc-source", "datacenter": "dc", "datastore": "/dc/datastore/ds",
                        "folder": "/dc/vm/infra", "resourcePool": "/dc/host/c/Resources"},
                    "network": {"devices": [{"networkName": "VM Network"},
                        {"addressesFromPools": [{"group": "ipam", "name": "pool", "resource": "IPPool"}]}]}}}}}}}});
        let patch = cpms_patch(&cpms, &["fd-1"]).expect("needs a patch");
        let mut after = cpms.clone();
        json_patch::merge(&mut after, &patch);
        let value = &after["spec"]["template"]["machines_v1beta1_machine_openshift_io"]["spec"]["providerSpec"]
            ["value"];
        assert_eq!(value["workspace"], json!({}), "{value}");
        assert_eq!(value["template"], "");
        assert_eq!(
            value["network"]["devices"],
            json!([{"addressesFromPools": [{"group": "ipam", "name": "pool", "resource": "IPPool"}]}])
        );
        assert_eq!(value["numCPUs"], 4, "the rest is kept");
        assert!(!after.to_string().contains("vc-source"), "{after}");
        // Once cleared (and pointed at the target), nothing is left to patch.
        assert_eq!(cpms_patch(&after, &["fd-1"]), None);
    }

    #[test]
    fn cpms_patch_only_when_needed() {
        let cpms = json!({"spec": {"state": "Inactive", "strategy": {"type": "RollingUpdate"},
            "template": {"machines_v1beta1_machine_openshift_io": {"failureDomains": {
                "platform": "VSphere", "vsphere": [{"name": "generated-failure-domain"}]},
                "spec": {"providerSpec": {"value": {"numCPUs": 4}}}}}}});
        let p = cpms_patch(&cpms, &["fd-1", "fd-2"]).expect("needs a patch");
        assert_eq!(p["spec"]["state"], "Active");
        assert_eq!(
            p["spec"]["template"]["machines_v1beta1_machine_openshift_io"]["failureDomains"]["vsphere"],
            json!([{"name": "fd-1"}, {"name": "fd-2"}])
        );
        assert!(
            p["spec"]["template"]["machines_v1beta1_machine_openshift_io"]
                .get("spec")
                .is_none(),
            "the provider spec is left to the CPMS operator"
        );
        let done = json!({"spec": {"state": "Active", "strategy": {"type": "RollingUpdate"},
            "template": {"machines_v1beta1_machine_openshift_io": {"failureDomains": {
                "platform": "VSphere", "vsphere": [{"name": "fd-1"}, {"name": "fd-2"}]}}}}});
        assert_eq!(cpms_patch(&done, &["fd-1", "fd-2"]), None);
        let tagged = json!({"spec": {"state": "Active", "strategy": {"type": "RollingUpdate"},
            "template": {"machines_v1beta1_machine_openshift_io": {"failureDomains": {
                "platform": "VSphere", "vsphere": [{"name": "fd-1"}]},
                "spec": {"providerSpec": {"value": {"numCPUs": 4, "tagIDs": ["urn:src"]}}}}}}});
        let p = cpms_patch(&tagged, &["fd-1"]).expect("source tag IDs are dropped");
        assert_eq!(
            p["spec"]["template"]["machines_v1beta1_machine_openshift_io"]["spec"],
            json!({"providerSpec": {"value": {"tagIDs": null}}}),
            "a merge patch that removes only tagIDs"
        );
        let on_delete = json!({"spec": {"state": "Active", "strategy": {"type": "OnDelete"},
            "template": {"machines_v1beta1_machine_openshift_io": {"failureDomains": {
                "platform": "VSphere", "vsphere": [{"name": "fd-1"}]}}}}});
        assert!(cpms_patch(&on_delete, &["fd-1"]).is_some());
    }

    #[test]
    fn machine_networks_and_cidrs() {
        let infra =
            json!({"spec": {"platformSpec": {"vsphere": {"machineNetworks": ["10.0.0.0/16"]}}}});
        let nets = machine_networks(&infra);
        assert_eq!(nets.len(), 1);
        assert!(outside_networks(&["10.0.3.4".into()], &nets).is_empty());
        assert_eq!(
            outside_networks(&["172.31.0.2".into(), "10.0.0.9".into()], &nets),
            vec!["172.31.0.2".to_string()]
        );
        let nn = json!({"spec": {"platformSpec": {"vsphere": {"nodeNetworking": {
            "internal": {"networkSubnetCidr": ["192.168.0.0/24"]}}}}}});
        assert!(outside_networks(&["192.168.0.7".into()], &machine_networks(&nn)).is_empty());
        assert!(outside_networks(&["1.2.3.4".into()], &machine_networks(&json!({}))).is_empty());
        let v6 = Cidr::parse("fd00::/64").expect("v6");
        assert!(v6.contains(&"fd00::1".parse().expect("ip")));
        assert!(!v6.contains(&"fd01::1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(
            Cidr::parse("0.0.0.0/0").is_some_and(|c| c.contains(&"8.8.8.8".parse().expect("ip")))
        );
    }

    #[test]
    fn machine_progress_classifies() {
        let m = |status: Value| -> Machine {
            serde_json::from_value(json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine",
                "metadata": {"name": "m1", "namespace": MACHINE_API_NAMESPACE}, "spec": {}, "status": status}))
            .expect("machine")
        };
        let node = |ready: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "m1"},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
            .expect("node")
        };
        let mut nodes = BTreeMap::new();
        assert!(matches!(
            machine_progress(&m(json!({"phase": "Failed", "errorMessage": "no space"})), &nodes),
            MachineProgress::Failed(s) if s.contains("no space")
        ));
        assert!(matches!(
            machine_progress(&m(json!({"phase": "Provisioning", "providerStatus": {"conditions": [
                {"type": "MachineCreation", "status": "False", "message": "session failed"}]}})), &nodes),
            MachineProgress::Waiting(s) if s.contains("session failed")
        ));
        let running = m(json!({"phase": "Running", "nodeRef": {"name": "m1"}}));
        assert!(matches!(
            machine_progress(&running, &nodes),
            MachineProgress::Waiting(_)
        ));
        nodes.insert("m1".into(), node("False"));
        assert!(matches!(
            machine_progress(&running, &nodes),
            MachineProgress::Waiting(_)
        ));
        nodes.insert("m1".into(), node("True"));
        assert_eq!(machine_progress(&running, &nodes), MachineProgress::Ready);
    }
}
