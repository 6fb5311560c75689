//! The objects of a freshly installed OpenShift 4.x cluster on one vCenter, shaped like the
//! installer and the operators write them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::scenario::{ConfigFormat, Scenario};
use crate::vcenter::VcenterInfo;

/// Namespace of the Machine API objects.
pub(crate) const MAPI_NS: &str = "openshift-machine-api";
/// The machine controller's finalizer (openshift/api `machine/v1beta1/types_machine.go`
/// `MachineFinalizer`; the real controller adds and removes exactly this name, so a seeded
/// Machine with any other would never finish deleting).
pub(crate) const MACHINE_FINALIZER: &str = "machine.machine.openshift.io";
/// Finalizer the CPMS operator puts on the CPMS.
pub(crate) const CPMS_FINALIZER: &str = "controlplanemachineset.machine.openshift.io";
/// Install-time failure domain of a single-vCenter installation.
pub(crate) const INSTALL_FAILURE_DOMAIN: &str = "generated-failure-domain";
/// Machine network of the cluster (Infrastructure `machineNetworks`).
pub(crate) const MACHINE_NETWORK: &str = "10.0.0.0/16";
/// Secret the cloud-credential operator copies for the Machine API.
pub(crate) const MAPI_CREDS: &str = "vsphere-cloud-credentials";

/// Namespaces an OpenShift cluster has that the migration touches.
pub(crate) const NAMESPACES: &[&str] = &[
    "openshift-config",
    "openshift-config-managed",
    "openshift-machine-api",
    "openshift-cluster-version",
    "openshift-cloud-controller-manager",
    "openshift-cloud-controller-manager-operator",
    "openshift-cloud-credential-operator",
    "openshift-cluster-csi-drivers",
    "openshift-cluster-storage-operator",
    "openshift-machine-config-operator",
    "openshift-kube-controller-manager",
    "openshift-ingress",
];

/// The cluster operators of a 4.16 cluster on vSphere.
pub(crate) const CLUSTER_OPERATORS: &[&str] = &[
    "authentication",
    "baremetal",
    "cloud-controller-manager",
    "cloud-credential",
    "cluster-autoscaler",
    "config-operator",
    "console",
    "control-plane-machine-set",
    "csi-snapshot-controller",
    "dns",
    "etcd",
    "image-registry",
    "ingress",
    "insights",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-storage-version-migrator",
    "machine-api",
    "machine-approver",
    "machine-config",
    "marketplace",
    "monitoring",
    "network",
    "node-tuning",
    "openshift-apiserver",
    "openshift-controller-manager",
    "openshift-samples",
    "operator-lifecycle-manager",
    "operator-lifecycle-manager-catalog",
    "operator-lifecycle-manager-packageserver",
    "service-ca",
    "storage",
];

/// Component secrets the cloud-credential operator keeps in sync with
/// `kube-system/vsphere-creds` (passthrough mode).
pub(crate) const CREDENTIAL_COPIES: &[(&str, &str)] = &[
    (MAPI_NS, MAPI_CREDS),
    (
        "openshift-cloud-controller-manager",
        "vsphere-cloud-credentials",
    ),
    (
        "openshift-cluster-csi-drivers",
        "vmware-vsphere-cloud-credentials",
    ),
];

pub(crate) fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
        "labels": {"kubernetes.io/metadata.name": name, "openshift.io/cluster-monitoring": "true"}}})
}

/// `data` of `kube-system/vsphere-creds` for `(server, user, password)` triples.
pub(crate) fn creds_data(entries: &[(&str, &str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (server, user, password) in entries {
        m.insert(format!("{server}.username"), json!(b64(user)));
        m.insert(format!("{server}.password"), json!(b64(password)));
    }
    Value::Object(m)
}

pub(crate) fn secret(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns}, "data": data})
}

fn b64(s: &str) -> String {
    // Kubernetes `data` is base64; a local encoder keeps the dependency list short.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `config` key of `openshift-config/cloud-provider-config`.
pub(crate) fn cloud_config(format: ConfigFormat, vc: &VcenterInfo) -> String {
    let (server, dc) = (&vc.server, &vc.datacenter);
    match format {
        ConfigFormat::Yaml => format!(
            "global:\n  user: \"\"\n  password: \"\"\n  server: \"\"\n  port: 0\n  insecureFlag: true\n  datacenters: []\n  soapRoundtripCount: 0\n  caFile: \"\"\n  thumbprint: \"\"\n  secretName: vsphere-creds\n  secretNamespace: kube-system\n  secretsDirectory: \"\"\n  apiDisable: false\n  apiBinding: \"\"\n  ipFamily: []\nvcenter:\n  {server}:\n    user: \"\"\n    password: \"\"\n    tenantref: \"\"\n    server: {server}\n    port: 443\n    insecureFlag: true\n    datacenters:\n    - {dc}\n    soapRoundtripCount: 0\n    caFile: \"\"\n    thumbprint: \"\"\n    secretref: \"\"\n    secretName: \"\"\n    secretNamespace: \"\"\n    ipFamily: []\nlabels:\n  zone: openshift-zone\n  region: openshift-region\n"
        ),
        ConfigFormat::Ini => format!(
            "[Global]\nsecret-name = \"vsphere-creds\"\nsecret-namespace = \"kube-system\"\ninsecure-flag = \"1\"\n\n[Workspace]\nserver = \"{server}\"\ndatacenter = \"{dc}\"\ndefault-datastore = \"{ds}\"\nfolder = \"{folder}\"\n\n[VirtualCenter \"{server}\"]\ndatacenters = \"{dc}\"\n\n[Labels]\nregion = openshift-region\nzone = openshift-zone\n",
            ds = vc.datastore.rsplit('/').next().unwrap_or_default(),
            folder = vc.folder,
        ),
    }
}

pub(crate) fn cloud_provider_config(format: ConfigFormat, vc: &VcenterInfo) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cloud-provider-config", "namespace": "openshift-config"},
        "data": {"config": cloud_config(format, vc)}})
}

pub(crate) fn infrastructure(infra_id: &str, vc: &VcenterInfo) -> Value {
    let api = format!(
        "https://api.{}.example.com:6443",
        infra_id.split('-').next().unwrap_or("ocp")
    );
    let api_int = api.replace("://api.", "://api-int.");
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "metadata": {"name": "cluster"},
        "spec": {
            "cloudConfig": {"key": "config", "name": "cloud-provider-config"},
            "platformSpec": {"type": "VSphere", "vsphere": {
                "apiServerInternalIPs": ["10.0.0.5"],
                "ingressIPs": ["10.0.0.6"],
                "machineNetworks": [MACHINE_NETWORK],
                "nodeNetworking": {"external": {}, "internal": {}},
                "vcenters": [{"server": vc.server, "port": 443, "datacenters": [vc.datacenter]}],
                "failureDomains": [failure_domain(INSTALL_FAILURE_DOMAIN, "generated-region", "generated-zone", vc)],
            }},
        },
        "status": {
            "apiServerURL": api, "apiServerInternalURI": api_int,
            "controlPlaneTopology": "HighlyAvailable", "infrastructureTopology": "HighlyAvailable",
            "cpuPartitioning": "None", "etcdDiscoveryDomain": "",
            "infrastructureName": infra_id, "platform": "VSphere",
            "platformStatus": {"type": "VSphere", "vsphere": {
                "apiServerInternalIP": "10.0.0.5", "apiServerInternalIPs": ["10.0.0.5"],
                "ingressIP": "10.0.0.6", "ingressIPs": ["10.0.0.6"],
                "machineNetworks": [MACHINE_NETWORK], "nodeDNSIP": "10.0.0.5",
                "loadBalancer": {"type": "OpenShiftManagedDefault"},
            }},
        },
    })
}

/// A failure domain entry for `vc`'s inventory.
pub fn failure_domain(name: &str, region: &str, zone: &str, vc: &VcenterInfo) -> Value {
    json!({"name": name, "region": region, "zone": zone, "server": vc.server,
        "topology": {"datacenter": vc.datacenter, "computeCluster": vc.compute_cluster,
            "datastore": vc.datastore, "networks": [vc.network], "resourcePool": vc.resource_pool,
            "folder": vc.folder, "template": vc.template}})
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": crate::kapi::now()})
}

pub(crate) fn cluster_version(version: &str) -> Value {
    let image = format!(
        "quay.io/openshift-release-dev/ocp-release@sha256:{}",
        "4a1f".repeat(16)
    );
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion",
        "metadata": {"name": "version"},
        "spec": {"clusterID": uuid::Uuid::new_v4().to_string(), "channel": "stable-4.16"},
        "status": {
            "availableUpdates": [],
            "desired": {"version": version, "image": image, "channels": ["stable-4.16"]},
            "history": [{"state": "Completed", "version": version, "image": image,
                "startedTime": crate::kapi::now(), "completionTime": crate::kapi::now(), "verified": false}],
            "observedGeneration": 1, "versionHash": "Kq8v3Vw0eQ0=",
            "conditions": [
                condition("Available", "True", "", &format!("Done applying {version}")),
                condition("Failing", "False", "", ""),
                condition("Progressing", "False", "", &format!("Cluster version is {version}")),
                condition("RetrievedUpdates", "False", "NoChannel", "The update channel has not been configured."),
            ],
        },
    })
}

pub(crate) fn feature_gate(version: &str, day2: bool) -> Value {
    let mut enabled = vec![
        "AlibabaPlatform",
        "AzureWorkloadIdentity",
        "BuildCSIVolumes",
        "CloudDualStackNodeIPs",
        "PrivateHostedZoneAWS",
        "VSphereControlPlaneMachineSet",
        "VSphereDriverConfiguration",
        "VSphereStaticIPs",
    ];
    let mut disabled = vec![
        "AdminNetworkPolicy",
        "GatewayAPI",
        "NewOLM",
        "VSphereHostVMGroupZonal",
        "VSphereMultiNetworks",
        "VSphereMultiVCenters",
    ];
    if day2 {
        enabled.push(vcfm_api::openshift::MULTI_VCENTER_DAY2_GATE);
    } else {
        disabled.push(vcfm_api::openshift::MULTI_VCENTER_DAY2_GATE);
    }
    let names = |v: Vec<&str>| {
        v.into_iter()
            .map(|n| json!({"name": n}))
            .collect::<Vec<_>>()
    };
    let spec = if day2 {
        json!({"featureSet": "CustomNoUpgrade",
            "customNoUpgrade": {"enabled": [vcfm_api::openshift::MULTI_VCENTER_DAY2_GATE]}})
    } else {
        json!({})
    };
    json!({"apiVersion": "config.openshift.io/v1", "kind": "FeatureGate",
        "metadata": {"name": "cluster"}, "spec": spec,
        "status": {"featureGates": [{"version": version, "enabled": names(enabled), "disabled": names(disabled)}]}})
}

/// The FeatureGate of a release, from openshift/api's payload manifest
/// (`payload-manifests/featuregates/featureGate-SelfManagedHA-Default.yaml`, whose
/// `version` is empty): every gate of the release is listed, as the cluster-config-operator
/// writes it (`pkg/operator/featuregates`), and the CPMS operator panics on a gate it knows
/// but the status lacks. The day-2 gate moves to `enabled` through CustomNoUpgrade.
pub(crate) fn payload_feature_gate(payload: &Value, version: &str, day2: bool) -> Value {
    let gate = vcfm_api::openshift::MULTI_VCENTER_DAY2_GATE;
    let list = |k: &str| -> Vec<Value> {
        payload
            .pointer(&format!("/status/featureGates/0/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|g| g["name"] != gate)
            .collect()
    };
    let (mut enabled, mut disabled) = (list("enabled"), list("disabled"));
    let spec = if day2 {
        enabled.push(json!({"name": gate}));
        json!({"featureSet": "CustomNoUpgrade", "customNoUpgrade": {"enabled": [gate]}})
    } else {
        disabled.push(json!({"name": gate}));
        json!({})
    };
    json!({"apiVersion": "config.openshift.io/v1", "kind": "FeatureGate",
        "metadata": {"name": "cluster"}, "spec": spec,
        "status": {"featureGates": [{"version": version, "enabled": enabled, "disabled": disabled}]}})
}

/// Enables one more gate in a FeatureGate as the CustomNoUpgrade feature set does: listed
/// in `spec.customNoUpgrade.enabled`, and moved from `disabled` to `enabled` in the status
/// the cluster-config-operator writes (openshift/api `config/v1/types_feature.go`).
pub(crate) fn enable_custom_gate(fg: &mut Value, gate: &str) {
    fg["spec"]["featureSet"] = json!("CustomNoUpgrade");
    let custom = &mut fg["spec"]["customNoUpgrade"]["enabled"];
    if !custom.is_array() {
        *custom = json!([]);
    }
    if let Some(list) = custom.as_array_mut()
        && !list.iter().any(|g| g == gate)
    {
        list.push(json!(gate));
    }
    if let Some(details) = fg
        .pointer_mut("/status/featureGates/0")
        .and_then(Value::as_object_mut)
    {
        if let Some(d) = details.get_mut("disabled").and_then(Value::as_array_mut) {
            d.retain(|g| g["name"] != gate);
        }
        if let Some(e) = details.get_mut("enabled").and_then(Value::as_array_mut)
            && !e.iter().any(|g| g["name"] == gate)
        {
            e.push(json!({"name": gate}));
        }
    }
}

/// The three standard conditions of a cluster operator (plus Upgradeable).
pub(crate) fn co_conditions(progressing: Option<&str>, degraded: Option<&str>) -> Value {
    let (p, pr, pm) = match progressing {
        Some(m) => ("True", "Reconciling", m.to_string()),
        None => ("False", "AsExpected", String::new()),
    };
    let (d, dr, dm) = match degraded {
        Some(m) => ("True", "SyncError", m.to_string()),
        None => ("False", "AsExpected", String::new()),
    };
    json!([
        condition("Available", "True", "AsExpected", "All is well"),
        condition("Progressing", p, pr, &pm),
        condition("Degraded", d, dr, &dm),
        condition("Upgradeable", "True", "AsExpected", ""),
    ])
}

pub(crate) fn cluster_operator(name: &str, version: &str, degraded: Option<&str>) -> Value {
    json!({"apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator",
        "metadata": {"name": name, "annotations": {"include.release.openshift.io/self-managed-high-availability": "true"}},
        "spec": {},
        "status": {"conditions": co_conditions(None, degraded),
            "versions": [{"name": "operator", "version": version}],
            "relatedObjects": [{"group": "", "resource": "namespaces", "name": format!("openshift-{name}")}]}})
}

/// The cloud-credential operator's configuration, `CloudCredential` `cluster`
/// (openshift/api `operator/v1/types_cloudcredential.go`): `credentialsMode` empty (the
/// default: passthrough on vSphere) unless install-config chose one, e.g. `Manual`.
pub(crate) fn cloud_credential(mode: Option<&str>) -> Value {
    json!({"apiVersion": "operator.openshift.io/v1", "kind": "CloudCredential",
        "metadata": {"name": "cluster"},
        "spec": {"credentialsMode": mode.unwrap_or(""), "logLevel": "Normal",
            "operatorLogLevel": "Normal", "managementState": "Managed"}})
}

pub(crate) fn cluster_csi_driver() -> Value {
    json!({"apiVersion": "operator.openshift.io/v1", "kind": "ClusterCSIDriver",
        "metadata": {"name": vcfm_api::openshift::VSPHERE_CSI_DRIVER},
        "spec": {"managementState": "Managed", "logLevel": "Normal", "operatorLogLevel": "Normal"},
        "status": {"readyReplicas": 2, "conditions": [
            {"type": "VMwareVSphereControllerAvailable", "status": "True", "lastTransitionTime": crate::kapi::now(), "reason": "AsExpected", "message": ""}]}})
}

pub(crate) fn termination_handler_mhc() -> Value {
    json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineHealthCheck",
        "metadata": {"name": "machine-api-termination-handler", "namespace": MAPI_NS,
            "labels": {"api": "clusterapi", "k8s-app": "termination-handler"}},
        "spec": {"maxUnhealthy": "100%", "nodeStartupTimeout": "0",
            "selector": {"matchLabels": {"machine.openshift.io/interruptible-instance": ""}},
            "unhealthyConditions": [{"type": "Terminating", "status": "True", "timeout": "0s"}]}})
}

pub(crate) fn role_labels(infra_id: &str, role: &str) -> BTreeMap<String, String> {
    use vcfm_api::openshift::{LABEL_CLUSTER, LABEL_ROLE, LABEL_TYPE};
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), infra_id.to_string()),
        (LABEL_ROLE.to_string(), role.to_string()),
        (LABEL_TYPE.to_string(), role.to_string()),
    ])
}

/// The vSphere provider spec the installer writes for `role` machines on `vc`.
pub(crate) fn provider_spec(role: &str, vc: &VcenterInfo) -> Value {
    let (cpus, mem) = if role == "master" {
        (4, 16384)
    } else {
        (4, 8192)
    };
    let user_data = if role == "master" {
        "master-user-data"
    } else {
        "worker-user-data"
    };
    json!({
        "apiVersion": "machine.openshift.io/v1beta1", "kind": "VSphereMachineProviderSpec",
        "credentialsSecret": {"name": MAPI_CREDS},
        "diskGiB": 120, "memoryMiB": mem, "numCPUs": cpus, "numCoresPerSocket": cpus,
        "network": {"devices": [{"networkName": vc.network}]},
        "snapshot": "", "template": vc.template,
        "userDataSecret": {"name": user_data},
        "workspace": {"datacenter": vc.datacenter, "datastore": vc.datastore, "folder": vc.folder,
            "resourcePool": vc.resource_pool, "server": vc.server},
    })
}

pub(crate) fn machineset(infra_id: &str, role: &str, replicas: u32, vc: &VcenterInfo) -> Value {
    let name = format!("{infra_id}-{role}-0");
    let mut labels = role_labels(infra_id, role);
    labels.insert(vcfm_api::openshift::LABEL_MACHINESET.into(), name.clone());
    let mut template_spec = json!({"lifecycleHooks": {}, "metadata": {},
        "providerSpec": {"value": provider_spec(role, vc)}});
    if role == "infra" {
        template_spec["metadata"] = json!({"labels": {"node-role.kubernetes.io/infra": ""}});
        template_spec["taints"] =
            json!([{"key": "node-role.kubernetes.io/infra", "effect": "NoSchedule"}]);
    }
    json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
        "metadata": {"name": name, "namespace": MAPI_NS,
            "labels": {vcfm_api::openshift::LABEL_CLUSTER: infra_id},
            "annotations": {"machine.openshift.io/memoryMb": "8192", "machine.openshift.io/vCPU": "4"}},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {
                vcfm_api::openshift::LABEL_CLUSTER: infra_id,
                vcfm_api::openshift::LABEL_MACHINESET: name}},
            "template": {"metadata": {"labels": labels}, "spec": template_spec}}})
}

/// A master's provider spec as the CPMS operator's generator writes it into a CPMS with
/// failure domains (cluster-control-plane-machine-set-operator
/// `pkg/machineproviders/providers/openshift/machine/v1beta1/providerconfig/vsphere.go`,
/// `ResetTopologyRelatedFields`, then re-encoded from the Go type): empty workspace and
/// template, network devices kept only for IP pools (`null` otherwise), `metadata: {}`.
/// The real generator replaces an Inactive CPMS in any other shape at start; the
/// differential test compares against it.
pub(crate) fn generated_provider(mut provider: Value) -> Value {
    if let Some(o) = provider.as_object_mut() {
        o.insert("workspace".into(), json!({}));
        o.insert("template".into(), json!(""));
        o.entry("metadata").or_insert_with(|| json!({}));
        let pools: Vec<Value> = o
            .get("network")
            .and_then(|n| n.get("devices"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("addressesFromPools"))
            .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
            .map(|a| json!({"addressesFromPools": a}))
            .collect();
        let devices = if pools.is_empty() {
            Value::Null
        } else {
            Value::Array(pools)
        };
        o.insert("network".into(), json!({"devices": devices}));
    }
    provider
}

/// The cluster's ControlPlaneMachineSet: the generator's Inactive one, or with
/// `pre_416` the installer's Active one whose provider spec keeps the topology fields
/// (installer before 4.16, `pkg/asset/machines/vsphere/machines.go`, which now clears
/// workspace, network and template once failure domains are set).
pub(crate) fn cpms(
    infra_id: &str,
    replicas: u32,
    provider: Value,
    failure_domains: &[String],
    pre_416: bool,
) -> Value {
    let labels = role_labels(infra_id, "master");
    let fds: Vec<Value> = failure_domains.iter().map(|n| json!({"name": n})).collect();
    let (provider, state) = if pre_416 {
        (provider, "Active")
    } else {
        (generated_provider(provider), "Inactive")
    };
    json!({"apiVersion": "machine.openshift.io/v1", "kind": "ControlPlaneMachineSet",
    "metadata": {"name": "cluster", "namespace": MAPI_NS, "finalizers": [CPMS_FINALIZER]},
    "spec": {
        "replicas": replicas, "state": state, "strategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": labels},
        "template": {"machineType": "machines_v1beta1_machine_openshift_io",
            "machines_v1beta1_machine_openshift_io": {
                "failureDomains": {"platform": "VSphere", "vsphere": fds},
                "metadata": {"labels": labels},
                "spec": {"lifecycleHooks": {}, "metadata": {},
                    "providerSpec": {"value": provider}}}}},
    "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
        "updatedReplicas": replicas,
        "conditions": [
            condition("Available", "True", "AllReplicasAvailable", ""),
            condition("Degraded", "False", "AsExpected", ""),
            condition("Progressing", "False", "AllReplicasUpdated", ""),
        ]}})
}

pub(crate) fn cvo_deployment() -> Value {
    let labels = json!({"k8s-app": "cluster-version-operator"});
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cluster-version-operator", "namespace": "openshift-cluster-version", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "cluster-version-operator",
                    "image": "quay.io/openshift-release-dev/ocp-release@sha256:4a1f"}]}}},
        "status": deployment_status(1, 1, 1)})
}

/// Deployment status with `ready` of `replicas` available, as the deployment controller writes it.
pub(crate) fn deployment_status(generation: i64, replicas: i64, ready: i64) -> Value {
    let available = if ready >= replicas.min(1) {
        "True"
    } else {
        "False"
    };
    json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
    "readyReplicas": ready, "availableReplicas": ready,
    "unavailableReplicas": (replicas - ready).max(0),
    "conditions": [
        {"type": "Available", "status": available,
         "reason": if available == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
         "message": "Deployment has minimum availability.",
         "lastUpdateTime": crate::kapi::now(), "lastTransitionTime": crate::kapi::now()},
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
         "message": "ReplicaSet \"cluster-version-operator\" has successfully progressed.",
         "lastUpdateTime": crate::kapi::now(), "lastTransitionTime": crate::kapi::now()},
    ]})
}

/// A Node as the kubelet registers it; `ready` decides the Ready condition.
pub(crate) fn node(name: &str, role: &str, provider_id: &str, ip: &str, ready: bool) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        "node.openshift.io/os_id": "rhcos",
        "node.kubernetes.io/instance-type": "vsphere-vm.cpu-4.mem-16gb.os-unknown"});
    if role == "master" {
        labels["node-role.kubernetes.io/master"] = json!("");
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    } else {
        labels[format!("node-role.kubernetes.io/{role}")] = json!("");
        labels["node-role.kubernetes.io/worker"] = json!("");
    }
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"machine.openshift.io/machine": format!("{MAPI_NS}/{name}")}},
        "spec": {"providerID": provider_id},
        "status": node_status(name, ip, ready)})
}

pub(crate) fn node_status(name: &str, ip: &str, ready: bool) -> Value {
    let c = |t: &str, s: &str, r: &str, m: &str| {
        json!({"type": t, "status": s, "reason": r, "message": m,
        "lastHeartbeatTime": crate::kapi::now(), "lastTransitionTime": crate::kapi::now()})
    };
    let ready_cond = if ready {
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
    } else {
        c(
            "Ready",
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: No CNI configuration file in /etc/kubernetes/cni/net.d/. Has your network provider started?",
        )
    };
    json!({
        "addresses": [{"type": "ExternalIP", "address": ip}, {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name}],
        "conditions": [
            c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ready_cond,
        ],
        "nodeInfo": {"architecture": "amd64", "bootID": uuid::Uuid::new_v4().to_string(),
            "containerRuntimeVersion": "cri-o://1.29.7-3.rhaos4.16.gitb130ec5.el9",
            "kernelVersion": "5.14.0-427.31.1.el9_4.x86_64", "kubeProxyVersion": "v1.29.7+4510e9c",
            "kubeletVersion": "v1.29.7+4510e9c", "machineID": crate::kapi::suffix(32),
            "operatingSystem": "linux",
            "osImage": "Red Hat Enterprise Linux CoreOS 416.94.202408132101-0",
            "systemUUID": uuid::Uuid::new_v4().to_string()},
    })
}

/// How the pods of a [`PodGroup`] are placed and replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodKind {
    /// A fixed number of pods named `<base>-<hash>-<5>`; replacements get new names.
    Deployment(usize),
    /// One pod per Node, named `<base>-<5>`.
    DaemonSet,
    /// Static mirror pod per control-plane Node, named `<base>-<node>`: deleting one restarts
    /// nothing, the kubelet recreates the mirror under the same name at once.
    Mirror,
}

/// The pods of one workload.
#[derive(Debug, Clone)]
pub(crate) struct PodGroup {
    pub namespace: String,
    pub base: String,
    /// ReplicaSet hash for Deployment-style names.
    pub hash: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub kind: PodKind,
    /// Pinned to nodes of this role (`nodeSelector` and a toleration of the role's
    /// `NoSchedule` taint), as the router is once moved to infra nodes.
    pub node_role: Option<String>,
}

impl PodGroup {
    fn new(ns: &str, base: &str, labels: &[(&str, &str)], kind: PodKind) -> Self {
        let hash = matches!(kind, PodKind::Deployment(_)).then(|| crate::kapi::suffix(10));
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(h) = &hash {
            l.insert("pod-template-hash".into(), h.clone());
        }
        Self {
            namespace: ns.into(),
            base: base.into(),
            hash,
            labels: l,
            kind,
            node_role: None,
        }
    }

    /// `namespace/base`, recorded on every pod so the pod operator knows its group.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.base)
    }

    /// Name of a new pod of this group on `node`.
    pub(crate) fn new_pod_name(&self, node: &str) -> String {
        match (&self.kind, &self.hash) {
            (PodKind::Mirror, _) => format!("{}-{node}", self.base),
            (_, Some(h)) => format!("{}-{h}-{}", self.base, crate::kapi::suffix(5)),
            (_, None) => format!("{}-{}", self.base, crate::kapi::suffix(5)),
        }
    }
}

/// The default router on infra nodes, as a cluster with infra nodes runs it: the ingress
/// operator's Deployment (two replicas, label
/// `ingresscontroller.operator.openshift.io/deployment-ingresscontroller: default`) placed
/// by the IngressController's `nodePlacement` on `node-role.kubernetes.io/infra` nodes with
/// a toleration of their taint.
pub(crate) fn router_group() -> PodGroup {
    let mut g = PodGroup::new(
        "openshift-ingress",
        "router-default",
        &[(
            "ingresscontroller.operator.openshift.io/deployment-ingresscontroller",
            "default",
        )],
        PodKind::Deployment(2),
    );
    g.node_role = Some("infra".into());
    g
}

/// The router's PodDisruptionBudget as the ingress operator makes it for fewer than four
/// replicas (cluster-ingress-operator `pkg/operator/controller/ingress/
/// poddisruptionbudget.go`, `desiredRouterPodDisruptionBudget`: `maxUnavailable: 50%`).
pub(crate) fn router_pdb() -> Value {
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "router-default", "namespace": "openshift-ingress"},
        "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {
            "ingresscontroller.operator.openshift.io/deployment-ingresscontroller": "default"}}}})
}

/// The vSphere-related workloads whose pods a migration restarts, plus a few it must not.
pub(crate) fn pod_groups() -> Vec<PodGroup> {
    use PodKind::{DaemonSet, Deployment, Mirror};
    // The CSI driver operator labels its pods the same on every release from 4.16 to main
    // (openshift/vmware-vsphere-csi-driver-operator `assets/controller.yaml`,
    // `assets/node.yaml`: `app: vmware-vsphere-csi-driver-controller` / `-node`), whatever
    // the cloud config's format. vcfm also restarts a `vsphere-csi-driver-*` label set that
    // no release here carries; no seed invents pods for it.
    let csi_controller = "vmware-vsphere-csi-driver-controller";
    let csi_node = "vmware-vsphere-csi-driver-node";
    vec![
        PodGroup::new(
            "openshift-cloud-controller-manager",
            "vsphere-cloud-controller-manager",
            // cluster-cloud-controller-manager-operator
            // `pkg/cloud/vsphere/assets/cloud-controller-manager-deployment.yaml`: the label's
            // value is the platform name (`pkg/cloud/common/resources.go`), `VSphere`.
            &[
                ("k8s-app", "vsphere-cloud-controller-manager"),
                (
                    "infrastructure.openshift.io/cloud-controller-manager",
                    "VSphere",
                ),
            ],
            Deployment(2),
        ),
        PodGroup::new(
            "openshift-cloud-controller-manager-operator",
            "cluster-cloud-controller-manager-operator",
            // `manifests/0000_26_cloud-controller-manager-operator_50_deployment.yaml`: the
            // operator's pods carry this one label.
            &[("k8s-app", "cloud-manager-operator")],
            Deployment(1),
        ),
        PodGroup::new(
            MAPI_NS,
            "machine-api-controllers",
            &[("api", "clusterapi"), ("k8s-app", "controller")],
            Deployment(1),
        ),
        PodGroup::new(
            MAPI_NS,
            "machine-api-operator",
            &[("k8s-app", "machine-api-operator")],
            Deployment(1),
        ),
        PodGroup::new(
            MAPI_NS,
            "control-plane-machine-set-operator",
            &[("k8s-app", "control-plane-machine-set-operator")],
            Deployment(1),
        ),
        PodGroup::new(
            "openshift-cluster-csi-drivers",
            "vmware-vsphere-csi-driver-controller",
            &[("app", csi_controller)],
            Deployment(2),
        ),
        PodGroup::new(
            "openshift-cluster-csi-drivers",
            "vmware-vsphere-csi-driver-node",
            &[("app", csi_node)],
            DaemonSet,
        ),
        PodGroup::new(
            "openshift-cluster-csi-drivers",
            "vmware-vsphere-csi-driver-operator",
            &[("name", "vmware-vsphere-csi-driver-operator")],
            Deployment(1),
        ),
        PodGroup::new(
            "openshift-cluster-storage-operator",
            "cluster-storage-operator",
            &[("name", "cluster-storage-operator")],
            Deployment(1),
        ),
        PodGroup::new(
            "openshift-machine-config-operator",
            "machine-config-operator",
            &[("k8s-app", "machine-config-operator")],
            Deployment(1),
        ),
        PodGroup::new(
            "openshift-machine-config-operator",
            "machine-config-controller",
            &[("k8s-app", "machine-config-controller")],
            Deployment(1),
        ),
        PodGroup::new(
            "openshift-kube-controller-manager",
            "kube-controller-manager",
            &[
                ("app", "kube-controller-manager"),
                ("kube-controller-manager", "true"),
            ],
            Mirror,
        ),
    ]
}

/// Annotation naming a pod's [`PodGroup::id`].
pub(crate) const POD_GROUP_ANNOTATION: &str = "openshift-sim.vcfm.io/pod-group";
/// Finalizer that makes deleted pods linger Terminating (graceful shutdown).
pub(crate) const POD_FINALIZER: &str = "openshift-sim.vcfm.io/graceful-termination";

/// A pod of `group` on `node`; `ready` decides phase and conditions.
pub(crate) fn pod(group: &PodGroup, name: &str, node: &str, ip: &str, ready: bool) -> Value {
    let container = group.base.clone();
    let mut annotations = json!({POD_GROUP_ANNOTATION: group.id()});
    let finalizers = if group.kind == PodKind::Mirror {
        annotations["kubernetes.io/config.mirror"] = json!(crate::kapi::suffix(32));
        annotations["kubernetes.io/config.source"] = json!("file");
        json!([])
    } else {
        json!([POD_FINALIZER])
    };
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": group.namespace, "labels": group.labels,
            "annotations": annotations, "finalizers": finalizers},
        "spec": {"nodeName": node, "containers": [{"name": container,
            "image": format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:{}", "9c3e".repeat(16))}]},
        "status": pod_status(&container, ip, ready)});
    if let Some(role) = &group.node_role {
        let key = format!("node-role.kubernetes.io/{role}");
        pod["spec"]["nodeSelector"] = json!({ key.clone(): "" });
        pod["spec"]["tolerations"] =
            json!([{"key": key, "operator": "Exists", "effect": "NoSchedule"}]);
    }
    pod
}

pub(crate) fn pod_status(container: &str, ip: &str, ready: bool) -> Value {
    let s = if ready { "True" } else { "False" };
    let c = |t: &str, st: &str| json!({"type": t, "status": st, "lastTransitionTime": crate::kapi::now()});
    let state = if ready {
        json!({"running": {"startedAt": crate::kapi::now()}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    json!({"phase": if ready { "Running" } else { "Pending" },
        "hostIP": ip, "podIP": ip, "startTime": crate::kapi::now(),
        "conditions": [c("Initialized", "True"), c("Ready", s), c("ContainersReady", s), c("PodScheduled", "True")],
        "containerStatuses": [{"name": container, "ready": ready, "started": ready, "restartCount": 0,
            "image": "quay.io/openshift-release-dev/ocp-v4.0-art-dev", "imageID": "", "state": state}]})
}

/// Builds the scenario-independent part of the seed (everything but Machines, Nodes, pods).
pub(crate) fn base_objects(
    s: &Scenario,
    infra_id: &str,
    src: &VcenterInfo,
    creds_password: &str,
) -> Vec<Value> {
    let mut out: Vec<Value> = NAMESPACES.iter().map(|n| namespace(n)).collect();
    let data = creds_data(&[(&src.server, &src.username, creds_password)]);
    out.push(secret("kube-system", "vsphere-creds", data.clone()));
    for (ns, name) in CREDENTIAL_COPIES {
        out.push(secret(ns, name, data.clone()));
    }
    out.push(secret(
        MAPI_NS,
        "master-user-data",
        json!({"userData": b64("{\"ignition\":{\"version\":\"3.2.0\"}}")}),
    ));
    out.push(secret(
        MAPI_NS,
        "worker-user-data",
        json!({"userData": b64("{\"ignition\":{\"version\":\"3.2.0\"}}")}),
    ));
    let mut cm = cloud_provider_config(s.config_format, src);
    let mut infra = infrastructure(infra_id, src);
    if let Some(release) = s.installer {
        cm["data"]["config"] = json!(crate::installer::cloud_config(release, infra_id, src));
        infra["spec"]["platformSpec"]["vsphere"] = crate::installer::platform_spec(release, src);
    }
    if let Some(key) = &s.cloud_config_key {
        // Consumers read the key Infrastructure spec.cloudConfig names (openshift/api
        // `ConfigMapFileReference`), whatever it is.
        cm["data"] = json!({key.as_str(): cm["data"]["config"].clone()});
        infra["spec"]["cloudConfig"]["key"] = json!(key);
    }
    out.push(cm);
    out.push(infra);
    out.push(cluster_version(&s.version));
    let mut fg = feature_gate(&s.version, s.multi_vcenter_day2_gate);
    if s.host_vm_group_zonal_gate {
        enable_custom_gate(&mut fg, "VSphereHostVMGroupZonal");
    }
    if s.installer == Some(crate::scenario::InstallerRelease::V4_20) {
        crate::installer::default_gates_420(&mut fg);
    }
    out.push(fg);
    for co in CLUSTER_OPERATORS {
        let degraded = (s.faults.degraded_operator.as_deref() == Some(*co))
            .then_some("simulated fault: operator reports Degraded");
        out.push(cluster_operator(co, &s.version, degraded));
    }
    out.push(cloud_credential(s.credentials_mode.as_deref()));
    out.push(cluster_csi_driver());
    out.push(termination_handler_mhc());
    out.push(cvo_deployment());
    out
}

/// Objects a migration's preflight must notice: vSphere CSI volumes, autoscalers, user
/// MachineHealthChecks.
pub(crate) fn blockers(s: &Scenario, infra_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..s.csi_volumes {
        let id = uuid::Uuid::new_v4();
        out.push(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("pvc-{id}"),
                "annotations": {"pv.kubernetes.io/provisioned-by": vcfm_api::openshift::VSPHERE_CSI_DRIVER}},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "thin-csi",
                "volumeMode": "Filesystem",
                "csi": {"driver": vcfm_api::openshift::VSPHERE_CSI_DRIVER,
                    "volumeHandle": id.to_string(), "fsType": "ext4"}},
            "status": {"phase": "Bound"}}));
    }
    // The in-tree plugin's volumes of clusters that began at 4.12 or earlier (thin
    // StorageClass, kubernetes.io/vsphere-volume provisioner), CSI-migrated since 4.13
    // (`pv.kubernetes.io/migrated-to`).
    for _ in 0..s.in_tree_volumes {
        let id = uuid::Uuid::new_v4();
        out.push(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("pvc-{id}"),
                "annotations": {"pv.kubernetes.io/provisioned-by": "kubernetes.io/vsphere-volume",
                    "pv.kubernetes.io/migrated-to": vcfm_api::openshift::VSPHERE_CSI_DRIVER}},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "thin",
                "volumeMode": "Filesystem",
                "vsphereVolume": {"volumePath": format!("[datastore1] kubevols/{infra_id}-dynamic-pvc-{id}.vmdk"),
                    "fsType": "ext4"}},
            "status": {"phase": "Bound"}}));
    }
    if s.autoscaling {
        out.push(
            json!({"apiVersion": "autoscaling.openshift.io/v1", "kind": "ClusterAutoscaler",
            "metadata": {"name": "default"},
            "spec": {"resourceLimits": {"maxNodesTotal": 24}, "scaleDown": {"enabled": true}}}),
        );
        out.push(
            json!({"apiVersion": "autoscaling.openshift.io/v1beta1", "kind": "MachineAutoscaler",
            "metadata": {"name": format!("{infra_id}-worker-0"), "namespace": MAPI_NS},
            "spec": {"minReplicas": 1, "maxReplicas": 6, "scaleTargetRef": {
                "apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
                "name": format!("{infra_id}-worker-0")}}}),
        );
    }
    if s.user_machine_health_check {
        out.push(
            json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineHealthCheck",
            "metadata": {"name": "worker-health", "namespace": MAPI_NS},
            "spec": {"maxUnhealthy": "40%", "nodeStartupTimeout": "10m",
                "selector": {"matchLabels": {vcfm_api::openshift::LABEL_ROLE: "worker"}},
                "unhealthyConditions": [
                    {"type": "Ready", "status": "False", "timeout": "300s"},
                    {"type": "Ready", "status": "Unknown", "timeout": "300s"}]}}),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::b64;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(b64(""), "");
        assert_eq!(b64("f"), "Zg==");
        assert_eq!(b64("fo"), "Zm8=");
        assert_eq!(b64("foo"), "Zm9v");
        assert_eq!(b64("foobar"), "Zm9vYmFy");
    }
}
